//! The inference pass of each instance: claimed under a lease (so the pass that runs as an
//! instance arrives and the study job's catch-up never both run it), its state, and the
//! per-frame model outputs it records.

use super::{get, q, Db, DbError, InferenceState};

/// What a model said about one frame of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameOutput {
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
    /// A detector's boxes on this frame, in its pixels, best first (empty for a classifier).
    pub boxes: Vec<DetectedBox>,
    /// The frame's embedding as the model gave it (`outputs.embedding`); empty without one.
    pub embedding: Vec<f32>,
    /// What the model's input looked like (the drift check's input statistics); None in rows
    /// written before they were kept.
    pub input: Option<InputStats>,
    pub preprocess_us: i64,
    pub queue_us: i64,
    pub forward_us: i64,
    pub batch_size: i64,
    /// When the row was written (ignored when inserting).
    pub created_at_ms: i64,
}

/// A model input's statistics (`admin::drift` compares them with the package's): the share of
/// the first channel's windowed values (0..1) in each of ten bins 0.1 wide, the image's Pixel
/// Spacing between rows (mm) and its Slice Thickness (mm), each None when the header has none.
/// For a study (`StudyResult::inputs`): the mean histogram of the result's images, and the
/// median spacing and thickness of those that have one.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputStats {
    pub histogram: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_spacing: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_thickness: Option<f64>,
}

impl InputStats {
    /// The study's statistics from its images' (None when none has any).
    pub fn of_study<'a>(images: impl IntoIterator<Item = &'a InputStats>) -> Option<InputStats> {
        let images: Vec<&InputStats> = images.into_iter().filter(|s| !s.histogram.is_empty()).collect();
        let bins = images.first()?.histogram.len();
        let mut histogram = vec![0.0f64; bins];
        for s in &images {
            for (sum, v) in histogram.iter_mut().zip(&s.histogram) {
                *sum += f64::from(*v);
            }
        }
        let median = |f: &dyn Fn(&InputStats) -> Option<f64>| {
            let mut v: Vec<f64> = images.iter().filter_map(|s| f(s)).filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        Some(InputStats {
            histogram: histogram.iter().map(|h| ((h / images.len() as f64) * 1e5).round() as f32 / 1e5).collect(),
            pixel_spacing: median(&|s| s.pixel_spacing),
            slice_thickness: median(&|s| s.slice_thickness),
        })
    }
}

pub(crate) fn input_json(stats: Option<&InputStats>) -> Result<Option<String>, DbError> {
    stats.map(|s| serde_json::to_string(s).map_err(|e| DbError::Invalid(format!("input statistics: {e}")))).transpose()
}

pub(crate) fn parse_input(text: Option<String>) -> Result<Option<InputStats>, DbError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| DbError::Invalid(format!("stored input statistics: {e}")))).transpose()
}

/// A box a detector found, on its source frame: corners in image coordinates (pixels, (0, 0) the
/// top left corner of the top left pixel), its score, its label index, and its area in mm² where
/// the image's Pixel Spacing is known.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectedBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub score: f32,
    pub label: usize,
    #[serde(default)]
    pub area_mm2: Option<f64>,
}

impl DetectedBox {
    /// Its area in pixels of the source frame.
    pub fn area_pixels(&self) -> f64 {
        f64::from((self.x1 - self.x0).max(0.0)) * f64::from((self.y1 - self.y0).max(0.0))
    }
}

pub(crate) fn boxes_json(boxes: &[DetectedBox]) -> Result<String, DbError> {
    serde_json::to_string(boxes).map_err(|e| DbError::Invalid(format!("boxes: {e}")))
}

pub(crate) fn parse_boxes(text: &str) -> Result<Vec<DetectedBox>, DbError> {
    serde_json::from_str(text).map_err(|e| DbError::Invalid(format!("stored boxes: {e}")))
}

/// A study's inference passes still to run (claimable now) and still running elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInference {
    pub claimable: Vec<i64>,
    pub running: i64,
}

pub(crate) fn floats_json(v: &[f32]) -> String {
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

pub(crate) fn parse_floats(text: &str) -> Result<Vec<f32>, DbError> {
    serde_json::from_str(text).map_err(|e| DbError::Invalid(format!("stored float array: {e}")))
}

impl Db {
    /// Claim instance `id`'s inference pass until `lease_until_ms`. False when it is excluded,
    /// done, or held by a live claim.
    pub async fn claim_inference(&self, id: i64, now_ms: i64, lease_until_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE instances SET inference_state = $4, inference_lease_until_ms = $2
             WHERE id = $1 AND excluded_reason IS NULL
               AND (inference_state IS NULL OR (inference_state = $4 AND inference_lease_until_ms < $3))",
        )
        .bind(id)
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(InferenceState::Running.as_str())
        .execute(&self.pool)
        .await
        .map_err(q("claim inference"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Extend a running pass's claim (its heartbeat); false when it is no longer running.
    pub async fn renew_inference(&self, id: i64, lease_until_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE instances SET inference_lease_until_ms = $2 WHERE id = $1 AND inference_state = $3")
            .bind(id)
            .bind(lease_until_ms)
            .bind(InferenceState::Running.as_str())
            .execute(&self.pool)
            .await
            .map_err(q("renew inference claim"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Give a claimed pass back at once (its file could not be read now: the object store was
    /// unreachable), so that it runs again without waiting for its lease.
    pub async fn release_inference(&self, id: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE instances SET inference_state = NULL, inference_lease_until_ms = NULL WHERE id = $1 AND inference_state = $2")
            .bind(id)
            .bind(InferenceState::Running.as_str())
            .execute(&self.pool)
            .await
            .map_err(q("release inference claim"))?;
        Ok(())
    }

    /// Record the end of instance `id`'s pass: `Done` (with its outputs), `NotRouted` or
    /// `Failed` (with the reason), in one transaction.
    pub async fn record_inference(&self, id: i64, state: InferenceState, error: Option<&str>, rows: &[FrameOutput]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let now = crate::domain::now_ms();
        for r in rows {
            sqlx::query(
                "INSERT INTO slice_results (instance_id, model, model_version, frame, probabilities, source_rows, source_cols,
                                            cam_rows, cam_cols, cam, preprocess_us, queue_us, forward_us, batch_size, created_at_ms, boxes, embedding, input_stats)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
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
            .bind(boxes_json(&r.boxes)?)
            .bind((!r.embedding.is_empty()).then(|| super::embeddings::to_bytes(&r.embedding)))
            .bind(input_json(r.input.as_ref())?)
            .execute(&mut *tx)
            .await
            .map_err(q("insert slice result"))?;
        }
        sqlx::query("UPDATE instances SET inference_state = $2, inference_error = $3, inference_lease_until_ms = NULL WHERE id = $1")
            .bind(id)
            .bind(state.as_str())
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
             WHERE study_id = $1 AND excluded_reason IS NULL AND (inference_state IS NULL OR inference_state = $2) ORDER BY id",
        )
        .bind(study_id)
        .bind(InferenceState::Running.as_str())
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
    pub async fn study_frame_outputs(&self, study_id: i64) -> Result<Vec<FrameOutput>, DbError> {
        let rows =
            sqlx::query("SELECT r.* FROM slice_results r JOIN instances i ON i.id = r.instance_id WHERE i.study_id = $1 ORDER BY r.instance_id, r.frame")
                .bind(study_id)
                .fetch_all(&self.pool)
                .await
                .map_err(q("select study slices"))?;
        rows.iter()
            .map(|r| {
                Ok(FrameOutput {
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
                    boxes: parse_boxes(&get::<String>(r, "boxes")?)?,
                    embedding: get::<Option<Vec<u8>>>(r, "embedding")?.map(|b| super::embeddings::from_bytes(&b)).transpose()?.unwrap_or_default(),
                    input: parse_input(get(r, "input_stats")?)?,
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
        let failed = sqlx::query("SELECT id, inference_error FROM instances WHERE study_id = $1 AND inference_state = $2 ORDER BY id")
            .bind(study_id)
            .bind(InferenceState::Failed.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(q("select failed inference"))?;
        let failed = failed
            .iter()
            .map(|r| Ok((get(r, "id")?, get::<Option<String>>(r, "inference_error")?.unwrap_or_default())))
            .collect::<Result<Vec<_>, DbError>>()?;
        let not_routed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE study_id = $1 AND inference_state = $2")
            .bind(study_id)
            .bind(InferenceState::NotRouted.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(q("count not routed"))?;
        Ok((failed, not_routed))
    }

    /// The study's instances stored without their pixels (`excluded_reason`): (id, file, why).
    /// Their headers still say which models would take them.
    pub async fn study_excluded_instances(&self, study_id: i64) -> Result<Vec<(i64, String, String)>, DbError> {
        let rows = sqlx::query("SELECT id, path, excluded_reason FROM instances WHERE study_id = $1 AND excluded_reason IS NOT NULL ORDER BY id")
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select excluded instances"))?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "path")?, get(r, "excluded_reason")?))).collect()
    }

    /// A node alone on its SQLite file holds every claim: at start-up, the pass claims of its
    /// previous run are void (a crash left them), so passes run again at once instead of after
    /// their lease. Not for PostgreSQL, where other nodes' claims are live.
    pub async fn void_inference_claims(&self) -> Result<u64, DbError> {
        let passes = sqlx::query("UPDATE instances SET inference_state = NULL, inference_lease_until_ms = NULL WHERE inference_state = $1")
            .bind(InferenceState::Running.as_str())
            .execute(&self.pool)
            .await
            .map_err(q("void inference claims"))?;
        Ok(passes.rows_affected())
    }
}
