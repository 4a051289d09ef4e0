//! Verification and Storage SCP against real peers: DCMTK echoscu/storescu and pynetdicom.

use std::path::PathBuf;

use crate::common::*;

fn corpus(sub: &str) -> Vec<PathBuf> {
    walk(&testdata().unwrap().join(sub)).into_iter().filter(|p| p.extension().is_some_and(|e| e == "dcm")).collect()
}

#[test]
fn several_echoes_in_one_association() {
    if !have_tool("echoscu") {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let out = node.dcmtk("echoscu", &["-v", "--repeat", "5", "-aet", "ECHOSCU", "-aec", "TRIAGE"]);
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("Received Echo Response (Success)").count(), 5, "{text}");
    assert_eq!(text.matches("Requesting Association").count(), 1, "{text}");
    // Message ID Being Responded To must echo each request's Message ID.
    for id in 1..=5 {
        assert!(text.contains(&format!("Sending Echo Request (MsgID {id})")), "{text}");
    }
}

/// storescu's option that proposes a file's own transfer syntax (in its own presentation
/// context). DCMTK has none for JPEG Lossless Process 14 (non-SV1): pynetdicom covers that one.
fn storescu_option(ts: &str) -> Option<&'static str> {
    Some(match ts {
        "1.2.840.10008.1.2" => "-xi",
        "1.2.840.10008.1.2.1" => "-xe",
        "1.2.840.10008.1.2.2" => "-xb",
        "1.2.840.10008.1.2.1.99" => "-xd",
        "1.2.840.10008.1.2.4.50" => "-xy",
        "1.2.840.10008.1.2.4.70" => "-xs",
        "1.2.840.10008.1.2.4.80" => "-xt",
        "1.2.840.10008.1.2.4.81" => "-xu",
        "1.2.840.10008.1.2.4.90" => "-xv",
        "1.2.840.10008.1.2.4.91" => "-xw",
        "1.2.840.10008.1.2.5" => "-xr",
        _ => return None,
    })
}

/// Every file must be on disk in its own transfer syntax, de-identified: byte-identical to what
/// `triage-node deid` makes of it, under a new SOP Instance UID, with its pixel data unchanged.
fn assert_stored_as_received(node: &Node, files: &[PathBuf]) -> std::collections::BTreeSet<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let mut syntaxes = std::collections::BTreeSet::new();
    for file in files {
        let (uid, ts) = meta_of(file);
        let new_uid = deid_uid(&uid);
        let stored = rt.block_on(db.find_instance(&new_uid)).unwrap().unwrap_or_else(|| panic!("{} has no row", file.display()));
        assert!(rt.block_on(db.find_instance(&uid)).unwrap().is_none(), "the original UID is in the database");
        assert_eq!(stored.transfer_syntax_uid, ts, "{} was not stored in its own transfer syntax", file.display());
        let on_disk = node.data_dir().join(&stored.path);
        assert_eq!(meta_of(&on_disk), (new_uid.clone(), ts.clone()));
        assert!(std::fs::read(&on_disk).unwrap() == expected_deid(file), "{} is not stored as de-identified by `deid`", file.display());
        if ts != "1.2.840.10008.1.2.1.99" {
            assert!(pixel_data_bytes(&on_disk) == pixel_data_bytes(file), "{}: pixel data changed", file.display());
        }
        syntaxes.insert(ts);
    }
    assert!(node.spool_files().is_empty());
    syntaxes
}

#[test]
fn storescu_sends_every_transfer_syntax_it_can_propose() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let mut sent = Vec::new();
    for file in corpus("ts") {
        let (_, ts) = meta_of(&file);
        let Some(option) = storescu_option(&ts) else { continue };
        let port = node.port.to_string();
        let out = std::process::Command::new("storescu")
            .env("TCP_NODELAY", "1")
            .args(["-v", "-R", option, "-aet", "STORESCU", "-aec", "TRIAGE", "127.0.0.1", &port])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success() && text.contains("Received Store Response (Success)"), "{}: {text}", file.display());
        sent.push(file);
    }
    let syntaxes = assert_stored_as_received(&node, &sent);
    assert_eq!(syntaxes.len(), 11, "{syntaxes:?}");
}

#[test]
fn pynetdicom_sends_all_twelve_transfer_syntaxes_in_one_association() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let files = corpus("ts");
    let lines = node.pynetdicom_store(&files);
    assert_eq!(lines.iter().filter(|l| l.starts_with("STORED 0x0000 ")).count(), files.len(), "{lines:?}");
    let syntaxes = assert_stored_as_received(&node, &files);
    // All 12 transfer syntaxes of the conformance statement were exercised.
    assert_eq!(syntaxes.len(), 12, "{syntaxes:?}");
}

#[test]
fn other_accepted_sop_classes_are_stored() {
    if !peers_ready() {
        return;
    }
    let files = corpus("classes");
    let node = Node::start(NodeOptions::default());
    let lines = node.pynetdicom_store(&files);
    assert_eq!(lines.iter().filter(|l| l.starts_with("STORED 0x0000 ")).count(), files.len(), "{lines:?}");
    assert_stored_as_received(&node, &files);
}

#[test]
fn pynetdicom_is_an_independent_second_client() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let echo = node.pynetdicom(&["echo", "--repeat", "2"]);
    assert_eq!(echo, vec!["ESTABLISHED 1.2.840.10008.1.2.1", "ECHO 0x0000", "ECHO 0x0000"]);

    let lines = node.pynetdicom_store(&corpus("ts")[..4]);
    let stored: Vec<_> = lines.iter().filter(|l| l.starts_with("STORED 0x0000 ")).collect();
    assert_eq!(stored.len(), 4, "{lines:?}");
    assert_eq!(node.stored_files().len(), 4);
}

#[test]
fn the_same_instance_sent_twice_is_stored_once() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    for _ in 0..2 {
        let out = node.storescu(std::slice::from_ref(&file));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Received Store Response (Success)"));
    }
    assert_eq!(node.stored_files().len(), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(async { node.db().await.count_instances().await.unwrap() }), 1);
    assert!(node.log().contains("duplicate SOP Instance UID"));
}

#[test]
fn our_transfer_syntax_preference_decides_not_the_callers_order() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    // Caller prefers Implicit VR LE; our default order puts Explicit VR LE first among these.
    let lines = node.pynetdicom(&["propose", "--ts", "1.2.840.10008.1.2,1.2.840.10008.1.2.1"]);
    assert_eq!(lines, vec!["ESTABLISHED 1.2.840.10008.1.2.1"]);
    // And a JPEG 2000 Lossless offer beats both.
    let lines = node.pynetdicom(&["propose", "--ts", "1.2.840.10008.1.2,1.2.840.10008.1.2.1,1.2.840.10008.1.2.4.90"]);
    assert_eq!(lines, vec!["ESTABLISHED 1.2.840.10008.1.2.4.90"]);
}
