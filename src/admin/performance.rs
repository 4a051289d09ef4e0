//! Live performance per model and version (the trust loop): what the models said on the
//! standing worklist and what readers concluded (`feedback`), as counts, agreement, PPV,
//! sensitivity and NPV estimates with Wilson 95% intervals, and turnaround. Estimates, said as
//! such: a verdict is one reader's on one finding, readers judge the studies they open (not a
//! random sample), and a negative nobody judged counts for nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use super::AdminError;
use crate::db::{Db, Verdict};
use crate::results::worklist::ListedFinding;

/// A proportion with its Wilson score interval (95%); None without observations.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Estimate {
    pub successes: u64,
    pub total: u64,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// `k` of `n` with the Wilson score interval at 95% (z = 1.96).
pub fn wilson(k: u64, n: u64) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let (k, n_f) = (k as f64, n as f64);
    let z = 1.96f64;
    let p = k / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * ((p * (1.0 - p) / n_f) + z * z / (4.0 * n_f * n_f)).sqrt() / denom;
    let r = |x: f64| (x * 10_000.0).round() / 10_000.0;
    Some(Estimate { successes: k as u64, total: n, value: r(p), low: r((centre - half).max(0.0)), high: r((centre + half).min(1.0)) })
}

/// One model version's figures.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ModelPerformance {
    pub model: String,
    pub model_version: String,
    /// Studies on the worklist (not retracted) with a result of this version.
    pub studies: u64,
    /// Its findings: positive, urgent, negative.
    pub positive: u64,
    pub urgent: u64,
    pub negative: u64,
    /// Verdicts given on its findings.
    pub verdicts: u64,
    pub agree: u64,
    pub disagree: u64,
    pub not_assessable: u64,
    /// Agree among agree + disagree.
    pub agreement: Option<Estimate>,
    /// Positive findings readers agreed with, among positive findings judged.
    pub ppv: Option<Estimate>,
    /// Positive-and-agreed among those plus negatives readers said were present.
    pub sensitivity: Option<Estimate>,
    /// Negative-and-agreed among negatives judged.
    pub npv: Option<Estimate>,
    /// Median time from the last instance to the result, milliseconds.
    pub turnaround_median_ms: Option<i64>,
}

/// The figures of every model version with results on the standing worklist (or verdicts).
pub async fn figures(db: &Db) -> Result<Vec<ModelPerformance>, AdminError> {
    let rows = db.worklist_findings_all().await?;
    let verdicts = db.feedback_all(None).await?;
    let mut by: BTreeMap<(String, String), (ModelPerformance, Vec<i64>)> = BTreeMap::new();
    for (_, json, turnaround) in &rows {
        let findings: Vec<ListedFinding> = serde_json::from_str(json).unwrap_or_default();
        let mut seen: Vec<(String, String)> = Vec::new();
        for f in &findings {
            let key = (f.model.clone(), f.model_version.clone());
            let (m, times) = by
                .entry(key.clone())
                .or_insert_with(|| (ModelPerformance { model: f.model.clone(), model_version: f.model_version.clone(), ..Default::default() }, Vec::new()));
            if !seen.contains(&key) {
                m.studies += 1;
                times.push(*turnaround);
                seen.push(key);
            }
            if f.positive {
                m.positive += 1;
            } else {
                m.negative += 1;
            }
            if f.urgent {
                m.urgent += 1;
            }
        }
    }
    let (mut tp, mut fp, mut tn, mut fn_): (BTreeMap<_, u64>, BTreeMap<_, u64>, BTreeMap<_, u64>, BTreeMap<_, u64>) = Default::default();
    for v in &verdicts {
        let key = (v.model.clone(), v.model_version.clone());
        let (m, _) = by
            .entry(key.clone())
            .or_insert_with(|| (ModelPerformance { model: v.model.clone(), model_version: v.model_version.clone(), ..Default::default() }, Vec::new()));
        m.verdicts += 1;
        match (v.verdict, v.positive) {
            (Verdict::Agree, true) => *tp.entry(key).or_default() += 1,
            (Verdict::Disagree, true) => *fp.entry(key).or_default() += 1,
            (Verdict::Agree, false) => *tn.entry(key).or_default() += 1,
            (Verdict::Disagree, false) => *fn_.entry(key).or_default() += 1,
            (Verdict::NotAssessable, _) => {}
        }
        match v.verdict {
            Verdict::Agree => m.agree += 1,
            Verdict::Disagree => m.disagree += 1,
            Verdict::NotAssessable => m.not_assessable += 1,
        }
    }
    Ok(by
        .into_iter()
        .map(|(key, (mut m, mut times))| {
            let g = |map: &BTreeMap<(String, String), u64>| map.get(&key).copied().unwrap_or(0);
            let (tp, fp, tn, fn_) = (g(&tp), g(&fp), g(&tn), g(&fn_));
            m.agreement = wilson(m.agree, m.agree + m.disagree);
            m.ppv = wilson(tp, tp + fp);
            m.sensitivity = wilson(tp, tp + fn_);
            m.npv = wilson(tn, tn + fn_);
            times.sort_unstable();
            m.turnaround_median_ms = (!times.is_empty()).then(|| times[times.len() / 2]);
            m
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_match_the_published_values() {
        // Newcombe (1998), method 3: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605.
        let e = wilson(81, 263).unwrap();
        assert_eq!((e.low, e.high), (0.2553, 0.3662));
        let e = wilson(15, 148).unwrap();
        assert_eq!((e.low, e.high), (0.0624, 0.1605));
        assert_eq!(wilson(0, 0), None);
        let all = wilson(10, 10).unwrap();
        assert_eq!((all.value, all.high), (1.0, 1.0));
        assert!(all.low > 0.69 && all.low < 0.73, "{all:?}");
    }
}
