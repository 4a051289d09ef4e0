//! Bad input gets the PS3.4 status with an Error Comment and leaves nothing behind.

mod common;

use common::*;

fn make_bad(node: &Node) -> std::path::PathBuf {
    let out = node.dir.path().join("bad");
    std::fs::create_dir_all(&out).unwrap();
    let source = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let lines = node.pynetdicom(&["make-bad", "--source", source.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(lines, vec!["MADE"]);
    out
}

fn status_of<'a>(lines: &'a [String], file: &str) -> &'a str {
    let line = lines.iter().find(|l| l.ends_with(file)).unwrap_or_else(|| panic!("no response for {file}: {lines:?}"));
    line.split(' ').nth(1).unwrap()
}

#[test]
fn corrupt_or_mismatched_data_sets_are_refused_and_nothing_is_stored() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let bad = make_bad(&node);
    let good = testdata().unwrap().join("ts/cr_explicit_le.dcm");
    let files = ["truncated.dcm", "garbage.dcm", "class_mismatch.dcm", "instance_mismatch.dcm"];
    let paths: Vec<_> = files.iter().map(|f| bad.join(f)).chain([good.clone()]).collect();
    let lines = node.pynetdicom_store(&paths);

    assert_eq!(status_of(&lines, "truncated.dcm"), "0xC000", "{lines:?}");
    assert_eq!(status_of(&lines, "garbage.dcm"), "0xC000", "{lines:?}");
    assert_eq!(status_of(&lines, "class_mismatch.dcm"), "0xA900", "{lines:?}");
    assert_eq!(status_of(&lines, "instance_mismatch.dcm"), "0xA900", "{lines:?}");
    // The association survives refusals: the good instance after them is stored.
    assert_eq!(status_of(&lines, "cr_explicit_le.dcm"), "0x0000", "{lines:?}");
    // Every failure carries an Error Comment.
    for f in files {
        let line = lines.iter().find(|l| l.ends_with(f)).unwrap();
        assert_ne!(line.split(' ').nth(2), Some("-"), "{line}");
    }

    assert_eq!(node.stored_files().len(), 1, "only the good instance is in the store");
    assert!(node.spool_files().is_empty(), "refused instances left spool files: {:?}", node.spool_files());
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(async { node.db().await.count_instances().await.unwrap() }), 1);
}

#[test]
fn below_the_free_disk_floor_the_answer_is_out_of_resources() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { storage: vec!["min_free_disk = \"100PB\"".into()], ..Default::default() });
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let lines = node.pynetdicom(&["store", file.to_str().unwrap()]);
    assert_eq!(status_of(&lines, "ct_explicit_le.dcm"), "0xA700", "{lines:?}");
    assert!(node.stored_files().is_empty());
    assert!(node.spool_files().is_empty());
    // DCMTK reports it as a failure too.
    let out = node.storescu(&[file]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Received Store Response (Refused: OutOfResources)"), "{text}");
}
