//! The reading worklist from the command line: real studies pushed by DCMTK, triaged by the
//! demo model, listed urgent first, with the MR no model takes last.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;

#[test]
fn triaged_studies_are_listed_urgent_first_then_by_score() {
    if !peers_ready() {
        return;
    }
    let Some((_, cases)) = demo_cases() else { return };
    let files: Vec<PathBuf> = cases.into_iter().take(8).map(|(f, _)| f).collect();
    let mr = testdata().unwrap().join("classes/mr.dcm");
    let models = format!("models_dir = \"{}\"", repo().join("models").display());
    let node = Node::start(NodeOptions { inference: vec![models], ..Default::default() });
    let mut sent = files.clone();
    sent.push(mr.clone());
    assert!(node.storescu(&sent).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uids: Vec<String> = sent.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    let results = wait_results(&rt, &db, &uids, Duration::from_secs(90), &node);

    let out = node.cli(&["worklist", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), sent.len(), "{rows:?}");

    // Each row agrees with the study's stored result, and the order is the reading order.
    let rank = |p: &str| ["URGENT", "POSITIVE", "FAILED", "NEGATIVE", "NOT_APPLICABLE"].iter().position(|x| *x == p).unwrap();
    let mut previous: Option<(usize, f64)> = None;
    for row in &rows {
        let priority = row["priority"].as_str().unwrap();
        let study = row["study_id"].as_i64().unwrap();
        let stored = results.iter().flatten().find(|r| r.study_id == study).expect("a listed study has a result");
        let expected = match (stored.state.as_str(), stored.priority.map(|p| p.as_str())) {
            ("triaged", Some("urgent")) => "URGENT",
            ("triaged", Some("positive")) => "POSITIVE",
            ("triaged", _) => "NEGATIVE",
            ("failed", _) => "FAILED",
            _ => "NOT_APPLICABLE",
        };
        assert_eq!(priority, expected, "{row}");
        let score = row["score"].as_f64().unwrap_or(-1.0);
        if let Some((prev_rank, prev_score)) = previous {
            assert!(prev_rank <= rank(priority), "priority order: {rows:?}");
            if prev_rank == rank(priority) && rank(priority) <= 1 {
                assert!(prev_score >= score, "higher scores first: {rows:?}");
            }
        }
        previous = Some((rank(priority), score));
        assert_eq!(row["demonstration"], expected != "NOT_APPLICABLE", "{row}");
    }
    assert_eq!(rows.last().unwrap()["priority"], "NOT_APPLICABLE", "the MR no model takes comes last");
    assert!(rows.iter().any(|r| r["priority"] == "URGENT" || r["priority"] == "POSITIVE"), "the demo cases include lesions: {rows:?}");

    // The table names no patient: study row ids and findings only.
    let table = String::from_utf8(node.cli(&["worklist"]).stdout).unwrap();
    assert!(table.lines().next().unwrap().starts_with("PRIORITY"), "{table}");
    assert_eq!(table.lines().count(), sent.len() + 1, "{table}");
}
