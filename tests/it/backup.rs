//! Backup and restore (`triage-node backup`, `restore`): a backup taken while the node runs and
//! triages restores into a fresh data directory that holds the same worklist, the same stored
//! objects and an audit trail that verifies with the same keys; a damaged backup is refused
//! before anything is written, and so is a data directory that already holds a node.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn run(data: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triage-node")).envs(test_keys()).env("TRIAGE__STORAGE__DATA_DIR", data).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_backup_taken_while_the_node_runs_restores_the_same_worklist_and_audit_trail() {
    if !peers_ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let node = Node::start(NodeOptions { inference: vec![format!("models_dir = \"{}\"", repo().join("models").display())], ..Default::default() });
    let files = [dir.join("case000.dcm"), dir.join("case001.dcm")];
    assert!(node.storescu(&files).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uids: Vec<String> = files.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    wait_results(&rt, &db, &uids, Duration::from_secs(120), &node);

    // Taken while the node runs.
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("backup");
    let taken = node.cli(&["backup", backup.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&taken.stdout).into_owned() + &String::from_utf8_lossy(&taken.stderr);
    assert!(taken.status.success(), "{said}");
    assert!(said.contains("the keys are not in it"), "{said}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
    let paths: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths[0], "triage.db");
    assert!(paths.iter().filter(|p| p.starts_with("store/")).count() >= 2, "{paths:?}");
    assert!(!said.to_lowercase().contains("key=") && !std::fs::read_to_string(backup.join("manifest.json")).unwrap().contains("KEY"));
    // Into a folder that is not empty: refused.
    let again = node.cli(&["backup", backup.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // Restored into a fresh data directory: the same worklist, the audit trail verifies.
    let original = String::from_utf8_lossy(&node.cli(&["worklist", "--json"]).stdout).into_owned();
    let fresh = work.path().join("restored");
    let (ok, out) = run(&fresh, &["restore", backup.to_str().unwrap()]);
    assert!(ok && out.contains("every checksum held"), "{out}");
    let (ok, restored) = run(&fresh, &["worklist", "--json"]);
    assert!(ok, "{restored}");
    // One JSON object per line.
    let ids = |text: &str| -> Vec<(i64, String)> {
        text.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|i| (i["study_id"].as_i64().unwrap(), i["priority"].as_str().unwrap().to_string()))
            .collect()
    };
    assert!(!ids(&original).is_empty(), "{original}");
    assert_eq!(ids(&restored), ids(&original));
    let (ok, verified) = run(&fresh, &["audit", "verify"]);
    assert!(ok, "the restored trail verifies with the same keys: {verified}");
    for p in paths.iter().filter(|p| p.starts_with("store/")) {
        assert_eq!(std::fs::read(fresh.join(p)).unwrap(), std::fs::read(node.data_dir().join(p)).unwrap(), "{p}");
    }

    // A second restore over it: refused (the data directory holds a node).
    let (ok, out) = run(&fresh, &["restore", backup.to_str().unwrap()]);
    assert!(!ok && out.contains("already holds a node"), "{out}");
    // A damaged backup: refused before anything is written.
    let damaged = paths.iter().find(|p| p.starts_with("store/")).unwrap();
    let mut bytes = std::fs::read(backup.join(damaged)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(backup.join(damaged), bytes).unwrap();
    let empty = work.path().join("empty");
    let (ok, out) = run(&empty, &["restore", backup.to_str().unwrap()]);
    assert!(!ok && out.contains("does not match the manifest") && out.contains("nothing was restored"), "{out}");
    assert!(!empty.join("triage.db").exists());
}
