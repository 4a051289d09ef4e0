//! The webhook transport: one HTTP POST of a notification's JSON (as `publish` wrote it,
//! de-identified) to the rule's URL, with its stable id as `Idempotency-Key` and, when the rule
//! has a token file, `Authorization: Bearer`. 2xx = delivered; 4xx but 408 and 429 = dead with
//! the status (the receiver refuses it and will again); anything else, or no answer within
//! `notify.timeout`, is retried. Redirects are not followed (the body goes to the URL
//! configured, nowhere else).
//!
//! Never logged or kept: the body, the token, the URL (its path may be a secret), the
//! receiver's answer beyond its status line.

use std::time::Duration;

use reqwest13::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::config::NotifyRule;

/// What became of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Delivered,
    /// Later (with the reason); `unreachable`: no answer at all (the rest of the lane waits).
    Retry {
        why: String,
        unreachable: bool,
    },
    Dead(String),
}

/// What every HTTP client of the node starts from: rustls with ring, the platform's roots; no
/// redirects (a request goes to the URL configured, nowhere else); `timeout` for connecting and
/// for the whole exchange.
pub(crate) fn client_builder(timeout: Duration) -> reqwest13::ClientBuilder {
    // The process's rustls provider: ring, as everywhere else in the node (another part of the
    // node may have installed it already).
    let _ = rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    reqwest13::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest13::redirect::Policy::none())
        .user_agent(concat!("triage-node/", env!("CARGO_PKG_VERSION")))
}

/// The HTTP client webhooks are sent with (`client_builder`).
pub fn client(timeout: Duration) -> Result<reqwest13::Client, String> {
    client_builder(timeout).build().map_err(|e| format!("building the webhook client: {}", e.without_url()))
}

/// The verdict for an answer's status.
pub fn judge(status: u16) -> Posted {
    let line = match reqwest13::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
        Some(reason) => format!("webhook answered {status} {reason}"),
        None => format!("webhook answered {status}"),
    };
    match status {
        200..=299 => Posted::Delivered,
        408 | 429 => Posted::Retry { why: line, unreachable: false },
        400..=499 => Posted::Dead(line),
        _ => Posted::Retry { why: line, unreachable: false },
    }
}

/// POST `body` (the notification's JSON) to `rule`'s URL with `id` as its idempotency key.
pub async fn post(client: &reqwest13::Client, rule: &NotifyRule, id: &str, body: Vec<u8>) -> Posted {
    let Some(url) = rule.url.as_deref() else { return Posted::Dead("the rule has no webhook url".into()) };
    let mut request = client.post(url).header(CONTENT_TYPE, "application/json").header("Idempotency-Key", id).header("X-Triage-Notification-Id", id).body(body);
    if let Some(path) = &rule.token_file {
        let token = match tokio::fs::read_to_string(path).await {
            Ok(t) => zeroize::Zeroizing::new(t),
            Err(e) => return Posted::Retry { why: format!("reading the webhook's token_file: {}", e.kind()), unreachable: false },
        };
        let token = token.trim();
        let header = match HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(mut h) if !token.is_empty() => {
                h.set_sensitive(true);
                h
            }
            _ => return Posted::Dead("the webhook's token_file holds no usable token (empty, or not a header value)".into()),
        };
        request = request.header(AUTHORIZATION, header);
    }
    match request.send().await {
        // The answer's body is never read: nothing the receiver says is kept.
        Ok(response) => judge(response.status().as_u16()),
        Err(e) => {
            let why = if e.is_timeout() {
                "the webhook did not answer within notify.timeout".to_string()
            } else if e.is_connect() {
                format!("connecting to the webhook: {}", causes(e))
            } else {
                format!("posting to the webhook: {}", causes(e))
            };
            Posted::Retry { why, unreachable: true }
        }
    }
}

/// The error and its causes, without the URL (its path may be a secret).
pub fn causes(e: reqwest13::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let t = cause.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(judge(200), Posted::Delivered);
        assert_eq!(judge(204), Posted::Delivered);
        assert!(matches!(judge(400), Posted::Dead(w) if w == "webhook answered 400 Bad Request"));
        assert!(matches!(judge(401), Posted::Dead(_)));
        assert!(matches!(judge(404), Posted::Dead(_)));
        assert!(matches!(judge(408), Posted::Retry { .. }));
        assert!(matches!(judge(429), Posted::Retry { why, .. } if why.contains("429")));
        assert!(matches!(judge(500), Posted::Retry { .. }));
        assert!(matches!(judge(503), Posted::Retry { .. }));
        assert!(matches!(judge(301), Posted::Retry { .. }));
    }
}
