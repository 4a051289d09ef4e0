//! Live performance per model and version (the trust loop): what the models said on the
//! standing worklist and what readers concluded (`feedback`), as counts, agreement, PPV,
//! sensitivity and NPV estimates with Wilson 95% intervals, and turnaround. Estimates, said as
//! such: a verdict is one reader's on one finding, readers judge the studies they open (not a
//! random sample), and a negative nobody judged counts for nothing. Per scanner and per
//! site-defined scanner group (`[[performance.groups]]`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::AdminError;
use crate::config::ScannerGroup;
use crate::db::{Db, Feedback, StandingFindings, Verdict};
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
    /// The scanner group these figures are of (None: every scanner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// The same figures per scanner (empty inside a scanner's own figures).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scanners: Vec<ModelPerformance>,
    /// The site's scanner group these figures are of (`[[performance.groups]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The same figures per site-defined scanner group with studies of this model version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ModelPerformance>,
}

/// The figures of every model version with results on the standing worklist (or verdicts),
/// each with the same figures per scanner (`scanners`; "unknown" where the key image did not
/// name one) and per site-defined scanner group of `groups` (`groups`: a study may be in
/// several; one in none is in none).
pub async fn figures(db: &Db, groups: &[ScannerGroup]) -> Result<Vec<ModelPerformance>, AdminError> {
    let rows = db.worklist_findings_all().await?;
    let verdicts = db.feedback_all(None).await?;
    let scanner_of: BTreeMap<i64, String> = rows.iter().map(|r| (r.study_id, r.scanner.clone().unwrap_or_else(|| UNKNOWN.into()))).collect();
    let mut models = tally(&rows, &verdicts, |_| String::new());
    let by_scanner = tally(&rows, &verdicts, |study| scanner_of.get(&study).cloned().unwrap_or_else(|| UNKNOWN.into()));
    let mut by_group = Vec::new();
    for g in groups {
        let members: std::collections::HashSet<i64> = rows.iter().filter(|r| r.scanner.as_deref().is_some_and(|s| g.matches(s))).map(|r| r.study_id).collect();
        let inside = |study: &i64| members.contains(study);
        let rows: Vec<StandingFindings> = rows.iter().filter(|r| inside(&r.study_id)).cloned().collect();
        let verdicts: Vec<Feedback> = verdicts.iter().filter(|v| inside(&v.study_id)).cloned().collect();
        by_group.extend(tally(&rows, &verdicts, |_| String::new()).into_iter().map(|m| ModelPerformance { group: Some(g.name.clone()), ..m }));
    }
    for m in &mut models {
        let same = |o: &&ModelPerformance| o.model == m.model && o.model_version == m.model_version;
        m.scanners = by_scanner.iter().filter(same).cloned().collect();
        m.groups = by_group.iter().filter(same).cloned().collect();
    }
    Ok(models)
}

/// The scanner group of a study whose key image named none.
const UNKNOWN: &str = "unknown";

/// The figures per model version and group (`group` of a study row id; "" for one group).
fn tally(rows: &[StandingFindings], verdicts: &[Feedback], group: impl Fn(i64) -> String) -> Vec<ModelPerformance> {
    type Key = (String, String, String);
    let mut by: BTreeMap<Key, (ModelPerformance, Vec<i64>)> = BTreeMap::new();
    let fresh = |model: &str, version: &str, scanner: &str| {
        let scanner = (!scanner.is_empty()).then(|| scanner.to_string());
        (ModelPerformance { model: model.to_string(), model_version: version.to_string(), scanner, ..Default::default() }, Vec::new())
    };
    for row in rows {
        let findings: Vec<ListedFinding> = serde_json::from_str(&row.findings_json).unwrap_or_default();
        let g = group(row.study_id);
        let mut seen: Vec<Key> = Vec::new();
        for f in &findings {
            let key = (f.model.clone(), f.model_version.clone(), g.clone());
            let (m, times) = by.entry(key.clone()).or_insert_with(|| fresh(&f.model, &f.model_version, &g));
            if !seen.contains(&key) {
                m.studies += 1;
                times.push(row.turnaround_ms);
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
    type Counts = BTreeMap<Key, u64>;
    let (mut tp, mut fp, mut tn, mut fn_): (Counts, Counts, Counts, Counts) = Default::default();
    for v in verdicts {
        let g = group(v.study_id);
        let key = (v.model.clone(), v.model_version.clone(), g.clone());
        let (m, _) = by.entry(key.clone()).or_insert_with(|| fresh(&v.model, &v.model_version, &g));
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
    by.into_iter()
        .map(|(key, (mut m, mut times))| {
            let g = |map: &Counts| map.get(&key).copied().unwrap_or(0);
            let (tp, fp, tn, fn_) = (g(&tp), g(&fp), g(&tn), g(&fn_));
            m.agreement = wilson(m.agree, m.agree + m.disagree);
            m.ppv = wilson(tp, tp + fp);
            m.sensitivity = wilson(tp, tp + fn_);
            m.npv = wilson(tn, tn + fn_);
            times.sort_unstable();
            m.turnaround_median_ms = (!times.is_empty()).then(|| times[times.len() / 2]);
            m
        })
        .collect()
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
