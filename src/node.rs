//! Composition root, in named phases around one context computed once (settings, AE title,
//! node id, database, object store, keys, TLS): open the stores -> start the engine ->
//! reconcile -> build the services -> serve (HTTP, the DICOM listener, the workers) -> stop in
//! order (stop accepting -> let in-flight messages finish within `shutdown_grace` -> stop
//! workers -> join the inference thread -> close the database).
//!
//! Must not: contain protocol or storage logic; it only wires components together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Settings;
use crate::context::NodeContext;
use crate::db::Db;
use crate::db::WorkerReport;
use crate::delivery::outbox::OutboxWorker;
use crate::ingest::study_ready::StudyReadyWorker;
use crate::ingest::Ingest;
use crate::net::{Listener, Shared};
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError, WorkerStatus, Workers};

/// What the phases share: the settings, the context every component gets (computed once), and
/// the outbox's wake-up.
struct Start {
    settings: Settings,
    core: NodeContext,
    /// Rung when outbox items are queued (by this node, or by another through NOTIFY).
    wake_outbox: Arc<tokio::sync::Notify>,
}

/// The parts built from the context, before anything listens or runs.
struct Parts {
    engine_thread: Option<crate::inference::engine::EngineThread>,
    triage: Arc<crate::triage::Triage>,
    arrivals: tokio::sync::mpsc::Receiver<i64>,
    study_wake: Arc<tokio::sync::Notify>,
    shared: Arc<Shared>,
    tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    http: Option<crate::http::AppState>,
    /// The loaded models' reference scores (`/api/drift`, the drift alerts).
    drift: crate::admin::drift::Watch,
}

/// Run the node until `shutdown`: open the stores, reconcile them, build the services, serve
/// (workers, HTTP, the DICOM listener), stop in order.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (ctx, deid) = open_stores(settings).await?;
    let engine = start_engine(&ctx).await?;
    reconcile(&ctx).await?;
    application_activity(&ctx, "start").await;
    // The audit export, when asked for, starts or the node does not: a site that configured an
    // audit repository must not run without one unnoticed.
    let atna = match ctx.settings.audit_export.enabled {
        true => Some(
            crate::delivery::atna::AtnaExporter::new(
                ctx.core.db.clone(),
                ctx.core.keys.clone(),
                &ctx.settings.audit_export,
                &ctx.core.node_id,
                ctx.core.ae_title.as_str(),
            )
            .context("starting the audit export ([audit_export]: its host, CA and certificate files)")?,
        ),
        false => None,
    };
    let workers = Workers::new();
    let parts = build(&ctx, deid, engine, &workers).await?;
    let http = match parts.http {
        // The HTTP API binds first, so its port is known once the DICOM port is logged.
        Some(state) => {
            let server = crate::http::HttpServer::start(&ctx.settings.http, state, shutdown.clone())
                .await
                .with_context(|| format!("binding the HTTP API on {}:{}", ctx.settings.http.bind, ctx.settings.http.port))?;
            Some(server)
        }
        None => None,
    };
    let listener = Listener::bind(parts.shared, parts.tls_acceptor).await.with_context(|| {
        let d = &ctx.settings.dicom;
        if d.tls.enabled {
            format!("binding {}:{} and the TLS port {}", d.bind, d.port, d.tls.port)
        } else {
            format!("binding {}:{}", d.bind, d.port)
        }
    })?;
    // One line with every open port (tools and tests read `port=` and `tls_port=`).
    let ports: Vec<String> = [("port", listener.local_addr()), ("tls_port", listener.tls_addr())]
        .iter()
        .filter_map(|(name, addr)| addr.map(|a| format!("{name}={}", a.port())))
        .collect();
    info!(ae_title = %ctx.core.ae_title, node = %ctx.core.node_id, bind = %ctx.settings.dicom.bind, "listening {}", ports.join(" "));
    spawn_workers(&ctx, &workers, parts.triage, parts.arrivals, parts.study_wake, atna, parts.drift);

    let associations = TaskTracker::new();
    listener.run(shutdown.clone(), associations.clone()).await;
    if let Some(http) = http {
        http.join(ctx.settings.dicom.shutdown_grace).await;
    }
    stop(&ctx, associations, workers, parts.engine_thread).await;
    Ok(())
}

/// The keys, the data directory, the database and the object store: the context.
async fn open_stores(settings: Settings) -> anyhow::Result<(Start, crate::deid::Deidentifier)> {
    let ae_title = settings.dicom.ae_title.clone();
    let deid = settings.deid.deidentifier().context("loading the de-identification keys")?;
    if deid.keys().demo {
        warn!("DEMO KEYS: de-identification uses fixed public keys; pseudonyms can be reversed and the re-identification map opened by anyone. Never use this with patient data (set deid.demo_keys = false and provide TRIAGE_PSEUDONYM_KEY / TRIAGE_REID_MAP_KEY)");
    }
    info!(profile = crate::deid::table::EDITION, options = ?deid.options(), burned_in = ?settings.deid.burned_in_annotation, "de-identification ready");
    let dirs = crate::ingest::spool::Dirs::new(&settings.storage.data_dir);
    let leftovers = dirs.prepare().with_context(|| format!("preparing data directory {}", settings.storage.data_dir.display()))?;
    if leftovers > 0 {
        warn!(files = leftovers, "removed spool files left by an earlier version");
    }
    let db =
        Db::open(&settings.database_url(), settings.database.max_connections).await.context("opening the database")?.with_audit_key(deid.keys().audit_key());
    info!(engine = ?db.engine(), "database ready");
    let storage = &settings.storage;
    let blobs = crate::blobs::Blobs::open(&storage.data_dir, storage.backend, &storage.s3).await.context("opening the object store ([storage] backend)")?;
    let node_id = settings.node_id();
    blobs.clear_cache().context("emptying the cache of shared objects")?;
    if blobs.is_shared() {
        info!(node = %node_id, endpoint = %storage.s3.endpoint, bucket = %storage.s3.bucket, "object store ready: files shared with the other nodes of the cluster");
    } else {
        info!(node = %node_id, "files kept in the data directory");
    }
    let tls = crate::net::tls::Connector::from_settings(&settings.dicom.tls).context("preparing TLS for the AEs we call")?;
    let keys = deid.keys().clone();
    let ctx = Start { settings, core: NodeContext { ae_title, node_id, db, blobs, keys, tls }, wake_outbox: Arc::new(tokio::sync::Notify::new()) };
    Ok((ctx, deid))
}

/// The inference engine with every model package loaded and warmed up.
async fn start_engine(ctx: &Start) -> anyhow::Result<crate::inference::engine::Engine> {
    let inf = &ctx.settings.inference;
    let (engine, device) = crate::inference::engine::Engine::from_settings(&inf.engine()).await.context("starting the inference engine")?;
    for m in engine.manifests() {
        info!(model = %m.name, version = %m.version, ?device, labels = m.outputs.labels.len(), demonstration = m.demonstration, "model package loaded and warmed up");
    }
    if engine.manifests().is_empty() {
        warn!(models_dir = %inf.models_dir.display(), "no model packages: instances are stored and de-identified, nothing is triaged");
    }
    if let Some(m) = engine.manifests().iter().find(|m| m.draft) {
        anyhow::bail!(
            "model package {:?} in {} is an imported draft (draft = true in its model.toml): review its routing and thresholds (`triage-node evaluate` helps choose them), then remove `draft = true`; the node does not serve a draft",
            m.name,
            inf.models_dir.display()
        );
    }
    Ok(engine)
}

/// Make the stores agree with what a stop left: claims of the previous run (a node alone on its
/// SQLite file), worklist rows of studies triaged before the table existed, result files never
/// queued, destinations not registered, TLS AEs bound to no certificate.
async fn reconcile(ctx: &Start) -> anyhow::Result<()> {
    let db = &ctx.core.db;
    if db.engine() == crate::db::Engine::Sqlite {
        let passes = db.void_inference_claims().await.context("voiding the previous run's inference claims")?;
        let jobs = db.void_job_claims().await.context("voiding the previous run's job claims")?;
        if passes + jobs > 0 {
            warn!(passes, jobs, "resuming triage work interrupted by the previous run");
        }
    }
    match crate::admin::worklist::backfill(db).await {
        Ok(0) => {}
        Ok(n) => info!(studies = n, "worklist rows added for studies triaged before the worklist existed"),
        Err(error) => warn!(%error, "adding worklist rows for earlier studies failed"),
    }
    match publisher(ctx).remove_unqueued(db).await {
        Ok(0) => {}
        Ok(n) => warn!(files = n, "removed result objects that were written but never queued (stopped before their result was saved)"),
        Err(error) => warn!(%error, "could not reconcile outbox/results with the outbox"),
    }
    for dest in &ctx.settings.results.destinations {
        if db.find_ae(dest.as_str()).await.context("looking up result destinations")?.is_none() {
            warn!(destination = %dest, "results.destinations names an AE that is not registered; its results wait in the outbox until it is (triage-node ae add)");
        }
    }
    let tls = &ctx.settings.dicom.tls;
    if tls.enabled && !tls.client_ca.as_os_str().is_empty() {
        // Client certificates are asked for: a TLS-only AE bound to no certificate identity is
        // refused (any certificate of the site CA could claim its title). Say so at start.
        for ae in db.list_aes().await.context("reading the AE registry")?.iter().filter(|a| a.tls && a.tls_identity.is_none()) {
            warn!(ae_title = %ae.ae_title, "this AE is registered as TLS but bound to no certificate identity: its calls are refused until `ae add {} --tls --tls-identity NAME`", ae.ae_title);
        }
    }
    Ok(())
}

/// Builds and queues each study's result objects.
fn publisher(ctx: &Start) -> crate::results::Publisher {
    crate::results::Publisher {
        blobs: ctx.core.blobs.clone(),
        settings: ctx.settings.results.clone(),
        station: ctx.core.ae_title.to_string(),
        node: ctx.core.node_id.clone(),
        wake: ctx.wake_outbox.clone(),
        hl7: ctx.settings.hl7.enabled,
        hl7_order: ctx.settings.hl7.order_update(),
        notify: ctx.settings.notify.clone(),
        hl7_feedback: ctx.settings.hl7.feedback_follow_up(),
    }
}

/// Triage, ingest (and the store reconciled with the database), the DIMSE services with their
/// access control, the HTTP API's state.
async fn build(ctx: &Start, deid: crate::deid::Deidentifier, engine: crate::inference::engine::Engine, workers: &Workers) -> anyhow::Result<Parts> {
    let (settings, db) = (&ctx.settings, &ctx.core.db);
    let inf = &settings.inference;
    let engine_thread = engine.take_thread();
    let manifests = engine.manifests().to_vec();
    let tiers = crate::triage::aggregate::Tiers::from_settings(inf);
    let triage = crate::triage::Triage::new(db.clone(), engine, ctx.core.blobs.clone(), inf.lease, tiers, inf.preprocess_threads(), Some(publisher(ctx)));
    let (arrivals_tx, arrivals) = tokio::sync::mpsc::channel(4096);
    let ingest = Ingest::new(
        &settings.storage,
        db.clone(),
        deid,
        settings.deid.burned_in_annotation,
        Some(arrivals_tx),
        ctx.core.blobs.clone(),
        settings.ingest.mpps_max_open_steps,
    );
    let study_wake = ingest.study_waker();
    let orphans = ingest.quarantine_unrecorded().await.context("reconciling the store with the database")?;
    if orphans > 0 {
        warn!(
            files = orphans,
            folder = %crate::ingest::quarantine_dir(&settings.storage.data_dir).display(),
            "store files without a database row were moved to quarantine, not deleted: a stop between store and commit leaves such files (never acknowledged), but so does a database restored from a backup (acknowledged instances); check before removing them"
        );
    }
    let tls_acceptor = crate::net::tls::acceptor(&settings.dicom.tls).context("preparing the TLS port")?;
    let access = Arc::new(crate::services::access::AeRegistry::new(db.clone(), settings.dicom.require_registered_calling_ae));
    // One query index for the Q/R SCP and DICOMweb (QIDO-RS / WADO-RS).
    let mut archive = None;
    let query = if settings.query.enabled {
        let index = crate::archive::Archive::open(db.clone(), ctx.core.keys.clone(), ctx.core.blobs.clone(), ctx.core.node_id.clone())
            .await
            .context("building the query index of the result objects")?;
        let index = Arc::new(index);
        archive = Some(index.clone());
        Some(crate::services::qr::QueryRetrieve::new(
            index,
            ctx.core.ae_title.clone(),
            settings.query.matching(),
            settings.delivery.timeout,
            ctx.core.tls.clone(),
        ))
    } else {
        None
    };
    let stow_ingest = ingest.clone();
    let services = crate::services::standard(ingest, db.clone(), query, &settings.storage);
    let shared = Arc::new(Shared { settings: settings.dicom.clone(), ae_title: ctx.core.ae_title.clone(), access, services });
    let drift = crate::admin::drift::Watch::load(&settings.inference.models_dir, &manifests, settings.drift.clone())
        .context("loading the model packages' reference scores")?
        .with_groups(settings.performance.groups.clone());
    let http = if settings.http.enabled {
        let metrics = crate::http::ops::install_metrics();
        let tokens = crate::http::auth::Tokens::load(
            std::env::var(crate::http::auth::TOKENS_ENV).ok().as_deref(),
            settings.http.tokens_file.as_deref().filter(|p| !p.as_os_str().is_empty()),
        )
        .context("loading the HTTP API tokens")?;
        // Single sign-on: the provider must answer at start (its keys), or the node does not start.
        let oidc = match settings.http.oidc.enabled {
            true => Some(std::sync::Arc::new(
                crate::http::oidc::Oidc::discover(&settings.http.oidc).await.context("reaching the identity provider ([http.oidc] issuer)")?,
            )),
            false => None,
        };
        let served = crate::http::Served {
            tokens,
            drift: drift.clone(),
            similar: crate::admin::similar::Similar::new(&settings.similar),
            manifests,
            heatmap_max: settings.results.heatmap_max_size,
            dicom_timeout: settings.delivery.timeout,
            workers: workers.clone(),
            metrics,
            publisher: publisher(ctx),
            dicomweb: archive.map(|archive| crate::http::dicomweb::Source { archive, matching: settings.query.matching() }),
            stow: Some(crate::http::stow::Stow::new(stow_ingest, &settings.http, &settings.storage)),
            oidc,
        };
        let state = crate::http::AppState::new(&ctx.core, &settings.http, served);
        Some(state)
    } else {
        None
    };
    Ok(Parts { engine_thread, triage, arrivals, study_wake, shared, tls_acceptor, http, drift })
}

/// The background workers: study sweep, outbox, arrivals, study jobs, cluster wake-ups, the
/// cache sweeper, the status reporter.
fn spawn_workers(
    ctx: &Start,
    workers: &Workers,
    triage: Arc<crate::triage::Triage>,
    arrivals: tokio::sync::mpsc::Receiver<i64>,
    study_wake: Arc<tokio::sync::Notify>,
    atna: Option<crate::delivery::atna::AtnaExporter>,
    drift: crate::admin::drift::Watch,
) {
    let (settings, db) = (&ctx.settings, &ctx.core.db);
    workers.spawn(
        StudyReadyWorker::new(db.clone(), settings.ingest.study_quiet_period).with_waker(study_wake).with_trusted_step_aes(&settings.ingest.mpps_trusted_aes),
    );
    workers.spawn(OutboxWorker::new(
        &ctx.core,
        &settings.delivery,
        Some(&settings.hl7),
        &settings.notify,
        settings.ingest.study_quiet_period,
        ctx.wake_outbox.clone(),
        &settings.results.dicomweb,
    ));
    workers.spawn(crate::triage::Arrivals::new(triage.clone(), arrivals));
    let wake_jobs = Arc::new(tokio::sync::Notify::new());
    workers.spawn(crate::triage::StudyJobs::new(triage, Duration::from_millis(200), settings.inference.concurrent_studies).with_waker(wake_jobs.clone()));
    if db.engine() == crate::db::Engine::Postgres {
        // Work another node queues wakes this node's workers at once (LISTEN/NOTIFY).
        workers.spawn(Wakeups { url: settings.database_url(), listener: None, outbox: ctx.wake_outbox.clone(), jobs: wake_jobs });
    }
    if ctx.core.blobs.is_shared() {
        workers.spawn(crate::blobs::CacheSweeper::new(ctx.core.blobs.clone()));
    }
    if settings.notify.rules().iter().any(|r| r.escalate_after.is_some()) {
        workers.spawn(crate::delivery::escalation::Escalator::new(db.clone(), publisher(ctx)));
    }
    if settings.notify.rules().iter().any(|r| r.drift) {
        workers.spawn(crate::admin::drift::DriftAlerts::new(drift, db.clone(), publisher(ctx)));
    }
    if let Some(exporter) = atna {
        info!(host = %settings.audit_export.host, port = settings.audit_export.port, transport = ?settings.audit_export.transport, "audit export (ATNA syslog) started");
        workers.spawn(exporter);
    }
    workers.spawn(StatusReporter { workers: workers.clone(), db: db.clone(), node: ctx.core.node_id.clone() });
}

/// The node's start or stop in the audit trail (PS3.15 Application Activity); a failed write is
/// logged, not fatal.
async fn application_activity(ctx: &Start, action: &str) {
    let event =
        crate::audit::Event::Application { details: crate::audit::ApplicationActivity { action: action.into(), version: env!("CARGO_PKG_VERSION").into() } };
    if let Err(error) = ctx.core.db.audit_append(&event).await {
        warn!(%error, action, "the audit entry of the node's start or stop could not be written");
    }
}

/// Shutdown, each step bounded: the listener has stopped accepting; associations finish their
/// current message; workers end; the inference thread ends; the database closes.
async fn stop(ctx: &Start, associations: TaskTracker, workers: Workers, engine_thread: Option<crate::inference::engine::EngineThread>) {
    associations.close();
    let grace = ctx.settings.dicom.shutdown_grace;
    if tokio::time::timeout(grace, associations.wait()).await.is_err() {
        warn!(
            remaining = associations.len(),
            ?grace,
            "associations still busy after the shutdown grace period; abandoning them (nothing unacknowledged is kept)"
        );
    }
    // Before the workers end: the audit export may still send it.
    application_activity(ctx, "stop").await;
    workers.shutdown(WORKER_EXIT_DEADLINE).await;
    for w in workers.statuses() {
        info!(worker = w.name, state = ?w.state, units = w.units, errors = w.errors, restarts = w.restarts, "worker stopped");
    }
    if let Err(error) = ctx.core.db.report_workers(&reports(&ctx.core.node_id, &workers.statuses())).await {
        warn!(%error, "recording the workers' final status failed");
    }
    drop(workers);
    if let Some(thread) = engine_thread {
        if !thread.join(ENGINE_EXIT_DEADLINE).await {
            warn!(deadline = ?ENGINE_EXIT_DEADLINE, "the inference thread did not end within its exit deadline");
        }
    }
    ctx.core.db.close().await;
    info!("stopped");
}

/// Writes every worker's status to the database every few seconds, so `triage-node status`
/// (and the HTTP API) can show what the running node's workers are doing.
struct StatusReporter {
    workers: Workers,
    db: Db,
    node: String,
}

impl Worker for StatusReporter {
    fn name(&self) -> &'static str {
        "status reporter"
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            self.db.report_workers(&reports(&self.node, &self.workers.statuses())).await?;
            Ok(WorkState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(STATUS_REPORT_INTERVAL))
    }
}

/// Listens for the wake-ups every node's transactions send (`db::Wake`), and wakes this node's
/// outbox worker or study job worker; wakes both after the listener had to reconnect.
struct Wakeups {
    url: String,
    listener: Option<crate::db::WakeListener>,
    outbox: Arc<tokio::sync::Notify>,
    jobs: Arc<tokio::sync::Notify>,
}

impl Worker for Wakeups {
    fn name(&self) -> &'static str {
        "cluster wake-ups"
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            let listener = match &mut self.listener {
                Some(l) => l,
                None => {
                    let Some(l) = crate::db::WakeListener::connect(&self.url).await? else { return Ok(WorkState::Done) };
                    self.outbox.notify_one();
                    self.jobs.notify_one();
                    self.listener.insert(l)
                }
            };
            match listener.recv().await {
                Ok(Some(crate::db::Wake::Outbox)) => self.outbox.notify_one(),
                Ok(Some(crate::db::Wake::Jobs)) => self.jobs.notify_one(),
                Ok(None) => {
                    self.outbox.notify_one();
                    self.jobs.notify_one();
                }
                Err(e) => {
                    self.listener = None;
                    return Err(e.into());
                }
            }
            Ok(WorkState::Busy)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// How often the workers' status is written to the database.
const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(5);

fn reports(node: &str, statuses: &[WorkerStatus]) -> Vec<WorkerReport> {
    let now = crate::domain::now_ms();
    statuses
        .iter()
        .map(|s| WorkerReport {
            node: node.to_string(),
            name: s.name.to_string(),
            state: s.state,
            units: s.units as i64,
            errors: s.errors as i64,
            restarts: s.restarts as i64,
            last_error: s.last_error.clone(),
            last_error_at_ms: s.last_error_at_ms,
            updated_at_ms: now,
        })
        .collect()
}

/// How long background workers get to finish at shutdown (in-flight inference passes).
const WORKER_EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// How long the inference thread gets to finish its batch once every handle is gone.
const ENGINE_EXIT_DEADLINE: Duration = Duration::from_secs(10);
