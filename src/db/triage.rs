//! AI triage rows: the inference pass of each instance (claimed under a lease, so the pass that
//! runs as an instance arrives and the study job's catch-up never both run it), the per-image
//! model outputs, and per (study, model) the aggregated result with its findings. The study job
//! (`jobs`, kind `study_ready`) is claimed under a lease too, by any node.

use super::{get, q, Db, DbError};

/// What a model said about one frame of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRow {
    pub instance_id: i64,
    pub model: String,
    pub model_version: String,
    pub frame: i64,
    pub probabilities: Vec<f32>,
    pub source_rows: i64,
    pub source_cols: i64,
    pub cam_rows: i64,
    pub cam_cols: i64,
    /// [labels][cam_rows][cam_cols], flattened.
    pub cam: Vec<f32>,
    pub preprocess_us: i64,
    pub queue_us: i64,
    pub forward_us: i64,
    pub batch_size: i64,
    /// When the row was written (ignored when inserting).
    pub created_at_ms: i64,
}

/// One finding of a study result: a label's aggregated probability and its key image.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRow {
    pub label: String,
    pub probability: f64,
    pub positive: bool,
    pub urgent: bool,
    pub tier: String,
    pub key_instance_id: i64,
    pub key_frame: i64,
    pub source_rows: i64,
    pub source_cols: i64,
    pub cam_rows: i64,
    pub cam_cols: i64,
    pub cam: Vec<f32>,
}

/// A study's result for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyResultRow {
    pub study_id: i64,
    pub model: String,
    pub model_version: String,
    pub demonstration: bool,
    pub intended_use: String,
    pub limits: String,
    /// `triaged`, `failed` or `not_applicable`.
    pub state: String,
    /// `urgent`, `positive` or `negative` when triaged.
    pub priority: Option<String>,
    pub error: Option<String>,
    pub images_inferred: i64,
    pub instances_failed: i64,
    pub preprocess_ms: f64,
    pub forward_ms: f64,
    pub last_received_at_ms: i64,
    pub ready_at_ms: i64,
    pub triaged_at_ms: i64,
    pub findings: Vec<FindingRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    pub study_id: i64,
    /// When the study was found complete (the job was queued).
    pub ready_at_ms: i64,
    pub last_received_at_ms: i64,
}

/// A study's inference passes still to run (claimable now) and still running elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInference {
    pub claimable: Vec<i64>,
    pub running: i64,
}

fn floats_json(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 7 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // 4 decimals: probabilities and maps in 0..1 need no more; other ranges keep 5 digits.
        let r = (x * 10_000.0).round() / 10_000.0;
        s.push_str(&format!("{r}"));
    }
    s.push(']');
    s
}

fn parse_floats(text: &str) -> Result<Vec<f32>, DbError> {
    serde_json::from_str(text).map_err(|e| DbError::Invalid(format!("stored float array: {e}")))
}

impl Db {
    /// Claim instance `id`'s inference pass until `lease_until_ms`. False when it is excluded,
    /// done, or held by a live claim.
    pub async fn claim_inference(&self, id: i64, now_ms: i64, lease_until_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE instances SET inference_state = 'running', inference_lease_until_ms = $2
             WHERE id = $1 AND excluded_reason IS NULL
               AND (inference_state IS NULL OR (inference_state = 'running' AND inference_lease_until_ms < $3))",
        )
        .bind(id)
        .bind(lease_until_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(q("claim inference"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The store path (relative to data_dir) of instance `id`.
    pub async fn instance_path(&self, id: i64) -> Result<Option<String>, DbError> {
        sqlx::query_scalar("SELECT path FROM instances WHERE id = $1").bind(id).fetch_optional(&self.pool).await.map_err(q("select instance path"))
    }

    /// Record the end of instance `id`'s pass: `done` (with its rows), `not_routed` or
    /// `failed` (with the reason), in one transaction.
    pub async fn record_inference(&self, id: i64, state: &str, error: Option<&str>, rows: &[SliceRow]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let now = crate::domain::now_ms();
        for r in rows {
            sqlx::query(
                "INSERT INTO slice_results (instance_id, model, model_version, frame, probabilities, source_rows, source_cols,
                                            cam_rows, cam_cols, cam, preprocess_us, queue_us, forward_us, batch_size, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (instance_id, model, frame) DO NOTHING",
            )
            .bind(r.instance_id)
            .bind(&r.model)
            .bind(&r.model_version)
            .bind(r.frame)
            .bind(floats_json(&r.probabilities))
            .bind(r.source_rows)
            .bind(r.source_cols)
            .bind(r.cam_rows)
            .bind(r.cam_cols)
            .bind(floats_json(&r.cam))
            .bind(r.preprocess_us)
            .bind(r.queue_us)
            .bind(r.forward_us)
            .bind(r.batch_size)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("insert slice result"))?;
        }
        sqlx::query("UPDATE instances SET inference_state = $2, inference_error = $3, inference_lease_until_ms = NULL WHERE id = $1")
            .bind(id)
            .bind(state)
            .bind(error.map(str::to_string))
            .execute(&mut *tx)
            .await
            .map_err(q("record inference state"))?;
        tx.commit().await.map_err(q("commit inference"))
    }

    /// The study's instances whose pass has not run (or whose claim expired), and how many are
    /// running under a live claim.
    pub async fn pending_inference(&self, study_id: i64, now_ms: i64) -> Result<PendingInference, DbError> {
        let rows = sqlx::query(
            "SELECT id, inference_state, inference_lease_until_ms FROM instances
             WHERE study_id = $1 AND excluded_reason IS NULL AND (inference_state IS NULL OR inference_state = 'running') ORDER BY id",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select pending inference"))?;
        let mut pending = PendingInference { claimable: Vec::new(), running: 0 };
        for r in &rows {
            let state: Option<String> = get(r, "inference_state")?;
            let lease: Option<i64> = get(r, "inference_lease_until_ms")?;
            if state.is_none() || lease.unwrap_or(0) < now_ms {
                pending.claimable.push(get(r, "id")?);
            } else {
                pending.running += 1;
            }
        }
        Ok(pending)
    }

    /// Every model output of the study's instances.
    pub async fn study_slices(&self, study_id: i64) -> Result<Vec<SliceRow>, DbError> {
        let rows = sqlx::query(
            "SELECT r.* FROM slice_results r JOIN instances i ON i.id = r.instance_id WHERE i.study_id = $1 ORDER BY r.instance_id, r.frame",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select study slices"))?;
        rows.iter()
            .map(|r| {
                Ok(SliceRow {
                    instance_id: get(r, "instance_id")?,
                    model: get(r, "model")?,
                    model_version: get(r, "model_version")?,
                    frame: get(r, "frame")?,
                    probabilities: parse_floats(&get::<String>(r, "probabilities")?)?,
                    source_rows: get(r, "source_rows")?,
                    source_cols: get(r, "source_cols")?,
                    cam_rows: get(r, "cam_rows")?,
                    cam_cols: get(r, "cam_cols")?,
                    cam: parse_floats(&get::<String>(r, "cam")?)?,
                    preprocess_us: get(r, "preprocess_us")?,
                    queue_us: get(r, "queue_us")?,
                    forward_us: get(r, "forward_us")?,
                    batch_size: get(r, "batch_size")?,
                    created_at_ms: get(r, "created_at_ms")?,
                })
            })
            .collect()
    }

    /// (instance id, reason) of the study's failed passes, and how many were routed to no model.
    pub async fn study_inference_outcomes(&self, study_id: i64) -> Result<(Vec<(i64, String)>, i64), DbError> {
        let failed = sqlx::query("SELECT id, inference_error FROM instances WHERE study_id = $1 AND inference_state = 'failed' ORDER BY id")
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select failed inference"))?;
        let failed = failed
            .iter()
            .map(|r| Ok((get(r, "id")?, get::<Option<String>>(r, "inference_error")?.unwrap_or_default())))
            .collect::<Result<Vec<_>, DbError>>()?;
        let not_routed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE study_id = $1 AND inference_state = 'not_routed'")
            .bind(study_id)
            .fetch_one(&self.pool)
            .await
            .map_err(q("count not routed"))?;
        Ok((failed, not_routed))
    }

    /// Claim the oldest `study_ready` job that is pending, or running under an expired lease.
    pub async fn claim_study_job(&self, now_ms: i64, lease_until_ms: i64) -> Result<Option<ClaimedJob>, DbError> {
        loop {
            let row = sqlx::query(
                "SELECT j.id, j.study_id, j.created_at_ms, j.state, j.lease_until_ms, s.last_received_at_ms FROM jobs j JOIN studies s ON s.id = j.study_id
                 WHERE j.kind = 'study_ready' AND (j.state = 'pending' OR (j.state = 'running' AND j.lease_until_ms < $1))
                 ORDER BY j.id LIMIT 1",
            )
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select due job"))?;
            let Some(row) = row else { return Ok(None) };
            let (id, state, lease): (i64, String, i64) = (get(&row, "id")?, get(&row, "state")?, get(&row, "lease_until_ms")?);
            let claimed = sqlx::query(
                "UPDATE jobs SET state = 'running', lease_until_ms = $2, attempts = attempts + 1, updated_at_ms = $3
                 WHERE id = $1 AND state = $4 AND lease_until_ms = $5",
            )
            .bind(id)
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(&state)
            .bind(lease)
            .execute(&self.pool)
            .await
            .map_err(q("claim job"))?;
            if claimed.rows_affected() == 1 {
                return Ok(Some(ClaimedJob {
                    id,
                    study_id: get(&row, "study_id")?,
                    ready_at_ms: get(&row, "created_at_ms")?,
                    last_received_at_ms: get(&row, "last_received_at_ms")?,
                }));
            }
            // Another node took it: look again.
        }
    }

    /// Replace the study's results with `results`, queue the result objects `outbox` for this
    /// node `node`, and mark the job done, in one transaction.
    pub async fn save_study_results(&self, job_id: i64, study_id: i64, results: &[StudyResultRow], node: &str, outbox: &[super::NewOutboxItem]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        sqlx::query("DELETE FROM findings WHERE study_result_id IN (SELECT id FROM study_results WHERE study_id = $1)")
            .bind(study_id)
            .execute(&mut *tx)
            .await
            .map_err(q("delete old findings"))?;
        sqlx::query("DELETE FROM study_results WHERE study_id = $1").bind(study_id).execute(&mut *tx).await.map_err(q("delete old results"))?;
        for r in results {
            let result_id: i64 = sqlx::query_scalar(
                "INSERT INTO study_results (study_id, job_id, model, model_version, demonstration, intended_use, limits, state, priority, error,
                                            images_inferred, instances_failed, preprocess_ms, forward_ms, last_received_at_ms, ready_at_ms, triaged_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id",
            )
            .bind(study_id)
            .bind(job_id)
            .bind(&r.model)
            .bind(&r.model_version)
            .bind(i64::from(r.demonstration))
            .bind(&r.intended_use)
            .bind(&r.limits)
            .bind(&r.state)
            .bind(r.priority.clone())
            .bind(r.error.clone())
            .bind(r.images_inferred)
            .bind(r.instances_failed)
            .bind(r.preprocess_ms)
            .bind(r.forward_ms)
            .bind(r.last_received_at_ms)
            .bind(r.ready_at_ms)
            .bind(r.triaged_at_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("insert study result"))?;
            for f in &r.findings {
                sqlx::query(
                    "INSERT INTO findings (study_result_id, label, probability, positive, urgent, tier, key_instance_id, key_frame,
                                           source_rows, source_cols, cam_rows, cam_cols, cam)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(result_id)
                .bind(&f.label)
                .bind(f.probability)
                .bind(i64::from(f.positive))
                .bind(i64::from(f.urgent))
                .bind(&f.tier)
                .bind(f.key_instance_id)
                .bind(f.key_frame)
                .bind(f.source_rows)
                .bind(f.source_cols)
                .bind(f.cam_rows)
                .bind(f.cam_cols)
                .bind(floats_json(&f.cam))
                .execute(&mut *tx)
                .await
                .map_err(q("insert finding"))?;
            }
        }
        let now = crate::domain::now_ms();
        for item in outbox {
            sqlx::query(
                "INSERT INTO outbox (path, destination, node, state, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms, kind, study_id, reidentify)
                 VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4, $5, $6, $7) ON CONFLICT (path, destination) DO NOTHING",
            )
            .bind(&item.path)
            .bind(&item.destination)
            .bind(node)
            .bind(now)
            .bind(&item.kind)
            .bind(item.study_id)
            .bind(i64::from(item.reidentify))
            .execute(&mut *tx)
            .await
            .map_err(q("queue result object"))?;
        }
        sqlx::query("UPDATE jobs SET state = 'done', last_error = NULL, updated_at_ms = $2 WHERE id = $1")
            .bind(job_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("finish job"))?;
        tx.commit().await.map_err(q("commit study results"))
    }

    /// Give a claimed job back (to be retried after its lease) with the reason.
    pub async fn fail_job(&self, job_id: i64, error: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE jobs SET last_error = $2, updated_at_ms = $3 WHERE id = $1")
            .bind(job_id)
            .bind(error)
            .bind(crate::domain::now_ms())
            .execute(&self.pool)
            .await
            .map_err(q("fail job"))?;
        Ok(())
    }

    /// The results of the study with this (de-identified) Study Instance UID, by model.
    pub async fn study_results(&self, study_instance_uid: &str) -> Result<Vec<StudyResultRow>, DbError> {
        let rows = sqlx::query(
            "SELECT r.* FROM study_results r JOIN studies s ON s.id = r.study_id WHERE s.study_instance_uid = $1 ORDER BY r.model",
        )
        .bind(study_instance_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select study results"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = get(r, "id")?;
            let findings = sqlx::query("SELECT * FROM findings WHERE study_result_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(q("select findings"))?
                .iter()
                .map(|f| {
                    Ok(FindingRow {
                        label: get(f, "label")?,
                        probability: get(f, "probability")?,
                        positive: get::<i64>(f, "positive")? != 0,
                        urgent: get::<i64>(f, "urgent")? != 0,
                        tier: get(f, "tier")?,
                        key_instance_id: get(f, "key_instance_id")?,
                        key_frame: get(f, "key_frame")?,
                        source_rows: get(f, "source_rows")?,
                        source_cols: get(f, "source_cols")?,
                        cam_rows: get(f, "cam_rows")?,
                        cam_cols: get(f, "cam_cols")?,
                        cam: parse_floats(&get::<String>(f, "cam")?)?,
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()?;
            out.push(StudyResultRow {
                study_id: get(r, "study_id")?,
                model: get(r, "model")?,
                model_version: get(r, "model_version")?,
                demonstration: get::<i64>(r, "demonstration")? != 0,
                intended_use: get(r, "intended_use")?,
                limits: get(r, "limits")?,
                state: get(r, "state")?,
                priority: get(r, "priority")?,
                error: get(r, "error")?,
                images_inferred: get(r, "images_inferred")?,
                instances_failed: get(r, "instances_failed")?,
                preprocess_ms: get(r, "preprocess_ms")?,
                forward_ms: get(r, "forward_ms")?,
                last_received_at_ms: get(r, "last_received_at_ms")?,
                ready_at_ms: get(r, "ready_at_ms")?,
                triaged_at_ms: get(r, "triaged_at_ms")?,
                findings,
            });
        }
        Ok(out)
    }

    /// The newest `limit` study results (study row id first), for `triage-node results`.
    pub async fn recent_results(&self, limit: i64) -> Result<Vec<StudyResultRow>, DbError> {
        let uids: Vec<String> = sqlx::query_scalar(
            "SELECT s.study_instance_uid FROM studies s WHERE EXISTS (SELECT 1 FROM study_results r WHERE r.study_id = s.id)
             ORDER BY (SELECT MAX(r.triaged_at_ms) FROM study_results r WHERE r.study_id = s.id) DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select recent results"))?;
        let mut out = Vec::new();
        for uid in uids {
            out.extend(self.study_results(&uid).await?);
        }
        Ok(out)
    }

    /// A node alone on its SQLite file holds every claim: at start-up, the claims of its
    /// previous run are void (a crash left them), so passes and jobs run again at once instead
    /// of after their lease. Not for PostgreSQL, where other nodes' claims are live.
    pub async fn void_triage_claims(&self) -> Result<(u64, u64), DbError> {
        let passes = sqlx::query("UPDATE instances SET inference_state = NULL, inference_lease_until_ms = NULL WHERE inference_state = 'running'")
            .execute(&self.pool)
            .await
            .map_err(q("void inference claims"))?;
        let jobs = sqlx::query("UPDATE jobs SET state = 'pending', lease_until_ms = 0 WHERE state = 'running' AND kind = 'study_ready'")
            .execute(&self.pool)
            .await
            .map_err(q("void job claims"))?;
        Ok((passes.rows_affected(), jobs.rows_affected()))
    }

    /// (state, count) of study results, for `triage-node status`.
    pub async fn result_counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT state || CASE WHEN priority IS NULL THEN '' ELSE ':' || priority END AS s, COUNT(*) AS n FROM study_results GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("count results"))?;
        rows.iter().map(|r| Ok((get(r, "s")?, get(r, "n")?))).collect()
    }
}
