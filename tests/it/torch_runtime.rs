//! The libtorch runtime against PyTorch itself: a TorchScript model made and run by Python
//! torch 2.13.0 (tests/peers/make_tiny_model.py, at set-up) gives the same outputs through tch.

use crate::common::*;
use triage_node::inference::runtime::{DeviceChoice, Model};

/// The folder holding tiny.pt and tiny_expected.json, if set-up made them.
fn tiny_models() -> Option<std::path::PathBuf> {
    let dir = testdata()?.join("models");
    require("the tiny TorchScript model (scripts/setup-test-env.sh)", dir.join("tiny.pt").is_file()).then_some(dir)
}

#[test]
fn torchscript_forward_matches_python_torch() {
    let Some(dir) = tiny_models() else { return };
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tiny_expected.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<f32>>();
    let ints = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect::<Vec<i64>>();
    let shape: [i64; 4] = ints(&expected["input_shape"]).try_into().unwrap();
    let model = Model::load(&dir.join("tiny.pt"), DeviceChoice::Cpu.resolve().unwrap(), false).unwrap();
    let outputs = model.forward(&floats(&expected["input"]), &shape).unwrap();
    let want = expected["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), want.len(), "a (probabilities, CAM) tuple");
    for (got, want) in outputs.iter().zip(want) {
        assert_eq!(got.shape, ints(&want["shape"]));
        let max_diff = got.values.iter().zip(floats(&want["values"])).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-6, "differs from PyTorch by {max_diff}");
    }
    assert!(model.forward(&[0.0; 3], &shape).is_err(), "a short input is refused");
}

const MANIFEST: &str = r#"
name = "tiny"
version = "1.0"
intended_use = "Test fixture: two made-up findings."
limits = "Not a medical device; random weights."
demonstration = true

[routing]
modalities = ["CR", "DX"]
body_parts = ["CHEST"]

[input]
size = [8, 8]
channels = 1
window = { CT = { center = 40, width = 400 }, CR = "file", DX = "percentile" }

[outputs]
labels = ["nodule", "effusion"]
positive = [0.5, 0.5]
urgent = [0.9, 0.95]
probabilities = 0
cam = 1

[aggregate]
method = "mean_top_k"
k = 3
"#;

/// A package folder holding the tiny model and `manifest`.
fn package(root: &std::path::Path, name: &str, manifest: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tiny_models().unwrap().join("tiny.pt"), dir.join("model.pt")).unwrap();
    std::fs::write(dir.join("model.toml"), manifest).unwrap();
    dir
}

#[test]
fn packages_load_warm_up_and_name_what_is_broken() {
    if tiny_models().is_none() {
        return;
    }
    use triage_node::inference::package::{load_all, LoadOptions, Package};
    let root = tempfile::tempdir().unwrap();
    package(root.path(), "a_tiny", MANIFEST);
    let loaded = load_all(root.path(), &LoadOptions::on(tch_cpu())).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].manifest.outputs.labels, ["nodule", "effusion"]);

    let broken = |name: &str, manifest: String| Package::load(&package(root.path(), name, &manifest), &LoadOptions::on(tch_cpu())).err().unwrap().to_string();
    // The model gives 2 probabilities; a manifest promising 3 labels fails the warm-up.
    let e = broken(
        "three",
        MANIFEST.replace(r#"["nodule", "effusion"]"#, r#"["a", "b", "c"]"#).replace("[0.5, 0.5]", "[0.5, 0.5, 0.5]").replace("[0.9, 0.95]", "[0.9, 0.9, 0.9]"),
    );
    assert!(e.contains("three/model.pt") && e.contains("expected [1, 3]"), "{e}");
    let e = broken("thresholds", MANIFEST.replace("urgent = [0.9, 0.95]", "urgent = [0.4, 0.95]"));
    assert!(e.contains("thresholds/model.toml") && e.contains("positive <= urgent"), "{e}");
    let e = broken("typo", MANIFEST.replace("channels = 1", "chanels = 1"));
    assert!(e.contains("typo/model.toml") && e.contains("chanels"), "{e}");
    let e = broken("window", MANIFEST.replace(r#"CR = "file""#, r#"CR = "auto""#));
    assert!(e.contains("window") && e.contains("\"auto\""), "{e}");
}

fn tch_cpu() -> tch::Device {
    DeviceChoice::Cpu.resolve().unwrap()
}

#[test]
fn the_node_refuses_to_start_on_a_broken_package() {
    if tiny_models().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = package(root.path(), "tiny", MANIFEST);
    std::fs::write(dir.join("model.pt"), b"truncated").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .envs(test_keys())
        .env("TRIAGE__STORAGE__DATA_DIR", root.path().join("data"))
        .env("TRIAGE__DICOM__PORT", "0")
        .env("TRIAGE__HTTP__PORT", "0")
        .env("TRIAGE__INFERENCE__MODELS_DIR", root.path())
        .env("TRIAGE__INFERENCE__DEVICE", "cpu")
        .arg("serve")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("loading model packages") && err.contains("tiny/model.pt"), "{err}");
    assert!(!err.contains("listening port="), "{err}");
}

/// `device = "auto"` says at start which device it chose and why.
#[test]
fn auto_device_says_which_device_it_chose_and_why() {
    let node = Node::start(NodeOptions { inference: vec!["device = \"auto\"".into()], ..Default::default() });
    let expected = match triage_node::inference::runtime::cuda_devices() {
        0 => "inference device: cpu (auto: no CUDA device)".to_string(),
        1 => "inference device: cuda:0 (auto: 1 CUDA device)".to_string(),
        n => format!("inference device: cuda:0 (auto: {n} CUDA devices)"),
    };
    assert!(node.log().contains(&expected), "no `{expected}` in the log:\n{}", node.log());
}

/// A CUDA device the machine lacks stops the node at start, saying how many there are and what
/// to set instead (cuda:N where N is the count is never there, GPU or not).
#[test]
fn a_missing_cuda_device_stops_the_node_at_start() {
    let n = triage_node::inference::runtime::cuda_devices();
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .envs(test_keys())
        .env("TRIAGE__STORAGE__DATA_DIR", root.path().join("data"))
        .env("TRIAGE__DICOM__PORT", "0")
        .env("TRIAGE__HTTP__PORT", "0")
        .env("TRIAGE__INFERENCE__MODELS_DIR", root.path().join("no-models"))
        .env("TRIAGE__INFERENCE__DEVICE", format!("cuda:{n}"))
        .arg("serve")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("inference.device = \"cuda:{n}\" but this machine has {n} CUDA device(s)")), "{err}");
    assert!(err.contains("set inference.device = \"auto\"") && err.contains("\"cpu\""), "{err}");
    assert!(!err.contains("listening port="), "{err}");
}

/// `allow_half = true` on the CPU runs the model in fp32 and says so, naming the model.
#[test]
fn half_precision_on_the_cpu_is_ignored_with_a_warning() {
    if tiny_models().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let models = tiny_package(root.path(), &format!("allow_half = true\n{TINY}"));
    let node = Node::start(NodeOptions { inference: vec![models], ..Default::default() });
    let log = node.log();
    assert!(log.contains("model tiny: allow_half = true ignored: half precision (fp16) runs only on a CUDA device; it runs in fp32 on the CPU"), "{log}");
    assert!(log.contains("WARN"), "{log}");
}

/// The demo models on cuda:0 give the CPU's outputs, probabilities and class activation maps,
/// through the engine (one batch of 8): fp32 within 1e-4, fp16 (allow_half) within 1e-2 (a
/// map's tolerance scaled by its largest magnitude). Needs a CUDA device: skipped without one,
/// failed without one under TRIAGE_TEST_CUDA=1 (scripts/gpu-check.sh).
#[test]
fn cuda_outputs_match_the_cpu() {
    use triage_node::inference::engine::Engine;
    use triage_node::inference::package::LoadOptions;
    let required = std::env::var("TRIAGE_TEST_CUDA").as_deref() == Ok("1");
    if triage_node::inference::runtime::cuda_devices() == 0 {
        assert!(!required, "TRIAGE_TEST_CUDA=1 but libtorch sees no CUDA device");
        eprintln!("SKIPPED: no CUDA device");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |dir: &std::path::Path, device: tch::Device| {
        rt.block_on(async {
            let engine = Engine::load(dir.to_path_buf(), LoadOptions::on(device), 8, 64, 0).await.unwrap();
            let mut all = Vec::new();
            for (index, m) in engine.manifests().iter().enumerate() {
                let per = m.input.values_per_image();
                // Smooth images in [0, 1], different per image.
                let inputs: Vec<Vec<f32>> = (0..8).map(|k| (0..per).map(|i| 0.5 + 0.5 * ((i as f32) * 0.013 + k as f32).sin()).collect()).collect();
                for answer in engine.submit_many(index, inputs).await.unwrap() {
                    let o = answer.await.unwrap().unwrap();
                    assert_eq!(o.batch_size, 8, "one batch");
                    all.push((m.name.clone(), o.probabilities, o.cam));
                }
            }
            all
        })
    };
    let root = tempfile::tempdir().unwrap();
    for (name, half) in [("fp32", false), ("fp16", true)] {
        let dir = root.path().join(name);
        for m in ["demo-nodule", "demo-ct-hyperdense"] {
            std::fs::create_dir_all(dir.join(m)).unwrap();
            std::fs::copy(repo().join("models").join(m).join("model.pt"), dir.join(m).join("model.pt")).unwrap();
            let manifest = std::fs::read_to_string(repo().join("models").join(m).join("model.toml")).unwrap();
            std::fs::write(dir.join(m).join("model.toml"), format!("allow_half = {half}\n{manifest}")).unwrap();
        }
        let tol = if half { 1e-2 } else { 1e-4 };
        let (cpu, cuda) = (run(&dir, tch::Device::Cpu), run(&dir, tch::Device::Cuda(0)));
        assert_eq!(cpu.len(), cuda.len());
        for ((model, p_cpu, cam_cpu), (_, p_cuda, cam_cuda)) in cpu.iter().zip(&cuda) {
            let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let p = diff(p_cpu, p_cuda);
            let scale = cam_cpu.iter().map(|v| v.abs()).fold(1f32, f32::max);
            let cam = diff(cam_cpu, cam_cuda) / scale;
            eprintln!("gpu-check {name} {model}: probabilities differ by {p:.2e}, CAM by {cam:.2e} (of its largest magnitude {scale:.3})");
            assert!(
                p <= tol && cam <= tol && cam_cpu.len() == cam_cuda.len(),
                "{name} {model}: cuda:0 differs from the CPU: probabilities {p}, CAM {cam} > {tol}"
            );
        }
    }
}
