//! Slab and volume models end to end (`input.kind = "slab" | "volume"`, issue 31): tiny
//! TorchScript models made by the venv's torch (tests/peers/make_tiny_volume_model.py) run on
//! synthetic CT series (tests/peers/make_ct_series.py: 12 slices 2 mm apart, the 4 of highest
//! position bright, Instance Numbers and arrival in the opposite order) pushed by DCMTK
//! storescu. The volume model's "top" output is the mean of the upper half of its input along
//! D: 0.6875 exactly when the slices arrive ordered along the normal and resampled from 12 to 8
//! (trilinear: output slices 5, 6, 7 sample source 7.75, 9.25, 10.75), 0 upside down. The slab
//! model sees the slice above the centre as its third channel. A series with a missing slice
//! gives both models a FAILED result naming the gap. The shipped volume demonstration model
//! (models/more/demo-ct-volume) flags a lesion series and not a clear one, its input equals its
//! training pipeline's, and its ONNX twin gives what it gives.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const VOLUME: &str = r#"
name = "tiny-volume"
version = "0.1"
intended_use = "Test fixture: which half of the volume is bright."
limits = "Not a medical device."
[routing]
modalities = ["CT"]
[input]
kind = "volume"
size = [8, 8, 8]
channels = 1
min_slices = 6
window = { CT = { center = 0, width = 2000 } }
[outputs]
labels = ["top", "bottom"]
positive = [0.5, 0.5]
urgent = [0.9, 0.9]
probabilities = 0
cam = 1
[aggregate]
method = "max"
"#;

const SLAB: &str = r#"
name = "tiny-slab"
version = "0.1"
intended_use = "Test fixture: a bright slice above a dark one."
limits = "Not a medical device."
[routing]
modalities = ["CT"]
[input]
kind = "slab"
slab = 3
size = [8, 8]
channels = 3
window = { CT = { center = 0, width = 2000 } }
[outputs]
labels = ["above"]
positive = [0.5]
urgent = [0.9]
probabilities = 0
[aggregate]
method = "max"
"#;

/// A models folder with the tiny volume and slab models; None (skipped) without the venv.
fn models(root: &Path) -> Option<String> {
    let python = python()?;
    for (name, kind, manifest) in [("tiny-volume", "volume", VOLUME), ("tiny-slab", "slab", SLAB)] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(&python).arg(repo().join("tests/peers/make_tiny_volume_model.py")).arg(kind).arg(dir.join("model.pt")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dir.join("model.toml"), manifest).unwrap();
    }
    Some(format!("models_dir = \"{}\"", root.display()))
}

/// A series made by make_ct_series.py: (its files in name order, the study UID).
fn series(dir: &Path, args: &[&str]) -> (Vec<PathBuf>, String) {
    let out = Command::new(python().unwrap()).arg(repo().join("tests/peers/make_ct_series.py")).arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files = walk(dir);
    files.sort();
    (files, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn volume_and_slab_models_see_the_series_in_normal_order_and_a_gap_fails_them() {
    if !peers_ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let Some(models_dir) = models(&root.path().join("models")) else { return };
    let (whole, whole_uid) = series(&root.path().join("whole"), &["12", "2.0", "4"]);
    let (gappy, gappy_uid) = series(&root.path().join("gappy"), &["12", "2.0", "4", "--skip", "5"]);
    let node = Node::start(NodeOptions { inference: vec![models_dir], ..Default::default() });
    assert!(node.storescu(&whole).status.success(), "{}", node.log());
    assert!(node.storescu(&gappy).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uids = [deid_uid(&whole_uid), deid_uid(&gappy_uid)];
    let results = wait_results(&rt, &db, &uids, Duration::from_secs(90), &node);
    let result = |i: usize, model: &str| results[i].iter().find(|r| r.model == model).unwrap_or_else(|| panic!("no {model} result: {:?}", results[i])).clone();
    // The z of a finding's key slice, read from the stored (de-identified) file.
    let key_z = |instance: i64| -> f64 {
        let path = rt.block_on(db.instance_path(instance)).unwrap().unwrap();
        let ipp = attr_text(&node.data_dir().join(path), dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT);
        ipp.split('\\').nth(2).unwrap().trim().parse().unwrap()
    };

    let v = result(0, "tiny-volume");
    assert_eq!((v.state.as_str(), v.priority.map(|p| p.as_str())), ("triaged", Some("positive")), "{:?}", v.error);
    let top = v.findings.iter().find(|f| f.label == "top").unwrap();
    let bottom = v.findings.iter().find(|f| f.label == "bottom").unwrap();
    assert!((top.probability - 0.6875).abs() < 1e-4 && top.positive, "top {}", top.probability);
    assert!(bottom.probability.abs() < 1e-4 && !bottom.positive, "bottom {}", bottom.probability);
    // The 3D map came back onto the source slices: the key slice is a bright one (z >= 16),
    // its map over the whole frame at the map's in-plane size.
    assert_eq!((top.cam_rows, top.cam_cols, top.source_rows, top.source_cols), (8, 8, 16, 16));
    assert!(key_z(top.key_instance_id) >= 16.0, "key slice at z {}", key_z(top.key_instance_id));
    assert!(top.cam.iter().all(|c| (*c - 1.0).abs() < 1e-4), "the key slice's map: {:?}", &top.cam[..8]);
    assert_eq!(v.images_inferred, 12);

    let s = result(0, "tiny-slab");
    assert_eq!(s.state.as_str(), "triaged", "{:?}", s.error);
    let above = &s.findings[0];
    // Slices 7 and 8 (z 14, 16) have a bright slice above and a dark one below.
    assert!(above.probability > 0.99 && above.urgent, "{}", above.probability);
    let z = key_z(above.key_instance_id);
    assert!(z == 14.0 || z == 16.0, "key slice at z {z}");
    assert_eq!(s.images_inferred, 12);

    for model in ["tiny-volume", "tiny-slab"] {
        let f = result(1, model);
        assert_eq!(f.state.as_str(), "failed", "{model}: {f:?}");
        let why = f.error.unwrap_or_default();
        assert!(why.contains("missing or uneven slices: a gap of 4.00 mm after slice 5 of 11"), "{model}: {why}");
        assert!(f.findings.is_empty() && f.priority.is_none());
    }
    assert!(!node.log().contains("VOLUME^TEST") && !node.log().contains(&whole_uid), "no patient data in the log");
}

/// The shipped volume demonstration model, copied into a models folder under `root` (and, with
/// `onnx`, its ONNX twin exported by scripts/bench_infer.py beside it); None (skipped) without
/// the venv.
fn demo_volume_models(root: &Path, onnx: bool) -> Option<String> {
    let python = python()?;
    let shipped = repo().join("models/more/demo-ct-volume");
    let dir = root.join("demo-ct-volume");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.pt", "model.toml", "reference.json"] {
        std::fs::copy(shipped.join(file), dir.join(file)).unwrap();
    }
    if onnx {
        let out =
            Command::new(&python).arg(repo().join("scripts/bench_infer.py")).arg("onnx").arg(&shipped).arg(root.join("demo-ct-volume-onnx")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let largest: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(largest < 1e-4, "the export differs from TorchScript by {largest} on random volumes");
    }
    Some(format!("models_dir = \"{}\"", root.display()))
}

/// A head CT series from the CT demonstration script (`series DIR N [lesion]`): its files in
/// position order, its study UID and the lesion's slice range (the script prints it).
fn demo_series(dir: &Path, n: usize, lesion: bool) -> (Vec<PathBuf>, String, Option<(f64, f64)>) {
    let mut args = vec!["series".to_string(), dir.display().to_string(), n.to_string()];
    if lesion {
        args.push("lesion".into());
    }
    let out = Command::new(python().unwrap()).arg(repo().join("scripts/train-ct-demo-model.py")).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = printed.split_whitespace().collect();
    let spread = (words.len() == 3).then(|| (words[1].parse().unwrap(), words[2].parse().unwrap()));
    let mut files = walk(dir);
    files.sort();
    let uid = study_uid_of(&files[0]);
    (files, uid, spread)
}

/// The shipped `demo-ct-volume` (models/more/, scripts/train-ct-demo-model.py train-volume) on
/// two 12-slice series of the demonstration script: the one with a lesion is positive, its key
/// slice (the strongest of the 3D map sampled back) within a slice of the lesion; the one
/// without is negative.
#[test]
fn the_demo_volume_model_flags_the_lesion_series_and_not_the_clear_one() {
    if !peers_ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let Some(models_dir) = demo_volume_models(&root.path().join("models"), false) else { return };
    let (lesion, lesion_uid, spread) = demo_series(&root.path().join("lesion"), 12, true);
    let (clear, clear_uid, _) = demo_series(&root.path().join("clear"), 12, false);
    let (first, last) = spread.expect("the script prints the lesion's slices");
    let node = Node::start(NodeOptions { inference: vec![models_dir], ..Default::default() });
    assert!(node.storescu(&lesion).status.success(), "{}", node.log());
    assert!(node.storescu(&clear).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let results = wait_results(&rt, &db, &[deid_uid(&lesion_uid), deid_uid(&clear_uid)], Duration::from_secs(120), &node);
    let positive = &results[0][0];
    assert_eq!((positive.model.as_str(), positive.state.as_str()), ("demo-ct-volume", "triaged"), "{:?}", positive.error);
    let f = &positive.findings[0];
    eprintln!("demo-ct-volume: lesion series {:.4}, clear series {:.4}", f.probability, results[1][0].findings[0].probability);
    assert!(f.positive && positive.priority.is_some_and(|p| p.as_str() != "negative"), "lesion series: p = {}", f.probability);
    assert_eq!(positive.images_inferred, 12);
    assert_eq!((f.cam_rows, f.cam_cols), (16, 16), "the 3D map sampled on the key slice");
    let path = rt.block_on(db.instance_path(f.key_instance_id)).unwrap().unwrap();
    let ipp = attr_text(&node.data_dir().join(path), dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT);
    let z: f64 = ipp.split('\\').nth(2).unwrap().trim().parse().unwrap();
    assert!(z >= first - 1.0 && z <= last + 1.0, "key slice at z {z}, the lesion on slices {first}..{last}");
    let negative = &results[1][0];
    assert_eq!(negative.state.as_str(), "triaged", "{:?}", negative.error);
    assert!(
        !negative.findings[0].positive && negative.priority.map(|p| p.as_str()) == Some("negative"),
        "clear series: p = {}",
        negative.findings[0].probability
    );
}

/// Invariant 0 for the volume kind: the node's volume input (its headers read, the stack
/// ordered along the normal, the grid of the manifest, `inference::volume::read_volume`: the
/// function the study job calls) equals the demonstration model's training pipeline (pydicom,
/// numpy, torch's trilinear interpolate, the brain window: `volume-input`) within 1e-5, on a
/// lesion series of 9 slices (resampled up to 16) and one of 24 (down to 16).
#[test]
fn the_volume_input_matches_the_training_pipeline() {
    let Some(py) = python() else { return };
    use triage_node::inference::package::Manifest;
    use triage_node::inference::volume;
    let manifest = Manifest::load(&repo().join("models/more/demo-ct-volume/model.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for n in [9, 24] {
        let series = dir.path().join(format!("series{n}"));
        let (mut files, _, _) = demo_series(&series, n, true);
        // Arrival order is not position order: the node orders by position along the normal.
        files.reverse();
        let reference = dir.path().join(format!("input{n}.f32"));
        let out = Command::new(&py).arg(repo().join("scripts/train-ct-demo-model.py")).arg("volume-input").arg(&series).arg(&reference).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs: Vec<f32> = std::fs::read(&reference).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let geometries: Vec<volume::Geometry> = files.iter().map(|f| volume::read_header(f).unwrap().1).collect();
        let stack = volume::stack(&geometries, manifest.input.min_slices as usize).unwrap();
        let ordered: Vec<PathBuf> = stack.order.iter().map(|&i| files[i].clone()).collect();
        let size = [manifest.input.depth.unwrap() as usize, manifest.input.size[0] as usize, manifest.input.size[1] as usize];
        let grid = volume::Grid::new(&stack, size, manifest.input.spacing);
        let ours = volume::read_volume(&ordered, grid, &manifest.input.spec("CT"), stack.rows, stack.cols).unwrap();
        assert_eq!((ours.len(), size), (theirs.len(), [16, 128, 128]));
        let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{n} slices: volume input max |diff| against pydicom + torch {max_diff:.2e}");
        assert!(max_diff < 1e-5, "{n} slices: the volume input differs from the training pipeline by {max_diff}");
    }
}

/// The first volume ONNX package: `demo-ct-volume` exported to ONNX (scripts/bench_infer.py
/// onnx: a 5-D input [N, 1, 16, 128, 128], the 3D map [N, 1, 16, 16, 16]) loads beside its
/// TorchScript original, and on the same series (one with a lesion, one without) both give the
/// same probability and the same key slice's map (within 1e-4).
#[test]
fn an_onnx_volume_package_gives_what_its_torchscript_twin_gives() {
    if !peers_ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let Some(models_dir) = demo_volume_models(&root.path().join("models"), true) else { return };
    let (lesion, lesion_uid, _) = demo_series(&root.path().join("lesion"), 12, true);
    let (clear, clear_uid, _) = demo_series(&root.path().join("clear"), 10, false);
    let node = Node::start(NodeOptions { inference: vec![models_dir], ..Default::default() });
    assert!(node.storescu(&lesion).status.success(), "{}", node.log());
    assert!(node.storescu(&clear).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let results = wait_results(&rt, &db, &[deid_uid(&lesion_uid), deid_uid(&clear_uid)], Duration::from_secs(120), &node);
    for (study, name) in results.iter().zip(["lesion", "clear"]) {
        let of = |model: &str| study.iter().find(|r| r.model == model).unwrap_or_else(|| panic!("no {model} result: {study:?}")).clone();
        let (torch, onnx) = (of("demo-ct-volume"), of("demo-ct-volume-onnx"));
        for r in [&torch, &onnx] {
            assert_eq!(r.state.as_str(), "triaged", "{}: {:?}", r.model, r.error);
        }
        let (a, b) = (&torch.findings[0], &onnx.findings[0]);
        let worst = a.cam.iter().zip(&b.cam).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        eprintln!("demo-ct-volume, {name} series: TorchScript {:.6}, ONNX {:.6}, key slice maps within {worst:.1e}", a.probability, b.probability);
        assert!((a.probability - b.probability).abs() < 1e-4, "{name}: TorchScript {} against ONNX {}", a.probability, b.probability);
        assert_eq!(a.key_instance_id, b.key_instance_id, "{name}: the same key slice from both maps");
        assert!(!a.cam.is_empty() && a.cam.len() == b.cam.len() && worst < 1e-4, "{name}: the key slice's maps differ by {worst}");
    }
}
