//! From per-image model outputs to a study result: slice probabilities aggregated per label as
//! the manifest says (maximum, or mean of the top k), positive and urgent flags from its
//! thresholds, a confidence tier, the key image and its class activation map. Pure functions.

use crate::db::{Finding, FrameOutput, Priority, ResultState, SpanSlice, StudyResult};
use crate::inference::package::{Manifest, Pick};

/// Confidence tiers: the confidence of a call is p when positive and 1 - p when not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiers {
    pub high: f64,
    pub medium: f64,
}

impl Tiers {
    /// The tiers the `[inference]` section sets.
    pub fn from_settings(s: &crate::config::InferenceSettings) -> Tiers {
        let (high, medium) = s.tiers();
        Tiers { high, medium }
    }

    pub fn tier(&self, probability: f64, positive: bool) -> &'static str {
        let confidence = if positive { probability } else { 1.0 - probability };
        if confidence >= self.high {
            "high"
        } else if confidence >= self.medium {
            "medium"
        } else {
            "needs_review"
        }
    }
}

/// The study-level value of `values` (one per image; for "adjacent", in slice order) and the
/// index of the key image (the one with the highest value; for "adjacent", the highest of the
/// best run). `None` for no values.
pub fn aggregate(method: &str, k: usize, values: &[f32]) -> Option<(f32, usize)> {
    aggregate_span(method, k, values).map(|(value, key, _)| (value, key))
}

/// `aggregate`, and the images the value stands on: for "adjacent" the run of slices, else the
/// key image alone.
pub fn aggregate_span(method: &str, k: usize, values: &[f32]) -> Option<(f32, usize, std::ops::Range<usize>)> {
    let key = values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?.0;
    if method == "adjacent" {
        let k = k.max(1);
        if values.len() < k {
            let min = values.iter().copied().fold(f32::INFINITY, f32::min);
            return Some((min, key, 0..values.len()));
        }
        let (start, value) = (0..=values.len() - k)
            .map(|i| (i, values[i..i + k].iter().copied().fold(f32::INFINITY, f32::min)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
        let key = (start..start + k).max_by(|&a, &b| values[a].total_cmp(&values[b]).then(b.cmp(&a)))?;
        return Some((value, key, start..start + k));
    }
    let (value, key) = aggregate_one(method, k, values, key);
    Some((value, key, key..key + 1))
}

fn aggregate_one(method: &str, k: usize, values: &[f32], key: usize) -> (f32, usize) {
    let value = match method {
        "mean_top_k" => {
            let mut sorted = values.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let top = &sorted[..k.clamp(1, sorted.len())];
            top.iter().sum::<f32>() / top.len() as f32
        }
        _ => values[key],
    };
    (value, key)
}

/// What the study-level computation needs besides the rows.
pub struct Context<'a> {
    pub study_id: i64,
    pub manifests: &'a [Manifest],
    pub tiers: Tiers,
    /// (instance id, reason) of the study's instances whose pass failed.
    pub failed: &'a [(i64, String)],
    /// Each inferred instance's series and place: see `SliceOf`.
    pub series: &'a [SliceOf],
    /// (model name, reason, instance ids) for each model that would take instances of the
    /// study whose pixels were not kept (burned-in annotation): the node chose not to look.
    pub not_analysed: &'a [(String, String, Vec<i64>)],
    pub last_received_at_ms: i64,
    pub ready_at_ms: i64,
    pub triaged_at_ms: i64,
}

/// Where an inferred instance sits: (instance id, de-identified Series Instance UID, Slice
/// Thickness, its place in the series' slice order: the position along the slice normal, or
/// the Instance Number, the same for a whole series, else None).
pub type SliceOf = (i64, String, Option<f64>, Option<f64>);

/// Of the series whose images the model took, the one its manifest's rule picks, and that
/// series' outputs only. Thinnest: the smallest Slice Thickness among the series with at least
/// half as many images as the largest (a short bolus-tracking or test series does not win over
/// the volume), then the most images, then the first received; most instances: the most images,
/// then the thinnest.
fn pick_series<'a>(pick: Pick, series: &[SliceOf], mine: Vec<&'a FrameOutput>) -> (Option<String>, Vec<&'a FrameOutput>) {
    let index: std::collections::HashMap<i64, &SliceOf> = series.iter().map(|s| (s.0, s)).collect();
    let of = |id: i64| index.get(&id).copied();
    // (uid, thickness, instances, first instance id), in order of first appearance.
    let mut groups: Vec<(String, Option<f64>, std::collections::BTreeSet<i64>, i64)> = Vec::new();
    for o in &mine {
        let Some((_, uid, thickness, _)) = of(o.instance_id) else { continue };
        match groups.iter_mut().find(|g| &g.0 == uid) {
            Some(g) => {
                g.2.insert(o.instance_id);
            }
            None => groups.push((uid.clone(), *thickness, [o.instance_id].into(), o.instance_id)),
        }
    }
    let counted: Vec<(String, Option<f64>, usize, i64)> = groups.iter().map(|g| (g.0.clone(), g.1, g.2.len(), g.3)).collect();
    let best = pick_group(pick, &counted).map(|i| &groups[i]);
    match best {
        None => (None, mine),
        Some(g) => {
            let uid = g.0.clone();
            let kept = mine.into_iter().filter(|o| of(o.instance_id).is_some_and(|(_, u, _, _)| *u == uid)).collect();
            (Some(uid), kept)
        }
    }
}

/// Of series groups (uid, Slice Thickness, instances, first instance id), the one `pick`
/// chooses (see `pick_series`), by index.
pub fn pick_group(pick: Pick, groups: &[(String, Option<f64>, usize, i64)]) -> Option<usize> {
    let thickness = |g: &(String, Option<f64>, usize, i64)| g.1.unwrap_or(f64::INFINITY);
    let largest = groups.iter().map(|g| g.2).max().unwrap_or(0);
    groups
        .iter()
        .enumerate()
        .filter(|(_, g)| pick == Pick::MostInstances || 2 * g.2 >= largest)
        .min_by(|(_, a), (_, b)| {
            let by_count = b.2.cmp(&a.2);
            let by_thickness = thickness(a).total_cmp(&thickness(b));
            let first = match pick {
                Pick::Thinnest => by_thickness.then(by_count),
                Pick::MostInstances => by_count.then(by_thickness),
            };
            first.then(a.3.cmp(&b.3))
        })
        .map(|(i, _)| i)
}

/// The failed result of model `m` whose input could not be made (a slab or volume model's
/// series with missing or uneven slices), with the reason; it replaces any other result of
/// the model, and the "no model" placeholder.
pub fn fail_model(ctx: &Context<'_>, results: &mut Vec<StudyResult>, m: &Manifest, reason: &str) {
    results.retain(|r| r.model != m.name && !(r.model.is_empty() && r.state == ResultState::NotApplicable));
    let mut r = blank(ctx, None, &m.name, &m.version);
    r.demonstration = m.demonstration;
    r.intended_use = m.intended_use.clone();
    r.limits = m.limits.clone();
    r.state = ResultState::Failed;
    r.error = Some(reason.to_string());
    results.push(r);
}

fn blank(ctx: &Context<'_>, failure: Option<String>, model: &str, version: &str) -> StudyResult {
    StudyResult {
        study_id: ctx.study_id,
        model: model.to_string(),
        model_version: version.to_string(),
        demonstration: false,
        intended_use: String::new(),
        limits: String::new(),
        state: ResultState::NotApplicable,
        priority: None,
        error: failure,
        images_inferred: 0,
        instances_failed: ctx.failed.len() as i64,
        preprocess_ms: 0.0,
        forward_ms: 0.0,
        last_received_at_ms: ctx.last_received_at_ms,
        ready_at_ms: ctx.ready_at_ms,
        triaged_at_ms: ctx.triaged_at_ms,
        series_instance_uid: None,
        findings: Vec::new(),
        inputs: None,
    }
}

/// One result per model that saw an image of the study. A failed instance fails every result
/// (an incomplete result must not look like a complete one); a model that would take images
/// whose pixels were not kept, and saw none, gets a `not_analysed` result with the reason; a
/// study no model accepts gets one `not_applicable` result, and one whose every routed instance failed a `failed` one, both
/// under the empty model name.
pub fn study_results(ctx: &Context<'_>, slices: &[FrameOutput]) -> Vec<StudyResult> {
    let failure = (!ctx.failed.is_empty()).then(|| {
        let (_, reason) = &ctx.failed[0];
        format!("{} instance(s) of the study could not be processed; first: {reason}", ctx.failed.len())
    });
    let blank = |model: &str, version: &str| blank(ctx, failure.clone(), model, version);
    let mut results = Vec::new();
    for m in ctx.manifests {
        let mine: Vec<&FrameOutput> = slices.iter().filter(|s| s.model == m.name).collect();
        if mine.is_empty() {
            // Images this model takes were kept without their pixels: the study was not
            // analysed, which is no negative; the result says so and why.
            if let Some((_, why, _)) = ctx.not_analysed.iter().find(|(model, _, _)| *model == m.name) {
                let mut r = blank(&m.name, &m.version);
                r.demonstration = m.demonstration;
                r.intended_use = m.intended_use.clone();
                r.limits = m.limits.clone();
                r.state = if failure.is_some() { ResultState::Failed } else { ResultState::NotAnalysed };
                r.error = failure.clone().or_else(|| Some(format!("the images this model takes were stored without their pixels ({why})")));
                results.push(r);
            }
            continue;
        }
        let (series, mut mine) = pick_series(m.series.pick, ctx.series, mine);
        if m.aggregate.method == "adjacent" {
            // Slice order: position along the normal, else Instance Number, then frame.
            let places: std::collections::HashMap<i64, f64> = ctx.series.iter().filter_map(|s| Some((s.0, s.3?))).collect();
            let place = |o: &FrameOutput| places.get(&o.instance_id).copied().unwrap_or(f64::INFINITY);
            mine.sort_by(|a, b| place(a).total_cmp(&place(b)).then(a.instance_id.cmp(&b.instance_id)).then(a.frame.cmp(&b.frame)));
        }
        let mut r = blank(&m.name, &m.version);
        r.series_instance_uid = series;
        r.demonstration = m.demonstration;
        r.intended_use = m.intended_use.clone();
        r.limits = m.limits.clone();
        r.images_inferred = mine.len() as i64;
        r.inputs = crate::db::InputStats::of_study(mine.iter().filter_map(|s| s.input.as_ref()));
        r.preprocess_ms = mine.iter().map(|s| s.preprocess_us as f64).sum::<f64>() / 1000.0;
        r.forward_ms = mine.iter().map(|s| s.forward_us as f64 / s.batch_size.max(1) as f64).sum::<f64>() / 1000.0;
        if failure.is_some() {
            r.state = ResultState::Failed;
            results.push(r);
            continue;
        }
        let o = &m.outputs;
        // The negative class (e.g. "normal") is never a finding.
        for (label_index, label) in o.findings() {
            let values: Vec<f32> = mine.iter().map(|s| s.probabilities.get(label_index).copied().unwrap_or(0.0)).collect();
            let Some((p, key, run)) = aggregate_span(&m.aggregate.method, m.aggregate.k, &values) else { continue };
            let key = mine[key];
            let label_cam = |o: &FrameOutput| {
                let cells = (o.cam_rows * o.cam_cols) as usize;
                o.cam.get(label_index * cells..(label_index + 1) * cells).map(<[f32]>::to_vec).unwrap_or_default()
            };
            let cam = label_cam(key);
            // A volume's finding stands on a run of slices: each one's map goes with it.
            let span = if run.len() > 1 {
                mine[run].iter().map(|o| SpanSlice { instance_id: o.instance_id, frame: o.frame, cam: label_cam(o) }).collect()
            } else {
                Vec::new()
            };
            let positive = p >= o.positive[label_index];
            let urgent = p >= o.urgent[label_index];
            // A detector's finding keeps the key image's boxes of the label that reach the
            // positive threshold (best first, as the engine ordered them).
            let boxes = key.boxes.iter().filter(|b| b.label == label_index && b.score >= o.positive[label_index]).copied().collect();
            r.findings.push(Finding {
                label: label.clone(),
                probability: f64::from(p),
                positive,
                urgent,
                tier: ctx.tiers.tier(f64::from(p), positive).to_string(),
                key_instance_id: key.instance_id,
                key_frame: key.frame,
                source_rows: key.source_rows,
                source_cols: key.source_cols,
                cam_rows: key.cam_rows,
                cam_cols: key.cam_cols,
                cam,
                span,
                boxes,
            });
        }
        let priority = if r.findings.iter().any(|f| f.urgent) {
            Priority::Urgent
        } else if r.findings.iter().any(|f| f.positive) {
            Priority::Positive
        } else {
            Priority::Negative
        };
        r.priority = Some(priority);
        r.state = ResultState::Triaged;
        results.push(r);
    }
    if results.is_empty() {
        let mut r = blank("", "");
        r.state = if failure.is_some() { ResultState::Failed } else { ResultState::NotApplicable };
        results.push(r);
    }
    results
}

/// Each triaged result's study embedding: the embedding of the key image of its strongest
/// finding (a positive one first, then the highest probability: without a positive finding,
/// the most probable image), L2-normalised; none for a model without an embedding output, or
/// whose key image's embedding is zero or not finite.
pub fn study_embeddings(results: &[StudyResult], slices: &[FrameOutput]) -> Vec<crate::db::StudyEmbedding> {
    results
        .iter()
        .filter(|r| r.state == ResultState::Triaged)
        .filter_map(|r| {
            let f = r.findings.iter().max_by(|a, b| a.positive.cmp(&b.positive).then(a.probability.total_cmp(&b.probability)))?;
            let key = slices.iter().find(|s| s.model == r.model && s.instance_id == f.key_instance_id && s.frame == f.key_frame)?;
            Some(crate::db::StudyEmbedding {
                model: r.model.clone(),
                model_version: r.model_version.clone(),
                key_instance_id: f.key_instance_id,
                key_frame: f.key_frame,
                vector: unit(&key.embedding)?,
                received_at_ms: r.last_received_at_ms,
            })
        })
        .collect()
}

/// `v` scaled to length 1; None when empty, zero or not finite.
pub fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_methods() {
        assert_eq!(aggregate("max", 1, &[0.1, 0.9, 0.3]), Some((0.9, 1)));
        let (v, key) = aggregate("mean_top_k", 2, &[0.1, 0.9, 0.3]).unwrap();
        assert!((v - 0.6).abs() < 1e-6 && key == 1);
        // k above the count: the mean of all.
        assert!((aggregate("mean_top_k", 10, &[0.2, 0.4]).unwrap().0 - 0.3).abs() < 1e-6);
        assert_eq!(aggregate("max", 1, &[]), None);
        // A volume: one strong slice alone is not a finding; two adjacent ones are, and the
        // key slice is the stronger of them.
        let (v, key) = aggregate("adjacent", 2, &[0.1, 0.99, 0.1, 0.2, 0.8, 0.9, 0.1]).unwrap();
        assert!((v - 0.8).abs() < 1e-6 && key == 5, "{v} {key}");
        assert_eq!(aggregate("adjacent", 2, &[0.1, 0.99, 0.1]).unwrap().0, 0.1);
        assert_eq!(aggregate("adjacent", 3, &[0.7]), Some((0.7, 0)));
        // The run a volume's finding stands on; any other method stands on its key image.
        assert_eq!(aggregate_span("adjacent", 2, &[0.1, 0.99, 0.1, 0.2, 0.8, 0.9, 0.1]).unwrap().2, 4..6);
        assert_eq!(aggregate_span("max", 1, &[0.1, 0.9, 0.3]).unwrap().2, 1..2);
    }

    #[test]
    fn tiers_rate_the_call_not_the_probability() {
        let t = Tiers { high: 0.9, medium: 0.7 };
        assert_eq!(t.tier(0.95, true), "high");
        assert_eq!(t.tier(0.75, true), "medium");
        assert_eq!(t.tier(0.55, true), "needs_review");
        assert_eq!(t.tier(0.02, false), "high");
        assert_eq!(t.tier(0.4, false), "needs_review");
    }

    fn output(instance_id: i64) -> FrameOutput {
        FrameOutput {
            instance_id,
            model: "m".into(),
            model_version: "1".into(),
            frame: 0,
            probabilities: vec![0.5],
            source_rows: 1,
            source_cols: 1,
            cam_rows: 1,
            cam_cols: 1,
            cam: vec![0.0],
            boxes: Vec::new(),
            embedding: Vec::new(),
            input: None,
            preprocess_us: 0,
            queue_us: 0,
            forward_us: 0,
            batch_size: 1,
            created_at_ms: 0,
        }
    }

    /// Of several qualifying series the rule picks one, and only its images make the result:
    /// the thinnest (a 5 mm series of more images loses to a 1 mm one), else the largest.
    #[test]
    fn one_series_is_picked_by_the_manifests_rule() {
        let s = |id: i64, uid: &str, t: Option<f64>| (id, uid.to_string(), t, None);
        let series = [
            s(1, "thin", Some(1.0)),
            s(2, "thin", Some(1.0)),
            s(3, "thick", Some(5.0)),
            s(4, "thick", Some(5.0)),
            s(5, "thick", Some(5.0)),
            s(6, "none", None),
        ];
        let outs: Vec<FrameOutput> = (1..=6).map(output).collect();
        let ids = |v: &[&FrameOutput]| v.iter().map(|o| o.instance_id).collect::<Vec<_>>();
        let (uid, kept) = pick_series(Pick::Thinnest, &series, outs.iter().collect());
        assert_eq!((uid.as_deref(), ids(&kept)), (Some("thin"), vec![1, 2]));
        // A thinner series of a single image (a test bolus) does not win over the volume.
        let bolus = [s(1, "bolus", Some(0.6)), s(3, "thick", Some(5.0)), s(4, "thick", Some(5.0)), s(5, "thick", Some(5.0))];
        let (uid, _) = pick_series(Pick::Thinnest, &bolus, vec![&outs[0], &outs[2], &outs[3], &outs[4]]);
        assert_eq!(uid.as_deref(), Some("thick"));
        let (uid, kept) = pick_series(Pick::MostInstances, &series, outs.iter().collect());
        assert_eq!((uid.as_deref(), ids(&kept)), (Some("thick"), vec![3, 4, 5]));
        // One series: itself.
        let (uid, kept) = pick_series(Pick::Thinnest, &series[5..], vec![&outs[5]]);
        assert_eq!((uid.as_deref(), ids(&kept)), (Some("none"), vec![6]));
    }
}
