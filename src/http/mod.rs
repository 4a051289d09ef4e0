//! The HTTP side of the node (axum on the node's tokio runtime): the reading worklist's JSON
//! API (`api`), its web page (`page`: every file served by the node, nothing from elsewhere),
//! `/healthz`, `/readyz` and Prometheus `/metrics` (`ops`), STOW-RS ingest (`stow`), bearer-token
//! authentication with reader, admin and modality roles (`auth`), single sign-on with the site's
//! OpenID provider (`oidc`; sign-ins and refused tokens audited). Every API call is one of `admin`'s typed operations, as on the CLI.
//!
//! The access log names the method, the route *template* (`/api/studies/{id}`, never the path
//! or its query), the status, the time and the token's user: no patient data, no token.
//! Must not: hold SQL, open the sealed map itself, or log a request's values.
//!
//! Bounded (issue 28): connections at once, per peer address and in all, the time to send a
//! request head, idle keep-alive (`serve`), each request's time (`request_timeout`, 503 past
//! it), and the heatmaps drawn at once (`api::render_permit`). Every response carries
//! `Cache-Control: no-store` (unless its route chose another), `Pragma: no-cache` and
//! `X-Content-Type-Options: nosniff`.

pub mod ack;
pub mod api;
pub mod auth;
pub mod dicomweb;
pub mod oidc;
pub mod ops;
pub mod page;
pub mod serve;
pub mod stow;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::AdminError;
use crate::config::HttpSettings;
use crate::db::Db;
use crate::deid::Keys;
use crate::domain::AeTitle;
use crate::inference::package::Manifest;
use crate::worker::Workers;
use auth::{Role, Tokens, User};

/// What every handler shares.
pub struct AppState {
    pub db: Db,
    pub keys: Keys,
    pub tokens: Tokens,
    pub ae_title: AeTitle,
    /// Association timeout for the AE page's C-ECHO.
    pub dicom_timeout: Duration,
    /// How the AE page's C-ECHO reaches an AE registered as TLS.
    pub tls: crate::delivery::Connector,
    /// The instance files and result objects (the data directory or the cluster's bucket).
    pub blobs: crate::blobs::Blobs,
    pub manifests: Vec<Manifest>,
    pub drift: crate::admin::drift::Watch,
    /// Similar prior cases: the embeddings' caches.
    pub similar: crate::admin::similar::Similar,
    /// The full-size heatmap's long side (`results.heatmap_max_size`).
    pub heatmap_max: usize,
    pub workers: Workers,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub refresh: Duration,
    /// Views of patients already in the audit trail (the page's reloads).
    pub recorded_views: crate::admin::worklist::RecordedViews,
    /// Builds and queues rejection notes and corrections (an admin's retraction).
    pub publisher: crate::results::Publisher,
    /// Rendered heatmap PNGs, bounded.
    pictures: Mutex<HashMap<PictureKey, Arc<Vec<u8>>>>,
    /// Heatmaps being drawn at once (`api::HEATMAP_RENDERS` permits).
    renders: Arc<tokio::sync::Semaphore>,
    /// How long a request may run (`http.request_timeout`; set by `HttpServer::start`).
    pub request_timeout: Duration,
    /// QIDO-RS / WADO-RS over the AI results (None with `[query] enabled = false`).
    pub dicomweb: Option<dicomweb::Source>,
    /// STOW-RS ingest (`stow`): the node's ingest and the request limits; `None`: 503.
    pub stow: Option<stow::Stow>,
    /// Single sign-on: the identity provider's access tokens (`[http.oidc]`), if enabled.
    pub oidc: Option<Arc<oidc::Oidc>>,
}

/// What the node hands the HTTP side besides its context and `[http]` section.
pub struct Served {
    pub tokens: Tokens,
    /// The loaded models' reference scores (`/api/drift`, `/readyz`, `/metrics`).
    pub drift: crate::admin::drift::Watch,
    /// Similar prior cases (`[similar]`).
    pub similar: crate::admin::similar::Similar,
    /// The loaded models' manifests (heatmaps are drawn as their model saw the image).
    pub manifests: Vec<Manifest>,
    /// The full-size heatmap's long side (`results.heatmap_max_size`).
    pub heatmap_max: usize,
    /// Association timeout for the AE page's C-ECHO (`delivery.timeout`).
    pub dicom_timeout: Duration,
    pub workers: Workers,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The node's publisher (its outbox wake-up included): a retraction's objects.
    pub publisher: crate::results::Publisher,
    /// The query index DICOMweb searches and retrieves from (the C-FIND SCP's), if enabled.
    pub dicomweb: Option<dicomweb::Source>,
    /// STOW-RS ingest into the same pipeline as C-STORE.
    pub stow: Option<stow::Stow>,
    /// The identity provider, discovered at start (`[http.oidc]` enabled).
    pub oidc: Option<Arc<oidc::Oidc>>,
}

/// (study row, result time, finding, size): a new analysis makes new pictures.
type PictureKey = (i64, i64, usize, usize);

/// Heatmap pictures kept rendered at most (a few MB).
const PICTURE_CACHE: usize = 256;

impl AppState {
    #[allow(clippy::too_many_arguments)]
    /// The state from the node's context, the `[http]` section and what the node hands over.
    pub fn new(ctx: &crate::context::NodeContext, settings: &HttpSettings, served: Served) -> AppState {
        AppState {
            db: ctx.db.clone(),
            keys: ctx.keys.clone(),
            tokens: served.tokens,
            ae_title: ctx.ae_title.clone(),
            dicom_timeout: served.dicom_timeout,
            tls: ctx.tls.clone(),
            blobs: ctx.blobs.clone(),
            manifests: served.manifests,
            drift: served.drift,
            similar: served.similar,
            heatmap_max: served.heatmap_max,
            workers: served.workers,
            metrics: served.metrics,
            refresh: settings.refresh,
            recorded_views: Default::default(),
            publisher: served.publisher,
            pictures: Mutex::new(HashMap::new()),
            renders: Arc::new(tokio::sync::Semaphore::new(api::HEATMAP_RENDERS)),
            request_timeout: Duration::from_secs(60),
            dicomweb: served.dicomweb,
            stow: served.stow,
            oidc: served.oidc,
        }
    }

    fn cached_picture(&self, key: PictureKey) -> Option<Arc<Vec<u8>>> {
        self.pictures.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned()
    }

    fn cache_picture(&self, key: PictureKey, png: Arc<Vec<u8>>) {
        let mut cache = self.pictures.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= PICTURE_CACHE {
            cache.clear();
        }
        cache.insert(key, png);
    }
}

pub type Shared = Arc<AppState>;

/// An API error: a status and a reason, as `{"error": "..."}`. Reasons never carry patient
/// data (they come from validation and from `AdminError`, which names row ids and AE titles).
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut rsp = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            rsp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"triage-node\""));
        }
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 of ours is transient: busy, or a store that does not answer yet.
            rsp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        rsp
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let status = match &e {
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) | AdminError::UnknownAe(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Results(crate::results::ResultsError::Db(_) | crate::results::ResultsError::Blob(_)) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Delivery(crate::delivery::DeliveryError::UnknownAe(_)) => StatusCode::NOT_FOUND,
            AdminError::Delivery(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            warn!(error = %e, "API operation failed");
        }
        ApiError(status, e.to_string())
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::from(AdminError::Db(e))
    }
}

pub fn bad_request(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, why.into())
}

pub fn not_found(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, why.into())
}

/// A request with a valid token of a person: a reader or an admin (a `modality` token only stores).
pub struct Authed(pub User);

/// A request with an admin's token.
pub struct AdminUser(pub User);

/// The caller of a request: a static token's user, or the identity provider's token's. The
/// first request with a new provider token is audited as the user's sign-in, every refused
/// token as a failed one (why, never the token).
async fn authenticate(parts: &Parts, state: &Shared) -> Result<User, ApiError> {
    let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(u) = state.tokens.user(header) {
        return Ok(u);
    }
    let Some(token) = auth::bearer(header) else {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "a bearer token is required (Authorization: Bearer <token>)".into()));
    };
    let (refusal, claimed, forbidden) = match &state.oidc {
        Some(idp) if oidc::looks_like_jwt(token) => match idp.verify(token).await {
            Ok(v) => {
                if v.first {
                    audit_auth(state, &v.user.name, "login", "oidc", Some(v.user.role), None).await;
                }
                return Ok(v.user);
            }
            Err((refusal, claimed)) => (refusal.to_string(), claimed.name, refusal.forbidden()),
        },
        _ => ("unknown token".to_string(), None, false),
    };
    let who = claimed.unwrap_or_else(|| "unknown".into());
    audit_auth(state, &who, "refused", if state.oidc.is_some() && oidc::looks_like_jwt(token) { "oidc" } else { "token" }, None, Some(refusal.clone())).await;
    if forbidden {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("the identity provider's token gives {refusal}")));
    }
    Err(ApiError(StatusCode::UNAUTHORIZED, format!("the bearer token is not valid: {refusal}")))
}

/// A sign-in, sign-out or refusal into the audit trail; a failed write is logged, not fatal.
pub(crate) async fn audit_auth(state: &Shared, user: &str, outcome: &str, via: &str, role: Option<Role>, reason: Option<String>) {
    let event = crate::audit::Event::UserAuth {
        user: user.to_string(),
        details: crate::audit::Authentication { outcome: outcome.into(), via: via.into(), role: role.map(|r| r.as_str().to_string()), reason },
    };
    if let Err(e) = state.db.audit_append(&event).await {
        warn!(error = %e, "the audit entry of a sign-in could not be written");
    }
}

/// The user of a request for the access log and `/readyz`: a static token's, or a provider
/// token's already verified (no new check, no audit).
pub(crate) fn known_user(state: &AppState, authorization: Option<&str>) -> Option<User> {
    state.tokens.user(authorization).or_else(|| state.oidc.as_ref().zip(auth::bearer(authorization)).and_then(|(idp, t)| idp.remembered(t)))
}

impl FromRequestParts<Shared> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let user = authenticate(parts, state).await?;
        if user.role < Role::Reader {
            return Err(ApiError(StatusCode::FORBIDDEN, "this needs the reader or admin role (a modality token may only store by STOW-RS)".into()));
        }
        Ok(Authed(user))
    }
}

impl FromRequestParts<Shared> for AdminUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let user = authenticate(parts, state).await?;
        if user.role < Role::Admin {
            return Err(ApiError(StatusCode::FORBIDDEN, "this needs the admin role".into()));
        }
        Ok(AdminUser(user))
    }
}

/// The access log and the request metrics: route template, status, time, user; nothing else.
async fn access_log(State(state): State<Shared>, matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = matched.map(|m| m.as_str().to_string()).unwrap_or_else(|| "(no route)".into());
    let start = Instant::now();
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let rsp = next.run(req).await;
    // After the handler: a provider's token it verified is known by now.
    let user = known_user(&state, authorization.as_deref()).map(|u| u.name);
    let elapsed = start.elapsed();
    let status = rsp.status().as_u16();
    info!(target: "triage_node::http::access", %method, route = %route, status, ms = format_args!("{:.1}", elapsed.as_secs_f64() * 1000.0), user = user.as_deref().unwrap_or("-"), "http request");
    metrics::counter!("triage_http_requests_total", "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("triage_http_request_seconds", "route" => route).record(elapsed.as_secs_f64());
    rsp
}

/// A request past `request_timeout` (its handler, and its body's arrival) ends with 503.
async fn deadline(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(rsp) => rsp,
        Err(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than http.request_timeout ({})", humantime::format_duration(state.request_timeout)),
        )
        .into_response(),
    }
}

/// What a response may not be: stored by a browser or proxy (unless its route said how it may
/// be kept), or sniffed as another type.
async fn not_stored(mut rsp: Response) -> Response {
    let headers = rsp.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    }
    headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    rsp
}

/// Every route of the API and of the operations endpoints (method, path template), as
/// `openapi.json` describes them: a unit test holds the two equal, and the integration test
/// requests each one from a running node.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/me"),
    ("get", "/api/worklist"),
    ("get", "/api/studies/{id}"),
    ("get", "/api/studies/{id}/heatmaps/{n}"),
    ("get", "/api/studies/{id}/objects/{n}"),
    ("post", "/api/studies/{id}/claim"),
    ("post", "/api/studies/{id}/read"),
    ("post", "/api/studies/{id}/release"),
    ("post", "/api/studies/{id}/retract"),
    ("post", "/api/studies/{id}/acknowledge"),
    ("put", "/api/studies/{id}/feedback"),
    ("get", "/api/studies/{id}/similar"),
    ("get", "/api/feedback/export"),
    ("get", "/api/performance"),
    ("get", "/api/drift"),
    ("get", "/api/shadow"),
    ("get", "/ack/{token}"),
    ("post", "/ack/{token}"),
    ("get", "/api/aes"),
    ("post", "/api/aes"),
    ("put", "/api/aes/{title}"),
    ("delete", "/api/aes/{title}"),
    ("post", "/api/aes/{title}/enable"),
    ("post", "/api/aes/{title}/disable"),
    ("post", "/api/aes/{title}/echo"),
    ("get", "/dicomweb/studies"),
    ("get", "/dicomweb/series"),
    ("get", "/dicomweb/instances"),
    ("get", "/dicomweb/studies/{study}/series"),
    ("get", "/dicomweb/studies/{study}/instances"),
    ("get", "/dicomweb/studies/{study}/series/{series}/instances"),
    ("get", "/dicomweb/studies/{study}"),
    ("get", "/dicomweb/studies/{study}/metadata"),
    ("get", "/dicomweb/studies/{study}/series/{series}"),
    ("get", "/dicomweb/studies/{study}/series/{series}/metadata"),
    ("get", "/dicomweb/studies/{study}/series/{series}/instances/{instance}"),
    ("get", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata"),
    ("get", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered"),
    ("post", "/dicomweb/studies"),
    ("post", "/dicomweb/studies/{study}"),
];

pub fn router(state: Shared) -> axum::Router {
    axum::Router::new()
        .merge(ops::routes())
        .merge(api::routes())
        .merge(ack::routes())
        .merge(page::routes())
        .merge(dicomweb::routes())
        .merge(stow::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), access_log))
        .fallback(|| async { not_found("no such route") })
        .layer(axum::middleware::map_response(not_stored))
        .with_state(state)
}

/// The running HTTP server.
pub struct HttpServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Bind `settings.bind:port` and serve until `shutdown`; in-flight requests finish first.
    /// Raises the process's soft descriptor limit to the hard one, and keeps HTTP connections
    /// to a quarter of it (`serve::HTTP_SHARE`): the rest stays for DICOM.
    pub async fn start(settings: &HttpSettings, mut state: AppState, shutdown: CancellationToken) -> std::io::Result<HttpServer> {
        if state.tokens.is_empty() && state.oidc.is_none() {
            warn!(
                "no HTTP API tokens configured ({} or http.tokens_file): the API answers 401 to everyone; `triage-node token add` makes one",
                auth::TOKENS_ENV
            );
        }
        let listener = tokio::net::TcpListener::bind((settings.bind.as_str(), settings.port)).await?;
        let addr = listener.local_addr()?;
        info!(bind = %addr.ip(), "HTTP API and worklist page listening http_port={}", addr.port());
        let nofile = serve::raise_descriptor_limit();
        let max_connections = serve::connection_cap(settings.max_connections, nofile);
        if max_connections < settings.max_connections {
            warn!(
                max_connections,
                descriptors = nofile,
                "http.max_connections lowered to a quarter of the descriptors the process may open: the rest stays for DICOM"
            );
        }
        let limits = serve::Limits {
            header_timeout: settings.header_timeout,
            keep_alive_timeout: settings.keep_alive_timeout,
            max_connections,
            max_connections_per_host: settings.max_connections_per_host.min(max_connections),
        };
        state.request_timeout = settings.request_timeout;
        info!(tokens = state.tokens.len(), sso = state.oidc.is_some(), "HTTP API tokens loaded tokens_loaded={}", state.tokens.len());
        tokio::spawn(auth::watch(state.tokens.clone(), shutdown.clone()));
        let app = router(Arc::new(state));
        let task = tokio::spawn(serve::serve(listener, app, limits, shutdown));
        Ok(HttpServer { addr, task })
    }

    /// Wait for the server to end (after shutdown), at most `deadline`.
    pub async fn join(self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            warn!(?deadline, "HTTP requests still running after the deadline; abandoning them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document names exactly the routes the router serves, each with its methods.
    #[test]
    fn the_openapi_document_describes_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(api::OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"], "3.0.3");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(op["responses"].is_object(), "{method} {path} has responses");
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        routes.sort();
        assert_eq!(documented, routes);
        // Every /api and /dicomweb operation but the document itself needs the bearer token.
        for (method, path) in ROUTES {
            let op = &doc["paths"][path][method];
            let public = op["security"].as_array().is_some_and(|s| s.is_empty());
            let api = path.starts_with("/api/") || path.starts_with("/dicomweb/");
            assert_eq!(public, !api || *path == "/api/openapi.json", "{method} {path}");
        }
    }
}
