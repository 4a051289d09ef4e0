//! The association requestor (SCU side): C-ECHO, C-STORE, Storage Commitment N-ACTION and
//! N-CREATE (UPS Push) to a remote AE, sending Part 10 files exactly as stored (one
//! presentation context per SOP class and transfer syntax, no transcoding), streamed from disk in PDUs within the peer's maximum length. Every read and
//! every write is bounded by the peer's timeout (a write by the time the peer took no byte).
//!
//! Owns: A-ASSOCIATE-RQ/AC/RJ on the requesting side, DIMSE requests and their responses.
//! Must not: decide what to send or when (callers do), or log identifying values.

use std::path::Path;
use std::time::Duration;

use dicom_ul::pdu::{AssociationRJ, AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason, UserVariableItem};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use super::association::{BoxRead, BoxWrite};
use super::dimse::command::{self, field, tag, CommandSet};
use super::dimse::message::SendError;
use super::dimse::{Event, MessageError, MessageReader, MessageWriter};
use super::tls::Connector;
use super::ul::negotiation::APPLICATION_CONTEXT;
use super::ul::pdu::{self, PduError};
use crate::dicom::part10::{self, Part10, Part10Error, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use crate::dicom::uids::{
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN as DEFLATED_LE, EXPLICIT_VR_LITTLE_ENDIAN as EXPLICIT_LE, IMPLICIT_VR_LITTLE_ENDIAN as IMPLICIT_LE, VERIFICATION,
};
use crate::dicom::Status;
use crate::domain::AeTitle;

/// Largest PDU we accept from the peer (responses are small).
const OUR_MAX_PDU: u32 = 65536;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS handshake with {addr}: {cause}")]
    Tls { addr: String, cause: std::io::Error },
    #[error("connecting to {addr}: {cause}")]
    Connect { addr: String, cause: std::io::Error },
    #[error("no answer from the peer within {0:?}")]
    Timeout(Duration),
    #[error("association rejected: result {result:?}, source {by:?}")]
    Rejected { result: dicom_ul::pdu::AssociationRJResult, by: dicom_ul::pdu::AssociationRJSource },
    #[error("the peer accepted no presentation context for {0}")]
    NoContext(String),
    #[error("association aborted by the peer")]
    Aborted,
    #[error(transparent)]
    Pdu(#[from] PduError),
    #[error(transparent)]
    Message(MessageError),
    #[error("sending: {0}")]
    Write(std::io::Error),
    #[error("reading {path}: {cause}")]
    ReadFile { path: String, cause: std::io::Error },
    #[error(transparent)]
    Part10(#[from] Part10Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<MessageError> for ClientError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Pdu(p) => ClientError::Pdu(p),
            MessageError::Idle(t) => ClientError::Timeout(t),
            other => ClientError::Message(other),
        }
    }
}

/// Where to connect and who we are.
#[derive(Debug, Clone)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub called_ae: AeTitle,
    pub calling_ae: AeTitle,
    pub timeout: Duration,
    /// Call over TLS with this configuration (the AE is registered as TLS); the peer's
    /// certificate must name `host`.
    pub tls: Option<Connector>,
}

/// A (SOP class, transfer syntax) pair that one presentation context proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
}

impl Proposal {
    pub fn verification() -> Proposal {
        Proposal { abstract_syntax: VERIFICATION.into(), transfer_syntaxes: vec![EXPLICIT_LE.into(), IMPLICIT_LE.into()] }
    }

    /// Storage Commitment Push Model, as SCU (default roles: we send the N-ACTION).
    pub fn storage_commitment() -> Proposal {
        Proposal {
            abstract_syntax: dicom_dictionary_std::uids::STORAGE_COMMITMENT_PUSH_MODEL.into(),
            transfer_syntaxes: vec![EXPLICIT_LE.into(), IMPLICIT_LE.into()],
        }
    }
}

impl Proposal {
    /// Unified Procedure Step - Push SOP Class, as SCU (default roles: we send the N-CREATE).
    pub fn ups_push() -> Proposal {
        Proposal { abstract_syntax: crate::dicom::uids::UNIFIED_PROCEDURE_STEP_PUSH.into(), transfer_syntaxes: vec![EXPLICIT_LE.into(), IMPLICIT_LE.into()] }
    }
}

/// Read the File Meta Information of `path` (not the data set).
pub fn read_part10(path: &Path) -> Result<Part10, ClientError> {
    Ok(part10::read(path)?)
}

/// Result of one DIMSE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub error_comment: Option<String>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }
    /// Warning statuses (0001, Bxxx: PS3.4 B.2.3) also mean the instance was stored.
    pub fn is_stored(&self) -> bool {
        let code = self.status.code();
        code == 0x0000 || code == 0x0001 || code & 0xF000 == 0xB000
    }
}

struct Accepted {
    id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
}

pub struct Association {
    reader: MessageReader<BufReader<BoxRead>>,
    writer: MessageWriter<BoxWrite>,
    accepted: Vec<Accepted>,
    next_message_id: u16,
}

impl Association {
    /// Connect over TCP and negotiate; one presentation context per proposal.
    pub async fn request(peer: &Peer, proposals: &[Proposal]) -> Result<Association, ClientError> {
        let addr = format!("{}:{}", peer.host, peer.port);
        let stream = tokio::time::timeout(peer.timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| ClientError::Timeout(peer.timeout))?
            .map_err(|source| ClientError::Connect { addr: addr.clone(), cause: source })?;
        let _ = stream.set_nodelay(true);
        let (rd, wr): (BoxRead, BoxWrite) = match &peer.tls {
            None => {
                let (rd, wr) = stream.into_split();
                (Box::new(rd), Box::new(wr))
            }
            Some(tls) => tokio::time::timeout(peer.timeout, tls.connect(&peer.host, stream))
                .await
                .map_err(|_| ClientError::Timeout(peer.timeout))?
                .map_err(|source| ClientError::Tls { addr: addr.clone(), cause: source })?,
        };
        Association::request_over(rd, wr, peer, proposals).await
    }

    /// Negotiate over an open byte stream (TCP, or TLS once it lands).
    pub async fn request_over(rd: BoxRead, wr: BoxWrite, peer: &Peer, proposals: &[Proposal]) -> Result<Association, ClientError> {
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
        // Every write, the data sets' included, fails once the peer took nothing for the timeout.
        let mut wr = MessageWriter::new(super::association::with_write_timeout(wr, peer.timeout));
        let contexts: Vec<PresentationContextProposed> = proposals
            .iter()
            .enumerate()
            .map(|(i, p)| PresentationContextProposed {
                id: (2 * i + 1) as u8,
                abstract_syntax: p.abstract_syntax.clone(),
                transfer_syntaxes: p.transfer_syntaxes.clone(),
            })
            .collect();
        if contexts.is_empty() || contexts.len() > 128 {
            return Err(ClientError::Protocol(format!("{} presentation contexts (1 to 128 allowed)", contexts.len())));
        }
        let rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: peer.calling_ae.to_string(),
            called_ae_title: peer.called_ae.to_string(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: contexts.clone(),
            user_variables: vec![
                UserVariableItem::MaxLength(OUR_MAX_PDU),
                UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.into()),
                UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.into()),
            ],
        };
        wr.pdu(&Pdu::AssociationRQ(rq)).await.map_err(ClientError::Write)?;
        let reply = tokio::time::timeout(peer.timeout, async {
            let header = pdu::read_header(&mut rd).await?.ok_or(PduError::Closed)?;
            pdu::read_control_pdu(&mut rd, header).await
        })
        .await
        .map_err(|_| ClientError::Timeout(peer.timeout))??;
        let ac = match reply {
            Pdu::AssociationAC(ac) => ac,
            Pdu::AssociationRJ(AssociationRJ { result, source }) => return Err(ClientError::Rejected { result, by: source }),
            Pdu::AbortRQ { .. } => return Err(ClientError::Aborted),
            other => return Err(ClientError::Protocol(format!("expected A-ASSOCIATE-AC, got {}", other.short_description()))),
        };
        let accepted = ac
            .presentation_contexts
            .iter()
            .filter(|r| r.reason == PresentationContextResultReason::Acceptance)
            .filter_map(|r| {
                contexts.iter().find(|c| c.id == r.id).map(|c| Accepted {
                    id: r.id,
                    abstract_syntax: c.abstract_syntax.clone(),
                    transfer_syntax: r.transfer_syntax.trim_end_matches(['\0', ' ']).to_string(),
                })
            })
            .collect();
        wr.set_peer_max_pdu(pdu::max_length(&ac.user_variables));
        let reader = MessageReader::new(rd, peer.timeout, OUR_MAX_PDU, 64 * 1024, "response ").lenient();
        Ok(Association { reader, writer: wr, accepted, next_message_id: 1 })
    }

    fn context(&self, abstract_syntax: &str, transfer_syntax: Option<&str>) -> Option<&Accepted> {
        self.accepted.iter().find(|c| c.abstract_syntax == abstract_syntax && transfer_syntax.is_none_or(|ts| c.transfer_syntax == ts))
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    pub async fn echo(&mut self) -> Result<Response, ClientError> {
        let pc = self.context(VERIFICATION, None).ok_or_else(|| ClientError::NoContext("Verification".into()))?.id;
        let mut rq = CommandSet::default();
        let id = self.message_id();
        rq.set_uid(tag::AFFECTED_SOP_CLASS_UID, VERIFICATION)
            .set_u16(tag::COMMAND_FIELD, field::C_ECHO_RQ)
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, command::NO_DATA_SET);
        self.writer.command(pc, &rq).await.map_err(ClientError::Write)?;
        self.response(id).await
    }

    /// C-STORE the data set of a Part 10 file as it is on disk, in its own transfer syntax.
    pub async fn store_file(&mut self, path: &Path) -> Result<Response, ClientError> {
        let meta = read_part10(path)?;
        let name = path.display().to_string();
        let mut file = tokio::fs::File::open(path).await.map_err(|source| ClientError::ReadFile { path: name.clone(), cause: source })?;
        let total = file.metadata().await.map_err(|source| ClientError::ReadFile { path: name.clone(), cause: source })?.len();
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(meta.dataset_offset))
            .await
            .map_err(|source| ClientError::ReadFile { path: name.clone(), cause: source })?;
        self.store_stream(&meta, file, total.saturating_sub(meta.dataset_offset), &name).await
    }

    /// Whether the peer accepted a context for `abstract_syntax`.
    pub fn accepts(&self, abstract_syntax: &str) -> bool {
        self.context(abstract_syntax, None).is_some()
    }

    /// The transfer syntax the peer accepted for `abstract_syntax`.
    pub fn transfer_syntax(&self, abstract_syntax: &str) -> Option<&str> {
        self.context(abstract_syntax, None).map(|c| c.transfer_syntax.as_str())
    }

    /// N-ACTION-RQ of the Storage Commitment Push Model (Action Type 1): ask the peer to commit
    /// to the safekeeping of the objects `data` names (its Action Information, encoded in the
    /// context's transfer syntax: see `transfer_syntax`).
    pub async fn request_commitment(&mut self, data: &[u8]) -> Result<Response, ClientError> {
        use crate::dicom::uids::{STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE};
        let ctx = self.context(STORAGE_COMMITMENT_PUSH_MODEL, None).ok_or_else(|| ClientError::NoContext("Storage Commitment Push Model".into()))?;
        let pc = ctx.id;
        let id = self.message_id();
        let mut rq = CommandSet::default();
        rq.set_uid(tag::REQUESTED_SOP_CLASS_UID, STORAGE_COMMITMENT_PUSH_MODEL)
            .set_u16(tag::COMMAND_FIELD, field::N_ACTION_RQ)
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000)
            .set_uid(tag::REQUESTED_SOP_INSTANCE_UID, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE)
            .set_u16(tag::ACTION_TYPE_ID, 1);
        self.writer.command(pc, &rq).await.map_err(ClientError::Write)?;
        self.writer.data(pc, data).await.map_err(ClientError::Write)?;
        self.response(id).await
    }

    /// N-CREATE-RQ of `sop_class` (a UPS Push workitem): the instance `sop_instance` the
    /// requester chose, `data` its attribute list encoded in the transfer syntax the peer
    /// accepted for `sop_class` (see `transfer_syntax`). The response's attribute list, if any,
    /// is read and dropped.
    pub async fn n_create(&mut self, sop_class: &str, sop_instance: &str, data: &[u8]) -> Result<Response, ClientError> {
        let pc = self.context(sop_class, None).ok_or_else(|| ClientError::NoContext(sop_class.to_string()))?.id;
        let id = self.message_id();
        let mut rq = CommandSet::default();
        rq.set_uid(tag::AFFECTED_SOP_CLASS_UID, sop_class)
            .set_u16(tag::COMMAND_FIELD, field::N_CREATE_RQ)
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000)
            .set_uid(tag::AFFECTED_SOP_INSTANCE_UID, sop_instance);
        self.writer.command(pc, &rq).await.map_err(ClientError::Write)?;
        self.writer.data(pc, data).await.map_err(ClientError::Write)?;
        self.response(id).await
    }

    /// C-STORE a Part 10 object held in memory (a result re-identified at sending).
    pub async fn store_part10_bytes(&mut self, bytes: &[u8]) -> Result<Response, ClientError> {
        let name = "<re-identified object>";
        let meta = part10::read_bytes(bytes, name)?;
        let rest = &bytes[meta.dataset_offset as usize..];
        self.store_stream(&meta, rest, rest.len() as u64, name).await
    }

    /// C-STORE a data set held in memory, already encoded in the transfer syntax the peer
    /// accepted for `sop_class` (see `transfer_syntax`); `originator` (AE title, message ID)
    /// names the C-MOVE it is a sub-operation of.
    pub async fn store_dataset(&mut self, sop_class: &str, sop_instance: &str, data: &[u8], originator: Option<(&str, u16)>) -> Result<Response, ClientError> {
        let pc = self.context(sop_class, None).ok_or_else(|| ClientError::NoContext(sop_class.to_string()))?.id;
        let id = self.message_id();
        let mut rq = command::store_rq(sop_class, sop_instance, id);
        if let Some((ae, message_id)) = originator {
            rq.set_text(tag::MOVE_ORIGINATOR_AE_TITLE, ae, 16).set_u16(tag::MOVE_ORIGINATOR_MESSAGE_ID, message_id);
        }
        self.writer.command(pc, &rq).await.map_err(ClientError::Write)?;
        self.writer.data(pc, data).await.map_err(ClientError::Write)?;
        self.response(id).await
    }

    /// Send the C-STORE-RQ for `meta`, then `left` data set bytes from `source`, a PDU's worth at
    /// a time (never the whole data set), and wait for the response.
    async fn store_stream<R: tokio::io::AsyncRead + Unpin>(&mut self, meta: &Part10, source: R, left: u64, name: &str) -> Result<Response, ClientError> {
        let pc = self
            .context(&meta.sop_class_uid, Some(&meta.transfer_syntax_uid))
            .ok_or_else(|| ClientError::NoContext(format!("{} in {}", meta.sop_class_uid, meta.transfer_syntax_uid)))?
            .id;
        if left == 0 {
            return Err(Part10Error::NotPart10 { path: name.to_string(), reason: "empty data set".into() }.into());
        }
        let id = self.message_id();
        let rq = command::store_rq(&meta.sop_class_uid, &meta.sop_instance_uid, id);
        self.writer.command(pc, &rq).await.map_err(ClientError::Write)?;
        let pad = meta.transfer_syntax_uid == DEFLATED_LE;
        self.writer.data_from(pc, source, left, pad).await.map_err(|e| match e {
            SendError::Source(source) => ClientError::ReadFile { path: name.to_string(), cause: source },
            SendError::Write(e) => ClientError::Write(e),
        })?;
        self.response(id).await
    }

    /// Read until the response command for `message_id` is complete (data sets that come with
    /// responses are read and dropped: C-STORE and N-ACTION responses carry none).
    async fn response(&mut self, message_id: u16) -> Result<Response, ClientError> {
        loop {
            match self.reader.next().await? {
                Event::Command { command: rsp, .. } => {
                    if rsp.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO).ok() != Some(message_id) {
                        return Err(ClientError::Protocol("response to another message".into()));
                    }
                    let status = rsp.status().map_err(|e| ClientError::Protocol(e.to_string()))?;
                    // A data set it may announce (C-STORE and N-ACTION responses carry none) is
                    // not waited for: the next command ends it (the reader is lenient).
                    return Ok(Response { status, error_comment: rsp.string(tag::ERROR_COMMENT).ok().filter(|s| !s.is_empty()) });
                }
                Event::Data { .. } => {}
                Event::Abort => return Err(ClientError::Aborted),
                other => return Err(ClientError::Protocol(format!("unexpected {other:?} while waiting for a response"))),
            }
        }
    }

    /// A-RELEASE-RQ, and wait for A-RELEASE-RP.
    pub async fn release(mut self) -> Result<(), ClientError> {
        self.writer.pdu(&Pdu::ReleaseRQ).await.map_err(ClientError::Write)?;
        let reply = self.reader.next().await;
        self.writer.shutdown().await;
        match reply? {
            Event::ReleaseRp => Ok(()),
            other => Err(ClientError::Protocol(format!("expected A-RELEASE-RP, got {other:?}"))),
        }
    }
}

/// One presentation context per distinct (SOP class, transfer syntax) among `files`.
pub fn proposals_for(files: &[Part10]) -> Vec<Proposal> {
    let mut out: Vec<Proposal> = Vec::new();
    for f in files {
        let p = Proposal { abstract_syntax: f.sop_class_uid.clone(), transfer_syntaxes: vec![f.transfer_syntax_uid.clone()] };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}
