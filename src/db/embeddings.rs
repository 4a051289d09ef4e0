//! Study embeddings (similar prior cases): per study and live model the embedding of the study's
//! key image, L2-normalised, stored as f32 little-endian bytes, replaced with the study's results
//! in their transaction (`save_study_results`); read incrementally (rows after the last id seen,
//! and rows younger than `YOUNG_MS` again, as ids are handed out at insert, not at commit), and
//! the readers' confirmations (a positive finding a reader agreed with, none disagreeing) of the
//! studies whose verdicts changed. Holds row ids and the model's numbers only, no identifier.

use super::{get, q, Db, DbError};

/// Rows this young are read again at each refresh: another node's slower transaction may commit
/// a lower id later.
pub const YOUNG_MS: i64 = 30_000;

/// A study's embedding for one model, as the study job saves it.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyEmbedding {
    pub model: String,
    pub model_version: String,
    /// The image it comes from (the key image of the study's strongest finding).
    pub key_instance_id: i64,
    pub key_frame: i64,
    /// Unit length.
    pub vector: Vec<f32>,
    /// The study's last instance's receive time.
    pub received_at_ms: i64,
}

/// A stored study embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    pub id: i64,
    pub study_id: i64,
    pub model: String,
    pub model_version: String,
    pub vector: Vec<f32>,
    pub received_at_ms: i64,
    pub created_at_ms: i64,
}

/// A reader's verdicts on one label of a study, beside the finding of the study's current result
/// for the model version asked about (None: the result has no such finding, or is of another
/// version).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelVerdicts {
    pub study_id: i64,
    pub label: String,
    pub agree: i64,
    pub disagree: i64,
    /// (probability, positive) of the finding.
    pub finding: Option<(f64, bool)>,
}

pub(crate) fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_bytes(b: &[u8]) -> Result<Vec<f32>, DbError> {
    if b.len() % 4 != 0 {
        return Err(DbError::Invalid(format!("a stored embedding of {} bytes (not f32 values)", b.len())));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Replace the study's embeddings with `embeddings`, inside the results' transaction.
pub(crate) async fn replace_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, study_id: i64, embeddings: &[StudyEmbedding], now: i64) -> Result<(), DbError> {
    sqlx::query("DELETE FROM study_embeddings WHERE study_id = $1").bind(study_id).execute(&mut **tx).await.map_err(q("delete old embeddings"))?;
    for e in embeddings {
        sqlx::query(
            "INSERT INTO study_embeddings (study_id, model, model_version, key_instance_id, key_frame, dims, vector, received_at_ms, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(study_id)
        .bind(&e.model)
        .bind(&e.model_version)
        .bind(e.key_instance_id)
        .bind(e.key_frame)
        .bind(e.vector.len() as i64)
        .bind(to_bytes(&e.vector))
        .bind(e.received_at_ms)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(q("insert study embedding"))?;
    }
    Ok(())
}

fn decode(r: &sqlx::any::AnyRow) -> Result<StoredEmbedding, DbError> {
    Ok(StoredEmbedding {
        id: get(r, "id")?,
        study_id: get(r, "study_id")?,
        model: get(r, "model")?,
        model_version: get(r, "model_version")?,
        vector: from_bytes(&get::<Vec<u8>>(r, "vector")?)?,
        received_at_ms: get(r, "received_at_ms")?,
        created_at_ms: get(r, "created_at_ms")?,
    })
}

const COLUMNS: &str = "id, study_id, model, model_version, vector, received_at_ms, created_at_ms";

impl Db {
    /// The embeddings of `model` `version` stored after row `after_id`, and those written since
    /// `young_since_ms` whatever their id, by id.
    pub async fn embeddings_since(&self, model: &str, version: &str, after_id: i64, young_since_ms: i64) -> Result<Vec<StoredEmbedding>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM study_embeddings WHERE model = $1 AND model_version = $2 AND (id > $3 OR created_at_ms >= $4) ORDER BY id"
        ))
        .bind(model)
        .bind(version)
        .bind(after_id)
        .bind(young_since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select embeddings"))?;
        rows.iter().map(decode).collect()
    }

    /// The study's own embeddings, one per model.
    pub async fn study_embeddings(&self, study_id: i64) -> Result<Vec<StoredEmbedding>, DbError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM study_embeddings WHERE study_id = $1 ORDER BY model"))
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select study embeddings"))?;
        rows.iter().map(decode).collect()
    }

    /// The verdicts of `model` (per study and label, beside its finding of `version`) of every
    /// study with a verdict changed since `changed_since_ms`, and of study `also` (0: none).
    pub async fn label_verdicts(&self, model: &str, version: &str, changed_since_ms: i64, also: i64) -> Result<Vec<LabelVerdicts>, DbError> {
        let rows = sqlx::query(
            "SELECT fb.study_id, fb.label,
                    SUM(CASE WHEN fb.verdict = 'agree' THEN 1 ELSE 0 END) AS agree,
                    SUM(CASE WHEN fb.verdict = 'disagree' THEN 1 ELSE 0 END) AS disagree,
                    MAX(f.probability) AS probability, MAX(f.positive) AS positive
             FROM feedback fb
             LEFT JOIN study_results r ON r.study_id = fb.study_id AND r.model = fb.model AND r.model_version = $2
             LEFT JOIN findings f ON f.study_result_id = r.id AND f.label = fb.label
             WHERE fb.model = $1
               AND (fb.study_id = $4 OR fb.study_id IN (SELECT study_id FROM feedback WHERE model = $1 AND updated_at_ms >= $3))
             GROUP BY fb.study_id, fb.label",
        )
        .bind(model)
        .bind(version)
        .bind(changed_since_ms)
        .bind(also)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select label verdicts"))?;
        rows.iter()
            .map(|r| {
                let probability: Option<f64> = get(r, "probability")?;
                let positive: Option<i64> = get(r, "positive")?;
                Ok(LabelVerdicts {
                    study_id: get(r, "study_id")?,
                    label: get(r, "label")?,
                    agree: get(r, "agree")?,
                    disagree: get(r, "disagree")?,
                    finding: probability.zip(positive).map(|(p, positive)| (p, positive != 0)),
                })
            })
            .collect()
    }

    /// Benchmark fixtures only (`triage-node bench-similar`): `n` studies of `model` `version`,
    /// each with a positive finding `label` a reader agreed with and the embedding `vector(i)`,
    /// received a second apart from `received_from_ms`. Returns the studies' row ids.
    pub async fn bench_seed_embeddings(
        &self,
        model: &str,
        version: &str,
        n: usize,
        received_from_ms: i64,
        vector: impl Fn(usize) -> Vec<f32>,
    ) -> Result<Vec<i64>, DbError> {
        let now = crate::domain::now_ms();
        let mut ids = Vec::with_capacity(n);
        let mut shared: Option<(i64, i64)> = None;
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut tx = self.pool.begin().await.map_err(q("begin"))?;
            for &i in chunk {
                let at = received_from_ms + i as i64 * 1000;
                let study: i64 = sqlx::query_scalar(
                    "INSERT INTO studies (study_instance_uid, state, first_received_at_ms, last_received_at_ms) VALUES ($1, 'triaged', $2, $2) RETURNING id",
                )
                .bind(format!("2.25.999{now}{i:07}"))
                .bind(at)
                .fetch_one(&mut *tx)
                .await
                .map_err(q("seed study"))?;
                let (job, instance) = match shared {
                    Some(s) => s,
                    None => {
                        let job: i64 = sqlx::query_scalar(
                            "INSERT INTO jobs (kind, study_id, state, created_at_ms, updated_at_ms) VALUES ('study_ready', $1, 'done', $2, $2) RETURNING id",
                        )
                        .bind(study)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(q("seed job"))?;
                        let instance: i64 = sqlx::query_scalar(
                            "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_instance_uid, study_id, series_instance_uid, transfer_syntax_uid,
                                                    calling_ae_title, path, size_bytes, dataset_digest, received_at_ms)
                             VALUES ($1, '1.2.840.10008.5.1.4.1.1.1', $1, $2, $1, '1.2.840.10008.1.2.1', 'BENCH', 'none', 0, '00', $3) RETURNING id",
                        )
                        .bind(format!("2.25.998{now}"))
                        .bind(study)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(q("seed instance"))?;
                        shared = Some((job, instance));
                        (job, instance)
                    }
                };
                let result: i64 = sqlx::query_scalar(
                    "INSERT INTO study_results (study_id, job_id, model, model_version, demonstration, intended_use, limits, state, priority, images_inferred,
                                                instances_failed, preprocess_ms, forward_ms, last_received_at_ms, ready_at_ms, triaged_at_ms)
                     VALUES ($1, $2, $3, $4, 1, 'bench', 'bench', 'triaged', 'positive', 1, 0, 0, 0, $5, $5, $5) RETURNING id",
                )
                .bind(study)
                .bind(job)
                .bind(model)
                .bind(version)
                .bind(at)
                .fetch_one(&mut *tx)
                .await
                .map_err(q("seed result"))?;
                sqlx::query(
                    "INSERT INTO findings (study_result_id, label, probability, positive, urgent, tier, key_instance_id, key_frame, source_rows, source_cols,
                                           cam_rows, cam_cols, cam)
                     VALUES ($1, 'finding', 0.9, 1, 0, 'high', $2, 0, 1, 1, 0, 0, '[]')",
                )
                .bind(result)
                .bind(instance)
                .execute(&mut *tx)
                .await
                .map_err(q("seed finding"))?;
                sqlx::query(
                    "INSERT INTO feedback (study_id, model, model_version, label, probability, positive, verdict, reader, result_at_ms, created_at_ms, updated_at_ms)
                     VALUES ($1, $2, $3, 'finding', 0.9, 1, 'agree', 'bench', $4, $4, $4)",
                )
                .bind(study)
                .bind(model)
                .bind(version)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(q("seed feedback"))?;
                let e = StudyEmbedding {
                    model: model.into(),
                    model_version: version.into(),
                    key_instance_id: instance,
                    key_frame: 0,
                    vector: vector(i),
                    received_at_ms: at,
                };
                replace_in(&mut tx, study, std::slice::from_ref(&e), now).await?;
                ids.push(study);
            }
            tx.commit().await.map_err(q("commit seed"))?;
        }
        Ok(ids)
    }
}
