//! Single sign-on (`[http.oidc]`): the identity provider's access tokens, checked here. A token
//! is a JWT signed RS256 or ES256 (nothing else: `alg: none` and the HS* family are refused
//! before any key is looked at) with a key of the provider's JWKS (fetched from the discovery
//! document at start, again when a token names an unknown `kid`, at most every
//! `jwks_min_refresh`, so a rotated key is taken up), from the configured issuer, for the
//! node's audience, within `exp` / `nbf` give or take `clock_skew`. The role comes from a
//! configurable claim, the user's name from another.
//!
//! A token verified once is remembered by its SHA-256 until it expires: later requests with it
//! skip the signature check, and the first one is the user's sign-in (audited by the caller).
//! Must not: log or keep a token (only its hash), or trust a claim before the signature.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::auth::{hash, Role, User};
use crate::config::OidcSettings;

/// Verified tokens remembered at most (their hashes); past it the expired ones go, then all.
const REMEMBERED: usize = 10_000;

/// The endpoints of the provider's discovery document the node and its page use.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// Why a token was refused: the audit entry's reason (never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a JWT")]
    Malformed,
    #[error("algorithm {0} not allowed (RS256 or ES256 only)")]
    Algorithm(String),
    #[error("signed with an unknown key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("no usable {0} claim")]
    NoName(String),
    #[error("no role on this node in the {0} claim")]
    NoRole(String),
}

impl Refusal {
    /// A token with no role is the provider's valid word that this user may not: 403.
    pub fn forbidden(&self) -> bool {
        matches!(self, Refusal::NoRole(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("fetching {what} from the identity provider: {why}")]
    Fetch { what: &'static str, why: String },
    #[error("the discovery document names issuer {found:?}, not the configured {configured:?}")]
    Issuer { found: String, configured: String },
}

/// A verified token's user, and whether this is the first request with it (a sign-in).
#[derive(Debug, Clone)]
pub struct Verified {
    pub user: User,
    pub first: bool,
}

/// The claims a refusal may still name (read without trusting them: for the audit entry).
#[derive(Debug, Default)]
pub struct Claimed {
    pub name: Option<String>,
}

pub struct Oidc {
    settings: OidcSettings,
    pub discovery: Discovery,
    client: reqwest13::Client,
    keys: Mutex<Keys>,
    /// Token hash -> (user, expiry in seconds since the epoch).
    seen: Mutex<HashMap<[u8; 32], (User, i64)>>,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest13::Client, what: &'static str, url: &str) -> Result<T, OidcError> {
    let fail = |why: String| OidcError::Fetch { what, why };
    let rsp = client.get(url).send().await.map_err(|e| fail(e.without_url().to_string()))?;
    if !rsp.status().is_success() {
        return Err(fail(format!("HTTP {}", rsp.status().as_u16())));
    }
    let body = rsp.bytes().await.map_err(|e| fail(e.without_url().to_string()))?;
    serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))
}

/// Plain http is allowed to a loopback provider only (as `OidcSettings::problem` says).
fn allowed_url(url: &str) -> bool {
    let Ok(u) = reqwest13::Url::parse(url) else { return false };
    let host = u.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    u.scheme() == "https" || (u.scheme() == "http" && loopback)
}

impl Oidc {
    /// Read the provider's discovery document and JWKS (at the node's start).
    pub async fn discover(settings: &OidcSettings) -> Result<Oidc, OidcError> {
        let client = crate::delivery::webhook::client(Duration::from_secs(10)).map_err(|why| OidcError::Fetch { what: "nothing (client)", why })?;
        let url = format!("{}/.well-known/openid-configuration", settings.issuer.trim_end_matches('/'));
        let discovery: Discovery = get_json(&client, "the discovery document", &url).await?;
        if discovery.issuer.trim_end_matches('/') != settings.issuer.trim_end_matches('/') {
            return Err(OidcError::Issuer { found: discovery.issuer, configured: settings.issuer.clone() });
        }
        for endpoint in [&discovery.jwks_uri, &discovery.token_endpoint, &discovery.authorization_endpoint] {
            if !allowed_url(endpoint) {
                return Err(OidcError::Fetch { what: "the discovery document", why: "an endpoint is not https".into() });
            }
        }
        let set: JwkSet = get_json(&client, "the JWKS", &discovery.jwks_uri).await?;
        tracing::info!(keys = set.keys.len(), "identity provider's keys loaded");
        Ok(Oidc { settings: settings.clone(), discovery, client, keys: Mutex::new(Keys { set, fetched: Instant::now() }), seen: Mutex::new(HashMap::new()) })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The HTTP client the node talks to the provider with (the code exchange).
    pub fn client(&self) -> &reqwest13::Client {
        &self.client
    }

    /// The user of a token verified before and not expired (no signature check: the same bytes
    /// were checked). For the access log, and the fast path of `verify`.
    pub fn remembered(&self, token: &str) -> Option<User> {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&hash(token)).filter(|(_, exp)| now <= exp + self.settings.clock_skew.as_secs() as i64).map(|(u, _)| u.clone())
    }

    /// Forget a token (its user signed out on the page).
    pub fn forget(&self, token: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(&hash(token));
    }

    /// Check `token`; on a refusal, also what it claims to be (unverified, for the audit entry).
    pub async fn verify(&self, token: &str) -> Result<Verified, (Refusal, Claimed)> {
        if let Some(user) = self.remembered(token) {
            return Ok(Verified { user, first: false });
        }
        let claimed = Claimed { name: unverified_name(token, &self.settings.name_claim) };
        match self.check(token).await {
            Ok((user, exp)) => {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.len() >= REMEMBERED {
                    let now = jsonwebtoken::get_current_timestamp() as i64;
                    seen.retain(|_, (_, e)| *e >= now);
                    if seen.len() >= REMEMBERED {
                        seen.clear();
                    }
                }
                seen.insert(hash(token), (user.clone(), exp));
                Ok(Verified { user, first: true })
            }
            Err(r) => Err((r, claimed)),
        }
    }

    async fn check(&self, token: &str) -> Result<(User, i64), Refusal> {
        let header = header(token).ok_or(Refusal::Malformed)?;
        let alg = match header.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => return Err(Refusal::Algorithm(other.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect())),
        };
        let key = match self.key(header.kid.as_deref(), alg) {
            Some(k) => k,
            None => {
                self.refresh().await;
                self.key(header.kid.as_deref(), alg).ok_or(Refusal::UnknownKey)?
            }
        };
        let mut v = Validation::new(alg);
        v.leeway = self.settings.clock_skew.as_secs();
        v.validate_nbf = true;
        v.set_issuer(&[self.settings.issuer.as_str(), self.settings.issuer.trim_end_matches('/')]);
        v.set_audience(&[self.settings.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => Refusal::Expired,
                K::ImmatureSignature => Refusal::NotYetValid,
                K::InvalidAudience => Refusal::WrongAudience,
                K::InvalidIssuer => Refusal::WrongIssuer,
                K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidAlgorithm => Refusal::BadSignature,
                _ => Refusal::Malformed,
            }
        })?;
        let claims = data.claims;
        let exp = claims.get("exp").and_then(|e| e.as_i64()).ok_or(Refusal::Malformed)?;
        let name_claim = &self.settings.name_claim;
        let name = claims.get(name_claim).and_then(|n| n.as_str()).filter(|n| super::auth::valid_name(n)).ok_or_else(|| Refusal::NoName(name_claim.clone()))?;
        let role = role_of(&self.settings, claims.get(&self.settings.roles_claim)).ok_or_else(|| Refusal::NoRole(self.settings.roles_claim.clone()))?;
        Ok((User { name: name.to_string(), role }, exp))
    }

    /// The key a token names: by `kid`, or the only key for its algorithm when it names none.
    fn key(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let family = |k: &&jsonwebtoken::jwk::Jwk| {
            matches!(
                (&k.algorithm, alg),
                (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), Algorithm::RS256)
                    | (jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
            )
        };
        let candidates: Vec<_> = keys.set.keys.iter().filter(family).collect();
        let jwk = match kid {
            Some(kid) => candidates.into_iter().find(|k| k.common.key_id.as_deref() == Some(kid))?,
            None if candidates.len() == 1 => candidates[0],
            None => return None,
        };
        DecodingKey::from_jwk(jwk).ok()
    }

    /// Fetch the JWKS again, unless it was fetched less than `jwks_min_refresh` ago.
    async fn refresh(&self) {
        {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if keys.fetched.elapsed() < self.settings.jwks_min_refresh {
                return;
            }
        }
        match get_json::<JwkSet>(&self.client, "the JWKS", &self.discovery.jwks_uri).await {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), "identity provider's keys fetched again (a token named an unknown key)");
                *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Keys { set, fetched: Instant::now() };
            }
            Err(e) => {
                tracing::warn!(error = %e, "the identity provider's keys could not be fetched again");
                self.keys.lock().unwrap_or_else(|p| p.into_inner()).fetched = Instant::now();
            }
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn part(token: &str, n: usize) -> Option<serde_json::Value> {
    let text = token.split('.').nth(n)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The JOSE header, read as JSON (so that `none` and unknown algorithms are named, not failed).
fn header(token: &str) -> Option<Header> {
    if token.split('.').count() != 3 {
        return None;
    }
    serde_json::from_value(part(token, 0)?).ok()
}

/// Whether a bearer token has the shape of a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    header(token).is_some()
}

/// The name a token claims, unverified, if it is a valid user name (for a refusal's entry).
fn unverified_name(token: &str, claim: &str) -> Option<String> {
    part(token, 1)?.get(claim)?.as_str().filter(|n| super::auth::valid_name(n)).map(str::to_string)
}

/// The role the claim's value(s) give: admin if any maps to admin, else reader if any maps to reader.
pub fn role_of(settings: &OidcSettings, claim: Option<&serde_json::Value>) -> Option<Role> {
    let values: Vec<&str> = match claim? {
        serde_json::Value::String(s) => s.split_whitespace().collect(),
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => return None,
    };
    if values.iter().any(|v| settings.admin_values.iter().any(|a| a == v)) {
        Some(Role::Admin)
    } else if values.iter().any(|v| settings.reader_values.iter().any(|r| r == v)) {
        Some(Role::Reader)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        OidcSettings {
            enabled: true,
            issuer: "http://127.0.0.1:1".into(),
            audience: "urn:triage".into(),
            client_id: "page".into(),
            scopes: "openid".into(),
            name_claim: "preferred_username".into(),
            roles_claim: "groups".into(),
            reader_values: vec!["radiology".into()],
            admin_values: vec!["pacs-admins".into()],
            clock_skew: Duration::from_secs(60),
            jwks_min_refresh: Duration::from_secs(30),
        }
    }

    #[test]
    fn roles_map_from_a_string_or_a_list_admin_first() {
        let s = settings();
        assert_eq!(role_of(&s, Some(&serde_json::json!(["x", "radiology"]))), Some(Role::Reader));
        assert_eq!(role_of(&s, Some(&serde_json::json!(["radiology", "pacs-admins"]))), Some(Role::Admin));
        assert_eq!(role_of(&s, Some(&serde_json::json!("radiology other"))), Some(Role::Reader));
        assert_eq!(role_of(&s, Some(&serde_json::json!(["admin"]))), None);
        assert_eq!(role_of(&s, Some(&serde_json::json!(3))), None);
        assert_eq!(role_of(&s, None), None);
    }

    #[test]
    fn the_issuer_must_be_https_except_on_loopback_and_the_audience_is_required() {
        let with = |issuer: &str, audience: &str| OidcSettings { issuer: issuer.into(), audience: audience.into(), ..settings() }.problem();
        assert_eq!(with("http://127.0.0.1:8080", "urn:triage"), None);
        assert_eq!(with("http://localhost/realms/x", "urn:triage"), None);
        assert_eq!(with("https://idp.example.org/realms/x", "urn:triage"), None);
        assert_eq!(with("http://idp.example.org", "urn:triage").map(|p| p.0), Some("http.oidc.issuer"));
        assert_eq!(with("idp.example.org", "urn:triage").map(|p| p.0), Some("http.oidc.issuer"));
        assert_eq!(with("https://idp.example.org", " ").map(|p| p.0), Some("http.oidc.audience"));
        assert_eq!(OidcSettings { enabled: false, issuer: String::new(), ..settings() }.problem(), None, "off: nothing to check");
        assert!(allowed_url("https://idp.example.org/jwks") && allowed_url("http://[::1]:9/jwks") && !allowed_url("http://idp.example.org/jwks"));
    }

    #[test]
    fn the_header_is_read_without_trusting_it() {
        let b = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!("{}.{}.", b(serde_json::json!({"alg": "none"})), b(serde_json::json!({"preferred_username": "eve"})));
        assert_eq!(header(&none).unwrap().alg, "none");
        assert_eq!(unverified_name(&none, "preferred_username").as_deref(), Some("eve"));
        assert!(looks_like_jwt(&none));
        assert!(!looks_like_jwt("0123456789abcdef0123456789abcdef"));
        assert!(!looks_like_jwt("a.b.c"));
    }
}
