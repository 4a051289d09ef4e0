//! The acknowledgement link a notification carries (`/ack/<token>`): opening it shows a small
//! page with one button; pressing it (a POST) acknowledges the chain. A GET changes nothing, so
//! a mail scanner or a link preview that opens the link acknowledges nothing. The token is the
//! only credential (244 random bits, one chain); the access log shows the route template, never
//! the token, and the page sends no referrer.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Shared;
use crate::admin::notify::{self, Acknowledgement};
use crate::db::AckTarget;

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/ack/{token}", get(show).post(press))
}

/// Inline style only, no script; the form posts to this same URL.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn page(status: StatusCode, body: String) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"referrer\" content=\"no-referrer\"><title>triage-node: acknowledge</title>\
         <style>body{{font-family:sans-serif;max-width:32em;margin:2em auto;padding:0 1em}}button{{font-size:1.4em;padding:.5em 1.5em}}\
         .urgent{{color:#b00;font-weight:bold}}small{{color:#555}}</style></head><body>{body}\
         <p><small>AI triage notification: a prompt to open the study, not for diagnosis.</small></p></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn unknown() -> Response {
    page(StatusCode::NOT_FOUND, "<h1>Unknown link</h1><p>This acknowledgement link is not known here (mistyped or incomplete?).</p>".into())
}

fn unavailable() -> Response {
    page(StatusCode::SERVICE_UNAVAILABLE, "<h1>Try again</h1><p>The node could not answer just now; nothing was recorded.</p>".into())
}

fn about(a: &Acknowledgement) -> String {
    format!(
        "<p>Study <a href=\"/#/study/{id}\">{id}</a> (this node's id), priority <span class=\"urgent\">{p}</span>, notified by rule {r}.</p>",
        id = a.study_id,
        p = escape(&a.priority),
        r = escape(&a.rule)
    )
}

fn done(a: &Acknowledgement) -> String {
    let when =
        a.acknowledged_at_ms.map(|t| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.max(0) as u64)).to_string());
    format!("at {} by {}", escape(&when.unwrap_or_default()), escape(a.acknowledged_by.as_deref().unwrap_or("-")))
}

async fn show(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let Some(sha) = notify::token_sha256(&token) else { return unknown() };
    match notify::link_state(&state.db, &sha).await {
        Ok(Some(a)) if a.outcome == "pending" => page(
            StatusCode::OK,
            format!(
                "<h1>Acknowledge</h1>{}<form method=\"post\"><button type=\"submit\">Acknowledge: I am on it</button></form>\
                 <p>Acknowledging stops the escalation to the next contact.</p>",
                about(&a)
            ),
        ),
        Ok(Some(a)) => answer(&a),
        Ok(None) => unknown(),
        Err(_) => unavailable(),
    }
}

async fn press(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let Some(sha) = notify::token_sha256(&token) else { return unknown() };
    match notify::acknowledge(&state.db, AckTarget::Token(&sha), "link", "link").await {
        Ok(a) => answer(&a),
        Err(crate::admin::AdminError::NotFound(_)) => unknown(),
        Err(error) => {
            tracing::warn!(%error, "acknowledging a notification failed");
            unavailable()
        }
    }
}

fn answer(a: &Acknowledgement) -> Response {
    match a.outcome {
        "acknowledged" => page(StatusCode::OK, format!("<h1>Acknowledged</h1>{}<p>Recorded {}. Nobody else will be called for it.</p>", about(a), done(a))),
        "already" => page(StatusCode::OK, format!("<h1>Already acknowledged</h1>{}<p>Acknowledged {}.</p>", about(a), done(a))),
        _ => page(StatusCode::GONE, format!("<h1>Withdrawn</h1>{}<p>The AI result was retracted: there is nothing to acknowledge.</p>", about(a))),
    }
}
