//! A detector end to end (`outputs.kind = "detection"`): a tiny TorchScript detector made by the
//! venv's torch (tests/peers/make_tiny_detector.py) runs on a demo chest radiograph pushed by
//! DCMTK storescu; its boxes come back on the source image's pixel grid, on the finding, as TID
//! 1410 image regions of the SR delivered to a PACS (DCMTK storescp; dciodvfy, highdicom), and
//! counted on the worklist row. The shipped demonstration detector (ONNX,
//! models/more/demo-nodule-detector) boxes a planted nodule and passes a clear film.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

const DETECTOR: &str = r#"
name = "tiny-detector"
version = "0.1"
intended_use = "Test fixture: boxes around the brightest place."
limits = "Not a medical device."
[routing]
modalities = ["CR", "DX"]
[input]
size = [128, 128]
channels = 1
[outputs]
kind = "detection"
labels = ["nodule"]
positive = [0.5]
urgent = [0.9]
boxes = 0
scores = 1
box_labels = 2
codes = ["SCT:27925004:Nodule"]
[aggregate]
method = "max"
"#;

/// A models folder holding the tiny detector, or None (skipped) without the venv.
fn detector(root: &Path) -> Option<String> {
    scripted_package(root, "tiny-detector", "make_tiny_detector.py", DETECTOR)
}

#[test]
fn a_detectors_boxes_reach_the_sr_and_the_worklist_on_the_source_grid() {
    if !peers_ready() || !have_tool("dciodvfy") {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let models = tempfile::tempdir().unwrap();
    let Some(models_dir) = detector(models.path()) else { return };
    let file = dir.join("case000.dcm");
    let received = tempfile::tempdir().unwrap();
    let (mut pacs, pacs_port) = storescp(received.path());
    let node = Node::start(NodeOptions {
        inference: vec![models_dir],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    let out = node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = deid_uid(&study_uid_of(&file));
    let results = wait_results(&rt, &db, std::slice::from_ref(&uid), Duration::from_secs(60), &node);
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str(), r.priority.map(|p| p.as_str())), ("tiny-detector", "triaged", Some("urgent")), "{r:?}");
    let f = &r.findings[0];
    // The label's probability is its best box's score; no class activation map.
    assert!((f.probability - 0.97).abs() < 1e-6 && f.positive && f.urgent, "{f:?}");
    assert_eq!((f.cam_rows, f.cam_cols), (0, 0));
    // Two boxes reach the positive threshold (the padded one does not), best first, mapped from
    // the 128 x 128 input onto the source frame.
    let (rows, cols) = (f.source_rows as f32, f.source_cols as f32);
    assert_eq!(f.boxes.len(), 2, "{:?}", f.boxes);
    let (sx, sy) = (cols / 128.0, rows / 128.0);
    let fixed = &f.boxes[1];
    let expected = [8.0 * sx, 100.0 * sy, 40.0 * sx, 120.0 * sy];
    let got = [fixed.x0, fixed.y0, fixed.x1, fixed.y1];
    assert!(got.iter().zip(expected).all(|(a, b)| (a - b).abs() <= 1.0), "fixed box {got:?}, expected {expected:?}");
    assert!((fixed.score - 0.6).abs() < 1e-6 && (f.boxes[0].score - 0.97).abs() < 1e-6);
    let bright = &f.boxes[0];
    assert!(bright.x0 >= 0.0 && bright.y0 >= 0.0 && bright.x1 <= cols && bright.y1 <= rows && bright.x1 > bright.x0, "{bright:?}");

    // The worklist row counts the boxes and gives the largest (in pixels: the CR has no
    // usable Pixel Spacing).
    let row = rt.block_on(db.worklist_row(r.study_id)).unwrap().expect("a worklist row");
    let listed: serde_json::Value = serde_json::from_str(&row.findings_json).unwrap();
    assert_eq!(listed[0]["boxes"], 2, "{listed}");
    let largest = f.boxes.iter().map(|b| f64::from((b.x1 - b.x0) * (b.y1 - b.y0))).fold(0.0, f64::max);
    assert_eq!(listed[0]["largest_box"]["unit"], "px", "{listed}");
    assert!((listed[0]["largest_box"]["area"].as_f64().unwrap() - largest).abs() < 1.0, "{listed} vs {largest}");

    // The SR: a TID 1410 group per box, a closed rectangle on the key image with its score.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log().contains("AI report delivered") {
        assert!(Instant::now() < deadline, "no report delivered: {}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = pacs.kill();
    let _ = pacs.wait();
    let files = walk(received.path());
    assert_eq!(files.len(), 1, "the SR alone, no heatmap for a detector: {files:?}");
    let errors = dciodvfy_errors(&files[0]);
    assert!(errors.is_empty(), "dciodvfy: {errors:?}");
    let errors = pixelmed_errors(&files[0]);
    assert!(errors.is_empty(), "Pixelmed: {errors:?}");
    let read = crate::results::check(&[files[0].as_path()]);
    let sr = &read[0]["sr"];
    let key_sop = meta_of(&file).0.trim_end_matches('\0').to_string();
    let regions: Vec<&serde_json::Value> =
        sr["regions"].as_array().unwrap().iter().filter(|g| g["tracking"].as_str().unwrap_or("").contains(" box ")).collect();
    assert_eq!(regions.len(), 2, "{sr}");
    for (g, b) in regions.iter().zip(&f.boxes) {
        assert_eq!(g["graphic_type"], "POLYLINE");
        assert_eq!(g["image"], key_sop.as_str(), "selected from the key image");
        assert_eq!(g["finding"], serde_json::json!(["27925004", "SCT"]));
        let points: Vec<(f32, f32)> = g["points"].as_array().unwrap().iter().map(|p| (p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32)).collect();
        let rect = [(b.x0, b.y0), (b.x1, b.y0), (b.x1, b.y1), (b.x0, b.y1), (b.x0, b.y0)];
        assert_eq!(points.len(), 5, "a closed rectangle: {points:?}");
        assert!(points.iter().zip(rect).all(|(p, q)| (p.0 - q.0).abs() <= 1.0 && (p.1 - q.1).abs() <= 1.0), "{points:?} vs {rect:?}");
        let score = &g["measurements"][0];
        assert_eq!(score[0], "Probability", "{g}");
        assert!((score[1].as_f64().unwrap() - f64::from(b.score)).abs() < 1e-4, "{g}");
    }
    // The fixed box, in the SR, is the model's box mapped onto the source grid.
    let p = regions[1]["points"].as_array().unwrap();
    let (x0, y0) = (p[0][0].as_f64().unwrap() as f32, p[0][1].as_f64().unwrap() as f32);
    let (x1, y1) = (p[2][0].as_f64().unwrap() as f32, p[2][1].as_f64().unwrap() as f32);
    assert!([x0, y0, x1, y1].iter().zip(expected).all(|(a, b)| (a - b).abs() <= 1.0), "{:?} vs {expected:?}", [x0, y0, x1, y1]);
}

/// The shipped demonstration detector (scripts/train-demo-model.py train-detector), or None
/// (skipped) without it.
pub(crate) fn demo_detector() -> Option<std::path::PathBuf> {
    let dir = repo().join("models/more/demo-nodule-detector");
    require("models/more/demo-nodule-detector (scripts/train-demo-model.py train-detector)", dir.join("model.onnx").is_file()).then_some(dir)
}

/// Two demo cases written by the training script into `dir` (case000 with a nodule, case001
/// without), with the nodule's box on the source grid from its boxes.csv.
pub(crate) fn two_demo_cases(dir: &Path) -> Option<[f32; 4]> {
    let out = std::process::Command::new(python()?).arg(repo().join("scripts/train-demo-model.py")).arg("cases").arg(dir).arg("2").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let boxes = std::fs::read_to_string(dir.join("boxes.csv")).unwrap();
    let line = boxes.lines().find(|l| l.starts_with("case000.dcm,")).expect("case000 in boxes.csv");
    let v: Vec<f32> = line.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
    assert!(boxes.lines().any(|l| l == "case001.dcm,,,,"), "case001 has no nodule: {boxes}");
    Some([v[0], v[1], v[2], v[3]])
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

#[test]
fn the_demo_onnx_detector_boxes_the_planted_nodule_and_passes_a_clear_film() {
    if !peers_ready() || !have_tool("dciodvfy") {
        return;
    }
    let Some(package) = demo_detector() else { return };
    let cases = tempfile::tempdir().unwrap();
    let Some(truth) = two_demo_cases(cases.path()) else { return };
    // The package as shipped, twin.pt included: the loader takes model.onnx (and model.pt,
    // were it there), never twin.pt.
    let models = tempfile::tempdir().unwrap();
    let dir = models.path().join("demo-nodule-detector");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&package).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    assert!(dir.join("twin.pt").is_file());
    let received = tempfile::tempdir().unwrap();
    let (mut pacs, pacs_port) = storescp(received.path());
    let node = Node::start(NodeOptions {
        inference: vec![format!("models_dir = \"{}\"", models.path().display())],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    let out = node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = [cases.path().join("case000.dcm"), cases.path().join("case001.dcm")];
    assert!(node.storescu(&files).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uids: Vec<String> = files.iter().map(|f| deid_uid(&study_uid_of(f))).collect();
    let results = wait_results(&rt, &db, &uids, Duration::from_secs(60), &node);

    // The nodule: a positive finding whose best box overlaps the planted one on the source grid.
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str(), r.demonstration), ("demo-nodule-detector", "triaged", true), "{r:?}");
    let f = &r.findings[0];
    assert!(f.positive && !f.boxes.is_empty(), "{f:?}");
    let best = &f.boxes[0];
    // (The stored probability has four decimals.)
    assert!((f64::from(best.score) - f.probability).abs() < 1e-4, "the probability is the best box's score: {f:?}");
    let overlap = iou([best.x0, best.y0, best.x1, best.y1], truth);
    assert!(overlap >= 0.3, "best box {best:?} against the planted nodule {truth:?}: IoU {overlap}");
    // The clear film: negative, no box kept.
    let r = &results[1][0];
    assert_eq!((r.state.as_str(), r.priority.map(|p| p.as_str())), ("triaged", Some("negative")), "{r:?}");
    assert!(!r.findings[0].positive && r.findings[0].boxes.is_empty(), "{:?}", r.findings[0]);

    // Both SRs reach the PACS and pass dciodvfy; the positive one holds the box.
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.log().matches("AI report delivered").count() < 2 {
        assert!(Instant::now() < deadline, "not both reports delivered: {}", node.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = pacs.kill();
    let _ = pacs.wait();
    let srs = walk(received.path());
    assert_eq!(srs.len(), 2, "an SR per study, no heatmap for a detector: {srs:?}");
    let mut regions = 0;
    for sr in &srs {
        let errors = dciodvfy_errors(sr);
        assert!(errors.is_empty(), "dciodvfy on {}: {errors:?}", sr.display());
        let errors = pixelmed_errors(sr);
        assert!(errors.is_empty(), "Pixelmed on {}: {errors:?}", sr.display());
        let read = crate::results::check(&[sr.as_path()]);
        regions += read[0]["sr"]["regions"].as_array().unwrap().iter().filter(|g| g["tracking"].as_str().unwrap_or("").contains(" box ")).count();
    }
    assert_eq!(regions, f.boxes.len(), "the positive finding's boxes, and none for the clear film");
}
