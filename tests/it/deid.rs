//! De-identification on ingest, against the real binary: planted identifying values must appear
//! nowhere but in the encrypted re-identification map; references stay consistent; the map
//! round-trips; burned-in pixels are held back with a reason; dciodvfy finds no new error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Plant values with tests/peers/plant_phi.py; returns the files and the planted strings.
fn planted_study(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let src = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let out = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/plant_phi.py"))
        .args(["study", src.to_str().unwrap(), dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let planted: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_prefix("PLANTED ")).map(|l| l.split_once(' ').unwrap().1.to_string()).collect();
    assert!(planted.len() > 400, "only {} values planted", planted.len());
    (vec![dir.join("planted_1.dcm"), dir.join("planted_2.dcm")], planted)
}

/// The first planted value found in `haystack`: one pass, candidates picked by their first
/// four bytes (a plain search per value is too slow over megabytes for hundreds of values).
fn find_any<'a>(haystack: &[u8], planted: &'a [String]) -> Option<&'a str> {
    let mut by_prefix: std::collections::HashMap<&[u8], Vec<&str>> = std::collections::HashMap::new();
    for p in planted {
        by_prefix.entry(&p.as_bytes()[..4]).or_default().push(p);
    }
    for i in 0..haystack.len().saturating_sub(3) {
        if let Some(candidates) = by_prefix.get(&haystack[i..i + 4]) {
            if let Some(hit) = candidates.iter().find(|c| haystack[i..].starts_with(c.as_bytes())) {
                return Some(hit);
            }
        }
    }
    None
}

fn dump(path: &Path) -> String {
    let out = Command::new("dcmdump").args(["-q", "+L"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A top-level attribute's value in a dcmdump listing.
fn value_of(dump: &str, tag: &str) -> Option<String> {
    let line = dump.lines().find(|l| l.starts_with(tag))?;
    let start = line.find('[')? + 1;
    let end = line[start..].find(']')? + start;
    Some(line[start..end].to_string())
}

#[test]
fn planted_identifiers_appear_only_in_the_encrypted_map() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (files, planted) = planted_study(work.path());
    assert!(find_any(&std::fs::read(&files[1]).unwrap(), &planted).is_some(), "the search finds what was planted");
    let node = Node::start(NodeOptions::default());
    let out = node.storescu(&files);
    assert_eq!(String::from_utf8_lossy(&out.stderr).matches("Received Store Response (Success)").count(), 2, "{}", String::from_utf8_lossy(&out.stderr));

    // The sweep appends each de-identification's audit entry shortly after it is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while String::from_utf8_lossy(&node.cli(&["audit", "list"]).stdout).matches("deidentify").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "de-identifications not audited: {}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every byte under the data directory: store, spool, database (its map holds ciphertext only).
    let mut searched = 0;
    for path in walk(&node.data_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        searched += bytes.len();
        assert_eq!(find_any(&bytes, &planted), None, "planted value found in {}", path.display());
    }
    assert!(searched > 1_000_000, "searched only {searched} bytes");
    // Every table but the map, row by row, on the live database.
    let db_path = node.data_dir().join("triage.db");
    let tables = Command::new(python().unwrap())
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); [print(t, *r) for (t,) in c.execute(\"select name from sqlite_master where type='table' and name != 'reid_map'\") for r in c.execute(f'select * from \"{t}\"')]"])
        .arg(&db_path)
        .output()
        .unwrap();
    let rows = String::from_utf8_lossy(&tables.stdout);
    assert!(rows.contains("instances") && rows.contains("deidentify"), "{rows}");
    for value in &planted {
        assert!(!rows.contains(value.as_str()), "{value} found in a table");
    }
    // The whole log.
    let log = node.log();
    for value in &planted {
        assert!(!log.contains(value.as_str()), "{value} found in the log");
    }

    // The map gives the originals back (and says so in the audit trail).
    let stored = node.stored_files();
    assert_eq!(stored.len(), 2);
    let (uid, _) = meta_of(&files[0]);
    let out = node.cli(&["reid", &deid_uid(&uid), "--purpose", "test round trip"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let originals: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(originals["patient_id"], "PHIPATIENTIDQZ");
    assert_eq!(originals["patient_name"], "PHIFAMILYQZ^PHIGIVENQZ");
    assert_eq!(originals["accession_number"], "PHIACCQZ");
    assert_eq!(originals["patient_birth_date"], "19230417");
    assert_eq!(originals["sop_instance_uid"], uid.as_str());
    let audit = node.cli(&["audit", "list"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.matches("deidentify").count(), 2, "{audit}");
    assert!(audit.contains("reidentify") && audit.contains("test round trip"), "{audit}");
    assert!(audit.contains("113100") || audit.contains("PS3.15 2024b"), "the method is recorded: {audit}");
    assert!(node.cli(&["audit", "verify"]).status.success());
}

#[test]
fn a_study_keeps_its_references_and_pseudonyms_are_stable() {
    if !peers_ready() || !have_tool("dcmdump") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (files, _) = planted_study(work.path());
    let node = Node::start(NodeOptions::default());
    let out = node.storescu(&files);
    assert!(out.status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let stored: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let row = rt.block_on(db.find_instance(&deid_uid(&meta_of(f).0))).unwrap().expect("stored under its keyed UID");
            node.data_dir().join(row.path)
        })
        .collect();
    let (a, b) = (dump(&stored[0]), dump(&stored[1]));
    for tag in ["(0020,000d)", "(0020,000e)", "(0020,0052)", "(0010,0020)", "(0010,0010)"] {
        assert_eq!(value_of(&a, tag), value_of(&b, tag), "{tag} differs between the two instances");
        assert!(value_of(&a, tag).is_some(), "{tag} missing");
    }
    assert!(value_of(&a, "(0020,000d)").unwrap().starts_with("2.25."));
    // Instance 2's Source Image Sequence points at instance 1's new SOP Instance UID.
    let a_uid = value_of(&a, "(0008,0018)").unwrap();
    let reference = b.lines().skip_while(|l| !l.contains("SourceImageSequence")).find(|l| l.contains("(0008,1155)")).unwrap();
    assert!(reference.contains(&a_uid), "{reference} does not reference {a_uid}");
    // Patient Identity Removed and the method codes are declared.
    assert_eq!(value_of(&a, "(0012,0062)").as_deref(), Some("YES"));
    assert!(a.contains("113100"), "Basic Profile code missing");
    assert_eq!(value_of(&a, "(0028,0303)").as_deref(), Some("REMOVED"));
    // A second node with the same key maps the same input to the same output.
    let other = Node::start(NodeOptions::default());
    assert!(other.storescu(&files[..1]).status.success());
    assert!(std::fs::read(&other.stored_files()[0]).unwrap() == std::fs::read(&stored[0]).unwrap());
}

#[test]
fn options_move_dates_and_keep_what_they_retain() {
    if !peers_ready() || !have_tool("dcmdump") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (files, _) = planted_study(work.path());
    let deid = vec!["retain_longitudinal_modified_dates = true".into(), "retain_patient_characteristics = true".into()];
    let node = Node::start(NodeOptions { deid, ..Default::default() });
    assert!(node.storescu(&files[..1]).status.success());
    let d = dump(&node.stored_files()[0]);
    // Study Date moved back by the patient's shift (1 to 3650 days); the birth date is still
    // removed (no option retains it); sex is kept (Retain Patient Characteristics).
    let original = value_of(&dump(&files[0]), "(0008,0020)").unwrap();
    let shifted = value_of(&d, "(0008,0020)").expect("study date kept, shifted");
    let ten_years_before = format!("{}{}", original[..4].parse::<i32>().unwrap() - 10, &original[4..]);
    assert!(shifted.len() == 8 && shifted < original && shifted >= ten_years_before, "{original} -> {shifted}");
    assert_eq!(value_of(&d, "(0010,0030)"), None);
    assert_eq!(value_of(&d, "(0010,0040)").as_deref(), Some("F"));
    assert_eq!(value_of(&d, "(0028,0303)").as_deref(), Some("MODIFIED"));
    assert!(d.contains("113107") && d.contains("113108"), "option codes missing");
}

#[test]
fn burned_in_annotation_holds_pixels_back_with_a_reason() {
    if !peers_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sc = work.path().join("sc.dcm");
    let src = testdata().unwrap().join("ts/cr_explicit_le.dcm");
    let out = Command::new(python().unwrap())
        .arg(repo().join("tests/peers/plant_phi.py"))
        .args(["sc", src.to_str().unwrap(), sc.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let node = Node::start(NodeOptions::default());
    assert!(String::from_utf8_lossy(&node.storescu(std::slice::from_ref(&sc)).stderr).contains("Received Store Response (Success)"));
    let rows = Command::new(python().unwrap())
        .args(["-c", "import sqlite3,sys; print(*sqlite3.connect(sys.argv[1]).execute('select excluded_reason from instances').fetchone())"])
        .arg(node.data_dir().join("triage.db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "Burned In Annotation absent on Secondary Capture");
    let status = String::from_utf8_lossy(&node.cli(&["status"]).stdout).into_owned();
    assert!(status.contains("instances not triaged (Burned In Annotation absent on Secondary Capture): 1"), "{status}");
    let stored = &node.stored_files()[0];
    assert!(triage_node::deid::file::describe(stored).unwrap().pixel_group_at.is_none(), "pixel data was kept");

    // "process" keeps the pixels.
    let node = Node::start(NodeOptions { deid: vec!["burned_in_annotation = \"process\"".into()], ..Default::default() });
    let again = work.path().join("sc2.dcm");
    Command::new(python().unwrap()).arg(repo().join("tests/peers/plant_phi.py")).args(["sc", src.to_str().unwrap(), again.to_str().unwrap()]).output().unwrap();
    assert!(node.storescu(std::slice::from_ref(&again)).status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let row = rt.block_on(async { node.db().await.find_instance(&deid_uid(&meta_of(&again).0)).await.unwrap().unwrap() });
    assert!(pixel_data_bytes(&node.data_dir().join(row.path)) == pixel_data_bytes(&again));
}

/// dciodvfy's "Error" lines, without the file name.
fn iod_errors(path: &Path) -> std::collections::BTreeSet<String> {
    let out = Command::new("dciodvfy").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("Error")).map(str::to_string).collect()
}

#[test]
fn dciodvfy_finds_no_error_the_input_did_not_have() {
    if !peers_ready() || !have_tool("dciodvfy") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (planted, _) = planted_study(work.path());
    let data = testdata().unwrap();
    let mut files: Vec<PathBuf> = ["ts/ct_explicit_le.dcm", "ts/cr_explicit_le.dcm", "ts/ct_j2k_lossless.dcm", "classes/enhanced_ct.dcm", "classes/mr.dcm"]
        .iter()
        .map(|f| data.join(f))
        .collect();
    files.extend(planted);
    let out = tempfile::tempdir().unwrap();
    let node = Node::start(NodeOptions::default());
    let cli = node.cli(&["deid", work.path().to_str().unwrap(), out.path().to_str().unwrap()]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    for file in &files {
        let (path, _) = triage_node::deid::file::export(&deidentifier(), file, out.path(), true).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let before = iod_errors(file);
        let new: Vec<_> = iod_errors(&path).difference(&before).cloned().collect();
        assert!(new.is_empty(), "{}: dciodvfy errors introduced by de-identification: {new:#?}", file.display());
    }
    // The CLI named its outputs by their new UIDs and audited each (synchronously: no sweep runs).
    let names: Vec<String> = walk(out.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.starts_with("2.25.") && n.ends_with(".dcm")), "{names:?}");
    let audit = String::from_utf8_lossy(&node.cli(&["audit", "list"]).stdout).into_owned();
    assert!(audit.matches("deidentify").count() >= 2, "{audit}");
}

#[test]
fn the_node_refuses_to_start_without_keys_and_says_so_loudly_in_demo_mode() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_triage-node"))
            .env_remove("TRIAGE_PSEUDONYM_KEY")
            .env_remove("TRIAGE_REID_MAP_KEY")
            .env("TRIAGE__STORAGE__DATA_DIR", dir.path())
            .env("TRIAGE__DICOM__PORT", "0")
            .env("TRIAGE__HTTP__PORT", "0")
            .env("TRIAGE__DICOM__BIND", "127.0.0.1")
            .envs(env.iter().copied())
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = run(&[]).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("TRIAGE_PSEUDONYM_KEY") && text.contains("keygen"), "{text}");
    let out = run(&[("TRIAGE_PSEUDONYM_KEY", "abc"), ("TRIAGE_REID_MAP_KEY", MAP_KEY)]).wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));

    let mut child = run(&[("TRIAGE__DEID__DEMO_KEYS", "true")]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("listening port=") && std::time::Instant::now() < deadline {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("DEMO KEYS") && seen.contains("WARN"), "{seen}");
}
