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
        let ours = decode(&file).unwrap().model_inputs(&spec).unwrap();
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
        let ours = decode(&file).unwrap().model_inputs(&spec).unwrap();
        assert_eq!((ours.len(), ours[0].values.len()), (1, theirs.len()));
        let max_diff = ours[0].values.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_diff < 1e-5, "{}: model input differs from the training pipeline by {max_diff}", file.display());
    }
}

/// A manifest of the tiny fixtures with this `[input]` section.
fn manifest_with(dir: &Path, name: &str, input: &str) -> triage_node::inference::package::Manifest {
    let text = format!(
        "name = \"{name}\"\nversion = \"1\"\nintended_use = \"test\"\nlimits = \"test\"\n[routing]\nmodalities = [\"CT\", \"CR\", \"OT\"]\n[input]\n{input}\n\
         [outputs]\nlabels = [\"a\"]\npositive = [0.5]\nurgent = [0.9]\nprobabilities = 0\n[aggregate]\nmethod = \"max\"\n"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    triage_node::inference::package::Manifest::load(&path).unwrap()
}

/// Invariant 0 for every input layout a manifest can declare: NCHW or NHWC, one channel or
/// three (the grey image repeated, a window per channel, the RGB planes of a colour image),
/// 0..1 or 0..255, per-channel mean/std, float32 or float16. The node's input (its values, and
/// the tensor the model receives: an identity TorchScript model hands it back) equals a numpy +
/// torch pipeline's (tests/peers/pydicom_reference.py) within 1e-5, or float16's rounding.
#[test]
fn every_input_layout_matches_a_torch_pipeline() {
    let Some(py) = python() else { return };
    let Some(data) = testdata() else { return };
    let identity = data.join("models/identity.pt");
    if !require("the identity TorchScript model (scripts/setup-test-env.sh)", identity.is_file()) {
        return;
    }
    use triage_node::inference::package::Dtype;
    use triage_node::inference::runtime::{DeviceChoice, Model};
    let dir = tempfile::tempdir().unwrap();
    let rgb_file = dir.path().join("rgb.dcm");
    let out = std::process::Command::new(&py).arg(repo().join("tests/peers/pydicom_reference.py")).arg("rgb-file").arg(&rgb_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imagenet = "mean = [123.675, 116.28, 103.53]\nstd = [58.395, 57.12, 57.375]";
    let three_windows = "window = { CT = [{ center = 40, width = 80 }, { center = 80, width = 200 }, { center = 600, width = 2800 }] }";
    // (name, file, modality, [input] lines, the same as the reference's spec)
    let cases = [
        (
            "ct_windows_nhwc_255",
            ts("ct_explicit_le.dcm"),
            "CT",
            format!("size = [24, 20]\nchannels = 3\nlayout = \"nhwc\"\nrange = \"0..255\"\n{three_windows}\n{imagenet}"),
            serde_json::json!({"size": [24, 20], "channels": 3, "windows": [[40, 80], [80, 200], [600, 2800]], "scale": 255,
                "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "layout": "nhwc"}),
        ),
        (
            "ct_windows_nchw_half",
            ts("ct_explicit_le.dcm"),
            "CT",
            format!("size = [33, 64]\nchannels = 3\ndtype = \"float16\"\n{three_windows}\nmean = [0.1, 0.2, 0.3]\nstd = [0.5, 0.25, 2.0]"),
            serde_json::json!({"size": [33, 64], "channels": 3, "windows": [[40, 80], [80, 200], [600, 2800]],
                "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0], "dtype": "float16"}),
        ),
        (
            "cr_grey_repeated_nhwc_half_255",
            ts("cr_explicit_le.dcm"),
            "CR",
            "size = [40, 30]\nchannels = 3\nlayout = \"nhwc\"\nrange = \"0..255\"\ndtype = \"float16\"\nwindow = { CR = { center = 14000, width = 20000 } }\nmean = 127.5\nstd = 64.0".to_string(),
            serde_json::json!({"size": [40, 30], "channels": 3, "windows": [[14000, 20000]], "scale": 255, "mean": [127.5, 127.5, 127.5],
                "std": [64.0, 64.0, 64.0], "layout": "nhwc", "dtype": "float16"}),
        ),
        (
            "rgb_nchw_unit",
            rgb_file.clone(),
            "OT",
            "size = [32, 48]\nchannels = 3\ncolor = \"rgb\"\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]".to_string(),
            serde_json::json!({"size": [32, 48], "channels": 3, "rgb": true, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
        ),
        (
            "rgb_nhwc_255_half",
            rgb_file.clone(),
            "OT",
            format!("size = [16, 16]\nchannels = 3\ncolor = \"rgb\"\nlayout = \"nhwc\"\nrange = \"0..255\"\ndtype = \"float16\"\n{imagenet}"),
            serde_json::json!({"size": [16, 16], "channels": 3, "rgb": true, "scale": 255, "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375], "layout": "nhwc", "dtype": "float16"}),
        ),
    ];
    let jobs: Vec<serde_json::Value> =
        cases.iter().map(|(name, file, _, _, spec)| serde_json::json!({"file": file, "spec": spec, "out": dir.path().join(format!("{name}.f32"))})).collect();
    let jobs_file = dir.path().join("jobs.json");
    std::fs::write(&jobs_file, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let out = std::process::Command::new(&py).arg(repo().join("tests/peers/pydicom_reference.py")).arg("model-inputs").arg(&jobs_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cpu = DeviceChoice::Cpu.resolve().unwrap();
    for (name, file, modality, input, _) in &cases {
        let manifest = manifest_with(dir.path(), name, input);
        let theirs = read_f32(&dir.path().join(format!("{name}.f32")));
        let ours = decode(file).unwrap().model_inputs(&manifest.input.spec(modality)).unwrap();
        let half = manifest.input.dtype == Dtype::Float16;
        // What the model receives: the identity model returns its input tensor (as float32).
        let model = Model::load(&identity, cpu, false).unwrap().with_half_input(half);
        let shape = manifest.input.shape(1);
        let received = model.forward(&ours[0].values, &shape).unwrap().remove(0);
        assert_eq!(received.shape, shape, "{name}");
        assert_eq!(received.values.len(), theirs.len(), "{name}");
        // Within 1e-5; float16 keeps 11 significant bits, so values a rounding boundary apart
        // may round to neighbouring halves (one unit in the last place: |x| / 1024 at most).
        let tolerance = |x: f32| if half { (x.abs() * 2f32.powi(-10)).max(1e-5) } else { 1e-5 };
        let worst = received.values.iter().zip(&theirs).map(|(a, b)| (a - b).abs() / tolerance(*b)).fold(0.0f32, f32::max);
        assert!(worst <= 1.0, "{name}: the tensor the model receives differs from the training pipeline's by {worst} x the tolerance");
        let exact = received.values.iter().zip(&theirs).filter(|(a, b)| a == b).count();
        if half {
            eprintln!(
                "{name}: shape {shape:?} float16, {exact} of {} values identical to the pipeline's, the others one half-precision step apart",
                theirs.len()
            );
        } else {
            let max_diff = ours[0].values.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            eprintln!("{name}: shape {shape:?} float32, max |diff| {max_diff:.2e}");
        }
    }
}
