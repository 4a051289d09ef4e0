//! Bad input gets the PS3.4 status with an Error Comment and leaves nothing behind.

use crate::common::*;

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

/// The floor is checked as the instance grows, not only when it starts: an instance that would
/// take the disk below it is refused with Out of Resources part-way, and nothing of it is kept.
#[test]
fn an_instance_that_would_cross_the_free_disk_floor_is_refused_part_way() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.dcm");
    // A CT whose pixel data is 96 MiB.
    let script = "import sys, pydicom\nds = pydicom.dcmread(sys.argv[1])\nds.Rows, ds.Columns = 8192, 6144\nds.PixelData = bytes(8192 * 6144 * 2)\nds.save_as(sys.argv[2], enforce_file_format=True)\n";
    let src = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let out = std::process::Command::new(python().unwrap()).args(["-c", script]).arg(&src).arg(&big).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The floor sits 24 MiB below what is free now: the start passes, the growth does not.
    let probe = tempfile::tempdir().unwrap();
    let free = triage_node::ingest::free_bytes(probe.path()).unwrap();
    let floor = free - (24 << 20);
    let node = Node::start(NodeOptions { storage: vec![format!("min_free_disk = {floor}")], ..Default::default() });
    let lines = node.pynetdicom(&["store", big.to_str().unwrap()]);
    assert_eq!(status_of(&lines, "big.dcm"), "0xA700", "{lines:?}\n{}", node.log());
    assert!(node.log().contains("fell below the configured floor"), "{}", node.log());
    assert!(node.stored_files().is_empty(), "{:?}", node.stored_files());
    // A small instance still fits above the floor.
    let small = node.pynetdicom(&["store", src.to_str().unwrap()]);
    assert_eq!(status_of(&small, "ct_explicit_le.dcm"), "0x0000", "{small:?}");
}
