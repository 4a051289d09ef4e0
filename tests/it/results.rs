//! AI results back to the PACS, end to end: real chest radiographs pushed by DCMTK storescu to
//! the node, triaged by the demo model, and the TID 1500 SR and heatmap Secondary Capture
//! delivered by C-STORE into a real PACS (Orthanc from Debian, or DCMTK storescp), inside the
//! original study. The objects are checked the way a PACS site would: dciodvfy (dicom3tools)
//! and highdicom's TID 1500 parser; and the outbox is checked for durability: PACS down first,
//! node killed with SIGKILL before delivery, each object arriving exactly once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use triage_node::db::{Db, StudyResult};

fn demo_models() -> String {
    format!("models_dir = \"{}\"", repo().join("models").display())
}

fn ready() -> bool {
    peers_ready()
        && have_tool("Orthanc")
        && have_tool("dciodvfy")
        && require("highdicom in the venv", Command::new(python().unwrap()).args(["-c", "import highdicom"]).status().map(|s| s.success()).unwrap_or(false))
}

fn register(node: &Node, ae: &str, port: u16) {
    let out = node.cli(&["ae", "add", ae, "--role", "pacs", "--host", "127.0.0.1", "--port", &port.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn wait_log_count(node: &Node, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while node.log().matches(needle).count() < n {
        assert!(Instant::now() < deadline, "waited {timeout:?} for {n} x {needle:?}; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn check(files: &[&Path]) -> Vec<serde_json::Value> {
    let out = Command::new(python().unwrap()).arg(repo().join("tests/peers/check_results.py")).args(files).output().unwrap();
    assert!(out.status.success(), "highdicom/pydicom could not read the results: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn original(file: &Path, keyword: &str) -> String {
    let out = Command::new(python().unwrap())
        .args(["-c", &format!("import pydicom,sys; print(pydicom.dcmread(sys.argv[1]).get('{keyword}', ''))"), file.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
pub(crate) const PM: &str = "1.2.840.10008.5.1.4.1.1.30";
const KOS: &str = "1.2.840.10008.5.1.4.1.1.88.59";

/// The map's values against the finding's stored activation, resampled by torch.
pub(crate) fn compare_map(map: &Path, finding: &triage_node::db::Finding) -> serde_json::Value {
    let activation = tempfile::NamedTempFile::new().unwrap();
    // A volume's finding: a frame per slice of its run; else the key image's map.
    let frames: Vec<&Vec<f32>> = if finding.span.len() > 1 { finding.span.iter().map(|s| &s.cam).collect() } else { vec![&finding.cam] };
    let json = serde_json::json!({"rows": finding.cam_rows, "cols": finding.cam_cols, "frames": frames});
    std::fs::write(activation.path(), json.to_string()).unwrap();
    let out = Command::new(python().unwrap()).arg(repo().join("tests/peers/compare_map.py")).arg(map).arg(activation.path()).output().unwrap();
    assert!(out.status.success(), "highdicom could not read the map: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn result_of(db: &Db, rt: &tokio::runtime::Runtime, file: &Path) -> StudyResult {
    let mut r = rt.block_on(db.study_results(&deid_uid(&study_uid_of(file)))).unwrap();
    assert_eq!(r.len(), 1);
    r.remove(0)
}

#[test]
fn results_arrive_in_the_original_study_on_a_real_pacs() {
    if !ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let files: Vec<PathBuf> = ["case000.dcm", "case004.dcm", "case001.dcm"].iter().map(|f| dir.join(f)).collect();
    let pacs = Orthanc::start();
    // The PACS already holds the original studies (the modality sent them there too).
    let to_pacs = Command::new("storescu").args(["-aec", "ORTHANC", "127.0.0.1", &pacs.dicom_port.to_string()]).args(&files).output().unwrap();
    assert!(to_pacs.status.success(), "{}", String::from_utf8_lossy(&to_pacs.stderr));

    let node = Node::start(NodeOptions {
        inference: vec![demo_models()],
        results: vec!["destinations = [\"ORTHANC\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"1s\"".into()],
        ..Default::default()
    });
    register(&node, "ORTHANC", pacs.dicom_port);
    assert!(node.storescu(&files).status.success(), "{}", node.log());
    wait_log_count(&node, "AI report delivered", files.len(), Duration::from_secs(90));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    for file in &files {
        let result = result_of(&db, &rt, file);
        let finding = &result.findings[0];
        let study_uid = study_uid_of(file);
        let (patient_id, sop_uid) = (original(file, "PatientID"), original(file, "SOPInstanceUID"));
        let held = pacs.study(&study_uid);
        // One study in the PACS: the original image, the report and (if positive) the heatmap as
        // a Parametric Map and as a Secondary Capture.
        let expected = 2 + 2 * usize::from(finding.positive);
        assert_eq!(held.len(), expected, "{held:?}\nOrthanc log:\n{}", pacs.log());
        assert!(held.iter().all(|i| i["patient_id"] == patient_id.as_str()), "{held:?}");
        let ours: Vec<PathBuf> =
            held.iter().filter(|i| i["sop_class"] != "1.2.840.10008.5.1.4.1.1.1").map(|i| PathBuf::from(i["file"].as_str().unwrap())).collect();
        assert_eq!(ours.len(), expected - 1);
        for f in &ours {
            let errors = dciodvfy_errors(f);
            assert!(errors.is_empty(), "dciodvfy on {}: {errors:?}", f.display());
        }
        let read = check(&ours.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        let sr = read.iter().find(|r| r["modality"] == "SR").expect("an SR arrived");
        let sr_file = Path::new(sr["file"].as_str().unwrap());
        let errors = pixelmed_errors(sr_file);
        assert!(errors.is_empty(), "Pixelmed on {}: {errors:?}", sr_file.display());
        let sc = read.iter().find(|r| r["sop_class"] == SC);
        let map = read.iter().find(|r| r["sop_class"] == PM);
        for obj in &read {
            // Filed into the original study, under the original patient, re-identified.
            assert_eq!(obj["study_uid"], study_uid.as_str());
            assert_eq!(obj["patient_id"], patient_id.as_str());
            assert_eq!(obj["patient_name"], original(file, "PatientName").as_str());
            assert_eq!(obj["accession"], original(file, "AccessionNumber").as_str());
        }
        let report = &sr["sr"];
        assert_eq!(report["template"], "1500");
        assert_eq!(sr["sop_class"], "1.2.840.10008.5.1.4.1.1.88.34");
        let g = &report["findings"][0];
        assert_eq!(g["finding"], serde_json::json!(["27925004", "SCT", "Nodule"]));
        assert_eq!(g["algorithm"], serde_json::json!(["demo-nodule", "1.0.0"]));
        let p = g["measurements"][0][1].as_f64().unwrap();
        assert!((p - finding.probability).abs() < 1e-9, "SR {p} vs database {}", finding.probability);
        assert_eq!(g["evaluations"][0], serde_json::json!(["Nodule", if finding.positive { "52101004" } else { "2667000" }, "SCT"]));
        assert_eq!(g["evaluations"][1][0], "AI confidence tier");
        assert_eq!(g["source_images"], serde_json::json!([sop_uid]), "the report references the original image");
        assert_eq!(report["evidence"], serde_json::json!([sop_uid]));
        let priority = match result.priority.map(|p| p.as_str()) {
            Some("urgent") => "URGENT",
            Some("positive") => "POSITIVE",
            _ => "NEGATIVE",
        };
        assert_eq!(report["qualitative"][0], serde_json::json!(["Priority", priority]));
        assert!(report["qualitative"][1][1].as_str().unwrap().starts_with("DEMONSTRATION MODEL, NOT CLINICALLY VALIDATED."));
        match (sc, map) {
            (Some(sc), Some(map)) => {
                assert!(finding.positive);
                assert_eq!((sc["photometric"].as_str(), sc["burned_in"].as_str()), (Some("RGB"), Some("YES")));
                assert_eq!(sc["source"], serde_json::json!([sop_uid]));
                assert!(sc["coloured_pixels"].as_i64().unwrap() > 100, "the heatmap shows: {sc}");
                // The report points at the map and the picture it was sent with, in that order.
                assert_eq!(g["images"][1], serde_json::json!(["Illustration of ROI", map["sop_instance"]]));
                assert_eq!(g["images"][2], serde_json::json!(["Illustration of ROI", sc["sop_instance"]]));
                // The map holds the model's activation on the radiograph's grid.
                let map_file = Path::new(map["file"].as_str().unwrap());
                let compared = compare_map(map_file, finding);
                assert!(compared["max_abs_difference"].as_f64().unwrap() < 1e-3, "{compared}");
                assert_eq!(compared["source"], serde_json::json!([sop_uid]), "{compared}");
                assert_eq!((compared["rows"].as_i64(), compared["columns"].as_i64()), (Some(finding.source_rows), Some(finding.source_cols)));
                // Where the evidence lies: a polygon around it and its peak, on the radiograph,
                // the map's own peak inside the polygon.
                let regions = report["regions"].as_array().unwrap();
                assert_eq!(regions.len(), 2, "a radiograph has no Frame of Reference: no 3D point: {regions:?}");
                let polygon = regions.iter().find(|r| r["graphic_type"] == "POLYLINE").expect("a region");
                let point = regions.iter().find(|r| r["graphic_type"] == "POINT").expect("a peak");
                assert!(regions.iter().all(|r| r["image"] == sop_uid.as_str()), "{regions:?}");
                let xs = |i: usize| polygon["points"].as_array().unwrap().iter().map(move |p| p[i].as_f64().unwrap());
                let inside = |x: f64, y: f64| {
                    xs(0).fold(f64::MAX, f64::min) <= x
                        && x <= xs(0).fold(f64::MIN, f64::max)
                        && xs(1).fold(f64::MAX, f64::min) <= y
                        && y <= xs(1).fold(f64::MIN, f64::max)
                };
                let peak = &point["points"][0];
                assert!(inside(peak[0].as_f64().unwrap(), peak[1].as_f64().unwrap()), "{regions:?}");
                let (row, col) = (compared["peak"][0].as_f64().unwrap(), compared["peak"][1].as_f64().unwrap());
                assert!(inside(col + 0.5, row + 0.5), "the map's peak lies in the region: {compared} {regions:?}");
            }
            (None, None) => assert!(!finding.positive, "a positive finding has a heatmap"),
            other => panic!("a map and a picture, or neither: {other:?}"),
        }
    }
    // On the node's disk the queued objects stay de-identified; re-identification was audited.
    let queued: Vec<PathBuf> = walk(&node.data_dir().join("outbox/results"));
    assert_eq!(queued.len(), 7, "{queued:?}");
    let on_disk = check(&queued.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    for obj in &on_disk {
        assert!(files.iter().all(|f| obj["patient_id"] != original(f, "PatientID").as_str() && obj["study_uid"] != study_uid_of(f).as_str()), "{obj}");
    }
    // The operator sees where each result went.
    let listed = String::from_utf8_lossy(&node.cli(&["results"]).stdout).into_owned();
    assert_eq!(listed.matches("to the PACS: 1 pm delivered, 1 sc delivered, 1 sr delivered").count(), 2, "{listed}");
    assert_eq!(listed.matches("to the PACS: 1 sr delivered").count(), 1, "{listed}");
    let status = String::from_utf8_lossy(&node.cli(&["status"]).stdout).into_owned();
    assert!(status.contains("outbox delivered: 7"), "{status}");
    let audit = node.cli(&["audit", "list"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.matches("deliver result to ORTHANC").count(), 7, "{audit}");
    assert!(node.cli(&["audit", "verify"]).status.success());
    // And the log names none of the patients.
    for f in &files {
        for value in [original(f, "PatientID"), original(f, "PatientName"), study_uid_of(f)] {
            assert!(!node.log().contains(&value), "{value} in the log");
        }
    }
}

fn storescp(port: u16, dir: &Path) -> Child {
    Command::new("storescp")
        .args(["+uf", "-od", dir.to_str().unwrap(), &port.to_string()])
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp")
}

#[test]
fn pacs_down_then_node_killed_each_result_arrives_exactly_once() {
    if !ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let file = dir.join("case000.dcm"); // positive: a report and a heatmap
    let port = free_port(); // nothing listens there yet: the PACS is down
    let mut node = Node::start(NodeOptions {
        inference: vec![demo_models()],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into(), "retry_base = \"1s\"".into(), "retry_max = \"2s\"".into()],
        ..Default::default()
    });
    register(&node, "PACS", port);
    assert!(node.storescu(&[file]).status.success(), "{}", node.log());
    wait_log_count(&node, "delivery failed; will retry", 2, Duration::from_secs(60));
    node.kill9();

    let received = tempfile::tempdir().unwrap();
    let mut pacs = storescp(port, received.path());
    std::thread::sleep(Duration::from_millis(500));
    node.launch();
    wait_log_count(&node, "AI report delivered", 1, Duration::from_secs(60));
    // Give a duplicate every chance to show up: storescp +uf keeps each copy it receives.
    std::thread::sleep(Duration::from_secs(4));
    let _ = pacs.kill();
    let _ = pacs.wait();
    let files = walk(received.path());
    assert_eq!(files.len(), 3, "exactly one SR, one Parametric Map and one SC: {files:?}");
    let read = check(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let mut classes: Vec<&str> = read.iter().map(|r| r["sop_class"].as_str().unwrap()).collect();
    classes.sort();
    assert_eq!(classes, [PM, SC, "1.2.840.10008.5.1.4.1.1.88.34"]);
    let list = node.cli(&["outbox", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert_eq!(list.matches("delivered").count(), 3, "{list}");
}

#[test]
fn a_study_triaged_again_sends_a_report_that_names_the_one_it_replaces() {
    if !ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let first = dir.join("case000.dcm");
    // A late instance of the same study: the same image under a new SOP Instance UID.
    let work = tempfile::tempdir().unwrap();
    let late = work.path().join("late.dcm");
    std::fs::copy(&first, &late).unwrap();
    assert!(Command::new("dcmodify").args(["-nb", "-q", "-gin"]).arg(&late).status().unwrap().success());
    let received = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pacs = storescp(port, received.path());
    let node = Node::start(NodeOptions {
        inference: vec![demo_models()],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    register(&node, "PACS", port);
    assert!(node.storescu(std::slice::from_ref(&first)).status.success());
    wait_log_count(&node, "AI report delivered", 1, Duration::from_secs(60));
    assert!(node.storescu(&[late]).status.success());
    wait_log_count(&node, "AI report delivered", 2, Duration::from_secs(60));
    let _ = pacs.kill();
    let _ = pacs.wait();
    let files = walk(received.path());
    let read = check(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let reports: Vec<&serde_json::Value> = read.iter().filter(|r| r["modality"] == "SR").collect();
    assert_eq!(reports.len(), 2, "{read:?}");
    let (older, newer) = if reports[0]["sr"]["predecessors"].as_array().unwrap().is_empty() { (reports[0], reports[1]) } else { (reports[1], reports[0]) };
    assert_eq!(older["sr"]["predecessors"], serde_json::json!([]));
    assert_eq!(newer["sr"]["predecessors"], serde_json::json!([older["sop_instance"]]));
    assert_eq!(newer["sr"]["predecessor_study"], serde_json::json!([study_uid_of(&first)]), "re-identified like every reference");
    assert_eq!(newer["sr"]["evidence"].as_array().unwrap().len(), 1, "the key image of the study's new result");
    let newer_file = Path::new(newer["file"].as_str().unwrap());
    assert!(dciodvfy_errors(newer_file).is_empty(), "{:?}", dciodvfy_errors(newer_file));
    assert!(pixelmed_errors(newer_file).is_empty(), "{:?}", pixelmed_errors(newer_file));
    // The same finding keeps its Tracking UIDs (the finding, its region, its peak).
    assert_eq!(older["sr"]["tracking_uids"], newer["sr"]["tracking_uids"]);
    // The late instance is the same picture under a new UID: the same evidence, in the same place.
    let shapes = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["sr"]["regions"].as_array().unwrap().iter().map(|g| serde_json::json!([g["tracking_uid"], g["graphic_type"], g["points"]])).collect()
    };
    assert_eq!(shapes(older), shapes(newer));
    assert_eq!(shapes(older).len(), 2);
    // The old result is withdrawn (IHE IOCM) before the new one arrives: one rejection note
    // naming the old report and its map and picture, in the original study.
    let notes: Vec<&serde_json::Value> = read.iter().filter(|r| r["sop_class"] == KOS).collect();
    assert_eq!(notes.len(), 1, "{read:?}");
    let note = notes[0];
    assert_eq!(note["kos"]["title"], serde_json::json!(["113001", "DCM", "Rejected for Quality Reasons"]));
    assert_eq!(note["study_uid"].as_str(), Some(study_uid_of(&first).as_str()));
    assert_eq!(note["patient_id"].as_str(), Some(original(&first, "PatientID").as_str()));
    let old_objects: Vec<&serde_json::Value> =
        older["sr"]["findings"][0]["images"].as_array().unwrap()[1..].iter().map(|i| &i[1]).chain([&older["sop_instance"]]).collect();
    let mut rejected: Vec<&str> = note["kos"]["evidence"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let mut expected: Vec<&str> = old_objects.iter().map(|v| v.as_str().unwrap()).collect();
    rejected.sort();
    expected.sort();
    assert_eq!(rejected, expected, "the old report, map and picture");
    assert_eq!(expected.len(), 3);
    let note_file = Path::new(note["file"].as_str().unwrap());
    assert!(dciodvfy_errors(note_file).is_empty(), "{:?}", dciodvfy_errors(note_file));
    assert!(pixelmed_errors(note_file).is_empty(), "{:?}", pixelmed_errors(note_file));
    let arrived = |f: &Path| std::fs::metadata(f).unwrap().modified().unwrap();
    assert!(arrived(note_file) <= arrived(newer_file), "the note arrives before the new report");
}

/// A pynetdicom PACS offering Storage Commitment; its event lines go to `log`.
fn commit_scp(ae: &str, port: u16, dir: &Path, node: &Node, forget: bool, log: &Path) -> Child {
    let mut cmd = Command::new(python().unwrap());
    cmd.arg(repo().join("tests/peers/commit_scp.py"))
        .args([ae, &port.to_string(), dir.to_str().unwrap(), "127.0.0.1", &node.port.to_string(), "TRIAGE"])
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null());
    if forget {
        cmd.arg("--forget");
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log).unwrap_or_default().contains("READY") {
        assert!(Instant::now() < deadline, "the commitment SCP did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
fn storage_commitment_is_requested_and_each_report_recorded() {
    if !ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let node = Node::start(NodeOptions {
        inference: vec![demo_models()],
        results: vec!["destinations = [\"PACS\", \"ARCHIVE\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into(), "storage_commitment = true".into()],
        ..Default::default()
    });
    let work = tempfile::tempdir().unwrap();
    let [pacs_port, archive_port] = free_ports();
    // PACS keeps what it receives and commits to it; ARCHIVE acknowledges but keeps nothing.
    let mut pacs = commit_scp("PACS", pacs_port, work.path(), &node, false, &work.path().join("pacs.log"));
    let archive_dir = work.path().join("archive");
    std::fs::create_dir_all(&archive_dir).unwrap();
    let mut archive = commit_scp("ARCHIVE", archive_port, &archive_dir, &node, true, &work.path().join("archive.log"));
    register(&node, "PACS", pacs_port);
    register(&node, "ARCHIVE", archive_port);
    assert!(node.storescu(&[dir.join("case000.dcm")]).status.success());
    wait_log_count(&node, "AI report delivered", 2, Duration::from_secs(60));
    wait_log_count(&node, "storage commitment: the PACS committed to every object", 1, Duration::from_secs(30));
    wait_log_count(&node, "storage commitment: the PACS did not commit to some objects", 1, Duration::from_secs(30));
    // The node records a report before it answers it; each peer writes its REPORT line once
    // it has the answer, so wait for both lines before stopping the peers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let has = |file: &str, line: &str| std::fs::read_to_string(work.path().join(file)).unwrap_or_default().contains(line);
    while !(has("pacs.log", "REPORT 0x0000 3 0") && has("archive.log", "REPORT 0x0000 0 3")) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in [&mut pacs, &mut archive] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let pacs_log = std::fs::read_to_string(work.path().join("pacs.log")).unwrap();
    assert!(pacs_log.contains("REPORT 0x0000 3 0"), "our node answered the report with Success: {pacs_log}");
    let archive_log = std::fs::read_to_string(work.path().join("archive.log")).unwrap();
    assert!(archive_log.contains("REPORT 0x0000 0 3"), "{archive_log}");
    let list = String::from_utf8_lossy(&node.cli(&["outbox", "list"]).stdout).into_owned();
    let rows: Vec<&str> = list.lines().skip(1).collect();
    // Per destination: the report, the Parametric Map and the Secondary Capture.
    assert_eq!(rows.len(), 6, "{list}");
    assert_eq!(rows.iter().filter(|r| r.contains("PACS") && r.contains("committed")).count(), 3, "{list}");
    assert_eq!(rows.iter().filter(|r| r.contains("ARCHIVE") && r.contains(" failed")).count(), 3, "{list}");
    // The failure reason is kept with the object.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let states = rt.block_on(db.commitment_states()).unwrap();
    assert_eq!(states.values().filter(|s| *s == "committed").count(), 3);
}

#[test]
fn orthanc_commits_to_the_results_it_holds() {
    if !ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let node = Node::start(NodeOptions {
        inference: vec![demo_models()],
        results: vec!["destinations = [\"ORTHANC\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into(), "storage_commitment = true".into()],
        ..Default::default()
    });
    let pacs = Orthanc::start_knowing(&[("TRIAGE", node.port)]);
    register(&node, "ORTHANC", pacs.dicom_port);
    assert!(node.storescu(&[dir.join("case000.dcm")]).status.success());
    wait_log_count(&node, "AI report delivered", 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log().contains("storage commitment: the PACS committed to every object") {
        assert!(Instant::now() < deadline, "no commitment report; node log:\n{}\nOrthanc log:\n{}", node.log(), pacs.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = String::from_utf8_lossy(&node.cli(&["outbox", "list"]).stdout).into_owned();
    assert_eq!(list.matches("committed").count(), 3, "{list}");
}

/// A chest radiograph without Burned In Annotation is stored without its pixels (CR is in
/// `deid.burned_in_when_absent`), so the chest model that takes it never looked. That is said
/// wherever a priority appears, never as "no model takes it": the study result (not analysed,
/// with the reason), the worklist (NOT_ANALYSED, read before the negatives), the SR in the
/// original study at the PACS (read by highdicom: not analysed and why, evidence the radiograph)
/// and the ORU^R01 the RIS accepted.
#[test]
fn a_study_the_node_did_not_look_at_says_so_wherever_its_priority_appears() {
    if !ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("no-burned-in-attribute.dcm");
    std::fs::copy(dir.join("case001.dcm"), &file).unwrap();
    let out = Command::new("dcmodify").args(["-nb", "-q", "-ea", "(0028,0301)"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pacs_dir = work.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let (pacs, pacs_port) = crate::common::storescp(&pacs_dir);
    let _pacs = Killed(pacs);
    let (ris_port, ris_out) = (free_port(), work.path().join("ris.jsonl"));
    let _ris = python_peer("mllp_receiver.py", &["--port", &ris_port.to_string(), "--out", ris_out.to_str().unwrap()], "listening");
    let node = Node::start(NodeOptions {
        inference: vec![demo_models()],
        ingest: vec!["study_quiet_period = \"1s\"".into()],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        extra: vec![format!("[hl7]\nenabled = true\nhost = \"127.0.0.1\"\nport = {ris_port}")],
        ..Default::default()
    });
    register(&node, "PACS", pacs_port);
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());
    wait_log_count(&node, "AI report delivered", 1, Duration::from_secs(60));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let r = result_of(&db, &rt, &file);
    assert_eq!((r.model.as_str(), r.state.as_str(), r.images_inferred), ("demo-nodule", "not_analysed", 0), "{r:?}");
    let why = r.error.clone().unwrap_or_default();
    assert!(why.contains("without their pixels") && why.contains("Burned In Annotation absent"), "{why}");

    let list = node.cli(&["worklist", "--json"]);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(row["priority"], "NOT_ANALYSED", "{row}");
    assert!(row["reasons"][0].as_str().unwrap_or_default().contains("Burned In Annotation"), "{row}");

    let delivered = walk(&pacs_dir);
    assert_eq!(delivered.len(), 1, "one SR, no heatmap: {delivered:?}");
    let sr = &check(&[delivered[0].as_path()])[0];
    assert_eq!(sr["study_uid"].as_str(), Some(study_uid_of(&file).as_str()), "filed in the original study: {sr}");
    let qualitative = sr["sr"]["qualitative"].to_string();
    assert!(qualitative.contains("NOTANALYSED") && qualitative.contains("AI TRIAGE NOT PERFORMED") && qualitative.contains("not a negative"), "{sr}");
    assert_eq!(sr["sr"]["evidence"].as_array().map(Vec::len), Some(1), "the radiograph not looked at is named: {sr}");

    wait_until("the RIS received the ORU^R01", Duration::from_secs(30), || std::fs::read_to_string(&ris_out).map(|s| !s.is_empty()).unwrap_or(false));
    let message = std::fs::read_to_string(&ris_out).unwrap();
    assert!(message.contains("Not analysed by AI") && message.contains("without their pixels"), "{message}");
}
