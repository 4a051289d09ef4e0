//! Validating a model on labelled cases before enabling it, and the offline engine that
//! `infer`, `evaluate` and `bench-infer` share (no node, no database).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::AdminError;
use crate::config::Settings;
use crate::inference::engine::Engine;
use crate::triage::evaluate::{self, Metrics};
use crate::triage::offline;

/// The configured model packages on the configured device, behind an engine; `only` must name
/// one of them.
pub async fn offline_engine(settings: &Settings, only: Option<&str>) -> Result<Engine, AdminError> {
    let (engine, _) = Engine::from_settings(&settings.inference.engine()).await.map_err(|e| AdminError::Engine(e.to_string()))?;
    if engine.manifests().is_empty() {
        return Err(AdminError::Engine(format!("no model packages in {} (inference.models_dir)", settings.inference.models_dir.display())));
    }
    if let Some(name) = only {
        if !engine.manifests().iter().any(|m| m.name == name) {
            let names: Vec<&str> = engine.manifests().iter().map(|m| m.name.as_str()).collect();
            return Err(AdminError::Invalid(format!("no model package named {name:?} (loaded: {})", names.join(", "))));
        }
    }
    Ok(engine)
}

/// Triage files (or every file under folders) with the configured models, no node and no
/// database; with `heatmaps`, each finding's heatmap is written there as PNG
/// (`<file stem>.<model>.<label>.png`). `each` gets every file's result as it is done.
pub async fn infer(
    settings: &Settings,
    paths: &[std::path::PathBuf],
    only: Option<&str>,
    heatmaps: Option<&Path>,
    mut each: impl FnMut(&offline::FileResult),
) -> Result<InferSummary, AdminError> {
    let engine = offline_engine(settings, only).await?;
    let files = crate::delivery::collect_files(paths)?;
    if let Some(dir) = heatmaps {
        std::fs::create_dir_all(dir).map_err(|source| AdminError::Io { what: "creating", path: dir.display().to_string(), source })?;
    }
    let tiers = crate::triage::aggregate::Tiers::from_settings(&settings.inference);
    let mut failed = 0;
    for file in &files {
        let mut result = offline::triage_file(&engine, file, only, tiers, heatmaps.is_some()).await;
        failed += usize::from(result.error.is_some());
        if let Some(dir) = heatmaps {
            let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            for r in &mut result.results {
                for f in &mut r.findings {
                    if let Some(rgb) = f.rendered.take() {
                        let target = dir.join(format!("{stem}.{}.{}.png", r.model, f.label));
                        offline::write_png(&target, &rgb).map_err(|source| AdminError::Io { what: "writing", path: target.display().to_string(), source })?;
                        f.heatmap = Some(target);
                    }
                }
            }
        }
        each(&result);
    }
    Ok(InferSummary { files: files.len(), failed })
}

#[derive(Debug, Clone, Copy)]
pub struct InferSummary {
    pub files: usize,
    /// Files that could not be triaged (each result says why).
    pub failed: usize,
}

/// Time one model on `files` in batches of `batch` (scripts/bench-infer.sh).
pub async fn bench(settings: &Settings, model: &str, batch: usize, files: &[std::path::PathBuf]) -> Result<offline::BenchReport, AdminError> {
    let mut settings = settings.clone();
    settings.inference.max_batch = batch.max(1);
    let engine = offline_engine(&settings, Some(model)).await?;
    let index = engine.manifests().iter().position(|m| m.name == model).expect("checked by offline_engine");
    let files = crate::delivery::collect_files(files)?;
    offline::bench(&engine, index, &files, batch.max(1)).await.map_err(AdminError::Engine)
}

/// One (model, label) pair's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LabelReport {
    pub model: String,
    pub version: String,
    pub demonstration: bool,
    pub label: String,
    /// The manifest's threshold for this label (sensitivity and specificity are given at it).
    #[serde(skip)]
    pub threshold: f32,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub results: Vec<LabelReport>,
    /// Cases that could not be triaged, with the reason.
    pub failed: Vec<String>,
    /// Cases no model accepted (routing).
    pub not_routed: usize,
}

/// Score every case of the `labels` CSV (`file,<label>...`, 0/1 per case, paths relative to
/// `dir`) with the configured models and compute each label's metrics.
pub async fn evaluate(settings: &Settings, labels: &Path, dir: &Path, only: Option<&str>) -> Result<Evaluation, AdminError> {
    let text = std::fs::read_to_string(labels).map_err(|source| AdminError::Io { what: "reading", path: labels.display().to_string(), source })?;
    let (label_names, rows) = evaluate::parse_labels(&text).map_err(|e| AdminError::Invalid(format!("{}: {e}", labels.display())))?;
    let engine = offline_engine(settings, only).await?;
    // (model, label) -> (scores, truth)
    let mut scores: BTreeMap<(String, String), (Vec<f32>, Vec<bool>)> = BTreeMap::new();
    let (mut failed, mut not_routed) = (Vec::new(), 0usize);
    for (file, truth) in &rows {
        let result = offline::triage_file(&engine, &dir.join(file), only, crate::triage::aggregate::Tiers::from_settings(&settings.inference), false).await;
        if let Some(e) = &result.error {
            failed.push(format!("{file}: {e}"));
            continue;
        }
        not_routed += usize::from(result.results.is_empty());
        for r in &result.results {
            for f in &r.findings {
                let Some(col) = label_names.iter().position(|l| l == &f.label) else { continue };
                if let Some(t) = truth[col] {
                    let e = scores.entry((r.model.clone(), f.label.clone())).or_default();
                    e.0.push(f.probability);
                    e.1.push(t);
                }
            }
        }
    }
    if scores.is_empty() {
        return Err(AdminError::Invalid(format!(
            "no case was scored: no label column of {} names a label of a model that accepted the files",
            labels.display()
        )));
    }
    let mut results = Vec::new();
    for ((model, label), (s, t)) in &scores {
        let m = engine.manifests().iter().find(|m| &m.name == model).expect("model of a result");
        let li = m.outputs.labels.iter().position(|l| l == label).expect("label of a result");
        let threshold = m.outputs.positive[li];
        results.push(LabelReport {
            model: model.clone(),
            version: m.version.clone(),
            demonstration: m.demonstration,
            label: label.clone(),
            threshold,
            metrics: evaluate::metrics(s, t, threshold),
        });
    }
    Ok(Evaluation { results, failed, not_routed })
}
