//! An accepted association as the services see it: its negotiated contexts, the data set of
//! the request being served (streamed through the shared message layer, `dimse::message`, a
//! chunk at a time, so memory per association is bounded whatever the instance size), and the
//! means to answer. The state machine that drives it is `session`'s.
//!
//! Generic over its byte stream (TCP today, TLS later): the halves are boxed once, so services
//! see one concrete `Association`.

use std::net::SocketAddr;
use std::time::Duration;

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tracing::warn;

use super::access::AccessError;
use super::dimse::command::{self, CommandSet};
use super::dimse::message::SendError;
use super::dimse::{Event, MessageError, MessageReader, MessageWriter};
use super::ul::negotiation::{AcceptedContext, Negotiated};
use super::ul::pdu::{PduError, TYPE_RELEASE_RP};
use crate::dicom::Status;

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A writer that fails with `TimedOut` once the peer has taken no byte for `timeout` (a peer
/// that stops reading must not hold a task for ever); any progress restarts the clock, so a
/// large data set may take as long as it needs while the peer keeps reading.
pub struct WriteTimeout<W> {
    inner: W,
    timeout: Duration,
    /// Running while the inner writer is not ready.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<W> WriteTimeout<W> {
    pub fn new(inner: W, timeout: Duration) -> WriteTimeout<W> {
        WriteTimeout { inner, timeout, stalled: None }
    }

    /// After the inner writer said Pending: Pending, or the error once the peer has taken
    /// nothing for `timeout`.
    fn stall<T>(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                self.stalled = None;
                std::task::Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the peer took nothing for {timeout:?}"))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn progressed<T>(&mut self, ready: std::io::Result<T>) -> std::task::Poll<std::io::Result<T>> {
        self.stalled = None;
        std::task::Poll::Ready(ready)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<W> {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(r) => this.progressed(r),
            std::task::Poll::Pending => this.stall(cx),
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            std::task::Poll::Ready(r) => this.progressed(r),
            std::task::Poll::Pending => this.stall(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Ready(r) => this.progressed(r),
            std::task::Poll::Pending => this.stall(cx),
        }
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_shutdown(cx) {
            std::task::Poll::Ready(r) => this.progressed(r),
            std::task::Poll::Pending => this.stall(cx),
        }
    }
}

/// `wr` with a write timeout (`WriteTimeout`), boxed again.
pub fn with_write_timeout(wr: BoxWrite, timeout: Duration) -> BoxWrite {
    Box::new(WriteTimeout::new(wr, timeout))
}

/// An open connection's halves, and what the association needs to know of its transport.
pub struct Transport {
    pub rd: BoxRead,
    pub wr: BoxWrite,
    /// Came over TLS (a calling AE registered as TLS is refused otherwise).
    pub tls: bool,
    /// The leaf certificate the caller showed in the TLS handshake (DER; checked against the
    /// site's client CA by then): what an AE title bound to a certificate identity must match.
    pub certificate: Option<Vec<u8>>,
    /// When ARTIM expires for the A-ASSOCIATE-RQ.
    pub deadline: tokio::time::Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("no A-ASSOCIATE-RQ within the ARTIM timeout of {0:?}")]
    ArtimExpired(Duration),
    #[error("writing to peer: {0}")]
    Write(std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("checking the calling AE: {0}")]
    AeLookup(AccessError),
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

/// An accepted association, as the services see it.
pub struct Association {
    pub(super) reader: MessageReader<BufReader<BoxRead>>,
    pub(super) writer: MessageWriter<BoxWrite>,
    pub(super) negotiated: Negotiated,
    pub(super) peer: SocketAddr,
    /// Per service: requests performed, requests refused.
    pub(super) tally: Vec<(&'static str, u64, u64)>,
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
            Event::ReleaseRp => Err(MessageError::UnexpectedPdu(TYPE_RELEASE_RP).into()),
            other => Err(AssociationError::Protocol(format!("{other:?} while a data set was expected"))),
        }
    }

    /// The whole data set of the request being served, held in memory up to `max` bytes; beyond
    /// that the rest is read and dropped, and `None` is returned (the caller refuses it).
    pub async fn data_within(&mut self, max: usize) -> Result<Option<Vec<u8>>, AssociationError> {
        let (mut bytes, mut too_big) = (Vec::new(), false);
        while let Some(piece) = self.data().await? {
            if bytes.len() + piece.len() > max {
                too_big = true;
                bytes = Vec::new();
            } else if !too_big {
                bytes.extend_from_slice(piece);
            }
        }
        Ok((!too_big).then_some(bytes))
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

    /// Stream `len` data set bytes from `source` (a sub-operation's instance, a PDU at a time).
    pub async fn send_data_from<S: AsyncRead + Unpin>(&mut self, pc: u8, source: S, len: u64, pad_odd: bool) -> Result<(), AssociationError> {
        self.writer.data_from(pc, source, len, pad_odd).await.map_err(|e| match e {
            SendError::Write(e) => AssociationError::Write(e),
            SendError::Source(e) => AssociationError::Protocol(format!("reading the data set to send: {e}")),
        })
    }

    /// The accepted context for `abstract_syntax` (in `transfer_syntax`, if given): where a
    /// service sends a sub-operation.
    pub fn context_for(&self, abstract_syntax: &str, transfer_syntax: Option<&str>) -> Option<&AcceptedContext> {
        self.negotiated.contexts.iter().find(|c| c.abstract_syntax == abstract_syntax && transfer_syntax.is_none_or(|ts| c.transfer_syntax.uid == ts))
    }

    /// The next message's command, for a service that waits on the association it serves (the
    /// response to a sub-operation it sent, or a C-CANCEL). Its data set, if any, follows
    /// through `data`.
    pub async fn next_command(&mut self) -> Result<(u8, CommandSet), AssociationError> {
        match self.reader.next().await? {
            Event::Command { pc, command } => {
                self.context(pc)?;
                Ok((pc, command))
            }
            Event::ReleaseRq => Err(AssociationError::ReleasedMidMessage),
            Event::Abort => Err(AssociationError::PeerAborted),
            Event::ReleaseRp => Err(MessageError::UnexpectedPdu(TYPE_RELEASE_RP).into()),
            other => Err(AssociationError::Protocol(format!("{other:?} while a command was expected"))),
        }
    }

    /// Whether the peer cancelled request `message_id` (PS3.7 9.3.2.3: a C-CANCEL-RQ naming it),
    /// without waiting: a service streaming responses asks between two of them. Any other
    /// request while one is being answered breaks the association's rules (one outstanding
    /// operation): an error.
    pub async fn cancelled(&mut self, message_id: u16) -> Result<bool, AssociationError> {
        if !self.reader.input_ready().await {
            return Ok(false);
        }
        let (_, cmd) = self.next_command().await?;
        self.is_cancel_of(&cmd, message_id).await
    }

    /// Whether `cmd`, read while request `message_id` is being answered, is its C-CANCEL-RQ
    /// (its data set, should it announce one, is dropped); another request is an error.
    pub async fn is_cancel_of(&mut self, cmd: &CommandSet, message_id: u16) -> Result<bool, AssociationError> {
        if cmd.command_field().ok() != Some(command::field::C_CANCEL_RQ) {
            return Err(AssociationError::Protocol(format!(
                "command {:#06X} while request {message_id} is being answered (one operation at a time)",
                cmd.command_field().unwrap_or(0)
            )));
        }
        self.skip_data().await?;
        Ok(cmd.u16(command::tag::MESSAGE_ID_BEING_RESPONDED_TO).ok() == Some(message_id))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::sop;
    use crate::net::dimse::command::{field, tag};
    use crate::net::ul::negotiation::AcceptedContext;

    /// An association over an in-memory stream, as a service sees it, and the peer's end.
    fn association() -> (Association, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (rd, wr) = tokio::io::split(ours);
        let ctx = AcceptedContext {
            id: 3,
            abstract_syntax: sop::SOP_CLASSES[1].uid.to_string(),
            transfer_syntax: sop::transfer_syntax(crate::dicom::uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap(),
            service: sop::SOP_CLASSES[1].service,
            caller_is_scp: false,
        };
        let ac = dicom_ul::pdu::AssociationAC {
            protocol_version: 1,
            calling_ae_title: "PEER".into(),
            called_ae_title: "US".into(),
            application_context_name: String::new(),
            presentation_contexts: vec![],
            user_variables: vec![],
        };
        let negotiated = Negotiated { calling_ae: "PEER".into(), contexts: vec![ctx], peer_max_pdu: 4096, ac };
        let reader = MessageReader::new(BufReader::new(Box::new(rd) as BoxRead), Duration::from_secs(5), 1 << 16, 1024, "");
        let mut writer = MessageWriter::new(Box::new(wr) as BoxWrite);
        writer.set_peer_max_pdu(4096);
        let peer = "127.0.0.1:104".parse().unwrap();
        (Association { reader, writer, negotiated, peer, tally: Vec::new() }, theirs)
    }

    /// A service can send a sub-operation (a C-STORE-RQ and its data set) on the association it
    /// serves and read the peer's response on it: what C-GET needs.
    #[tokio::test]
    async fn a_service_sends_a_sub_operation_and_reads_its_response() {
        let (mut assoc, theirs) = association();
        let class = assoc.negotiated.contexts[0].abstract_syntax.clone();
        let (peer_rd, peer_wr) = tokio::io::split(theirs);
        let peer = tokio::spawn(async move {
            // The peer: read the sub-operation whole, answer Success.
            let mut rd = MessageReader::new(peer_rd, Duration::from_secs(5), 1 << 16, 1024, "");
            let mut wr = MessageWriter::new(peer_wr);
            let Event::Command { pc, command } = rd.next().await.unwrap() else { panic!("no command") };
            let mut data = Vec::new();
            while !rd.between_messages() {
                if let Event::Data { bytes, .. } = rd.next().await.unwrap() {
                    data.extend_from_slice(bytes);
                }
            }
            let rsp = command::response(&command, field::C_STORE_RSP, Status::SUCCESS, &command.string(tag::AFFECTED_SOP_CLASS_UID).unwrap());
            wr.command(pc, &rsp).await.unwrap();
            data
        });
        let pc = assoc.context_for(&class, None).unwrap().id;
        let mut rq = CommandSet::default();
        rq.set_uid(tag::AFFECTED_SOP_CLASS_UID, &class)
            .set_u16(tag::COMMAND_FIELD, field::C_STORE_RQ)
            .set_u16(tag::MESSAGE_ID, 9)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, 0);
        assoc.send_command(pc, &rq).await.unwrap();
        let payload = vec![7u8; 10_000];
        assoc.send_data_from(pc, &payload[..], payload.len() as u64, false).await.unwrap();
        let (rsp_pc, rsp) = assoc.next_command().await.unwrap();
        assert_eq!(
            (rsp_pc, rsp.command_field(), rsp.status(), rsp.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO)),
            (pc, Ok(field::C_STORE_RSP), Ok(Status::SUCCESS), Ok(9))
        );
        assert!(assoc.data().await.unwrap().is_none(), "a response without a data set has none");
        assert_eq!(peer.await.unwrap(), payload);
    }

    /// A peer that stops reading: the write fails after the timeout instead of hanging; one
    /// that reads slowly keeps the write going.
    #[tokio::test]
    async fn a_write_to_a_peer_that_stopped_reading_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, theirs) = tokio::io::duplex(1024);
        let mut wr = WriteTimeout::new(ours, Duration::from_millis(200));
        let big = vec![0u8; 64 * 1024];
        let started = std::time::Instant::now();
        let err = wr.write_all(&big).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        // A reader taking a little at a time, slower than the timeout in all: no error.
        let (ours, mut slow) = tokio::io::duplex(1024);
        let mut wr = WriteTimeout::new(ours, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut total = 0;
            while total < 8 * 1024 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += slow.read(&mut buf).await.unwrap();
            }
        });
        wr.write_all(&vec![1u8; 8 * 1024]).await.unwrap();
        reader.await.unwrap();
        drop(theirs);
    }
}
