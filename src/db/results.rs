//! Study results: per (study, model) the aggregated result and its findings, replaced as a
//! whole when a study is triaged again, saved in the transaction that queues the result
//! objects and finishes the job.

use super::inference::{boxes_json, floats_json, input_json, parse_boxes, parse_floats, parse_input, DetectedBox};
use super::{get, q, Db, DbError, Priority, ResultState};

/// One finding of a study result: a label's aggregated probability and its key image.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
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
    /// A volume's finding: the run of slices it stands on, in slice order, the key slice among
    /// them, each with its map of the label (the key's size); empty for one image.
    pub span: Vec<SpanSlice>,
    /// A detector's finding: the key image's boxes of the label scoring at least its positive
    /// threshold, best first, on the source frame; empty for a classifier's.
    pub boxes: Vec<DetectedBox>,
}

/// One slice of a finding's run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpanSlice {
    pub instance_id: i64,
    pub frame: i64,
    pub cam: Vec<f32>,
}

/// A study's result for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyResult {
    pub study_id: i64,
    pub model: String,
    pub model_version: String,
    pub demonstration: bool,
    pub intended_use: String,
    pub limits: String,
    pub state: ResultState,
    /// When triaged.
    pub priority: Option<Priority>,
    pub error: Option<String>,
    pub images_inferred: i64,
    pub instances_failed: i64,
    pub preprocess_ms: f64,
    pub forward_ms: f64,
    pub last_received_at_ms: i64,
    pub ready_at_ms: i64,
    pub triaged_at_ms: i64,
    /// The (de-identified) series the result's images come from, when it has any.
    pub series_instance_uid: Option<String>,
    pub findings: Vec<Finding>,
    /// What the model's input looked like over the result's images (`InputStats::of_study`),
    /// for the input drift check; None without images (or in results saved before).
    pub inputs: Option<super::InputStats>,
}

/// What one study job saves (`save_study_results`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StudySave<'a> {
    pub results: &'a [StudyResult],
    pub worklist: Option<&'a super::WorklistRow>,
    /// The result objects, notices and messages queued with them.
    pub outbox: &'a [super::NewOutboxItem],
    /// The notifications ledger's new rows.
    pub notifications: &'a [super::NewNotification],
    /// Shadow models' results (never published).
    pub shadows: &'a [ShadowResult],
    /// Live models' study embeddings (similar prior cases), replacing the study's.
    pub embeddings: &'a [super::StudyEmbedding],
}

/// A shadow model's result of a study (`shadow_results`): what it would have said.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowResult {
    pub study_id: i64,
    pub model: String,
    pub model_version: String,
    pub shadow_of: String,
    pub state: ResultState,
    pub priority: Option<Priority>,
    pub findings: Vec<ShadowFinding>,
    pub triaged_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShadowFinding {
    pub label: String,
    pub probability: f64,
    pub positive: bool,
    pub urgent: bool,
}

/// A study both a shadow and its live model triaged (or tried to), side by side.
#[derive(Debug, Clone)]
pub struct ShadowPair {
    pub study_id: i64,
    pub shadow: ShadowResult,
    /// The live model's result of the same study: its state, priority and highest probability.
    pub live_state: String,
    pub live_priority: Option<String>,
    pub live_top: Option<f64>,
}

impl Db {
    /// Every shadow result beside the live result of its study (studies the live model has no
    /// result for are left out).
    pub async fn shadow_pairs(&self) -> Result<Vec<ShadowPair>, DbError> {
        let rows = sqlx::query(
            "SELECT s.study_id, s.model, s.model_version, s.shadow_of, s.state, s.priority, s.findings, s.triaged_at_ms,
                    r.state AS live_state, r.priority AS live_priority,
                    (SELECT MAX(f.probability) FROM findings f WHERE f.study_result_id = r.id) AS live_top
             FROM shadow_results s JOIN study_results r ON r.study_id = s.study_id AND r.model = s.shadow_of
             ORDER BY s.study_id, s.model",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select shadow results"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let findings: String = get(r, "findings")?;
            out.push(ShadowPair {
                study_id: get(r, "study_id")?,
                shadow: ShadowResult {
                    study_id: get(r, "study_id")?,
                    model: get(r, "model")?,
                    model_version: get(r, "model_version")?,
                    shadow_of: get(r, "shadow_of")?,
                    state: get::<String>(r, "state")?.parse()?,
                    priority: get::<Option<String>>(r, "priority")?.map(|p| p.parse()).transpose()?,
                    findings: serde_json::from_str(&findings).map_err(|e| DbError::Invalid(format!("a shadow result's findings: {e}")))?,
                    triaged_at_ms: get(r, "triaged_at_ms")?,
                },
                live_state: get(r, "live_state")?,
                live_priority: get(r, "live_priority")?,
                live_top: get(r, "live_top")?,
            });
        }
        Ok(out)
    }

    /// Replace the study's results (and its shadow models') and its worklist row with what
    /// `save` holds, queue its result objects for this node `node` and record its notices, and
    /// mark the job done, in one transaction. Returns the priority the worklist had if the new
    /// one is lower.
    pub async fn save_study_results(&self, job: &super::ClaimedJob, node: &str, save: StudySave<'_>) -> Result<Option<String>, DbError> {
        let StudySave { results, worklist, outbox, notifications, shadows, embeddings } = save;
        let study_id = job.study_id;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        sqlx::query("DELETE FROM shadow_results WHERE study_id = $1").bind(study_id).execute(&mut *tx).await.map_err(q("delete old shadow results"))?;
        for s in shadows {
            let findings = serde_json::to_string(&s.findings).map_err(|e| DbError::Invalid(format!("a shadow result's findings: {e}")))?;
            sqlx::query(
                "INSERT INTO shadow_results (study_id, model, model_version, shadow_of, state, priority, findings, triaged_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(study_id)
            .bind(&s.model)
            .bind(&s.model_version)
            .bind(&s.shadow_of)
            .bind(s.state.as_str())
            .bind(s.priority.map(Priority::as_str))
            .bind(findings)
            .bind(s.triaged_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(q("insert shadow result"))?;
        }
        sqlx::query("DELETE FROM findings WHERE study_result_id IN (SELECT id FROM study_results WHERE study_id = $1)")
            .bind(study_id)
            .execute(&mut *tx)
            .await
            .map_err(q("delete old findings"))?;
        sqlx::query("DELETE FROM study_results WHERE study_id = $1").bind(study_id).execute(&mut *tx).await.map_err(q("delete old results"))?;
        for r in results {
            let result_id: i64 = sqlx::query_scalar(
                "INSERT INTO study_results (study_id, job_id, model, model_version, demonstration, intended_use, limits, state, priority, error,
                                            images_inferred, instances_failed, preprocess_ms, forward_ms, last_received_at_ms, ready_at_ms, triaged_at_ms, series_instance_uid, input_stats)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING id",
            )
            .bind(study_id)
            .bind(job.id)
            .bind(&r.model)
            .bind(&r.model_version)
            .bind(i64::from(r.demonstration))
            .bind(&r.intended_use)
            .bind(&r.limits)
            .bind(r.state.as_str())
            .bind(r.priority.map(Priority::as_str))
            .bind(r.error.clone())
            .bind(r.images_inferred)
            .bind(r.instances_failed)
            .bind(r.preprocess_ms)
            .bind(r.forward_ms)
            .bind(r.last_received_at_ms)
            .bind(r.ready_at_ms)
            .bind(r.triaged_at_ms)
            .bind(r.series_instance_uid.clone())
            .bind(input_json(r.inputs.as_ref())?)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("insert study result"))?;
            for f in &r.findings {
                sqlx::query(
                    "INSERT INTO findings (study_result_id, label, probability, positive, urgent, tier, key_instance_id, key_frame,
                                           source_rows, source_cols, cam_rows, cam_cols, cam, span, boxes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
                .bind(serde_json::to_string(&f.span).map_err(|e| DbError::Invalid(format!("a finding's span: {e}")))?)
                .bind(boxes_json(&f.boxes)?)
                .execute(&mut *tx)
                .await
                .map_err(q("insert finding"))?;
            }
        }
        let now = crate::domain::now_ms();
        super::embeddings::replace_in(&mut tx, study_id, embeddings, now).await?;
        let lowered = match worklist {
            Some(row) => super::worklist::upsert_in(&mut tx, row, now).await?,
            None => None,
        };
        for item in outbox {
            super::outbox::insert_in(&mut tx, node, item, now).await?;
        }
        if notifications.iter().any(|n| n.level == 0) {
            super::notifications::restart_study_in(&mut tx, study_id).await?;
        }
        for n in notifications {
            super::notifications::insert_in(&mut tx, n).await?;
        }
        super::jobs::finish_in(&mut tx, job, now).await?;
        if !outbox.is_empty() {
            super::wake::notify_in(&mut tx, super::Wake::Outbox).await?;
        }
        tx.commit().await.map_err(q("commit study results"))?;
        Ok(lowered)
    }

    /// The results of the study with this (de-identified) Study Instance UID, by model.
    pub async fn study_results(&self, study_instance_uid: &str) -> Result<Vec<StudyResult>, DbError> {
        let rows = sqlx::query("SELECT r.* FROM study_results r JOIN studies s ON s.id = r.study_id WHERE s.study_instance_uid = $1 ORDER BY r.model")
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
                    Ok(Finding {
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
                        span: serde_json::from_str(&get::<String>(f, "span")?).map_err(|e| DbError::Invalid(format!("a finding's span: {e}")))?,
                        boxes: parse_boxes(&get::<String>(f, "boxes")?)?,
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()?;
            out.push(StudyResult {
                study_id: get(r, "study_id")?,
                model: get(r, "model")?,
                model_version: get(r, "model_version")?,
                demonstration: get::<i64>(r, "demonstration")? != 0,
                intended_use: get(r, "intended_use")?,
                limits: get(r, "limits")?,
                state: get::<String>(r, "state")?.parse()?,
                priority: get::<Option<String>>(r, "priority")?.map(|p| p.parse()).transpose()?,
                error: get(r, "error")?,
                images_inferred: get(r, "images_inferred")?,
                instances_failed: get(r, "instances_failed")?,
                preprocess_ms: get(r, "preprocess_ms")?,
                forward_ms: get(r, "forward_ms")?,
                last_received_at_ms: get(r, "last_received_at_ms")?,
                ready_at_ms: get(r, "ready_at_ms")?,
                triaged_at_ms: get(r, "triaged_at_ms")?,
                series_instance_uid: get(r, "series_instance_uid")?,
                findings,
                inputs: parse_input(get(r, "input_stats")?)?,
            });
        }
        Ok(out)
    }

    /// The newest `limit` study results (study row id first), for `triage-node results`.
    pub async fn recent_results(&self, limit: i64) -> Result<Vec<StudyResult>, DbError> {
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

    /// The probabilities of `label` in the newest `limit` studies `model` `version` triaged
    /// (a study's results are replaced when it is triaged again), for the drift check.
    /// With each, its study's scanner (the worklist row's), if known.
    pub async fn recent_scores(&self, model: &str, version: &str, label: &str, limit: i64) -> Result<Vec<(f64, Option<String>)>, DbError> {
        let rows = sqlx::query(
            "SELECT f.probability, w.scanner FROM findings f JOIN study_results r ON r.id = f.study_result_id
               LEFT JOIN worklist w ON w.study_id = r.study_id
             WHERE r.model = $1 AND r.model_version = $2 AND f.label = $3 AND r.state = 'triaged'
             ORDER BY r.id DESC LIMIT $4",
        )
        .bind(model)
        .bind(version)
        .bind(label)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select recent scores"))?;
        rows.iter().map(|r| Ok((get(r, "probability")?, get(r, "scanner")?))).collect()
    }

    /// The input statistics of the newest `limit` studies `model` `version` triaged (those
    /// saved with statistics), for the input drift check; with each, its study's scanner (the
    /// worklist row's), if known.
    pub async fn recent_inputs(&self, model: &str, version: &str, limit: i64) -> Result<Vec<(super::InputStats, Option<String>)>, DbError> {
        let rows = sqlx::query(
            "SELECT r.input_stats, w.scanner FROM study_results r LEFT JOIN worklist w ON w.study_id = r.study_id
             WHERE r.model = $1 AND r.model_version = $2 AND r.state = 'triaged' AND r.input_stats IS NOT NULL
             ORDER BY r.id DESC LIMIT $3",
        )
        .bind(model)
        .bind(version)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select recent input statistics"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(stats) = parse_input(get(r, "input_stats")?)? {
                out.push((stats, get(r, "scanner")?));
            }
        }
        Ok(out)
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
