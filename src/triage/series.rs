//! Slab and volume models (`input.kind = "slab" | "volume"`), run by the study job once the
//! study is ready, on the one series of the study each model's `[series]` rules pick: the
//! series checked as one regular stack (`inference::volume::stack`: ordered along the slice
//! normal; missing or uneven slices fail the model's result with the reason), then
//!
//! - a volume model: every slice decoded one at a time and resampled into one [C, D, H, W]
//!   buffer of the model's size (never the whole series at source size), one forward pass;
//!   its probabilities are the study's, given to every slice of the series, and its 3D map
//!   (if any) sampled back onto each source slice as that slice's map (at most `MAP_CELLS` a
//!   side: what a series holds grows by 16 KiB per label and slice, besides its headers);
//! - a slab model: each slice with its neighbours (`input.slab` slices, the edge slice repeated
//!   at either end) as channels, each windowed in HU and resized; chunks of `CHUNK` centres at a
//!   time.
//!
//! The outputs are slice outputs like a slice model's (not stored: made again if the job runs
//! again), so aggregation, heatmaps and the SR work unchanged.

use std::path::PathBuf;
use std::time::Instant;

use tracing::warn;

use super::{Triage, TriageError};
use crate::db::FrameOutput;
use crate::inference::engine::EngineError;
use crate::inference::package::{InputKind, Manifest};
use crate::inference::preprocess::{histogram, resize, Image, ImageAttrs, HISTOGRAM_BINS};
use crate::inference::volume::{self, Geometry, Grid, Stack, VolumeError};

/// Why a series model's run ended when the engine stopped (shutdown), not because of its input.
const STOPPED: &str = "the inference engine has stopped";

/// A volume model's map sampled on each source slice: at most this many cells a side (16 KiB
/// per label and slice), however fine the model's map.
const MAP_CELLS: usize = 64;

/// Slab centres prepared and queued at a time (memory: CHUNK slabs and CHUNK + slab planes).
const CHUNK: usize = 32;

/// What the study's slab and volume models gave: slice outputs, and (model, reason) for each
/// whose series could not be made into its input.
#[derive(Default)]
pub(super) struct SeriesOutputs {
    pub slices: Vec<FrameOutput>,
    pub failed: Vec<(String, String)>,
}

/// A chunk of slabs as the model takes them, and each one's input histogram.
type Chunk = (Vec<Vec<f32>>, Vec<[f32; HISTOGRAM_BINS]>);

/// One stored slice: its row id, series, file, routing attributes and geometry.
type Slice = (i64, String, PathBuf, ImageAttrs, Geometry);

impl Triage {
    /// Run every slab and volume model on the series of the study it picks.
    pub(super) async fn run_series_models(&self, study_id: i64) -> Result<SeriesOutputs, TriageError> {
        let manifests = self.engine.manifests();
        let mut out = SeriesOutputs::default();
        if manifests.iter().all(|m| m.input.kind == InputKind::Slice) {
            return Ok(out);
        }
        let excluded: std::collections::HashSet<i64> = self.db.study_excluded_instances(study_id).await?.into_iter().map(|(id, _, _)| id).collect();
        let rows: Vec<(i64, String, String)> = self.db.study_instance_series(study_id).await?.into_iter().filter(|(id, _, _)| !excluded.contains(id)).collect();
        let blobs = self.blobs.clone();
        // Headers only (up to the pixel data); an unreadable one is left out (its instance's
        // own pass says why, and a gap it leaves fails the series).
        let slices: Vec<Slice> = tokio::task::spawn_blocking(move || {
            rows.into_iter()
                .filter_map(|(id, series, path)| {
                    let file = blobs.fetch_blocking(&path).ok()?;
                    let (attrs, geometry) = volume::read_header(&file).ok()?;
                    Some((id, series, file, attrs, geometry))
                })
                .collect()
        })
        .await
        .map_err(|e| TriageError::Task(e.to_string()))?;
        for (index, m) in manifests.iter().enumerate() {
            if m.input.kind == InputKind::Slice {
                continue;
            }
            let Some(series) = pick(m, &slices) else { continue };
            let geometries: Vec<Geometry> = series.iter().map(|s| s.4.clone()).collect();
            let stack = match volume::stack(&geometries, m.input.min_slices as usize) {
                Ok(stack) => stack,
                Err(e) => {
                    warn!(model = %m.name, error = %e, "the model's series is not one regular stack; its result fails");
                    out.failed.push((m.name.clone(), e.to_string()));
                    continue;
                }
            };
            let ordered: Vec<Slice> = stack.order.iter().map(|&i| series[i].clone()).collect();
            let run = match m.input.kind {
                InputKind::Volume => self.run_volume(index, m, &stack, ordered).await,
                _ => self.run_slabs(index, m, &stack, ordered).await,
            };
            match run {
                Ok(mut slices) => out.slices.append(&mut slices),
                // Shutdown: the job is retried after its lease, not failed.
                Err(reason) if reason == STOPPED => return Err(TriageError::Task(STOPPED.into())),
                Err(reason) => {
                    warn!(model = %m.name, error = %reason, "the model's series could not be run; its result fails");
                    out.failed.push((m.name.clone(), reason));
                }
            }
        }
        Ok(out)
    }

    /// The volume of `ordered` (stack order) through model `index`: its outputs as one slice
    /// output per source slice.
    async fn run_volume(&self, index: usize, m: &Manifest, stack: &Stack, ordered: Vec<Slice>) -> Result<Vec<FrameOutput>, String> {
        let depth = m.input.depth.unwrap_or(1) as usize;
        let grid = Grid::new(stack, [depth, m.input.size[0] as usize, m.input.size[1] as usize], m.input.spacing);
        let spec = m.input.spec(&ordered[0].3.modality);
        let files: Vec<PathBuf> = ordered.iter().map(|s| s.2.clone()).collect();
        let (rows, cols) = (stack.rows, stack.cols);
        let started = Instant::now();
        let _permit = self.preprocess.acquire().await.map_err(|e| e.to_string())?;
        let (input, histogram) = tokio::task::spawn_blocking(move || volume::read_volume_with_histogram(&files, grid, &spec, rows, cols))
            .await
            .map_err(|e| if e.is_panic() { "the pixel decoder crashed on a slice of the series".to_string() } else { e.to_string() })?
            .map_err(|e| e.to_string())?;
        drop(_permit);
        let preprocess_us = started.elapsed().as_micros() as i64;
        let o = self.engine.infer(index, input).await.map_err(engine_error)?;
        let labels = m.outputs.labels.len();
        let cells = o.cam_depth * o.cam_rows * o.cam_cols;
        // Each slice's map at most MAP_CELLS a side: kept for every slice of the series.
        let on_slice = [o.cam_rows.min(MAP_CELLS), o.cam_cols.min(MAP_CELLS)];
        let mut slices: Vec<FrameOutput> = ordered
            .iter()
            .enumerate()
            .map(|(k, s)| {
                // The 3D map of each label sampled on this slice, over its whole frame.
                let cam: Vec<f32> = if cells == 0 {
                    Vec::new()
                } else {
                    (0..labels)
                        .flat_map(|l| volume::map_on_slice(&grid, &o.cam[l * cells..(l + 1) * cells], [o.cam_depth, o.cam_rows, o.cam_cols], k, on_slice))
                        .collect()
                };
                let first = k == 0;
                FrameOutput {
                    instance_id: s.0,
                    model: m.name.clone(),
                    model_version: m.version.clone(),
                    frame: 0,
                    probabilities: o.probabilities.clone(),
                    source_rows: stack.rows as i64,
                    source_cols: stack.cols as i64,
                    cam_rows: if cells == 0 { 0 } else { on_slice[0] as i64 },
                    cam_cols: if cells == 0 { 0 } else { on_slice[1] as i64 },
                    cam,
                    boxes: Vec::new(),
                    embedding: o.embedding.clone(),
                    // The volume's histogram, with each slice's own header figures.
                    input: Some(super::pass::input_stats(&histogram, s.3.pixel_spacing, s.3.slice_thickness)),
                    // One pass for the series: counted once.
                    preprocess_us: if first { preprocess_us } else { 0 },
                    queue_us: o.queue_us as i64,
                    forward_us: if first { o.forward_us as i64 } else { 0 },
                    batch_size: o.batch_size as i64,
                    created_at_ms: 0,
                }
            })
            .collect();
        // Every slice carries the study's probabilities; the key image (the last of equal
        // maxima) is then the slice where the map is strongest.
        let strength = |f: &FrameOutput| f.cam.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        slices.sort_by(|a, b| strength(a).total_cmp(&strength(b)));
        Ok(slices)
    }

    /// Each slice of `ordered` (stack order) with its neighbours through model `index`.
    async fn run_slabs(&self, index: usize, m: &Manifest, stack: &Stack, ordered: Vec<Slice>) -> Result<Vec<FrameOutput>, String> {
        let k = m.input.slab.unwrap_or(1) as usize;
        let n = ordered.len();
        let spec = m.input.spec(&ordered[0].3.modality);
        let (rows, cols) = (stack.rows, stack.cols);
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(CHUNK) {
            let end = (start + CHUNK).min(n);
            let files: Vec<PathBuf> = ordered.iter().map(|s| s.2.clone()).collect();
            let spec = spec.clone();
            let started = Instant::now();
            let _permit = self.preprocess.acquire().await.map_err(|e| e.to_string())?;
            let prepared = tokio::task::spawn_blocking(move || -> Result<Chunk, VolumeError> {
                // The planes this chunk's slabs need, each windowed in HU (its own window) and
                // resized once.
                let first = start.saturating_sub(k / 2);
                let last = (end + k / 2).min(n);
                let mut planes = Vec::with_capacity(last - first);
                for (i, file) in files.iter().enumerate().take(last).skip(first) {
                    let pixels = |e: crate::inference::preprocess::PixelError| VolumeError::Pixels { index: i, reason: e.to_string() };
                    let decoded = Image::open(file).and_then(|im| im.decode()).map_err(pixels)?;
                    if decoded.values.dim().1 != rows || decoded.values.dim().2 != cols {
                        return Err(VolumeError::MixedSize);
                    }
                    let (display, _) = decoded.display_frame(0, spec.window);
                    planes.push(resize(display.view(), spec.rows, spec.cols));
                }
                let at = |v: &[f32], c: usize| v.get(c).or(v.last()).copied().unwrap_or_default();
                // A slab's input statistics are its centre slice's (windowed, resized).
                let histograms = (start..end).map(|centre| histogram(planes[centre - first].iter().copied())).collect();
                let slabs = (start..end)
                    .map(|centre| {
                        volume::slab_indices(n, k, centre)
                            .into_iter()
                            .enumerate()
                            .flat_map(|(c, i)| {
                                let (mean, std) = (at(&spec.mean, c), at(&spec.std, c));
                                planes[i - first].iter().map(move |x| (x * spec.scale - mean) / std).collect::<Vec<f32>>()
                            })
                            .collect()
                    })
                    .collect();
                Ok((slabs, histograms))
            })
            .await
            .map_err(|e| if e.is_panic() { "the pixel decoder crashed on a slice of the series".to_string() } else { e.to_string() })?
            .map_err(|e| e.to_string())?;
            let (slabs, histograms) = prepared;
            drop(_permit);
            let per_image_us = started.elapsed().as_micros() as i64 / (end - start) as i64;
            let answers = self.engine.submit_many(index, slabs).await.map_err(engine_error)?;
            for (centre, answer) in (start..end).zip(answers) {
                let o = answer.await.map_err(|_| STOPPED.to_string())?.map_err(engine_error)?;
                let s = &ordered[centre];
                out.push(FrameOutput {
                    instance_id: s.0,
                    model: m.name.clone(),
                    model_version: m.version.clone(),
                    frame: 0,
                    probabilities: o.probabilities,
                    source_rows: stack.rows as i64,
                    source_cols: stack.cols as i64,
                    cam_rows: o.cam_rows as i64,
                    cam_cols: o.cam_cols as i64,
                    cam: o.cam,
                    boxes: super::pass::source_boxes(m, stack.rows, stack.cols, s.3.pixel_spacing, &o.boxes),
                    embedding: o.embedding,
                    input: Some(super::pass::input_stats(&histograms[centre - start], s.3.pixel_spacing, s.3.slice_thickness)),
                    preprocess_us: per_image_us,
                    queue_us: o.queue_us as i64,
                    forward_us: o.forward_us as i64,
                    batch_size: o.batch_size as i64,
                    created_at_ms: 0,
                });
            }
        }
        Ok(out)
    }
}

fn engine_error(e: EngineError) -> String {
    match e {
        EngineError::Stopped => STOPPED.into(),
        e => e.to_string(),
    }
}

/// The slices of the one series of the study model `m` takes (its routing and `[series]`
/// rules; several qualifying: its `pick` rule, as for a slice model), in arrival order.
fn pick(m: &Manifest, slices: &[Slice]) -> Option<Vec<Slice>> {
    let mine: Vec<&Slice> = slices.iter().filter(|s| m.takes(&s.3)).collect();
    let mut groups: Vec<(String, Option<f64>, usize, i64)> = Vec::new();
    for s in &mine {
        match groups.iter_mut().find(|g| g.0 == s.1) {
            Some(g) => {
                g.1 = g.1.or(s.3.slice_thickness);
                g.2 += 1;
            }
            None => groups.push((s.1.clone(), s.3.slice_thickness, 1, s.0)),
        }
    }
    let chosen = &groups[super::aggregate::pick_group(m.series.pick, &groups)?].0;
    Some(mine.into_iter().filter(|s| &s.1 == chosen).cloned().collect())
}
