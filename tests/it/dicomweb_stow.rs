//! STOW-RS ingest (`POST /dicomweb/studies`) against a running node: PyPI `dicomweb-client`
//! stores a study of CT slices (de-identified on ingest, triaged like a C-STORE'd study), and
//! the bad requests (no token, a reader's token, wrong content type, gzip, truncated body, a
//! part that is not DICOM, an oversized part, a study that does not match the path) get their
//! status while nothing accepted before them is lost and nothing half-written stays.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::Value;
use triage_node::dicom::multipart;

use crate::common::*;

/// `n` CT slices of one new study (planted patient STOW^SECRET / STOWPID77): (files, study UID).
fn slices(dir: &Path, n: usize) -> (Vec<PathBuf>, String) {
    let source = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let out = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/stow_client.py"))
        .args(["make", &dir.display().to_string(), &n.to_string(), &source.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files = walk(dir);
    files.sort();
    (files, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn post(node: &Node, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>, extra: &[(&str, &str)]) -> Response {
    let mut rq = Client::new().post(format!("http://127.0.0.1:{}{path}", node.http_port.unwrap())).header("Content-Type", content_type).body(body);
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    for (k, v) in extra {
        rq = rq.header(*k, *v);
    }
    rq.send().unwrap()
}

/// A multipart/related body of `parts` with its Content-Type.
fn related(parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let boundary = multipart::new_boundary();
    let body = multipart::write(&boundary, parts.iter().map(|p| ("application/dicom", p.as_slice())));
    (multipart::related_content_type("application/dicom", &boundary), body)
}

fn codes(rsp: &Value, seq: &str) -> Vec<u64> {
    rsp[seq]["Value"].as_array().map(|items| items.iter().map(|i| i["00081197"]["Value"][0].as_u64().unwrap_or(0)).collect()).unwrap_or_default()
}

fn count(rsp: &Value, seq: &str) -> usize {
    rsp[seq]["Value"].as_array().map_or(0, Vec::len)
}

/// POSTs the start of a body (announcing more) and stalls: the response's status line.
fn stalled_post(node: &Node, content_type: &str, start: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.http_port.unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let head = format!(
        "POST /dicomweb/studies HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {MODALITY_TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        start.len() + 100_000
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(start).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_study_stored_by_dicomweb_client_is_deidentified_and_triaged_like_a_c_stored_one() {
    if !require("python peers and the test corpus", peers_ready()) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (files, study) = slices(work.path(), 8);
    let models = tempfile::tempdir().unwrap();
    let node = Node::start(NodeOptions { inference: vec![tiny_package(models.path(), &TINY.replace("MODALITY", "CT"))], ..Default::default() });
    let url = format!("http://127.0.0.1:{}/dicomweb", node.http_port.unwrap());
    let mut cmd = Command::new(python().unwrap());
    cmd.arg(repo().join("tests/peers/stow_client.py")).args(["store", &url, MODALITY_TOKEN]).args(&files);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let rsp: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(count(&rsp, "00081199"), 8, "{rsp}");
    assert_eq!(count(&rsp, "00081198"), 0, "{rsp}");
    // The caller's own UIDs come back in the Referenced SOP Sequence.
    let (first_uid, _) = meta_of(&files[0]);
    assert!(rsp.to_string().contains(&first_uid), "{rsp}");

    // Stored as C-STORE stores: one de-identified file per instance, rows under the new UIDs.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    for f in &files {
        let (sop, _) = meta_of(f);
        assert!(rt.block_on(db.find_instance(&deid_uid(&sop))).unwrap().is_some(), "instance row of {}", f.display());
    }
    assert_eq!(node.stored_files().len(), 8);
    assert!(node.spool_files().is_empty());
    // Triaged like a C-STORE'd study: the quiet period, the study job, a result.
    let results = wait_results(&rt, &db, std::slice::from_ref(&deid_uid(&study)), Duration::from_secs(60), &node).remove(0);
    assert!(!results.is_empty());
    // No original identifier anywhere on disk (files, database) or in the log.
    for path in walk(&node.data_dir()) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        for secret in ["STOW^SECRET", "STOWPID77", study.as_str(), first_uid.as_str()] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in {}", path.display());
        }
    }

    // Each part in its own transfer syntax (from its File Meta Information), a 7 MB one streamed
    // to the spool as a large C-STORE is, checked against the study in the path.
    let ts = testdata().unwrap().join("ts");
    let cr = ts.join("cr_explicit_le.dcm");
    let others: Vec<Vec<u8>> =
        ["ct_deflated.dcm", "ct_implicit_le.dcm", "ct_explicit_be.dcm", "ct_jpeg_baseline.dcm"].iter().map(|f| std::fs::read(ts.join(f)).unwrap()).collect();
    let (ct, body) = related(&others);
    let rsp = post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), &ct, body, &[]);
    assert_eq!(rsp.status(), StatusCode::OK, "{}", rsp.text().unwrap());
    let (ct, body) = related(&[std::fs::read(&cr).unwrap()]);
    let rsp = post(&node, &format!("/dicomweb/studies/{}", study_uid_of(&cr)), Some(MODALITY_TOKEN), &ct, body, &[]);
    assert_eq!(rsp.status(), StatusCode::OK, "{}", rsp.text().unwrap());
    assert_eq!(node.stored_files().len(), 8 + 5);
    for f in ["ct_deflated.dcm", "ct_implicit_le.dcm", "ct_explicit_be.dcm", "ct_jpeg_baseline.dcm", "cr_explicit_le.dcm"] {
        let (sop, syntax) = meta_of(&ts.join(f));
        let row = rt.block_on(db.find_instance(&deid_uid(&sop))).unwrap().unwrap_or_else(|| panic!("{f} stored"));
        assert_eq!(row.transfer_syntax_uid, syntax, "{f} kept in its transfer syntax");
    }
    assert!(node.spool_files().is_empty());

    let log = node.log();
    for secret in ["STOW^SECRET", "STOWPID77", study.as_str(), first_uid.as_str(), MODALITY_TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(log.contains("STOW-RS request") && log.contains("user=ct-gateway"), "{log}");
}

#[test]
fn bad_stow_requests_get_their_status_and_lose_nothing() {
    if !require("python peers and the test corpus", peers_ready()) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (files, study) = slices(work.path(), 7);
    let part = |i: usize| std::fs::read(&files[i]).unwrap();
    let part_len = part(0).len();
    let node =
        Node::start(NodeOptions { http: vec![format!("stow_max_part = \"{}\"", part_len + 1024), "request_timeout = \"3s\"".into()], ..Default::default() });
    let stored = || node.stored_files().len();
    let (ct, body) = related(&[part(0)]);

    // Who may store: a modality token only.
    assert_eq!(post(&node, "/dicomweb/studies", None, &ct, body.clone(), &[]).status(), StatusCode::UNAUTHORIZED);
    for token in [READER_TOKEN, ADMIN_TOKEN] {
        assert_eq!(post(&node, "/dicomweb/studies", Some(token), &ct, body.clone(), &[]).status(), StatusCode::FORBIDDEN);
    }
    // ...and a modality token reads nothing.
    let me = Client::new().get(format!("http://127.0.0.1:{}/api/worklist", node.http_port.unwrap())).bearer_auth(MODALITY_TOKEN).send().unwrap();
    assert_eq!(me.status(), StatusCode::FORBIDDEN);
    // Wrong media types.
    assert_eq!(post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), "application/dicom", part(0), &[]).status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let json_type = ct.replace("type=\"application/dicom\"", "type=\"application/dicom+json\"");
    assert_eq!(post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), &json_type, body.clone(), &[]).status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A gzip bomb (100 MB of zeros in ~100 KB) is refused unread.
    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    };
    let rsp = post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), &ct, bomb, &[("Content-Encoding", "gzip")]);
    assert_eq!(rsp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(rsp.text().unwrap().contains("Content-Encoding"));
    assert_eq!(stored(), 0);
    // No parts at all.
    let (ct0, empty) = related(&[]);
    assert_eq!(post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), &ct0, empty, &[]).status(), StatusCode::BAD_REQUEST);

    // A part that is not DICOM among good ones: 202, the good ones stored, 0xC000 for it.
    let (ct2, body2) = related(&[part(0), b"plain text, no DICM".to_vec(), part(1)]);
    let rsp = post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), &ct2, body2, &[]);
    assert_eq!(rsp.status(), StatusCode::ACCEPTED);
    assert_eq!(rsp.headers()["content-type"], "application/dicom+json");
    let json: Value = rsp.json().unwrap();
    assert_eq!(count(&json, "00081199"), 2, "{json}");
    assert_eq!(codes(&json, "00081198"), vec![0xC000], "{json}");
    assert_eq!(stored(), 2);

    // A truncated body: 400, the part before the cut kept, the cut one not.
    let (ct3, body3) = related(&[part(2), part(3)]);
    let cut = body3.len() - part_len / 2;
    let rsp = post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), &ct3, body3[..cut].to_vec(), &[]);
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    assert!(rsp.text().unwrap().contains("1 instance(s) of the request were stored"));
    assert_eq!(stored(), 3);

    // An oversized part: 413 naming the limit; the instance before it kept.
    let mut big = part(5);
    big.extend(std::iter::repeat_n(0u8, 4096));
    let (ct4, body4) = related(&[part(4), big]);
    let rsp = post(&node, "/dicomweb/studies", Some(MODALITY_TOKEN), &ct4, body4, &[]);
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = rsp.text().unwrap();
    assert!(text.contains(&format!("{} bytes", part_len + 1024)) && text.contains("stow_max_part"), "{text}");
    assert_eq!(stored(), 4);

    // A study in the path the instance is not of: 409, 0xA900; its own study: 200.
    let (ct5, body5) = related(&[part(5)]);
    let rsp = post(&node, "/dicomweb/studies/1.2.3.4", Some(MODALITY_TOKEN), &ct5, body5.clone(), &[]);
    assert_eq!(rsp.status(), StatusCode::CONFLICT);
    assert_eq!(codes(&rsp.json().unwrap(), "00081198"), vec![0xA900]);
    let rsp = post(&node, &format!("/dicomweb/studies/{study}"), Some(MODALITY_TOKEN), &ct5, body5, &[]);
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(stored(), 5);

    // A body that stops arriving mid-part: at the deadline the part in progress is discarded
    // (no half-written file), 503, the part before it kept.
    let (ct6, body6) = related(&[part(3), part(6)]);
    let status = stalled_post(&node, &ct6, &body6[..body6.len() - part_len / 2]);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert_eq!(stored(), 6);

    // Every accepted instance has its row; nothing half-written in the store or the spool.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    for i in [0, 1, 2, 3, 4, 5] {
        let (sop, _) = meta_of(&files[i]);
        assert!(rt.block_on(db.find_instance(&deid_uid(&sop))).unwrap().is_some(), "slice {i}");
    }
    let (cut_sop, _) = meta_of(&files[6]);
    assert!(rt.block_on(db.find_instance(&deid_uid(&cut_sop))).unwrap().is_none());
    assert!(node.spool_files().is_empty(), "{:?}", node.spool_files());
}
