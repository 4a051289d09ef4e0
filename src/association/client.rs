//! The association requestor (SCU side): C-ECHO and C-STORE to a remote AE, sending Part 10
//! files exactly as stored (one presentation context per SOP class and transfer syntax, no
//! transcoding), streamed from disk in PDUs within the peer's maximum length.
//!
//! Owns: A-ASSOCIATE-RQ/AC/RJ on the requesting side, DIMSE requests and their responses.
//! Must not: decide what to send or when (callers do), or log identifying values.

use std::path::Path;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason, UserVariableItem,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::command::{self, field, status, tag, CommandSet};
use super::negotiation::{APPLICATION_CONTEXT, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use super::pdu::{self, PduError, TYPE_ABORT, TYPE_P_DATA};
use crate::domain::AeTitle;

const VERIFICATION: &str = "1.2.840.10008.1.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
/// Largest PDU we accept from the peer (responses are small).
const OUR_MAX_PDU: u32 = 65536;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
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
    #[error("sending: {0}")]
    Write(#[source] std::io::Error),
    #[error("reading {path}: {source}")]
    ReadFile { path: String, source: std::io::Error },
    #[error("{path} is not a DICOM Part 10 file: {reason}")]
    NotPart10 { path: String, reason: String },
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Where to connect and who we are.
#[derive(Debug, Clone)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub called_ae: AeTitle,
    pub calling_ae: AeTitle,
    pub timeout: Duration,
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
        Proposal { abstract_syntax: dicom_dictionary_std::uids::STORAGE_COMMITMENT_PUSH_MODEL.into(), transfer_syntaxes: vec![EXPLICIT_LE.into(), IMPLICIT_LE.into()] }
    }
}

/// What the File Meta Information of a Part 10 file says, and where its data set starts.
#[derive(Debug, Clone)]
pub struct Part10 {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub dataset_offset: u64,
}

impl Part10 {
    fn from_meta(meta: &dicom_object::meta::FileMetaTable, dataset_offset: u64) -> Part10 {
        Part10 {
            sop_class_uid: meta.media_storage_sop_class_uid().to_string(),
            sop_instance_uid: meta.media_storage_sop_instance_uid().to_string(),
            transfer_syntax_uid: meta.transfer_syntax().to_string(),
            dataset_offset,
        }
    }
}

/// Read the File Meta Information of `path` (not the data set).
pub fn read_part10(path: &Path) -> Result<Part10, ClientError> {
    use std::io::{Read, Seek};
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|source| ClientError::ReadFile { path: name.clone(), source })?;
    let mut preamble = [0u8; 128];
    file.read_exact(&mut preamble).map_err(|source| ClientError::ReadFile { path: name.clone(), source })?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut file)
        .map_err(|e| ClientError::NotPart10 { path: name.clone(), reason: e.to_string() })?;
    let dataset_offset = file.stream_position().map_err(|source| ClientError::ReadFile { path: name, source })?;
    Ok(Part10::from_meta(&meta, dataset_offset))
}

/// Result of one DIMSE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub error_comment: Option<String>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        self.status == status::SUCCESS
    }
    /// Warning statuses (0001, Bxxx) also mean the instance was stored.
    pub fn is_stored(&self) -> bool {
        self.status == status::SUCCESS || self.status == 0x0001 || self.status & 0xF000 == 0xB000
    }
}

struct Accepted {
    id: u8,
    abstract_syntax: String,
    transfer_syntax: String,
}

pub struct Association {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    accepted: Vec<Accepted>,
    peer_max_pdu: u32,
    next_message_id: u16,
    timeout: Duration,
}

impl Association {
    /// Connect and negotiate; one presentation context per proposal.
    pub async fn request(peer: &Peer, proposals: &[Proposal]) -> Result<Association, ClientError> {
        let addr = format!("{}:{}", peer.host, peer.port);
        let stream = tokio::time::timeout(peer.timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| ClientError::Timeout(peer.timeout))?
            .map_err(|source| ClientError::Connect { addr: addr.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::with_capacity(64 * 1024, rd);
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
        wr.write_all(&pdu::encode(&Pdu::AssociationRQ(rq))).await.map_err(ClientError::Write)?;
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
        let peer_max_pdu = pdu::max_length(&ac.user_variables);
        Ok(Association { rd, wr, accepted, peer_max_pdu, next_message_id: 1, timeout: peer.timeout })
    }

    fn context(&self, abstract_syntax: &str, transfer_syntax: Option<&str>) -> Option<&Accepted> {
        self.accepted
            .iter()
            .find(|c| c.abstract_syntax == abstract_syntax && transfer_syntax.is_none_or(|ts| c.transfer_syntax == ts))
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
        self.send(pc, true, &rq.encode()).await?;
        self.response(id).await
    }

    /// C-STORE the data set of a Part 10 file as it is on disk, in its own transfer syntax.
    pub async fn store_file(&mut self, path: &Path) -> Result<Response, ClientError> {
        let meta = read_part10(path)?;
        let name = path.display().to_string();
        let mut file = tokio::fs::File::open(path).await.map_err(|source| ClientError::ReadFile { path: name.clone(), source })?;
        let total = file.metadata().await.map_err(|source| ClientError::ReadFile { path: name.clone(), source })?.len();
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(meta.dataset_offset))
            .await
            .map_err(|source| ClientError::ReadFile { path: name.clone(), source })?;
        self.store_stream(&meta, file, total.saturating_sub(meta.dataset_offset), &name).await
    }

    /// Whether the peer accepted a context for `abstract_syntax`.
    pub fn accepts(&self, abstract_syntax: &str) -> bool {
        self.context(abstract_syntax, None).is_some()
    }

    /// N-ACTION-RQ of the Storage Commitment Push Model (Action Type 1): ask the peer to commit
    /// to the safekeeping of `refs` (SOP Class, SOP Instance) under `transaction_uid`.
    pub async fn request_commitment(&mut self, transaction_uid: &str, refs: &[(String, String)]) -> Result<Response, ClientError> {
        use dicom_dictionary_std::uids::{STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE};
        let ctx = self.context(STORAGE_COMMITMENT_PUSH_MODEL, None).ok_or_else(|| ClientError::NoContext("Storage Commitment Push Model".into()))?;
        let (pc, ts) = (ctx.id, ctx.transfer_syntax.clone());
        let data = crate::delivery::commitment::action_dataset(transaction_uid, refs, &ts).map_err(ClientError::Protocol)?;
        let id = self.message_id();
        let mut rq = CommandSet::default();
        rq.set_uid(tag::REQUESTED_SOP_CLASS_UID, STORAGE_COMMITMENT_PUSH_MODEL)
            .set_u16(tag::COMMAND_FIELD, field::N_ACTION_RQ)
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000)
            .set_uid(tag::REQUESTED_SOP_INSTANCE_UID, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE)
            .set_u16(tag::ACTION_TYPE_ID, 1);
        self.send(pc, true, &rq.encode()).await?;
        self.send(pc, false, &data).await?;
        self.response(id).await
    }

    /// C-STORE a Part 10 object held in memory (a result re-identified at sending).
    pub async fn store_part10_bytes(&mut self, bytes: &[u8]) -> Result<Response, ClientError> {
        let name = "<re-identified object>".to_string();
        // After the 128-byte preamble; from_reader checks "DICM" and reads exactly the meta group.
        let mut rest = bytes.get(128..).unwrap_or_default();
        let meta = dicom_object::meta::FileMetaTable::from_reader(&mut rest).map_err(|e| ClientError::NotPart10 { path: name.clone(), reason: e.to_string() })?;
        let meta = Part10::from_meta(&meta, (bytes.len() - rest.len()) as u64);
        self.store_stream(&meta, rest, rest.len() as u64, &name).await
    }

    /// Send the C-STORE-RQ for `meta`, then `left` data set bytes from `source`, a PDU's worth at
    /// a time (never the whole data set), and wait for the response.
    async fn store_stream<R: tokio::io::AsyncRead + Unpin>(&mut self, meta: &Part10, mut source: R, mut left: u64, name: &str) -> Result<Response, ClientError> {
        let pc = self
            .context(&meta.sop_class_uid, Some(&meta.transfer_syntax_uid))
            .ok_or_else(|| ClientError::NoContext(format!("{} in {}", meta.sop_class_uid, meta.transfer_syntax_uid)))?
            .id;
        if left == 0 {
            return Err(ClientError::NotPart10 { path: name.to_string(), reason: "empty data set".into() });
        }
        let id = self.message_id();
        let mut rq = CommandSet::default();
        rq.set_uid(tag::AFFECTED_SOP_CLASS_UID, &meta.sop_class_uid)
            .set_u16(tag::COMMAND_FIELD, field::C_STORE_RQ)
            .set_u16(tag::MESSAGE_ID, id)
            .set_u16(tag::PRIORITY, 0)
            .set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000)
            .set_uid(tag::AFFECTED_SOP_INSTANCE_UID, &meta.sop_instance_uid);
        self.send(pc, true, &rq.encode()).await?;

        let chunk = pdu::max_fragment(self.peer_max_pdu);
        let mut buf = vec![0u8; chunk];
        // PS3.5 A.5: a deflated bit stream of odd length is sent padded with one NUL byte (some
        // peers, DCMTK among them, refuse odd fragments).
        let pad = meta.transfer_syntax_uid == DEFLATED_LE && left % 2 == 1;
        while left > 0 {
            let n = (left as usize).min(chunk);
            source.read_exact(&mut buf[..n]).await.map_err(|source| ClientError::ReadFile { path: name.to_string(), source })?;
            left -= n as u64;
            let n = if left == 0 && pad && n < chunk {
                buf[n] = 0;
                n + 1
            } else {
                n
            };
            self.wr.write_all(&pdu::encode_pdv(pc, false, left == 0, &buf[..n])).await.map_err(ClientError::Write)?;
        }
        self.response(id).await
    }

    async fn send(&mut self, pc: u8, is_command: bool, bytes: &[u8]) -> Result<(), ClientError> {
        self.wr.write_all(&pdu::encode_pdata(pc, is_command, bytes, self.peer_max_pdu)).await.map_err(ClientError::Write)
    }

    /// Read PDUs until the response command for `message_id` is complete.
    async fn response(&mut self, message_id: u16) -> Result<Response, ClientError> {
        let timeout = self.timeout;
        let mut command = Vec::new();
        loop {
            let header = tokio::time::timeout(timeout, pdu::read_header(&mut self.rd))
                .await
                .map_err(|_| ClientError::Timeout(timeout))??
                .ok_or(PduError::Closed)?;
            match header.pdu_type {
                TYPE_P_DATA => {
                    if header.length > OUR_MAX_PDU {
                        return Err(ClientError::Protocol(format!("PDU of {} bytes exceeds our maximum", header.length)));
                    }
                    let mut body = vec![0u8; header.length as usize];
                    tokio::time::timeout(timeout, self.rd.read_exact(&mut body)).await.map_err(|_| ClientError::Timeout(timeout))?.map_err(PduError::Read)?;
                    let mut pos = 0;
                    let mut complete = false;
                    while pos < body.len() {
                        let (fragment, control, next) = pdv_at(&body, pos)?;
                        if control & 0x01 != 0 {
                            if command.len() + fragment.len() > MAX_RESPONSE_COMMAND {
                                return Err(ClientError::Protocol(format!("response command set larger than {MAX_RESPONSE_COMMAND} bytes")));
                            }
                            command.extend_from_slice(fragment);
                            complete |= control & 0x02 != 0;
                        }
                        pos = next;
                    }
                    if complete {
                        let rsp = CommandSet::decode(&command).map_err(|e| ClientError::Protocol(e.to_string()))?;
                        if rsp.u16(tag::MESSAGE_ID_BEING_RESPONDED_TO).ok() != Some(message_id) {
                            return Err(ClientError::Protocol("response to another message".into()));
                        }
                        let status = rsp.u16(tag::STATUS).map_err(|e| ClientError::Protocol(e.to_string()))?;
                        return Ok(Response { status, error_comment: rsp.string(tag::ERROR_COMMENT).ok().filter(|s| !s.is_empty()) });
                    }
                }
                TYPE_ABORT => return Err(ClientError::Aborted),
                other => return Err(ClientError::Protocol(format!("unexpected PDU type {other:#04x} while waiting for a response"))),
            }
        }
    }

    /// A-RELEASE-RQ, and wait for A-RELEASE-RP.
    pub async fn release(mut self) -> Result<(), ClientError> {
        self.wr.write_all(&pdu::encode(&Pdu::ReleaseRQ)).await.map_err(ClientError::Write)?;
        let timeout = self.timeout;
        let reply = tokio::time::timeout(timeout, async {
            let header = pdu::read_header(&mut self.rd).await?.ok_or(PduError::Closed)?;
            pdu::read_control_pdu(&mut self.rd, header).await
        })
        .await
        .map_err(|_| ClientError::Timeout(timeout))??;
        let _ = self.wr.shutdown().await;
        match reply {
            Pdu::ReleaseRP => Ok(()),
            other => Err(ClientError::Protocol(format!("expected A-RELEASE-RP, got {}", other.short_description()))),
        }
    }
}

/// A response command set larger than this is not one (ours are a few hundred bytes).
const MAX_RESPONSE_COMMAND: usize = 64 * 1024;

/// The PDV item at `pos` of a P-DATA-TF body: (its fragment, message control header, where the
/// next item starts). PS3.8 9.3.5.1: an item length counts the context ID and control header,
/// so it is at least 2, and the item lies within its PDU.
fn pdv_at(body: &[u8], pos: usize) -> Result<(&[u8], u8, usize), ClientError> {
    let bad = |what: String| ClientError::Protocol(format!("malformed P-DATA-TF from the peer: {what}"));
    if body.len() - pos < 6 {
        return Err(bad(format!("{} bytes left for a PDV item header", body.len() - pos)));
    }
    let len = u32::from_be_bytes([body[pos], body[pos + 1], body[pos + 2], body[pos + 3]]) as usize;
    if len < 2 || len > body.len() - pos - 4 {
        return Err(bad(format!("PDV item length {len} does not fit its PDU")));
    }
    Ok((&body[pos + 6..pos + 4 + len], body[pos + 5], pos + 4 + len))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A PDV item shorter than its header, longer than its PDU, or cut off, is a protocol
    /// error, never a panic (a PACS that sends one used to stop the outbox worker).
    #[test]
    fn malformed_pdv_items_are_errors() {
        let item = |len: u32, rest: &[u8]| [len.to_be_bytes().as_slice(), rest].concat();
        assert!(pdv_at(&item(0, &[1, 3]), 0).is_err());
        assert!(pdv_at(&item(1, &[1, 3]), 0).is_err());
        assert!(pdv_at(&item(9, &[1, 3, 0, 0]), 0).is_err());
        assert!(pdv_at(&[0, 0, 0], 0).is_err());
        let ok = item(4, &[1, 3, 7, 8]);
        let (fragment, control, next) = pdv_at(&ok, 0).unwrap();
        assert_eq!((fragment, control, next), (&[7u8, 8][..], 3, 8));
        // Every prefix and every declared length of a small body: no panic.
        for len in 0..20u32 {
            let body = item(len, &[1, 3, 0, 0, 0, 0]);
            for cut in 0..body.len() {
                let _ = pdv_at(&body[..cut.max(1)], 0);
            }
        }
    }
}
