//! One association, from A-ASSOCIATE-RQ to release or abort (PS3.8 state machine, SCP side),
//! and the DIMSE message layer on top of it (PS3.7 section 9: command, then optional data set).
//!
//! P-DATA-TF PDUs are read item by item and data set fragments are streamed straight into the
//! incoming file: memory per association is bounded by a fixed buffer, whatever the instance size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJResult, AssociationRJServiceUserReason, AssociationRJSource, Pdu,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::command::{self, field, status, tag, CommandSet};
use super::negotiation::{self, AcceptedContext, AcceptorPolicy, Negotiated};
use super::pdu::{self, PduError, TYPE_ABORT, TYPE_ASSOCIATE_RQ, TYPE_P_DATA, TYPE_RELEASE_RQ};
use super::server::{AssociationError, Shared};
use super::sop::Service;
use crate::domain::{PeerText, Redacted};
use crate::ingest::spool::IncomingFile;
use crate::ingest::{IngestError, StoreOutcome, StoreRequest};

/// A command set larger than this is not a command set.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
const READ_BUFFER: usize = 256 * 1024;
const CHUNK: usize = 256 * 1024;

pub async fn run(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), AssociationError> {
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let mut wr = wr;
    let artim = shared.settings.artim_timeout;
    let Some(rq) = read_request(&mut rd, &mut wr, artim).await? else {
        return Ok(()); // connected and closed: a port probe
    };
    serve(rd, wr, peer, shared, shutdown, rq).await
}

/// An association whose A-ASSOCIATE-RQ the listener has read already (a registered caller
/// taking a reserved slot).
pub async fn run_with_request(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    rq: dicom_ul::pdu::AssociationRQ,
) -> Result<(), AssociationError> {
    let (rd, wr) = stream.into_split();
    serve(BufReader::with_capacity(READ_BUFFER, rd), wr, peer, shared, shutdown, rq).await
}

/// Sta2: transport open, waiting for A-ASSOCIATE-RQ while ARTIM runs. `None`: closed at once.
async fn read_request(
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    artim: Duration,
) -> Result<Option<dicom_ul::pdu::AssociationRQ>, AssociationError> {
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
            send_abort(wr, AbortRQServiceProviderReason::UnexpectedPdu).await;
            Err(e)
        }
    }
}

async fn serve(
    rd: BufReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    rq: dicom_ul::pdu::AssociationRQ,
) -> Result<(), AssociationError> {

    let calling_ae = rq.calling_ae_title.trim().to_string();
    let decision = match shared.check_caller(&calling_ae, peer.ip()).await {
        Ok(d) => d,
        Err(e) => {
            let rj = negotiation::reject(AssociationRJResult::Transient, AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven));
            let _ = wr.write_all(&pdu::encode(&Pdu::AssociationRJ(rj))).await;
            return Err(AssociationError::AeLookup(e));
        }
    };
    let policy = AcceptorPolicy {
        ae_title: &shared.ae_title,
        ts_preference: &shared.settings.transfer_syntax_preference,
        max_pdu_length: shared.settings.max_pdu_length,
    };
    let negotiated = match negotiation::negotiate(&rq, &policy, decision) {
        Ok(n) => n,
        Err(rj) => {
            wr.write_all(&pdu::encode(&Pdu::AssociationRJ(rj.clone()))).await.map_err(AssociationError::Write)?;
            let _ = wr.shutdown().await;
            warn!(peer = %peer, calling_ae = %PeerText(&calling_ae), called_ae = %PeerText(rq.called_ae_title.trim()), result = ?rj.result, source = ?rj.source, "association rejected");
            return Ok(());
        }
    };
    wr.write_all(&pdu::encode(&Pdu::AssociationAC(negotiated.ac.clone()))).await.map_err(AssociationError::Write)?;
    info!(
        peer = %peer,
        calling_ae = %PeerText(&calling_ae),
        proposed = rq.presentation_contexts.len(),
        accepted = negotiated.contexts.len(),
        peer_max_pdu = negotiated.peer_max_pdu,
        "association accepted"
    );

    let mut session = Session { rd, wr, peer, shared, negotiated, state: Rx::Idle, chunk: vec![0u8; CHUNK], stored: 0, failed: 0 };
    let result = session.serve(shutdown).await;
    session.discard_partial().await;
    info!(peer = %peer, calling_ae = %PeerText(&calling_ae), stored = session.stored, failed = session.failed, "association ended");
    result
}

/// Where the data set of the message in progress goes.
enum Sink {
    Spool { req: StoreRequest, file: IncomingFile },
    /// The request is refused already (e.g. no disk); its bytes are read and dropped.
    Refuse { req: StoreRequest, error: IngestError },
    /// A request we do not perform; answered with Unrecognized Operation.
    Discard,
    /// A storage commitment report (a few KiB), held in memory up to `MAX_REPORT_BYTES`; beyond
    /// that its bytes are dropped and it is answered with Processing Failure.
    Report { bytes: Vec<u8>, too_big: bool },
}

/// The largest N-EVENT-REPORT data set we hold (a report of ~20 000 objects).
const MAX_REPORT_BYTES: usize = 4 << 20;

/// Reassembly state of the DIMSE message being received.
enum Rx {
    Idle,
    Command { pc: u8, bytes: Vec<u8> },
    Data { pc: u8, cmd: CommandSet, sink: Box<Sink> },
}

struct Session {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    peer: SocketAddr,
    shared: Arc<Shared>,
    negotiated: Negotiated,
    state: Rx,
    chunk: Vec<u8>,
    stored: u64,
    failed: u64,
}

impl Session {
    async fn serve(&mut self, shutdown: CancellationToken) -> Result<(), AssociationError> {
        let idle = self.shared.settings.idle_timeout;
        loop {
            // Between messages a shutdown ends the association; inside one, the message finishes.
            let next = if matches!(self.state, Rx::Idle) {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        send_abort_source(&mut self.wr, AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::ReasonNotSpecified)).await;
                        info!(peer = %self.peer, "association aborted: node shutting down");
                        return Ok(());
                    }
                    next = tokio::time::timeout(idle, pdu::read_header(&mut self.rd)) => next,
                }
            } else {
                tokio::time::timeout(idle, pdu::read_header(&mut self.rd)).await
            };
            let header = match next {
                Err(_) => {
                    send_abort(&mut self.wr, AbortRQServiceProviderReason::ReasonNotSpecified).await;
                    return Err(AssociationError::Idle(idle));
                }
                Ok(Ok(Some(h))) => h,
                Ok(Ok(None)) => return Err(AssociationError::Protocol("peer closed the connection without A-RELEASE".into())),
                Ok(Err(e)) => return Err(e.into()),
            };
            match header.pdu_type {
                TYPE_P_DATA => {
                    if header.length > self.shared.settings.max_pdu_length {
                        send_abort(&mut self.wr, AbortRQServiceProviderReason::InvalidPduParameter).await;
                        return Err(PduError::TooLarge { pdu_type: TYPE_P_DATA, length: header.length, limit: self.shared.settings.max_pdu_length }.into());
                    }
                    if let Err(e) = self.read_pdata(header.length).await {
                        match e {
                            AssociationError::Protocol(_) => send_abort(&mut self.wr, AbortRQServiceProviderReason::InvalidPduParameter).await,
                            AssociationError::Idle(_) => send_abort(&mut self.wr, AbortRQServiceProviderReason::ReasonNotSpecified).await,
                            _ => {}
                        }
                        return Err(e);
                    }
                }
                TYPE_RELEASE_RQ => {
                    timed(idle, pdu::read_control_pdu(&mut self.rd, header)).await??;
                    if !matches!(self.state, Rx::Idle) {
                        warn!(peer = %self.peer, "A-RELEASE-RQ in the middle of a message; the partial message is dropped");
                    }
                    self.wr.write_all(&pdu::encode(&Pdu::ReleaseRP)).await.map_err(AssociationError::Write)?;
                    let _ = self.wr.shutdown().await;
                    return Ok(());
                }
                TYPE_ABORT => {
                    let _ = timed(idle, pdu::read_control_pdu(&mut self.rd, header)).await;
                    info!(peer = %self.peer, "association aborted by peer");
                    return Ok(());
                }
                other => {
                    send_abort(&mut self.wr, AbortRQServiceProviderReason::UnexpectedPdu).await;
                    return Err(AssociationError::Protocol(format!("unexpected PDU type {other:#04x} on an established association")));
                }
            }
        }
    }

    /// Walk the PDV items of one P-DATA-TF PDU whose header was just read.
    async fn read_pdata(&mut self, length: u32) -> Result<(), AssociationError> {
        let idle = self.shared.settings.idle_timeout;
        let mut remaining = u64::from(length);
        while remaining > 0 {
            let mut h = [0u8; 6];
            if remaining < 6 {
                return Err(AssociationError::Protocol("P-DATA-TF ends inside a PDV item header".into()));
            }
            read_exact(&mut self.rd, &mut h, idle).await?;
            let item_len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            if item_len < 2 || u64::from(item_len) + 4 > remaining {
                return Err(AssociationError::Protocol(format!("PDV item length {item_len} does not fit its PDU")));
            }
            remaining -= 4 + u64::from(item_len);
            let (pc, control) = (h[4], h[5]);
            self.on_pdv(pc, control & 0x01 != 0, control & 0x02 != 0, (item_len - 2) as usize).await?;
        }
        Ok(())
    }

    async fn on_pdv(&mut self, pc: u8, is_command: bool, last: bool, len: usize) -> Result<(), AssociationError> {
        let idle = self.shared.settings.idle_timeout;
        if is_command {
            if matches!(self.state, Rx::Idle) {
                self.state = Rx::Command { pc, bytes: Vec::new() };
            }
            let Rx::Command { pc: current, bytes } = &mut self.state else {
                return Err(AssociationError::Protocol("command fragment while a data set was expected".into()));
            };
            if *current != pc {
                return Err(AssociationError::Protocol("command fragments on two presentation contexts".into()));
            }
            if bytes.len() + len > MAX_COMMAND_BYTES {
                return Err(AssociationError::Protocol(format!("command set larger than {MAX_COMMAND_BYTES} bytes")));
            }
            let start = bytes.len();
            bytes.resize(start + len, 0);
            read_exact(&mut self.rd, &mut bytes[start..], idle).await?;
            if last {
                let Rx::Command { pc, bytes } = std::mem::replace(&mut self.state, Rx::Idle) else { unreachable!() };
                self.on_command(pc, &bytes).await?;
            }
            return Ok(());
        }

        let Rx::Data { pc: current, sink, .. } = &mut self.state else {
            return Err(AssociationError::Protocol("data set fragment without a command".into()));
        };
        if *current != pc {
            return Err(AssociationError::Protocol("data set fragment on another presentation context than its command".into()));
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(self.chunk.len());
            read_exact(&mut self.rd, &mut self.chunk[..n], idle).await?;
            sink.write(&self.chunk[..n]).await;
            left -= n;
        }
        if last {
            let Rx::Data { pc, cmd, sink } = std::mem::replace(&mut self.state, Rx::Idle) else { unreachable!() };
            self.on_data_set(pc, cmd, *sink).await?;
        }
        Ok(())
    }

    fn context(&self, pc: u8) -> Result<AcceptedContext, AssociationError> {
        self.negotiated
            .contexts
            .iter()
            .find(|c| c.id == pc)
            .cloned()
            .ok_or_else(|| AssociationError::Protocol(format!("message on presentation context {pc}, which was not accepted")))
    }

    async fn on_command(&mut self, pc: u8, bytes: &[u8]) -> Result<(), AssociationError> {
        let ctx = self.context(pc)?;
        let cmd = CommandSet::decode(bytes).map_err(|e| AssociationError::Protocol(format!("command set: {e}")))?;
        let bad = |e: command::CommandError| AssociationError::Protocol(format!("command set: {e}"));
        let command_field = cmd.command_field().map_err(bad)?;
        let has_data = cmd.has_data_set().map_err(bad)?;
        match (command_field, ctx.service, has_data) {
            (field::C_ECHO_RQ, Service::Verification, false) => {
                let rsp = command::response(&cmd, field::C_ECHO_RSP, status::SUCCESS, &ctx.abstract_syntax);
                debug!(peer = %self.peer, "C-ECHO");
                self.send_command(pc, &rsp).await
            }
            (field::C_STORE_RQ, Service::Storage, true) => {
                let req = StoreRequest {
                    sop_class_uid: Redacted(cmd.string(tag::AFFECTED_SOP_CLASS_UID).unwrap_or_default()),
                    sop_instance_uid: Redacted(cmd.string(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default()),
                    transfer_syntax: ctx.transfer_syntax,
                    calling_ae: self.negotiated.calling_ae.clone(),
                };
                let sink = if req.sop_class_uid.0 != ctx.abstract_syntax {
                    Sink::Refuse { req, error: IngestError::NotNegotiated }
                } else if req.sop_instance_uid.0.is_empty() {
                    Sink::Refuse { req, error: IngestError::MissingAttribute("Affected SOP Instance UID (0000,1000) in the request") }
                } else {
                    match self.shared.ingest.begin(&req) {
                        Ok(file) => Sink::Spool { req, file },
                        Err(error) => Sink::Refuse { req, error },
                    }
                };
                self.state = Rx::Data { pc, cmd, sink: Box::new(sink) };
                Ok(())
            }
            (field::N_EVENT_REPORT_RQ, Service::Commitment, true) => {
                self.state = Rx::Data { pc, cmd, sink: Box::new(Sink::Report { bytes: Vec::new(), too_big: false }) };
                Ok(())
            }
            (field::C_CANCEL_RQ, _, _) => Ok(()), // nothing of ours is cancellable
            (_, _, true) => {
                self.state = Rx::Data { pc, cmd, sink: Box::new(Sink::Discard) };
                Ok(())
            }
            (_, _, false) => self.send_unrecognized(pc, &cmd, &ctx).await,
        }
    }

    async fn on_data_set(&mut self, pc: u8, cmd: CommandSet, sink: Sink) -> Result<(), AssociationError> {
        let (req, result) = match sink {
            Sink::Spool { req, file } => {
                let result = self.shared.ingest.complete(&req, file).await;
                (req, result)
            }
            Sink::Refuse { req, error } => (req, Err(error)),
            Sink::Discard => {
                let ctx = self.context(pc)?;
                return self.send_unrecognized(pc, &cmd, &ctx).await;
            }
            Sink::Report { bytes, too_big } => return self.on_commitment_report(pc, &cmd, &bytes, too_big).await,
        };
        let mut rsp = match &result {
            Ok(_) => command::response(&cmd, field::C_STORE_RSP, status::SUCCESS, &req.sop_class_uid.0),
            Err(e) => {
                let mut rsp = command::response(&cmd, field::C_STORE_RSP, e.dimse_status(), &req.sop_class_uid.0);
                rsp.set_text(tag::ERROR_COMMENT, &e.peer_comment(), 64);
                rsp
            }
        };
        rsp.set_uid(tag::AFFECTED_SOP_INSTANCE_UID, &req.sop_instance_uid.0);
        match result {
            Ok(StoreOutcome::Stored { instance_id }) => {
                self.stored += 1;
                debug!(peer = %self.peer, instance_id, "instance stored");
            }
            Ok(StoreOutcome::Duplicate { instance_id }) => {
                self.stored += 1;
                info!(peer = %self.peer, instance_id, "duplicate SOP Instance UID: first copy kept, Success returned");
            }
            Err(error) => {
                self.failed += 1;
                warn!(peer = %self.peer, status = %format_args!("{:#06X}", error.dimse_status()), %error, "C-STORE refused");
            }
        }
        self.send_command(pc, &rsp).await
    }

    /// N-EVENT-REPORT of the Storage Commitment Push Model: record it, answer N-EVENT-REPORT-RSP.
    async fn on_commitment_report(&mut self, pc: u8, cmd: &CommandSet, bytes: &[u8], too_big: bool) -> Result<(), AssociationError> {
        let ctx = self.context(pc)?;
        let event_type = cmd.u16(tag::EVENT_TYPE_ID).unwrap_or(0);
        let status = if too_big {
            warn!(peer = %self.peer, "storage commitment report larger than we hold; refused");
            status::PROCESSING_FAILURE
        } else if !(1..=2).contains(&event_type) {
            0x0113 // No Such Event Type
        } else {
            crate::delivery::commitment::receive(&self.shared.db, &self.negotiated.calling_ae, event_type, bytes, ctx.transfer_syntax.uid).await
        };
        let mut rsp = command::response(cmd, field::N_EVENT_REPORT_RSP, status, &ctx.abstract_syntax);
        rsp.set_uid(tag::AFFECTED_SOP_INSTANCE_UID, &cmd.string(tag::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default());
        if status == status::SUCCESS {
            rsp.set_u16(tag::EVENT_TYPE_ID, event_type);
        }
        self.send_command(pc, &rsp).await
    }

    async fn send_unrecognized(&mut self, pc: u8, cmd: &CommandSet, ctx: &AcceptedContext) -> Result<(), AssociationError> {
        let request_field = cmd.command_field().unwrap_or(0);
        warn!(peer = %self.peer, command_field = %format_args!("{request_field:#06X}"), "unsupported DIMSE request");
        let rsp = command::response(cmd, request_field | 0x8000, status::UNRECOGNIZED_OPERATION, &ctx.abstract_syntax);
        self.send_command(pc, &rsp).await
    }

    async fn send_command(&mut self, pc: u8, cmd: &CommandSet) -> Result<(), AssociationError> {
        let bytes = pdu::encode_pdata(pc, true, &cmd.encode(), self.negotiated.peer_max_pdu);
        self.wr.write_all(&bytes).await.map_err(AssociationError::Write)
    }

    /// Drop the incoming file of a message cut off by abort, release or error: never acknowledged.
    async fn discard_partial(&mut self) {
        if let Rx::Data { sink, .. } = std::mem::replace(&mut self.state, Rx::Idle) {
            if let Sink::Spool { file, .. } = *sink {
                file.discard().await;
            }
        }
    }
}

impl Sink {
    async fn write(&mut self, bytes: &[u8]) {
        if let Sink::Report { bytes: held, too_big } = self {
            if held.len() + bytes.len() > MAX_REPORT_BYTES {
                *too_big = true;
                held.clear();
            } else if !*too_big {
                held.extend_from_slice(bytes);
            }
            return;
        }
        if let Sink::Spool { file, .. } = self {
            if let Err(e) = file.write(bytes).await {
                // Keep reading the peer's bytes, answer Out of Resources at the end.
                let Sink::Spool { req, file } = std::mem::replace(self, Sink::Discard) else { unreachable!() };
                file.discard().await;
                *self = Sink::Refuse { req, error: e.into() };
            }
        }
    }
}

async fn read_exact<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut [u8], idle: Duration) -> Result<(), AssociationError> {
    match tokio::time::timeout(idle, rd.read_exact(buf)).await {
        Err(_) => Err(AssociationError::Idle(idle)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(PduError::Closed.into()),
        Ok(Err(e)) => Err(PduError::Read(e).into()),
    }
}

async fn timed<T>(limit: Duration, f: impl std::future::Future<Output = Result<T, PduError>>) -> Result<Result<T, PduError>, AssociationError> {
    tokio::time::timeout(limit, f).await.map_err(|_| AssociationError::Idle(limit))
}

async fn send_abort(wr: &mut OwnedWriteHalf, reason: AbortRQServiceProviderReason) {
    send_abort_source(wr, AbortRQSource::ServiceProvider(reason)).await;
}

async fn send_abort_source(wr: &mut OwnedWriteHalf, source: AbortRQSource) {
    let _ = wr.write_all(&pdu::encode(&Pdu::AbortRQ { source })).await;
    let _ = wr.shutdown().await;
}
