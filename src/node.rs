//! Composition root: opens the database, prepares the store, starts the listener and workers,
//! and owns the shutdown order (stop accepting -> let in-flight messages finish within
//! `shutdown_grace` -> stop workers -> close the database).
//!
//! Must not: contain protocol or storage logic; it only wires components together.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::association::{Listener, Shared};
use crate::config::Settings;
use crate::db::Db;
use crate::delivery::outbox::OutboxWorker;
use crate::domain::AeTitle;
use crate::ingest::study_ready::StudyReadyWorker;
use crate::ingest::Ingest;

pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ae_title = AeTitle::parse(&settings.dicom.ae_title).map_err(anyhow::Error::msg)?;
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
    let device = crate::inference::runtime::DeviceChoice::parse(&settings.inference.device)?.resolve()?;
    let models_dir = settings.inference.models_dir.clone();
    let packages = tokio::task::spawn_blocking(move || crate::inference::package::load_all(&models_dir, device))
        .await?
        .context("loading model packages")?;
    for p in &packages {
        let m = &p.manifest;
        info!(model = %m.name, version = %m.version, ?device, labels = m.outputs.labels.len(), demonstration = m.demonstration, "model package loaded and warmed up");
    }
    if packages.is_empty() {
        warn!(models_dir = %settings.inference.models_dir.display(), "no model packages: instances are stored and de-identified, nothing is triaged");
    }
    let db = Db::open(&settings.database_url(), settings.database.max_connections).await.context("opening the database")?.with_audit_key(deid.keys().audit_key());
    info!(engine = ?db.engine(), "database ready");

    if db.engine() == crate::db::Engine::Sqlite {
        let (passes, jobs) = db.void_triage_claims().await.context("voiding the previous run's triage claims")?;
        if passes + jobs > 0 {
            warn!(passes, jobs, "resuming triage work interrupted by the previous run");
        }
    }
    let inf = &settings.inference;
    let engine = crate::inference::engine::Engine::start(packages, inf.max_batch, inf.queue_depth, inf.torch_threads).context("starting the inference thread")?;
    let wake_outbox = Arc::new(tokio::sync::Notify::new());
    let publisher = crate::results::Publisher {
        data_dir: settings.storage.data_dir.clone(),
        settings: settings.results.clone(),
        station: ae_title.to_string(),
        node: settings.node_id(),
        wake: wake_outbox.clone(),
    };
    match publisher.remove_unqueued(&db).await {
        Ok(0) => {}
        Ok(n) => warn!(files = n, "removed result objects that were written but never queued (stopped before their result was saved)"),
        Err(error) => warn!(%error, "could not reconcile outbox/results with the outbox"),
    }
    for dest in &settings.results.destinations {
        if db.find_ae(dest).await.context("looking up result destinations")?.is_none() {
            warn!(destination = %dest, "results.destinations names an AE that is not registered; its results wait in the outbox until it is (triage-node ae add)");
        }
    }
    let triage = crate::triage::Triage::new(db.clone(), engine, settings.storage.data_dir.clone(), inf.tiers(), inf.preprocess_threads(), Some(publisher));
    let (arrivals_tx, arrivals) = tokio::sync::mpsc::channel(4096);
    let keys = deid.keys().clone();
    let ingest = Ingest::new(&settings.storage, db.clone(), deid, settings.deid.burned_in_annotation, Some(arrivals_tx));
    let orphans = ingest.quarantine_unrecorded().await.context("reconciling the store with the database")?;
    if orphans > 0 {
        warn!(
            files = orphans,
            folder = %crate::ingest::quarantine_dir(&settings.storage.data_dir).display(),
            "store files without a database row were moved to quarantine, not deleted: a stop between store and commit leaves such files (never acknowledged), but so does a database restored from a backup (acknowledged instances); check before removing them"
        );
    }
    let shared = Arc::new(Shared { settings: settings.dicom.clone(), ae_title: ae_title.clone(), db: db.clone(), ingest });
    let listener = Listener::bind(shared).await.with_context(|| format!("binding {}:{}", settings.dicom.bind, settings.dicom.port))?;
    let addr = listener.local_addr()?;
    info!(ae_title = %ae_title, bind = %addr.ip(), "listening port={}", addr.port());

    let associations = TaskTracker::new();
    let workers = TaskTracker::new();
    let stop_workers = CancellationToken::new();
    let study_ready = StudyReadyWorker::new(db.clone(), settings.ingest.study_quiet_period);
    let stop = stop_workers.clone();
    supervise(&workers, "study sweep", stop_workers.clone(), move || study_ready.clone().run(stop.clone()));
    let outbox = OutboxWorker::new(db.clone(), settings.node_id(), ae_title.clone(), settings.storage.data_dir.clone(), settings.delivery.clone(), keys, settings.ingest.study_quiet_period, wake_outbox);
    let stop = stop_workers.clone();
    supervise(&workers, "outbox", stop_workers.clone(), move || outbox.clone().run(stop.clone()));
    let arrivals = Arc::new(tokio::sync::Mutex::new(arrivals));
    let (t, stop) = (triage.clone(), stop_workers.clone());
    supervise(&workers, "arrivals", stop_workers.clone(), move || t.clone().run_arrivals(arrivals.clone(), stop.clone()));
    let (t, stop, concurrency) = (triage.clone(), stop_workers.clone(), inf.concurrent_studies);
    supervise(&workers, "study jobs", stop_workers.clone(), move || t.clone().run_jobs(std::time::Duration::from_millis(200), concurrency, stop.clone()));

    listener.run(shutdown.clone(), associations.clone()).await;

    // Shutdown: the listener has stopped accepting; associations finish their current message.
    associations.close();
    let grace = settings.dicom.shutdown_grace;
    if tokio::time::timeout(grace, associations.wait()).await.is_err() {
        warn!(remaining = associations.len(), ?grace, "associations still busy after the shutdown grace period; abandoning them (nothing unacknowledged is kept)");
    }
    stop_workers.cancel();
    workers.close();
    workers.wait().await;
    db.close().await;
    info!("stopped");
    Ok(())
}

/// Run a background worker on `tracker`, restarting it (after a pause that grows with each
/// restart, up to a minute) if it panics: a bug triggered by one bad input, say a peer's
/// malformed PDU, must not silently stop delivery or triage until the node is restarted. Each
/// restart is logged as an error with the worker's name and count.
fn supervise<F, Fut>(tracker: &TaskTracker, name: &'static str, stop: CancellationToken, start: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tracker.spawn(async move {
        let mut restarts: u32 = 0;
        loop {
            match tokio::spawn(start()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() && !stop.is_cancelled() => {
                    restarts += 1;
                    let pause = std::time::Duration::from_secs(1 << restarts.min(6)).min(std::time::Duration::from_secs(60));
                    tracing::error!(worker = name, restarts, ?pause, "background worker panicked; restarting it");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A worker that panics is started again (and again), and one that returns is not.
    #[tokio::test]
    async fn a_panicking_worker_is_restarted() {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        supervise(&tracker, "test", stop.clone(), move || {
            let counted = counted.clone();
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug triggered by one bad input");
                }
            }
        });
        tracker.close();
        tokio::time::timeout(std::time::Duration::from_secs(60), tracker.wait()).await.expect("the supervisor ends once the worker returns");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, two restarts");
    }
}
