//! `triage-node model import`: a MONAI bundle in its published layout (configs/metadata.json,
//! models/model.ts, made here by the venv's torch) becomes a draft package the node loads and
//! runs; a folder that is not a bundle, and an existing package, are refused; a bundle the node
//! cannot run yet (3D, segmentation) gets a draft and a plain warning.

use std::path::Path;

use crate::common::*;

/// The node's binary on `args` with `models` as its models folder.
fn node(args: &[&str], models: &Path) -> (bool, String, String) {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .envs(test_keys())
        .env("TRIAGE__STORAGE__DATA_DIR", data.path().join("data"))
        .env("TRIAGE__INFERENCE__MODELS_DIR", models)
        .env("TRIAGE__INFERENCE__DEVICE", "cpu")
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A tiny 2D two-class classifier of 64x64 grey CR (logits), saved by torch as MONAI's bundles
/// save it, with the metadata.json MONAI's bundles carry.
const MAKE_BUNDLE: &str = r#"
import json, os, sys, torch
root = sys.argv[1]
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
torch.manual_seed(0)
os.makedirs(os.path.join(root, "models"))
os.makedirs(os.path.join(root, "configs"))
torch.jit.script(Net().eval()).save(os.path.join(root, "models", "model.ts"))
meta = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.1.0", "changelog": {"0.1.0": "initial"}, "monai_version": "1.3.0",
    "pytorch_version": torch.__version__, "name": "CR pneumothorax classification",
    "task": "Pneumothorax classification", "description": "A tiny test classifier of frontal chest radiographs",
    "authors": "triage-node tests", "copyright": "none", "intended_use": "Test fixture, not for diagnostic purposes",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "CR", "num_channels": 1,
            "spatial_shape": [64, 64], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
            "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "logits", "format": "classification", "num_channels": 2, "spatial_shape": [2],
            "dtype": "float32", "value_range": [], "is_patch_data": False,
            "channel_def": {"0": "background", "1": "pneumothorax"}}}}}
with open(os.path.join(root, "configs", "metadata.json"), "w") as f:
    json.dump(meta, f, indent=4)
"#;

#[test]
fn a_monai_classification_bundle_becomes_a_package_the_node_runs() {
    let (Some(py), Some(data)) = (python(), testdata()) else { return };
    let root = tempfile::tempdir().unwrap();
    let bundle = root.path().join("cr_ptx_classifier");
    // torch.jit.script reads the model's source: the script is a file, not `python -c`.
    let script = root.path().join("make_bundle.py");
    std::fs::write(&script, MAKE_BUNDLE).unwrap();
    let made = std::process::Command::new(py).arg(&script).arg(&bundle).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let models = root.path().join("models");

    let (ok, out, err) = node(&["model", "import", bundle.to_str().unwrap(), "--out", models.to_str().unwrap()], &models);
    assert!(ok, "{out}{err}");
    eprintln!("{out}");
    for said in [
        "as a DRAFT package",
        "demonstration = true until a person edits it",
        "routing.modalities = [\"CR\"]",
        "input.size = [64, 64]",
        "outputs.negative = \"background\"",
        "outputs.activation = \"softmax\"",
        "must be filled in before the package can be loaded:\n  (none)",
        "outputs.positive / outputs.urgent",
        "routing.body_parts",
        "outputs.codes",
        "the node loads this draft as written",
    ] {
        assert!(out.contains(said), "{said:?} not in:\n{out}");
    }
    let dir = models.join("cr_ptx_classifier");
    assert_eq!(std::fs::read(dir.join("model.pt")).unwrap(), std::fs::read(bundle.join("models/model.ts")).unwrap());
    let manifest = std::fs::read_to_string(dir.join("model.toml")).unwrap();
    assert!(manifest.contains("demonstration = true") && manifest.contains("# TODO"), "{manifest}");

    // The node runs the draft as written: a demonstration, the background class no finding,
    // nothing flagged at the placeholder thresholds.
    let cr = data.join("ts/cr_explicit_le.dcm");
    let (ok, out, err) = node(&["infer", cr.to_str().unwrap()], &models);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let result = &line["results"][0];
    assert_eq!((result["model"].as_str(), result["demonstration"].as_bool()), (Some("cr_ptx_classifier"), Some(true)), "{line}");
    let findings = result["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{line}");
    assert_eq!((findings[0]["label"].as_str(), findings[0]["positive"].as_bool()), (Some("pneumothorax"), Some(false)), "{line}");

    // A draft is not served: the node refuses to start on it, saying what to do.
    assert!(manifest.contains("\ndraft = true\n"), "{manifest}");
    let (ok, _, err) = node(&["serve"], &models);
    assert!(!ok && err.contains("is an imported draft") && err.contains("remove `draft = true`"), "{err}");

    // A person fills the thresholds in: the same image is now flagged.
    std::fs::write(dir.join("model.toml"), manifest.replace("positive = [1.0, 1.0]", "positive = [0.0, 0.0]")).unwrap();
    let (ok, out, err) = node(&["infer", cr.to_str().unwrap()], &models);
    assert!(ok, "{err}");
    assert!(out.contains("\"positive\":true"), "{out}");

    // The package is not replaced without --force, and is with it.
    let again = ["model", "import", bundle.to_str().unwrap(), "--out", models.to_str().unwrap()];
    let (ok, _, err) = node(&again, &models);
    assert!(!ok && err.contains("already holds a model package; --force replaces it"), "{err}");
    assert!(std::fs::read_to_string(dir.join("model.toml")).unwrap().contains("positive = [0.0, 0.0]"), "untouched");
    let (ok, out, err) = node(&[&again[..], &["--force", "--name", "cr_ptx_classifier"]].concat(), &models);
    assert!(ok, "{out}{err}");
    assert!(std::fs::read_to_string(dir.join("model.toml")).unwrap().contains("positive = [1.0, 1.0]"));
}

#[test]
fn a_folder_that_is_not_a_bundle_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let bundle = root.path().join("bundle");
    std::fs::create_dir_all(bundle.join("configs")).unwrap();
    let refused = |why: &str| {
        let (ok, out, err) = node(&["model", "import", bundle.to_str().unwrap(), "--out", models.to_str().unwrap()], &models);
        assert!(!ok, "{out}");
        assert!(err.contains("is not a MONAI bundle") && err.contains(why), "{why}: {err}");
        assert!(!models.exists(), "nothing written");
    };
    refused("no configs/metadata.json");
    std::fs::write(bundle.join("configs/metadata.json"), "{\"name\": ").unwrap();
    refused("no models/model.ts");
    std::fs::create_dir_all(bundle.join("models")).unwrap();
    std::fs::write(bundle.join("models/model.ts"), b"not torchscript").unwrap();
    refused("configs/metadata.json is not JSON");
    std::fs::write(bundle.join("configs/metadata.json"), "{\"name\": \"x\"}").unwrap();
    refused("no network_data_format");
    let (ok, _, err) = node(&["model", "import", bundle.to_str().unwrap(), "--out", models.to_str().unwrap(), "--name", "../escape"], &models);
    assert!(!ok && err.contains("--name \"../escape\""), "{err}");
}

#[test]
fn a_volume_segmentation_bundle_gets_a_draft_and_a_plain_warning() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let bundle = root.path().join("spleen_ct_segmentation");
    std::fs::create_dir_all(bundle.join("configs")).unwrap();
    std::fs::create_dir_all(bundle.join("models")).unwrap();
    std::fs::write(bundle.join("models/model.ts"), b"a volume model").unwrap();
    let metadata = serde_json::json!({
        "version": "0.5.9", "name": "Spleen CT segmentation", "authors": ["MONAI team"],
        "description": "A pre-trained model for volumetric (3D) segmentation of the spleen from CT image",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                "spatial_shape": [96, 96, 96], "dtype": "float32", "value_range": [0, 1], "is_patch_data": true}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2, "spatial_shape": [96, 96, 96],
                "dtype": "float32", "value_range": [0, 1], "channel_def": {"0": "background", "1": "spleen"}}}
        }
    });
    std::fs::write(bundle.join("configs/metadata.json"), metadata.to_string()).unwrap();
    let (ok, out, err) = node(&["model", "import", bundle.to_str().unwrap(), "--out", models.to_str().unwrap()], &models);
    assert!(ok, "{out}{err}");
    assert!(out.contains("NOT RUNNABLE HERE: this node runs 2D classifiers today; a 3D input"), "{out}");
    assert!(out.contains("segmentation output") && out.contains("issue-31 work"), "{out}");
    assert!(out.contains("input.window"), "the HU window is a TODO: {out}");
    assert!(out.contains("the node REFUSES this package as written"), "{out}");
    assert!(models.join("spleen_ct_segmentation/model.toml").is_file());
}
