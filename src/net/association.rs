//! One association on the accepting side, from A-ASSOCIATE-RQ to release or abort (PS3.8
//! state machine, SCP side): negotiation, then each DIMSE request handed to the registered
//! service that performs it (`service::Services`).
//!
//! Generic over its byte stream (TCP today, TLS later): the halves are boxed once, so services
//! see one concrete `Association`. Data sets are streamed through the shared message layer
//! (`dimse::message`), a chunk at a time: memory per association is bounded whatever the
//! instance size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJResult, AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, Pdu,
};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::access::{AccessControl, AccessError};
use super::dimse::command::{self, field, CommandSet};
use super::dimse::{Event, MessageError, MessageReader, MessageWriter};
use super::service::{Request, Services};
use super::ul::negotiation::{self, AcceptedContext, AcceptorPolicy, Negotiated};
use super::ul::pdu::{self, PduError, TYPE_ASSOCIATE_RQ};
use crate::config::DicomSettings;
use crate::dicom::Status;
use crate::domain::{AeTitle, PeerText};

const READ_BUFFER: usize = 256 * 1024;
const CHUNK: usize = 256 * 1024;

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("no A-ASSOCIATE-RQ within the ARTIM timeout of {0:?}")]
    ArtimExpired(Duration),
    #[error("writing to peer: {0}")]
    Write(#[source] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("checking the calling AE: {0}")]
    AeLookup(#[source] AccessError),
    /// The peer released in the middle of a message (the service drops what it received).
    #[error("A-RELEASE-RQ in the middle of a message")]
    ReleasedMidMessage,
    /// The peer aborted (the service drops what it received).
    #[error("association aborted by peer")]
    PeerAborted,
}

impl From<PduError> for AssociationError {
    fn from(e: PduError) -> Self {
        AssociationError::Message(MessageError::Pdu(e))
    }
}

/// What every association task shares.
pub struct Shared {
    pub settings: DicomSettings,
    pub ae_title: AeTitle,
    pub access: Arc<dyn AccessControl>,
    pub services: Services,
}

/// An accepted association, as the services see it.
pub struct Association {
    reader: MessageReader<BufReader<BoxRead>>,
    writer: MessageWriter<BoxWrite>,
    negotiated: Negotiated,
    peer: SocketAddr,
    /// Per service: requests performed, requests refused.
    tally: Vec<(&'static str, u64, u64)>,
}

impl Association {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn calling_ae(&self) -> &str {
        &self.negotiated.calling_ae
    }

    pub fn context(&self, pc: u8) -> Result<&AcceptedContext, AssociationError> {
        self.negotiated
            .contexts
            .iter()
            .find(|c| c.id == pc)
            .ok_or_else(|| AssociationError::Protocol(format!("message on presentation context {pc}, which was not accepted")))
    }

    /// The next piece of the data set of the request being served; `None` once it was read
    /// whole. A release or abort by the peer in the middle of it is an error.
    pub async fn data(&mut self) -> Result<Option<&[u8]>, AssociationError> {
        if self.reader.between_messages() {
            return Ok(None);
        }
        match self.reader.next().await? {
            Event::Data { bytes, .. } => Ok(Some(bytes)),
            Event::ReleaseRq => Err(AssociationError::ReleasedMidMessage),
            Event::Abort => Err(AssociationError::PeerAborted),
            other => Err(AssociationError::Protocol(format!("{other:?} while a data set was expected"))),
        }
    }

    /// Read and drop the rest of the data set of the request being served.
    pub async fn skip_data(&mut self) -> Result<(), AssociationError> {
        while self.data().await?.is_some() {}
        Ok(())
    }

    pub async fn send_command(&mut self, pc: u8, command: &CommandSet) -> Result<(), AssociationError> {
        self.writer.command(pc, command).await.map_err(AssociationError::Write)
    }

    pub async fn send_data(&mut self, pc: u8, bytes: &[u8]) -> Result<(), AssociationError> {
        self.writer.data(pc, bytes).await.map_err(AssociationError::Write)
    }

    /// Count one request of `service` for the association's summary line.
    pub fn tally(&mut self, service: &'static str, performed: bool) {
        let i = match self.tally.iter().position(|(s, ..)| *s == service) {
            Some(i) => i,
            None => {
                self.tally.push((service, 0, 0));
                self.tally.len() - 1
            }
        };
        if performed {
            self.tally[i].1 += 1;
        } else {
            self.tally[i].2 += 1;
        }
    }

    /// How many requests of `service` were performed and refused.
    pub fn counts(&self, service: &str) -> (u64, u64) {
        self.tally.iter().find(|(s, ..)| *s == service).map(|(_, ok, failed)| (*ok, *failed)).unwrap_or((0, 0))
    }

    /// Answer a request no registered service performs, or one a service cannot perform as
    /// sent (PS3.7 C.4.2: Unrecognized Operation).
    pub async fn unrecognized(&mut self, pc: u8, cmd: &CommandSet) -> Result<(), AssociationError> {
        let request_field = cmd.command_field().unwrap_or(0);
        warn!(command_field = %format_args!("{request_field:#06X}"), "unsupported DIMSE request");
        let abstract_syntax = self.context(pc)?.abstract_syntax.clone();
        let rsp = command::response(cmd, request_field | 0x8000, Status::UNRECOGNIZED_OPERATION, &abstract_syntax);
        self.send_command(pc, &rsp).await
    }
}

/// Serve one connection: read the A-ASSOCIATE-RQ (within ARTIM), then the association.
pub async fn run(rd: BoxRead, wr: BoxWrite, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), AssociationError> {
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let mut wr = MessageWriter::new(wr);
    let artim = shared.settings.artim_timeout;
    let Some(rq) = read_request(&mut rd, &mut wr, artim).await? else {
        return Ok(()); // connected and closed: a port probe
    };
    serve(rd, wr, peer, shared, shutdown, rq).await
}

/// An association whose A-ASSOCIATE-RQ the listener has read already (a registered caller
/// taking a reserved slot).
pub async fn run_with_request(rd: BoxRead, wr: BoxWrite, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken, rq: AssociationRQ) -> Result<(), AssociationError> {
    serve(BufReader::with_capacity(READ_BUFFER, rd), MessageWriter::new(wr), peer, shared, shutdown, rq).await
}

/// Sta2: transport open, waiting for A-ASSOCIATE-RQ while ARTIM runs. `None`: closed at once.
async fn read_request(rd: &mut BufReader<BoxRead>, wr: &mut MessageWriter<BoxWrite>, artim: Duration) -> Result<Option<AssociationRQ>, AssociationError> {
    let rq = tokio::time::timeout(artim, async {
        let Some(header) = pdu::read_header(&mut *rd).await? else { return Ok(None) };
        if header.pdu_type != TYPE_ASSOCIATE_RQ {
            return Err(AssociationError::Protocol(format!("expected A-ASSOCIATE-RQ, got PDU type {:#04x}", header.pdu_type)));
        }
        match pdu::read_control_pdu(&mut *rd, header).await? {
            Pdu::AssociationRQ(rq) => Ok(Some(rq)),
            other => Err(AssociationError::Protocol(format!("expected A-ASSOCIATE-RQ, got {}", other.short_description()))),
        }
    })
    .await;
    match rq {
        Err(_) => Err(AssociationError::ArtimExpired(artim)),
        Ok(Ok(rq)) => Ok(rq),
        Ok(Err(e)) => {
            wr.abort(AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu)).await;
            Err(e)
        }
    }
}

async fn serve(
    rd: BufReader<BoxRead>,
    mut wr: MessageWriter<BoxWrite>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    rq: AssociationRQ,
) -> Result<(), AssociationError> {
    let calling_ae = rq.calling_ae_title.trim().to_string();
    tracing::Span::current().record("calling_ae", tracing::field::display(PeerText(&calling_ae)));
    let decision = match shared.access.check_caller(&calling_ae, peer.ip()).await {
        Ok(d) => d,
        Err(e) => {
            let rj = negotiation::reject(AssociationRJResult::Transient, AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven));
            let _ = wr.pdu(&Pdu::AssociationRJ(rj)).await;
            return Err(AssociationError::AeLookup(e));
        }
    };
    let sop_classes = shared.services.sop_classes();
    let policy = AcceptorPolicy {
        ae_title: &shared.ae_title,
        sop_classes: &sop_classes,
        ts_preference: &shared.settings.transfer_syntax_preference,
        max_pdu_length: shared.settings.max_pdu_length,
    };
    let negotiated = match negotiation::negotiate(&rq, &policy, decision) {
        Ok(n) => n,
        Err(rj) => {
            wr.pdu(&Pdu::AssociationRJ(rj.clone())).await.map_err(AssociationError::Write)?;
            wr.shutdown().await;
            warn!(called_ae = %PeerText(rq.called_ae_title.trim()), result = ?rj.result, source = ?rj.source, "association rejected");
            return Ok(());
        }
    };
    wr.pdu(&Pdu::AssociationAC(negotiated.ac.clone())).await.map_err(AssociationError::Write)?;
    wr.set_peer_max_pdu(negotiated.peer_max_pdu);
    info!(proposed = rq.presentation_contexts.len(), accepted = negotiated.contexts.len(), peer_max_pdu = negotiated.peer_max_pdu, "association accepted");

    let reader = MessageReader::new(rd, shared.settings.idle_timeout, shared.settings.max_pdu_length, CHUNK, "");
    let mut association = Association { reader, writer: wr, negotiated, peer, tally: Vec::new() };
    let result = association.serve(&shared.services, shutdown).await;
    let summary: Vec<String> = association.tally.iter().map(|(s, ok, failed)| format!("{s} {ok} performed, {failed} refused")).collect();
    let (stored, failed) = association.counts("store");
    info!(stored, failed, services = %summary.join("; "), "association ended");
    result
}

impl Association {
    async fn serve(&mut self, services: &Services, shutdown: CancellationToken) -> Result<(), AssociationError> {
        loop {
            // Between messages a shutdown ends the association; inside one, the message finishes
            // (services read their message whole before returning here).
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.writer.abort(AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::ReasonNotSpecified)).await;
                    info!("association aborted: node shutting down");
                    return Ok(());
                }
                event = self.reader.next() => event,
            };
            let (pc, command) = match event {
                Ok(Event::Command { pc, command }) => (pc, command),
                Ok(Event::ReleaseRq) => return self.release().await,
                Ok(Event::Abort) => {
                    info!("association aborted by peer");
                    return Ok(());
                }
                Ok(other) => {
                    self.writer.abort(AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu)).await;
                    return Err(AssociationError::Protocol(format!("unexpected {other:?} between messages")));
                }
                Err(e) => return Err(self.fail(e.into()).await),
            };
            match self.dispatch(services, pc, command).await {
                Ok(()) => {}
                Err(AssociationError::ReleasedMidMessage) => {
                    warn!("A-RELEASE-RQ in the middle of a message; the partial message is dropped");
                    return self.release().await;
                }
                Err(AssociationError::PeerAborted) => {
                    info!("association aborted by peer");
                    return Ok(());
                }
                Err(e) => return Err(self.fail(e).await),
            }
        }
    }

    async fn dispatch(&mut self, services: &Services, pc: u8, command: CommandSet) -> Result<(), AssociationError> {
        let context = self.context(pc)?.clone();
        let bad = |e: command::CommandError| AssociationError::Protocol(format!("command set: {e}"));
        let command_field = command.command_field().map_err(bad)?;
        let has_data = command.has_data_set().map_err(bad)?;
        match services.find(command_field, &context.abstract_syntax) {
            Some(service) => {
                service.serve(self, Request { pc, context, command, has_data }).await?;
                // A service reads its data set whole; should one not, the rest is dropped here.
                self.skip_data().await
            }
            // Nothing a registered service started is cancellable after it answered.
            None if command_field == field::C_CANCEL_RQ => self.skip_data().await,
            None => {
                self.skip_data().await?;
                self.unrecognized(pc, &command).await
            }
        }
    }

    async fn release(&mut self) -> Result<(), AssociationError> {
        self.writer.pdu(&Pdu::ReleaseRP).await.map_err(AssociationError::Write)?;
        self.writer.shutdown().await;
        Ok(())
    }

    /// Send the A-ABORT an error calls for (PS3.8 9.3.8), and return the error.
    async fn fail(&mut self, e: AssociationError) -> AssociationError {
        let reason = match &e {
            AssociationError::Message(m) => m.abort_reason(),
            AssociationError::Protocol(_) => Some(AbortRQServiceProviderReason::InvalidPduParameter),
            _ => None,
        };
        if let Some(reason) = reason {
            self.writer.abort(AbortRQSource::ServiceProvider(reason)).await;
        }
        e
    }
}
