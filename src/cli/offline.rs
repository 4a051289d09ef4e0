//! `triage-node infer` and `evaluate`: the models on files, no node, no database (`admin::evaluate`).

use std::path::PathBuf;

use triage_node::admin;
use triage_node::config::Settings;

/// Triage files with the configured models and print one JSON line per file.
pub async fn infer(settings: &Settings, paths: &[PathBuf], only: Option<&str>, heatmaps: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut print_error = None;
    let summary = admin::evaluate::infer(settings, paths, only, heatmaps, |result| match serde_json::to_string(result) {
        Ok(line) => println!("{line}"),
        Err(e) => print_error = Some(e),
    })
    .await?;
    if let Some(e) = print_error {
        return Err(e.into());
    }
    if summary.failed > 0 {
        anyhow::bail!("{} of {} files could not be triaged", summary.failed, summary.files);
    }
    Ok(())
}

/// Evaluate the models on labelled cases and print the metrics (or JSON).
pub async fn evaluate(settings: &Settings, labels: &std::path::Path, dir: &std::path::Path, only: Option<&str>, json: bool) -> anyhow::Result<()> {
    let report = admin::evaluate::evaluate(settings, labels, dir, only).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    for r in &report.results {
        let metrics = &r.metrics;
        let at = &metrics.at_manifest_threshold;
        println!("{} {} / {}: {} positive, {} negative cases", r.model, r.version, r.label, metrics.positives, metrics.negatives);
        if r.demonstration {
            println!("  (demonstration model, not clinically validated)");
        }
        println!("  ROC AUC {}", metrics.auc.map(|a| format!("{a:.4}")).unwrap_or_else(|| "n/a (needs both classes)".into()));
        println!("  at the manifest threshold {:.2}: sensitivity {:.3}, specificity {:.3}", at.threshold, at.sensitivity, at.specificity);
        println!("  {:>9}  {:>11}  {:>11}  {:>6}  {:>6}", "threshold", "sensitivity", "specificity", "PPV", "NPV");
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
        for p in &metrics.sweep {
            println!("  {:>9.2}  {:>11.3}  {:>11.3}  {:>6}  {:>6}", p.threshold, p.sensitivity, p.specificity, opt(p.ppv), opt(p.npv));
        }
    }
    if report.not_routed > 0 {
        println!("{} case(s) accepted by no model (routing)", report.not_routed);
    }
    for f in &report.failed {
        println!("failed: {f}");
    }
    Ok(())
}
