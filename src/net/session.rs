//! One association on the accepting side, from A-ASSOCIATE-RQ to release or abort (PS3.8
//! state machine, SCP side): negotiation, then each DIMSE request handed to the registered
//! service that performs it (`service::Services`). The session names no service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJResult, AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, Pdu,
};
use tokio::io::BufReader;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::access::{AccessControl, Channel};
use super::association::{with_write_timeout, Association, AssociationError, BoxRead, BoxWrite, Transport};
use super::dimse::command::{self, field, CommandSet};
use super::dimse::{Event, MessageReader, MessageWriter};
use super::service::{Request, Services};
use super::settings::DicomSettings;
use super::ul::negotiation::{self, AcceptorPolicy};
use super::ul::pdu::{self, TYPE_ASSOCIATE_RQ};
use crate::domain::{AeTitle, PeerText};

const READ_BUFFER: usize = 256 * 1024;
const CHUNK: usize = 256 * 1024;

/// What every association task shares.
pub struct Shared {
    pub settings: DicomSettings,
    pub ae_title: AeTitle,
    pub access: Arc<dyn AccessControl>,
    pub services: Services,
}

/// Serve one connection: read the A-ASSOCIATE-RQ (within ARTIM), then the association.
pub async fn run(transport: Transport, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), AssociationError> {
    let Transport { rd, wr, tls, certificate, deadline } = transport;
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    // A caller that stops reading (a C-FIND's responses, a C-GET's sub-operations) fails the
    // association after the idle timeout instead of holding its task.
    let mut wr = MessageWriter::new(with_write_timeout(wr, shared.settings.idle_timeout));
    let Some(rq) = read_request(&mut rd, &mut wr, deadline, shared.settings.artim_timeout).await? else {
        return Ok(()); // connected and closed: a port probe
    };
    serve(rd, wr, Channel { tls, certificate: certificate.as_deref() }, peer, shared, shutdown, rq).await
}

/// An association whose A-ASSOCIATE-RQ the listener has read already (a registered caller
/// taking a reserved slot).
pub async fn run_with_request(
    transport: Transport,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    rq: AssociationRQ,
) -> Result<(), AssociationError> {
    let channel = Channel { tls: transport.tls, certificate: transport.certificate.as_deref() };
    let wr = MessageWriter::new(with_write_timeout(transport.wr, shared.settings.idle_timeout));
    serve(BufReader::with_capacity(READ_BUFFER, transport.rd), wr, channel, peer, shared, shutdown, rq).await
}

/// Sta2: transport open, waiting for A-ASSOCIATE-RQ until ARTIM expires at `deadline`
/// (`artim` is its length, for the error). `None`: closed at once.
async fn read_request(
    rd: &mut BufReader<BoxRead>,
    wr: &mut MessageWriter<BoxWrite>,
    deadline: tokio::time::Instant,
    artim: Duration,
) -> Result<Option<AssociationRQ>, AssociationError> {
    let rq = tokio::time::timeout_at(deadline, async {
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
    channel: Channel<'_>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    rq: AssociationRQ,
) -> Result<(), AssociationError> {
    let calling_ae = rq.calling_ae_title.trim().to_string();
    tracing::Span::current().record("calling_ae", tracing::field::display(PeerText(&calling_ae)));
    let decision = match shared.access.check_caller(&calling_ae, peer.ip(), channel).await {
        Ok(d) => d,
        Err(e) => {
            let rj = negotiation::reject(AssociationRJResult::Transient, AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven));
            let _ = wr.pdu(&Pdu::AssociationRJ(rj)).await;
            return Err(AssociationError::AeLookup(e));
        }
    };
    let policy = AcceptorPolicy {
        ae_title: &shared.ae_title,
        offers: shared.services.offers(),
        ts_preference: &shared.settings.transfer_syntax_preference,
        max_pdu_length: shared.settings.max_pdu_length,
    };
    let negotiated = match negotiation::negotiate(&rq, &policy, decision) {
        Ok(n) => n,
        Err(rj) => {
            wr.pdu(&Pdu::AssociationRJ(rj.clone())).await.map_err(AssociationError::Write)?;
            wr.shutdown().await;
            warn!(called_ae = %PeerText(rq.called_ae_title.trim()), result = ?rj.result, source = ?rj.source, "association rejected");
            metrics::counter!("triage_associations_rejected_total", "reason" => reject_reason(&rj.source)).increment(1);
            return Ok(());
        }
    };
    wr.pdu(&Pdu::AssociationAC(negotiated.ac.clone())).await.map_err(AssociationError::Write)?;
    let _open = OpenAssociation::counted();
    wr.set_peer_max_pdu(negotiated.peer_max_pdu);
    info!(proposed = rq.presentation_contexts.len(), accepted = negotiated.contexts.len(), peer_max_pdu = negotiated.peer_max_pdu, "association accepted");

    let reader = MessageReader::new(rd, shared.settings.idle_timeout, shared.settings.max_pdu_length, CHUNK, "");
    let mut association = Association { reader, writer: wr, negotiated, peer, tally: Vec::new() };
    let result = association.serve(&shared.services, shutdown).await;
    let summary: Vec<String> = association.tally.iter().map(|(s, ok, failed)| format!("{s} {ok} performed, {failed} refused")).collect();
    let (performed, refused) = association.tally.iter().fold((0, 0), |(p, r), (_, ok, failed)| (p + ok, r + failed));
    info!(performed, refused, services = %summary.join("; "), "association ended");
    result
}

impl Association {
    async fn serve(&mut self, services: &Services, shutdown: CancellationToken) -> Result<(), AssociationError> {
        loop {
            // Between messages a shutdown ends the association; inside one, the message finishes
            // (services read their message whole before returning here). A command set spread
            // over several PDUs that is still arriving is cut off (nothing of it was answered).
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
        match services.find(command_field, &context) {
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

/// Counts an established association in `triage_associations_open` while it lives.
struct OpenAssociation;

impl OpenAssociation {
    fn counted() -> OpenAssociation {
        metrics::gauge!("triage_associations_open").increment(1.0);
        metrics::counter!("triage_associations_accepted_total").increment(1);
        OpenAssociation
    }
}

impl Drop for OpenAssociation {
    fn drop(&mut self) {
        metrics::gauge!("triage_associations_open").decrement(1.0);
    }
}

/// A rejection's PS3.8 source and reason as a metrics label (`service_user:calling_ae_title_not_recognized`).
fn reject_reason(source: &AssociationRJSource) -> String {
    let text = format!("{source:?}");
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        match c {
            '(' => out.push(':'),
            ')' => {}
            c if c.is_ascii_uppercase() => {
                if i > 0 && !out.ends_with(':') {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            c => out.push(c),
        }
    }
    out
}
