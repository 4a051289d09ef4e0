//! QIDO-RS and WADO-RS (PS3.18 10.6, 10.4) over the node's AI result objects: the objects the
//! C-FIND / C-MOVE / C-GET SCP serves, re-identified as delivered, under the same rule and with
//! the same audit entries (`archive::disclose`), for an HTTP user with a reader or admin token.
//!
//! - Search: `/dicomweb/studies`, `/dicomweb/series`, `/dicomweb/instances` and the same below a
//!   study (and a series): the query parameters (attribute keywords or tags) become a C-FIND
//!   identifier matched by `archive::query` exactly as the C-FIND SCP matches it (wild cards,
//!   ranges, UID lists, computed keys); `includefield`, `limit`, `offset`; `fuzzymatching=true`
//!   and any other parameter are refused with 400 and a reason. DICOM JSON (`dicom::json`); no
//!   match is 200 with `[]` (CP-2473).
//! - Retrieve: a study, series or instance as `multipart/related; type="application/dicom"`,
//!   each part the object as the C-MOVE SCP sends it (`Archive::reidentified`) in a Part 10
//!   file of Explicit VR Little Endian, streamed one object at a time; `metadata` as DICOM JSON
//!   (bulk data over 4 KiB left out: retrieve the instance); `rendered` for the heatmap Secondary
//!   Capture and Parametric Map as `image/png` (`archive::render`).
//!
//! Must not: log a query's values or a UID; decide who may see a result itself.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query as Params, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use tracing::{error, warn};

use super::{bad_request, not_found, ApiError, Authed, Shared};
use crate::archive::disclose::{self, Party, Queried, Retrieved};
use crate::archive::index::Instance;
use crate::archive::keys::{self, Level, Model};
use crate::archive::query::Query;
use crate::archive::Archive;
use crate::dicom::multipart::{self, MediaType};

/// What DICOMweb reads: the query index and the matching options of `[query]`.
pub struct Source {
    pub archive: Arc<Archive>,
    pub matching: crate::dicom::matching::Options,
}

/// The most matches one search returns; past it, a `Warning` says more may be asked for with
/// `offset` (PS3.18 8.3.4.4.1).
pub const MAX_RESULTS: usize = 1000;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const DICOM_JSON: &str = "application/dicom+json";

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/dicomweb/studies", get(search_studies))
        .route("/dicomweb/series", get(search_series))
        .route("/dicomweb/instances", get(search_instances))
        .route("/dicomweb/studies/{study}/series", get(search_study_series))
        .route("/dicomweb/studies/{study}/instances", get(search_study_instances))
        .route("/dicomweb/studies/{study}/series/{series}/instances", get(search_series_instances))
        .route("/dicomweb/studies/{study}", get(retrieve_study))
        .route("/dicomweb/studies/{study}/metadata", get(metadata_study))
        .route("/dicomweb/studies/{study}/series/{series}", get(retrieve_series))
        .route("/dicomweb/studies/{study}/series/{series}/metadata", get(metadata_series))
        .route("/dicomweb/studies/{study}/series/{series}/instances/{instance}", get(retrieve_instance))
        .route("/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata", get(metadata_instance))
        .route("/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered", get(rendered_instance))
}

type Pairs = Params<Vec<(String, String)>>;
type ParamsResult = Result<Pairs, axum::extract::rejection::QueryRejection>;

fn source(state: &Shared) -> Result<&Source, ApiError> {
    state.dicomweb.as_ref().ok_or_else(|| not_found("DICOMweb search and retrieve are off ([query] enabled = false)"))
}

fn not_acceptable(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_ACCEPTABLE, why.into())
}

fn unavailable(why: &str) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, why.into())
}

/// The media types an `Accept` value lists (absent: anything).
fn accepted(headers: &HeaderMap) -> Result<Vec<MediaType>, ApiError> {
    let Some(value) = headers.get(header::ACCEPT) else { return Ok(Vec::new()) };
    let text = value.to_str().map_err(|_| bad_request("the Accept header is not ASCII"))?;
    text.split(',').filter(|s| !s.trim().is_empty()).map(|s| MediaType::parse(s).ok_or_else(|| bad_request("the Accept header cannot be parsed"))).collect()
}

/// Whether `types` (an Accept list) admits one of `ours` (or says `*/*` / `type/*`).
fn admits(types: &[MediaType], ours: &[&str]) -> bool {
    types.is_empty()
        || types.iter().filter(|t| t.param("q").and_then(|q| q.parse::<f32>().ok()) != Some(0.0)).any(|t| {
            t.essence == "*/*" || ours.iter().any(|o| t.essence == *o || (t.essence.ends_with("/*") && o.starts_with(t.essence.trim_end_matches('*'))))
        })
}

fn accept_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if admits(&accepted(headers)?, &[DICOM_JSON, "application/json"]) {
        Ok(())
    } else {
        Err(not_acceptable(format!("searches and metadata are answered as {DICOM_JSON} (or application/json) only")))
    }
}

/// A retrieve's Accept: multipart/related of application/dicom in Explicit VR Little Endian
/// (as the objects are stored), or anything.
fn accept_dicom(headers: &HeaderMap) -> Result<(), ApiError> {
    let types = accepted(headers)?;
    let fits = |t: &MediaType| {
        let ts_ok = t.param("transfer-syntax").is_none_or(|ts| ts == "*" || ts == EXPLICIT_LE);
        match t.essence.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => t.param("type").is_none_or(|ty| ty.eq_ignore_ascii_case("application/dicom")) && ts_ok,
            _ => false,
        }
    };
    if types.is_empty() || types.iter().any(fits) {
        Ok(())
    } else {
        Err(not_acceptable(format!(
            "instances are served as multipart/related; type=\"application/dicom\" in Explicit VR Little Endian ({EXPLICIT_LE}, transfer-syntax={EXPLICIT_LE} or *) only"
        )))
    }
}

/// A UID in a path: digits and dots, at most 64 (anything else would be read as a pattern or
/// a list by the matcher).
fn uid(value: &str) -> Result<String, ApiError> {
    if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad_request("a UID in the path is 1-64 digits and dots"));
    }
    Ok(value.to_string())
}

/// A keyword or tag (`PatientID`, `00100020`) of the data dictionary: its tag and VR.
fn attribute(name: &str) -> Option<(Tag, VR)> {
    if let Some(k) = keys::KEYS.iter().find(|k| k.name == name) {
        return Some((k.tag, k.vr));
    }
    let entry = if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        let (g, e) = (u16::from_str_radix(&name[..4], 16).ok()?, u16::from_str_radix(&name[4..], 16).ok()?);
        if let Some(k) = keys::key(Tag(g, e)) {
            return Some((k.tag, k.vr));
        }
        StandardDataDictionary.by_tag(Tag(g, e))
    } else {
        StandardDataDictionary.by_name(name)
    };
    let entry = entry?;
    let tag = entry.tag_range().inner();
    Some((tag, entry.vr().relaxed()))
}

/// The attributes a search returns at `level` without `includefield` (PS3.18 Tables 10.6.3-3
/// to -5, those the index holds).
fn defaults(level: Level) -> &'static [Tag] {
    match level {
        Level::Patient | Level::Study => &[
            tags::STUDY_DATE,
            tags::STUDY_TIME,
            tags::ACCESSION_NUMBER,
            tags::MODALITIES_IN_STUDY,
            tags::REFERRING_PHYSICIAN_NAME,
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::PATIENT_BIRTH_DATE,
            tags::PATIENT_SEX,
            tags::STUDY_INSTANCE_UID,
            tags::STUDY_ID,
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        ],
        Level::Series => &[tags::MODALITY, tags::SERIES_DESCRIPTION, tags::SERIES_INSTANCE_UID, tags::SERIES_NUMBER, tags::NUMBER_OF_SERIES_RELATED_INSTANCES],
        Level::Image => &[tags::SOP_CLASS_UID, tags::SOP_INSTANCE_UID, tags::INSTANCE_NUMBER],
    }
}

fn empty(tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
    match vr {
        VR::SQ => DataElement::new(tag, VR::SQ, DataSetSequence::new(Vec::<InMemDicomObject>::new(), Length::UNDEFINED)),
        vr => DataElement::new(tag, vr, PrimitiveValue::Empty),
    }
}

/// A search's request: the C-FIND identifier its parameters make, and the page asked for.
#[derive(Debug)]
struct Search {
    identifier: InMemDicomObject,
    limit: usize,
    offset: usize,
    /// `limit` was not given and the matches were cut at `MAX_RESULTS`.
    capped: bool,
}

/// Read a search's query parameters at `level`, below `study` and `series` where the path names
/// them (PS3.18 8.3.4).
fn search_request(params: &[(String, String)], level: Level, study: Option<&str>, series: Option<&str>) -> Result<Search, ApiError> {
    let mut id = InMemDicomObject::new_empty();
    id.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from(level.as_str())));
    let (mut limit, mut offset, mut all) = (None, 0usize, false);
    let mut include = Vec::new();
    let number = |name: &str, v: &str| v.trim().parse::<usize>().map_err(|_| bad_request(format!("{name} must be a non-negative integer")));
    for (name, value) in params {
        match name.as_str() {
            "limit" => limit = Some(number("limit", value)?),
            "offset" => offset = number("offset", value)?,
            "fuzzymatching" => match value.as_str() {
                "false" => {}
                "true" => return Err(bad_request("fuzzymatching=true is not supported: names are matched as C-FIND matches them (wild cards * and ?)")),
                _ => return Err(bad_request("fuzzymatching must be true or false")),
            },
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        all = true;
                    } else {
                        include.push(attribute(field).ok_or_else(|| bad_request(format!("includefield: unknown attribute {:?}", short(field))))?);
                    }
                }
            }
            // The Accept header's alternative (PS3.18 8.3.3.1): checked with the header.
            "accept" | "charset" => {}
            n if n.contains('.') => return Err(bad_request("matching on attributes inside sequences (Sequence.Attribute) is not supported")),
            n => {
                let (tag, vr) = attribute(n).ok_or_else(|| bad_request(format!("unknown query parameter {:?}", short(n))))?;
                if vr == VR::SQ {
                    return Err(bad_request(format!("{} is a sequence: name it in includefield, match on it over DIMSE", short(n))));
                }
                if id.get(tag).is_some() {
                    return Err(bad_request(format!("{} is given twice (a list is one value, comma separated)", short(n))));
                }
                // A list of UIDs is comma separated in a URL (PS3.18 8.3.4.1), `\` in DICOM.
                let value = if vr == VR::UI { value.replace(',', "\\") } else { value.clone() };
                id.put(if value.is_empty() { empty(tag, vr) } else { DataElement::new(tag, vr, PrimitiveValue::from(value)) });
            }
        }
    }
    for (tag, path_value, name) in [(tags::STUDY_INSTANCE_UID, study, "StudyInstanceUID"), (tags::SERIES_INSTANCE_UID, series, "SeriesInstanceUID")] {
        if let Some(v) = path_value {
            if id.get(tag).is_some() {
                return Err(bad_request(format!("{name} is in the path; it is not also a query parameter")));
            }
            id.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(v)));
        }
    }
    // What comes back: the level's defaults, the levels' above it where the path names none of
    // them, the unique keys of the levels above, every key the index holds (`all`), or the
    // attributes named.
    let mut wanted: Vec<Tag> = defaults(level).to_vec();
    if level >= Level::Series {
        wanted.push(tags::STUDY_INSTANCE_UID);
        if study.is_none() {
            wanted.extend_from_slice(defaults(Level::Study));
        }
    }
    if level == Level::Image {
        wanted.push(tags::SERIES_INSTANCE_UID);
        if series.is_none() {
            wanted.extend_from_slice(defaults(Level::Series));
        }
    }
    if all {
        wanted.extend(keys::KEYS.iter().filter(|k| k.level <= level).map(|k| k.tag));
    }
    for tag in wanted {
        if id.get(tag).is_none() {
            let vr = keys::key(tag).map(|k| k.vr).unwrap_or(VR::UN);
            id.put(empty(tag, vr));
        }
    }
    for (tag, vr) in include {
        if id.get(tag).is_none() {
            id.put(empty(tag, vr));
        }
    }
    let capped = limit.is_none();
    Ok(Search { identifier: id, limit: limit.unwrap_or(MAX_RESULTS).min(MAX_RESULTS), offset, capped })
}

/// A name from a request, bounded for an error message (never logged).
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

async fn search_studies(state: State<Shared>, user: Authed, headers: HeaderMap, params: ParamsResult) -> Result<Response, ApiError> {
    search(state, user, headers, params, Level::Study, None, None).await
}

async fn search_series(state: State<Shared>, user: Authed, headers: HeaderMap, params: ParamsResult) -> Result<Response, ApiError> {
    search(state, user, headers, params, Level::Series, None, None).await
}

async fn search_instances(state: State<Shared>, user: Authed, headers: HeaderMap, params: ParamsResult) -> Result<Response, ApiError> {
    search(state, user, headers, params, Level::Image, None, None).await
}

async fn search_study_series(
    state: State<Shared>,
    user: Authed,
    headers: HeaderMap,
    Path(study): Path<String>,
    params: ParamsResult,
) -> Result<Response, ApiError> {
    search(state, user, headers, params, Level::Series, Some(uid(&study)?), None).await
}

async fn search_study_instances(
    state: State<Shared>,
    user: Authed,
    headers: HeaderMap,
    Path(study): Path<String>,
    params: ParamsResult,
) -> Result<Response, ApiError> {
    search(state, user, headers, params, Level::Image, Some(uid(&study)?), None).await
}

async fn search_series_instances(
    state: State<Shared>,
    user: Authed,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    params: ParamsResult,
) -> Result<Response, ApiError> {
    search(state, user, headers, params, Level::Image, Some(uid(&study)?), Some(uid(&series)?)).await
}

async fn search(
    State(state): State<Shared>,
    Authed(user): Authed,
    headers: HeaderMap,
    params: ParamsResult,
    level: Level,
    study: Option<String>,
    series: Option<String>,
) -> Result<Response, ApiError> {
    let src = source(&state)?;
    let Params(params) = params.map_err(|_| bad_request("the query string cannot be read (name=value pairs, percent-encoded)"))?;
    accept_json(&headers)?;
    if let Some((_, a)) = params.iter().find(|(n, _)| n == "accept") {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, a.parse().map_err(|_| bad_request("the accept parameter is not a media type"))?);
        accept_json(&h)?;
    }
    let request = search_request(&params, level, study.as_deref(), series.as_deref())?;
    let query = Query::parse_relational(&request.identifier, Model::StudyRoot, src.matching).map_err(|e| bad_request(e.comment))?;
    let snapshot = src.archive.snapshot().await.map_err(|error| {
        error!(%error, "the query index could not be refreshed");
        unavailable("the index of the AI results could not be read")
    })?;
    let mut found = Vec::new();
    let mut more = false;
    for (i, hit) in query.matches(&snapshot).skip(request.offset).enumerate() {
        if i == request.limit {
            more = true;
            break;
        }
        let mut r = query.response(&hit, state.ae_title.as_str());
        r.remove_element(tags::QUERY_RETRIEVE_LEVEL);
        found.push(crate::dicom::json::to_json(&r));
    }
    drop(snapshot);
    let details = Queried {
        model: Model::StudyRoot.as_str().into(),
        level: level.as_str().into(),
        matches: found.len() as u64,
        cancelled: false,
        via: Some("QIDO-RS".into()),
    };
    src.archive.record_query(&Party::User(user.name.clone()), details).await.map_err(|error| {
        error!(%error, "recording a search in the audit trail failed; nothing is answered");
        unavailable("the audit trail could not be written")
    })?;
    let mut rsp = ([(header::CONTENT_TYPE, DICOM_JSON)], serde_json::Value::Array(found).to_string()).into_response();
    let mut warnings = Vec::new();
    if query.unsupported_keys {
        warnings.push("299 triage-node \"Some query attributes are not supported for matching and were ignored (see the conformance statement)\"");
    }
    if more && request.capped {
        warnings.push("299 triage-node \"The number of results exceeded the maximum supported by the server. Additional results can be requested.\"");
    }
    for w in warnings {
        rsp.headers_mut().append(header::WARNING, header::HeaderValue::from_static(w));
    }
    Ok(rsp)
}

/// The objects a retrieve names (study, series or instance), or 404.
async fn objects(src: &Source, study: &str, series: Option<&str>, instance: Option<&str>) -> Result<(Level, Vec<Arc<Instance>>), ApiError> {
    let study = uid(study)?;
    let series = series.map(uid).transpose()?;
    let instance = instance.map(uid).transpose()?;
    let mut id = InMemDicomObject::new_empty();
    let level = if instance.is_some() {
        Level::Image
    } else if series.is_some() {
        Level::Series
    } else {
        Level::Study
    };
    id.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from(level.as_str())));
    for (tag, v) in [(tags::STUDY_INSTANCE_UID, Some(study)), (tags::SERIES_INSTANCE_UID, series), (tags::SOP_INSTANCE_UID, instance)] {
        if let Some(v) = v {
            id.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(v)));
        }
    }
    let query = Query::parse_retrieve(&id, Model::StudyRoot).map_err(|e| bad_request(e.comment))?;
    let snapshot = src.archive.snapshot().await.map_err(|error| {
        error!(%error, "the query index could not be refreshed");
        unavailable("the index of the AI results could not be read")
    })?;
    let found = disclose::objects(&query, &snapshot);
    if found.is_empty() {
        return Err(not_found(format!("no AI result {} with these UIDs", level.as_str().to_ascii_lowercase().replace("image", "instance"))));
    }
    Ok((level, found))
}

async fn record(src: &Source, user: &str, operation: &str, level: Level, objects: &[Arc<Instance>]) -> Result<(), ApiError> {
    let details = Retrieved {
        operation: operation.into(),
        destination: user.into(),
        model: Model::StudyRoot.as_str().into(),
        level: level.as_str().into(),
        objects: objects.len() as u64,
        sop_instances: objects.iter().map(|o| o.uid.clone()).collect(),
    };
    src.archive.record_retrieve(&Party::User(user.into()), details).await.map_err(|error| {
        error!(%error, "recording a retrieve in the audit trail failed; nothing is sent");
        unavailable("the audit trail could not be written")
    })
}

async fn retrieve_study(state: State<Shared>, user: Authed, headers: HeaderMap, Path(study): Path<String>) -> Result<Response, ApiError> {
    retrieve(state, user, headers, study, None, None).await
}

async fn retrieve_series(state: State<Shared>, user: Authed, headers: HeaderMap, Path((study, series)): Path<(String, String)>) -> Result<Response, ApiError> {
    retrieve(state, user, headers, study, Some(series), None).await
}

async fn retrieve_instance(
    state: State<Shared>,
    user: Authed,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    retrieve(state, user, headers, study, Some(series), Some(instance)).await
}

/// The objects as `multipart/related; type="application/dicom"`, one part each, re-identified
/// just before its part is written.
async fn retrieve(
    State(state): State<Shared>,
    Authed(user): Authed,
    headers: HeaderMap,
    study: String,
    series: Option<String>,
    instance: Option<String>,
) -> Result<Response, ApiError> {
    let src = source(&state)?;
    accept_dicom(&headers)?;
    let (level, found) = objects(src, &study, series.as_deref(), instance.as_deref()).await?;
    record(src, &user.name, "WADO-RS", level, &found).await?;
    let boundary = multipart::new_boundary();
    let archive = src.archive.clone();
    let found = Arc::new(found);
    let part_type = format!("application/dicom; transfer-syntax={EXPLICIT_LE}");
    let body = futures_util::stream::unfold(Some((0usize, multipart::Writer::new(&boundary))), move |step| {
        let (archive, found, part_type) = (archive.clone(), found.clone(), part_type.clone());
        async move {
            let (i, mut writer) = step?;
            let Some(object) = found.get(i) else {
                return Some((Ok::<Bytes, std::io::Error>(writer.finish()), None));
            };
            match part10(&archive, object).await {
                Ok(file) => {
                    let head = writer.part(&part_type);
                    let mut chunk = Vec::with_capacity(head.len() + file.len());
                    chunk.extend_from_slice(&head);
                    chunk.extend_from_slice(&file);
                    Some((Ok(Bytes::from(chunk)), Some((i + 1, writer))))
                }
                Err(why) => {
                    // The status is sent: the body ends short of its close delimiter.
                    warn!(error = %why, object = i, "a result object could not be re-identified for WADO-RS; the response is cut short");
                    Some((Err(std::io::Error::other(why)), None))
                }
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, multipart::related_content_type("application/dicom", &boundary))], Body::from_stream(body)).into_response())
}

/// An indexed object re-identified, as a Part 10 file (Explicit VR Little Endian): the data set
/// is byte for byte what the C-MOVE SCP sends in that transfer syntax.
async fn part10(archive: &Archive, object: &Arc<Instance>) -> Result<Vec<u8>, String> {
    let r = archive.reidentified(object).await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || crate::results::dataset::part10(&r.object, &r.sop_class_uid, &r.sop_instance_uid)).await.map_err(|e| e.to_string())?
}

async fn metadata_study(state: State<Shared>, user: Authed, headers: HeaderMap, Path(study): Path<String>) -> Result<Response, ApiError> {
    metadata(state, user, headers, study, None, None).await
}

async fn metadata_series(state: State<Shared>, user: Authed, headers: HeaderMap, Path((study, series)): Path<(String, String)>) -> Result<Response, ApiError> {
    metadata(state, user, headers, study, Some(series), None).await
}

async fn metadata_instance(
    state: State<Shared>,
    user: Authed,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    metadata(state, user, headers, study, Some(series), Some(instance)).await
}

/// Each object's attributes as DICOM JSON (bulk data over `dicom::json::INLINE_MAX` left out).
async fn metadata(
    State(state): State<Shared>,
    Authed(user): Authed,
    headers: HeaderMap,
    study: String,
    series: Option<String>,
    instance: Option<String>,
) -> Result<Response, ApiError> {
    let src = source(&state)?;
    accept_json(&headers)?;
    let (level, found) = objects(src, &study, series.as_deref(), instance.as_deref()).await?;
    let mut out = Vec::with_capacity(found.len());
    for object in &found {
        let r = src.archive.reidentified(object).await.map_err(|error| {
            warn!(%error, "a result object could not be re-identified for WADO-RS metadata");
            unavailable("a result object could not be read")
        })?;
        out.push(crate::dicom::json::to_json(&r.object));
    }
    record(src, &user.name, "WADO-RS metadata", level, &found).await?;
    Ok(([(header::CONTENT_TYPE, DICOM_JSON)], serde_json::Value::Array(out).to_string()).into_response())
}

/// The heatmap Secondary Capture or Parametric Map of one instance as a PNG picture.
async fn rendered_instance(
    State(state): State<Shared>,
    Authed(user): Authed,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let src = source(&state)?;
    if !admits(&accepted(&headers)?, &["image/png"]) {
        return Err(not_acceptable("rendered pictures are image/png only"));
    }
    let (level, found) = objects(src, &study, Some(&series), Some(&instance)).await?;
    let r = src.archive.reidentified(&found[0]).await.map_err(|error| {
        warn!(%error, "a result object could not be re-identified for WADO-RS rendered");
        unavailable("a result object could not be read")
    })?;
    let png = tokio::task::spawn_blocking(move || crate::archive::render::png(&r.object))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed".into()))?
        .map_err(|e| match e {
            crate::archive::render::RenderError::NotAnImage => not_acceptable(e.to_string()),
            other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })?;
    record(src, &user.name, "WADO-RS rendered", level, &found).await?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn text(o: &InMemDicomObject, tag: Tag) -> Option<String> {
        o.get(tag).map(|e| e.to_str().map(|s| s.to_string()).unwrap_or_default())
    }

    #[test]
    fn parameters_become_the_identifier_c_find_matches() {
        let s = search_request(
            &params(&[("PatientID", "QR-*"), ("00080020", "20240101-"), ("StudyInstanceUID", "1.2,1.3"), ("limit", "5")]),
            Level::Study,
            None,
            None,
        )
        .unwrap();
        let id = &s.identifier;
        assert_eq!(text(id, tags::PATIENT_ID).as_deref(), Some("QR-*"));
        assert_eq!(text(id, tags::STUDY_DATE).as_deref(), Some("20240101-"));
        assert_eq!(text(id, tags::STUDY_INSTANCE_UID).as_deref(), Some("1.2\\1.3"), "a comma list is a UID list");
        assert_eq!(text(id, tags::NUMBER_OF_STUDY_RELATED_INSTANCES).as_deref(), Some(""), "a default return key");
        assert_eq!((s.limit, s.offset, s.capped), (5, 0, false));
        let s = search_request(&params(&[("includefield", "all")]), Level::Image, Some("1.2"), None).unwrap();
        assert!(s.identifier.get(tags::CONTRIBUTING_EQUIPMENT_SEQUENCE).is_some() && s.identifier.get(tags::MODALITY).is_some());
        assert_eq!((s.limit, s.capped), (MAX_RESULTS, true));
        let s = search_request(&params(&[("includefield", "InstitutionName,00081030")]), Level::Study, None, None).unwrap();
        assert!(s.identifier.get(tags::INSTITUTION_NAME).is_some() && s.identifier.get(tags::STUDY_DESCRIPTION).is_some());
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        let refused = |pairs: &[(&str, &str)]| search_request(&params(pairs), Level::Study, None, None).unwrap_err();
        for (pairs, why) in [
            (&[("fuzzymatching", "true")][..], "fuzzymatching=true is not supported"),
            (&[("PatientIDx", "1")][..], "unknown query parameter"),
            (&[("limit", "-1")][..], "limit must be"),
            (&[("offset", "x")][..], "offset must be"),
            (&[("includefield", "Nope")][..], "includefield: unknown attribute"),
            (&[("ConceptNameCodeSequence.CodeValue", "1")][..], "inside sequences"),
            (&[("PatientID", "a"), ("PatientID", "b")][..], "given twice"),
        ] {
            let e = refused(pairs);
            assert_eq!(e.0, StatusCode::BAD_REQUEST);
            assert!(e.1.contains(why), "{pairs:?}: {}", e.1);
        }
        assert!(search_request(&params(&[("StudyInstanceUID", "1")]), Level::Series, Some("1.2"), None).is_err(), "in the path and the query");
        assert!(uid("1.2.3").is_ok() && uid("1.*").is_err() && uid("1\\2").is_err() && uid("").is_err());
    }

    #[test]
    fn accept_headers_are_read_as_media_type_lists() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, v.parse().unwrap());
            m
        };
        assert!(accept_json(&HeaderMap::new()).is_ok());
        for ok in ["application/dicom+json", "application/json", "*/*", "application/*", "text/html, application/dicom+json;q=0.5"] {
            assert!(accept_json(&h(ok)).is_ok(), "{ok}");
        }
        for bad in ["application/dicom+xml", "multipart/related; type=\"application/dicom+xml\"", "application/dicom+json;q=0"] {
            assert_eq!(accept_json(&h(bad)).unwrap_err().0, StatusCode::NOT_ACCEPTABLE, "{bad}");
        }
        for ok in ["multipart/related; type=\"application/dicom\"", "multipart/related; type=application/dicom; transfer-syntax=*", "*/*"] {
            assert!(accept_dicom(&h(ok)).is_ok(), "{ok}");
        }
        let e = accept_dicom(&h("multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.50")).unwrap_err();
        assert!(e.0 == StatusCode::NOT_ACCEPTABLE && e.1.contains(EXPLICIT_LE), "{}", e.1);
        assert!(accept_dicom(&h("application/dicom+json")).is_err());
    }
}
