//! The SCU side (`triage-node echo`, `triage-node send`) against DCMTK storescp as the PACS.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// DCMTK storescp in bit-preserving mode (-B: it writes exactly the bytes it received).
struct StoreScp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl StoreScp {
    fn start() -> StoreScp {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("storescp")
            .env("TCP_NODELAY", "1")
            .args(["+xa", "-B", "-aet", "PACS", "-od"])
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "storescp did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        StoreScp { child, port, dir }
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn echo_and_send_to_dcmtk_storescp_as_stored() {
    if !peers_ready() || !have_tool("storescp") {
        return;
    }
    let pacs = StoreScp::start();
    let node = Node::start(NodeOptions::default());
    let port = pacs.port.to_string();
    assert!(node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &port]).status.success());

    let echo = node.cli(&["echo", "--to", "PACS"]);
    assert!(echo.status.success(), "{}", String::from_utf8_lossy(&echo.stderr));
    assert!(String::from_utf8_lossy(&echo.stdout).contains("status 0x0000"));

    // Every transfer syntax storescp accepts (it has no JPEG Lossless Process 14 context).
    let files: Vec<PathBuf> = walk(&testdata().unwrap().join("ts")).into_iter().filter(|p| !p.ends_with("ct_jpeg_lossless_p14.dcm")).collect();
    let mut args = vec!["send".to_string(), "--to".into(), "PACS".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let out = node.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("stored   0x0000").count(), files.len(), "{stdout}");

    let received = walk(pacs.dir.path());
    assert_eq!(received.len(), files.len());
    for file in &files {
        let (uid, ts) = meta_of(file);
        let copy = received.iter().find(|r| meta_of(r).0 == uid).unwrap_or_else(|| panic!("{} not received", file.display()));
        assert_eq!(meta_of(copy).1, ts, "{} was transcoded", file.display());
        let (sent, got) = (dataset_bytes(file), dataset_bytes(copy));
        // A deflated stream of odd length goes out padded with one NUL (PS3.5 A.5).
        let got = if ts == "1.2.840.10008.1.2.1.99" && got.len() == sent.len() + 1 { got[..sent.len()].to_vec() } else { got };
        assert!(sent == got, "{} arrived changed", file.display());
    }
}

#[test]
fn send_reports_what_was_not_stored_and_unknown_destinations() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let unknown = node.cli(&["send", "--to", "NOWHERE", "/dev/null"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no AE titled NOWHERE is registered"));

    // The destination is another node (AE title TRIAGE, which knows the sender as a modality;
    // a node cannot send to itself, where its own title is a PACS, and a PACS may not store).
    let receiver = Node::start(NodeOptions { register: vec!["TRIAGE"], ..Default::default() });
    let port = receiver.port.to_string();
    assert!(node.cli(&["ae", "add", "TRIAGE", "--role", "pacs", "--host", "127.0.0.1", "--port", &port]).status.success());
    let bad = node.dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let source = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    node.pynetdicom(&["make-bad", "--source", source.to_str().unwrap(), "--out", bad.to_str().unwrap()]);
    let out = node.cli(&["send", "--to", "TRIAGE", source.to_str().unwrap(), bad.join("truncated.dcm").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("stored   0x0000") && stdout.contains("refused  0xC000"), "{stdout}");
    assert!(stdout.contains("1 sent to TRIAGE, 1 not stored"), "{stdout}");
}
