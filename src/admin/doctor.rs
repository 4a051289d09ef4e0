//! `triage-node doctor`: what a fresh install (or a node at 3 a.m.) needs, checked one by one
//! with the fix said: the keys present and private, the data directory writable, the database
//! reachable, the model packages loading, the ports free, each PACS answering a C-ECHO, each
//! DICOMweb archive accepting the node's credentials, the RIS and the mail server reachable.
//! Reads and echoes only; never prints a key or a patient.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde::Serialize;

use super::AdminError;
use crate::config::Settings;

/// How one check came out.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

fn check(name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check { name: name.into(), verdict, detail: detail.into() }
}

/// A key file readable or writable by anyone but its owner, or missing.
fn key_file(name: &str, path: &std::path::Path) -> Check {
    match std::fs::metadata(path) {
        Err(e) => check(name, Verdict::Fail, format!("{}: {e}", path.display())),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => check(
            name,
            Verdict::Fail,
            format!("{} is readable or writable by others (mode {:o}): chmod 600 it", path.display(), m.permissions().mode() & 0o777),
        ),
        Ok(_) => check(name, Verdict::Ok, format!("{} (private to its owner)", path.display())),
    }
}

/// A TCP port we would listen on, free or not (port 0: chosen at start, nothing to check).
fn port(name: &str, bind: &str, port: u16) -> Option<Check> {
    (port != 0).then(|| match std::net::TcpListener::bind((bind, port)) {
        Ok(_) => check(name, Verdict::Ok, format!("{bind}:{port} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && port < 1024 => check(
            name,
            Verdict::Fail,
            format!(
                "{bind}:{port} needs root or CAP_NET_BIND_SERVICE (the packaged unit grants it; run doctor as the service would, or pick a port above 1023)"
            ),
        ),
        Err(e) => check(name, Verdict::Warn, format!("{bind}:{port} cannot be bound ({e}): another process holds it (a running node?)")),
    })
}

async fn reachable(name: &str, host: &str, port: u16, timeout: Duration) -> Check {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => check(name, Verdict::Ok, format!("{host}:{port} accepts connections")),
        Ok(Err(e)) => check(name, Verdict::Fail, format!("{host}:{port}: {e}")),
        Err(_) => check(name, Verdict::Fail, format!("{host}:{port}: no answer within {timeout:?}")),
    }
}

/// Run every check.
pub async fn run(settings: &Settings) -> Result<Vec<Check>, AdminError> {
    let mut out = Vec::new();
    // Keys.
    let d = &settings.deid;
    match d.deidentifier() {
        Ok(_) if d.demo_keys => {
            out.push(check("keys", Verdict::Warn, "DEMO keys: public, reversible; never with patient data (deid.demo_keys = false and real keys)"))
        }
        Ok(_) => out.push(check("keys", Verdict::Ok, "the pseudonym and map keys load (from the environment or their files)")),
        Err(e) => out.push(check("keys", Verdict::Fail, e.to_string())),
    }
    for (name, file) in [("pseudonym key file", &d.pseudonym_key_file), ("map key file", &d.map_key_file)] {
        if let Some(path) = file.as_deref().filter(|p| !p.as_os_str().is_empty()) {
            out.push(key_file(name, path));
        }
    }
    // The data directory.
    let data = &settings.storage.data_dir;
    let probe = data.join(".doctor-probe");
    match std::fs::create_dir_all(data).and_then(|_| std::fs::write(&probe, b"x")).and_then(|_| std::fs::remove_file(&probe)) {
        Ok(()) => out.push(check("data directory", Verdict::Ok, format!("{} is writable", data.display()))),
        Err(e) => out.push(check("data directory", Verdict::Fail, format!("{}: {e}", data.display()))),
    }
    // The database.
    let db = match crate::db::Db::open(&settings.database_url(), 1).await {
        Ok(db) => {
            out.push(check("database", Verdict::Ok, format!("{:?} reachable, migrations applied", db.engine())));
            Some(db)
        }
        Err(e) => {
            out.push(check("database", Verdict::Fail, e.to_string()));
            None
        }
    };
    // Models.
    match crate::inference::engine::Engine::from_settings(&settings.inference.engine()).await {
        Ok((engine, device)) => {
            let names: Vec<String> = engine.manifests().iter().map(|m| format!("{} {}{}", m.name, m.version, if m.draft { " (DRAFT)" } else { "" })).collect();
            let verdict = if engine.manifests().iter().any(|m| m.draft) {
                Verdict::Fail
            } else if names.is_empty() {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            let detail =
                if names.is_empty() { "no model packages: nothing would be triaged".to_string() } else { format!("{} on {device:?}", names.join(", ")) };
            out.push(check("models", verdict, detail));
        }
        Err(e) => out.push(check("models", Verdict::Fail, format!("{e:#}"))),
    }
    // Ports.
    let bind = settings.dicom.bind.to_string();
    out.extend(port("DICOM port", &bind, settings.dicom.port));
    if settings.dicom.tls.enabled {
        out.extend(port("DICOM TLS port", &bind, settings.dicom.tls.port));
    }
    if settings.http.enabled {
        out.extend(port("HTTP port", &settings.http.bind, settings.http.port));
    }
    // Where results go.
    if let Some(db) = &db {
        let tls = crate::net::tls::Connector::from_settings(&settings.dicom.tls).map_err(|e| AdminError::Invalid(e.to_string()))?;
        for ae in &settings.results.destinations {
            let name = format!("PACS {ae}");
            match crate::delivery::resolve(db, ae.as_str(), &settings.dicom.ae_title, settings.delivery.timeout, &tls).await {
                Ok(peer) => match crate::delivery::echo(&peer).await {
                    Ok(r) if r.is_success() => out.push(check(name, Verdict::Ok, format!("C-ECHO to {}:{} succeeded", peer.host, peer.port))),
                    Ok(r) => out.push(check(name, Verdict::Fail, format!("C-ECHO to {}:{} answered {:#06X}", peer.host, peer.port, r.status.0))),
                    Err(e) => out.push(check(name, Verdict::Fail, format!("C-ECHO to {}:{} failed: {e}", peer.host, peer.port))),
                },
                Err(e) => out.push(check(name, Verdict::Fail, e.to_string())),
            }
        }
        db.close().await;
    }
    for d in &settings.results.dicomweb {
        let name = format!("DICOMweb {}", d.name);
        out.push(match crate::delivery::stow::probe(d).await {
            Ok(status @ 200..=299) => check(name, Verdict::Ok, format!("a QIDO-RS search with the credentials answered {status}")),
            Ok(status @ (401 | 403)) => check(name, Verdict::Fail, format!("answered {status}: the archive refuses the credentials (auth, token or password)")),
            Ok(status) => check(name, Verdict::Warn, format!("reachable; a QIDO-RS search answered {status} (an archive may allow STOW-RS only)")),
            Err(why) => check(name, Verdict::Fail, why),
        });
    }
    if settings.http.enabled && settings.http.oidc.enabled {
        out.push(identity_provider(&settings.http.oidc).await);
    }
    let a = &settings.audit_export;
    if a.enabled {
        out.push(reachable("audit repository (syslog)", &a.host, a.port, a.timeout).await);
    }
    if settings.hl7.enabled {
        out.push(reachable("RIS (HL7 MLLP)", &settings.hl7.host, settings.hl7.port, settings.hl7.timeout).await);
    }
    let n = &settings.notify;
    if n.enabled && !n.smtp.host.is_empty() {
        out.push(reachable("mail server", &n.smtp.host, n.smtp.port, n.timeout).await);
    }
    Ok(out)
}

/// The single sign-on provider as the node will meet it at start: its discovery document names
/// the configured issuer, and its JWKS holds at least one key.
async fn identity_provider(oidc: &crate::config::OidcSettings) -> Check {
    const NAME: &str = "identity provider";
    if let Some((key, why)) = oidc.problem() {
        return check(NAME, Verdict::Fail, format!("{key}: {why}"));
    }
    let client = match crate::delivery::webhook::client(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(why) => return check(NAME, Verdict::Fail, why),
    };
    async fn json(client: &reqwest13::Client, what: &str, url: &str) -> Result<serde_json::Value, String> {
        let rsp = client.get(url).send().await.map_err(|e| format!("{what}: {}", crate::delivery::webhook::causes(e.without_url())))?;
        if !rsp.status().is_success() {
            return Err(format!("{what}: HTTP {}", rsp.status().as_u16()));
        }
        let body = rsp.bytes().await.map_err(|e| format!("{what}: {}", crate::delivery::webhook::causes(e.without_url())))?;
        serde_json::from_slice(&body).map_err(|e| format!("{what}: not JSON ({e})"))
    }
    let issuer = oidc.issuer.trim_end_matches('/');
    let discovery = match json(&client, "the discovery document", &format!("{issuer}/.well-known/openid-configuration")).await {
        Ok(d) => d,
        Err(why) => return check(NAME, Verdict::Fail, format!("{issuer}: {why}")),
    };
    if discovery["issuer"].as_str().map(|i| i.trim_end_matches('/')) != Some(issuer) {
        return check(NAME, Verdict::Fail, format!("the discovery document names issuer {} (configured: {issuer})", discovery["issuer"]));
    }
    let Some(jwks) = discovery["jwks_uri"].as_str() else {
        return check(NAME, Verdict::Fail, "the discovery document has no jwks_uri");
    };
    match json(&client, "the JWKS", jwks).await {
        Ok(set) => match set["keys"].as_array().map_or(0, Vec::len) {
            0 => check(NAME, Verdict::Fail, format!("{issuer}: the JWKS holds no key")),
            n => check(NAME, Verdict::Ok, format!("{issuer}: discovery document and JWKS ({n} keys) read")),
        },
        Err(why) => check(NAME, Verdict::Fail, format!("{issuer}: {why}")),
    }
}
