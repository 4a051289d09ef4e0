//! A segmenter end to end (`outputs.kind = "segmentation"`): a tiny TorchScript segmenter made
//! by the venv's torch (tests/peers/make_tiny_segmenter.py) runs on a demo chest radiograph
//! pushed by DCMTK storescu; its lesion mask comes back as a DICOM Segmentation (FRACTIONAL,
//! PROBABILITY) on the source image's grid, delivered to a PACS (DCMTK storescp) with the SR,
//! whose TID 1410 group references the SEG's segment with the lesion's area; dciodvfy finds no
//! error and highdicom reads the SEG back to the node's mask. On a CT series, the finding's
//! slices make a volume: a TID 1411 group with the volume in mm³. The shipped CT demonstration
//! segmenter (models/more/demo-ct-lesion-seg) outlines a synthetic lesion the same way.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const SEGMENTER: &str = r#"
name = "tiny-segmenter"
version = "0.1"
intended_use = "Test fixture: the brightest place outlined."
limits = "Not a medical device."
[routing]
modalities = ["CR", "DX"]
[input]
size = [128, 128]
channels = 1
[outputs]
kind = "segmentation"
labels = ["background", "lesion"]
negative = "background"
positive = [1.0, 0.5]
urgent = [1.0, 0.9]
mask = 0
codes = ["SCT:49755003:Morphologically abnormal structure", "SCT:27925004:Nodule"]
[aggregate]
method = "max"
"#;

/// A node running the package(s) of `models_dir`, delivering to a DCMTK storescp (its
/// received files in `received`), given the `files` of one study by storescu: the node, the
/// storescp and the study's results once triaged.
fn segment_study(models_dir: String, files: &[PathBuf], received: &Path) -> (Node, std::process::Child, Vec<Vec<triage_node::db::StudyResult>>) {
    let (pacs, pacs_port) = storescp(received);
    let node = Node::start(NodeOptions {
        inference: vec![models_dir],
        results: vec!["destinations = [\"PACS\"]".into()],
        delivery: vec!["poll_interval = \"200ms\"".into()],
        ..Default::default()
    });
    let out = node.cli(&["ae", "add", "PACS", "--role", "pacs", "--host", "127.0.0.1", "--port", &pacs_port.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(node.storescu(files).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let results = wait_results(&rt, &db, &[deid_uid(&study_uid_of(&files[0]))], Duration::from_secs(90), &node);
    (node, pacs, results)
}

/// A models folder holding the tiny segmenter, or None (skipped) without the venv.
fn segmenter(root: &Path) -> Option<String> {
    scripted_package(root, "tiny-segmenter", "make_tiny_segmenter.py", SEGMENTER)
}

/// Once the report is delivered: the PACS stopped, the SEG and the SR it received (storescp
/// names a file by its SOP class's abbreviation: SG a Segmentation, SR3 a Comprehensive 3D SR),
/// each with no dciodvfy error, and the SR with no Pixelmed error.
fn delivered_seg_and_sr(node: &Node, mut pacs: std::process::Child, received: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    wait_for(node, "the AI report delivered", Duration::from_secs(30), || node.log().contains("AI report delivered"));
    let _ = pacs.kill();
    let _ = pacs.wait();
    let files = walk(received);
    let named = |prefix: &str| files.iter().find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix)).cloned();
    let seg = named("SG.").unwrap_or_else(|| panic!("no SEG among {files:?}"));
    let sr = named("SR3.").unwrap_or_else(|| panic!("no SR among {files:?}"));
    for f in [&seg, &sr] {
        let errors = dciodvfy_errors(f);
        assert!(errors.is_empty(), "dciodvfy {}: {errors:?}", f.display());
    }
    // The SR's regions and the TID 1411 group referencing the segment, by the SR validator IHE AIR names.
    let errors = pixelmed_errors(&sr);
    assert!(errors.is_empty(), "Pixelmed {}: {errors:?}", sr.display());
    (seg, sr)
}

#[test]
fn a_segmenters_mask_reaches_the_pacs_as_a_segmentation_the_sr_references() {
    if !peers_ready() || !have_tool("dciodvfy") {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let models = tempfile::tempdir().unwrap();
    let Some(models_dir) = segmenter(models.path()) else { return };
    let Some(python) = python() else { return };
    let file = dir.join("case000.dcm");
    let received = tempfile::tempdir().unwrap();
    let (node, pacs, results) = segment_study(models_dir, std::slice::from_ref(&file), received.path());
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str(), r.priority.map(|p| p.as_str())), ("tiny-segmenter", "triaged", Some("urgent")), "{:?}", r.error);
    // One finding (the background is the negative class): the lesion, its probability its
    // mask's maximum, its map the mask at the model's input size.
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert!(f.label == "lesion" && f.positive && f.urgent && f.probability > 0.9, "{} {}", f.label, f.probability);
    assert_eq!((f.cam_rows, f.cam_cols), (128, 128));
    let cam = ndarray::ArrayView2::from_shape((128, 128), &f.cam[..]).unwrap();
    let (rows, cols) = (f.source_rows as usize, f.source_cols as usize);
    let mask = triage_node::results::regions::on_grid(cam, rows, cols);

    let (seg, sr) = &delivered_seg_and_sr(&node, pacs, received.path());

    // highdicom reads the SEG: one segment, "lesion", a nodule, AUTOMATIC by the model, on the
    // source image; its mask is the node's within a step of 1/255.
    let npy = received.path().join("mask.npy");
    let out = Command::new(&python).arg(repo().join("tests/peers/check_seg.py")).arg(seg).arg(&npy).arg(sr).output().unwrap();
    assert!(out.status.success(), "check_seg.py: {}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "highdicom: {}",
        serde_json::json!({ "type": read["type"], "fractional_type": read["fractional_type"], "segments": read["segments"], "sr_groups": read["sr_groups"] })
    );
    assert_eq!((read["type"].as_str(), read["fractional_type"].as_str()), (Some("FRACTIONAL"), Some("PROBABILITY")), "{read}");
    let key_sop = meta_of(&file).0.trim_end_matches('\0').to_string();
    assert_eq!(read["sources"], serde_json::json!([key_sop]), "the SEG is derived from the source image (re-identified)");
    let segments = read["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{read}");
    let s = &segments[0];
    assert_eq!((s["number"].as_u64(), s["label"].as_str(), s["algorithm_type"].as_str()), (Some(1), Some("lesion"), Some("AUTOMATIC")), "{s}");
    assert_eq!(s["type"], serde_json::json!(["27925004", "SCT"]));
    assert!(s["algorithm"].as_str().unwrap_or("").contains("tiny-segmenter"), "{s}");
    let theirs = read_npy(&npy, rows, cols);
    let worst = mask.iter().zip(&theirs).map(|(a, b)| (a.clamp(0.0, 1.0) - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 0.5 / 255.0 + 1e-4, "the SEG's mask differs from the node's by up to {worst}");
    let inside = mask.iter().filter(|v| **v >= 0.5).count();
    assert!(inside > 0 && inside < rows * cols / 10, "a blob, not the image: {inside} pixels");
    let (r0, c0, r1, c1) = bounding_box(&mask);
    let hd_box: Vec<usize> = s["box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert!(hd_box.iter().zip([r0, c0, r1, c1]).all(|(a, b)| a.abs_diff(b) <= 1), "highdicom's box {hd_box:?}, the node's {:?}", (r0, c0, r1, c1));

    // The SR: a TID 1410 group referencing the SEG's frame 1 (segment 1's on the image), with the lesion's
    // area in pixels (the CR has no usable Pixel Spacing).
    let seg_sop = meta_of(seg).0.trim_end_matches('\0').to_string();
    let groups = read["sr_groups"].as_array().unwrap();
    let g = groups.iter().find(|g| g["tracking"].as_str().unwrap_or("").ends_with("lesion segment")).unwrap_or_else(|| panic!("no segment group: {read}"));
    assert_eq!(g["template"], "1410");
    // The frame names the segment (never both: PS3.3 Image SOP Instance Reference Macro).
    assert_eq!(g["image"], serde_json::json!(["Referenced Segmentation Frame", seg_sop, 0, 1]), "{g}");
    // TID 1410 names the image the frame was segmented from: the key image.
    let key_sop = meta_of(&file).0.trim_end_matches('\0').to_string();
    assert_eq!(g["source_image"], serde_json::json!(["Source image for segmentation", key_sop, 0, 0]), "{g}");
    let area = g["measurements"].as_array().unwrap().iter().find(|m| m[0] == "Area").unwrap_or_else(|| panic!("no area: {g}"));
    assert_eq!(area[2], "{pixels}");
    assert_eq!(area[1].as_f64().unwrap() as usize, inside, "{g}");
}

/// A label map (`mask_format = "labels"`: each pixel its label's index) becomes a BINARY
/// Segmentation (1 bit): dciodvfy finds no error, and highdicom reads back exactly the node's
/// mask thresholded at 0.5.
#[test]
fn a_label_map_becomes_a_binary_segmentation() {
    if !peers_ready() || !have_tool("dciodvfy") {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let Some(python) = python() else { return };
    let models = tempfile::tempdir().unwrap();
    let manifest = SEGMENTER.replace("mask = 0", "mask = 0\nmask_format = \"labels\"").replace("tiny-segmenter", "tiny-label-segmenter");
    let Some(models_dir) = scripted_package(models.path(), "tiny-label-segmenter", "make_tiny_label_segmenter.py", &manifest) else { return };
    let file = dir.join("case000.dcm");
    let received = tempfile::tempdir().unwrap();
    let (node, pacs, results) = segment_study(models_dir, std::slice::from_ref(&file), received.path());
    let f = &results[0][0].findings[0];
    assert!(f.label == "lesion" && f.positive && f.probability == 1.0, "{} {}", f.label, f.probability);
    assert!(f.cam.iter().all(|&v| v == 0.0 || v == 1.0), "a label map's mask is one-hot");
    let cam = ndarray::ArrayView2::from_shape((f.cam_rows as usize, f.cam_cols as usize), &f.cam[..]).unwrap();
    let (rows, cols) = (f.source_rows as usize, f.source_cols as usize);
    let mask = triage_node::results::regions::on_grid(cam, rows, cols);
    let (seg, _) = &delivered_seg_and_sr(&node, pacs, received.path());
    let npy = received.path().join("mask.npy");
    let out = Command::new(&python).arg(repo().join("tests/peers/check_seg.py")).arg(seg).arg(&npy).output().unwrap();
    assert!(out.status.success(), "check_seg.py: {}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["type"], "BINARY", "{read}");
    assert_eq!(attr_text(seg, dicom_dictionary_std::tags::BITS_ALLOCATED), "1");
    let theirs = read_npy(&npy, rows, cols);
    let differ = mask.iter().zip(&theirs).filter(|(a, b)| (**a >= 0.5) != (**b >= 0.5)).count();
    assert_eq!(differ, 0, "highdicom's binary mask is the node's at 0.5");
    assert!(theirs.contains(&1.0) && theirs.iter().all(|&v| v == 0.0 || v == 1.0));
}

/// The bounding box (first row, first column, last row, last column) of `mask` >= 0.5.
fn bounding_box(mask: &ndarray::Array2<f32>) -> (usize, usize, usize, usize) {
    let mut b = (usize::MAX, usize::MAX, 0, 0);
    for ((r, c), v) in mask.indexed_iter() {
        if *v >= 0.5 {
            b = (b.0.min(r), b.1.min(c), b.2.max(r), b.3.max(c));
        }
    }
    b
}

/// A float32 `.npy` of `rows` x `cols` (NumPy's format 1.0, little-endian, C order).
fn read_npy(path: &Path, rows: usize, cols: usize) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let text = String::from_utf8_lossy(&bytes[10..10 + header]);
    assert!(text.contains("'<f4'") && text.contains("'fortran_order': False") && text.contains(&format!("({rows}, {cols})")), "{text}");
    bytes[10 + header..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A volume: the tiny segmenter on a generated head CT series (scripts/train-ct-demo-model.py,
/// real slice, synthetic lesion), aggregated over 2 adjacent slices: the Segmentation has a
/// frame per slice of the run in the series' Frame of Reference with its geometry, and the SR a
/// TID 1411 group referencing the segment by number, with the source series, the area and the
/// volume in mm³; dciodvfy finds no error in either and highdicom reads the SEG.
#[test]
fn a_segmenters_volume_finding_is_a_tid_1411_group_with_its_volume() {
    if !peers_ready() || !have_tool("dciodvfy") {
        return;
    }
    let Some(python) = python() else { return };
    let models = tempfile::tempdir().unwrap();
    let Some(models_dir) = segmenter(models.path()) else { return };
    let manifest = SEGMENTER.replace("modalities = [\"CR\", \"DX\"]", "modalities = [\"CT\"]").replace("method = \"max\"", "method = \"adjacent\"\nk = 2");
    std::fs::write(models.path().join("tiny-segmenter/model.toml"), manifest).unwrap();
    let work = tempfile::tempdir().unwrap();
    let series = work.path().join("series");
    let out =
        Command::new(&python).arg(repo().join("scripts/train-ct-demo-model.py")).args(["series", series.to_str().unwrap(), "8", "lesion"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files = walk(&series);
    files.sort();
    let received = tempfile::tempdir().unwrap();
    let (node, pacs, results) = segment_study(models_dir, &files, received.path());
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str()), ("tiny-segmenter", "triaged"), "{:?}", r.error);
    let f = &r.findings[0];
    assert!(f.positive && f.span.len() == 2, "{} {} span {}", f.label, f.probability, f.span.len());

    let (seg, sr) = &delivered_seg_and_sr(&node, pacs, received.path());
    let npy = received.path().join("mask.npy");
    let out = Command::new(&python).arg(repo().join("tests/peers/check_seg.py")).arg(seg).arg(&npy).arg(sr).output().unwrap();
    assert!(out.status.success(), "check_seg.py: {}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("highdicom: {}", serde_json::json!({ "sources": read["sources"], "segments": read["segments"], "sr_groups": read["sr_groups"] }));
    assert_eq!(read["sources"].as_array().unwrap().len(), 2, "a frame per slice of the run: {read}");
    let seg_sop = meta_of(seg).0.trim_end_matches('\0').to_string();
    let groups = read["sr_groups"].as_array().unwrap();
    let g = groups.iter().find(|g| g["tracking"].as_str().unwrap_or("").ends_with("lesion segment")).unwrap_or_else(|| panic!("no segment group: {read}"));
    assert_eq!(g["template"], "1411", "{g}");
    assert_eq!(g["image"], serde_json::json!(["Referenced Segment", seg_sop, 1, 0]), "{g}");
    let measured = |name: &str| g["measurements"].as_array().unwrap().iter().find(|m| m[0] == name).cloned().unwrap_or_else(|| panic!("no {name}: {g}"));
    let (area, volume) = (measured("Area"), measured("Volume"));
    assert_eq!((area[2].as_str(), volume[2].as_str()), (Some("mm2"), Some("mm3")), "{g}");
    assert!(volume[1].as_f64().unwrap() > 0.0 && area[1].as_f64().unwrap() > 0.0, "{g}");
}

/// The shipped segmenter `demo-ct-lesion-seg` (models/more/, scripts/train-ct-demo-model.py
/// train-segmenter) on the middle slice of a lesion in a head CT series of the demonstration
/// script: positive, its mask a FRACTIONAL (PROBABILITY) Segmentation on the slice that
/// dciodvfy passes and highdicom reads back to the node's mask, a blob, not the image.
#[test]
fn the_demo_ct_segmenter_outlines_the_lesion_as_a_segmentation() {
    if !peers_ready() || !have_tool("dciodvfy") {
        return;
    }
    let Some(python) = python() else { return };
    let models = tempfile::tempdir().unwrap();
    let shipped = repo().join("models/more/demo-ct-lesion-seg");
    let package = models.path().join("demo-ct-lesion-seg");
    std::fs::create_dir_all(&package).unwrap();
    for file in ["model.pt", "model.toml", "reference.json"] {
        std::fs::copy(shipped.join(file), package.join(file)).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let series = work.path().join("series");
    let out =
        Command::new(&python).arg(repo().join("scripts/train-ct-demo-model.py")).args(["series", series.to_str().unwrap(), "12", "lesion"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // "LESION first last": the lesion's slices; its middle one is sent.
    let printed = String::from_utf8_lossy(&out.stdout);
    let range: Vec<usize> = printed.split_whitespace().skip(1).map(|w| w.parse().unwrap()).collect();
    let file = series.join(format!("slice{:03}.dcm", (range[0] + range[1]) / 2));
    let received = tempfile::tempdir().unwrap();
    let (node, pacs, results) = segment_study(format!("models_dir = \"{}\"", models.path().display()), std::slice::from_ref(&file), received.path());
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str()), ("demo-ct-lesion-seg", "triaged"), "{:?}", r.error);
    let f = &r.findings[0];
    eprintln!("demo-ct-lesion-seg: the lesion's middle slice p = {:.4}", f.probability);
    assert!(f.label == "hyperdense_lesion" && f.positive, "{} {}", f.label, f.probability);
    assert_eq!((f.cam_rows, f.cam_cols), (128, 128));
    let cam = ndarray::ArrayView2::from_shape((128, 128), &f.cam[..]).unwrap();
    let (rows, cols) = (f.source_rows as usize, f.source_cols as usize);
    let mask = triage_node::results::regions::on_grid(cam, rows, cols);

    let (seg, _) = &delivered_seg_and_sr(&node, pacs, received.path());
    let npy = received.path().join("mask.npy");
    let out = Command::new(&python).arg(repo().join("tests/peers/check_seg.py")).arg(seg).arg(&npy).output().unwrap();
    assert!(out.status.success(), "check_seg.py: {}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((read["type"].as_str(), read["fractional_type"].as_str()), (Some("FRACTIONAL"), Some("PROBABILITY")), "{read}");
    let segments = read["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{read}");
    assert_eq!((segments[0]["label"].as_str(), segments[0]["algorithm_type"].as_str()), (Some("hyperdense_lesion"), Some("AUTOMATIC")), "{read}");
    let theirs = read_npy(&npy, rows, cols);
    let worst = mask.iter().zip(&theirs).map(|(a, b)| (a.clamp(0.0, 1.0) - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 0.5 / 255.0 + 1e-4, "the SEG's mask differs from the node's by up to {worst}");
    let inside = mask.iter().filter(|v| **v >= 0.5).count();
    eprintln!("demo-ct-lesion-seg: {inside} pixels of {} inside the mask", rows * cols);
    assert!(inside > 20 && inside < rows * cols / 50, "a lesion, not the image: {inside} pixels");
}
