//! The listener: accepts TCP connections on the plain port and the TLS port (the handshake,
//! within ARTIM, in the connection's own task), enforces the association limits across both,
//! and runs each association as its own task under one shutdown token.
//!
//! The issue asks for an explicit A-ASSOCIATE-RJ "local limit exceeded" past the limit, so we
//! accept first and then try for a permit; callers over the limit get the rejection from a
//! small, separately bounded pool of rejecting tasks (past that, the socket is just closed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use tracing::Instrument;

use super::access::Channel;
use super::association::Transport;
use super::session::{self, Shared};
use super::tls;
use super::ul::negotiation;
use super::ul::pdu::{self, PduError};
use crate::domain::HostCounts;

/// Connections over the limit that we answer with A-ASSOCIATE-RJ at the same time.
const MAX_REJECTING: usize = 16;
/// How long a caller past the open slots gets to send its A-ASSOCIATE-RQ before we just close.
const REJECT_READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Listener {
    /// The plain port, unless TLS only.
    plain: Option<TcpListener>,
    /// The TLS port and its handshake, when enabled.
    tls: Option<(TcpListener, TlsAcceptor)>,
    shared: Arc<Shared>,
}

/// A connection just accepted, before its TLS handshake (if it came to the TLS port).
struct Incoming {
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    /// ARTIM runs from the accept: the handshake and the A-ASSOCIATE-RQ both fit in it.
    deadline: Instant,
}

impl Incoming {
    /// The byte stream the association runs on: the TCP socket, or the TLS session once its
    /// handshake is done within ARTIM. A failed or late handshake is logged and counted.
    async fn open(self) -> Option<Transport> {
        let Some(acceptor) = self.tls else {
            let (rd, wr) = self.stream.into_split();
            return Some(Transport { rd: Box::new(rd), wr: Box::new(wr), tls: false, certificate: None, deadline: self.deadline });
        };
        match tokio::time::timeout_at(self.deadline, acceptor.accept(self.stream)).await {
            Ok(Ok(stream)) => {
                let certificate = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
                let (rd, wr) = tls::split(stream);
                Some(Transport { rd, wr, tls: true, certificate, deadline: self.deadline })
            }
            Ok(Err(error)) => {
                // rustls's reasons name certificates and alerts, never anything a peer chose freely.
                warn!(peer = %self.peer, %error, "TLS handshake failed");
                metrics::counter!("triage_associations_rejected_total", "reason" => "tls_handshake").increment(1);
                None
            }
            Err(_) => {
                warn!(peer = %self.peer, "TLS handshake not finished within the ARTIM timeout");
                metrics::counter!("triage_associations_rejected_total", "reason" => "tls_handshake").increment(1);
                None
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Listener {
    /// Bind the plain port (unless TLS only) and, with `tls`, the TLS port.
    pub async fn bind(shared: Arc<Shared>, tls: Option<TlsAcceptor>) -> std::io::Result<Listener> {
        let settings = &shared.settings;
        let plain = if tls.is_none() || settings.tls.plain_port { Some(TcpListener::bind(SocketAddr::new(settings.bind, settings.port)).await?) } else { None };
        let tls = match tls {
            Some(acceptor) => Some((TcpListener::bind(SocketAddr::new(settings.bind, settings.tls.port)).await?, acceptor)),
            None => None,
        };
        Ok(Listener { plain, tls, shared })
    }

    /// The plain port's address, if it is open.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The TLS port's address, if it is open.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Accept until `shutdown`; association tasks are spawned on `tracker` with child tokens.
    /// Both ports share the limits.
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
        let artim = settings.artim_timeout;
        loop {
            let (accepted, tls) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = accept(self.plain.as_ref()) => (accepted, None),
                accepted = accept(self.tls.as_ref().map(|(l, _)| l)) => (accepted, self.tls.as_ref().map(|(_, a)| a.clone())),
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
            let incoming = Incoming { stream, peer, tls, deadline: Instant::now() + artim };
            // Every connection counts against its host from accept to close, so one host (a
            // broken peer, or sockets opened and left silent) cannot hold every slot.
            let Some(host_slot) = hosts.clone().take(peer.ip(), self.shared.settings.max_associations_per_host) else {
                if let Ok(slot) = over_host.clone().try_acquire_owned() {
                    tracker.spawn(async move {
                        let _slot = slot;
                        let Some(mut transport) = incoming.open().await else { return };
                        if let Some(rq) = read_request_briefly(&mut transport).await {
                            reject_over_limit(&mut transport, peer, &rq, "too many associations from this host").await;
                        }
                    });
                }
                continue;
            };
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = self.shared.clone();
                    let token = shutdown.child_token();
                    tracker.spawn(
                        async move {
                            let _permit = permit;
                            let _host = host_slot;
                            let Some(transport) = incoming.open().await else { return };
                            if let Err(error) = session::run(transport, peer, shared, token).await {
                                warn!(%error, "association failed");
                            }
                        }
                        .instrument(association_span(peer)),
                    );
                }
                Err(_) => {
                    // The open slots are taken: a registered caller may still have one of the
                    // slots kept for registered AEs, once its request shows who it is.
                    if let Ok(slot) = rejecting.clone().try_acquire_owned() {
                        let (shared, reserved, token) = (self.shared.clone(), reserved.clone(), shutdown.child_token());
                        tracker.spawn(
                            async move {
                                let _host = host_slot;
                                let Some(mut transport) = incoming.open().await else { return };
                                let Some(rq) = read_request_briefly(&mut transport).await else { return };
                                let calling = rq.calling_ae_title.trim().to_string();
                                let lookup = tokio::time::timeout(
                                    REJECT_READ_TIMEOUT,
                                    shared.access.is_registered(
                                        &calling,
                                        peer.ip(),
                                        Channel { tls: transport.tls, certificate: transport.certificate.as_deref() },
                                    ),
                                );
                                let registered = matches!(lookup.await, Ok(Ok(true)));
                                match reserved.try_acquire_owned() {
                                    Ok(permit) if registered => {
                                        drop(slot);
                                        let _permit = permit;
                                        if let Err(error) = session::run_with_request(transport, peer, shared, token, rq).await {
                                            warn!(%error, "association failed");
                                        }
                                    }
                                    _ => reject_over_limit(&mut transport, peer, &rq, "local limit exceeded").await,
                                }
                            }
                            .instrument(association_span(peer)),
                        );
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

/// The caller's A-ASSOCIATE-RQ, if it sends one within `REJECT_READ_TIMEOUT` (and ARTIM).
async fn read_request_briefly(transport: &mut Transport) -> Option<dicom_ul::pdu::AssociationRQ> {
    let deadline = transport.deadline.min(Instant::now() + REJECT_READ_TIMEOUT);
    let read = tokio::time::timeout_at(deadline, async {
        let header = pdu::read_header(&mut transport.rd).await?.ok_or(PduError::Closed)?;
        pdu::read_control_pdu(&mut transport.rd, header).await
    })
    .await;
    match read {
        Ok(Ok(dicom_ul::pdu::Pdu::AssociationRQ(rq))) => Some(rq),
        _ => None,
    }
}

/// Answer A-ASSOCIATE-RJ (transient, local limit exceeded).
async fn reject_over_limit(transport: &mut Transport, peer: SocketAddr, rq: &dicom_ul::pdu::AssociationRQ, why: &str) {
    use tokio::io::AsyncWriteExt;
    let rj = dicom_ul::pdu::Pdu::AssociationRJ(negotiation::local_limit_exceeded());
    let _ = transport.wr.write_all(&pdu::encode(&rj)).await;
    let _ = transport.wr.shutdown().await;
    warn!(peer = %peer, calling_ae = %crate::domain::PeerText(rq.calling_ae_title.trim()), "association rejected: {why}");
    let reason = if why.contains("host") { "host_limit" } else { "local_limit" };
    metrics::counter!("triage_associations_rejected_total", "reason" => reason).increment(1);
}
