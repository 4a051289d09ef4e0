//! The STOW-RS transport (PS3.18 10.5): one result object, re-identified in memory by the
//! outbox just before, POSTed to a DICOMweb archive's `{url}/studies` as
//! `multipart/related; type="application/dicom"` (one part: each object is recorded as delivered
//! before the next is sent), with the destination's credentials (bearer or basic, read at each
//! send: the environment first, then the file) over rustls (the platform's roots and the
//! destination's `ca_file`; plain http only to a loopback host, as `config` checks).
//!
//! The answer is read per instance (`judge`): the object listed in the Referenced SOP Sequence
//! of a 200 or 202 is delivered; listed in the Failed SOP Sequence, its Failure Reason decides
//! (Out of Resources, a processing failure or a resource limitation retried, any other refusal
//! dead with the code); a 409 is dead with the code it gives; 408 and 429 retried; any other
//! 4xx dead with the status (401/403: the credentials); 5xx, redirects, timeouts and transport
//! failures retried. A 200 or 202 that lists the object neither way is not taken as stored: it
//! is retried (so dead after `delivery.max_attempts`), since nothing says the archive kept it.
//!
//! Never logged or kept: the object, the credentials, the URL's path, the archive's answer
//! beyond its status line and the failure reason code (its body is read, bounded, only to find
//! the instance).

use std::path::Path;

use reqwest13::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use super::webhook::causes;

use crate::config::{DicomwebAuth, DicomwebDestination};
use crate::dicom::Status;

/// The most of an answer's body read (a STOW-RS response for one instance is a few hundred
/// bytes; a larger one is not looked into).
const MAX_ANSWER: usize = 1 << 20;

/// What became of one STOW-RS request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Delivered,
    /// Later (with the reason); `unreachable`: no answer at all (the rest of the lane waits).
    Retry {
        why: String,
        unreachable: bool,
    },
    Dead(String),
}

fn retry(why: String) -> Stored {
    Stored::Retry { why, unreachable: false }
}

/// The HTTP client for one destination: rustls with ring, the platform's roots plus the
/// destination's `ca_file`; no redirects (the object goes to the URL configured, nowhere else);
/// its `timeout` for connecting and for the whole exchange.
pub fn client(dest: &DicomwebDestination) -> Result<reqwest13::Client, String> {
    let mut builder = super::webhook::client_builder(dest.timeout);
    if let Some(path) = dest.ca_file.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        let pem = std::fs::read(path).map_err(|e| format!("DICOMweb {}: reading ca_file {}: {}", dest.name, path.display(), e.kind()))?;
        let certs = reqwest13::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("DICOMweb {}: ca_file {} is not PEM certificates: {}", dest.name, path.display(), e.without_url()))?;
        if certs.is_empty() {
            return Err(format!("DICOMweb {}: ca_file {} holds no certificate", dest.name, path.display()));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| format!("DICOMweb {}: building the HTTP client: {}", dest.name, causes(e)))
}

/// A secret: `env` when set and not blank, else the file (which must not be readable by others).
fn secret(env: &str, file: Option<&Path>, what: &str) -> Result<zeroize::Zeroizing<String>, String> {
    if let Ok(v) = std::env::var(env) {
        if !v.trim().is_empty() {
            return Ok(zeroize::Zeroizing::new(v.trim().to_string()));
        }
    }
    let Some(path) = file.filter(|p| !p.as_os_str().is_empty()) else {
        return Err(format!("no {what}: set {env} or the {what} file"));
    };
    let meta = std::fs::metadata(path).map_err(|e| format!("reading the {what} file {}: {}", path.display(), e.kind()))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    if mode & 0o077 != 0 {
        return Err(format!("the {what} file {} is readable by others (mode {:04o}): chmod 0600", path.display(), mode & 0o7777));
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("reading the {what} file {}: {}", path.display(), e.kind()))?);
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(zeroize::Zeroizing::new(text.to_string()))
}

/// The `Authorization` header for `dest` (None: no authentication), marked sensitive.
fn authorization(dest: &DicomwebDestination) -> Result<Option<HeaderValue>, String> {
    let value = match dest.auth {
        DicomwebAuth::None => return Ok(None),
        DicomwebAuth::Bearer => {
            let token = secret(&dest.secret_env("TOKEN"), dest.token_file.as_deref(), "token")?;
            zeroize::Zeroizing::new(format!("Bearer {}", token.as_str()))
        }
        DicomwebAuth::Basic => {
            let password = secret(&dest.secret_env("PASSWORD"), dest.password_file.as_deref(), "password")?;
            let pair = zeroize::Zeroizing::new(format!("{}:{}", dest.username, password.as_str()));
            zeroize::Zeroizing::new(format!("Basic {}", crate::domain::base64(pair.as_bytes())))
        }
    };
    let mut header = HeaderValue::from_str(&value).map_err(|_| "the credentials are not a valid header value (a control character?)".to_string())?;
    header.set_sensitive(true);
    Ok(Some(header))
}

/// The STOW-RS endpoint of a base URL.
pub fn endpoint(base: &str) -> String {
    format!("{}/studies", base.trim_end_matches('/'))
}

/// One Part 10 object as a `multipart/related; type="application/dicom"` body (the shared
/// writer of `dicom::multipart`): its content type and the body.
fn multipart(part10: &[u8]) -> (String, Vec<u8>) {
    use crate::dicom::multipart;
    let boundary = multipart::new_boundary();
    (multipart::related_content_type("application/dicom", &boundary), multipart::write(&boundary, [("application/dicom", part10)]))
}

/// POST `part10` (the object whose SOP Instance UID is `instance`) to `dest` and judge the
/// answer for that instance.
pub async fn store(client: &reqwest13::Client, dest: &DicomwebDestination, instance: &str, part10: &[u8]) -> Stored {
    let auth = match authorization(dest) {
        Ok(a) => a,
        Err(why) => return retry(format!("DICOMweb {} credentials: {why}", dest.name)),
    };
    let (content_type, body) = multipart(part10);
    let mut request = client.post(endpoint(&dest.url)).header(CONTENT_TYPE, content_type).header(ACCEPT, "application/dicom+json").body(body);
    if let Some(auth) = auth {
        request = request.header(AUTHORIZATION, auth);
    }
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                format!("the DICOMweb archive did not answer within {:?}", dest.timeout)
            } else if e.is_connect() {
                format!("connecting to the DICOMweb archive: {}", causes(e))
            } else {
                format!("STOW-RS to the DICOMweb archive: {}", causes(e))
            };
            return Stored::Retry { why, unreachable: true };
        }
    };
    let status = response.status().as_u16();
    // The body is read (bounded) only where it may say which instances were stored.
    let mut answer = Vec::new();
    if matches!(status, 200 | 202 | 409) {
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.len() + chunk.len() <= MAX_ANSWER => answer.extend_from_slice(&chunk),
                Ok(Some(_)) => {
                    answer.clear();
                    break;
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Stored::Retry { why: format!("the DICOMweb archive's answer did not end within {:?}", dest.timeout), unreachable: true }
                }
                Err(e) => return Stored::Retry { why: format!("reading the DICOMweb archive's answer: {}", causes(e)), unreachable: true },
            }
        }
    }
    judge(status, &answer, instance)
}

/// For `doctor`: one authenticated `GET {url}/studies?limit=1` (a QIDO-RS search; nothing is
/// stored): the answer's status, or why none came (connection, TLS, timeout, credentials that
/// cannot be read). The answer's body is not read.
pub async fn probe(dest: &DicomwebDestination) -> Result<u16, String> {
    let client = client(dest)?;
    let mut request = client.get(format!("{}?limit=1", endpoint(&dest.url))).header(ACCEPT, "application/dicom+json");
    if let Some(auth) = authorization(dest).map_err(|why| format!("credentials: {why}"))? {
        request = request.header(AUTHORIZATION, auth);
    }
    match request.send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) if e.is_timeout() => Err(format!("no answer within {:?}", dest.timeout)),
        Err(e) => Err(causes(e)),
    }
}

/// `STOW-RS answered 409 Conflict`.
fn status_line(status: u16) -> String {
    match reqwest13::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()) {
        Some(reason) => format!("STOW-RS answered {status} {reason}"),
        None => format!("STOW-RS answered {status}"),
    }
}

/// Where the answer (DICOM JSON, PS3.18 F.2) lists `instance`.
#[derive(Debug, PartialEq, Eq)]
enum Listed {
    Stored,
    Failed(Option<u16>),
    Absent,
}

fn listed(answer: &[u8], instance: &str) -> Listed {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(answer) else { return Listed::Absent };
    // A data set, or (some archives) an array holding one.
    let dataset = match &json {
        serde_json::Value::Array(items) => items.first().cloned().unwrap_or_default(),
        other => other.clone(),
    };
    let items = |tag: &str| dataset.get(tag).and_then(|e| e.get("Value")).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let names = |item: &serde_json::Value| {
        item.get("00081155")
            .and_then(|e| e.get("Value"))
            .and_then(|v| v.get(0))
            .and_then(|v| v.as_str())
            .is_some_and(|uid| uid.trim_end_matches('\0').trim() == instance)
    };
    if items("00081199").iter().any(names) {
        return Listed::Stored;
    }
    match items("00081198").iter().find(|i| names(i)) {
        Some(item) => Listed::Failed(
            item.get("00081197").and_then(|e| e.get("Value")).and_then(|v| v.get(0)).and_then(|v| v.as_u64()).and_then(|c| u16::try_from(c).ok()),
        ),
        None => Listed::Absent,
    }
}

/// A Failure Reason the archive may answer differently later.
fn transient(code: u16) -> bool {
    let s = Status(code);
    s.is_out_of_resources() || [Status::PROCESSING_FAILURE, Status::RESOURCE_LIMITATION].contains(&s)
}

/// The verdict for an answer: its status and (for 200, 202 and 409) its body, for `instance`.
pub fn judge(status: u16, answer: &[u8], instance: &str) -> Stored {
    let line = status_line(status);
    let failed = |code: Option<u16>| match code {
        Some(code) if transient(code) => retry(format!("{line}: failure reason {}", Status(code))),
        Some(code) => Stored::Dead(format!("{line}: the archive refused the object, failure reason {}", Status(code))),
        None => Stored::Dead(format!("{line}: the archive refused the object (no failure reason given)")),
    };
    match status {
        200 | 202 => match listed(answer, instance) {
            Listed::Stored => Stored::Delivered,
            Listed::Failed(code) => failed(code),
            Listed::Absent => retry(format!("{line} but did not list the object as stored (not taken as delivered)")),
        },
        409 => match listed(answer, instance) {
            Listed::Failed(code) => failed(code).into_dead(),
            _ => Stored::Dead(format!("{line}: the archive stored none of the request")),
        },
        401 | 403 => Stored::Dead(format!("{line}: check the destination's auth and credentials")),
        408 | 429 => retry(line),
        400..=499 => Stored::Dead(line),
        _ => retry(line),
    }
}

impl Stored {
    /// A 409 is final, whatever reason it gives.
    fn into_dead(self) -> Stored {
        match self {
            Stored::Retry { why, .. } => Stored::Dead(why),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1.2.3.4";

    fn answer(referenced: &[&str], failed: &[(&str, u16)]) -> Vec<u8> {
        let item =
            |uid: &str| serde_json::json!({"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.88.34"]}, "00081155": {"vr": "UI", "Value": [uid]}});
        let mut ds = serde_json::json!({"00081190": {"vr": "UR", "Value": ["http://x/studies/1"]}});
        if !referenced.is_empty() {
            ds["00081199"] = serde_json::json!({"vr": "SQ", "Value": referenced.iter().map(|u| item(u)).collect::<Vec<_>>()});
        }
        if !failed.is_empty() {
            let items: Vec<_> = failed
                .iter()
                .map(|(u, code)| {
                    let mut i = item(u);
                    i["00081197"] = serde_json::json!({"vr": "US", "Value": [code]});
                    i
                })
                .collect();
            ds["00081198"] = serde_json::json!({"vr": "SQ", "Value": items});
        }
        serde_json::to_vec(&ds).unwrap()
    }

    #[test]
    fn answers_are_read_per_instance() {
        assert_eq!(judge(200, &answer(&[UID], &[]), UID), Stored::Delivered);
        assert_eq!(judge(202, &answer(&[UID], &[("9.9", 0xC000)]), UID), Stored::Delivered, "stored, another failed");
        // An array holding the data set, as some archives answer.
        let wrapped = format!("[{}]", String::from_utf8(answer(&[UID], &[])).unwrap());
        assert_eq!(judge(200, wrapped.as_bytes(), UID), Stored::Delivered);
        // As Orthanc 1.10's DICOMweb plugin answers: an empty Failed SOP Sequence has no Value.
        let orthanc = format!(
            r#"{{"00081198": {{"vr": "SQ"}}, "00081199": {{"vr": "SQ", "Value": [{{"00081150": {{"vr": "UI", "Value": ["1.2"]}}, "00081155": {{"vr": "UI", "Value": ["{UID}"]}}}}]}}}}"#
        );
        assert_eq!(judge(200, orthanc.as_bytes(), UID), Stored::Delivered);
        // A 200 that does not name the object is not success.
        assert!(matches!(judge(200, &answer(&["9.9"], &[]), UID), Stored::Retry { why, .. } if why.contains("did not list")));
        assert!(matches!(judge(200, b"", UID), Stored::Retry { .. }));
        assert!(matches!(judge(200, b"<NativeDicomModel/>", UID), Stored::Retry { .. }));
        // Failed: the reason code decides.
        assert!(matches!(judge(202, &answer(&[], &[(UID, 0xC000)]), UID), Stored::Dead(w) if w.contains("0xC000")));
        assert!(matches!(judge(202, &answer(&[], &[(UID, 0x0122)]), UID), Stored::Dead(w) if w.contains("0x0122")));
        assert!(matches!(judge(202, &answer(&[], &[(UID, 0xA700)]), UID), Stored::Retry { why, .. } if why.contains("0xA700")));
        assert!(matches!(judge(409, &answer(&[], &[(UID, 0xA900)]), UID), Stored::Dead(w) if w.contains("409 Conflict") && w.contains("0xA900")));
        assert!(matches!(judge(409, &answer(&[], &[(UID, 0xA700)]), UID), Stored::Dead(_)), "409: nothing stored, final");
        assert!(matches!(judge(409, b"", UID), Stored::Dead(w) if w.contains("409")));
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert!(matches!(judge(401, b"", UID), Stored::Dead(w) if w.contains("401 Unauthorized") && w.contains("credentials")));
        assert!(matches!(judge(403, b"", UID), Stored::Dead(_)));
        assert!(matches!(judge(400, b"", UID), Stored::Dead(w) if w == "STOW-RS answered 400 Bad Request"));
        assert!(matches!(judge(415, b"", UID), Stored::Dead(_)));
        assert!(matches!(judge(408, b"", UID), Stored::Retry { .. }));
        assert!(matches!(judge(429, b"", UID), Stored::Retry { .. }));
        assert!(matches!(judge(500, b"", UID), Stored::Retry { why, .. } if why.contains("500")));
        assert!(matches!(judge(503, b"", UID), Stored::Retry { .. }));
        assert!(matches!(judge(302, b"", UID), Stored::Retry { .. }), "redirects are not followed");
    }

    #[test]
    fn credentials_come_from_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "open sesame\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dest = |auth: &str, key: &str| {
            let toml = format!("name = \"t-1\"\nurl = \"https://a.example/\"\nauth = \"{auth}\"\nusername = \"Aladdin\"\n{key} = \"{}\"\n", file.display());
            destination_from(&toml)
        };
        let basic = authorization(&dest("basic", "password_file")).unwrap().unwrap();
        assert_eq!(basic.to_str().unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(basic.is_sensitive());
        let bearer = dest("bearer", "token_file");
        assert_eq!(authorization(&bearer).unwrap().unwrap().to_str().unwrap(), "Bearer open sesame");
        assert_eq!(bearer.secret_env("TOKEN"), "TRIAGE_DICOMWEB_T_1_TOKEN");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(authorization(&bearer).unwrap_err().contains("readable by others"));
        std::fs::remove_file(&file).unwrap();
        assert!(authorization(&bearer).unwrap_err().contains("reading the token file"));
    }

    /// A destination as `[[results.dicomweb]]` writes it.
    fn destination_from(toml: &str) -> DicomwebDestination {
        config::Config::builder().add_source(config::File::from_str(toml, config::FileFormat::Toml)).build().unwrap().try_deserialize().unwrap()
    }

    #[test]
    fn the_body_is_one_dicom_part() {
        let (content_type, body) = multipart(b"DICM-bytes");
        let boundary = content_type.split("boundary=").nth(1).unwrap();
        assert!(content_type.starts_with("multipart/related; type=\"application/dicom\""));
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text, format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\nDICM-bytes\r\n--{boundary}--\r\n"));
        assert_eq!(endpoint("https://a.example/dicomweb/"), "https://a.example/dicomweb/studies");
    }
}
