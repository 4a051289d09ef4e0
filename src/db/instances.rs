//! Received instances. A row exists only for an instance whose file is synced in the store;
//! the row's commit is what makes a C-STORE Success true. `study_id` stays NULL until the
//! study tracker (studies.rs) attaches the instance.

use super::{get, q, Db, DbError};

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub modality: Option<String>,
    pub transfer_syntax_uid: String,
    pub calling_ae_title: String,
    /// Relative to the data directory.
    pub path: String,
    pub size_bytes: i64,
    pub dataset_digest: String,
    pub received_at_ms: i64,
    /// Why the instance is not sent to the AI stage (its pixels were not kept), if it is not.
    pub excluded_reason: Option<String>,
    /// How it was de-identified (JSON: profile edition and option codes), for its audit entry.
    pub deid_method: Option<String>,
    /// The patient pseudonym its de-identified header carries (Patient ID after the profile).
    pub patient_pseudonym: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted {
        instance_id: i64,
    },
    /// An instance with this SOP Instance UID is already stored; nothing was written.
    Duplicate {
        instance_id: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub id: i64,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub path: String,
    pub dataset_digest: String,
}

/// What a result object needs to reference a stored instance (de-identified UIDs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    pub path: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
}

impl Db {
    /// The store path (relative to data_dir) of instance `id`.
    pub async fn instance_path(&self, id: i64) -> Result<Option<String>, DbError> {
        sqlx::query_scalar("SELECT path FROM instances WHERE id = $1").bind(id).fetch_optional(&self.pool).await.map_err(q("select instance path"))
    }

    pub async fn instance_ref(&self, id: i64) -> Result<Option<InstanceRef>, DbError> {
        let row = sqlx::query("SELECT path, sop_class_uid, sop_instance_uid, series_instance_uid, study_instance_uid FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select instance reference"))?;
        row.map(|r| {
            Ok(InstanceRef {
                path: get(&r, "path")?,
                sop_class_uid: get(&r, "sop_class_uid")?,
                sop_instance_uid: get(&r, "sop_instance_uid")?,
                series_instance_uid: get(&r, "series_instance_uid")?,
                study_instance_uid: get(&r, "study_instance_uid")?,
            })
        })
        .transpose()
    }

    pub async fn find_instance(&self, sop_instance_uid: &str) -> Result<Option<StoredInstance>, DbError> {
        let row =
            sqlx::query("SELECT id, sop_instance_uid, sop_class_uid, transfer_syntax_uid, path, dataset_digest FROM instances WHERE sop_instance_uid = $1")
                .bind(sop_instance_uid)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("select instance"))?;
        row.map(|r| {
            Ok(StoredInstance {
                id: get(&r, "id")?,
                sop_instance_uid: get(&r, "sop_instance_uid")?,
                sop_class_uid: get(&r, "sop_class_uid")?,
                transfer_syntax_uid: get(&r, "transfer_syntax_uid")?,
                path: get(&r, "path")?,
                dataset_digest: get(&r, "dataset_digest")?,
            })
        })
        .transpose()
    }

    /// Record a stored instance with its sealed re-identification record, in one transaction
    /// (`insert_instances` with a batch of one).
    pub async fn insert_instance(&self, new: &NewInstance, reid: Option<&super::SealedRecord>) -> Result<InsertOutcome, DbError> {
        let mut outcomes = self.insert_instances(&[(new, reid)]).await?;
        Ok(outcomes.pop().expect("one outcome per instance"))
    }

    /// Record stored instances, each with its sealed re-identification record, in one
    /// transaction: the only database work on the C-STORE path, and one commit (one WAL sync,
    /// or one PostgreSQL commit) for every instance the batch holds (ingest's group commit).
    /// The study tracker attaches them to their studies later, and the audit sweep appends their
    /// `deidentify` entries (`audit_seq` marks that durably, so none is missed across a crash).
    /// A concurrent or earlier copy of the same SOP Instance UID (in the batch too) wins, and
    /// then nothing is written for the later one. Either every row of the batch is committed or
    /// none is.
    pub async fn insert_instances(&self, batch: &[(&NewInstance, Option<&super::SealedRecord>)]) -> Result<Vec<InsertOutcome>, DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (new, reid) in batch {
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid, modality,
                                        transfer_syntax_uid, calling_ae_title, path, size_bytes, dataset_digest, received_at_ms,
                                        excluded_reason, deid_method, patient_pseudonym)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (sop_instance_uid) DO NOTHING
                 RETURNING id",
            )
            .bind(&new.sop_instance_uid)
            .bind(&new.sop_class_uid)
            .bind(&new.study_instance_uid)
            .bind(&new.series_instance_uid)
            .bind(new.modality.clone())
            .bind(&new.transfer_syntax_uid)
            .bind(&new.calling_ae_title)
            .bind(&new.path)
            .bind(new.size_bytes)
            .bind(&new.dataset_digest)
            .bind(new.received_at_ms)
            .bind(new.excluded_reason.clone())
            .bind(new.deid_method.clone())
            .bind(new.patient_pseudonym.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("insert instance"))?;
            let Some(instance_id) = inserted else {
                let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM instances WHERE sop_instance_uid = $1")
                    .bind(&new.sop_instance_uid)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(q("select duplicate instance"))?;
                outcomes.push(InsertOutcome::Duplicate { instance_id: existing.unwrap_or(0) });
                continue;
            };
            if let Some(r) = reid {
                super::reid_map::insert_in(&mut tx, r).await?;
            }
            outcomes.push(InsertOutcome::Inserted { instance_id });
        }
        tx.commit().await.map_err(q("commit instances"))?;
        Ok(outcomes)
    }

    /// The recorded paths (relative to data_dir) that start with `prefix`.
    pub async fn paths_under(&self, prefix: &str) -> Result<std::collections::HashSet<String>, DbError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT path FROM instances WHERE path LIKE $1")
            .bind(format!("{prefix}%"))
            .fetch_all(&self.pool)
            .await
            .map_err(q("select paths"))?;
        Ok(rows.into_iter().collect())
    }

    /// Instances not sent to the AI stage, by reason (no patient data in a reason).
    pub async fn excluded_counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows =
            sqlx::query("SELECT excluded_reason AS reason, COUNT(*) AS n FROM instances WHERE excluded_reason IS NOT NULL GROUP BY excluded_reason ORDER BY 1")
                .fetch_all(&self.pool)
                .await
                .map_err(q("count excluded instances"))?;
        rows.iter().map(|r| Ok((get(r, "reason")?, get(r, "n")?))).collect()
    }

    /// Stored instances whose de-identification the audit sweep has not recorded yet.
    pub async fn count_unaudited(&self) -> Result<i64, DbError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE audit_seq IS NULL").fetch_one(&self.pool).await.map_err(q("count unaudited"))
    }

    /// How many different patients the instances of study `study_id` name (by pseudonym).
    /// Stored instances the AI stage has not finished with (not excluded, not yet inferred or
    /// being inferred): the arrivals queue's depth, for the metrics.
    pub async fn count_awaiting_inference(&self) -> Result<i64, DbError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE excluded_reason IS NULL AND (inference_state IS NULL OR inference_state = $1 OR inference_state = $2)",
        )
        .bind(super::InferenceState::Pending.as_str())
        .bind(super::InferenceState::Running.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(q("count instances awaiting inference"))
    }

    /// The de-identified SOP Instance UID of a study's first stored instance.
    pub async fn study_any_instance_uid(&self, study_id: i64) -> Result<Option<String>, DbError> {
        sqlx::query_scalar("SELECT sop_instance_uid FROM instances WHERE study_id = $1 ORDER BY id LIMIT 1")
            .bind(study_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select a study's first instance"))
    }

    /// (instance id, series UID, path) of each of a study's instances.
    pub async fn study_instance_series(&self, study_id: i64) -> Result<Vec<(i64, String, String)>, DbError> {
        let rows = sqlx::query("SELECT id, series_instance_uid, path FROM instances WHERE study_id = $1 ORDER BY id")
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select a study's series"))?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "series_instance_uid")?, get(r, "path")?))).collect()
    }

    /// The distinct modalities of a study's instances, sorted.
    pub async fn study_modalities(&self, study_id: i64) -> Result<Vec<String>, DbError> {
        let rows: Vec<Option<String>> = sqlx::query_scalar("SELECT DISTINCT modality FROM instances WHERE study_id = $1 ORDER BY modality")
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select a study's modalities"))?;
        Ok(rows.into_iter().flatten().filter(|m| !m.is_empty()).collect())
    }

    pub async fn study_patient_count(&self, study_id: i64) -> Result<i64, DbError> {
        // Rows stored before the pseudonym was recorded (NULL) name no patient: not a conflict.
        sqlx::query_scalar("SELECT COUNT(DISTINCT patient_pseudonym) FROM instances WHERE study_id = $1")
            .bind(study_id)
            .fetch_one(&self.pool)
            .await
            .map_err(q("count a study's patients"))
    }

    /// Studies whose instances name more than one patient (for `triage-node status`).
    pub async fn count_conflicting_studies(&self) -> Result<i64, DbError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT study_id FROM instances WHERE study_id IS NOT NULL
             GROUP BY study_id HAVING COUNT(DISTINCT patient_pseudonym) > 1) conflicting",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(q("count conflicting studies"))
    }

    pub async fn count_instances(&self) -> Result<i64, DbError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM instances").fetch_one(&self.pool).await.map_err(q("count instances"))
    }
}
