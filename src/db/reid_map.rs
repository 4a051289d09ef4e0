//! The re-identification map's storage: sealed records only; this module never sees a
//! plaintext original (sealing and opening are in `deid`).

use super::{get, q, Db, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// De-identified SOP Instance UID (also the AES-GCM associated data).
    pub sop_instance_uid: String,
    /// De-identified Study Instance UID.
    pub study_instance_uid: String,
    pub key_id: String,
    pub nonce: String,
    pub sealed: String,
    pub created_at_ms: i64,
}

const COLUMNS: &str = "sop_instance_uid, study_instance_uid, key_id, nonce, sealed, created_at_ms";

fn decode(r: &sqlx::any::AnyRow) -> Result<SealedRecord, DbError> {
    Ok(SealedRecord {
        sop_instance_uid: get(r, "sop_instance_uid")?,
        study_instance_uid: get(r, "study_instance_uid")?,
        key_id: get(r, "key_id")?,
        nonce: get(r, "nonce")?,
        sealed: get(r, "sealed")?,
        created_at_ms: get(r, "created_at_ms")?,
    })
}

impl Db {
    pub async fn reid_record(&self, sop_instance_uid: &str) -> Result<Option<SealedRecord>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM reid_map WHERE sop_instance_uid = $1"))
            .bind(sop_instance_uid)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select reid record"))?;
        row.as_ref().map(decode).transpose()
    }

    /// The sealed record of a stored instance of a de-identified study, for an object that
    /// names no stored instance (a rejection note): its lowest SOP Instance UID among the
    /// instances recorded under `patient_pseudonym`, else among those stored before pseudonyms
    /// were recorded (NULL); never one recorded under another patient. With no pseudonym, the
    /// study's lowest.
    pub async fn reid_record_for_study(&self, study_uid: &str, patient_pseudonym: Option<&str>) -> Result<Option<SealedRecord>, DbError> {
        let row = match patient_pseudonym {
            Some(pseudonym) => {
                sqlx::query(
                    "SELECT r.sop_instance_uid, r.study_instance_uid, r.key_id, r.nonce, r.sealed, r.created_at_ms
                     FROM reid_map r LEFT JOIN instances i ON i.sop_instance_uid = r.sop_instance_uid
                     WHERE r.study_instance_uid = $1 AND (i.patient_pseudonym IS NULL OR i.patient_pseudonym = $2)
                     ORDER BY CASE WHEN i.patient_pseudonym IS NULL THEN 1 ELSE 0 END, r.sop_instance_uid LIMIT 1",
                )
                .bind(study_uid)
                .bind(pseudonym)
                .fetch_optional(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM reid_map WHERE study_instance_uid = $1 ORDER BY sop_instance_uid LIMIT 1"))
                    .bind(study_uid)
                    .fetch_optional(&self.pool)
                    .await
            }
        }
        .map_err(q("select a study's reid record"))?;
        row.as_ref().map(decode).transpose()
    }
}

impl Db {
    /// One sealed record per study (its lowest SOP Instance UID's) of each de-identified Study
    /// Instance UID in `study_uids`: what a worklist page opens to name its patients.
    pub async fn reid_records_for_studies(&self, study_uids: &[String]) -> Result<Vec<SealedRecord>, DbError> {
        if study_uids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (1..=study_uids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM reid_map
             WHERE sop_instance_uid IN (SELECT MIN(sop_instance_uid) FROM reid_map WHERE study_instance_uid IN ({}) GROUP BY study_instance_uid)",
            list.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for uid in study_uids {
            query = query.bind(uid);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(q("select a page's reid records"))?;
        rows.iter().map(decode).collect()
    }
}

impl Db {
    /// Benchmark fixtures only (`triage-node bench-seed-results`): for each (record, path), the
    /// sealed record of a synthetic source instance and a result object at `path` queued for
    /// `destination` and already delivered; one transaction.
    pub async fn seed_result_objects(&self, node: &str, destination: &str, rows: &[(SealedRecord, String)]) -> Result<(), DbError> {
        use super::{ObjectKind, OutboxState};
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let now = crate::domain::now_ms();
        for (r, path) in rows {
            insert_in(&mut tx, r).await?;
            let item = super::NewOutboxItem { path: path.clone(), destination: destination.into(), kind: ObjectKind::Sr, study_id: None, reidentify: true };
            if let Some(id) = super::outbox::insert_in(&mut tx, node, &item, now).await? {
                sqlx::query("UPDATE outbox SET state = $1, delivered_at_ms = $2 WHERE id = $3")
                    .bind(OutboxState::Delivered.as_str())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(q("mark seeded item delivered"))?;
            }
        }
        tx.commit().await.map_err(q("commit seeded results"))
    }
}

/// Store one sealed record inside the caller's transaction: the one INSERT of the map (a record
/// already there is kept).
pub(crate) async fn insert_in(conn: &mut sqlx::AnyConnection, r: &SealedRecord) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO reid_map (sop_instance_uid, study_instance_uid, key_id, nonce, sealed, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sop_instance_uid) DO NOTHING",
    )
    .bind(&r.sop_instance_uid)
    .bind(&r.study_instance_uid)
    .bind(&r.key_id)
    .bind(&r.nonce)
    .bind(&r.sealed)
    .bind(r.created_at_ms)
    .execute(conn)
    .await
    .map_err(q("insert reid record"))?;
    Ok(())
}
