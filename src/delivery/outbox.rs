//! The outbox worker: claims due items, sends each destination's batch over one association,
//! and records every outcome: delivered; retry later with exponential backoff and jitter
//! (connection failures, timeouts, rejections, Out of Resources); or dead with the reason
//! (a refusal the peer will repeat, a file that cannot be read, or too many attempts).
//! Work lives in the database, so a restart resumes where the last run stopped.

use std::time::Duration;

use tracing::{error, info, warn, Instrument};

use super::{resolve, DeliveryError};
use crate::dicom::Status;
use crate::net::client::{self, Association, ClientError, Response};
use crate::net::tls::Connector;
use crate::config::DeliverySettings;
use crate::db::{Db, ObjectKind, OutboxItem};
use crate::deid::Keys;
use crate::domain::{now_ms, AeTitle};
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

/// Items sent over one association at most.
const BATCH: usize = 32;

#[derive(Clone)]
pub struct OutboxWorker {
    /// The claims of this node's previous run were voided (done by the first unit).
    started: bool,
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
    /// Rung when items are queued, so they go out at once instead of at the next poll.
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// The RIS's MLLP receiver, for HL7 items (None: `[hl7]` is off and they wait).
    hl7: Option<crate::config::Hl7Settings>,
    /// How destinations registered as TLS are reached.
    tls: Connector,
}

impl Worker for OutboxWorker {
    fn name(&self) -> &'static str {
        "outbox"
    }

    /// One destination's due batch (after voiding the previous run's claims, the first time).
    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            // With a shared bucket another node may be sending this node's items right now: its
            // claims are left to their lease.
            if !self.started && self.blobs.is_shared() {
                self.started = true;
            }
            if !self.started {
                match self.db.outbox_release_claims(&self.node).await? {
                    0 => {}
                    n => warn!(items = n, "outbox items claimed by this node's previous run are queued again"),
                }
                self.started = true;
            }
            Ok(if self.drain_once().await? > 0 { WorkState::Busy } else { WorkState::Idle })
        })
    }

    /// The poll interval, or sooner when a result is queued.
    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = self.wake.notified() => {}
            }
        })
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
}

/// A C-STORE response status the peer may answer differently later.
fn transient(status: Status) -> bool {
    status.is_out_of_resources()
        || [Status::PROCESSING_FAILURE, Status::UNRECOGNIZED_OPERATION, Status::CANCEL].contains(&status)
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

/// Delay before attempt `attempts + 1`: base * 2^(attempts - 1), capped, with +-20% jitter.
pub fn backoff(cfg: &DeliverySettings, attempts: u32) -> Duration {
    let exp = cfg.retry_base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(cfg.retry_max);
    let jitter = 0.8 + 0.4 * (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    capped.mul_f64(jitter)
}

impl OutboxWorker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        node: String,
        ours: AeTitle,
        blobs: crate::blobs::Blobs,
        cfg: DeliverySettings,
        keys: Keys,
        quiet_period: Duration,
        wake: std::sync::Arc<tokio::sync::Notify>,
        hl7: Option<crate::config::Hl7Settings>,
    ) -> Self {
        OutboxWorker { started: false, db, node, ours, blobs, cfg, keys, quiet_period, wake, hl7, tls: Connector::default() }
    }

    /// Reach destinations registered as TLS through `tls`.
    pub fn with_tls(mut self, tls: Connector) -> Self {
        self.tls = tls;
        self
    }

    /// Claim one destination's due items and attempt them; returns how many were attempted.
    pub async fn drain_once(&self) -> Result<usize, crate::db::DbError> {
        // A shared bucket holds every node's objects: any node sends any node's items.
        let owner = (!self.blobs.is_shared()).then_some(self.node.as_str());
        let items = self.db.outbox_claim(owner, self.cfg.lease.as_millis() as i64, BATCH).await?;
        if items.is_empty() {
            return Ok(0);
        }
        let destination = items[0].destination.clone();
        let span = tracing::info_span!("delivery", destination = %destination);
        async {
            let verdicts = self.attempt(&destination, &items).await;
            // Deliveries were recorded as each Success came (None here).
            for (item, verdict) in items.iter().zip(verdicts).filter_map(|(i, v)| v.map(|v| (i, v))) {
                if let Err(error) = self.record(item, verdict).await {
                    error!(%error, item = item.id, "recording an outbox outcome failed; the lease will return it");
                }
            }
        }
        .instrument(span)
        .await;
        Ok(items.len())
    }

    /// Attempt `items` on one association. An item the destination stored is recorded as
    /// delivered at once, before the next is sent (its verdict comes back as `None`), so a stop
    /// in the middle of a batch re-sends only what was not yet acknowledged; the others' verdicts
    /// are for the caller to record.
    async fn attempt(&self, destination: &str, items: &[OutboxItem]) -> Vec<Option<Verdict>> {
        let verdicts = self.attempt_all(destination, items).await;
        verdicts.into_iter().map(|v| (v != Verdict::Recorded).then_some(v)).collect()
    }

    async fn attempt_all(&self, destination: &str, items: &[OutboxItem]) -> Vec<Verdict> {
        let all = |v: Verdict| vec![v; items.len()];
        if items[0].kind == ObjectKind::Hl7 {
            let mut verdicts = Vec::with_capacity(items.len());
            for item in items {
                verdicts.push(self.attempt_hl7(item).await);
            }
            return verdicts;
        }
        let peer = match resolve(&self.db, destination, &self.ours, self.cfg.timeout, &self.tls).await {
            Ok(peer) => peer,
            Err(e @ (DeliveryError::UnknownAe(_) | DeliveryError::Disabled(_) | DeliveryError::NoAddress(_))) => return all(Verdict::Retry(e.to_string())),
            Err(e) => return all(Verdict::Retry(e.to_string())),
        };
        let mut verdicts = vec![Verdict::Retry("not attempted".into()); items.len()];
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
        for (i, _) in &sendable {
            let item = &items[*i];
            let path = files[*i].clone();
            let result = if item.reidentify {
                // Re-identified now, in memory: the queued file stays de-identified.
                let purpose = format!("deliver result to {destination}");
                match crate::results::reidentify::for_delivery(&self.db, &self.keys, &path, &purpose).await {
                    Ok(bytes) => assoc.store_part10_bytes(&bytes).await,
                    Err(e) if e.transient() => {
                        verdicts[*i] = Verdict::Retry(e.to_string());
                        continue;
                    }
                    Err(e) => {
                        verdicts[*i] = Verdict::Dead(e.to_string());
                        continue;
                    }
                }
            } else {
                assoc.store_file(&path).await
            };
            let broken = matches!(result, Err(ClientError::Aborted | ClientError::Write(_) | ClientError::Pdu(_) | ClientError::Message(_) | ClientError::Timeout(_)));
            // The PACS's Error Comment about a re-identified object may echo its patient data:
            // for those only the status is kept (in the database and the log).
            let result = match result {
                Ok(rsp) if item.reidentify => Ok(Response { error_comment: rsp.error_comment.map(|_| "(comment withheld: may name the patient)".into()), ..rsp }),
                other => other,
            };
            verdicts[*i] = verdict_for(&result);
            if verdicts[*i] == Verdict::Delivered {
                match self.record(item, Verdict::Delivered).await {
                    Ok(()) => verdicts[*i] = Verdict::Recorded,
                    Err(error) => error!(%error, item = item.id, "recording a delivery failed; it is recorded again after the batch"),
                }
            }
            if broken {
                return verdicts; // the rest stay "not attempted": retried later
            }
        }
        if self.cfg.storage_commitment {
            let delivered: Vec<(i64, String, String)> = sendable
                .iter()
                .filter(|(i, _)| matches!(verdicts[*i], Verdict::Delivered | Verdict::Recorded))
                .map(|(i, m)| (items[*i].id, m.sop_class_uid.trim_end_matches('\0').to_string(), m.sop_instance_uid.trim_end_matches('\0').to_string()))
                .collect();
            if !delivered.is_empty() {
                self.request_commitment(&mut assoc, destination, &delivered).await;
            }
        }
        if let Err(error) = assoc.release().await {
            warn!(%error, "release after delivery failed");
        }
        verdicts
    }

    /// Send one HL7 report: rendered now with the patient from the sealed map (audited), sent
    /// over MLLP with its control ID, judged by the ACK.
    async fn attempt_hl7(&self, item: &OutboxItem) -> Verdict {
        let Some(cfg) = self.hl7.as_ref().filter(|c| c.enabled) else {
            return Verdict::Retry("HL7 is not enabled ([hl7] enabled = false): the report waits".into());
        };
        let path = match self.blobs.fetch(&item.path).await {
            Ok(path) => path,
            Err(e) => return Verdict::Retry(e.to_string()),
        };
        let report: crate::hl7::Report = match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
            Ok(r) => r,
            Err(why) => return Verdict::Dead(format!("reading the HL7 report {}: {why}", item.path)),
        };
        let purpose = format!("deliver HL7 result to {}:{}", cfg.host, cfg.port);
        let originals = match crate::deid::reidentify(&self.db, &self.keys, &report.instance_uid, &purpose).await {
            Ok(o) => o,
            Err(e @ crate::deid::MapError::Db(_)) => return Verdict::Retry(e.to_string()),
            Err(e) => return Verdict::Dead(e.to_string()),
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
        let message = zeroize::Zeroizing::new(crate::hl7::oru_r01(&report, &who, &cfg.mapping()));
        match crate::hl7::send(&cfg.host, cfg.port, &message, &report.control_id, cfg.timeout).await {
            Ok(crate::hl7::Ack::Accepted) => Verdict::Delivered,
            Ok(crate::hl7::Ack::Error(why)) => Verdict::Retry(why),
            Ok(crate::hl7::Ack::Rejected(why)) => Verdict::Dead(why),
            Err(e) => Verdict::Retry(e.to_string()),
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

    async fn record(&self, item: &OutboxItem, verdict: Verdict) -> Result<(), crate::db::DbError> {
        let attempts = item.attempts as u32 + 1;
        match verdict {
            Verdict::Recorded => Ok(()),
            Verdict::Delivered => {
                self.db.outbox_delivered(item.id).await?;
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
                self.db.outbox_retry_later(item.id, now_ms() + delay.as_millis() as i64, &why).await
            }
            Verdict::Retry(why) => {
                metrics::counter!("triage_delivery_failures_total", "kind" => item.kind.as_str()).increment(1);
                metrics::counter!("triage_dead_letters_total", "kind" => item.kind.as_str()).increment(1);
                let why = format!("gave up after {attempts} attempts: {why}");
                error!(item = item.id, error = %why, "delivery dead-lettered");
                self.db.outbox_dead(item.id, &why).await
            }
            Verdict::Dead(why) => {
                metrics::counter!("triage_delivery_failures_total", "kind" => item.kind.as_str()).increment(1);
                metrics::counter!("triage_dead_letters_total", "kind" => item.kind.as_str()).increment(1);
                error!(item = item.id, error = %why, "delivery dead-lettered");
                self.db.outbox_dead(item.id, &why).await
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
