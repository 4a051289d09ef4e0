//! The outbox worker: claims due items a destination at a time and sends each destination's
//! batch in a lane of its own (a task; up to `delivery.lanes` at once; a destination in flight is
//! not claimed again until its lane ends), so a slow or silent PACS or RIS holds only its own
//! items. Items of urgent studies go first, then the oldest. A DICOM lane sends over one
//! association, an HL7 lane one MLLP message after another, a webhook lane one POST after
//! another (`webhook`), a DICOMweb lane one STOW-RS POST per object (`stow`); each outcome is
//! recorded before the next item is sent: delivered; retry later with exponential backoff and
//! jitter (connection failures, timeouts, rejections, Out of Resources, a webhook's or an
//! archive's 5xx); or dead with the reason (a refusal the peer will repeat, a file that cannot
//! be read, or too many attempts). Items a lane did not attempt
//! (the peer broke off, or its claim would run out) are given back, due at once, no attempt
//! counted. A lane's claim is renewed while it sends, and no attempt outlasts it.
//! Work lives in the database, so a restart resumes where the last run stopped.
//!
//! The worker also measures what waits for each destination (gauges labelled with the AE title,
//! and `destination_warnings` for `/readyz`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{error, info, warn, Instrument};

use super::{resolve, DeliveryError};
use crate::config::DeliverySettings;
use crate::db::{Db, ObjectKind, OutboxItem};
use crate::deid::Keys;
use crate::dicom::Status;
use crate::domain::{now_ms, AeTitle};
use crate::net::client::{self, Association, ClientError, Response};
use crate::net::tls::Connector;
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

/// Items one lane sends at most (over one association, for DICOM).
const BATCH: usize = 32;
/// How often what waits per destination is measured (gauges, `/readyz`).
const MEASURE_EVERY: Duration = Duration::from_secs(2);

pub struct OutboxWorker {
    /// The claims of this node's previous run were voided (done by the first unit).
    started: bool,
    sender: Arc<Sender>,
    /// Rung when items are queued, so they go out at once instead of at the next poll.
    wake: Arc<tokio::sync::Notify>,
    /// One task per destination being sent to.
    lanes: JoinSet<()>,
    /// Each running lane's destination, by task.
    running: HashMap<tokio::task::Id, String>,
    measured_at: Option<tokio::time::Instant>,
    /// Destinations given gauges, set back to zero once nothing waits for them.
    gauged: HashSet<String>,
}

/// What a lane needs to send and record.
#[derive(Clone)]
struct Sender {
    db: Db,
    node: String,
    ours: AeTitle,
    /// The queued objects' files; with a shared bucket this worker claims every node's items.
    blobs: crate::blobs::Blobs,
    cfg: DeliverySettings,
    /// Opens the re-identification map for result objects (re-identified at sending).
    keys: Keys,
    /// The study quiet period, left out of the reported delivery latency.
    quiet_period: Duration,
    /// The RIS's MLLP receiver, for HL7 items (None: `[hl7]` is off and they wait).
    hl7: Option<crate::config::Hl7Settings>,
    /// The webhook rules, for notifications (a rule no longer configured: its items wait).
    notify: crate::config::NotifySettings,
    /// The HTTP client for webhooks (the reason when it could not be built: items wait).
    http: Result<reqwest13::Client, String>,
    /// How destinations registered as TLS are reached.
    tls: Connector,
    /// The DICOMweb (STOW-RS) destinations, each with its HTTP client (the reason when it could
    /// not be built: its items wait).
    dicomweb: Vec<(crate::config::DicomwebDestination, Result<reqwest13::Client, String>)>,
}

impl Worker for OutboxWorker {
    fn name(&self) -> &'static str {
        "outbox"
    }

    /// Start a lane for each destination with due items while there is room (after voiding
    /// the previous run's claims, the first time).
    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            // With a shared bucket another node may be sending this node's items right now: its
            // claims are left to their lease.
            if !self.started && self.sender.blobs.is_shared() {
                self.started = true;
            }
            if !self.started {
                match self.sender.db.outbox_release_claims(&self.sender.node).await? {
                    0 => {}
                    n => warn!(items = n, "outbox items claimed by this node's previous run are queued again"),
                }
                self.started = true;
            }
            while let Some(done) = self.lanes.try_join_next_with_id() {
                self.ended(done);
            }
            self.measure().await;
            self.start_lanes().await?;
            Ok(WorkState::Idle)
        })
    }

    /// The poll interval, or sooner when a result is queued or a lane ends.
    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let ended = tokio::select! {
                _ = tokio::time::sleep(self.sender.cfg.poll_interval) => None,
                _ = self.wake.notified() => None,
                Some(done) = self.lanes.join_next_with_id(), if !self.lanes.is_empty() => Some(done),
            };
            if let Some(done) = ended {
                self.ended(done);
            }
        })
    }

    /// Lanes still sending are stopped: what they had not recorded is queued again at the
    /// next start (or, with a shared bucket, after the lease).
    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.lanes.shutdown())
    }
}

/// What to do with an item after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Delivered,
    /// Delivered, and already recorded as such.
    Recorded,
    Retry(String),
    Dead(String),
    /// Not attempted: given back, due at once, no attempt counted.
    Release,
}

/// A C-STORE response status the peer may answer differently later.
fn transient(status: Status) -> bool {
    status.is_out_of_resources() || [Status::PROCESSING_FAILURE, Status::UNRECOGNIZED_OPERATION, Status::CANCEL].contains(&status)
}

fn verdict_for(result: &Result<Response, ClientError>) -> Verdict {
    match result {
        Ok(rsp) if rsp.is_stored() => Verdict::Delivered,
        Ok(rsp) => {
            let why = format!("status {}: {}", rsp.status, rsp.error_comment.as_deref().unwrap_or("no error comment"));
            if transient(rsp.status) {
                Verdict::Retry(why)
            } else {
                Verdict::Dead(why)
            }
        }
        Err(e @ (ClientError::NoContext(_) | ClientError::ReadFile { .. } | ClientError::Part10(_))) => Verdict::Dead(e.to_string()),
        Err(e) => Verdict::Retry(e.to_string()),
    }
}

/// An N-CREATE response of UPS Push (PS3.4 CC.2.5.1.3): created, or created by an earlier
/// attempt whose response was lost (Duplicate SOP Instance: the workitem's UID is the same on
/// every attempt), is delivered; Out of Resources and a processing failure are tried again; any
/// other refusal (a missing or invalid attribute, the class not supported) is final.
fn ups_verdict_for(result: &Result<Response, ClientError>) -> Verdict {
    match result {
        Ok(rsp) if rsp.status.is_performed() || rsp.status == Status::DUPLICATE_SOP_INSTANCE => Verdict::Delivered,
        Ok(rsp) => {
            let why = format!("N-CREATE status {}: {}", rsp.status, rsp.error_comment.as_deref().unwrap_or("no error comment"));
            if rsp.status.is_out_of_resources() || [Status::PROCESSING_FAILURE, Status::RESOURCE_LIMITATION].contains(&rsp.status) {
                Verdict::Retry(why)
            } else {
                Verdict::Dead(why)
            }
        }
        Err(e @ ClientError::NoContext(_)) => Verdict::Dead(e.to_string()),
        Err(e) => Verdict::Retry(e.to_string()),
    }
}

/// Delay before attempt `attempts + 1`: base * 2^(attempts - 1), capped, with +-20% jitter.
pub fn backoff(cfg: &DeliverySettings, attempts: u32) -> Duration {
    let exp = cfg.retry_base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(cfg.retry_max);
    let jitter = 0.8 + 0.4 * (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    capped.mul_f64(jitter)
}

impl OutboxWorker {
    #[allow(clippy::too_many_arguments)]
    /// The worker from the node's context and the `[delivery]` section; `hl7` the `[hl7]`
    /// section when HL7 items are sent; `notify` the webhook rules; `quiet_period` only to time
    /// the reports' latency; `wake` rung when items are queued; `dicomweb` the DICOMweb
    /// archives result objects go to by STOW-RS (`[[results.dicomweb]]`: a destination whose
    /// HTTP client cannot be built, its CA file unreadable, is logged once and its items wait).
    pub fn new(
        ctx: &crate::context::NodeContext,
        cfg: &DeliverySettings,
        hl7: Option<&crate::config::Hl7Settings>,
        notify: &crate::config::NotifySettings,
        quiet_period: Duration,
        wake: Arc<tokio::sync::Notify>,
        dicomweb: &[crate::config::DicomwebDestination],
    ) -> Self {
        let http = if notify.enabled { super::webhook::client(notify.timeout) } else { Err("notifications are off ([notify] enabled = false)".into()) };
        if let (true, Err(why)) = (notify.enabled, &http) {
            error!(error = %why, "webhook notifications cannot be sent: they wait in the outbox");
        }
        let sender = Sender {
            db: ctx.db.clone(),
            node: ctx.node_id.clone(),
            ours: ctx.ae_title.clone(),
            blobs: ctx.blobs.clone(),
            cfg: cfg.clone(),
            keys: ctx.keys.clone(),
            quiet_period,
            hl7: hl7.cloned(),
            notify: notify.clone(),
            http,
            tls: ctx.tls.clone(),
            dicomweb: dicomweb
                .iter()
                .map(|d| {
                    let client = super::stow::client(d);
                    if let Err(why) = &client {
                        error!(destination = %d.destination(), error = %why, "DICOMweb destination cannot be sent to: its items wait in the outbox");
                    }
                    (d.clone(), client)
                })
                .collect(),
        };
        OutboxWorker {
            started: false,
            sender: Arc::new(sender),
            wake,
            lanes: JoinSet::new(),
            running: HashMap::new(),
            measured_at: None,
            gauged: HashSet::new(),
        }
    }

    /// Claim due items for destinations without a lane, a lane each, while there is room.
    async fn start_lanes(&mut self) -> Result<(), crate::db::DbError> {
        let lease_ms = self.sender.cfg.lease.as_millis() as i64;
        while self.lanes.len() < self.sender.cfg.lanes {
            let busy: Vec<String> = self.running.values().cloned().collect();
            let Some(claim) = self.sender.db.outbox_claim_lane(self.sender.owner(), lease_ms, BATCH, &busy).await? else { break };
            let sender = self.sender.clone();
            let span = tracing::info_span!("delivery", destination = %claim.destination);
            let (destination, until) = (claim.destination, claim.lease_until_ms);
            let items = claim.items;
            let task = self.lanes.spawn(async move { sender.run_lane(until, items).await }.instrument(span));
            self.running.insert(task.id(), destination);
        }
        metrics::gauge!("triage_outbox_lanes_busy").set(self.lanes.len() as f64);
        Ok(())
    }

    fn ended(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    error!("an outbox lane panicked; its items are claimable again after their lease");
                }
                e.id()
            }
        };
        self.running.remove(&id);
        metrics::gauge!("triage_outbox_lanes_busy").set(self.lanes.len() as f64);
    }

    /// What waits for each destination, every `MEASURE_EVERY`: gauges per AE title, and the
    /// reasons `/readyz` gives (`destination_warnings`).
    async fn measure(&mut self) {
        if self.measured_at.is_some_and(|t| t.elapsed() < MEASURE_EVERY) {
            return;
        }
        self.measured_at = Some(tokio::time::Instant::now());
        let now = now_ms();
        let load = match self.sender.db.outbox_destinations(self.sender.owner(), now).await {
            Ok(load) => load,
            Err(error) => {
                warn!(%error, "measuring the outbox per destination failed");
                return;
            }
        };
        let cfg = &self.sender.cfg;
        let mut reasons = Vec::new();
        let mut seen = HashSet::new();
        for d in load {
            let due_ms = d.oldest_due_ms.map_or(0, |t| (now - t).max(0));
            let gauges = Gauges::of(&d.destination);
            gauges.waiting.set(d.waiting as f64);
            gauges.oldest_due.set(due_ms as f64 / 1000.0);
            gauges.failures.set(d.attempts as f64);
            if due_ms > cfg.warn_after.as_millis() as i64 {
                reasons.push(format!(
                    "outbox destination {}: an item has been due for {} s (delivery.warn_after is {:?})",
                    d.destination,
                    due_ms / 1000,
                    cfg.warn_after
                ));
            }
            if d.attempts >= i64::from(cfg.warn_failures) {
                reasons.push(format!("outbox destination {}: an item waiting for it failed {} times in a row", d.destination, d.attempts));
            }
            seen.insert(d.destination);
        }
        for gone in self.gauged.difference(&seen) {
            let gauges = Gauges::of(gone);
            gauges.waiting.set(0.0);
            gauges.oldest_due.set(0.0);
            gauges.failures.set(0.0);
        }
        self.gauged = seen;
        let stale_ms = (cfg.poll_interval.max(MEASURE_EVERY) * 3).max(Duration::from_secs(60)).as_millis() as i64;
        *HEALTH.lock().unwrap_or_else(|p| p.into_inner()) = Some(Health { at_ms: now, stale_ms, reasons });
    }
}

/// The per-destination gauges (labelled with the AE title, `HL7`, `webhook:<rule>` or
/// `dicomweb:<name>`: no patient data).
struct Gauges {
    waiting: metrics::Gauge,
    oldest_due: metrics::Gauge,
    failures: metrics::Gauge,
}

impl Gauges {
    fn of(destination: &str) -> Gauges {
        let label = destination.to_string();
        Gauges {
            waiting: metrics::gauge!("triage_outbox_destination_waiting", "destination" => label.clone()),
            oldest_due: metrics::gauge!("triage_outbox_destination_oldest_due_seconds", "destination" => label.clone()),
            failures: metrics::gauge!("triage_outbox_destination_failures", "destination" => label),
        }
    }
}

/// The outbox's last measurement, for `/readyz`.
struct Health {
    at_ms: i64,
    /// Older than this, the measurement itself is a reason (the worker is not measuring).
    stale_ms: i64,
    reasons: Vec<String>,
}

static HEALTH: Mutex<Option<Health>> = Mutex::new(None);

/// Why `/readyz` should say not ready as far as delivery goes: destinations (by AE title) whose
/// oldest due item has waited longer than `delivery.warn_after`, or for which an item failed
/// `delivery.warn_failures` times in a row, as the outbox worker last measured (every few
/// seconds). Empty before the first measurement.
pub fn destination_warnings() -> Vec<String> {
    let health = HEALTH.lock().unwrap_or_else(|p| p.into_inner());
    match &*health {
        None => Vec::new(),
        Some(h) if now_ms() - h.at_ms > h.stale_ms => vec![format!("the outbox has not measured its destinations for {} s", (now_ms() - h.at_ms) / 1000)],
        Some(h) => h.reasons.clone(),
    }
}

/// A lane's claim on its items: held until `until_ms`, renewed while the lane sends.
struct Claim {
    until_ms: AtomicI64,
    lease: Duration,
    /// Held while a renewal or a recording runs: a recording never checks a lease the database
    /// has already moved on from (the renewal's update and `until_ms` change together).
    turn: tokio::sync::Mutex<()>,
}

impl Claim {
    /// Until when the claim is held now: what each recording checks is still the row's.
    fn held(&self) -> Option<i64> {
        Some(self.until_ms.load(Ordering::Relaxed))
    }

    fn left(&self) -> Duration {
        Duration::from_millis((self.until_ms.load(Ordering::Relaxed) - now_ms()).max(0) as u64)
    }

    /// Whether an attempt may start: half a lease left at least (renewals keep two thirds).
    fn may_start(&self) -> bool {
        self.left() >= self.lease / 2
    }

    /// Resolves a tenth of a lease before the claim (as renewed meanwhile) runs out: the
    /// attempt in progress is stopped then, so no lane sends what another claimer may take.
    async fn running_out(&self) {
        let margin = self.lease / 10;
        loop {
            let left = self.left();
            if left <= margin {
                return;
            }
            tokio::time::sleep(left - margin).await;
        }
    }
}

/// Renews a lane's claim every third of the lease while the lane runs (stopped when dropped).
struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const CLAIM_RAN_OUT: &str = "stopped: the claim's lease was running out (delivery.lease)";

/// A transport outbox items travel by: it attempts one destination's batch and records each
/// outcome as it comes (through the sender). One implementation per transport; which kind goes
/// by which is `sink`'s table.
trait Sink: Sync {
    fn deliver<'a>(&'a self, sender: &'a Sender, destination: &'a str, items: &'a [OutboxItem], claim: &'a Claim) -> BoxFuture<'a, Vec<Verdict>>;
}

/// C-STORE over an association (with Storage Commitment when configured).
struct Dimse;

/// HL7 v2 over MLLP, each message acknowledged.
struct Mllp;

/// A notification POSTed to a webhook (`delivery::webhook`).
struct Webhook;

/// A UPS workitem N-CREATEd at a UPS Push SCP (`ups:<AE>`), re-identified just before.
struct UpsPush;

/// A result object POSTed to a DICOMweb archive by STOW-RS (`dicomweb:<name>`), re-identified
/// just before (`delivery::stow`).
struct Stow;

impl Sink for Stow {
    fn deliver<'a>(&'a self, sender: &'a Sender, destination: &'a str, items: &'a [OutboxItem], claim: &'a Claim) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(sender.one_at_a_time(items, claim, move |item| sender.attempt_stow(destination, item)))
    }
}

impl Sink for UpsPush {
    fn deliver<'a>(&'a self, sender: &'a Sender, destination: &'a str, items: &'a [OutboxItem], claim: &'a Claim) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(sender.attempt_ups(destination, items, claim))
    }
}

impl Sink for Dimse {
    fn deliver<'a>(&'a self, sender: &'a Sender, destination: &'a str, items: &'a [OutboxItem], claim: &'a Claim) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(sender.attempt_dimse(destination, items, claim))
    }
}

impl Sink for Mllp {
    fn deliver<'a>(&'a self, sender: &'a Sender, _destination: &'a str, items: &'a [OutboxItem], claim: &'a Claim) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(sender.attempt_mllp(items, claim))
    }
}

impl Sink for Webhook {
    fn deliver<'a>(&'a self, sender: &'a Sender, destination: &'a str, items: &'a [OutboxItem], claim: &'a Claim) -> BoxFuture<'a, Vec<Verdict>> {
        Box::pin(sender.attempt_webhooks(destination, items, claim))
    }
}

/// How each kind of outbox item is sent: the one table a new kind (a Parametric Map, a SEG, a
/// KOS goes by DIMSE) or a new transport (a notification) adds a row to. Result objects go by
/// DIMSE to an AE title and by STOW-RS to a `dicomweb:` destination.
fn sink(kind: ObjectKind, destination: &str) -> &'static dyn Sink {
    let dicomweb = destination.starts_with(crate::config::DICOMWEB_PREFIX);
    match kind {
        ObjectKind::Sr | ObjectKind::Sc | ObjectKind::Pm | ObjectKind::Seg | ObjectKind::Kos | ObjectKind::File if dicomweb => &Stow,
        ObjectKind::Sr | ObjectKind::Sc | ObjectKind::Pm | ObjectKind::Seg | ObjectKind::Kos | ObjectKind::File => &Dimse,
        ObjectKind::Hl7 => &Mllp,
        ObjectKind::Notice => &Webhook,
        ObjectKind::Ups => &UpsPush,
    }
}

impl Sender {
    /// Whose items this node claims: its own, or (a shared bucket holds every node's objects)
    /// any node's.
    fn owner(&self) -> Option<&str> {
        (!self.blobs.is_shared()).then_some(self.node.as_str())
    }

    /// Attempt one destination's claimed items and record every outcome.
    async fn run_lane(self: Arc<Self>, until_ms: i64, items: Vec<OutboxItem>) {
        let Some(destination) = items.first().map(|i| i.destination.clone()) else { return };
        let claim = Arc::new(Claim { until_ms: AtomicI64::new(until_ms), lease: self.cfg.lease, turn: tokio::sync::Mutex::new(()) });
        let _renewal = self.renew(claim.clone(), items.iter().map(|i| i.id).collect());
        let verdicts = self.attempt(&destination, &items, &claim).await;
        // What was not recorded as it came (given back, or a recording that failed then).
        for (item, verdict) in items.iter().zip(verdicts).filter(|(_, v)| *v != Verdict::Recorded) {
            let _turn = claim.turn.lock().await;
            if let Err(error) = self.record(item, verdict, claim.held()).await {
                error!(%error, item = item.id, "recording an outbox outcome failed; the lease will return it");
            }
        }
    }

    fn renew(&self, claim: Arc<Claim>, ids: Vec<i64>) -> Renewal {
        let db = self.db.clone();
        let lease = self.cfg.lease;
        Renewal(tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let _turn = claim.turn.lock().await;
                    let held = claim.until_ms.load(Ordering::Relaxed);
                    let until = now_ms() + lease.as_millis() as i64;
                    match db.outbox_renew(&ids, held, until).await {
                        Ok(0) => break,
                        Ok(_) => claim.until_ms.store(until, Ordering::Relaxed),
                        Err(error) => warn!(%error, "renewing an outbox claim failed"),
                    }
                }
            }
            .in_current_span(),
        ))
    }

    /// Record `verdict` now: `Recorded`, or the verdict itself when recording failed (tried
    /// again when the lane ends).
    async fn settle(&self, item: &OutboxItem, verdict: Verdict, claim: &Claim) -> Verdict {
        let _turn = claim.turn.lock().await;
        match self.record(item, verdict.clone(), claim.held()).await {
            Ok(()) => Verdict::Recorded,
            Err(error) => {
                error!(%error, item = item.id, "recording an outbox outcome failed; tried again when the lane ends");
                verdict
            }
        }
    }

    /// Attempt `items` (one destination's) through the transport their kind travels by
    /// (`sink`), each outcome recorded before the next item is sent (so a stop in the middle
    /// re-sends only what was not yet acknowledged); returns what is left to record (`Recorded`
    /// for the rest).
    async fn attempt(&self, destination: &str, items: &[OutboxItem], claim: &Claim) -> Vec<Verdict> {
        sink(items[0].kind, destination).deliver(self, destination, items, claim).await
    }

    /// The MLLP transport: each HL7 message on its own connection, its ACK awaited.
    async fn attempt_mllp(&self, items: &[OutboxItem], claim: &Claim) -> Vec<Verdict> {
        self.one_at_a_time(items, claim, |item| self.attempt_hl7(item)).await
    }

    /// The webhook transport: each notification one POST, in order.
    async fn attempt_webhooks(&self, destination: &str, items: &[OutboxItem], claim: &Claim) -> Vec<Verdict> {
        self.one_at_a_time(items, claim, |item| self.attempt_webhook(destination, item)).await
    }

    /// Items sent one at a time, in order, each outcome recorded before the next. `send` also
    /// says whether the receiver did not answer: then the rest are given back (due at once, no
    /// attempt counted), so items queued since, urgent ones first, are claimed before them.
    async fn one_at_a_time<'a, F, Fut>(&self, items: &'a [OutboxItem], claim: &Claim, send: F) -> Vec<Verdict>
    where
        F: Fn(&'a OutboxItem) -> Fut,
        Fut: std::future::Future<Output = (Verdict, bool)>,
    {
        let mut verdicts = vec![Verdict::Release; items.len()];
        for (i, item) in items.iter().enumerate() {
            if !claim.may_start() {
                break;
            }
            let started = std::time::Instant::now();
            let (verdict, unreachable) = tokio::select! {
                outcome = send(item) => outcome,
                _ = claim.running_out() => (Verdict::Retry(CLAIM_RAN_OUT.into()), true),
            };
            metrics::histogram!("triage_delivery_attempt_seconds", "kind" => item.kind.as_str()).record(started.elapsed().as_secs_f64());
            verdicts[i] = self.settle(item, verdict, claim).await;
            if unreachable {
                break;
            }
        }
        verdicts
    }

    /// Send one notification as written, with its stable id, through its rule's channel (a
    /// webhook POST, or an e-mail made from it); also says whether the receiver could not be
    /// reached or did not answer. Delivered: the ledger records when (the worklist's notified
    /// time, the time-to-notification histogram).
    async fn attempt_webhook(&self, destination: &str, item: &OutboxItem) -> (Verdict, bool) {
        let Some(rule) = self.notify.rule_for(destination) else {
            return (Verdict::Retry(format!("no [[notify.rules]] rule for {destination} (or [notify] is off): the notification waits")), false);
        };
        let path = match self.blobs.fetch(&item.path).await {
            Ok(path) => path,
            Err(e) => return (Verdict::Retry(e.to_string()), false),
        };
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return (Verdict::Dead(format!("reading the notification {}: {e}", item.path)), false),
        };
        // A study's notice, or a model's drift notice.
        let notice = match crate::results::notify::Message::read(&body) {
            Ok(n) => n,
            Err(e) => return (Verdict::Dead(format!("reading the notification {}: {e}", item.path)), false),
        };
        let posted = match rule.channel() {
            crate::config::Channel::Webhook => {
                let client = match &self.http {
                    Ok(c) => c,
                    Err(why) => return (Verdict::Retry(why.clone()), false),
                };
                // The site's own shape (a chat service's), or the notice's JSON as written.
                let body = match &rule.template {
                    Some(template) => crate::config::fill_template(template, |name| notice.template_value(name)).into_bytes(),
                    None => body,
                };
                super::webhook::post(client, rule, notice.id(), body).await
            }
            crate::config::Channel::Email => {
                let server = super::smtp_server(&self.notify, &self.node);
                let (subject, text) = notice.email_text();
                let attachments = notice
                    .preview()
                    .and_then(|p| crate::domain::base64_decode(&p.data_base64).map(|bytes| (p, bytes)))
                    .map(|(p, bytes)| super::smtp::Attachment { filename: "preview.png".into(), mime: p.media_type.clone(), bytes })
                    .into_iter()
                    .collect();
                let mail = super::smtp::Mail { to: rule.email.clone(), subject, text, message_id: notice.id().to_string(), attachments };
                super::smtp::send(&server, &mail).await
            }
        };
        match posted {
            super::webhook::Posted::Delivered => {
                // A drift notice is of no study: the ledger is the studies'.
                if let crate::results::notify::Message::Study(notice) = &notice {
                    self.delivered_notice(notice).await;
                }
                (Verdict::Delivered, false)
            }
            super::webhook::Posted::Retry { why, unreachable } => (Verdict::Retry(why), unreachable),
            super::webhook::Posted::Dead(why) => (Verdict::Dead(why), false),
        }
    }

    /// Send one result object by STOW-RS to the DICOMweb destination `destination` names:
    /// re-identified in memory now (audited) when it is a result, POSTed, judged per instance
    /// (`stow::judge`); also says whether the archive could not be reached or did not answer.
    async fn attempt_stow(&self, destination: &str, item: &OutboxItem) -> (Verdict, bool) {
        let Some((dest, client)) = self.dicomweb.iter().find(|(d, _)| d.destination() == destination) else {
            return (Verdict::Retry(format!("no [[results.dicomweb]] destination is named for {destination}: its objects wait")), false);
        };
        let client = match client {
            Ok(c) => c,
            Err(why) => return (Verdict::Retry(why.clone()), false),
        };
        let path = match self.blobs.fetch(&item.path).await {
            Ok(path) => path,
            Err(e) => return (Verdict::Retry(e.to_string()), false),
        };
        let (part10, instance) = if item.reidentify {
            // Re-identified now, in memory: the queued file stays de-identified.
            let purpose = format!("deliver result to {destination}");
            let r = match crate::results::reidentify::reidentified(&self.db, &self.keys, &path, &purpose).await {
                Ok(r) => r,
                Err(e) if e.transient() => return (Verdict::Retry(e.to_string()), false),
                Err(e) => return (Verdict::Dead(e.to_string()), false),
            };
            match crate::results::dataset::part10(&r.object, &r.sop_class_uid, &r.sop_instance_uid) {
                Ok(bytes) => (zeroize::Zeroizing::new(bytes), r.sop_instance_uid),
                Err(why) => return (Verdict::Dead(format!("encoding the re-identified object: {why}")), false),
            }
        } else {
            let meta = match client::read_part10(&path) {
                Ok(meta) => meta,
                Err(e) => return (Verdict::Dead(e.to_string()), false),
            };
            match std::fs::read(&path) {
                Ok(bytes) => (zeroize::Zeroizing::new(bytes), meta.sop_instance_uid.trim_end_matches('\0').to_string()),
                Err(e) => return (Verdict::Dead(format!("reading {}: {e}", item.path)), false),
            }
        };
        match super::stow::store(client, dest, &instance, &part10).await {
            super::stow::Stored::Delivered => (Verdict::Delivered, false),
            super::stow::Stored::Retry { why, unreachable } => (Verdict::Retry(why), unreachable),
            super::stow::Stored::Dead(why) => (Verdict::Dead(why), false),
        }
    }

    /// The ledger's record of a delivered notification, and the time from the study's last
    /// instance to its first notification delivered (rule names only as labels).
    async fn delivered_notice(&self, notice: &crate::results::notify::Notice) {
        match self.db.notification_delivered(&notice.id, now_ms()).await {
            Ok(Some((n, first))) => {
                if let (true, Some(last)) = (first, n.last_instance_at_ms) {
                    let seconds = (n.delivered_at_ms.unwrap_or_else(now_ms) - last).max(0) as f64 / 1000.0;
                    metrics::histogram!("triage_time_to_notification_seconds", "priority" => n.priority.clone()).record(seconds);
                }
                metrics::counter!("triage_notifications_delivered_total", "rule" => n.rule).increment(1);
            }
            // Delivered before (a retry after an unrecorded outcome), or a notice made before
            // the ledger existed.
            Ok(None) => {}
            Err(error) => warn!(%error, "recording a notification's delivery failed"),
        }
    }

    /// The DIMSE transport: one association to the destination for the batch, a C-STORE per
    /// object (re-identified in memory just before), Storage Commitment if asked for.
    async fn attempt_dimse(&self, destination: &str, items: &[OutboxItem], claim: &Claim) -> Vec<Verdict> {
        let all = |v: Verdict| vec![v; items.len()];
        let peer = match resolve(&self.db, destination, &self.ours, self.cfg.timeout, &self.tls).await {
            Ok(peer) => peer,
            Err(e @ (DeliveryError::UnknownAe(_) | DeliveryError::Disabled(_) | DeliveryError::NoAddress(_))) => return all(Verdict::Retry(e.to_string())),
            Err(e) => return all(Verdict::Retry(e.to_string())),
        };
        let mut verdicts = all(Verdict::Release);
        let mut sendable = Vec::new();
        let mut files = vec![std::path::PathBuf::new(); items.len()];
        for (i, item) in items.iter().enumerate() {
            match self.blobs.fetch(&item.path).await {
                Ok(file) => files[i] = file,
                // The bucket is unreachable now: later.
                Err(e) => {
                    verdicts[i] = Verdict::Retry(e.to_string());
                    continue;
                }
            }
            match client::read_part10(&files[i]) {
                Ok(meta) => sendable.push((i, meta)),
                Err(e) => verdicts[i] = Verdict::Dead(e.to_string()),
            }
        }
        if sendable.is_empty() {
            return verdicts;
        }
        let mut proposals = client::proposals_for(&sendable.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>());
        if self.cfg.storage_commitment {
            proposals.push(client::Proposal::storage_commitment());
        }
        let mut assoc = match Association::request(&peer, &proposals).await {
            Ok(a) => a,
            Err(e) => {
                let why = e.to_string();
                for (i, _) in &sendable {
                    verdicts[*i] = Verdict::Retry(why.clone());
                }
                return verdicts;
            }
        };
        let mut delivered: Vec<(i64, String, String)> = Vec::new();
        for (i, meta) in &sendable {
            if !claim.may_start() {
                break; // the rest are given back
            }
            let item = &items[*i];
            let started = std::time::Instant::now();
            let outcome = tokio::select! {
                outcome = self.store_one(&mut assoc, destination, item, &files[*i]) => outcome,
                _ = claim.running_out() => Err(Verdict::Retry(CLAIM_RAN_OUT.into())),
            };
            metrics::histogram!("triage_delivery_attempt_seconds", "kind" => item.kind.as_str()).record(started.elapsed().as_secs_f64());
            let (verdict, broken) = match outcome {
                Ok(result) => {
                    let broken = matches!(
                        result,
                        Err(ClientError::Aborted | ClientError::Write(_) | ClientError::Pdu(_) | ClientError::Message(_) | ClientError::Timeout(_))
                    );
                    (verdict_for(&result), broken)
                }
                // Not sent (re-identification failed), or stopped in the middle: then the
                // association is in an unknown state and is dropped.
                Err(v) => {
                    let stopped = v == Verdict::Retry(CLAIM_RAN_OUT.into());
                    (v, stopped)
                }
            };
            if verdict == Verdict::Delivered {
                delivered.push((item.id, meta.sop_class_uid.trim_end_matches('\0').to_string(), meta.sop_instance_uid.trim_end_matches('\0').to_string()));
            }
            verdicts[*i] = self.settle(item, verdict, claim).await;
            if broken {
                return verdicts; // the rest are given back: claimed again at once
            }
        }
        if self.cfg.storage_commitment && !delivered.is_empty() {
            self.request_commitment(&mut assoc, destination, &delivered).await;
        }
        if let Err(error) = assoc.release().await {
            warn!(%error, "release after delivery failed");
        }
        verdicts
    }

    /// One C-STORE on `assoc`: the PACS's answer, or the verdict when the object could not be
    /// sent (its re-identification failed).
    async fn store_one(
        &self,
        assoc: &mut Association,
        destination: &str,
        item: &OutboxItem,
        path: &std::path::Path,
    ) -> Result<Result<Response, ClientError>, Verdict> {
        let result = if item.reidentify {
            // Re-identified now, in memory: the queued file stays de-identified.
            let purpose = format!("deliver result to {destination}");
            match crate::results::reidentify::for_delivery(&self.db, &self.keys, path, &purpose).await {
                Ok(bytes) => assoc.store_part10_bytes(&bytes).await,
                Err(e) if e.transient() => return Err(Verdict::Retry(e.to_string())),
                Err(e) => return Err(Verdict::Dead(e.to_string())),
            }
        } else {
            assoc.store_file(path).await
        };
        // The PACS's Error Comment about a re-identified object may echo its patient data:
        // for those only the status is kept (in the database and the log).
        Ok(match result {
            Ok(rsp) if item.reidentify => Ok(Response { error_comment: rsp.error_comment.map(|_| "(comment withheld: may name the patient)".into()), ..rsp }),
            other => other,
        })
    }

    /// The UPS Push transport: one association to the SCP for the batch, an N-CREATE per
    /// workitem (re-identified in memory just before, encoded in the accepted transfer syntax),
    /// each outcome recorded before the next.
    async fn attempt_ups(&self, destination: &str, items: &[OutboxItem], claim: &Claim) -> Vec<Verdict> {
        use crate::dicom::uids::UNIFIED_PROCEDURE_STEP_PUSH as UPS_PUSH;
        let all = |v: Verdict| vec![v; items.len()];
        let ae = destination.strip_prefix(crate::config::UPS_PREFIX).unwrap_or(destination);
        let peer = match resolve(&self.db, ae, &self.ours, self.cfg.timeout, &self.tls).await {
            Ok(peer) => peer,
            Err(e) => return all(Verdict::Retry(e.to_string())),
        };
        let mut assoc = match Association::request(&peer, &[client::Proposal::ups_push()]).await {
            Ok(a) => a,
            Err(e) => return all(Verdict::Retry(e.to_string())),
        };
        let Some(ts) = assoc.transfer_syntax(UPS_PUSH).map(str::to_string) else {
            let _ = assoc.release().await;
            return all(Verdict::Dead(format!("{ae} accepted no presentation context for UPS Push")));
        };
        let mut verdicts = all(Verdict::Release);
        for (i, item) in items.iter().enumerate() {
            if !claim.may_start() {
                break;
            }
            let started = std::time::Instant::now();
            let outcome = tokio::select! {
                outcome = self.create_one(&mut assoc, destination, item, &ts) => outcome,
                _ = claim.running_out() => Err(Verdict::Retry(CLAIM_RAN_OUT.into())),
            };
            metrics::histogram!("triage_delivery_attempt_seconds", "kind" => item.kind.as_str()).record(started.elapsed().as_secs_f64());
            let (verdict, broken) = match outcome {
                Ok(result) => {
                    let broken = matches!(
                        result,
                        Err(ClientError::Aborted | ClientError::Write(_) | ClientError::Pdu(_) | ClientError::Message(_) | ClientError::Timeout(_))
                    );
                    (ups_verdict_for(&result), broken)
                }
                Err(v) => {
                    let stopped = v == Verdict::Retry(CLAIM_RAN_OUT.into());
                    (v, stopped)
                }
            };
            verdicts[i] = self.settle(item, verdict, claim).await;
            if broken {
                return verdicts;
            }
        }
        if let Err(error) = assoc.release().await {
            warn!(%error, "release after UPS delivery failed");
        }
        verdicts
    }

    /// One N-CREATE on `assoc`: the SCP's answer, or the verdict when the workitem could not be
    /// sent (its file or its re-identification failed).
    async fn create_one(&self, assoc: &mut Association, destination: &str, item: &OutboxItem, ts: &str) -> Result<Result<Response, ClientError>, Verdict> {
        let path = self.blobs.fetch(&item.path).await.map_err(|e| Verdict::Retry(e.to_string()))?;
        let purpose = format!("deliver UPS workitem to {destination}");
        let r = crate::results::reidentify::reidentified(&self.db, &self.keys, &path, &purpose).await.map_err(|e| match e.transient() {
            true => Verdict::Retry(e.to_string()),
            false => Verdict::Dead(e.to_string()),
        })?;
        let obj = crate::results::ups::for_sending(r.object);
        use dicom_transfer_syntax_registry::TransferSyntaxIndex;
        let syntax = dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(ts)
            .ok_or_else(|| Verdict::Dead(format!("the accepted transfer syntax {ts} is unknown")))?;
        let mut data = zeroize::Zeroizing::new(Vec::new());
        obj.write_dataset_with_ts(&mut *data, syntax).map_err(|e| Verdict::Dead(format!("encoding the workitem: {e}")))?;
        let result = assoc.n_create(crate::dicom::uids::UNIFIED_PROCEDURE_STEP_PUSH, &r.sop_instance_uid, &data).await;
        // The SCP's Error Comment may echo the patient: only the status is kept.
        Ok(result.map(|rsp| Response { error_comment: rsp.error_comment.map(|_| "(comment withheld: may name the patient)".into()), ..rsp }))
    }

    /// Send one HL7 report: rendered now with the patient from the sealed map (audited), sent
    /// over MLLP with its control ID, judged by the ACK. Also says whether the receiver could
    /// not be reached or did not answer.
    async fn attempt_hl7(&self, item: &OutboxItem) -> (Verdict, bool) {
        let Some(cfg) = self.hl7.as_ref().filter(|c| c.enabled) else {
            return (Verdict::Retry("HL7 is not enabled ([hl7] enabled = false): the report waits".into()), false);
        };
        let path = match self.blobs.fetch(&item.path).await {
            Ok(path) => path,
            Err(e) => return (Verdict::Retry(e.to_string()), false),
        };
        let report: crate::hl7::Report =
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                Ok(r) => r,
                Err(why) => return (Verdict::Dead(format!("reading the HL7 report {}: {why}", item.path)), false),
            };
        let purpose = format!("deliver HL7 result to {}:{}", cfg.host, cfg.port);
        let originals = match crate::deid::reidentify(&self.db, &self.keys, &report.instance_uid, &purpose).await {
            Ok(o) => o,
            Err(e @ crate::deid::MapError::Db(_)) => return (Verdict::Retry(e.to_string()), false),
            Err(e) => return (Verdict::Dead(e.to_string()), false),
        };
        let who = crate::hl7::Identity {
            patient_id: originals.patient_id.clone(),
            issuer_of_patient_id: originals.issuer_of_patient_id.clone(),
            patient_name: originals.patient_name.clone(),
            birth_date: originals.patient_birth_date.clone(),
            sex: originals.patient_sex.clone(),
            accession_number: originals.accession_number.clone(),
            study_instance_uid: originals.study_instance_uid.clone(),
            study_date: originals.study_date.clone(),
            study_time: originals.study_time.clone(),
        };
        // The ORU, or the order update queued after it (`[hl7] order_update`).
        let message = zeroize::Zeroizing::new(crate::hl7::render(&report, &who, &cfg.mapping()));
        match crate::hl7::send(&cfg.host, cfg.port, &message, &report.control_id, cfg.timeout).await {
            Ok(crate::hl7::Ack::Accepted) => (Verdict::Delivered, false),
            Ok(crate::hl7::Ack::Error(why)) => (Verdict::Retry(why), false),
            Ok(crate::hl7::Ack::Rejected(why)) => (Verdict::Dead(why), false),
            Err(e) => {
                let unreachable = matches!(e, crate::hl7::MllpError::Connect(..) | crate::hl7::MllpError::Io(..) | crate::hl7::MllpError::Timeout(..));
                (Verdict::Retry(e.to_string()), unreachable)
            }
        }
    }

    /// Ask the destination to commit to `delivered` (outbox id, SOP Class, SOP Instance) on the
    /// association they went over. Recorded first, so an immediate report finds its rows; a
    /// refusal is recorded with the reason. Delivery itself stands either way.
    async fn request_commitment(&self, assoc: &mut Association, destination: &str, delivered: &[(i64, String, String)]) {
        let transaction = format!("2.25.{}", uuid::Uuid::new_v4().as_u128());
        let rows: Vec<(i64, String)> = delivered.iter().map(|(id, _, sop)| (*id, sop.clone())).collect();
        if let Err(error) = self.db.commitment_requested(&transaction, destination, &rows).await {
            error!(%error, "recording a storage commitment request failed; not requested");
            return;
        }
        let refused = if !assoc.accepts(crate::dicom::uids::STORAGE_COMMITMENT_PUSH_MODEL) {
            Some("the destination did not accept Storage Commitment Push Model".to_string())
        } else {
            let refs: Vec<(String, String)> = delivered.iter().map(|(_, class, sop)| (class.clone(), sop.clone())).collect();
            let ts = assoc.transfer_syntax(crate::dicom::uids::STORAGE_COMMITMENT_PUSH_MODEL).unwrap_or_default().to_string();
            let sent = match super::commitment::action_dataset(&transaction, &refs, &ts) {
                Ok(data) => assoc.request_commitment(&data).await,
                Err(e) => Err(ClientError::Protocol(e)),
            };
            match sent {
                Ok(rsp) if rsp.is_success() => None,
                Ok(rsp) => Some(format!("N-ACTION status {}: {}", rsp.status, rsp.error_comment.as_deref().unwrap_or("no error comment"))),
                Err(e) => Some(format!("N-ACTION failed: {e}")),
            }
        };
        match refused {
            None => info!(objects = delivered.len(), "storage commitment requested"),
            Some(why) => {
                warn!(error = %why, "storage commitment not requested");
                if let Err(error) = self.db.commitment_refused(&transaction, &why).await {
                    error!(%error, "recording a storage commitment refusal failed");
                }
            }
        }
    }

    /// Record `verdict` for `item`, fenced by the claim held until `held`: a lane whose claim
    /// another claimer took over changes nothing (and says so).
    async fn record(&self, item: &OutboxItem, verdict: Verdict, held: Option<i64>) -> Result<(), crate::db::DbError> {
        let attempts = item.attempts as u32 + 1;
        let ours = |recorded: bool| {
            if !recorded {
                warn!(item = item.id, "the item's claim was taken over before its outcome was recorded: the new claimer decides");
            }
        };
        match verdict {
            Verdict::Recorded => Ok(()),
            Verdict::Release => self.db.outbox_release(item.id, held).await.map(ours),
            Verdict::Delivered => {
                if !self.db.outbox_delivered(item.id, held).await? {
                    ours(false);
                    return Ok(());
                }
                metrics::counter!("triage_delivered_total", "kind" => item.kind.as_str()).increment(1);
                match (item.kind, item.study_id) {
                    (ObjectKind::Sr, Some(study)) => {
                        // From the study's last instance to the PACS's Success for its report,
                        // without the quiet period (a setting, not work) when the study waited
                        // for it; a study completed by its procedure step (MPPS) waited none.
                        let (last, ready) = self.db.study_last_received(study).await?.unwrap_or((0, None));
                        let quiet = self.quiet_period.as_millis() as i64;
                        let waited = if ready.is_some_and(|r| r - last >= quiet) { quiet } else { 0 };
                        let latency_ms = now_ms() - last - waited;
                        metrics::histogram!("triage_end_to_end_seconds").record(latency_ms.max(0) as f64 / 1000.0);
                        info!(item = item.id, study_id = study, attempts, latency_ms, "AI report delivered");
                    }
                    _ => info!(item = item.id, kind = %item.kind, attempts, "delivered"),
                }
                Ok(())
            }
            Verdict::Retry(why) if attempts < self.cfg.max_attempts => {
                let delay = backoff(&self.cfg, attempts);
                metrics::counter!("triage_delivery_failures_total", "kind" => item.kind.as_str()).increment(1);
                warn!(item = item.id, attempts, retry_in = ?delay, error = %why, "delivery failed; will retry");
                self.db.outbox_retry_later(item.id, now_ms() + delay.as_millis() as i64, &why, held).await.map(ours)
            }
            Verdict::Retry(why) => {
                metrics::counter!("triage_delivery_failures_total", "kind" => item.kind.as_str()).increment(1);
                metrics::counter!("triage_dead_letters_total", "kind" => item.kind.as_str()).increment(1);
                let why = format!("gave up after {attempts} attempts: {why}");
                error!(item = item.id, error = %why, "delivery dead-lettered");
                self.db.outbox_dead(item.id, &why, held).await.map(ours)
            }
            Verdict::Dead(why) => {
                metrics::counter!("triage_delivery_failures_total", "kind" => item.kind.as_str()).increment(1);
                metrics::counter!("triage_dead_letters_total", "kind" => item.kind.as_str()).increment(1);
                error!(item = item.id, error = %why, "delivery dead-lettered");
                self.db.outbox_dead(item.id, &why, held).await.map(ours)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DeliverySettings {
        crate::config::Settings::load(None).unwrap().delivery
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let c = cfg(); // 5 s base, 10 min cap
        let within = |d: Duration, nominal: f64| d.as_secs_f64() >= nominal * 0.8 - 1e-9 && d.as_secs_f64() <= nominal * 1.2 + 1e-9;
        assert!(within(backoff(&c, 1), 5.0));
        assert!(within(backoff(&c, 2), 10.0));
        assert!(within(backoff(&c, 4), 40.0));
        assert!(within(backoff(&c, 12), 600.0));
        assert!(within(backoff(&c, 60), 600.0));
    }

    #[test]
    fn ups_outcomes_map_to_verdicts() {
        let rsp = |status| Ok(Response { status: Status(status), error_comment: None });
        assert_eq!(ups_verdict_for(&rsp(0x0000)), Verdict::Delivered);
        assert_eq!(ups_verdict_for(&rsp(0x0111)), Verdict::Delivered, "created by an attempt whose response was lost");
        assert_eq!(ups_verdict_for(&rsp(0x0107)), Verdict::Delivered, "attribute list warning");
        assert!(matches!(ups_verdict_for(&rsp(0xA700)), Verdict::Retry(_)));
        assert!(matches!(ups_verdict_for(&rsp(0x0110)), Verdict::Retry(_)));
        assert!(matches!(ups_verdict_for(&rsp(0x0120)), Verdict::Dead(w) if w.contains("N-CREATE status 0x0120")));
        assert!(matches!(ups_verdict_for(&rsp(0x0122)), Verdict::Dead(_)));
        assert!(matches!(ups_verdict_for(&Err(ClientError::Aborted)), Verdict::Retry(_)));
        assert!(matches!(ups_verdict_for(&Err(ClientError::NoContext("UPS".into()))), Verdict::Dead(_)));
    }

    #[test]
    fn outcomes_map_to_verdicts() {
        let rsp = |status, comment: Option<&str>| Ok(Response { status: Status(status), error_comment: comment.map(str::to_string) });
        assert_eq!(verdict_for(&rsp(0x0000, None)), Verdict::Delivered);
        assert_eq!(verdict_for(&rsp(0xB000, None)), Verdict::Delivered);
        // 0107 and 0116 are warnings of other services (N-SET), not of C-STORE: not stored.
        assert!(matches!(verdict_for(&rsp(0x0107, None)), Verdict::Dead(_)));
        assert!(matches!(verdict_for(&rsp(0xA700, Some("disk full"))), Verdict::Retry(w) if w.contains("disk full")));
        assert!(matches!(verdict_for(&rsp(0xC000, None)), Verdict::Dead(_)));
        assert!(matches!(verdict_for(&rsp(0xA900, None)), Verdict::Dead(_)));
        assert!(matches!(verdict_for(&Err(ClientError::Aborted)), Verdict::Retry(_)));
        assert!(matches!(verdict_for(&Err(ClientError::NoContext("x".into()))), Verdict::Dead(_)));
    }
}
