//! Thin entry point: parse the command line, load configuration, initialise logging, and hand
//! over to `node::run` or to a typed operation of `admin`; then print what it returned.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod cli;

use triage_node::admin::{self, Access};
use triage_node::config::{LogFormat, Settings};

#[derive(Parser)]
#[command(name = "triage-node", version, about = "DICOM node that receives studies and triages them with AI")]
struct Cli {
    /// Configuration file layered over the built-in defaults (TRIAGE__* variables override both).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token for NAME: its hash is appended to http.tokens_file (created readable by the
    /// node's user only) and the token itself is printed once, here; the node reads the file at
    /// start.
    Add {
        name: String,
        /// reader (worklist, reading state) or admin (also AE administration).
        #[arg(long, default_value = "reader")]
        role: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: DICOM listener and workers, until SIGTERM or SIGINT.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Administer the application entities allowed to call us or that we deliver to.
    Ae {
        #[command(subcommand)]
        action: cli::ae::AeAction,
    },
    /// Print the effective configuration (after layering) and exit.
    ShowConfig,
    /// Print what the store holds: instances, studies, jobs, results and the outbox by state, and
    /// what each node's background workers last reported (no patient data).
    Status,
    /// The durable outbox: objects queued for delivery to registered AEs, with retries.
    Outbox {
        #[command(subcommand)]
        action: cli::outbox::OutboxAction,
    },
    /// The hash-chained audit trail.
    Audit {
        #[command(subcommand)]
        action: cli::audit::AuditAction,
    },
    /// De-identify a DICOM file, or every file under a directory, into the directory OUT with
    /// the node's engine, keys and options (for research exports). Output files are named by
    /// their new SOP Instance UID. Each is audited; nothing enters the re-identification map.
    Deid { input: PathBuf, out: PathBuf },
    /// Print the original identifiers of a de-identified instance (JSON) from the encrypted
    /// re-identification map. Audited with the purpose given.
    Reid {
        /// The de-identified SOP Instance UID.
        instance_uid: String,
        #[arg(long)]
        purpose: String,
    },
    /// Print a new random key (64 hex digits) for TRIAGE_PSEUDONYM_KEY or TRIAGE_REID_MAP_KEY.
    Keygen,
    /// Bearer tokens of the HTTP API and the worklist page.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Triage DICOM files (or every file under directories) with the configured model packages,
    /// without a node or database: prints one JSON object per file (findings per model) and, with
    /// --heatmaps DIR, writes each finding's heatmap as PNG. Exits 1 if any file failed.
    Infer {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only this model package (by name).
        #[arg(long)]
        model: Option<String>,
        /// Folder for heatmap PNGs (<file stem>.<model>.<label>.png).
        #[arg(long)]
        heatmaps: Option<PathBuf>,
    },
    /// Validate a model on labelled cases before enabling it: sensitivity, specificity, ROC AUC
    /// and a threshold sweep per label. LABELS is a CSV: `file,<label>...` with 0/1 per case,
    /// file paths relative to DIR.
    Evaluate {
        #[arg(long)]
        labels: PathBuf,
        dir: PathBuf,
        #[arg(long)]
        model: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// The newest study results: per study (row id) and model, the state, priority and findings
    /// (no patient data; the study's identity is in the re-identification map).
    Results {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// The reading order of the newest triaged studies: URGENT, then POSITIVE by score, then
    /// FAILED and NOT_ANALYSED (read without AI), NEGATIVE, NOT_APPLICABLE, each by arrival. Study row ids only:
    /// no patient data (the worklist page will show identities to authenticated users).
    Worklist {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark driver for scripts/bench-infer.sh: triage FILES with one model in batches of
    /// --batch and print the timings as JSON.
    #[command(hide = true)]
    BenchInfer {
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Benchmark fixture for scripts/bench-query.sh: N synthetic result studies made from one
    /// result object the node produced (synthetic patients, sealed like real ones).
    #[command(hide = true)]
    BenchSeedResults {
        #[arg(long)]
        template: PathBuf,
        #[arg(long)]
        studies: usize,
        #[arg(long, default_value = "BENCH")]
        destination: String,
    },
    /// Benchmark fixtures (scripts/bench-worklist.sh): N worklist studies with sealed synthetic
    /// patients.
    #[command(hide = true)]
    BenchSeedWorklist {
        #[arg(long)]
        studies: usize,
    },
    /// C-ECHO a registered AE (one with a host and port), calling as our AE title.
    Echo {
        #[arg(long)]
        to: String,
    },
    /// C-STORE files, or every file under directories, to a registered AE: as stored, no
    /// transcoding. Prints one line per file; exits 1 if any was not stored.
    Send {
        #[arg(long)]
        to: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("triage-node: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("triage-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = error_text(&e);
            eprintln!("triage-node: {text}");
            tracing::error!(error = %text, "exiting on error");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: many errors quote their source in their own
/// message, so a cause already contained in the message before it is left out.
fn error_text(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(shutdown.clone()));
            triage_node::node::run(settings, shutdown).await
        }
        Command::Migrate => {
            admin::open(&settings, Access::Read).await?.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::ShowConfig => {
            println!("{:#?}", settings.redacted());
            Ok(())
        }
        Command::Ae { action } => cli::ae::run(action, &settings).await,
        Command::Outbox { action } => cli::outbox::run(action, &settings).await,
        Command::Audit { action } => cli::audit::run(action, &settings).await,
        Command::Token { action: TokenAction::Add { name, role } } => {
            let Some(file) = settings.http.tokens_file.clone().filter(|p| !p.as_os_str().is_empty()) else {
                anyhow::bail!(
                    "http.tokens_file is not set: name the file the node reads its tokens from (or give tokens in {})",
                    triage_node::http::auth::TOKENS_ENV
                );
            };
            let (secret, line) = triage_node::http::auth::new_token(&name, &role)?;
            // Refuse a name already there: one line per user keeps revoking simple.
            let existing = std::fs::read_to_string(&file).unwrap_or_default();
            if existing.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())) {
                anyhow::bail!("{} already has a token for {name}: remove its line first to replace it", file.display());
            }
            use anyhow::Context;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&file).with_context(|| format!("opening {}", file.display()))?;
            writeln!(f, "{line}").and_then(|_| f.sync_all()).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("token for {name} ({role}) added to {}; restart the node to use it. The token (shown once, keep it secret):", file.display());
            println!("{secret}");
            Ok(())
        }
        Command::Keygen => {
            println!("{}", triage_node::deid::keys::generate());
            Ok(())
        }
        Command::Deid { input, out } => {
            let export = admin::export::deidentify(&settings, &input, &out).await?;
            if export.demo_keys {
                eprintln!("triage-node: WARNING: demo keys (deid.demo_keys = true): these pseudonyms can be reversed by anyone");
            }
            let mut failed = 0;
            for f in &export.files {
                match &f.result {
                    Ok(done) => {
                        let note = done.pixels_left_out.as_ref().map(|why| format!(" (pixels left out: {why})")).unwrap_or_default();
                        println!("deidentified {} -> {}{note}", f.input.display(), done.output.display());
                    }
                    Err(e) => {
                        failed += 1;
                        println!("failed       {} ({e})", f.input.display());
                    }
                }
            }
            println!("{} de-identified into {}, {failed} failed", export.files.len() - failed, out.display());
            if failed > 0 {
                anyhow::bail!("{failed} of {} files could not be de-identified", export.files.len());
            }
            Ok(())
        }
        Command::Reid { instance_uid, purpose } => {
            let originals = admin::reid::originals(&settings, &instance_uid, &purpose).await?;
            println!("{}", serde_json::to_string_pretty(&originals)?);
            Ok(())
        }
        Command::Echo { to } => {
            let peer = admin::peer(&settings, &to).await?;
            let rsp = triage_node::delivery::echo(&peer).await?;
            println!("C-ECHO {to} ({}:{}): status {:#06X}", peer.host, peer.port, rsp.status);
            if !rsp.is_success() {
                anyhow::bail!("C-ECHO failed with status {:#06X}", rsp.status);
            }
            Ok(())
        }
        Command::Send { to, paths } => {
            let peer = admin::peer(&settings, &to).await?;
            let sent = triage_node::delivery::send(&peer, &paths).await?;
            let mut failed = 0;
            for s in &sent {
                match &s.result {
                    Ok(rsp) if rsp.is_stored() => println!("stored   {:#06X} {}", rsp.status, s.path.display()),
                    Ok(rsp) => {
                        failed += 1;
                        println!("refused  {:#06X} {} ({})", rsp.status, s.path.display(), rsp.error_comment.as_deref().unwrap_or("no comment"));
                    }
                    Err(e) => {
                        failed += 1;
                        println!("failed   {} ({e})", s.path.display());
                    }
                }
            }
            println!("{} sent to {to}, {failed} not stored", sent.len() - failed);
            if failed > 0 {
                anyhow::bail!("{failed} of {} files were not stored", sent.len());
            }
            Ok(())
        }
        Command::Infer { paths, model, heatmaps } => cli::offline::infer(&settings, &paths, model.as_deref(), heatmaps.as_deref()).await,
        Command::Evaluate { labels, dir, model, json } => cli::offline::evaluate(&settings, &labels, &dir, model.as_deref(), json).await,
        Command::Results { limit } => {
            let db = admin::open(&settings, Access::Read).await?;
            let results = admin::report::recent_results(&db, limit).await;
            db.close().await;
            println!("{:>6}  {:<20}  {:<14}  {:<8}  {:>7}  FINDINGS (probability, confidence)", "STUDY", "MODEL", "STATE", "PRIORITY", "IMAGES");
            for admin::report::ResultSummary { result: r, deliveries } in results? {
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
            }
            Ok(())
        }
        Command::Worklist { limit, json } => {
            let db = admin::open(&settings, Access::Read).await?;
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
                let findings: Vec<String> = e
                    .findings
                    .iter()
                    .map(|f| format!("{} {}{} {:.3} ({})", f.model, f.label, if f.positive { "+" } else { "-" }, f.probability, f.tier))
                    .collect();
                let detail =
                    if e.reasons.is_empty() { findings.join(", ") } else { format!("{} | not analysed: {}", findings.join(", "), e.reasons.join("; ")) };
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
        Command::BenchInfer { model, batch, files } => {
            let report = admin::evaluate::bench(&settings, &model, batch, &files).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::BenchSeedResults { template, studies, destination } => {
            let seeded = admin::bench::seed_results(&settings, &template, studies, &destination).await?;
            println!("{}", serde_json::to_string(&seeded)?);
            Ok(())
        }
        Command::BenchSeedWorklist { studies } => {
            let seeded = admin::bench::seed_worklist(&settings, studies).await?;
            println!("{}", serde_json::to_string(&seeded)?);
            Ok(())
        }
        Command::Status => {
            let db = admin::open(&settings, Access::Read).await?;
            let status = admin::report::status(&db, &settings.storage.data_dir).await;
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
    }
}

async fn signal_shutdown(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
    shutdown.cancel();
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&settings.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
