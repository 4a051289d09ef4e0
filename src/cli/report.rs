//! `triage-node results` (and `results retract`), `worklist` and `status`: what the node holds,
//! no patient data.

use clap::Subcommand;
use triage_node::admin::{self, Access};
use triage_node::config::Settings;

#[derive(Subcommand)]
pub enum ResultsAction {
    /// Retract a study's AI results: the PACS gets an IHE IOCM rejection note for every result
    /// object it was sent (through the outbox: a running node sends it at its next poll), the
    /// RIS a correction (with [hl7] enabled), and the study leaves the worklist. Audited with
    /// the reason.
    Retract {
        /// The study's row id (the STUDY column of `results` and `worklist`).
        study_id: i64,
        /// Why (required; kept in the audit trail only, never sent).
        #[arg(long)]
        reason: String,
        /// Rejected for Patient Safety Reasons (113037) rather than for Quality Reasons (113001).
        #[arg(long)]
        patient_safety: bool,
    },
}

/// A `results` subcommand.
pub async fn results_action(settings: &Settings, action: ResultsAction) -> anyhow::Result<()> {
    match action {
        ResultsAction::Retract { study_id, reason, patient_safety } => retract(settings, study_id, &reason, patient_safety).await,
    }
}

/// `results retract`: withdraw a study's AI results.
async fn retract(settings: &Settings, study_id: i64, reason: &str, patient_safety: bool) -> anyhow::Result<()> {
    use admin::results::Reason;
    // Refused before anything is opened.
    admin::results::reason_text(reason)?;
    let db = admin::open(settings, Access::Audited).await?;
    let publisher = match admin::open_blobs(settings).await {
        Ok(blobs) => admin::results::publisher(settings, blobs),
        Err(e) => {
            db.close().await;
            return Err(e.into());
        }
    };
    let title = if patient_safety { Reason::PatientSafety } else { Reason::Quality };
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let done = admin::results::retract(&db, &publisher, study_id, title, reason, &format!("cli:{user}")).await;
    db.close().await;
    let r = done?;
    println!("study {}: AI results retracted ({} {}), off the worklist", r.study_id, r.code, r.meaning);
    if r.destinations.is_empty() {
        println!("  no rejection note: no PACS destination is configured");
    } else {
        println!("  rejection note of {} objects queued for {}", r.objects, r.destinations.join(", "));
    }
    println!("  {}", if r.hl7 { "correction queued for the RIS" } else { "no correction for the RIS (HL7 is off, or it was sent no report)" });
    Ok(())
}

/// `results`: the newest study results and where their objects are.
pub async fn results(settings: &Settings, limit: i64) -> anyhow::Result<()> {
    let db = admin::open(settings, Access::Read).await?;
    let results = admin::report::recent_results(&db, limit).await;
    db.close().await;
    println!("{:>6}  {:<20}  {:<14}  {:<8}  {:>7}  FINDINGS (probability, confidence)", "STUDY", "MODEL", "STATE", "PRIORITY", "IMAGES");
    for admin::report::ResultSummary { result: r, deliveries, retraction } in results? {
        let findings: Vec<String> =
            r.findings.iter().map(|f| format!("{}{} {:.3} {}", f.label, if f.positive { "+" } else { "-" }, f.probability, f.tier)).collect();
        let model = if r.model.is_empty() { "-".to_string() } else { format!("{} {}", r.model, r.model_version) };
        let detail = r.error.clone().unwrap_or_else(|| findings.join(", "));
        println!(
            "{:>6}  {:<20}  {:<14}  {:<8}  {:>7}  {detail}",
            r.study_id,
            model,
            r.state,
            r.priority.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.images_inferred
        );
        if !deliveries.is_empty() {
            let parts: Vec<String> = deliveries.iter().map(|(kind, state, n)| format!("{n} {kind} {state}")).collect();
            println!("{:>6}  to the PACS: {}", "", parts.join(", "));
        }
        if r.demonstration {
            println!("{:>6}  (demonstration model, not clinically validated)", "");
        }
        if let Some(x) = retraction {
            println!("{:>6}  RETRACTED ({}) by {}: off the worklist until triaged again", "", x.code, x.by);
        }
    }
    Ok(())
}

/// `worklist`: the first studies of the reading order.
pub async fn worklist(settings: &Settings, limit: i64, json: bool) -> anyhow::Result<()> {
    let db = admin::open(settings, Access::Read).await?;
    let list = admin::report::worklist(&db, limit).await;
    db.close().await;
    let list = list?;
    if !json {
        println!("{:<14}  {:>6}  {:>5}  {:>10}  FINDINGS", "PRIORITY", "STUDY", "SCORE", "RESULT IN");
    }
    for e in &list {
        if json {
            println!("{}", serde_json::to_string(e)?);
            continue;
        }
        let findings: Vec<String> =
            e.findings.iter().map(|f| format!("{} {}{} {:.3} ({})", f.model, f.label, if f.positive { "+" } else { "-" }, f.probability, f.tier)).collect();
        let detail = if e.reasons.is_empty() { findings.join(", ") } else { format!("{} | not analysed: {}", findings.join(", "), e.reasons.join("; ")) };
        let score = e.score.map(|s| format!("{s:.3}")).unwrap_or_else(|| "-".into());
        let demo = if e.demonstration { "  [demonstration model]" } else { "" };
        println!(
            "{:<14}  {:>6}  {:>5}  {:>9.1}s  {}{demo}",
            e.priority.as_str(),
            e.study_id,
            score,
            e.time_to_result_ms as f64 / 1000.0,
            detail.trim_start_matches(" | ")
        );
    }
    Ok(())
}

/// `status`: what the store holds and what every node's workers last reported.
pub async fn status(settings: &Settings) -> anyhow::Result<()> {
    let db = admin::open(settings, Access::Read).await?;
    let status = admin::report::status(&db, &settings.storage.data_dir).await;
    let drift = match admin::drift::Watch::from_models_dir(&settings.inference.models_dir, settings.drift.clone())
        .map(|w| w.with_groups(settings.performance.groups.clone()))
    {
        Ok(watch) => watch.check(&db).await,
        Err(e) => Err(e),
    };
    db.close().await;
    let st = status?;
    let storage = match settings.storage.backend {
        triage_node::blobs::Backend::Local => "files in the data directory".to_string(),
        triage_node::blobs::Backend::S3 => format!("files in bucket {} at {}", settings.storage.s3.bucket, settings.storage.s3.endpoint),
    };
    println!("node: {} ({storage})", settings.node_id());
    let nodes: std::collections::BTreeSet<&str> = st.workers.iter().map(|w| w.node.as_str()).collect();
    if nodes.len() > 1 {
        println!("nodes sharing this database: {}", nodes.into_iter().collect::<Vec<_>>().join(", "));
    }
    println!("instances: {}", st.instances);
    for (reason, n) in &st.not_triaged {
        println!("instances not triaged ({reason}): {n}");
    }
    println!("de-identifications awaiting their audit entry: {}", st.awaiting_audit);
    if st.quarantined > 0 {
        println!(
            "store files in quarantine (no database row; see {}): {}",
            triage_node::ingest::quarantine_dir(&settings.storage.data_dir).display(),
            st.quarantined
        );
    }
    for (state, n) in &st.studies {
        println!("studies {state}: {n}");
    }
    for (state, n) in &st.jobs {
        println!("jobs {state}: {n}");
    }
    for (state, n) in &st.procedure_steps {
        println!("procedure steps (MPPS) {state}: {n}");
    }
    for (state, n) in &st.results {
        println!("study results {state}: {n}");
    }
    if st.conflicting_studies > 0 {
        println!("studies whose instances name different patients (not triaged): {}", st.conflicting_studies);
    }
    for (state, n) in &st.outbox {
        println!("outbox {state}: {n}");
    }
    match drift {
        Ok(labels) => {
            for d in labels.iter().filter(|d| d.psi.is_some()) {
                println!(
                    "{} drift {} {} {}: {:?} (PSI {:.3} over {} studies)",
                    if d.feature == admin::drift::Feature::Score { "score" } else { "input" },
                    d.model,
                    d.model_version,
                    d.what(),
                    d.state,
                    d.psi.unwrap_or_default(),
                    d.live_studies
                );
            }
            for warning in labels.iter().filter_map(|d| d.warning()) {
                println!("WARNING: {warning}");
            }
        }
        Err(e) => println!("drift not checked: {e}"),
    }
    let now = triage_node::domain::now_ms();
    for w in &st.workers {
        let mut line = format!("worker {} on {}: {}, {} units, {} errors", w.name, w.node, w.state, w.units, w.errors);
        if w.restarts > 0 {
            line.push_str(&format!(", {} panics", w.restarts));
        }
        if let (Some(e), Some(at)) = (&w.last_error, w.last_error_at_ms) {
            line.push_str(&format!("; last error {} s ago: {e}", (now - at) / 1000));
        }
        let silent_s = (now - w.updated_at_ms) / 1000;
        if w.state != triage_node::domain::WorkerState::Stopped && silent_s > 30 {
            line.push_str(&format!(" (no report for {silent_s} s: is the node running?)"));
        }
        println!("{line}");
    }
    Ok(())
}
