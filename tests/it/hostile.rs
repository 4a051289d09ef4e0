//! Hostile and broken input, against the real binary (issue 11): what a scanner can put in a
//! data set that a de-identifier can miss, what a peer can send to stop the node, and what a
//! caller in the wrong role may try. Files come from tests/peers/hostile.py, which prints the
//! identifying values it planted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// Make a hostile file of `kind` from `src`; returns it, the planted strings and the planted
/// dates (checked by value: dates repeat elsewhere).
fn hostile(kind: &str, src: &Path, dir: &Path) -> (PathBuf, Vec<String>, Vec<(String, String)>) {
    let out_path = dir.join(format!("{kind}.dcm"));
    let out = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/hostile.py"))
        .args([kind, src.to_str().unwrap(), out_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "hostile.py {kind}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let planted = stdout.lines().filter_map(|l| l.strip_prefix("PLANTED ")).map(|l| l.split_once(' ').unwrap().1.to_string()).collect();
    let dates = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PLANTEDDATE "))
        .map(|l| {
            let (tag, value) = l.split_once(' ').unwrap();
            (tag.to_string(), value.to_string())
        })
        .collect();
    (out_path, planted, dates)
}

/// Every planted string found in any file under `dir`, or in `log`.
fn leaks(dir: &Path, log: &str, planted: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for path in walk(dir) {
        let bytes = std::fs::read(&path).unwrap();
        for p in planted {
            if bytes.windows(p.len()).any(|w| w == p.as_bytes()) {
                found.push(format!("{p} in {}", path.display()));
            }
        }
    }
    found.extend(planted.iter().filter(|p| log.contains(p.as_str())).map(|p| format!("{p} in the log")));
    found
}

fn dump(path: &Path) -> String {
    let out = Command::new("dcmdump").args(["-q", "+L"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sequences sent with VR UN, elements after the pixel data (one with a lower tag than Pixel
/// Data, one private), attributes Table E.1-1 does not list (UIDs, dates, Birth Date in
/// Alternative Calendar) and File Meta elements inside the data set: every planted value stays
/// out of the store, the database and the log, and the instances are stored (Success).
#[test]
fn identifiers_hidden_where_the_table_does_not_look_never_reach_the_disk() {
    if !peers_ready() || !have_tool("dcmdump") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let node = Node::start(NodeOptions::default());
    // The files go out byte for byte as written (DCMTK and pynetdicom parse and re-encode them,
    // which sorts an out-of-order element back before the pixels): the node's own SCU, calling
    // itself as a registered modality.
    let port = node.port.to_string();
    assert!(node.cli(&["ae", "add", "TRIAGE", "--host", "127.0.0.1", "--port", &port]).status.success());
    for kind in ["un-sequence", "after-pixels", "unlisted", "wrong-vr"] {
        let (file, planted, dates) = hostile(kind, &src, work.path());
        assert!(!planted.is_empty() || !dates.is_empty(), "{kind}: nothing planted");
        assert!(leaks(work.path(), "", &planted).len() >= planted.len(), "{kind}: the search finds what was planted");
        let out = node.cli(&["send", "--to", "TRIAGE", file.to_str().unwrap()]);
        assert!(out.status.success(), "{kind} not stored: {}{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), node.log());
        let found = leaks(&node.data_dir(), &node.log(), &planted);
        assert!(found.is_empty(), "{kind}: {found:?}");
        let stored = node.data_dir().join(
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async { node.db().await.find_instance(&deid_uid(&meta_of(&file).0)).await.unwrap().expect("stored").path }),
        );
        let whole = dump(&stored);
        let d = whole.split("# Dicom-Data-Set").nth(1).expect("a data set").to_string();
        for (tag, value) in &dates {
            let tag = format!("({},{})", &tag[..4].to_lowercase(), &tag[4..].to_lowercase());
            assert!(!d.lines().any(|l| l.starts_with(&tag) && l.contains(value.as_str())), "{kind}: date {tag} kept:\n{d}");
        }
        match kind {
            "after-pixels" => {
                let last = d.lines().rfind(|l| l.starts_with('(')).unwrap_or_default();
                assert!(last.starts_with("(7fe0,0010)"), "{kind}: the stored file does not end with the pixel data: {last}");
            }
            // Read as the attributes are defined: the sequences as sequences, the UID as a UID.
            "wrong-vr" => {
                for (tag, vr) in [("(0008,2112)", "SQ"), ("(0008,2218)", "SQ"), ("(0020,0242)", "UI"), ("(0020,0052)", "UI")] {
                    let line = d.lines().find(|l| l.starts_with(tag)).unwrap_or_else(|| panic!("{kind}: {tag} removed:\n{d}"));
                    assert_eq!(line.split_whitespace().nth(1), Some(vr), "{kind}: {line}");
                }
                assert!(d.contains("[Chest]"), "{kind}: the code meaning inside the OB-sent sequence is kept:\n{d}");
            }
            "un-sequence" => assert!(!d.lines().any(|l| l.starts_with('(') && l.split_whitespace().nth(1) == Some("UN")), "{kind}: a UN value was kept:\n{d}"),
            _ => assert!(!d.lines().any(|l| l.starts_with("(0002,")), "{kind}: group 0002 in the data set:\n{d}"),
        }
    }
}

/// A deflated data set of 0.7 MB that inflates to 512 MiB is refused with Out of Resources,
/// and nothing of it is kept; the node goes on serving.
#[test]
fn a_deflate_bomb_is_refused_with_out_of_resources() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (bomb, _, _) = hostile("deflate-bomb", &testdata().unwrap().join("ts/ct_explicit_le.dcm"), work.path());
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2 << 20);
    let node = Node::start(NodeOptions::default());
    let lines = node.pynetdicom_store(std::slice::from_ref(&bomb));
    assert!(lines.iter().any(|l| l.contains("0xA700")), "{lines:?}\n{}", node.log());
    assert!(node.stored_files().is_empty(), "{:?}", node.stored_files());
    assert!(node.dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", "TRIAGE"]).status.success());
}

/// An RLE segment shorter than its header declares makes the pixel decoder panic: the instance
/// must end failed, and its study get a FAILED result, instead of being retried forever.
#[test]
fn a_decoder_panic_fails_the_study_instead_of_hanging_it() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (rle, _, _) = hostile("rle-short", &testdata().unwrap().join("ts/ct_rle.dcm"), work.path());
    let models = tempfile::tempdir().unwrap();
    let node = Node::start(NodeOptions { inference: vec![tiny_package(models.path(), &TINY.replace("MODALITY", "CT"))], ..Default::default() });
    let lines = node.pynetdicom_store(std::slice::from_ref(&rle));
    assert!(lines.iter().any(|l| l.contains("0x0000")), "stored as received: {lines:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = deid_uid(&study_uid_of(&rle));
    // Without the fix no result ever comes: the instance stays claimed after the panic.
    let results = wait_results(&rt, &db, std::slice::from_ref(&uid), Duration::from_secs(40), &node).remove(0);
    assert_eq!(results[0].state, "failed", "{:?}", results[0]);
    assert!(node.dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", "TRIAGE"]).status.success());
}

/// A PACS may not store into the triage pipeline; a modality may not report Storage
/// Commitment (only the AE the request went to, a PACS, may).
#[test]
fn each_registered_role_gets_its_own_services_only() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let added = node.cli(&["ae", "add", "SOMEPACS", "--role", "pacs", "--host", "127.0.0.1", "--port", "11199"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let port = node.port.to_string();
    let out = Command::new("storescu").env("TCP_NODELAY", "1").args(["-aet", "SOMEPACS", "-aec", "TRIAGE", "127.0.0.1", &port]).arg(&file).output().unwrap();
    assert!(!out.status.success(), "a PACS stored into the pipeline: {}", String::from_utf8_lossy(&out.stderr));
    assert!(node.stored_files().is_empty());
    let out = Command::new("storescu").env("TCP_NODELAY", "1").args(["-aet", "STORESCU", "-aec", "TRIAGE", "127.0.0.1", &port]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Verification stays open to both.
    for aet in ["SOMEPACS", "STORESCU"] {
        assert!(node.dcmtk("echoscu", &["-aet", aet, "-aec", "TRIAGE"]).status.success(), "C-ECHO from {aet}");
    }
}

/// Sockets that connect and send one byte, from one address, must not lock a registered
/// modality out: one host holds at most `max_associations_per_host` slots, and a registered
/// caller still finds one.
#[test]
fn silent_connections_from_one_host_do_not_lock_modalities_out() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { dicom: vec!["artim_timeout = \"20s\"".into()], ..Default::default() });
    // 48 sockets from 127.0.0.2, each sending one byte, held for 15 s.
    let script = "import socket,sys,time\nss=[]\nfor i in range(48):\n  s=socket.socket(); s.bind(('127.0.0.2',0)); s.connect(('127.0.0.1',int(sys.argv[1]))); s.send(b'\\x01'); ss.append(s)\nprint('open', flush=True)\ntime.sleep(15)\n";
    let mut holder = Command::new(python().unwrap()).args(["-c", script, &node.port.to_string()]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "open");
    let started = Instant::now();
    let out = node.storescu(&[testdata().unwrap().join("ts/ct_explicit_le.dcm")]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "a registered modality was locked out: {}\n{}", String::from_utf8_lossy(&out.stderr), node.log());
    assert!(started.elapsed() < Duration::from_secs(10), "stored only after the silent sockets gave up");
}

/// A database restored from a backup lacks rows for instances it acknowledged: their files are
/// quarantined at start-up, never deleted, and `status` says so.
#[test]
fn store_files_without_a_row_are_quarantined_not_deleted() {
    if !peers_ready() {
        return;
    }
    let mut node = Node::start(NodeOptions::default());
    assert!(node.storescu(&[testdata().unwrap().join("ts/ct_explicit_le.dcm")]).status.success());
    let stored = node.stored_files();
    assert_eq!(stored.len(), 1);
    let bytes = std::fs::read(&stored[0]).unwrap();
    assert!(node.sigterm(Duration::from_secs(20)).is_some());
    // The restored backup predates the instance.
    let db = node.data_dir().join("triage.db");
    let out = Command::new(python().unwrap())
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA foreign_keys=OFF'); c.execute('DELETE FROM reid_map'); c.execute('DELETE FROM instances'); c.commit()"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    node.launch();
    assert!(node.wait_for_log("moved to quarantine", Duration::from_secs(10)), "{}", node.log());
    let quarantined = walk(&node.data_dir().join("quarantine"));
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(std::fs::read(&quarantined[0]).unwrap() == bytes, "the acknowledged instance is kept whole");
    assert!(node.stored_files().is_empty());
    let status = String::from_utf8_lossy(&node.cli(&["status"]).stdout).into_owned();
    assert!(status.contains("store files in quarantine") && status.contains(": 1"), "{status}");
}

/// The audit chain is keyed: rewriting every entry with plain SHA-256 (all the database holder
/// can compute) fails `audit verify`; cutting its tail and rewinding the head verifies on its
/// own, but not against a checkpoint exported before (`audit head`).
#[test]
fn the_audit_chain_cannot_be_rewritten_or_cut_unnoticed() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    for ae in ["CT_A", "CT_B"] {
        assert!(node.cli(&["ae", "add", ae]).status.success());
    }
    let head = node.cli(&["audit", "head"]);
    assert!(head.status.success(), "{}", String::from_utf8_lossy(&head.stderr));
    let checkpoint = String::from_utf8(head.stdout).unwrap();
    // Three registrations, the node's start, two more registrations.
    assert!(checkpoint.starts_with("triage-node audit checkpoint v1 seq=6 "), "{checkpoint}");
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify"];
        args.extend_from_slice(extra);
        let out = node.cli(&args);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    assert!(verify(&["--checkpoint", checkpoint.trim()]).0);
    let db = node.data_dir().join("triage.db");
    let sql = |script: &str| {
        let out = Command::new(python().unwrap()).args(["-c", script]).arg(&db).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // Cut the last two entries and rewind the head to the third.
    sql("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM audit_log WHERE seq > 3'); c.execute('UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3)'); c.commit()");
    let (ok, text) = verify(&[]);
    assert!(ok, "the remaining entries are genuine: {text}");
    let (ok, text) = verify(&["--checkpoint", checkpoint.trim()]);
    assert!(!ok && text.contains("entry 6, which the log no longer holds"), "{text}");
    // Rewrite every entry with plain SHA-256, as the unkeyed chain allowed.
    sql(r#"
import hashlib,sqlite3,sys
c=sqlite3.connect(sys.argv[1]); prev='0'*64
rows=c.execute('SELECT seq, at_ms, event, subject, details FROM audit_log ORDER BY seq').fetchall()
for seq, at, ev, sub, det in rows:
    h=hashlib.sha256()
    for f in [prev.encode(), seq.to_bytes(8,'big',signed=True), at.to_bytes(8,'big',signed=True), ev.encode(), ('FORGED'+sub).encode(), det.encode()]:
        h.update(len(f).to_bytes(8,'big')); h.update(f)
    c.execute('UPDATE audit_log SET subject=?, prev_hash=?, hash=? WHERE seq=?', ('FORGED'+sub, prev, h.hexdigest(), seq)); prev=h.hexdigest()
c.execute('UPDATE audit_head SET hash=?', (prev,)); c.commit()
"#);
    let (ok, text) = verify(&[]);
    assert!(!ok && text.contains("entry 1: its hash does not match"), "{text}");
}

/// A PACS that answers with a malformed PDU (a PDV item of length 1 with the command bit set)
/// gets a protocol error and a retry; the outbox worker keeps delivering to the other PACS,
/// for this study and the next.
#[test]
fn a_malformed_pdu_from_a_pacs_does_not_stop_delivery() {
    if !peers_ready() || !have_tool("dcmodify") {
        return;
    }
    let received = tempfile::tempdir().unwrap();
    let [good_port, bad_port] = free_ports();
    let mut good = Command::new("storescp")
        .args(["-od", received.path().to_str().unwrap(), &good_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut bad = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/bad_pacs.py"))
        .args([&bad_port.to_string(), "BADPACS", "short-pdv"])
        .env("BAD_PACS_HOLD_S", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let models = tempfile::tempdir().unwrap();
    let node = Node::start(NodeOptions {
        inference: vec![tiny_package(models.path(), &TINY.replace("MODALITY", "CT"))],
        results: vec!["destinations = [\"BADPACS\", \"GOODPACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    for (ae, port) in [("BADPACS", bad_port), ("GOODPACS", good_port)] {
        assert!(node.cli(&["ae", "add", ae, "--role", "pacs", "--host", "127.0.0.1", "--port", &port.to_string()]).status.success());
    }
    let work = tempfile::tempdir().unwrap();
    let mut studies = Vec::new();
    for n in 0..2 {
        let f = work.path().join(format!("study{n}.dcm"));
        std::fs::copy(testdata().unwrap().join("ts/ct_explicit_le.dcm"), &f).unwrap();
        assert!(Command::new("dcmodify").args(["-nb", "-q", "-gst", "-gse", "-gin"]).arg(&f).status().unwrap().success());
        studies.push(f);
    }
    for (n, study) in studies.iter().enumerate() {
        assert!(node.storescu(std::slice::from_ref(study)).status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while walk(received.path()).len() < n + 1 {
            assert!(Instant::now() < deadline, "study {n}: nothing reached the good PACS\n{}", node.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = good.kill();
    let _ = bad.kill();
    let _ = (good.wait(), bad.wait());
    let log = node.log();
    assert!(log.contains("malformed P-DATA-TF"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Two instances of one study that name different patients (a mislabelled or merged study):
/// the study is not triaged as one; its result fails with the reason, nothing is queued for the
/// PACS, and `status` counts it.
#[test]
fn a_study_whose_instances_name_two_patients_is_not_triaged_as_one() {
    if !peers_ready() || !have_tool("dcmodify") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a.dcm"), work.path().join("b.dcm"));
    std::fs::copy(testdata().unwrap().join("ts/ct_explicit_le.dcm"), &a).unwrap();
    assert!(Command::new("dcmodify").args(["-nb", "-q", "-gst", "-gse", "-gin"]).arg(&a).status().unwrap().success());
    std::fs::copy(&a, &b).unwrap();
    assert!(Command::new("dcmodify")
        .args(["-nb", "-q", "-gin", "-m", "(0010,0020)=SOMEONE_ELSE", "-m", "(0010,0010)=ELSE^SOMEONE"])
        .arg(&b)
        .status()
        .unwrap()
        .success());
    let models = tempfile::tempdir().unwrap();
    let node = Node::start(NodeOptions {
        inference: vec![tiny_package(models.path(), &TINY.replace("MODALITY", "CT"))],
        results: vec!["destinations = [\"PACS\"]".into()],
        ..Default::default()
    });
    assert!(node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", "11198"]).status.success());
    assert!(node.storescu(&[a.clone(), b]).status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = deid_uid(&study_uid_of(&a));
    let results = wait_results(&rt, &db, std::slice::from_ref(&uid), Duration::from_secs(40), &node).remove(0);
    assert_eq!(results[0].state, "failed", "{:?}", results[0]);
    assert!(results[0].error.as_deref().unwrap_or("").contains("different patients"), "{:?}", results[0]);
    assert!(results[0].findings.is_empty());
    let outbox = String::from_utf8_lossy(&node.cli(&["outbox", "list"]).stdout).into_owned();
    assert_eq!(outbox.lines().count(), 1, "only the header: nothing queued for the PACS\n{outbox}");
    let status = String::from_utf8_lossy(&node.cli(&["status"]).stdout).into_owned();
    assert!(status.contains("studies whose instances name different patients (not triaged): 1"), "{status}");
}

/// A PACS that answers with command fragments that never end gets a protocol error once the
/// response passes 64 KiB: what the node collects from a peer is bounded.
#[test]
fn an_endless_response_from_a_pacs_is_cut_off() {
    if !peers_ready() {
        return;
    }
    let bad_port = free_port();
    let mut bad = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/bad_pacs.py"))
        .args([&bad_port.to_string(), "BADPACS", "huge-command"])
        .env("BAD_PACS_HOLD_S", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let node = Node::start(NodeOptions { delivery: vec!["poll_interval = \"200ms\"".into()], ..Default::default() });
    assert!(node.cli(&["ae", "add", "BADPACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &bad_port.to_string()]).status.success());
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let queued = node.cli(&["outbox", "add", "--to", "BADPACS", file.to_str().unwrap()]);
    assert!(queued.status.success(), "{}", String::from_utf8_lossy(&queued.stderr));
    let found = node.wait_for_log("response command set larger than 65536 bytes", Duration::from_secs(30));
    let _ = bad.kill();
    let _ = bad.wait();
    assert!(found, "{}", node.log());
    assert!(!node.log().contains("panicked"));
}

/// A C-FIND identifier or an MPPS data set nested 3000 sequences deep (a few hundred KiB, well
/// under the size limits): refused with a status, and the node goes on (it used to overflow
/// the stack in the data set parser and die).
#[test]
fn deeply_nested_data_sets_are_refused_and_the_node_survives() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { register: vec!["STORESCU"], ..Default::default() });
    let out = node.cli(&["ae", "add", "QRPEER", "--role", "pacs", "--host", "127.0.0.1", "--port", "1"]);
    assert!(out.status.success());
    for (service, aet, status) in [("find", "QRPEER", "FIND 0xC000"), ("mpps", "MODALITY1", "NCREATE 0x0110")] {
        if aet == "MODALITY1" {
            assert!(node.cli(&["ae", "add", aet]).status.success());
        }
        let out = std::process::Command::new(python().unwrap())
            .arg(repo().join("tests/peers/pynetdicom_peer.py"))
            .args(["--port", &node.port.to_string(), "--aet", aet, "deep", "--service", service, "--depth", "3000"])
            .output()
            .unwrap();
        let lines = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(lines.contains(status), "{service}: {lines}\n{}", node.log());
        assert!(lines.contains("ECHO 0x0000"), "{service}: the node did not answer afterwards: {lines}\n{}", node.log());
    }
}

/// What the fuzzers found (tests/fuzz/regressions), sent to the node as real requests: a C-STORE
/// data set or a C-FIND identifier of a few KB whose lengths the structural scan and the data set
/// parser read differently made the parser allocate 2-4 GB (a handful at once would have taken
/// the machine). Each is refused, nothing is stored, the node answers afterwards, and its peak
/// memory stays small.
#[test]
fn what_the_fuzzers_found_is_refused_without_allocating_gigabytes() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { register: vec!["PYNETDICOM"], ..Default::default() });
    assert!(node.cli(&["ae", "add", "QRPEER", "--role", "pacs", "--host", "127.0.0.1", "--port", "1"]).status.success());
    let mut sent = 0;
    for (target, service, aet) in [("deidentify", "store", "PYNETDICOM"), ("query_identifier", "find", "QRPEER")] {
        for input in walk(&repo().join("tests/fuzz/regressions").join(target)) {
            let out = std::process::Command::new(python().unwrap())
                .arg(repo().join("tests/peers/pynetdicom_peer.py"))
                .args(["--port", &node.port.to_string(), "--aet", aet, "raw", "--service", service, "--data"])
                .arg(&input)
                .output()
                .unwrap();
            let lines = String::from_utf8_lossy(&out.stdout).to_string();
            let answer = lines
                .lines()
                .find(|l| l.starts_with("STORED") || l.starts_with("FIND"))
                .unwrap_or_else(|| panic!("{}: no answer: {lines}\n{}", input.display(), node.log()));
            assert!(!answer.contains("0x0000") && !answer.ends_with("none"), "{}: {answer}", input.display());
            assert!(lines.contains("ECHO 0x0000"), "{}: the node did not answer afterwards: {lines}\n{}", input.display(), node.log());
            sent += 1;
        }
    }
    assert!(sent >= 5, "only {sent} regression inputs");
    assert!(node.stored_files().is_empty(), "{:?}", node.stored_files());
    let peak_mb = node.peak_rss_kb() / 1024;
    assert!(peak_mb < 1024, "the node's peak memory reached {peak_mb} MB");
}
