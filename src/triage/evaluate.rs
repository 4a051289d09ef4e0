//! Validation metrics for `triage-node evaluate`: a site's labelled cases against a model's
//! probabilities. ROC AUC (the Mann-Whitney statistic, ties counting one half), sensitivity
//! and specificity at the manifest's threshold, and a threshold sweep. Pure functions.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AtThreshold {
    pub threshold: f32,
    pub sensitivity: f64,
    pub specificity: f64,
    /// Positive and negative predictive values (NaN-free: None when nothing was called).
    pub ppv: Option<f64>,
    pub npv: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub positives: usize,
    pub negatives: usize,
    pub auc: Option<f64>,
    pub at_manifest_threshold: AtThreshold,
    pub sweep: Vec<AtThreshold>,
}

/// ROC AUC of `scores` against `truth`; None without both classes.
pub fn roc_auc(scores: &[f32], truth: &[bool]) -> Option<f64> {
    let pos: Vec<f32> = scores.iter().zip(truth).filter(|(_, &t)| t).map(|(s, _)| *s).collect();
    let neg: Vec<f32> = scores.iter().zip(truth).filter(|(_, &t)| !t).map(|(s, _)| *s).collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

/// Calls at `threshold` (score >= threshold is positive).
pub fn at_threshold(scores: &[f32], truth: &[bool], threshold: f32) -> AtThreshold {
    let (mut tp, mut fp, mut tn, mut fn_) = (0usize, 0usize, 0usize, 0usize);
    for (s, &t) in scores.iter().zip(truth) {
        match (*s >= threshold, t) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let ratio = |a: usize, b: usize| if a + b == 0 { None } else { Some(a as f64 / (a + b) as f64) };
    AtThreshold { threshold, sensitivity: ratio(tp, fn_).unwrap_or(0.0), specificity: ratio(tn, fp).unwrap_or(0.0), ppv: ratio(tp, fp), npv: ratio(tn, fn_) }
}

pub fn metrics(scores: &[f32], truth: &[bool], manifest_threshold: f32) -> Metrics {
    Metrics {
        positives: truth.iter().filter(|&&t| t).count(),
        negatives: truth.iter().filter(|&&t| !t).count(),
        auc: roc_auc(scores, truth),
        at_manifest_threshold: at_threshold(scores, truth, manifest_threshold),
        sweep: (1..20).map(|i| at_threshold(scores, truth, i as f32 * 0.05)).collect(),
    }
}

/// One labelled case: its file and, per label, 0 / 1 / not labelled.
pub type LabelledCase = (String, Vec<Option<bool>>);

/// Parse `labels.csv`: a header `file,<label>[,<label>...]`, then one row per case with 0 or 1
/// per label (empty: not labelled). Returns the label names and (file, values) rows.
pub fn parse_labels(text: &str) -> Result<(Vec<String>, Vec<LabelledCase>), String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or("labels file is empty")?;
    let mut cols = header.split(',').map(|c| c.trim().to_string());
    if cols.next().as_deref() != Some("file") {
        return Err("the header must start with `file`, then one column per label".into());
    }
    let labels: Vec<String> = cols.collect();
    if labels.is_empty() {
        return Err("the header names no label column".into());
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != labels.len() + 1 {
            return Err(format!("line {}: {} fields, the header has {}", n + 1, fields.len(), labels.len() + 1));
        }
        let values = fields[1..]
            .iter()
            .map(|v| match *v {
                "" => Ok(None),
                "0" => Ok(Some(false)),
                "1" => Ok(Some(true)),
                other => Err(format!("line {}: {other:?} is not 0, 1 or empty", n + 1)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.push((fields[0].to_string(), values));
    }
    Ok((labels, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_ties() {
        assert_eq!(roc_auc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.2, 0.9, 0.8], &[true, true, false, false]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        // 3 positives x 2 negatives: pairs won 5 of 6.
        assert!((roc_auc(&[0.9, 0.4, 0.7, 0.5, 0.1], &[true, true, true, false, false]).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.3], &[true]), None);
    }

    #[test]
    fn threshold_calls() {
        let t = at_threshold(&[0.9, 0.4, 0.7, 0.5, 0.1], &[true, true, true, false, false], 0.5);
        assert!((t.sensitivity - 2.0 / 3.0).abs() < 1e-12 && (t.specificity - 0.5).abs() < 1e-12);
        assert_eq!(t.ppv, Some(2.0 / 3.0));
        assert_eq!(t.npv, Some(0.5));
    }

    #[test]
    fn labels_parse_and_refuse_clearly() {
        let (labels, rows) = parse_labels("file,nodule\na.dcm,1\nb.dcm,0\nc.dcm,\n").unwrap();
        assert_eq!(labels, ["nodule"]);
        assert_eq!(rows[2].1, [None]);
        assert!(parse_labels("name,nodule\n").unwrap_err().contains("file"));
        assert!(parse_labels("file,nodule\na.dcm,yes\n").unwrap_err().contains("line 2"));
    }
}
