//! The durable outbox: a PACS outage is drained later, refusals are dead-lettered with their
//! reason and can be replayed, and queued items survive SIGKILL and arrive exactly once.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;

fn fast_retries() -> Vec<String> {
    ["poll_interval = \"100ms\"", "retry_base = \"300ms\"", "retry_max = \"1s\"", "timeout = \"5s\"", "lease = \"20s\""].iter().map(|s| s.to_string()).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn list(node: &Node) -> String {
    String::from_utf8(node.cli(&["outbox", "list"]).stdout).unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn queue(node: &Node, to: &str, files: &[PathBuf]) {
    let mut args = vec!["outbox".to_string(), "add".into(), "--to".into(), to.into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let out = node.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// What storescp is run with here: the PACS's AE title, every transfer syntax, bit-preserving.
const PACS_OPTIONS: [&str; 4] = ["+xa", "-B", "-aet", "PACS"];

#[test]
fn pacs_outage_is_drained_later() {
    if !peers_ready() || !have_tool("storescp") {
        return;
    }
    let node = Node::start(NodeOptions { delivery: fast_retries(), ..Default::default() });
    let port = free_port();
    assert!(node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &port.to_string()]).status.success());
    let files: Vec<PathBuf> = walk(&testdata().unwrap().join("series")).into_iter().take(3).collect();
    queue(&node, "PACS", &files);

    // The PACS is down: attempts fail and are rescheduled, nothing is lost.
    wait_until("a failed attempt", Duration::from_secs(10), || list(&node).contains("connecting to 127.0.0.1"));
    assert!(list(&node).contains("pending"), "{}", list(&node));

    let received = tempfile::tempdir().unwrap();
    let pacs = storescp_at(port, received.path(), &PACS_OPTIONS);
    wait_until("delivery after the outage", Duration::from_secs(20), || list(&node).matches("delivered").count() == 3);
    drop(pacs);
    assert_eq!(walk(received.path()).len(), 3);
    for f in &files {
        let (uid, _) = meta_of(f);
        assert!(walk(received.path()).iter().any(|r| meta_of(r).0 == uid));
    }
}

#[test]
fn refusals_are_dead_lettered_with_the_reason_and_can_be_replayed() {
    if !peers_ready() {
        return;
    }
    // The destination is another node (AE title TRIAGE, which knows the sender as a modality):
    // a Storage SCP that refuses corrupt data sets with 0xC000. (A node cannot deliver to
    // itself: its own title is registered there as a PACS, and a PACS may not store.)
    let receiver = Node::start(NodeOptions { register: vec!["TRIAGE"], ..Default::default() });
    let node = Node::start(NodeOptions { delivery: fast_retries(), register: vec!["PYNETDICOM"], ..Default::default() });
    assert!(node.cli(&["ae", "add", "TRIAGE", "--role", "pacs", "--host", "127.0.0.1", "--port", &receiver.port.to_string()]).status.success());
    let bad = node.dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let good = testdata().unwrap().join("ts/cr_explicit_le.dcm");
    node.pynetdicom(&["make-bad", "--source", testdata().unwrap().join("ts/ct_explicit_le.dcm").to_str().unwrap(), "--out", bad.to_str().unwrap()]);
    queue(&node, "TRIAGE", &[good, bad.join("truncated.dcm")]);
    wait_until("one delivered and one dead", Duration::from_secs(15), || {
        let l = list(&node);
        l.contains("delivered") && l.contains("dead")
    });
    let dead = String::from_utf8(node.cli(&["outbox", "list", "--state", "dead"]).stdout).unwrap();
    assert!(dead.contains("status 0xC000"), "{dead}");

    let retry = node.cli(&["outbox", "retry", "--dead"]);
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 item(s) queued again"));
    wait_until("the replay to be refused again", Duration::from_secs(15), || {
        String::from_utf8(node.cli(&["outbox", "list", "--state", "dead"]).stdout).unwrap().lines().count() == 2
    });
    assert!(node.log().contains("delivery dead-lettered"));
}

#[test]
fn queued_items_survive_kill_9_and_arrive_exactly_once() {
    if !peers_ready() {
        return;
    }
    let receiver = Node::start(NodeOptions { register: vec!["TRIAGE"], ..Default::default() });
    let mut sender = Node::start(NodeOptions { delivery: fast_retries(), ..Default::default() });
    // The receiver is another node, whose AE title is TRIAGE. Queue while that destination
    // points nowhere, so the items are pending when we kill.
    let nowhere = free_port().to_string();
    assert!(sender.cli(&["ae", "add", "TRIAGE", "--role", "pacs", "--host", "127.0.0.1", "--port", &nowhere]).status.success());
    let files: Vec<PathBuf> = walk(&testdata().unwrap().join("series")).into_iter().take(5).collect();
    queue(&sender, "TRIAGE", &files);
    wait_until("a failed attempt", Duration::from_secs(10), || list(&sender).contains("connecting to"));
    sender.kill9();

    let port = receiver.port.to_string();
    assert!(sender.cli(&["ae", "add", "TRIAGE", "--role", "pacs", "--host", "127.0.0.1", "--port", &port]).status.success());
    sender.launch();
    wait_until("delivery after the restart", Duration::from_secs(20), || list(&sender).matches("delivered").count() == 5);

    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(async { receiver.db().await.count_instances().await.unwrap() }), 5);
    assert!(!receiver.log().contains("duplicate SOP Instance UID"), "an item was delivered twice");
}

/// A PACS that accepts every association (each proposed context in its first transfer syntax)
/// and then never reads again: what a hung archive looks like from the sending side. Returns
/// its port and how many associations it accepted.
fn silent_pacs() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use dicom_ul::pdu::{AssociationAC, Pdu, PresentationContextResult, PresentationContextResultReason, UserVariableItem};
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut socket in listener.incoming().flatten() {
            let mut header = [0u8; 6];
            if socket.read_exact(&mut header).is_err() {
                continue;
            }
            let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
            let mut pdu = header.to_vec();
            pdu.resize(6 + len, 0);
            if socket.read_exact(&mut pdu[6..]).is_err() {
                continue;
            }
            let Ok(Some(Pdu::AssociationRQ(rq))) = dicom_ul::pdu::read_pdu(&pdu[..], 1 << 20, false) else { continue };
            let ac = AssociationAC {
                protocol_version: 1,
                calling_ae_title: rq.calling_ae_title.clone(),
                called_ae_title: rq.called_ae_title.clone(),
                application_context_name: rq.application_context_name.clone(),
                presentation_contexts: rq
                    .presentation_contexts
                    .iter()
                    .map(|pc| PresentationContextResult {
                        id: pc.id,
                        reason: PresentationContextResultReason::Acceptance,
                        transfer_syntax: pc.transfer_syntaxes[0].clone(),
                    })
                    .collect(),
                user_variables: vec![UserVariableItem::MaxLength(16384)],
            };
            let mut out = Vec::new();
            dicom_ul::pdu::write_pdu(&mut out, &Pdu::AssociationAC(ac)).unwrap();
            if socket.write_all(&out).is_ok() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(socket); // open, never read again
            }
        }
    });
    (port, accepted)
}

/// Issue 28: a destination that stops reading in the middle of a C-STORE gets its item retried
/// after the write timeout (not a worker held for ever), and a healthy PACS queued behind it
/// gets its object meanwhile: each destination has its own lane.
#[test]
fn a_pacs_that_stops_reading_is_retried_and_holds_only_its_own_lane() {
    if !peers_ready() || !have_tool("storescp") {
        return;
    }
    let delivery = ["poll_interval = \"100ms\"", "retry_base = \"300ms\"", "retry_max = \"1s\"", "timeout = \"2s\"", "lease = \"20s\""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let node = Node::start(NodeOptions { delivery, ..Default::default() });
    let (silent_port, associations) = silent_pacs();
    let received = tempfile::tempdir().unwrap();
    let (mut pacs, pacs_port) = storescp_with(received.path(), &PACS_OPTIONS);
    assert!(node.cli(&["ae", "add", "HUNG", "--role", "pacs", "--host", "127.0.0.1", "--port", &silent_port.to_string()]).status.success());
    assert!(node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]).status.success());

    // An object far larger than the socket buffers: its data set cannot all be written to a
    // peer that does not read.
    let big = node.dir.path().join("big.dcm");
    let mut obj = dicom_object::open_file(testdata().unwrap().join("ts/ct_explicit_le.dcm")).unwrap();
    obj.put(dicom_core::DataElement::new(dicom_dictionary_std::tags::PIXEL_DATA, dicom_core::VR::OB, dicom_core::PrimitiveValue::from(vec![0u8; 48 << 20])));
    obj.write_to_file(&big).unwrap();
    queue(&node, "HUNG", &[big]);
    wait_until("the hung PACS to accept an association", Duration::from_secs(20), || associations.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // Queued after it, for another destination: delivered while the hung one is stuck.
    let small = testdata().unwrap().join("ts/cr_explicit_le.dcm");
    queue(&node, "PACS", std::slice::from_ref(&small));
    wait_until("the healthy PACS's object, while the other destination hangs", Duration::from_secs(30), || walk(received.path()).len() == 1);

    // The hung destination's item: retried after the write timeout, with the reason.
    wait_until("the hung destination's item retried", Duration::from_secs(60), || {
        String::from_utf8(node.cli(&["outbox", "list", "--state", "pending"]).stdout).unwrap().contains("took nothing")
    });
    wait_until("a new association for the retry", Duration::from_secs(30), || associations.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let _ = pacs.kill();
    let _ = pacs.wait();
    assert_eq!(meta_of(&walk(received.path())[0]).0, meta_of(&small).0);
}
