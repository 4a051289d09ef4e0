//! STOW-RS ingest (PS3.18 10.5): `POST /dicomweb/studies[/{study}]` with a
//! `multipart/related; type="application/dicom"` body, one Part 10 object per part.
//!
//! Each part takes the C-STORE path (`services::store` does the same with a DIMSE data set):
//! its File Meta Information gives the request (SOP class, instance, transfer syntax, checked
//! against the Storage SCP's tables and the site's `[storage]` choice), then `Ingest::begin`,
//! the data set streamed into the incoming file a chunk at a time (never the request whole: the
//! multipart reader holds a delimiter's worth, ingest's spool the rest, as for a large C-STORE),
//! and `Ingest::complete`: the same size limits, de-identification, fsync before the answer,
//! instance row (calling AE: the token's name), audit and study-complete detection. A part is
//! answered with the PS3.4 status ingest gives, as the PS3.18 Failure Reason.
//!
//! Only tokens with the `modality` role may store. A framing error (truncated body, oversized
//! part or request) ends the request with 400 or 413; the instances stored before it stay.
//! Content-Encoding other than identity is refused (415): no inflating of a peer's body.
//! Must not: log or answer with patient data (the response names the caller's own UIDs only).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::auth::Role;
use super::{ApiError, Shared};
use crate::config::{HttpSettings, StorageSettings};
use crate::dicom::multipart::{self, MediaType, PartHeaders, Reader};
use crate::dicom::{part10, scan, sop, Status};
use crate::domain::Redacted;
use crate::ingest::{Ingest, IngestError, StoreOutcome, StoreRequest};

/// The most File Meta Information a part may have before its data set.
const MAX_META: usize = 64 << 10;
/// Preamble, `DICM`, and the group length element (tag, VR, length, value).
const META_PREFIX: usize = 128 + 4 + 12;

/// What STOW-RS needs of the node: its ingest, the site's storage classes, the limits.
pub struct Stow {
    ingest: Arc<Ingest>,
    limits: multipart::Limits,
    accepts: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Stow {
    pub fn new(ingest: Arc<Ingest>, http: &HttpSettings, storage: &StorageSettings) -> Stow {
        let storage = storage.clone();
        Stow {
            ingest,
            limits: multipart::Limits { part: http.stow_max_part.0, total: http.stow_max_request.0, ..Default::default() },
            accepts: Box::new(move |uid| storage.accepts_sop_class(uid)),
        }
    }
}

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/dicomweb/studies", post(store_studies)).route("/dicomweb/studies/{study}", post(store_study))
}

async fn store_studies(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    store(state, headers, None, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn store_study(State(state): State<Shared>, Path(study): Path<String>, headers: HeaderMap, body: Body) -> Response {
    store(state, headers, Some(study), body).await.unwrap_or_else(IntoResponse::into_response)
}

/// One part's outcome, for the response.
struct Outcome {
    class: Option<String>,
    instance: Option<String>,
    /// `None`: stored (or a duplicate, kept as the first copy, as C-STORE answers Success).
    failure: Option<(Status, String)>,
}

impl Outcome {
    fn failed(class: Option<&str>, instance: Option<&str>, status: Status, why: impl Into<String>) -> Outcome {
        Outcome { class: class.map(str::to_string), instance: instance.map(str::to_string), failure: Some((status, why.into())) }
    }
}

async fn store(state: Shared, headers: HeaderMap, study: Option<String>, body: Body) -> Result<Response, ApiError> {
    let user = {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match state.tokens.user(authorization) {
            Some(u) if u.role == Role::Modality => u.clone(),
            Some(_) => return Err(ApiError(StatusCode::FORBIDDEN, "STOW-RS needs a token with the modality role".into())),
            None if authorization.is_none() => {
                return Err(ApiError(StatusCode::UNAUTHORIZED, "a bearer token is required (Authorization: Bearer <token>)".into()))
            }
            None => return Err(ApiError(StatusCode::UNAUTHORIZED, "the bearer token is not valid".into())),
        }
    };
    let Some(stow) = state.stow.as_ref() else {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "STOW-RS ingest is not available on this node".into()));
    };
    let unsupported = |why: String| ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, why);
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("?").trim();
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(unsupported(format!("Content-Encoding \"{}\" is not accepted: send the body uncompressed", crate::domain::PeerText(enc))));
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (media, boundary) = match multipart::related_boundary(content_type) {
        Ok(found) => found,
        Err(multipart::Error::NoBoundary) => return Err(super::bad_request("the multipart/related Content-Type needs a boundary parameter (RFC 2046)")),
        Err(_) => return Err(unsupported("the body must be multipart/related; type=\"application/dicom\"".into())),
    };
    if let Some(t) = media.param("type") {
        if !is_application_dicom(t) {
            return Err(unsupported("only type=\"application/dicom\" is accepted (Part 10 instances; no DICOM JSON or XML metadata with bulk data)".into()));
        }
    }
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|l| l > stow.limits.total) {
        return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("the request is larger than http.stow_max_request ({} bytes)", stow.limits.total)));
    }
    // Ahead of the router's deadline by a tenth (at most 5 s): time to discard and answer.
    let margin = (state.request_timeout / 10).min(std::time::Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + state.request_timeout.saturating_sub(margin);
    let mut body = Incoming { reader: Reader::new(body.into_data_stream(), &boundary, stow.limits), deadline };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let framing = loop {
        let part = match body.next_part().await {
            Ok(Some(part)) => part,
            Ok(None) => break body.finish().await.err(),
            Err(e) => break Some(e),
        };
        match store_part(stow, &mut body, part, study.as_deref(), &user.name).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => break Some(e),
        }
    };
    let stored = outcomes.iter().filter(|o| o.failure.is_none()).count();
    if let Some(Stop::Late) = framing {
        warn!(user = %user.name, stored, "STOW-RS request too slow: refused at its deadline");
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request did not arrive within http.request_timeout; {stored} instance(s) of the request were stored before it"),
        ));
    }
    if let Some(Stop::Framing(e)) = framing {
        let status = match e {
            multipart::Error::PartTooLarge { .. } | multipart::Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        let limit = match e {
            multipart::Error::PartTooLarge { .. } => " (http.stow_max_part)",
            multipart::Error::BodyTooLarge { .. } => " (http.stow_max_request)",
            _ => "",
        };
        warn!(user = %user.name, stored, error = %e, "STOW-RS request refused");
        return Err(ApiError(status, format!("{e}{limit}; {stored} instance(s) of the request were stored before it")));
    }
    if outcomes.is_empty() {
        return Err(super::bad_request("the multipart body has no parts"));
    }
    let failed = outcomes.len() - stored;
    info!(user = %user.name, stored, failed, "STOW-RS request");
    let status = match (stored, failed) {
        (_, 0) => StatusCode::OK,
        (0, _) => StatusCode::CONFLICT,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, [(header::CONTENT_TYPE, "application/dicom+json")], response_body(&outcomes).to_string()).into_response())
}

/// The Store Instances Response (PS3.18 10.5.3, DICOM JSON): Referenced SOP Sequence for the
/// stored instances, Failed SOP Sequence with a Failure Reason for the others. No Retrieve URL:
/// ingested instances are not served back (WADO-RS serves the AI results only).
fn response_body(outcomes: &[Outcome]) -> Value {
    // An unknown UID is an empty attribute: no "Value" (PS3.18 F.2.5).
    let uid = |v: &Option<String>| match v {
        Some(v) => json!({ "vr": "UI", "Value": [v] }),
        None => json!({ "vr": "UI" }),
    };
    let item = |o: &Outcome| {
        let mut m = serde_json::Map::new();
        m.insert("00081150".into(), uid(&o.class));
        m.insert("00081155".into(), uid(&o.instance));
        if let Some((status, why)) = &o.failure {
            m.insert("00081197".into(), json!({ "vr": "US", "Value": [status.0] }));
            // The reason in words (Error Comment, as a C-STORE response gives it).
            m.insert("00000902".into(), json!({ "vr": "LO", "Value": [why] }));
        }
        Value::Object(m)
    };
    let mut body = serde_json::Map::new();
    let referenced: Vec<Value> = outcomes.iter().filter(|o| o.failure.is_none()).map(item).collect();
    let failed: Vec<Value> = outcomes.iter().filter(|o| o.failure.is_some()).map(item).collect();
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    if !referenced.is_empty() {
        body.insert("00081199".into(), json!({ "vr": "SQ", "Value": referenced }));
    }
    Value::Object(body)
}

/// Why a request ends before its last part: its framing, or its time.
enum Stop {
    Framing(multipart::Error),
    /// The body did not arrive before the request's deadline.
    Late,
}

impl From<multipart::Error> for Stop {
    fn from(e: multipart::Error) -> Stop {
        Stop::Framing(e)
    }
}

/// The request's body, read part by part before a deadline (ahead of `http.request_timeout`'s,
/// so that a part cut short by it is discarded here, never left half-written).
struct Incoming {
    reader: Reader<axum::body::BodyDataStream>,
    deadline: tokio::time::Instant,
}

impl Incoming {
    async fn next_part(&mut self) -> Result<Option<PartHeaders>, Stop> {
        tokio::time::timeout_at(self.deadline, self.reader.next_part()).await.map_err(|_| Stop::Late)?.map_err(Stop::from)
    }

    async fn chunk(&mut self) -> Result<Option<Bytes>, Stop> {
        tokio::time::timeout_at(self.deadline, self.reader.next_chunk()).await.map_err(|_| Stop::Late)?.map_err(Stop::from)
    }

    /// Reads the rest of a part and drops it.
    async fn drain(&mut self) -> Result<(), Stop> {
        while self.chunk().await?.is_some() {}
        Ok(())
    }

    /// Reads the epilogue.
    async fn finish(&mut self) -> Result<(), Stop> {
        tokio::time::timeout_at(self.deadline, self.reader.finish()).await.map_err(|_| Stop::Late)?.map_err(Stop::from)
    }
}

/// One part into ingest. `Err` only for a framing error (the request ends); a part ingest
/// refuses, or that is not DICOM, is an `Outcome` with its failure.
async fn store_part(stow: &Stow, body: &mut Incoming, part: PartHeaders, study: Option<&str>, user: &str) -> Result<Outcome, Stop> {
    if let Some(ct) = part.content_type() {
        if !is_application_dicom(ct) {
            body.drain().await?;
            return Ok(Outcome::failed(None, None, Status::CANNOT_UNDERSTAND, "the part is not application/dicom"));
        }
    }
    // The File Meta Information, held whole (bounded): it names the request.
    let mut head: Vec<u8> = Vec::new();
    let mut meta_end: Option<usize> = None;
    while meta_end.is_none_or(|end| head.len() < end) {
        let Some(chunk) = body.chunk().await? else { break };
        head.extend_from_slice(&chunk);
        if meta_end.is_none() && head.len() >= META_PREFIX {
            meta_end = meta_length(&head).map(|len| META_PREFIX + len);
            if meta_end.is_none() {
                break;
            }
        }
    }
    let not_dicom = "the part is not a DICOM Part 10 object (128-byte preamble, DICM, File Meta Information)";
    let meta = match meta_end.filter(|&end| head.len() >= end) {
        Some(end) => part10::read_bytes(&head[..end], "part").ok().map(|m| (m, end)),
        None => None,
    };
    let Some((meta, end)) = meta else {
        body.drain().await?;
        return Ok(Outcome::failed(None, None, Status::CANNOT_UNDERSTAND, not_dicom));
    };
    let (class, instance) = (meta.sop_class_uid.trim_end_matches('\0').trim(), meta.sop_instance_uid.trim_end_matches('\0').trim());
    let refuse = |status: Status, why: &str| Outcome::failed(Some(class), Some(instance), status, why);
    let Some(ts) = sop::transfer_syntax(meta.transfer_syntax_uid.trim_end_matches('\0').trim()) else {
        body.drain().await?;
        return Ok(refuse(Status(0xC122), "the transfer syntax is not one the node accepts (see the conformance statement)"));
    };
    if !sop::storage_class(class).is_some_and(|c| c.ingested) || !(stow.accepts)(class) {
        body.drain().await?;
        return Ok(refuse(Status::REFUSED_SOP_CLASS_NOT_SUPPORTED, "the SOP class is not one this node stores"));
    }
    let req = StoreRequest {
        sop_class_uid: Redacted(class.to_string()),
        sop_instance_uid: Redacted(instance.to_string()),
        transfer_syntax: ts,
        calling_ae: user.to_string(),
    };
    let begun = if instance.is_empty() { Err(IngestError::MissingAttribute("Media Storage SOP Instance UID (0002,0003)")) } else { stow.ingest.begin(&req) };
    let mut file = match begun {
        Ok(file) => file,
        Err(e) => {
            body.drain().await?;
            return Ok(refused(class, instance, &e));
        }
    };
    // With a study in the path, the data set's head is kept (bounded) to check its Study Instance UID.
    let mut kept: Option<Vec<u8>> = study.map(|_| Vec::new());
    let mut written = 0u64;
    let mut chunk = Bytes::copy_from_slice(&head[end..]);
    drop(head);
    let failure = loop {
        keep(&mut kept, &chunk);
        written += chunk.len() as u64;
        metrics::counter!("triage_bytes_received_total").increment(chunk.len() as u64);
        if let Err(e) = file.write(&chunk).await {
            break Some(IngestError::from(e));
        }
        chunk = match body.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break None,
            Err(e) => {
                file.discard().await;
                return Err(e);
            }
        };
    };
    if let Some(e) = failure {
        file.discard().await;
        body.drain().await?;
        return Ok(refused(class, instance, &e));
    }
    if let (Some(expected), Some(kept)) = (study, kept) {
        match study_of(&kept, written, ts) {
            Some(found) if found == expected.trim() => {}
            found => {
                file.discard().await;
                let why = if found.is_some() {
                    "the Study Instance UID of the instance differs from the one in the request's path"
                } else {
                    "the Study Instance UID of the instance could not be read to check it against the request's path"
                };
                return Ok(refuse(Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, why));
            }
        }
    }
    let result = stow.ingest.complete(&req, file).await;
    metrics::counter!("triage_stow_instances_total", "status" => format!("{:#06X}", result.as_ref().map(|_| 0).unwrap_or_else(|e| e.dimse_status().0)))
        .increment(1);
    Ok(match result {
        Ok(StoreOutcome::Stored { instance_id }) => {
            metrics::counter!("triage_instances_received_total").increment(1);
            debug!(instance_id, "instance stored (STOW-RS)");
            Outcome { class: Some(class.into()), instance: Some(instance.into()), failure: None }
        }
        Ok(StoreOutcome::Duplicate { instance_id }) => {
            info!(instance_id, "duplicate SOP Instance UID (STOW-RS): first copy kept, stored returned");
            Outcome { class: Some(class.into()), instance: Some(instance.into()), failure: None }
        }
        Err(e) => refused(class, instance, &e),
    })
}

/// Whether a media type is `application/dicom` (whatever its parameters).
fn is_application_dicom(value: &str) -> bool {
    MediaType::parse(value).is_some_and(|m| m.essence == "application/dicom")
}

/// Keeps the first `spool::MAX_HEAD` bytes of a data set (for the study check).
fn keep(kept: &mut Option<Vec<u8>>, bytes: &[u8]) {
    if let Some(k) = kept.as_mut() {
        let room = crate::ingest::spool::MAX_HEAD.saturating_sub(k.len());
        k.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

fn refused(class: &str, instance: &str, e: &IngestError) -> Outcome {
    warn!(status = %e.dimse_status(), error = %e, "STOW-RS instance refused");
    Outcome::failed(Some(class), Some(instance), e.dimse_status(), e.peer_comment())
}

/// The File Meta Information Group Length (0002,0000) after the preamble and `DICM`: the bytes
/// of the group that follow it. `None` when the part does not start that way.
fn meta_length(head: &[u8]) -> Option<usize> {
    if &head[128..132] != b"DICM" || head[132..136] != [2, 0, 0, 0] || &head[136..138] != b"UL" || head[138..140] != [4, 0] {
        return None;
    }
    let len = u32::from_le_bytes(head[140..144].try_into().ok()?) as usize;
    (len <= MAX_META).then_some(len)
}

/// The Study Instance UID of a data set whose first bytes are `head` (`len` bytes in all).
fn study_of(head: &[u8], len: u64, ts: &sop::TransferSyntax) -> Option<String> {
    let fields = if head.len() as u64 == len {
        scan::scan(head, (!ts.deflated).then_some(len), ts).ok()?
    } else if ts.deflated {
        return None;
    } else {
        let at = scan::locate_pixel_group(head, ts).ok()??;
        scan::scan(&head[..at as usize], Some(at), ts).ok()?
    };
    fields.study_instance_uid.map(|s| s.trim_end_matches('\0').trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_lists_stored_and_failed_instances_with_their_reasons() {
        let outcomes = [
            Outcome { class: Some("1.2.840.10008.5.1.4.1.1.2".into()), instance: Some("1.2.3".into()), failure: None },
            Outcome::failed(None, None, Status::CANNOT_UNDERSTAND, "not DICOM"),
            Outcome::failed(Some("1.2.840.10008.5.1.4.1.1.2"), Some("1.2.4"), Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "other study"),
        ];
        let body = response_body(&outcomes);
        assert_eq!(body["00081199"]["Value"][0]["00081155"]["Value"][0], "1.2.3");
        assert!(body["00081199"]["Value"][0].get("00081197").is_none());
        let failed = body["00081198"]["Value"].as_array().unwrap();
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0]["00081197"]["Value"][0], 0xC000);
        assert_eq!(failed[0]["00081155"], json!({ "vr": "UI" }));
        assert_eq!(failed[1]["00081197"]["Value"][0], 0xA900);
        assert_eq!(failed[1]["00000902"]["Value"][0], "other study");
        // All stored: no Failed SOP Sequence at all.
        assert!(response_body(&outcomes[..1]).get("00081198").is_none());
    }

    #[test]
    fn a_part_10_prefix_gives_its_meta_group_length() {
        let mut head = vec![0u8; 128];
        head.extend_from_slice(b"DICM");
        head.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
        head.extend_from_slice(&200u32.to_le_bytes());
        assert_eq!(meta_length(&head), Some(200));
        let mut huge = head.clone();
        huge[140..144].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert_eq!(meta_length(&huge), None, "past MAX_META");
        let mut not_dicm = head.clone();
        not_dicm[128] = b'X';
        assert_eq!(meta_length(&not_dicm), None);
    }
}
