//! The JSON API under `/api` (described by `openapi.json`, served at `/api/openapi.json`):
//! the worklist, one study with its findings, heatmaps and result objects, the reading state,
//! and, for the admin role, retracting a study's AI results and AE administration. A retracted
//! study is shown by id to admins only. Each handler validates its input, calls one typed
//! operation of `admin`, and answers JSON (or a PNG, or a DICOM file).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{Role, User};
use super::{bad_request, not_found, AdminUser, ApiError, Authed, Shared};
use crate::admin::worklist::{Item, Page, PageRequest, Viewer};
use crate::admin::{self, ae::AeRegistration};
use crate::db::{ObjectKind, ReadingAction, ReadingState, StudyResult, WorklistFilter, WorklistSort};
use crate::domain::AeRole;
use crate::results::worklist::StudyPriority;

pub const OPENAPI: &str = include_str!("openapi.json");

/// How many of the API's reading requests run at once: half the cores, at most 2 (half of
/// SQLite's pool of 4). The others wait their turn (within `http.request_timeout`), so a flood of
/// readers can take neither every core nor every database connection from ingest (issue 36: 16
/// clients polling `/api/worklist` had slowed a 300-slice C-STORE 4.5x).
fn reading_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 2))
}

async fn in_turn(slots: Arc<tokio::sync::Semaphore>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let _slot = slots.acquire_owned().await; // never closed
    next.run(req).await
}

pub fn routes() -> axum::Router<Shared> {
    let slots = Arc::new(tokio::sync::Semaphore::new(reading_slots()));
    let reading = axum::Router::new()
        .route("/api/worklist", get(worklist))
        .route("/api/studies/{id}", get(study))
        .route("/api/studies/{id}/heatmaps/{n}", get(heatmap))
        .route("/api/studies/{id}/objects/{n}", get(object))
        .route("/api/studies/{id}/similar", get(similar))
        .route("/api/feedback/export", get(export_feedback))
        .route("/api/performance", get(performance))
        .route("/api/drift", get(drift))
        .route("/api/shadow", get(shadow))
        .route_layer(axum::middleware::from_fn(move |req, next| in_turn(slots.clone(), req, next)));
    axum::Router::new()
        .merge(reading)
        .route("/api/openapi.json", get(openapi))
        .route("/api/me", get(me))
        .route("/api/studies/{id}/claim", post(claim))
        .route("/api/studies/{id}/read", post(mark_read))
        .route("/api/studies/{id}/release", post(release))
        .route("/api/studies/{id}/retract", post(retract))
        .route("/api/studies/{id}/acknowledge", post(acknowledge))
        .route("/api/studies/{id}/feedback", axum::routing::put(give_feedback))
        .route("/api/aes", get(list_aes).post(add_ae))
        .route("/api/aes/{title}", axum::routing::put(edit_ae).delete(remove_ae))
        .route("/api/aes/{title}/enable", post(enable_ae))
        .route("/api/aes/{title}/disable", post(disable_ae))
        .route("/api/aes/{title}/echo", post(echo_ae))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Serialize)]
struct Me {
    name: String,
    role: &'static str,
    /// The page's reload interval, seconds.
    refresh_seconds: u64,
}

async fn me(State(state): State<Shared>, Authed(user): Authed) -> Json<Me> {
    Json(Me { name: user.name, role: user.role.as_str(), refresh_seconds: state.refresh.as_secs() })
}

/// The worklist's query string. Unknown parameters are refused, so a misspelt filter is an
/// error rather than a silently unfiltered list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklistParams {
    /// Comma-separated priorities.
    priority: Option<String>,
    finding: Option<String>,
    modality: Option<String>,
    model: Option<String>,
    /// Reading state: unread, claimed, read.
    state: Option<String>,
    /// RFC 3339 time or milliseconds since the epoch.
    since: Option<String>,
    until: Option<String>,
    /// priority (default), newest, oldest.
    sort: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// A time as RFC 3339 (`2026-12-02T10:00:00Z`) or epoch milliseconds.
fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|_| bad_request(format!("{name} must be an RFC 3339 time (2026-12-02T10:00:00Z) or milliseconds since the epoch")))?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad_request(format!("{name} is before 1970")))?.as_millis();
    Ok(ms as i64)
}

/// A filter value: a code, a model name or a label (no separators or control characters).
fn filter_value(name: &str, s: &Option<String>) -> Result<Option<String>, ApiError> {
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.len() <= 64 && v.chars().all(|c| !c.is_control() && c != '|') => Ok(Some(v.to_string())),
        Some(_) => Err(bad_request(format!("{name} must be at most 64 characters, without '|' or control characters"))),
    }
}

impl WorklistParams {
    pub fn request(&self) -> Result<PageRequest, ApiError> {
        let mut priorities = Vec::new();
        for p in self.priority.as_deref().unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = StudyPriority::parse(p)
                .ok_or_else(|| bad_request(format!("unknown priority {p:?}: URGENT, POSITIVE, FAILED, NOT_ANALYSED, NEGATIVE or NOT_APPLICABLE")))?;
            priorities.push(parsed.as_str().to_string());
        }
        let reading = match self.state.as_deref() {
            None | Some("") => None,
            Some(s) => Some(s.parse::<ReadingState>().map_err(|_| bad_request("state must be unread, claimed or read"))?),
        };
        let sort = match self.sort.as_deref() {
            None | Some("") | Some("priority") => WorklistSort::Priority,
            Some("newest") => WorklistSort::Newest,
            Some("oldest") => WorklistSort::Oldest,
            Some(_) => return Err(bad_request("sort must be priority, newest or oldest")),
        };
        let filter = WorklistFilter {
            priorities,
            finding: filter_value("finding", &self.finding)?,
            modality: filter_value("modality", &self.modality)?.map(|m| m.to_uppercase()),
            model: filter_value("model", &self.model)?,
            reading,
            received_since_ms: self.since.as_deref().filter(|s| !s.is_empty()).map(|s| parse_time("since", s)).transpose()?,
            received_until_ms: self.until.as_deref().filter(|s| !s.is_empty()).map(|s| parse_time("until", s)).transpose()?,
        };
        Ok(PageRequest { filter, sort, cursor: self.cursor.clone().filter(|c| !c.is_empty()), limit: self.limit.unwrap_or(50) })
    }
}

async fn worklist(
    State(state): State<Shared>,
    Authed(user): Authed,
    params: Result<Query<WorklistParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let req = params.request()?;
    let viewer = Viewer { keys: &state.keys, user: &user.name, recorded: &state.recorded_views };
    Ok(Json(admin::worklist::page(&state.db, Some(viewer), &req).await?))
}

fn study_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().ok().filter(|i| *i > 0).ok_or_else(|| bad_request("the study id must be a positive integer (the worklist's study_id)"))
}

#[derive(Serialize)]
struct FindingView {
    label: String,
    probability: f64,
    positive: bool,
    urgent: bool,
    tier: String,
    /// The heatmap's URLs (positive findings with a map): `?size=thumbnail` or `full`.
    heatmap: Option<String>,
}

#[derive(Serialize)]
struct ResultView {
    model: String,
    model_version: String,
    demonstration: bool,
    intended_use: String,
    limits: String,
    state: String,
    priority: Option<String>,
    error: Option<String>,
    images_inferred: i64,
    findings: Vec<FindingView>,
}

#[derive(Serialize)]
struct ObjectView {
    kind: String,
    /// The de-identified object as the node keeps it (the PACS receives it re-identified).
    url: String,
}

#[derive(Serialize)]
struct StudyView {
    #[serde(flatten)]
    item: Item,
    results: Vec<ResultView>,
    objects: Vec<ObjectView>,
    /// The on-call notifications made for the study (each rule, each escalation), oldest first.
    notifications: Vec<crate::db::Notification>,
    /// Readers' verdicts on its findings.
    feedback: Vec<crate::db::Feedback>,
}

/// The positive findings of `results` that have a map (a model may give none), in model
/// order: what `/heatmaps/{n}` counts.
fn positive_findings(results: &[StudyResult]) -> Vec<(&StudyResult, &crate::db::Finding)> {
    results.iter().flat_map(|r| r.findings.iter().filter(|f| has_heatmap(f)).map(move |f| (r, f))).collect()
}

fn has_heatmap(f: &crate::db::Finding) -> bool {
    f.positive && f.cam_rows > 0 && f.cam_cols > 0
}

/// The study's result objects, SCs then SRs, newest first within each: what `/objects/{n}`
/// counts.
async fn objects(state: &Shared, study: i64) -> Result<Vec<(ObjectKind, String)>, ApiError> {
    Ok(admin::worklist::result_objects(&state.db, study).await?)
}

/// A study's worklist row as `user` may see it: a retracted one for admins only.
async fn visible_row(state: &Shared, user: &User, id: i64) -> Result<crate::db::WorklistRow, ApiError> {
    let row = admin::worklist::row(&state.db, id).await?.ok_or_else(|| not_found(format!("no worklist study {id}")))?;
    if row.retraction.is_some() && user.role < Role::Admin {
        return Err(not_found(format!("study {id}'s AI results were retracted: it is no longer on the worklist")));
    }
    Ok(row)
}

async fn study(State(state): State<Shared>, Authed(user): Authed, Path(id): Path<String>) -> Result<Json<StudyView>, ApiError> {
    let id = study_id(&id)?;
    let row = visible_row(&state, &user, id).await?;
    let results = admin::worklist::results(&state.db, &row).await?;
    let viewer = Viewer { keys: &state.keys, user: &user.name, recorded: &state.recorded_views };
    let item = admin::worklist::items(&state.db, Some(viewer), std::slice::from_ref(&row)).await?.remove(0);
    let mut n = 0;
    let results = results
        .iter()
        .map(|r| ResultView {
            model: r.model.clone(),
            model_version: r.model_version.clone(),
            demonstration: r.demonstration,
            intended_use: r.intended_use.clone(),
            limits: r.limits.clone(),
            state: r.state.as_str().into(),
            priority: r.priority.map(|p| p.as_str().to_uppercase()),
            error: r.error.clone(),
            images_inferred: r.images_inferred,
            findings: r
                .findings
                .iter()
                .map(|f| {
                    let heatmap = has_heatmap(f).then(|| {
                        n += 1;
                        format!("/api/studies/{id}/heatmaps/{}", n - 1)
                    });
                    FindingView { label: f.label.clone(), probability: f.probability, positive: f.positive, urgent: f.urgent, tier: f.tier.clone(), heatmap }
                })
                .collect(),
        })
        .collect();
    let objects = objects(&state, id)
        .await?
        .into_iter()
        .enumerate()
        .map(|(i, (kind, _))| ObjectView { kind: kind.as_str().into(), url: format!("/api/studies/{id}/objects/{i}") })
        .collect();
    let notifications = admin::notify::study_notifications(&state.db, id).await?;
    let feedback = admin::feedback::of_study(&state.db, id).await?;
    Ok(Json(StudyView { item, results, objects, notifications, feedback }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimilarParams {
    k: Option<usize>,
}

#[derive(Serialize)]
struct SimilarView {
    /// What the nearness means: the model's embedding distance, not a diagnosis.
    meaning: &'static str,
    models: Vec<admin::similar::SimilarCases>,
}

/// `GET /api/studies/{id}/similar?k=5`: per model, the k nearest earlier studies with a
/// confirmed finding (a reader agreed), by embedding distance; no other patient named.
async fn similar(
    State(state): State<Shared>,
    Authed(user): Authed,
    Path(id): Path<String>,
    params: Result<Query<SimilarParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SimilarView>, ApiError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let id = study_id(&id)?;
    let k = params.k.unwrap_or(5);
    if !(1..=admin::similar::K_MAX).contains(&k) {
        return Err(bad_request(format!("k must be 1 to {}", admin::similar::K_MAX)));
    }
    visible_row(&state, &user, id).await?;
    let models = admin::similar::lookup(&state.db, &state.similar, id, k, &user.name).await?;
    Ok(Json(SimilarView { meaning: admin::similar::MEANING, models }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeatmapParams {
    size: Option<String>,
}

/// Long side of a thumbnail.
const THUMBNAIL: usize = 256;

/// Heatmaps drawn at once (each decodes a key image and blends it on a blocking thread).
pub const HEATMAP_RENDERS: usize = 2;
/// How long a heatmap request waits for a turn to be drawn before 503.
const RENDER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A turn to draw a heatmap: one of `renders`' permits, waited for at most `wait`; past that
/// 503 (with Retry-After), so that uncached pictures never take more than a few threads.
pub async fn render_permit(renders: &Arc<tokio::sync::Semaphore>, wait: std::time::Duration) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(wait, renders.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "other heatmaps are being drawn; try again shortly".into())),
    }
}

async fn heatmap(
    State(state): State<Shared>,
    Authed(user): Authed,
    Path((id, n)): Path<(String, usize)>,
    params: Result<Query<HeatmapParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    let id = study_id(&id)?;
    let size = match params.size.as_deref() {
        None | Some("full") => state.heatmap_max,
        Some("thumbnail") => THUMBNAIL,
        Some(_) => return Err(bad_request("size must be thumbnail or full")),
    };
    let row = visible_row(&state, &user, id).await?;
    let key = (id, row.result_at_ms, n, size);
    if let Some(png) = state.cached_picture(key) {
        return Ok(png_response(png));
    }
    let results = admin::worklist::results(&state.db, &row).await?;
    let findings = positive_findings(&results);
    let (result, finding) = findings.get(n).copied().ok_or_else(|| not_found(format!("study {id} has {} heatmaps", findings.len())))?;
    let manifest = state
        .manifests
        .iter()
        .find(|m| m.name == result.model)
        .cloned()
        .ok_or_else(|| not_found(format!("model {} is no longer loaded: its heatmap cannot be drawn", result.model)))?;
    let key_image = admin::worklist::instance(&state.db, finding.key_instance_id).await?.ok_or_else(|| not_found("the key image is no longer stored"))?;
    // Held until the drawing ends, even if the request gives up first.
    let permit = render_permit(&state.renders, RENDER_WAIT).await?;
    if let Some(png) = state.cached_picture(key) {
        return Ok(png_response(png));
    }
    let path = state.blobs.fetch(&key_image.path).await.map_err(unavailable)?;
    let (result, finding) = (result.clone(), finding.clone());
    let png = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        crate::results::heatmap_picture(&path, &manifest, &result, &finding, size).and_then(|rgb| crate::results::png_bytes(&rgb))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("rendering the heatmap: {e}")))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("rendering the heatmap: {e}")))?;
    let png = Arc::new(png);
    state.cache_picture(key, png.clone());
    Ok(png_response(png))
}

/// The store of files failed (a cluster's bucket unreachable): 503, the cause in the log only.
fn unavailable(error: crate::blobs::BlobError) -> ApiError {
    tracing::warn!(%error, "reading a stored object for the HTTP API failed");
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "the object store is unavailable; try again later".into())
}

fn png_response(png: Arc<Vec<u8>>) -> Response {
    // Not stored by the browser: the picture is of a patient (de-identified pixels, but still
    // theirs) and a reading-room workstation is shared; the node keeps rendered pictures itself.
    ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-store")], (*png).clone()).into_response()
}

async fn object(State(state): State<Shared>, Authed(user): Authed, Path((id, n)): Path<(String, usize)>) -> Result<Response, ApiError> {
    let id = study_id(&id)?;
    visible_row(&state, &user, id).await?;
    let all = objects(&state, id).await?;
    let (_, path) = all.get(n).ok_or_else(|| not_found(format!("study {id} has {} result objects", all.len())))?;
    let file = state.blobs.fetch(path).await.map_err(unavailable)?;
    let bytes = tokio::fs::read(file).await.map_err(|_| not_found("the result object is no longer on disk"))?;
    Ok(([(header::CONTENT_TYPE, "application/dicom"), (header::CACHE_CONTROL, "private, no-store")], bytes).into_response())
}

async fn reading(state: Shared, user: &str, id: &str, action: ReadingAction) -> Result<Json<admin::worklist::ReadingView>, ApiError> {
    let id = study_id(id)?;
    Ok(Json(admin::worklist::reading(&state.db, id, action, user).await?))
}

async fn claim(State(state): State<Shared>, Authed(user): Authed, Path(id): Path<String>) -> Result<Json<admin::worklist::ReadingView>, ApiError> {
    reading(state, &user.name, &id, ReadingAction::Claim).await
}

async fn mark_read(State(state): State<Shared>, Authed(user): Authed, Path(id): Path<String>) -> Result<Json<admin::worklist::ReadingView>, ApiError> {
    reading(state, &user.name, &id, ReadingAction::MarkRead).await
}

async fn release(State(state): State<Shared>, Authed(user): Authed, Path(id): Path<String>) -> Result<Json<admin::worklist::ReadingView>, ApiError> {
    reading(state, &user.name, &id, ReadingAction::Release).await
}

/// `POST /api/studies/{id}/acknowledge`: a reader acknowledges the study's on-call
/// notification (stops its escalation; audited).
async fn acknowledge(State(state): State<Shared>, Authed(user): Authed, Path(id): Path<String>) -> Result<Json<admin::notify::Acknowledgement>, ApiError> {
    let id = study_id(&id)?;
    visible_row(&state, &user, id).await?;
    Ok(Json(admin::notify::acknowledge(&state.db, crate::db::AckTarget::Study(id), &user.name, "api").await?))
}

/// `PUT /api/studies/{id}/feedback`: the signed-in reader's verdict on one finding (replaces
/// their earlier one; 409 once the study is marked read).
async fn give_feedback(
    State(state): State<Shared>,
    Authed(user): Authed,
    Path(id): Path<String>,
    body: JsonBody<admin::feedback::FeedbackInput>,
) -> Result<Json<crate::db::Feedback>, ApiError> {
    let id = study_id(&id)?;
    let Json(body) = body.map_err(|e| bad_request(e.body_text()))?;
    visible_row(&state, &user, id).await?;
    Ok(Json(admin::feedback::give(&state.db, &state.manifests, Some(&state.publisher), id, &user.name, &body).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    /// `csv` (the default) or `json`.
    format: Option<String>,
    model: Option<String>,
}

/// `GET /api/feedback/export` (admin): every verdict, de-identified, for the model's vendor.
async fn export_feedback(State(state): State<Shared>, AdminUser(_): AdminUser, Query(p): Query<ExportParams>) -> Result<Response, ApiError> {
    let model = filter_value("model", &p.model)?;
    let rows = admin::feedback::export(&state.db, model.as_deref()).await?;
    match p.format.as_deref() {
        None | Some("") | Some("csv") => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8"), (header::CONTENT_DISPOSITION, "attachment; filename=\"feedback.csv\"")],
            admin::feedback::csv(&rows),
        )
            .into_response()),
        Some("json") => Ok(Json(rows).into_response()),
        Some(_) => Err(bad_request("format must be csv or json")),
    }
}

/// `GET /api/performance` (admin): per model version, what it said and what readers concluded.
async fn performance(State(state): State<Shared>, AdminUser(_): AdminUser) -> Result<Json<Vec<admin::performance::ModelPerformance>>, ApiError> {
    Ok(Json(admin::performance::figures(&state.db, &state.drift.groups).await?))
}

/// `GET /api/drift`: every loaded model label's score drift (admin).
async fn drift(State(state): State<Shared>, AdminUser(_): AdminUser) -> Result<Json<Vec<admin::drift::LabelDrift>>, ApiError> {
    Ok(Json(state.drift.check(&state.db).await?))
}

/// `GET /api/shadow`: every shadow model against its live model (admin).
async fn shadow(State(state): State<Shared>, AdminUser(_): AdminUser) -> Result<Json<Vec<admin::shadow::ShadowComparison>>, ApiError> {
    Ok(Json(admin::shadow::compare(&state.db).await?))
}

/// `POST /api/studies/{id}/retract`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetractBody {
    /// Why (required; kept in the audit trail only).
    reason: String,
    /// Rejected for Patient Safety Reasons (113037) rather than for Quality Reasons (113001).
    #[serde(default)]
    patient_safety: bool,
}

async fn retract(
    State(state): State<Shared>,
    AdminUser(user): AdminUser,
    Path(id): Path<String>,
    body: JsonBody<RetractBody>,
) -> Result<Json<admin::results::Retracted>, ApiError> {
    let id = study_id(&id)?;
    let Json(body) = body.map_err(|e| bad_request(e.body_text()))?;
    let reason = if body.patient_safety { admin::results::Reason::PatientSafety } else { admin::results::Reason::Quality };
    Ok(Json(admin::results::retract(&state.db, &state.publisher, id, reason, &body.reason, &user.name).await?))
}

#[derive(Serialize)]
struct AeView {
    ae_title: String,
    host: Option<String>,
    port: Option<u16>,
    role: String,
    enabled: bool,
    tls: bool,
    tls_identity: Option<String>,
}

impl From<crate::db::RegisteredAe> for AeView {
    fn from(a: crate::db::RegisteredAe) -> Self {
        AeView {
            ae_title: a.ae_title.to_string(),
            host: a.host,
            port: a.port,
            role: a.role.to_string(),
            enabled: a.enabled,
            tls: a.tls,
            tls_identity: a.tls_identity,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AeBody {
    /// Required to add; on an edit, must match the path when given.
    ae_title: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    role: String,
    #[serde(default = "yes")]
    enabled: bool,
    /// TLS only (PS3.15 B.9).
    #[serde(default)]
    tls: bool,
    /// The name its TLS client certificate must carry.
    #[serde(default)]
    tls_identity: Option<String>,
}

fn yes() -> bool {
    true
}

fn registration(title: String, body: AeBody) -> Result<AeRegistration, ApiError> {
    let role: AeRole = body.role.parse().map_err(|_| bad_request("role must be modality or pacs"))?;
    let host = body.host.filter(|h| !h.trim().is_empty());
    Ok(AeRegistration { ae_title: title, host, port: body.port, role, enabled: body.enabled, tls: body.tls, tls_identity: body.tls_identity })
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

async fn list_aes(State(state): State<Shared>, AdminUser(_): AdminUser) -> Result<Json<Vec<AeView>>, ApiError> {
    Ok(Json(admin::ae::list(&state.db).await?.into_iter().map(AeView::from).collect()))
}

async fn add_ae(State(state): State<Shared>, AdminUser(_): AdminUser, body: JsonBody<AeBody>) -> Result<(StatusCode, Json<AeView>), ApiError> {
    let Json(body) = body.map_err(|e| bad_request(e.body_text()))?;
    let title = body.ae_title.clone().ok_or_else(|| bad_request("ae_title is required"))?;
    if admin::ae::find(&state.db, &title).await?.is_some() {
        return Err(ApiError(StatusCode::CONFLICT, format!("{title} is already registered: edit it with PUT /api/aes/{title}")));
    }
    let ae = admin::ae::register(&state.db, registration(title, body)?).await?;
    Ok((StatusCode::CREATED, Json(ae.into())))
}

async fn edit_ae(State(state): State<Shared>, AdminUser(_): AdminUser, Path(title): Path<String>, body: JsonBody<AeBody>) -> Result<Json<AeView>, ApiError> {
    let Json(body) = body.map_err(|e| bad_request(e.body_text()))?;
    if body.ae_title.as_deref().is_some_and(|t| t.trim() != title) {
        return Err(bad_request("ae_title in the body differs from the path: remove and add to rename"));
    }
    if admin::ae::find(&state.db, &title).await?.is_none() {
        return Err(not_found(format!("no AE titled {title} is registered")));
    }
    Ok(Json(admin::ae::register(&state.db, registration(title, body)?).await?.into()))
}

async fn remove_ae(State(state): State<Shared>, AdminUser(_): AdminUser, Path(title): Path<String>) -> Result<StatusCode, ApiError> {
    admin::ae::remove(&state.db, &title).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_ae(State(state): State<Shared>, AdminUser(_): AdminUser, Path(title): Path<String>) -> Result<Json<AeView>, ApiError> {
    Ok(Json(admin::ae::set_enabled(&state.db, &title, true).await?.into()))
}

async fn disable_ae(State(state): State<Shared>, AdminUser(_): AdminUser, Path(title): Path<String>) -> Result<Json<AeView>, ApiError> {
    Ok(Json(admin::ae::set_enabled(&state.db, &title, false).await?.into()))
}

async fn echo_ae(State(state): State<Shared>, AdminUser(user): AdminUser, Path(title): Path<String>) -> Result<Json<admin::ae::EchoOutcome>, ApiError> {
    Ok(Json(admin::ae::echo(&state.db, &state.ae_title, &title, state.dicom_timeout, &state.tls, &user.name).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Issue 28 (9b): however many uncached heatmaps are asked for at once, at most
    /// HEATMAP_RENDERS are drawn together; a request that waits past its bound gets 503 with
    /// Retry-After and a reason, and the next turn is free once a drawing ends.
    #[tokio::test]
    async fn heatmap_drawing_is_bounded_and_a_request_over_the_bound_gets_503() {
        let renders = Arc::new(tokio::sync::Semaphore::new(HEATMAP_RENDERS));
        let (drawing, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (renders, drawing, most) = (renders.clone(), drawing.clone(), most.clone());
                tokio::spawn(async move {
                    let permit = render_permit(&renders, Duration::from_secs(60)).await.unwrap();
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        let now = drawing.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        drawing.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), HEATMAP_RENDERS, "drawn together at most");

        let held: Vec<_> = (0..HEATMAP_RENDERS).map(|_| renders.clone().try_acquire_owned().unwrap()).collect();
        let refused = render_permit(&renders, Duration::from_millis(10)).await.unwrap_err();
        assert_eq!(refused.0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.1.contains("try again"), "{}", refused.1);
        let rsp = refused.into_response();
        assert_eq!(rsp.headers()[header::RETRY_AFTER], "1");
        drop(held);
        assert!(render_permit(&renders, Duration::from_millis(10)).await.is_ok());
    }
}
