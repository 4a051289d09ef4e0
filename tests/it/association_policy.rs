//! Association acceptance policy: AE titles, host binding, the association limit, timeouts.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn unknown_calling_ae_is_rejected_with_calling_ae_not_recognized() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    // PS3.8 Table 9-21: result 1 (permanent), source 1 (service user), reason 3.
    assert_eq!(node.pynetdicom(&["--aet", "STRANGER", "echo"]), vec!["REJECTED result=1 source=1 reason=3"]);
    let out = node.dcmtk("echoscu", &["-aet", "STRANGER", "-aec", "TRIAGE"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("Calling AE Title Not Recognized"), "{text}");
    assert!(node.log().contains("calling_ae=STRANGER"));
}

#[test]
fn wrong_called_ae_is_rejected_with_called_ae_not_recognized() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    assert_eq!(node.pynetdicom(&["--aec", "NOT_TRIAGE", "echo"]), vec!["REJECTED result=1 source=1 reason=7"]);
}

#[test]
fn ae_administration_applies_to_the_next_association_without_restart() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { register: vec![], ..Default::default() });
    assert_eq!(node.pynetdicom(&["--aet", "CT_ROOM_1", "echo"]), vec!["REJECTED result=1 source=1 reason=3"]);

    // Bound to another host: still refused from loopback.
    assert!(node.cli(&["ae", "add", "CT_ROOM_1", "--host", "192.0.2.10"]).status.success());
    assert_eq!(node.pynetdicom(&["--aet", "CT_ROOM_1", "echo"]), vec!["REJECTED result=1 source=1 reason=3"]);

    // Bound to loopback: accepted, same running node.
    assert!(node.cli(&["ae", "add", "CT_ROOM_1", "--host", "127.0.0.1"]).status.success());
    assert_eq!(node.pynetdicom(&["--aet", "CT_ROOM_1", "echo"]), vec!["ESTABLISHED 1.2.840.10008.1.2.1", "ECHO 0x0000"]);

    // Disabled: refused again.
    assert!(node.cli(&["ae", "add", "CT_ROOM_1", "--host", "127.0.0.1", "--disabled"]).status.success());
    assert_eq!(node.pynetdicom(&["--aet", "CT_ROOM_1", "echo"]), vec!["REJECTED result=1 source=1 reason=3"]);

    let list = String::from_utf8(node.cli(&["ae", "list"]).stdout).unwrap();
    assert!(list.contains("CT_ROOM_1") && list.contains("127.0.0.1") && list.contains(" no "), "{list}");

    assert!(node.cli(&["ae", "remove", "CT_ROOM_1"]).status.success());
    let again = node.cli(&["ae", "remove", "CT_ROOM_1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no AE titled CT_ROOM_1"));
    let bad = node.cli(&["ae", "add", "THIS_TITLE_IS_TOO_LONG"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at most 16 characters"));
    let no_address = node.cli(&["ae", "add", "PACS_X", "--role", "pacs"]);
    assert!(!no_address.status.success());
    assert!(String::from_utf8_lossy(&no_address.stderr).contains("a pacs AE needs --host and --port"), "{}", String::from_utf8_lossy(&no_address.stderr));

    // Every change is in the audit trail (after the node's start entry), and tampering with it is detected.
    let verify = node.cli(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit log intact: 5 entries"), "{}", String::from_utf8_lossy(&verify.stdout));
    let list = String::from_utf8(node.cli(&["audit", "list"]).stdout).unwrap();
    assert_eq!(list.matches("ae_add").count(), 3, "{list}");
    assert_eq!(list.matches("ae_remove").count(), 1, "{list}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sqlx::Executor;
        let url = format!("sqlite://{}", node.data_dir().join("triage.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        pool.execute("UPDATE audit_log SET details = '{\"host\":\"10.9.9.9\"}' WHERE seq = 2").await.unwrap();
        pool.close().await;
    });
    let verify = node.cli(&["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("entry 2: its hash does not match its contents"), "{}", String::from_utf8_lossy(&verify.stderr));
}

#[test]
fn association_over_the_limit_is_rejected_local_limit_exceeded() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { dicom: vec!["max_associations = 1".into()], ..Default::default() });
    let mut holder = node.pynetdicom_command(&["hold", "--seconds", "4"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("ESTABLISHED"), "{first}");
    // PS3.8: result 2 (transient), source 3 (service provider, presentation), reason 2.
    assert_eq!(node.pynetdicom(&["echo"]), vec!["REJECTED result=2 source=3 reason=2"]);
    assert!(holder.wait().unwrap().success());
    // The slot is free again once the first association is released.
    assert!(node.wait_for_log("association ended", Duration::from_secs(5)));
    assert_eq!(node.pynetdicom(&["echo"]), vec!["ESTABLISHED 1.2.840.10008.1.2.1", "ECHO 0x0000"]);
}

#[test]
fn silent_peer_is_dropped_after_the_artim_timeout() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { dicom: vec!["artim_timeout = \"1s\"".into()], ..Default::default() });
    let mut sock = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = sock.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the node to close the connection");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(node.wait_for_log("ARTIM", Duration::from_secs(2)), "{}", node.log());
}

#[test]
fn idle_association_is_aborted_after_the_idle_timeout() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { dicom: vec!["idle_timeout = \"1s\"".into()], ..Default::default() });
    // The holder keeps the association silent for 4 s; the node aborts it after 1 s.
    let out = node.pynetdicom_command(&["hold", "--seconds", "4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ESTABLISHED"), "{stdout}");
    assert!(node.wait_for_log("idle timeout", Duration::from_secs(5)), "{}", node.log());
}

#[test]
fn garbage_instead_of_a_pdu_is_refused_and_the_node_keeps_serving() {
    use std::io::Write;
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    for garbage in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF][..], &[0x04, 0, 0, 0, 0, 2, 0, 0][..]] {
        let mut sock = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        sock.write_all(garbage).unwrap();
        let mut reply = Vec::new();
        let _ = sock.read_to_end(&mut reply);
        // Either an A-ABORT PDU (type 7) or a plain close; never a hang.
        assert!(reply.is_empty() || reply[0] == 0x07, "{reply:?}");
    }
    assert_eq!(node.pynetdicom(&["echo"]), vec!["ESTABLISHED 1.2.840.10008.1.2.1", "ECHO 0x0000"]);
}
