//! Score drift per model version and label (the trust loop): the live distribution of a
//! finding's probability, over the newest `drift.window` triaged studies, against the
//! distribution the package ships in `reference.json` (its validation set's study-level scores,
//! written by the training script), as the Population Stability Index.
//!
//! PSI = sum over bins of (live - reference) * ln(live / reference), the shares of each in ten
//! bins cut at the reference's deciles (equal edges merged, so a saturated model has fewer
//! bins), an empty share counted as 0.0001. Read as usual: below 0.1 stable, 0.1 to 0.25 a
//! moderate shift, above `drift.threshold` (0.25) a shift the site should look at (a new
//! scanner, protocol or population; or the model's operating point no longer fits). A drift
//! says the inputs changed, not that the model got worse: readers' verdicts (`performance`) say
//! that. A window holding studies of several scanners is also judged per scanner (each with
//! `min_studies` of its own), and so is each site-defined scanner group (`[[performance.groups]]`)
//! with `min_studies` in the window.
//!
//! Input drift, the same way, when `reference.json` has `inputs` (the package's validation
//! studies' input statistics, written by the training script through the node's preprocessing):
//! per model version, the study-level input statistics the node keeps with each result
//! (`db::InputStats`: the mean histogram of the first channel's windowed values in ten bins of
//! 0.1, the Pixel Spacing and the Slice Thickness) over the same window, against the reference:
//! `intensity`, the PSI over the ten bins between the live studies' mean histogram and the
//! reference studies' mean histogram; `pixel_spacing` and `slice_thickness`, the PSI of the live
//! studies' values over bins cut at the reference's deciles as for scores, plus its minimum and
//! just above its maximum (a value outside the reference's range falls in a bin of its own,
//! whose reference share is empty), only studies with a value counted.
//!
//! `alert` (run by the `DriftAlerts` worker every `drift.check_interval`) tells the
//! `[[notify.rules]]` with `drift = true` of each crossing of the threshold, once: the crossing
//! is claimed in the database (`drift_alerts`) in the transaction that queues its notices, and
//! told again only after the PSI fell below the threshold and crossed again.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use tracing::{info, warn};

use super::AdminError;
use crate::config::{DriftSettings, ScannerGroup};
use crate::db::{Db, DriftAlert, DriftKey, InputStats};
use crate::inference::package::Manifest;
use crate::inference::preprocess::HISTOGRAM_BINS;
use crate::results::notify::{drift_notice, drift_rules, Drifted};
use crate::results::Publisher;
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

/// A share no live (or reference) score fell into counts as this, so that PSI stays finite.
const EMPTY_SHARE: f64 = 1e-4;

/// `reference.json` of a package.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceFile {
    /// What the scores are of (e.g. "validation images (one per study)").
    #[serde(default)]
    pub source: String,
    /// Per label, the study-level probabilities of the reference set.
    pub scores: BTreeMap<String, Vec<f64>>,
    /// The reference set's input statistics (None: input drift not checked).
    #[serde(default)]
    pub inputs: Option<ReferenceInputs>,
}

/// `reference.json`'s `inputs`: one entry per reference study in each list (a study without a
/// Pixel Spacing or Slice Thickness left out of that list).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceInputs {
    /// Each study's mean histogram of its input's first channel, windowed: ten shares of 0..1
    /// (bins of 0.1), summing to 1.
    #[serde(default)]
    pub histogram: Vec<Vec<f64>>,
    /// Each study's Pixel Spacing between rows, mm.
    #[serde(default)]
    pub pixel_spacing: Vec<f64>,
    /// Each study's Slice Thickness, mm.
    #[serde(default)]
    pub slice_thickness: Vec<f64>,
}

/// What a drift entry compares.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// A label's study-level probability.
    Score,
    /// The input histogram (windowed first channel).
    Intensity,
    PixelSpacing,
    SliceThickness,
}

impl Feature {
    /// The input features, in the order they are checked.
    pub const INPUTS: [Feature; 3] = [Feature::Intensity, Feature::PixelSpacing, Feature::SliceThickness];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Score => "score",
            Feature::Intensity => "intensity",
            Feature::PixelSpacing => "pixel_spacing",
            Feature::SliceThickness => "slice_thickness",
        }
    }

    /// In a sentence: "intensity histogram", "pixel spacing", "slice thickness".
    pub fn words(self) -> &'static str {
        match self {
            Feature::Score => "score",
            Feature::Intensity => "intensity histogram",
            Feature::PixelSpacing => "pixel spacing",
            Feature::SliceThickness => "slice thickness",
        }
    }
}

/// A loaded model's reference distributions, found at start beside its manifest.
#[derive(Debug, Clone)]
pub struct Reference {
    pub model: String,
    pub version: String,
    pub labels: Vec<String>,
    /// None: the package ships no reference.json (drift not checked).
    pub file: Option<ReferenceFile>,
}

/// What the node checks: the loaded models' references and the settings.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub references: Vec<Reference>,
    pub settings: DriftSettings,
    /// The site's scanner groups (`[[performance.groups]]`), each judged on its own too (and
    /// the groups `/api/performance` gives).
    pub groups: Vec<ScannerGroup>,
}

/// How a label's live scores compare with its reference.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// PSI below 0.1.
    Stable,
    /// PSI from 0.1 up to the threshold.
    Moderate,
    /// PSI at or above `drift.threshold`: a warning.
    Drifted,
    /// Fewer live studies than `drift.min_studies`: nothing said yet.
    TooFewStudies,
    /// The package ships no reference scores for this label.
    NoReference,
}

/// One model version's label.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelDrift {
    pub model: String,
    pub model_version: String,
    /// What is compared: a label's scores, or one of the input statistics.
    pub feature: Feature,
    /// The label (score drift only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// The scanner these figures are of (None: every study in the window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// The site-defined scanner group these figures are of (`[[performance.groups]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub reference_studies: usize,
    pub live_studies: usize,
    /// None unless both sides have scores and there are enough live studies.
    pub psi: Option<f64>,
    pub state: DriftState,
    pub threshold: f64,
}

impl LabelDrift {
    /// "label L" for a score, "input F" for an input statistic, then where (" on scanner S",
    /// " on scanner group G", or nothing for every study).
    pub fn what(&self) -> String {
        let of = match self.feature {
            Feature::Score => format!("label {}", self.label),
            f => format!("input {}", f.words()),
        };
        let place = self
            .scanner
            .as_ref()
            .map(|s| format!(" on scanner {s}"))
            .or_else(|| self.group.as_ref().map(|g| format!(" on scanner group {g}")))
            .unwrap_or_default();
        format!("{of}{place}")
    }

    /// The sentence for `status`, `/readyz` and the log; no patient data (model, label, figures).
    pub fn warning(&self) -> Option<String> {
        let kind = if self.feature == Feature::Score { "score distribution" } else { "input statistics" };
        (self.state == DriftState::Drifted).then(|| {
            format!(
                "model {} {} {}: {kind} drifted (PSI {:.2} >= {:.2} over the last {} studies against {} reference studies)",
                self.model,
                self.model_version,
                self.what(),
                self.psi.unwrap_or_default(),
                self.threshold,
                self.live_studies,
                self.reference_studies
            )
        })
    }
}

impl Watch {
    /// The references of the loaded `manifests`: `reference.json` in the package folder under
    /// `models_dir` whose manifest has the same name and version. A reference.json that does
    /// not parse, or names a label the model does not have, stops the start (like a bad
    /// manifest), naming the file.
    pub fn load(models_dir: &Path, manifests: &[Manifest], settings: DriftSettings) -> Result<Watch, AdminError> {
        let mut references = Vec::new();
        for m in manifests {
            let file = match package_dir(models_dir, m) {
                Some(dir) => read_reference(&dir.join("reference.json"), m)?,
                None => None,
            };
            references.push(Reference { model: m.name.clone(), version: m.version.clone(), labels: m.outputs.labels.clone(), file });
        }
        Ok(Watch { references, settings, groups: Vec::new() })
    }

    /// The same, judging the site's scanner groups too.
    pub fn with_groups(self, groups: Vec<ScannerGroup>) -> Watch {
        Watch { groups, ..self }
    }

    /// For a command without the engine (`status`): the packages in `models_dir` that a node
    /// would serve (drafts left out), their references read as at start.
    pub fn from_models_dir(models_dir: &Path, settings: DriftSettings) -> Result<Watch, AdminError> {
        let mut manifests: Vec<Manifest> = std::fs::read_dir(models_dir)
            .map(|entries| entries.flatten().filter_map(|e| Manifest::load(&e.path().join("model.toml")).ok()).filter(|m| !m.draft).collect())
            .unwrap_or_default();
        manifests.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Watch::load(models_dir, &manifests, settings)
    }

    /// Every loaded label's score drift now, then each model's input drift (where its reference
    /// has inputs).
    pub async fn check(&self, db: &Db) -> Result<Vec<LabelDrift>, AdminError> {
        let s = &self.settings;
        let mut out = Vec::new();
        for r in &self.references {
            let blank = LabelDrift {
                model: r.model.clone(),
                model_version: r.version.clone(),
                feature: Feature::Score,
                label: String::new(),
                scanner: None,
                group: None,
                reference_studies: 0,
                live_studies: 0,
                psi: None,
                state: DriftState::NoReference,
                threshold: s.threshold,
            };
            for label in &r.labels {
                let reference = r.file.as_ref().and_then(|f| f.scores.get(label)).filter(|r| !r.is_empty());
                let blank = LabelDrift { label: label.clone(), reference_studies: reference.map_or(0, Vec::len), ..blank.clone() };
                let Some(reference) = reference else {
                    out.push(blank);
                    continue;
                };
                let live = db.recent_scores(&r.model, &r.version, label, s.window as i64).await?;
                out.extend(self.spread(&blank, &live, |d, scores| self.rate(d, scores.len(), || psi(reference, &scores))));
            }
            let Some(inputs) = r.file.as_ref().and_then(|f| f.inputs.as_ref()) else { continue };
            let live = db.recent_inputs(&r.model, &r.version, s.window as i64).await?;
            for feature in Feature::INPUTS {
                let blank = LabelDrift { feature, ..blank.clone() };
                match feature {
                    Feature::Intensity => {
                        let reference = &inputs.histogram;
                        let live: Vec<(Vec<f32>, Option<String>)> = live
                            .iter()
                            .filter(|(i, _)| i.histogram.len() == HISTOGRAM_BINS)
                            .map(|(i, scanner)| (i.histogram.clone(), scanner.clone()))
                            .collect();
                        let blank = LabelDrift { reference_studies: reference.len(), ..blank };
                        if reference.is_empty() {
                            out.push(blank);
                            continue;
                        }
                        out.extend(self.spread(&blank, &live, |d, h| self.rate(d, h.len(), || histogram_psi(reference, &h))));
                    }
                    _ => {
                        let spacing = feature == Feature::PixelSpacing;
                        let reference = if spacing { &inputs.pixel_spacing } else { &inputs.slice_thickness };
                        let value = |i: &InputStats| if spacing { i.pixel_spacing } else { i.slice_thickness };
                        let live: Vec<(f64, Option<String>)> = live.iter().filter_map(|(i, scanner)| Some((value(i)?, scanner.clone()))).collect();
                        let blank = LabelDrift { reference_studies: reference.len(), ..blank };
                        if reference.is_empty() {
                            out.push(blank);
                            continue;
                        }
                        out.extend(self.spread(&blank, &live, |d, v| self.rate(d, v.len(), || value_psi(reference, &v))));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Watch {
    /// `blank` judged by `judge` over every study of `live` (value, scanner), then over each
    /// scanner's when the window holds several (each with `min_studies` of its own), then over
    /// each site-defined group with `min_studies` in the window.
    fn spread<T: Clone>(&self, blank: &LabelDrift, live: &[(T, Option<String>)], judge: impl Fn(LabelDrift, Vec<T>) -> LabelDrift) -> Vec<LabelDrift> {
        let s = &self.settings;
        let mut out = vec![judge(blank.clone(), live.iter().map(|(v, _)| v.clone()).collect())];
        let mut by_scanner: BTreeMap<&str, Vec<T>> = BTreeMap::new();
        for (v, scanner) in live {
            by_scanner.entry(scanner.as_deref().unwrap_or("unknown")).or_default().push(v.clone());
        }
        if by_scanner.len() > 1 {
            for (scanner, values) in by_scanner.into_iter().filter(|(_, v)| v.len() >= s.min_studies) {
                out.push(judge(LabelDrift { scanner: Some(scanner.to_string()), ..blank.clone() }, values));
            }
        }
        for g in &self.groups {
            let values: Vec<T> = live.iter().filter(|(_, scanner)| scanner.as_deref().is_some_and(|s| g.matches(s))).map(|(v, _)| v.clone()).collect();
            if values.len() >= s.min_studies {
                out.push(judge(LabelDrift { group: Some(g.name.clone()), ..blank.clone() }, values));
            }
        }
        out
    }

    /// `d` with the figures of `live` live studies, their PSI given by `value` when there are
    /// enough of them.
    fn rate(&self, mut d: LabelDrift, live: usize, value: impl FnOnce() -> f64) -> LabelDrift {
        let s = &self.settings;
        d.live_studies = live;
        d.state = DriftState::TooFewStudies;
        if live >= s.min_studies && live > 0 {
            let value = value();
            d.psi = Some((value * 10_000.0).round() / 10_000.0);
            d.state = if value >= s.threshold {
                DriftState::Drifted
            } else if value >= 0.1 {
                DriftState::Moderate
            } else {
                DriftState::Stable
            };
        }
        d
    }
}

/// What a check does with one label's figures, given its stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A crossing of the threshold, this number (1 the first): tell it.
    Cross(i64),
    /// Back below the threshold: the next crossing is told again.
    Rearm,
    Nothing,
}

fn step(state: DriftState, stored: Option<&DriftAlert>) -> Step {
    match (state, stored) {
        (DriftState::Drifted, Some(a)) if a.drifted => Step::Nothing,
        (DriftState::Drifted, a) => Step::Cross(a.map_or(0, |a| a.crossings) + 1),
        (DriftState::Stable | DriftState::Moderate, Some(a)) if a.drifted => Step::Rearm,
        // Too few studies, no reference, or still below: nothing changes.
        _ => Step::Nothing,
    }
}

/// Tell every new crossing of the threshold to the rules with `drift = true` (through the
/// outbox, as the study notices go), and re-arm those that fell back below. Returns how many
/// crossings this call claimed.
pub async fn alert(watch: &Watch, db: &Db, publisher: &Publisher) -> Result<usize, AdminError> {
    let rules = publisher.notify.rules();
    if !rules.iter().any(|r| r.drift) {
        return Ok(0);
    }
    let stored: BTreeMap<DriftKey, DriftAlert> = db.drift_alerts().await?.into_iter().map(|a| (a.key.clone(), a)).collect();
    let mut claimed = 0;
    for d in watch.check(db).await? {
        let Some(psi) = d.psi else { continue };
        // A group's row is told apart from a scanner's by its prefix.
        let scanner = d.scanner.clone().or_else(|| d.group.as_ref().map(|g| format!("group:{g}"))).unwrap_or_default();
        // An input statistic's row is told apart from a label's by its prefix.
        let label = if d.feature == Feature::Score { d.label.clone() } else { format!("input:{}", d.feature.as_str()) };
        let key = DriftKey { model: d.model.clone(), model_version: d.model_version.clone(), label, scanner };
        let now = crate::domain::now_ms();
        match step(d.state, stored.get(&key)) {
            Step::Nothing => {}
            Step::Rearm => {
                if db.drift_rearm(&key, psi, now).await? {
                    info!(model = %d.model, version = %d.model_version, feature = d.feature.as_str(), label = %d.label, scanner = ?d.scanner, group = ?d.group, psi, "drift back below the threshold: a new crossing will be told");
                }
            }
            Step::Cross(crossing) => {
                let drifted = Drifted {
                    model: d.model.clone(),
                    model_version: d.model_version.clone(),
                    label: d.label.clone(),
                    feature: (d.feature != Feature::Score).then(|| d.feature.as_str().to_string()),
                    scanner: d.scanner.clone(),
                    group: d.group.clone(),
                    psi,
                    threshold: d.threshold,
                    window: watch.settings.window,
                    live_studies: d.live_studies,
                    reference_studies: d.reference_studies,
                    crossing,
                };
                let notices: Vec<_> =
                    drift_rules(rules, &d.model).into_iter().map(|r| drift_notice(r, &drifted, &publisher.station, &publisher.notify.link_base, now)).collect();
                let writer = publisher.clone();
                let items = tokio::task::spawn_blocking(move || notices.iter().map(|n| writer.drift_item(n)).collect::<Result<Vec<_>, _>>())
                    .await
                    .map_err(|e| AdminError::Engine(format!("writing drift notices: {e}")))??;
                if db.drift_cross(&key, crossing, psi, now, &publisher.node, &items).await? {
                    claimed += 1;
                    metrics::counter!("triage_drift_alerts_total", "model" => d.model.clone()).increment(1);
                    warn!(model = %d.model, version = %d.model_version, feature = d.feature.as_str(), label = %d.label, scanner = ?d.scanner, group = ?d.group, psi, crossing, rules = items.len(), "drift crossed the threshold: the rules with drift = true are told");
                    if !items.is_empty() {
                        publisher.wake.notify_one();
                    }
                } else {
                    // Claimed elsewhere meanwhile: the notices written go.
                    for item in &items {
                        if let Err(error) = publisher.blobs.delete(&item.path).await {
                            warn!(%error, "removing an unqueued drift notice failed");
                        }
                    }
                }
            }
        }
    }
    Ok(claimed)
}

/// The worker that runs `alert` every `drift.check_interval` (on every node: the crossing is
/// claimed in the database, so one node tells it).
pub struct DriftAlerts {
    watch: Watch,
    db: Db,
    publisher: Publisher,
}

impl DriftAlerts {
    pub fn new(watch: Watch, db: Db, publisher: Publisher) -> DriftAlerts {
        DriftAlerts { watch, db, publisher }
    }
}

impl Worker for DriftAlerts {
    fn name(&self) -> &'static str {
        "drift alerts"
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            alert(&self.watch, &self.db, &self.publisher).await?;
            Ok(WorkState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(self.watch.settings.check_interval))
    }
}

/// The folder under `models_dir` holding `m`'s manifest (same name and version).
fn package_dir(models_dir: &Path, m: &Manifest) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(models_dir).ok()?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|dir| Manifest::load(&dir.join("model.toml")).is_ok_and(|other| other.name == m.name && other.version == m.version))
}

fn read_reference(path: &Path, m: &Manifest) -> Result<Option<ReferenceFile>, AdminError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AdminError::Io { what: "reading", path: path.display().to_string(), source }),
    };
    let file: ReferenceFile = serde_json::from_str(&text).map_err(|e| AdminError::Invalid(format!("{}: not a reference file ({e})", path.display())))?;
    for (label, scores) in &file.scores {
        if !m.outputs.labels.contains(label) {
            return Err(AdminError::Invalid(format!("{}: label {label} is not one of the model's ({})", path.display(), m.outputs.labels.join(", "))));
        }
        if scores.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(AdminError::Invalid(format!("{}: label {label} has a score outside 0..1", path.display())));
        }
    }
    if let Some(inputs) = &file.inputs {
        if let Some(bad) = inputs
            .histogram
            .iter()
            .position(|h| h.len() != HISTOGRAM_BINS || h.iter().any(|v| !(0.0..=1.0).contains(v)) || (h.iter().sum::<f64>() - 1.0).abs() > 0.01)
        {
            return Err(AdminError::Invalid(format!("{}: inputs.histogram entry {bad} is not {HISTOGRAM_BINS} shares of 0..1 summing to 1", path.display())));
        }
        for (name, values) in [("pixel_spacing", &inputs.pixel_spacing), ("slice_thickness", &inputs.slice_thickness)] {
            if values.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
                return Err(AdminError::Invalid(format!("{}: inputs.{name} has a value that is not a positive number of mm", path.display())));
            }
        }
    }
    Ok(Some(file))
}

/// The bin edges: the reference's deciles, equal ones merged (the first bin is everything
/// below the first edge, the last everything at or above the last).
fn edges(reference: &[f64]) -> Vec<f64> {
    let mut sorted = reference.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10).map(|k| sorted[(k * sorted.len() / 10).min(sorted.len() - 1)]).collect();
    edges.dedup();
    edges
}

fn shares(scores: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    for p in scores {
        counts[edges.partition_point(|e| e <= p)] += 1;
    }
    counts.iter().map(|&c| (c as f64 / scores.len() as f64).max(EMPTY_SHARE)).collect()
}

/// The Population Stability Index of `live` against `reference` (both non-empty).
pub fn psi(reference: &[f64], live: &[f64]) -> f64 {
    let edges = edges(reference);
    index(&shares(reference, &edges), &shares(live, &edges))
}

/// sum of (actual - expected) * ln(actual / expected), shares floored at `EMPTY_SHARE`.
fn index(expected: &[f64], actual: &[f64]) -> f64 {
    expected.iter().zip(actual).map(|(e, a)| (a.max(EMPTY_SHARE) - e.max(EMPTY_SHARE)) * (a.max(EMPTY_SHARE) / e.max(EMPTY_SHARE)).ln()).sum()
}

/// The PSI of an input measure (spacing, thickness) of `live` against `reference` (both
/// non-empty): bins cut at the reference's deciles, its minimum and just above its maximum, so
/// that a value outside the reference's range (a constant reference included) has a bin of
/// its own.
pub fn value_psi(reference: &[f64], live: &[f64]) -> f64 {
    let mut edges = edges(reference);
    let (min, max) = reference.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    // Just above the maximum (`f64::next_up` is newer than the crate's MSRV).
    edges.extend([min, max + f64::EPSILON * max.abs().max(1.0)]);
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    index(&shares(reference, &edges), &shares(live, &edges))
}

/// The PSI over the histogram bins between the mean of the `live` studies' histograms and the
/// mean of the `reference` studies' (both non-empty).
pub fn histogram_psi(reference: &[Vec<f64>], live: &[Vec<f32>]) -> f64 {
    let mean = |rows: Vec<Vec<f64>>| -> Vec<f64> {
        let n = rows.len().max(1) as f64;
        (0..HISTOGRAM_BINS).map(|k| rows.iter().map(|h| h.get(k).copied().unwrap_or(0.0)).sum::<f64>() / n).collect()
    };
    let expected = mean(reference.to_vec());
    let actual = mean(live.iter().map(|h| h.iter().map(|v| f64::from(*v)).collect()).collect());
    index(&expected, &actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(n: usize) -> Vec<f64> {
        (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect()
    }

    #[test]
    fn a_crossing_is_told_once_and_again_only_after_falling_below() {
        let row = |drifted: bool, crossings: i64| DriftAlert {
            key: DriftKey { model: "m".into(), model_version: "1".into(), label: "l".into(), scanner: String::new() },
            drifted,
            crossings,
            psi: Some(0.3),
            changed_at_ms: 0,
        };
        // Never seen: the first crossing; seen drifted: nothing, however long it stays.
        assert_eq!(step(DriftState::Drifted, None), Step::Cross(1));
        assert_eq!(step(DriftState::Drifted, Some(&row(true, 1))), Step::Nothing);
        // Below again (moderate or stable): re-armed once; then the next crossing is number 2.
        assert_eq!(step(DriftState::Moderate, Some(&row(true, 1))), Step::Rearm);
        assert_eq!(step(DriftState::Stable, Some(&row(true, 1))), Step::Rearm);
        assert_eq!(step(DriftState::Stable, Some(&row(false, 1))), Step::Nothing);
        assert_eq!(step(DriftState::Drifted, Some(&row(false, 1))), Step::Cross(2));
        // Too few studies or no reference change nothing, drifted or not; nor does a stable
        // label never seen.
        for state in [DriftState::TooFewStudies, DriftState::NoReference] {
            assert_eq!(step(state, Some(&row(true, 3))), Step::Nothing);
            assert_eq!(step(state, None), Step::Nothing);
        }
        assert_eq!(step(DriftState::Stable, None), Step::Nothing);
    }

    #[test]
    fn the_same_distribution_is_stable() {
        let r = uniform(1000);
        assert!(psi(&r, &uniform(200)) < 1e-9, "{}", psi(&r, &uniform(200)));
    }

    #[test]
    fn psi_by_hand() {
        // Reference uniform on 0..1: ten bins of 0.1. Live: every score in the top bin:
        // 9 bins of (0.0001 - 0.1) * ln(0.0001 / 0.1) plus (1 - 0.1) * ln(1 / 0.1).
        let by_hand = 9.0 * (EMPTY_SHARE - 0.1) * (EMPTY_SHARE / 0.1f64).ln() + 0.9 * 10f64.ln();
        let got = psi(&uniform(1000), &[0.95; 50]);
        assert!((got - by_hand).abs() < 1e-9, "{got} vs {by_hand}");
        // Half the live scores in the lowest bin, half in the highest: 8 empty bins and two
        // of 0.5.
        let mut live = vec![0.01; 25];
        live.extend([0.99; 25]);
        let by_hand = 8.0 * (EMPTY_SHARE - 0.1) * (EMPTY_SHARE / 0.1f64).ln() + 2.0 * 0.4 * 5f64.ln();
        assert!((psi(&uniform(1000), &live) - by_hand).abs() < 1e-9);
    }

    #[test]
    fn input_histograms_compare_their_means() {
        // The reference: studies whose mean is 0.1 in every bin. The same mean live (from
        // other studies) is stable; one bin's shift of 0.1 is by hand.
        let flat = vec![0.1; 10];
        let mut a = vec![0.0; 10];
        a[0] = 0.5;
        a[1] = 0.5;
        let mut b = vec![0.0; 10];
        b[2..10].fill(0.125);
        let reference = vec![flat.clone(), flat.clone()];
        let live = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        assert!(histogram_psi(&reference, &[live(&flat)]) < 1e-9);
        // a and b's mean: 0.25, 0.25, then 0.0625 eight times.
        let by_hand = 2.0 * (0.25 - 0.1) * (0.25f64 / 0.1).ln() + 8.0 * (0.0625 - 0.1) * (0.0625f64 / 0.1).ln();
        let got = histogram_psi(&reference, &[live(&a), live(&b)]);
        assert!((got - by_hand).abs() < 1e-6, "{got} vs {by_hand}");
        // Everything in the top bin (a bright shift), against the flat reference: drifted.
        let mut top = vec![0.0; 10];
        top[9] = 1.0;
        let by_hand = 9.0 * (EMPTY_SHARE - 0.1) * (EMPTY_SHARE / 0.1f64).ln() + 0.9 * 10f64.ln();
        assert!((histogram_psi(&reference, &[live(&top)]) - by_hand).abs() < 1e-6);
    }

    #[test]
    fn a_measure_outside_the_references_range_has_a_bin_of_its_own() {
        // A constant reference (one scanner's spacing): the same value is stable, another one,
        // above or below, is not (deciles alone would put 0.7 with 0.5).
        let reference = [0.5; 100];
        assert!(value_psi(&reference, &[0.5; 20]) < 1e-9);
        let by_hand = (1.0 - EMPTY_SHARE) * (1.0 / EMPTY_SHARE).ln() + (EMPTY_SHARE - 1.0) * (EMPTY_SHARE / 1.0f64).ln();
        for other in [0.7, 0.3] {
            let got = value_psi(&reference, &[other; 20]);
            assert!((got - by_hand).abs() < 1e-6, "{other}: {got} vs {by_hand}");
        }
        // A spread reference (1 to 5 mm): the same spread is stable, all at 5 mm is not.
        let spread: Vec<f64> = (0..100).map(|i| 1.0 + 4.0 * i as f64 / 99.0).collect();
        assert!(value_psi(&spread, &spread[..50].iter().chain(&spread[50..]).copied().collect::<Vec<_>>()) < 1e-9);
        assert!(value_psi(&spread, &[5.0; 30]) > 0.25);
    }

    #[test]
    fn a_reference_without_inputs_still_reads_and_bad_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reference.json");
        let manifest = Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo-nodule/model.toml")).unwrap();
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_reference(&path, &manifest)
        };
        let old = read(r#"{"source": "x", "studies": 2, "scores": {"nodule": [0.1, 0.9]}}"#).unwrap().unwrap();
        assert!(old.inputs.is_none());
        let ok = read(r#"{"scores": {}, "inputs": {"histogram": [[0.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 0]], "pixel_spacing": [0.7], "slice_thickness": []}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(ok.inputs.unwrap().pixel_spacing, [0.7]);
        for bad in [
            r#"{"scores": {}, "inputs": {"histogram": [[0.5, 0.5]]}}"#,
            r#"{"scores": {}, "inputs": {"histogram": [[0.5, 0.6, 0, 0, 0, 0, 0, 0, 0, 0]]}}"#,
            r#"{"scores": {}, "inputs": {"pixel_spacing": [0]}}"#,
            r#"{"scores": {}, "inputs": {"spacing": [1]}}"#,
        ] {
            assert!(matches!(read(bad), Err(AdminError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn a_saturated_reference_merges_its_equal_edges() {
        // 70% of the reference at exactly 1.0: the deciles from the 4th on are all 1.0.
        let mut r = uniform(300);
        r.extend([1.0; 700]);
        let e = edges(&r);
        assert_eq!(e.iter().filter(|&&x| x == 1.0).count(), 1, "{e:?}");
        // The same mixture live is stable; all live at 1.0 is not.
        let mut live = uniform(30);
        live.extend([1.0; 70]);
        assert!(psi(&r, &live) < 0.1, "{}", psi(&r, &live));
        assert!(psi(&r, &[1.0; 100]) > 0.25);
    }
}
