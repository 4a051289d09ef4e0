//! The worklist web page: three files compiled into the binary and served by the node (no CDN,
//! no fonts or scripts from elsewhere). The page holds the token in the tab's session storage
//! only and sends it as a bearer token; without one it shows the sign-in form and nothing else.
//!
//! Single sign-on (`[http.oidc]`): `/auth/config` tells the page where the provider's
//! authorization endpoint is; the page redirects there with its state and PKCE challenge (S256)
//! and, back on the page, hands the code and its verifier to `POST /auth/token`, which the node
//! exchanges at the provider's token endpoint (server to server: the page still talks only to
//! its own origin). `POST /auth/logout` audits the sign-out and forgets the token; the page then
//! goes to the provider's end-session endpoint.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;

use super::{ApiError, Authed, Shared};

const INDEX: &str = include_str!("static/index.html");
const SCRIPT: &str = include_str!("static/app.js");
const STYLE: &str = include_str!("static/app.css");

/// The page may load only its own files and talk only to its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/auth/config", get(auth_config))
        .route("/auth/token", post(auth_token))
        .route("/auth/logout", post(auth_logout))
}

/// What the page needs to sign in at the provider (`{"enabled": false}` without one).
async fn auth_config(State(state): State<Shared>) -> Response {
    let Some(idp) = &state.oidc else {
        return Json(serde_json::json!({ "enabled": false })).into_response();
    };
    let s = idp.settings();
    Json(serde_json::json!({
        "enabled": true,
        "authorization_endpoint": idp.discovery.authorization_endpoint,
        "end_session_endpoint": idp.discovery.end_session_endpoint,
        "client_id": s.client_id,
        "scope": s.scopes,
        "resource": s.audience,
    }))
    .into_response()
}

/// What the page exchanges at `/auth/token`: its authorization code with the PKCE verifier, or
/// (to stay signed in past the access token's lifetime) the refresh token it was given.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CodeExchange {
    Code { code: String, code_verifier: String, redirect_uri: String },
    Refresh { refresh_token: String },
}

/// The page's authorization code and PKCE verifier, or its refresh token, exchanged at the
/// provider's token endpoint (as the public client: no secret). The answer's access token is
/// what the page sends from then on; it is checked like any other on its first request. A
/// refresh token, where the provider issues one, goes back to the page (kept in the tab only)
/// so a reader stays signed in past the access token's lifetime without a new sign-in.
async fn auth_token(State(state): State<Shared>, Json(x): Json<CodeExchange>) -> Result<Response, ApiError> {
    let Some(idp) = &state.oidc else {
        return Err(super::not_found("single sign-on is not enabled ([http.oidc])"));
    };
    let bounded = |v: &str| !v.is_empty() && v.len() <= 4096;
    let s = idp.settings();
    let grant: Vec<(&str, &str)> = match &x {
        CodeExchange::Code { code, code_verifier, redirect_uri } => {
            if !(bounded(code) && bounded(code_verifier) && bounded(redirect_uri)) {
                return Err(super::bad_request("code, code_verifier and redirect_uri are required (at most 4096 characters each)"));
            }
            vec![("grant_type", "authorization_code"), ("code", code), ("code_verifier", code_verifier), ("redirect_uri", redirect_uri)]
        }
        CodeExchange::Refresh { refresh_token } => {
            if !bounded(refresh_token) {
                return Err(super::bad_request("refresh_token: at most 4096 characters"));
            }
            vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
        }
    };
    let form: Vec<(&str, &str)> = grant.into_iter().chain([("client_id", s.client_id.as_str()), ("resource", s.audience.as_str())]).collect();
    let body: String = form.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
    let unavailable = |why: String| ApiError(StatusCode::BAD_GATEWAY, why);
    let rsp = idp
        .client()
        .post(&idp.discovery.token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| unavailable(format!("the identity provider's token endpoint did not answer: {}", e.without_url())))?;
    let status = rsp.status().as_u16();
    let bytes = rsp.bytes().await.map_err(|e| unavailable(format!("reading the token endpoint's answer: {}", e.without_url())))?;
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status != 200 {
        // The provider's error code only (invalid_grant, ...): its description may echo input.
        let code: String = answer["error"].as_str().unwrap_or("unknown").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect();
        let what = if matches!(x, CodeExchange::Refresh { .. }) { "the refresh token" } else { "the code" };
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("the identity provider refused {what}: {code}")));
    }
    let Some(access) = answer["access_token"].as_str() else {
        return Err(unavailable("the identity provider's answer has no access token".into()));
    };
    Ok(Json(serde_json::json!({
        "access_token": access,
        "id_token": answer["id_token"],
        "expires_in": answer["expires_in"],
        "refresh_token": answer["refresh_token"],
    }))
    .into_response())
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The page signs out: audited, and the node forgets the token (a later request with it counts
/// as a new sign-in); the page then ends the provider's session at its end-session endpoint.
async fn auth_logout(State(state): State<Shared>, Authed(user): Authed, headers: HeaderMap) -> StatusCode {
    let token = super::auth::bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    if let (Some(idp), Some(token)) = (&state.oidc, token) {
        idp.forget(token);
    }
    super::audit_auth(&state, &user.name, "logout", if state.oidc.is_some() { "oidc" } else { "token" }, Some(user.role), None).await;
    StatusCode::NO_CONTENT
}

/// The page shows patients: never stored, never framed, no referrer sent from it.
fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}
