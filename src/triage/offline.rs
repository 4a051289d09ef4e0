//! Triage of files on disk, without a database: `triage-node infer` and `evaluate`. The same
//! routing, preprocessing, engine and aggregation as the node, per file.
//!
//! Owns: one file -> its per-model result (and the heatmap of each finding). Must not: write
//! to the database or the store.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array3, ArrayView2};
use serde::Serialize;

use super::aggregate::{aggregate, Tiers};
use crate::inference::engine::Engine;
use crate::inference::heatmap;
use crate::inference::preprocess::{Image, ModelInput, WindowRule};

#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    pub file: PathBuf,
    /// Why the file could not be triaged, if it could not.
    pub error: Option<String>,
    /// The routing attributes (no patient data), to explain a file no model accepts.
    pub modality: String,
    pub results: Vec<ModelResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    pub model: String,
    pub version: String,
    pub demonstration: bool,
    pub intended_use: String,
    pub limits: String,
    pub images: usize,
    pub preprocess_ms: f64,
    pub forward_ms: f64,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub label: String,
    pub probability: f32,
    pub positive: bool,
    pub urgent: bool,
    pub tier: &'static str,
    pub key_frame: usize,
    /// The class activation map of the key frame drawn over it, when heatmaps were asked for.
    pub heatmap: Option<PathBuf>,
    #[serde(skip)]
    pub rendered: Option<Array3<u8>>,
}

/// Triage one file with every model that accepts it (or only `only`). With `heatmaps`, each
/// finding carries its key frame's heatmap as RGB (long side at most 1024 pixels).
pub async fn triage_file(engine: &Engine, path: &Path, only: Option<&str>, tiers: Tiers, heatmaps: bool) -> FileResult {
    let mut out = FileResult { file: path.to_path_buf(), error: None, modality: String::new(), results: Vec::new() };
    let manifests = engine.manifests().to_vec();
    let owned = path.to_path_buf();
    let only_owned = only.map(str::to_string);
    let started = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let image = Image::open(&owned).map_err(|e| e.to_string())?;
        let models: Vec<usize> =
            // One file is one image: slab and volume models take whole series (the node's study job).
            (0..manifests.len())
                .filter(|&i| {
                    manifests[i].input.kind == crate::inference::package::InputKind::Slice
                        && only_owned.as_deref().is_none_or(|n| manifests[i].name == n)
                        && manifests[i].takes(&image.attrs)
                })
                .collect();
        if models.is_empty() {
            return Ok((image.attrs.modality.clone(), None));
        }
        let decoded = image.decode().map_err(|e| e.to_string())?;
        let per_model: Vec<(usize, Vec<ModelInput>)> = models
            .iter()
            .map(|&m| decoded.model_inputs(&manifests[m].input.spec(&image.attrs.modality)).map(|inputs| (m, inputs)))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        Ok((image.attrs.modality.clone(), Some((decoded, per_model))))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let preprocess_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (decoded, per_model) = match prepared {
        Err(e) => {
            out.error = Some(e);
            return out;
        }
        Ok((modality, None)) => {
            out.modality = modality;
            return out;
        }
        Ok((modality, Some(p))) => {
            out.modality = modality;
            p
        }
    };
    let images_total: usize = per_model.iter().map(|(_, v)| v.len()).sum();
    for (m, inputs) in per_model {
        let manifest = &engine.manifests()[m];
        let waiting = match engine.submit_many(m, inputs.iter().map(|i| i.values.clone()).collect()).await {
            Ok(waiting) => waiting,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        let mut outputs = Vec::new();
        for rx in waiting {
            match rx.await {
                Ok(Ok(o)) => outputs.push(o),
                Ok(Err(e)) => {
                    out.error = Some(e.to_string());
                    return out;
                }
                Err(_) => {
                    out.error = Some("the inference engine stopped".into());
                    return out;
                }
            }
        }
        let o = &manifest.outputs;
        let mut findings = Vec::new();
        for (li, label) in o.findings() {
            let values: Vec<f32> = outputs.iter().map(|x| x.probabilities[li]).collect();
            let Some((p, key)) = aggregate(&manifest.aggregate.method, manifest.aggregate.k, &values) else { continue };
            let positive = p >= o.positive[li];
            // A model without a class activation map: findings without a heatmap.
            let rendered = (heatmaps && outputs[key].cam_rows * outputs[key].cam_cols > 0).then(|| {
                let k = &outputs[key];
                let cells = k.cam_rows * k.cam_cols;
                let cam = ArrayView2::from_shape((k.cam_rows, k.cam_cols), &k.cam[li * cells..(li + 1) * cells]).expect("cam shape");
                // The key frame as the model saw it (its window, MONOCHROME2), the map over it.
                heatmap::over_frame(&decoded, inputs[key].frame, WindowRule::Fixed(inputs[key].window), cam, 1024)
            });
            findings.push(Finding {
                label: label.clone(),
                probability: p,
                positive,
                urgent: p >= o.urgent[li],
                tier: tiers.tier(f64::from(p), positive),
                key_frame: inputs[key].frame,
                heatmap: None,
                rendered,
            });
        }
        out.results.push(ModelResult {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
            demonstration: manifest.demonstration,
            intended_use: manifest.intended_use.clone(),
            limits: manifest.limits.clone(),
            images: inputs.len(),
            preprocess_ms: preprocess_ms * inputs.len() as f64 / images_total.max(1) as f64,
            forward_ms: outputs.iter().map(|x| x.forward_us as f64 / x.batch_size.max(1) as f64).sum::<f64>() / 1000.0,
            findings,
        });
    }
    out
}

/// Write an RGB image (rows x cols x 3) as PNG.
pub fn write_png(path: &Path, rgb: &Array3<u8>) -> std::io::Result<()> {
    let (rows, cols, _) = rgb.dim();
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, cols as u32, rows as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    let data: Vec<u8> = rgb.iter().copied().collect();
    w.write_image_data(&data).map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)
}

/// Timings of `triage-node bench-infer` (scripts/bench-infer.sh).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub batch: usize,
    pub images: usize,
    pub total_s: f64,
    /// Open + decode + Modality LUT + window + resize, summed over images.
    pub preprocess_s: f64,
    /// Waiting for the engine's forward passes, summed over batches.
    pub forward_s: f64,
    pub images_per_s: f64,
    pub ms_per_image: f64,
    /// The size of the batch each image actually ran in, averaged over the images.
    pub mean_batch_run: f64,
}

/// Triage `files` with model `model` in batches of `batch`, the way a study's images are:
/// preprocess a batch's files, queue them together, wait for the outputs. One warm-up batch
/// first (not counted).
pub async fn bench(engine: &Engine, model: usize, files: &[PathBuf], batch: usize) -> Result<BenchReport, String> {
    let manifest = engine.manifests().get(model).ok_or("no such model")?.clone();
    let prepare = |path: &Path| -> Result<Vec<f32>, String> {
        let image = Image::open(path).map_err(|e| e.to_string())?;
        let decoded = image.decode().map_err(|e| e.to_string())?;
        let mut inputs = decoded.model_inputs(&manifest.input.spec(&image.attrs.modality)).map_err(|e| e.to_string())?;
        Ok(inputs.swap_remove(0).values)
    };
    let run = |chunk: &[PathBuf]| {
        let prepare = &prepare;
        let chunk = chunk.to_vec();
        async move {
            let t = Instant::now();
            let inputs = chunk.iter().map(|p| prepare(p)).collect::<Result<Vec<_>, _>>()?;
            let pre = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let waiting = engine.submit_many(model, inputs).await.map_err(|e| e.to_string())?;
            let mut batch_sizes = 0;
            for rx in waiting {
                batch_sizes += rx.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?.batch_size;
            }
            Ok::<_, String>((pre, t.elapsed().as_secs_f64(), batch_sizes))
        }
    };
    run(&files[..batch.min(files.len())]).await?;
    let started = Instant::now();
    let (mut pre, mut fwd, mut batch_sizes) = (0.0, 0.0, 0);
    for chunk in files.chunks(batch.max(1)) {
        let (p, f, b) = run(chunk).await?;
        pre += p;
        fwd += f;
        batch_sizes += b;
    }
    let total = started.elapsed().as_secs_f64();
    Ok(BenchReport {
        model: manifest.name.clone(),
        batch,
        images: files.len(),
        total_s: total,
        preprocess_s: pre,
        forward_s: fwd,
        images_per_s: files.len() as f64 / total,
        ms_per_image: total * 1000.0 / files.len() as f64,
        mean_batch_run: batch_sizes as f64 / files.len().max(1) as f64,
    })
}
