//! One instance's pass: claim -> decode and preprocess on the blocking pool (bounded to the
//! cores) -> engine -> one transaction; and `Arrivals`, the worker that starts each pass as its
//! instance lands. A decoder that fails or panics fails the instance, with the reason.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn, Instrument};

use super::heartbeat::Heartbeat;
use super::{Triage, TriageError};
use crate::db::{DetectedBox, FrameOutput, InferenceState, InputStats};
use crate::domain::now_ms;
use crate::inference::engine::{EngineError, ModelBox};
use crate::inference::package::{InputKind, Manifest};
use crate::inference::preprocess::{box_to_source, Image, ModelInput, PixelError};
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

/// One image of an instance, ready for model `model`.
struct Prepared {
    model: usize,
    input: ModelInput,
    /// The image's Pixel Spacing (a detector's boxes get their area in mm²).
    pixel_spacing: Option<[f64; 2]>,
    /// The image's Slice Thickness (an input statistic).
    slice_thickness: Option<f64>,
}

impl Triage {
    /// Run instance `id`'s pass unless it is excluded, done, or running elsewhere.
    pub async fn infer_instance(&self, id: i64) -> Result<(), TriageError> {
        // The preprocessing slot first, then the claim: under a backlog a pass claimed while it
        // waits for a slot could outlive its lease and be run twice.
        let permit = self.preprocess.clone().acquire_owned().await.map_err(|e| TriageError::Task(e.to_string()))?;
        let now = now_ms();
        if !self.db.claim_inference(id, now, now + self.lease.as_millis() as i64).await? {
            return Ok(());
        }
        // Renewed while the pass runs, as a job's claim: only a dead node's passes expire.
        let db = self.db.clone();
        let _heartbeat = Heartbeat::start(self.lease, move |until| {
            let db = db.clone();
            async move { db.renew_inference(id, until).await }
        });
        let path = self.db.instance_path(id).await?.ok_or(TriageError::NoInstance(id))?;
        let full = match self.blobs.fetch(&path).await {
            Ok(full) => full,
            // The file is gone (not the bucket): the pass fails, and the study's result says so.
            Err(e) if e.is_missing() => {
                error!(error = %e, "the instance's file is missing");
                return Ok(self.db.record_inference(id, InferenceState::Failed, Some("the instance's stored file is missing"), &[]).await?);
            }
            Err(e) => {
                // The bucket is unreachable: the pass runs again later (the study job waits).
                let _ = self.db.release_inference(id).await;
                return Err(e.into());
            }
        };
        let manifests: Vec<Manifest> = self.engine.manifests().to_vec();
        let started = Instant::now();
        let prepared = match tokio::task::spawn_blocking(move || prepare(&full, &manifests)).await {
            Ok(prepared) => prepared,
            // A decoder that panics on these pixels would panic again on every retry: the
            // instance fails (and its study's result says so) instead of staying claimed.
            Err(e) if e.is_panic() => Err(PixelError::Crashed),
            Err(e) => return Err(TriageError::Task(e.to_string())),
        };
        drop(permit);
        let preprocess_us = started.elapsed().as_micros() as i64;
        let mut images = match prepared {
            Ok(images) if images.is_empty() => {
                debug!("no model accepts this instance");
                return Ok(self.db.record_inference(id, InferenceState::NotRouted, None, &[]).await?);
            }
            Ok(images) => images,
            Err(e) => {
                warn!(error = %e, "instance pixels cannot be prepared; its study's result will say so");
                return Ok(self.db.record_inference(id, InferenceState::Failed, Some(&e.to_string()), &[]).await?);
            }
        };
        let per_image_us = preprocess_us / images.len() as i64;
        // Queue every image first, each model's together, so they can share a batch; then collect.
        let mut waiting = Vec::with_capacity(images.len());
        let mut models: Vec<usize> = images.iter().map(|p| p.model).collect();
        models.sort_unstable();
        models.dedup();
        for model in models {
            let (mine, rest): (Vec<_>, Vec<_>) = images.into_iter().partition(|p| p.model == model);
            images = rest;
            match self.engine.submit_many(model, mine.iter().map(|p| p.input.values.clone()).collect()).await {
                Ok(answers) => waiting.extend(mine.into_iter().zip(answers.into_iter().map(Ok))),
                Err(e) => waiting.extend(mine.into_iter().map(|p| (p, Err(e.clone())))),
            }
        }
        let mut rows = Vec::with_capacity(waiting.len());
        let mut failure: Option<EngineError> = None;
        for (p, answer) in waiting {
            let out = match answer {
                Ok(rx) => rx.await.unwrap_or(Err(EngineError::Stopped)),
                Err(e) => Err(e),
            };
            match out {
                Ok(o) => {
                    let m = &self.engine.manifests()[p.model];
                    let boxes = source_boxes(m, p.input.source_rows, p.input.source_cols, p.pixel_spacing, &o.boxes);
                    rows.push(FrameOutput {
                        instance_id: id,
                        model: m.name.clone(),
                        model_version: m.version.clone(),
                        frame: p.input.frame as i64,
                        probabilities: o.probabilities,
                        source_rows: p.input.source_rows as i64,
                        source_cols: p.input.source_cols as i64,
                        cam_rows: o.cam_rows as i64,
                        cam_cols: o.cam_cols as i64,
                        cam: o.cam,
                        boxes,
                        embedding: o.embedding,
                        input: Some(input_stats(&p.input.histogram, p.pixel_spacing, p.slice_thickness)),
                        preprocess_us: per_image_us,
                        queue_us: o.queue_us as i64,
                        forward_us: o.forward_us as i64,
                        batch_size: o.batch_size as i64,
                        created_at_ms: 0,
                    })
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            // The engine stopped (shutdown): leave the claim to expire, the study job retries.
            Some(EngineError::Stopped) => Ok(()),
            Some(e) => {
                error!(error = %e, "inference failed");
                Ok(self.db.record_inference(id, InferenceState::Failed, Some(&e.to_string()), &[]).await?)
            }
            None => Ok(self.db.record_inference(id, InferenceState::Done, None, &rows).await?),
        }
    }
}

/// A detector's boxes mapped from the model's input back onto the source frame, with their area
/// in mm² where the image's Pixel Spacing is known.
pub(super) fn source_boxes(m: &Manifest, source_rows: usize, source_cols: usize, pixel_spacing: Option<[f64; 2]>, boxes: &[ModelBox]) -> Vec<DetectedBox> {
    let [rows, cols] = m.input.size.map(|v| v as usize);
    boxes
        .iter()
        .map(|b| {
            let [x0, y0, x1, y1] = box_to_source(b.corners, rows, cols, source_rows, source_cols);
            let mut d = DetectedBox { x0, y0, x1, y1, score: b.score, label: b.label, area_mm2: None };
            d.area_mm2 = pixel_spacing.map(|[row, col]| d.area_pixels() * row * col);
            d
        })
        .collect()
}

/// An image's input statistics: its histogram, the row spacing of its Pixel Spacing, its Slice
/// Thickness (a non-positive or non-finite one counts as none).
pub(super) fn input_stats(histogram: &[f32], pixel_spacing: Option<[f64; 2]>, slice_thickness: Option<f64>) -> InputStats {
    InputStats {
        histogram: histogram.iter().map(|v| (v * 1e5).round() / 1e5).collect(),
        pixel_spacing: pixel_spacing.map(|[row, _]| row),
        slice_thickness: slice_thickness.filter(|t| *t > 0.0 && t.is_finite()),
    }
}

/// The span of one instance's inference pass (the instance's row id, never its UIDs).
pub(super) fn pass_span(id: i64) -> tracing::Span {
    tracing::info_span!("pass", instance = id)
}

/// Runs the pass of each instance as it arrives (the channel the C-STORE path feeds).
pub struct Arrivals {
    triage: Arc<Triage>,
    rx: mpsc::Receiver<i64>,
    next: Option<i64>,
    closed: bool,
    passes: TaskTracker,
}

impl Arrivals {
    pub fn new(triage: Arc<Triage>, rx: mpsc::Receiver<i64>) -> Arrivals {
        Arrivals { triage, rx, next: None, closed: false, passes: TaskTracker::new() }
    }
}

impl Worker for Arrivals {
    fn name(&self) -> &'static str {
        "arrivals"
    }

    /// Start the pass of one arrived instance (on its own task: passes run side by side).
    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            let id = match self.next.take() {
                Some(id) => id,
                None => match self.rx.try_recv() {
                    Ok(id) => id,
                    Err(mpsc::error::TryRecvError::Empty) => return Ok(if self.closed { WorkState::Done } else { WorkState::Idle }),
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(WorkState::Done),
                },
            };
            let me = self.triage.clone();
            self.passes.spawn(
                async move {
                    if let Err(e) = me.infer_instance(id).await {
                        error!(error = %e, "inference pass failed");
                    }
                }
                .instrument(pass_span(id)),
            );
            Ok(WorkState::Busy)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(id) => self.next = Some(id),
                None => self.closed = true,
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.passes.close();
            self.passes.wait().await;
        })
    }
}

/// Open the instance, route it, decode once and prepare every frame for every slice model that
/// accepts it (slab and volume models take whole series in the study job: `series`). Empty
/// when none does.
fn prepare(path: &std::path::Path, manifests: &[Manifest]) -> Result<Vec<Prepared>, PixelError> {
    if manifests.is_empty() {
        return Ok(Vec::new());
    }
    let image = Image::open(path)?;
    let models: Vec<usize> = (0..manifests.len()).filter(|&i| manifests[i].input.kind == InputKind::Slice && manifests[i].takes(&image.attrs)).collect();
    if models.is_empty() {
        return Ok(Vec::new());
    }
    let decoded = image.decode()?;
    let mut out = Vec::new();
    for m in models {
        let spec = manifests[m].input.spec(&image.attrs.modality);
        let (pixel_spacing, slice_thickness) = (image.attrs.pixel_spacing, image.attrs.slice_thickness);
        out.extend(decoded.model_inputs(&spec)?.into_iter().map(|input| Prepared { model: m, input, pixel_spacing, slice_thickness }));
    }
    Ok(out)
}
