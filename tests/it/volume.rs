//! Slab and volume models end to end (`input.kind = "slab" | "volume"`, issue 31): tiny
//! TorchScript models made by the venv's torch (tests/peers/make_tiny_volume_model.py) run on
//! synthetic CT series (tests/peers/make_ct_series.py: 12 slices 2 mm apart, the 4 of highest
//! position bright, Instance Numbers and arrival in the opposite order) pushed by DCMTK
//! storescu. The volume model's "top" output is the mean of the upper half of its input along
//! D: 0.6875 exactly when the slices arrive ordered along the normal and resampled from 12 to 8
//! (trilinear: output slices 5, 6, 7 sample source 7.75, 9.25, 10.75), 0 upside down. The slab
//! model sees the slice above the centre as its third channel. A series with a missing slice
//! gives both models a FAILED result naming the gap.

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
