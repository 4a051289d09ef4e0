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
        /// reader (worklist, reading state), admin (also AE administration) or modality (STOW-RS
        /// ingest only; its name is the calling AE recorded for what it stores).
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
    /// Check a fresh install (or a node in trouble): keys present and private, the data
    /// directory writable, the database reachable, the models loading, the ports free, each
    /// PACS answering a C-ECHO, the RIS and the mail server reachable. Exits 1 if a check fails.
    Doctor,
    /// Back up a node on SQLite while it runs, into DEST (a new or empty folder): a consistent
    /// snapshot of the database, the stored and queued files, and manifest.json (size and
    /// SHA-256 of each) written last. Never the keys: keep them apart.
    Backup { dest: PathBuf },
    /// Restore a backup into this node's data directory (which must be empty): every file's
    /// checksum is checked before anything is written.
    Restore { src: PathBuf },
    /// Model packages: `model import` drafts a package from a MONAI bundle.
    Model {
        #[command(subcommand)]
        action: cli::model::ModelAction,
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
    /// (no patient data; the study's identity is in the re-identification map). `results
    /// retract` withdraws a study's AI results.
    Results {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(subcommand)]
        action: Option<cli::report::ResultsAction>,
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
    /// Benchmark (scripts/bench-similar.sh): seed STUDIES confirmed studies with synthetic
    /// embeddings into the configured database, then time similar-case lookups (exact and HNSW,
    /// first on an empty cache and warm) and print them as JSON.
    #[command(hide = true)]
    BenchSimilar {
        #[arg(long)]
        studies: usize,
        #[arg(long, default_value_t = 128)]
        dims: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 20)]
        warm: usize,
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

/// An error and each of its causes, once each: every error of this crate says its cause in its
/// message or exposes it as its source, never both (`tests/it/layering.rs` holds the rule).
fn error_text(e: &anyhow::Error) -> String {
    e.chain().map(|cause| cause.to_string()).collect::<Vec<_>>().join(": ")
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
        Command::Token { action: TokenAction::Add { name, role } } => cli::token::add_token(&settings, name, role),
        Command::Keygen => cli::deid::keygen(),
        Command::Deid { input, out } => cli::deid::deid(&settings, input, out).await,
        Command::Reid { instance_uid, purpose } => cli::deid::reid(&settings, instance_uid, purpose).await,
        Command::Echo { to } => cli::dicom::echo(&settings, to).await,
        Command::Send { to, paths } => cli::dicom::send(&settings, to, paths).await,
        Command::Infer { paths, model, heatmaps } => cli::offline::infer(&settings, &paths, model.as_deref(), heatmaps.as_deref()).await,
        Command::Model { action } => cli::model::run(action, &settings).await,
        Command::Doctor => {
            let checks = triage_node::admin::doctor::run(&settings).await?;
            for c in &checks {
                let v = match c.verdict {
                    triage_node::admin::doctor::Verdict::Ok => "ok  ",
                    triage_node::admin::doctor::Verdict::Warn => "warn",
                    triage_node::admin::doctor::Verdict::Fail => "FAIL",
                };
                println!("{v}  {}: {}", c.name, c.detail);
            }
            if checks.iter().any(|c| c.verdict == triage_node::admin::doctor::Verdict::Fail) {
                anyhow::bail!("doctor: {} check(s) failed", checks.iter().filter(|c| c.verdict == triage_node::admin::doctor::Verdict::Fail).count());
            }
            Ok(())
        }
        Command::Backup { dest } => {
            let r = triage_node::admin::backup::backup(&settings, &dest).await?;
            println!("backup written to {}: {} files, {} bytes (the database, the stored and queued files, manifest.json)", r.dir.display(), r.files, r.bytes);
            println!(
                "the keys are not in it: keep TRIAGE_PSEUDONYM_KEY, TRIAGE_REID_MAP_KEY (or their files) apart; without them the sealed map cannot be opened"
            );
            Ok(())
        }
        Command::Restore { src } => {
            let r = triage_node::admin::backup::restore(&settings, &src)?;
            println!("restored {} files ({} bytes) into {}; every checksum held", r.files, r.bytes, r.dir.display());
            Ok(())
        }
        Command::Evaluate { labels, dir, model, json } => cli::offline::evaluate(&settings, &labels, &dir, model.as_deref(), json).await,
        Command::Results { limit, action: None } => cli::report::results(&settings, limit).await,
        Command::Results { action: Some(action), .. } => cli::report::results_action(&settings, action).await,
        Command::Worklist { limit, json } => cli::report::worklist(&settings, limit, json).await,
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
        Command::BenchSimilar { studies, dims, rounds, warm } => {
            let report = admin::bench::similar(&settings, studies, dims, rounds, warm).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Status => cli::report::status(&settings).await,
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
