//! An accepted association as the services see it: its negotiated contexts, the data set of
//! the request being served (streamed through the shared message layer, `dimse::message`, a
//! chunk at a time, so memory per association is bounded whatever the instance size), and the
//! means to answer. The state machine that drives it is `session`'s.
//!
//! Generic over its byte stream (TCP today, TLS later): the halves are boxed once, so services
//! see one concrete `Association`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tracing::warn;

use super::access::AccessError;
use super::dimse::command::{self, CommandSet};
use super::dimse::{Event, MessageError, MessageReader, MessageWriter};
use super::ul::negotiation::{AcceptedContext, Negotiated};
use super::ul::pdu::PduError;
use crate::dicom::Status;

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
