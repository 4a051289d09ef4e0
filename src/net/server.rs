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

use tracing::Instrument;

use super::access::canonical;
use super::association::{BoxRead, BoxWrite};
use super::session::{self, Shared};
use super::ul::negotiation;
use super::ul::pdu::{self, PduError};

/// Connections over the limit that we answer with A-ASSOCIATE-RJ at the same time.
const MAX_REJECTING: usize = 16;
/// How long a caller past the open slots gets to send its A-ASSOCIATE-RQ before we just close.
const REJECT_READ_TIMEOUT: Duration = Duration::from_secs(5);

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
                        let (rd, wr) = stream.into_split();
                        async move {
                            if let Err(error) = session::run(Box::new(rd) as BoxRead, Box::new(wr) as BoxWrite, peer, shared, token).await {
                                warn!(%error, "association failed");
                            }
                        }
                        .instrument(association_span(peer))
                        .await
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
                            let lookup = tokio::time::timeout(REJECT_READ_TIMEOUT, shared.access.is_registered(&calling, peer.ip()));
                            let registered = matches!(lookup.await, Ok(Ok(true)));
                            match reserved.try_acquire_owned() {
                                Ok(permit) if registered => {
                                    drop(slot);
                                    let _permit = permit;
                                    let (rd, wr) = stream.into_split();
                                    async move {
                                        if let Err(error) = session::run_with_request(Box::new(rd), Box::new(wr), peer, shared, token, rq).await {
                                            warn!(%error, "association failed");
                                        }
                                    }
                                    .instrument(association_span(peer))
                                    .await
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

/// The span every log line of one association carries: the peer's address and, once its
/// request is read, the calling AE title (escaped: a peer chooses it). Never patient data.
fn association_span(peer: SocketAddr) -> tracing::Span {
    tracing::info_span!("association", %peer, calling_ae = tracing::field::Empty)
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
    let reason = if why.contains("host") { "host_limit" } else { "local_limit" };
    metrics::counter!("triage_associations_rejected_total", "reason" => reason).increment(1);
}
