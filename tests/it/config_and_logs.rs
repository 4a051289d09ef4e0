//! Configuration layering, start-up errors, and logs: structured, and free of patient data.

use std::process::Command;

use crate::common::*;

#[test]
fn json_logs_carry_the_listening_line() {
    let node = Node::start(NodeOptions { json_logs: true, register: vec![], ..Default::default() });
    let log = node.log();
    let line = log.lines().find(|l| l.contains("listening port=")).expect("listening line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(v["fields"]["message"].as_str().unwrap(), format!("listening port={}", node.port));
    assert_eq!(v["fields"]["ae_title"].as_str().unwrap(), "TRIAGE");
}

#[test]
fn a_bad_configuration_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[dicom]\nae_title = \"MUCH_TOO_LONG_AE_TITLE\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triage-node")).args(["--config", cfg.to_str().unwrap(), "serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dicom.ae_title") && err.contains("at most 16 characters"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_triage-node")).env("TRIAGE__DICOM__PORT", "not-a-port").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port"));
}

#[test]
fn logs_never_carry_patient_identifiers() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let obj = dicom_object::open_file(&file).unwrap();
    let text = |tag| obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim().to_string()).filter(|s| s.len() > 2);
    use dicom_dictionary_std::tags;
    let identifiers: Vec<String> = [tags::PATIENT_NAME, tags::PATIENT_ID, tags::SOP_INSTANCE_UID, tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID]
        .into_iter()
        .filter_map(text)
        .collect();
    assert!(identifiers.len() >= 4, "{identifiers:?}");
    // Stored, refused as a duplicate-free mismatch, and read back: the log must hold none of them.
    assert!(node.storescu(std::slice::from_ref(&file)).status.success());
    assert!(node.storescu(std::slice::from_ref(&file)).status.success());
    let bad = node.dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    node.pynetdicom(&["make-bad", "--source", file.to_str().unwrap(), "--out", bad.to_str().unwrap()]);
    node.pynetdicom(&["store", bad.join("instance_mismatch.dcm").to_str().unwrap()]);
    let log = node.log();
    assert!(log.contains("C-STORE refused"));
    for id in identifiers {
        assert!(!log.contains(&id), "log contains an identifying value");
    }
}

/// As a new user would try it: a SQLite URL naming a file that does not exist yet creates it;
/// one that cannot be opened says why once; `show-config` never prints a database password.
#[test]
fn database_urls_create_their_file_and_errors_and_secrets_read_right() {
    let dir = tempfile::tempdir().unwrap();
    let run = |url: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_triage-node"))
            .env("TRIAGE__DATABASE__URL", url)
            .env("TRIAGE__STORAGE__DATA_DIR", dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let db = dir.path().join("new.db");
    let out = run(&format!("sqlite://{}", db.display()), &["ae", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(db.is_file(), "the database file was not created");
    let out = run(&format!("sqlite://{}/no/such/dir/x.db", dir.path().display()), &["ae", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert_eq!(first.matches("unable to open database file").count(), 1, "{err}");
    let out = run("postgres://triage:s3cretpass@127.0.0.1:5432/test", &["show-config"]);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("s3cretpass") && shown.contains("<redacted>"), "{shown}");
}
