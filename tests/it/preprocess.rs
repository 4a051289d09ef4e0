//! Pixel preprocessing against references: every lossless transfer syntax decodes to exactly
//! the pixels of the uncompressed original, lossy ones within a stated tolerance, and the
//! Modality LUT and VOI window agree with pydicom on real CT, CR (MONOCHROME1) and MR files.

use std::path::Path;

use crate::common::*;
use triage_node::inference::preprocess::{apply_window, decode, to_monochrome2};

fn ts(name: &str) -> std::path::PathBuf {
    testdata().unwrap().join("ts").join(name)
}

#[test]
fn lossless_transfer_syntaxes_decode_to_the_original_pixels() {
    if testdata().is_none() {
        return;
    }
    let original = decode(&ts("ct_explicit_le.dcm")).unwrap();
    assert_eq!(original.values.dim(), (1, 512, 512));
    for name in [
        "ct_implicit_le.dcm",
        "ct_explicit_be.dcm",
        "ct_deflated.dcm",
        "ct_j2k_lossless.dcm",
        "ct_jpegls_lossless.dcm",
        "ct_jpeg_lossless_p14.dcm",
        "ct_jpeg_lossless_sv1.dcm",
        "ct_rle.dcm",
    ] {
        let d = decode(&ts(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.values, original.values, "{name} decodes to other pixels than the original");
    }
}

#[test]
fn lossy_transfer_syntaxes_decode_within_tolerance() {
    if testdata().is_none() {
        return;
    }
    let cr = decode(&ts("cr_explicit_le.dcm")).unwrap();
    let range = cr.values.iter().fold(f32::MIN, |a, &b| a.max(b)) - cr.values.iter().fold(f32::MAX, |a, &b| a.min(b));
    for (name, max_mean_abs) in [("cr_j2k_lossy.dcm", 0.01), ("cr_jpegls_near_lossless.dcm", 0.001)] {
        let d = decode(&ts(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.values.dim(), cr.values.dim());
        let mean_abs = (&d.values - &cr.values).mapv(f32::abs).mean().unwrap() / range;
        assert!(mean_abs < max_mean_abs, "{name}: mean |error| {mean_abs:.5} of the range");
        eprintln!("{name}: mean |error| {mean_abs:.2e} of the value range");
    }
    // JPEG Baseline (8-bit) of a 16-bit CT: it decodes; its values are not comparable.
    assert_eq!(decode(&ts("ct_jpeg_baseline.dcm")).unwrap().values.dim(), (1, 512, 512));
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn modality_lut_and_voi_window_match_pydicom() {
    let Some(py) = python() else { return };
    if testdata().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for file in [ts("ct_explicit_le.dcm"), ts("cr_explicit_le.dcm"), testdata().unwrap().join("classes/mr.dcm")] {
        let prefix = dir.path().join(file.file_stem().unwrap());
        let out = std::process::Command::new(&py).arg(repo().join("tests/peers/pydicom_reference.py")).arg(&file).arg(&prefix).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ours = decode(&file).unwrap();
        let reference = read_f32(&prefix.with_extension("modality.f32"));
        assert_eq!(ours.values.len(), reference.len(), "{}", file.display());
        let max_diff = ours.values.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_diff < 1e-2, "{}: Modality LUT differs from pydicom by {max_diff}", file.display());

        // pydicom's windowed output spans its own output range; ours spans [0, 1]. The same
        // linear function means one is an affine map of the other: fit it and check residuals.
        let window = *ours.windows.first().unwrap_or_else(|| panic!("{} declares no window", file.display()));
        let windowed = apply_window(&ours.values, window);
        let theirs = read_f32(&prefix.with_extension("voi.f32"));
        // Least-squares fit theirs = a * ours + b, then the worst residual in our units.
        let n = theirs.len() as f64;
        let (mut sx, mut sy, mut sxx, mut sxy) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in windowed.iter().zip(&theirs) {
            let (x, y) = (f64::from(x), f64::from(y));
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
        }
        let a = (n * sxy - sx * sy) / (n * sxx - sx * sx);
        let b = (sy - a * sx) / n;
        assert!(a > 0.0, "{}: inverse relation to pydicom", file.display());
        let worst = windowed.iter().zip(&theirs).map(|(&x, &y)| ((f64::from(y) - b) / a - f64::from(x)).abs()).fold(0.0, f64::max);
        assert!(worst < 2e-3, "{}: VOI window differs from pydicom by {worst} of the output range", file.display());
        eprintln!("{}: modality LUT max |diff| {max_diff}, VOI window max |diff| {worst:.2e} of the range", file.display());

        // MONOCHROME1 (the CR) is inverted, so bright bone reads bright in every input.
        let mut mono2 = windowed.clone();
        to_monochrome2(&mut mono2, &ours.photometric);
        if ours.photometric == "MONOCHROME1" {
            assert!((mono2[[0, 0, 0]] - (1.0 - windowed[[0, 0, 0]])).abs() < 1e-6);
        } else {
            assert_eq!(mono2, windowed);
        }
    }
}

#[test]
fn multi_frame_enhanced_ct_applies_the_functional_group_rescale() {
    if testdata().is_none() {
        return;
    }
    let d = decode(&testdata().unwrap().join("classes/enhanced_ct.dcm")).unwrap();
    assert_eq!(d.values.dim().0, 2, "both frames decoded");
    // Rescale intercept -1024 (shared functional groups): air reads near -1000 HU, not 0.
    let min = d.values.iter().fold(f32::MAX, |a, &b| a.min(b));
    assert!(min < -900.0, "minimum {min}: the functional-group rescale was not applied");
}

/// The whole model input (Modality LUT, the file's window, MONOCHROME1 inversion, bilinear
/// resize) against the demo model's training pipeline (pydicom + numpy + torch's interpolate),
/// on the real chest CR at full size (1955 x 1841) and demo cases (512 rows): the model
/// sees in the node what it was trained on.
#[test]
fn model_input_matches_the_training_pipeline() {
    let Some(py) = python() else { return };
    let Some((cases, _)) = demo_cases() else { return };
    use triage_node::inference::package::Manifest;
    let manifest = Manifest::load(&repo().join("models/demo-nodule/model.toml")).unwrap();
    let spec = manifest.input.spec("CR");
    let dir = tempfile::tempdir().unwrap();
    for file in [ts("cr_explicit_le.dcm"), cases.join("case000.dcm"), cases.join("case001.dcm")] {
        let reference = dir.path().join("input.f32");
        let out =
            std::process::Command::new(&py).arg(repo().join("scripts/train-demo-model.py")).arg("model-input").arg(&file).arg(&reference).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs = read_f32(&reference);
        let ours = decode(&file).unwrap().model_inputs(&spec);
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].values.len(), theirs.len());
        let max_diff = ours[0].values.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{}: model input max |diff| against pydicom + torch {max_diff:.2e}", file.display());
        assert!(max_diff < 1e-5, "{}: model input differs from the training pipeline by {max_diff}", file.display());
    }
}

/// The CT demonstration model's input (Modality LUT, the brain window of its manifest,
/// bilinear resize) against its training pipeline, on the real head CT slice it was trained
/// from and on a slice of a generated series.
#[test]
fn ct_model_input_matches_its_training_pipeline() {
    let Some(py) = python() else { return };
    use triage_node::inference::package::Manifest;
    let manifest = Manifest::load(&repo().join("models/demo-ct-hyperdense/model.toml")).unwrap();
    let spec = manifest.input.spec("CT");
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("series");
    let script = repo().join("scripts/train-ct-demo-model.py");
    let out = std::process::Command::new(&py).arg(&script).args(["series", series.to_str().unwrap(), "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in [ts("ct_explicit_le.dcm"), series.join("slice001.dcm")] {
        let reference = dir.path().join("input.f32");
        let out = std::process::Command::new(&py).arg(&script).arg("model-input").arg(&file).arg(&reference).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs = read_f32(&reference);
        let ours = decode(&file).unwrap().model_inputs(&spec);
        assert_eq!((ours.len(), ours[0].values.len()), (1, theirs.len()));
        let max_diff = ours[0].values.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_diff < 1e-5, "{}: model input differs from the training pipeline by {max_diff}", file.display());
    }
}
