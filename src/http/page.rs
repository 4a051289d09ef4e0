//! The worklist web page: three files compiled into the binary and served by the node (no CDN,
//! no fonts or scripts from elsewhere). The page holds the token in the tab's session storage
//! only and sends it as a bearer token; without one it shows the sign-in form and nothing else.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Shared;

const INDEX: &str = include_str!("static/index.html");
const SCRIPT: &str = include_str!("static/app.js");
const STYLE: &str = include_str!("static/app.css");

/// The page may load only its own files and talk only to its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/", get(index)).route("/app.js", get(script)).route("/app.css", get(style))
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
