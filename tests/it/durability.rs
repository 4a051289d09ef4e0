//! Nothing acknowledged is ever lost: SIGKILL mid-transfer, SIGTERM mid-transfer, restarts.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

fn series() -> Vec<String> {
    walk(&testdata().unwrap().join("series")).iter().map(|p| p.display().to_string()).collect()
}

/// Start a pynetdicom store of the whole series; call `interrupt` after `after` successes.
/// Returns the files acknowledged with Success.
fn store_and_interrupt(node: &mut Node, after: usize, interrupt: impl FnOnce(&mut Node)) -> Vec<PathBuf> {
    let files = series();
    let mut args = vec!["store"];
    args.extend(files.iter().map(String::as_str));
    let mut child = node.pynetdicom_command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut interrupt = Some(interrupt);
    for line in reader.lines().map_while(Result::ok) {
        if let Some(path) = line.strip_prefix("STORED 0x0000 - ") {
            acked.push(PathBuf::from(path));
            if acked.len() == after {
                (interrupt.take().unwrap())(node);
            }
        }
    }
    let _ = child.wait();
    assert!(acked.len() >= after, "only {} acknowledged", acked.len());
    assert!(acked.len() < files.len(), "the interruption came after the whole series was sent");
    acked
}

fn assert_all_present(node: &Node, acked: &[PathBuf]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    for file in acked {
        let (uid, _) = meta_of(file);
        let row = rt.block_on(db.find_instance(&deid_uid(&uid))).unwrap().unwrap_or_else(|| panic!("acknowledged {} has no row", file.display()));
        let stored = node.data_dir().join(&row.path);
        assert!(std::fs::read(&stored).unwrap() == expected_deid(file), "acknowledged {} differs on disk", file.display());
    }
}

#[test]
fn acknowledged_instances_survive_kill_9_and_the_study_timer_rearms() {
    if !peers_ready() {
        return;
    }
    let mut node = Node::start(NodeOptions { ingest: vec!["study_quiet_period = \"3s\"".into()], ..Default::default() });
    let acked = store_and_interrupt(&mut node, 8, |n| n.kill9());
    // What a kill between the rename into the store and the commit leaves: a file with no row.
    let newest_day = node.stored_files().last().unwrap().parent().unwrap().to_path_buf();
    std::fs::write(newest_day.join("never-recorded.dcm"), b"not acknowledged").unwrap();
    node.launch();
    assert_all_present(&node, &acked);
    assert!(node.spool_files().is_empty(), "spool not cleaned after restart");
    assert!(!newest_day.join("never-recorded.dcm").exists(), "unrecorded store file survived the restart");
    // The store and the database agree exactly: every row has its file and every file its row.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let rows = rt.block_on(db.count_instances()).unwrap() as usize;
    assert!(rows >= acked.len());
    assert_eq!(node.stored_files().len(), rows);

    // The study was still receiving when killed; the restarted node promotes it from the database.
    assert!(node.wait_for_log("study ready", Duration::from_secs(10)), "{}", node.log());
    let jobs = rt.block_on(db.list_jobs()).unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    // The triage worker may already have taken the job (this node has no models, so it is done at once).
    assert_eq!(jobs[0].kind, "study_ready", "{jobs:?}");
    assert!(matches!(jobs[0].state.as_str(), "pending" | "running" | "done"), "{jobs:?}");
}

#[test]
fn sigterm_finishes_the_message_in_flight_and_exits_cleanly() {
    if !peers_ready() {
        return;
    }
    let mut node = Node::start(NodeOptions::default());
    let mut exit = None;
    let acked = store_and_interrupt(&mut node, 3, |n| exit = n.sigterm(Duration::from_secs(15)));
    assert_eq!(exit, Some(0), "{}", node.log());
    assert!(node.log().contains("association aborted: node shutting down"), "{}", node.log());
    assert!(node.log().contains("stopped"));
    // Every worker (four loops and the status reporter) stopped, and the inference thread was
    // joined, within their deadlines.
    assert_eq!(node.log().matches("worker stopped").count(), 5, "{}", node.log());
    assert!(!node.log().contains("exit deadline"), "{}", node.log());
    node.launch();
    assert_all_present(&node, &acked);
}

#[test]
fn study_becomes_ready_after_the_quiet_period_only() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { ingest: vec!["study_quiet_period = \"2s\"".into()], ..Default::default() });
    let files: Vec<PathBuf> = walk(&testdata().unwrap().join("series")).into_iter().take(3).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    for f in &files {
        assert!(node.storescu(std::slice::from_ref(f)).status.success());
        std::thread::sleep(Duration::from_millis(700));
        // Instances keep arriving inside the quiet period: not ready yet.
        assert!(rt.block_on(db.list_jobs()).unwrap().is_empty());
    }
    assert!(node.wait_for_log("study ready", Duration::from_secs(6)));
    let jobs = rt.block_on(db.list_jobs()).unwrap();
    assert_eq!(jobs.len(), 1, "one job for one study: {jobs:?}");
    assert!(node.log().contains("instances=3"), "{}", node.log());
}

#[test]
fn concurrent_modalities_all_land() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let files = walk(&testdata().unwrap().join("series"));
    // Four modalities at once, ten instances each, on the embedded SQLite store.
    let senders: Vec<_> = files
        .chunks(10)
        .map(|chunk| {
            let port = node.port.to_string();
            std::process::Command::new("storescu")
                .env("TCP_NODELAY", "1")
                .args(["-aet", "STORESCU", "-aec", "TRIAGE", "127.0.0.1", &port])
                .args(chunk)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for s in senders {
        let out = s.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(async { node.db().await.count_instances().await.unwrap() }), files.len() as i64);
    assert_eq!(node.stored_files().len(), files.len());
    assert!(node.wait_for_log("instances=40", Duration::from_secs(10)), "one study of 40 instances: {}", node.log());
}
