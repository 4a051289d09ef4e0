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
/// How long an over-limit caller gets to send its A-ASSOCIATE-RQ before we just close.
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
        if !self.settings.require_registered_calling_ae {
            return Ok(CallerDecision::Allowed);
        }
        let Some(ae) = self.db.find_ae(calling.trim()).await? else {
            return Ok(CallerDecision::NotRecognized);
        };
        if !ae.enabled {
            return Ok(CallerDecision::NotRecognized);
        }
        match ae.host.as_deref() {
            None | Some("") => Ok(CallerDecision::Allowed),
            Some(host) => Ok(if host_matches(host, peer).await { CallerDecision::Allowed } else { CallerDecision::NotRecognized }),
        }
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
        let permits = Arc::new(Semaphore::new(self.shared.settings.max_associations));
        let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
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
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = self.shared.clone();
                    let token = shutdown.child_token();
                    tracker.spawn(async move {
                        let _permit = permit;
                        if let Err(error) = super::session::run(stream, peer, shared, token).await {
                            warn!(%error, peer = %peer, "association failed");
                        }
                    });
                }
                Err(_) => {
                    if let Ok(slot) = rejecting.clone().try_acquire_owned() {
                        tracker.spawn(async move {
                            let _slot = slot;
                            reject_over_limit(stream, peer).await;
                        });
                    }
                }
            }
        }
        info!("listener stopped accepting");
    }
}

/// Read the caller's A-ASSOCIATE-RQ and answer A-ASSOCIATE-RJ (transient, local limit exceeded).
async fn reject_over_limit(mut stream: TcpStream, peer: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    let read = tokio::time::timeout(REJECT_READ_TIMEOUT, async {
        let header = pdu::read_header(&mut stream).await?.ok_or(PduError::Closed)?;
        pdu::read_control_pdu(&mut stream, header).await
    })
    .await;
    if let Ok(Ok(dicom_ul::pdu::Pdu::AssociationRQ(rq))) = read {
        let rj = dicom_ul::pdu::Pdu::AssociationRJ(negotiation::local_limit_exceeded());
        let _ = stream.write_all(&pdu::encode(&rj)).await;
        let _ = stream.shutdown().await;
        warn!(peer = %peer, calling_ae = %rq.calling_ae_title.trim(), "association rejected: local limit exceeded");
    }
}
