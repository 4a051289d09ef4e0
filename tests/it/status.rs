//! `triage-node status` shows what a node's background workers are doing, from what the
//! running node reports to the database, and that they stopped when it stopped.

use std::time::{Duration, Instant};

use crate::common::*;

const WORKERS: [&str; 5] = ["arrivals", "outbox", "status reporter", "study jobs", "study sweep"];

fn worker_lines(node: &Node) -> Vec<String> {
    let out = node.cli(&["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| l.starts_with("worker ")).map(str::to_string).collect()
}

#[test]
fn status_shows_each_worker_of_the_running_node_and_that_it_stopped() {
    let mut node = Node::start(NodeOptions::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = worker_lines(&node);
    while lines.len() < WORKERS.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        lines = worker_lines(&node);
    }
    assert_eq!(lines.len(), WORKERS.len(), "{lines:?}");
    for (line, name) in lines.iter().zip(WORKERS) {
        assert!(line.starts_with(&format!("worker {name} on ")), "{line}");
        assert!(line.contains(": idle,") || line.contains(": busy,"), "a running worker: {line}");
        assert!(line.contains(" 0 errors"), "{line}");
    }
    assert_eq!(node.sigterm(Duration::from_secs(15)), Some(0), "{}", node.log());
    let lines = worker_lines(&node);
    assert_eq!(lines.len(), WORKERS.len(), "{lines:?}");
    assert!(lines.iter().all(|l| l.contains(": stopped,")), "{lines:?}");
}
