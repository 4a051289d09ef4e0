//! The listener: accepts TCP connections, enforces the association limit, and runs each
//! association as its own task under one shutdown token.
//!
//! The issue asks for an explicit A-ASSOCIATE-RJ "local limit exceeded" past the limit, so we
//! accept first and then try for a permit; callers over the limit get the rejection from a
//! small, separately bounded pool of rejecting tasks (past that, the socket is just closed).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::negotiation::{self, CallerDecision};
use super::pdu::{self, PduError};
use crate::config::DicomSettings;
use crate::db::{Db, DbError};
use crate::domain::AeTitle;
use crate::ingest::Ingest;

/// Connections over the limit that we answer with A-ASSOCIATE-RJ at the same time.
const MAX_REJECTING: usize = 16;
/// How long a caller past the open slots gets to send its A-ASSOCIATE-RQ before we just close.
const REJECT_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error("no A-ASSOCIATE-RQ within the ARTIM timeout of {0:?}")]
    ArtimExpired(Duration),
    #[error("no PDU within the idle timeout of {0:?}")]
    Idle(Duration),
    #[error("writing to peer: {0}")]
    Write(#[source] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("checking the calling AE: {0}")]
    AeLookup(#[source] DbError),
}

/// What every association task shares.
pub struct Shared {
    pub settings: DicomSettings,
    pub ae_title: AeTitle,
    pub db: Db,
    pub ingest: Arc<Ingest>,
}

impl Shared {
    /// Is `calling` allowed to associate from `peer`? Read from the database on every
    /// association, so `triage-node ae ...` changes apply to the next one without a restart.
    pub async fn check_caller(&self, calling: &str, peer: IpAddr) -> Result<CallerDecision, DbError> {
        let registered = self.db.find_ae(calling.trim()).await?;
        let Some(ae) = registered else {
            return Ok(if self.settings.require_registered_calling_ae {
                CallerDecision::NotRecognized
            } else {
                CallerDecision::Allowed(crate::db::AeRole::Modality)
            });
        };
        if !ae.enabled {
            return Ok(CallerDecision::NotRecognized);
        }
        let allowed = CallerDecision::Allowed(ae.role);
        match ae.host.as_deref() {
            None | Some("") => Ok(allowed),
            Some(host) => Ok(if host_matches(host, peer).await { allowed } else { CallerDecision::NotRecognized }),
        }
    }
}

impl Shared {
    /// Is `calling` a registered, enabled AE calling from its bound host (whatever
    /// `require_registered_calling_ae` says)? Such callers may take the reserved slots.
    pub async fn registered_caller(&self, calling: &str, peer: IpAddr) -> Result<bool, DbError> {
        let Some(ae) = self.db.find_ae(calling.trim()).await? else { return Ok(false) };
        Ok(ae.enabled
            && match ae.host.as_deref() {
                None | Some("") => true,
                Some(host) => host_matches(host, peer).await,
            })
    }
}

async fn host_matches(host: &str, peer: IpAddr) -> bool {
    let peer = canonical(peer);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return canonical(ip) == peer;
    }
    match tokio::net::lookup_host((host, 0)).await {
        Ok(addrs) => addrs.map(|a| canonical(a.ip())).any(|ip| ip == peer),
        Err(_) => false,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

pub struct Listener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Listener {
    pub async fn bind(shared: Arc<Shared>) -> std::io::Result<Listener> {
        let addr = SocketAddr::new(shared.settings.bind, shared.settings.port);
        let listener = TcpListener::bind(addr).await?;
        Ok(Listener { listener, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept until `shutdown`; association tasks are spawned on `tracker` with child tokens.
    pub async fn run(self, shutdown: CancellationToken, tracker: TaskTracker) {
        let settings = &self.shared.settings;
        // At least one slot stays open to anyone (the reserved ones need a request to be read).
        let reserved_slots = settings.reserved_for_registered.min(settings.max_associations - 1);
        let permits = Arc::new(Semaphore::new(settings.max_associations - reserved_slots));
        let reserved = Arc::new(Semaphore::new(reserved_slots));
        let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
        // Callers over their host's limit are answered from a pool of their own, so that they
        // cannot use up the one through which registered callers reach the reserved slots.
        let over_host = Arc::new(Semaphore::new(MAX_REJECTING));
        let hosts = Arc::new(HostCounts::default());
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // Every connection counts against its host from accept to close, so one host (a
            // broken peer, or sockets opened and left silent) cannot hold every slot.
            let Some(host_slot) = hosts.clone().take(peer.ip(), self.shared.settings.max_associations_per_host) else {
                if let Ok(slot) = over_host.clone().try_acquire_owned() {
                    tracker.spawn(async move {
                        let _slot = slot;
                        if let Some((mut stream, rq)) = read_request_briefly(stream).await {
                            reject_over_limit(&mut stream, peer, &rq, "too many associations from this host").await;
                        }
                    });
                }
                continue;
            };
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = self.shared.clone();
                    let token = shutdown.child_token();
                    tracker.spawn(async move {
                        let _permit = permit;
                        let _host = host_slot;
                        if let Err(error) = super::session::run(stream, peer, shared, token).await {
                            warn!(%error, peer = %peer, "association failed");
                        }
                    });
                }
                Err(_) => {
                    // The open slots are taken: a registered caller may still have one of the
                    // slots kept for registered AEs, once its request shows who it is.
                    if let Ok(slot) = rejecting.clone().try_acquire_owned() {
                        let (shared, reserved, token) = (self.shared.clone(), reserved.clone(), shutdown.child_token());
                        tracker.spawn(async move {
                            let _host = host_slot;
                            let Some((mut stream, rq)) = read_request_briefly(stream).await else { return };
                            let calling = rq.calling_ae_title.trim().to_string();
                            let lookup = tokio::time::timeout(REJECT_READ_TIMEOUT, shared.registered_caller(&calling, peer.ip()));
                            let registered = matches!(lookup.await, Ok(Ok(true)));
                            match reserved.try_acquire_owned() {
                                Ok(permit) if registered => {
                                    drop(slot);
                                    let _permit = permit;
                                    if let Err(error) = super::session::run_with_request(stream, peer, shared, token, rq).await {
                                        warn!(%error, peer = %peer, "association failed");
                                    }
                                }
                                _ => reject_over_limit(&mut stream, peer, &rq, "local limit exceeded").await,
                            }
                        });
                    }
                }
            }
        }
        info!("listener stopped accepting");
    }
}

/// Connections open per peer address.
#[derive(Default)]
struct HostCounts(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

/// One connection's place in its host's count, given back when dropped.
struct HostSlot {
    counts: Arc<HostCounts>,
    ip: IpAddr,
}

impl HostCounts {
    fn take(self: Arc<Self>, ip: IpAddr, limit: usize) -> Option<HostSlot> {
        let ip = canonical(ip);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(map);
        Some(HostSlot { counts: self, ip })
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The caller's A-ASSOCIATE-RQ, if it sends one within `REJECT_READ_TIMEOUT`.
async fn read_request_briefly(mut stream: TcpStream) -> Option<(TcpStream, dicom_ul::pdu::AssociationRQ)> {
    let read = tokio::time::timeout(REJECT_READ_TIMEOUT, async {
        let header = pdu::read_header(&mut stream).await?.ok_or(PduError::Closed)?;
        pdu::read_control_pdu(&mut stream, header).await
    })
    .await;
    match read {
        Ok(Ok(dicom_ul::pdu::Pdu::AssociationRQ(rq))) => Some((stream, rq)),
        _ => None,
    }
}

/// Answer A-ASSOCIATE-RJ (transient, local limit exceeded).
async fn reject_over_limit(stream: &mut TcpStream, peer: SocketAddr, rq: &dicom_ul::pdu::AssociationRQ, why: &str) {
    use tokio::io::AsyncWriteExt;
    let rj = dicom_ul::pdu::Pdu::AssociationRJ(negotiation::local_limit_exceeded());
    let _ = stream.write_all(&pdu::encode(&rj)).await;
    let _ = stream.shutdown().await;
    warn!(peer = %peer, calling_ae = %crate::domain::PeerText(rq.calling_ae_title.trim()), "association rejected: {why}");
}
