//! AI triage end to end: real files pushed by DCMTK storescu to the node, inferred with
//! TorchScript models through libtorch, aggregated into study results in the database; and
//! the offline commands `infer` and `evaluate` on the same files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;

fn demo_models() -> String {
    format!("models_dir = \"{}\"", repo().join("models").display())
}

fn infer_json(args: &[&str], models: &str) -> (bool, Vec<serde_json::Value>, String) {
    let dir = models.trim_start_matches("models_dir = \"").trim_end_matches('"');
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .env("TRIAGE__INFERENCE__MODELS_DIR", dir)
        .env("TRIAGE__INFERENCE__DEVICE", "cpu")
        .arg("infer")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    (out.status.success(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn chest_radiographs_are_triaged_by_the_demo_model() {
    if !peers_ready() {
        return;
    }
    let Some((_, cases)) = demo_cases() else { return };
    let picked: Vec<(PathBuf, bool)> = cases.into_iter().take(4).collect();
    let files: Vec<PathBuf> = picked.iter().map(|(f, _)| f.clone()).collect();
    let mr = testdata().unwrap().join("classes/mr.dcm");
    let node = Node::start(NodeOptions { inference: vec![demo_models()], ..Default::default() });
    let mut sent = files.clone();
    sent.push(mr.clone());
    assert!(node.storescu(&sent).status.success(), "{}", node.log());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let mut uids: Vec<String> = files.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    uids.push(deid_uid(&study_uid_of(&mr)));
    let results = wait_results(&rt, &db, &uids, Duration::from_secs(60), &node);

    // The same files through `triage-node infer`: the node's pipeline gives the same numbers.
    let (ok, offline, err) = infer_json(&files.iter().map(|f| f.to_str().unwrap()).collect::<Vec<_>>(), &demo_models());
    assert!(ok, "{err}");
    let mut probabilities = Vec::new();
    for (i, (file, positive)) in picked.iter().enumerate() {
        let r = &results[i];
        assert_eq!(r.len(), 1, "one result per model for {}", file.display());
        let r = &r[0];
        assert_eq!((r.model.as_str(), r.state.as_str(), r.demonstration), ("demo-nodule", "triaged", true));
        assert!(r.intended_use.contains("Not clinically validated") && !r.limits.is_empty());
        assert_eq!(r.images_inferred, 1);
        assert!(r.preprocess_ms > 0.0 && r.forward_ms > 0.0 && r.triaged_at_ms >= r.ready_at_ms && r.ready_at_ms >= r.last_received_at_ms);
        let f = &r.findings[0];
        assert_eq!(f.label, "nodule");
        assert_eq!((f.cam_rows, f.cam_cols, f.cam.len()), (16, 16, 256));
        assert_eq!(f.source_rows, 512, "the map registers to the 512-row source frame");
        assert_eq!(f.positive, f.probability >= 0.95, "the manifest's threshold");
        assert_eq!(f.urgent, f.probability >= 0.99);
        let expected_tier = match if f.positive { f.probability } else { 1.0 - f.probability } {
            c if c >= 0.9 => "high",
            c if c >= 0.7 => "medium",
            _ => "needs_review",
        };
        assert_eq!(f.tier, expected_tier);
        probabilities.push((f.probability, *positive));
        assert_eq!(
            r.priority.map(|p| p.as_str()),
            Some(if f.urgent {
                "urgent"
            } else if f.positive {
                "positive"
            } else {
                "negative"
            })
        );
        let p_offline = offline[i]["results"][0]["findings"][0]["probability"].as_f64().unwrap();
        assert!((p_offline - f.probability).abs() < 1e-4, "node {} vs infer {p_offline}", f.probability);
    }
    // The model ranks these lesion cases above the lesion-free ones.
    let lowest_positive = probabilities.iter().filter(|p| p.1).map(|p| p.0).fold(1.0, f64::min);
    let highest_negative = probabilities.iter().filter(|p| !p.1).map(|p| p.0).fold(0.0, f64::max);
    assert!(lowest_positive > highest_negative, "{probabilities:?}");
    // The MR is accepted by no model: stored, and said so.
    let mr_result = &results[4][0];
    assert_eq!((mr_result.model.as_str(), mr_result.state.as_str()), ("", "not_applicable"));
    assert!(node.log().contains("study triaged"));
}

#[test]
fn a_ct_series_is_inferred_slice_by_slice_as_it_arrives() {
    if !peers_ready() {
        return;
    }
    let models = tempfile::tempdir().unwrap();
    let manifest = TINY.replace("MODALITY", "CT");
    let node = Node::start(NodeOptions {
        inference: vec![tiny_package(models.path(), &manifest), "max_batch = 8".into()],
        ingest: vec!["study_quiet_period = \"3s\"".into()],
        ..Default::default()
    });
    let series: Vec<PathBuf> = walk(&testdata().unwrap().join("series"));
    assert_eq!(series.len(), 40);
    assert!(node.storescu(&series).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = deid_uid(&study_uid_of(&series[0]));
    let results = wait_results(&rt, &db, std::slice::from_ref(&uid), Duration::from_secs(60), &node);
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str(), r.images_inferred), ("tiny", "triaged", 40), "{r:?}");
    let slices = rt.block_on(db.study_frame_outputs(r.study_id)).unwrap();
    assert_eq!(slices.len(), 40);
    // Inferred while the series was arriving or just after: all before the study was complete.
    let before_ready = slices.iter().filter(|s| s.created_at_ms <= r.ready_at_ms).count();
    assert_eq!(before_ready, 40, "slices inferred after the quiet period ended");
    // mean of the top 3 slices per label; the key slice is the most probable one.
    for (li, f) in r.findings.iter().enumerate() {
        let mut p: Vec<f32> = slices.iter().map(|s| s.probabilities[li]).collect();
        p.sort_by(|a, b| b.total_cmp(a));
        let expected = (p[0] + p[1] + p[2]) / 3.0;
        assert!((f.probability - f64::from(expected)).abs() < 1e-4, "{} vs {expected}", f.probability);
        let key = slices.iter().find(|s| s.instance_id == f.key_instance_id).unwrap();
        assert!((key.probabilities[li] - p[0]).abs() < 1e-6);
    }
}

#[test]
fn undecodable_pixels_fail_the_study_visibly_and_the_node_carries_on() {
    if !peers_ready() {
        return;
    }
    let models = tempfile::tempdir().unwrap();
    // A PACS (DCMTK storescp) receives what the node says about the study.
    let received = tempfile::tempdir().unwrap();
    let pacs_port = free_port();
    let mut pacs = std::process::Command::new("storescp")
        .args(["-od", received.path().to_str().unwrap(), &pacs_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let node = Node::start(NodeOptions {
        inference: vec![tiny_package(models.path(), &TINY.replace("MODALITY", "CT"))],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    let out = node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]);
    assert!(out.status.success());
    // A real JPEG 2000 CT whose codestream header (the SIZ marker segment after SOC) is
    // overwritten: a well-formed DICOM file whose pixels cannot be decoded.
    let work = tempfile::tempdir().unwrap();
    let broken = work.path().join("broken_j2k.dcm");
    let mut bytes = std::fs::read(testdata().unwrap().join("ts/ct_j2k_lossless.dcm")).unwrap();
    let soc = bytes.windows(4).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51]).expect("a J2K codestream");
    bytes[soc + 4..soc + 44].fill(0xEE);
    std::fs::write(&broken, bytes).unwrap();
    // pynetdicom sends it as it is (DCMTK's storescu inspects the codestream and gives up).
    let lines = node.pynetdicom_store(std::slice::from_ref(&broken));
    assert!(lines.iter().any(|l| l.contains("0x0000")), "stored as received: {lines:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = deid_uid(&study_uid_of(&broken));
    let results = wait_results(&rt, &db, std::slice::from_ref(&uid), Duration::from_secs(30), &node);
    let r = &results[0][0];
    assert_eq!(r.state, "failed", "{r:?}");
    assert!(r.error.as_deref().unwrap_or("").contains("could not be processed"), "{r:?}");
    assert!(r.findings.is_empty() && r.priority.is_none());
    // Still serving.
    let echo = node.dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", "TRIAGE"]);
    assert!(echo.status.success());
    assert!(node.log().contains("cannot be prepared"));
    // The PACS gets a report that says the AI could not read the study (never silence), filed
    // into the original study and referencing the image that failed; it passes dciodvfy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log().contains("AI report delivered") {
        assert!(Instant::now() < deadline, "no report delivered: {}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = pacs.kill();
    let _ = pacs.wait();
    let files = walk(received.path());
    assert_eq!(files.len(), 1, "one SR, no heatmap: {files:?}");
    assert!(dciodvfy_errors(&files[0]).is_empty(), "{:?}", dciodvfy_errors(&files[0]));
    assert!(pixelmed_errors(&files[0]).is_empty(), "{:?}", pixelmed_errors(&files[0]));
    let out = std::process::Command::new(python().unwrap()).arg(repo().join("tests/peers/check_results.py")).arg(&files[0]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sr: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sr["study_uid"], study_uid_of(&broken).as_str());
    assert_eq!(sr["sr"]["findings"], serde_json::json!([]));
    assert_eq!(sr["sr"]["qualitative"][0], serde_json::json!(["Priority", "FAILED"]));
    assert!(sr["sr"]["qualitative"][1][1].as_str().unwrap().starts_with("AI TRIAGE FAILED"), "{sr}");
    assert_eq!(sr["sr"]["evidence"], serde_json::json!([meta_of(&broken).0.trim_end_matches('\0')]));
}

#[test]
fn infer_prints_findings_and_writes_heatmaps() {
    let Some((_, cases)) = demo_cases() else { return };
    let out = tempfile::tempdir().unwrap();
    let heat = out.path().join("heat");
    let junk = out.path().join("not-dicom.dcm");
    std::fs::write(&junk, b"hello").unwrap();
    let file = cases[0].0.to_str().unwrap().to_string();
    let (ok, lines, _) = infer_json(&[&file, junk.to_str().unwrap(), "--heatmaps", heat.to_str().unwrap()], &demo_models());
    assert!(!ok, "a file that cannot be read makes the command fail");
    assert_eq!(lines.len(), 2, "the good file is still reported");
    let r = &lines[0]["results"][0];
    assert_eq!(r["model"], "demo-nodule");
    assert_eq!(r["demonstration"], true);
    let f = &r["findings"][0];
    let png = PathBuf::from(f["heatmap"].as_str().unwrap());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let (w, h) = (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!(h, 512, "heatmap at the source frame's size");
    assert!(w > 400 && w < 700);
    assert!(lines[1]["error"].as_str().unwrap().contains("reading the DICOM file"), "{}", lines[1]);
}

#[test]
fn evaluate_reports_roc_auc_and_a_threshold_sweep() {
    let Some((dir, _)) = demo_cases() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .env("TRIAGE__INFERENCE__MODELS_DIR", repo().join("models"))
        .env("TRIAGE__INFERENCE__DEVICE", "cpu")
        .args(["evaluate", "--json", "--labels"])
        .arg(dir.join("labels.csv"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &report["results"][0]["metrics"];
    assert_eq!((m["positives"].as_u64(), m["negatives"].as_u64()), (Some(20), Some(20)));
    let auc = m["auc"].as_f64().unwrap();
    eprintln!("demo model on 40 held-out synthetic cases: ROC AUC {auc:.4}");
    assert!(auc >= 0.9, "the shipped demo model separates its own kind of cases: AUC {auc}");
    assert_eq!(m["sweep"].as_array().unwrap().len(), 19);
    // A malformed labels file is refused with the line.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "file,nodule\ncase000.dcm,maybe\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .env("TRIAGE__INFERENCE__MODELS_DIR", repo().join("models"))
        .args(["evaluate", "--labels"])
        .arg(bad.path())
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The manifest of tiny_logits.pt (tests/peers/make_tiny_model.py): a softmax classifier of
/// three CT windows, NHWC, 0..255, float16, without a class activation map.
const SOFTMAX: &str = r#"
name = "softmax"
version = "0.1"
intended_use = "Test fixture: a softmax classifier."
limits = "Not a medical device; fixed weights."
[routing]
modalities = ["CT"]
[input]
size = [24, 20]
channels = 3
layout = "nhwc"
range = "0..255"
dtype = "float16"
window = { CT = [{ center = 40, width = 80 }, { center = 80, width = 200 }, { center = 600, width = 2800 }] }
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]
[outputs]
labels = ["normal", "bleed", "fracture"]
negative = "normal"
activation = "softmax"
positive = [1.0, 0.3, 0.3]
urgent = [1.0, 0.9, 0.99]
probabilities = 0
[aggregate]
method = "max"
"#;

/// `models/softmax/` holding tiny_logits.pt and `manifest`; returns the package folder.
fn softmax_package(models: &std::path::Path, logits: &std::path::Path, manifest: &str) -> PathBuf {
    let package = models.join("softmax");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::copy(logits, package.join("model.pt")).unwrap();
    std::fs::write(package.join("model.toml"), manifest).unwrap();
    package
}

/// A softmax classifier as most are published: logits only (no class activation map), a
/// negative class, a float16 NHWC input of three CT windows at 0..255 with per-channel mean/std.
/// `triage-node infer` gives the probabilities Python gets from the same model on the training
/// pipeline's input, never reports the negative class, and draws no heatmap.
#[test]
fn infer_applies_softmax_to_logits_and_never_reports_the_negative_class() {
    let Some(py) = python() else { return };
    let Some(data) = testdata() else { return };
    let logits = data.join("models/tiny_logits.pt");
    if !require("the tiny logits TorchScript model (scripts/setup-test-env.sh)", logits.is_file()) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let package = softmax_package(&root.path().join("models"), &logits, SOFTMAX);
    let manifest = SOFTMAX;
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let spec = serde_json::json!({"size": [24, 20], "channels": 3, "windows": [[40, 80], [80, 200], [600, 2800]], "scale": 255,
        "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "layout": "nhwc", "dtype": "float16"});
    let spec_file = root.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let out = std::process::Command::new(&py)
        .arg(repo().join("tests/peers/pydicom_reference.py"))
        .arg("model-input")
        .arg(&file)
        .arg(&spec_file)
        .arg(root.path().join("input.f32"))
        .arg(&logits)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Vec<f64> = python["softmax"][0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();

    let models = format!("models_dir = \"{}\"", root.path().join("models").display());
    let heat = root.path().join("heat");
    let (ok, lines, err) = infer_json(&[file.to_str().unwrap(), "--heatmaps", heat.to_str().unwrap()], &models);
    assert!(ok, "{err}");
    let r = &lines[0]["results"][0];
    assert_eq!(r["model"], "softmax", "{}", lines[0]);
    let findings = r["findings"].as_array().unwrap();
    let labels: Vec<&str> = findings.iter().map(|f| f["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["bleed", "fracture"], "the negative class is never a finding");
    for (f, p) in findings.iter().zip(&expected[1..]) {
        let got = f["probability"].as_f64().unwrap();
        assert!((got - p).abs() < 1e-5, "{}: infer {got}, Python {p}", f["label"]);
        assert_eq!(f["positive"].as_bool().unwrap(), got >= 0.3);
        assert!(f["heatmap"].is_null(), "no class activation map, no heatmap: {f}");
    }
    eprintln!("softmax over logits: infer {:?}, Python {expected:?}", findings.iter().map(|f| f["probability"].as_f64().unwrap()).collect::<Vec<_>>());

    // The same model declared NCHW is refused at start, naming the file: the model would get
    // a tensor it was not trained on.
    std::fs::write(package.join("model.toml"), manifest.replace("layout = \"nhwc\"", "layout = \"nchw\"")).unwrap();
    let (ok, _, err) = infer_json(&[file.to_str().unwrap()], &models);
    assert!(!ok && err.contains("softmax/model.pt") && err.contains("NHWC"), "{err}");
}

/// A model without a class activation map in the node: its positive finding is saved without a
/// map (0 x 0), the PACS gets the SR and no Parametric Map or Secondary Capture, and the study
/// view offers no heatmap; the negative class is no finding.
#[test]
fn a_model_without_a_cam_gives_findings_without_heatmaps() {
    if !peers_ready() {
        return;
    }
    let logits = testdata().unwrap().join("models/tiny_logits.pt");
    if !require("the tiny logits TorchScript model (scripts/setup-test-env.sh)", logits.is_file()) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    softmax_package(&work.path().join("models"), &logits, SOFTMAX);
    let received = tempfile::tempdir().unwrap();
    let (pacs, pacs_port) = storescp(received.path());
    let _pacs = Killed(pacs);
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", work.path().join("models").display())],
        ingest: vec!["study_quiet_period = \"1s\"".into()],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    assert!(node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]).status.success());
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let results = wait_results(&rt, &db, &[deid_uid(&study_uid_of(&file))], Duration::from_secs(30), &node);
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str()), ("softmax", "triaged"), "{r:?}");
    let labels: Vec<&str> = r.findings.iter().map(|f| f.label.as_str()).collect();
    assert_eq!(labels, ["bleed", "fracture"]);
    assert!(r.findings.iter().all(|f| f.cam_rows == 0 && f.cam_cols == 0 && f.cam.is_empty()), "{r:?}");
    assert!(r.findings[1].positive, "fracture is positive: {r:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log().contains("AI report delivered") {
        assert!(Instant::now() < deadline, "no report delivered: {}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let files = walk(received.path());
    assert_eq!(files.len(), 1, "the SR alone, no heatmap objects: {files:?}");
    let meta = dicom_object::meta::FileMetaTable::from_reader(&std::fs::read(&files[0]).unwrap()[128..]).unwrap();
    let class = meta.media_storage_sop_class_uid().trim_end_matches('\0').to_string();
    assert!(class.starts_with("1.2.840.10008.5.1.4.1.1.88."), "an SR: {class}");
    // The study view: findings without heatmap links, and only the SR among the objects.
    let client = reqwest::blocking::Client::new();
    let get = |path: &str| -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}{path}", node.http_port.unwrap());
        client.get(url).bearer_auth(READER_TOKEN).send().unwrap().json().unwrap()
    };
    let id = get("/api/worklist")["items"][0]["study_id"].as_i64().unwrap();
    let study = get(&format!("/api/studies/{id}"));
    let findings = study["results"][0]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{study}");
    assert!(findings.iter().all(|f| f["heatmap"].is_null()), "{study}");
    let kinds: Vec<&str> = study["objects"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["sr"], "{study}");
}
