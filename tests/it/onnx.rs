//! ONNX packages through ONNX Runtime (the onnxruntime 1.31.1 wheel's library, opened by ort):
//! an ONNX model and its TorchScript twin (tests/peers/make_tiny_model.py: tiny.onnx exported
//! from tiny.pt's module) give the same outputs through the engine and through `triage-node
//! infer`; a model that disagrees with its manifest, a library that is not there and a provider
//! the library lacks stop the node with a message that names them; a node without ONNX
//! packages never opens the library. The shipped demonstration detector
//! (models/more/demo-nodule-detector) and its TorchScript twin give the same boxes through the node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use triage_node::inference::package::{LoadOptions, Package};
use triage_node::inference::runtime::DeviceChoice;

/// The tiny models folder, if set-up made the ONNX twin.
fn tiny_models() -> Option<PathBuf> {
    let dir = testdata()?.join("models");
    require("the tiny ONNX model (scripts/setup-test-env.sh)", dir.join("tiny.onnx").is_file() && dir.join("tiny.pt").is_file()).then_some(dir)
}

/// Chest CR manifest of the tiny model (8x8, two labels, CAM), named `name`, `extra` appended
/// to [input] and `outputs` to [outputs].
fn manifest(name: &str, input: &str, outputs: &str) -> String {
    format!(
        r#"
name = "{name}"
version = "1.0"
intended_use = "Test fixture: two made-up findings."
limits = "Not a medical device; random weights."
[routing]
modalities = ["CR", "DX"]
[input]
size = [8, 8]
channels = 1
window = {{ CR = "file", DX = "percentile" }}
{input}
[outputs]
labels = ["nodule", "effusion"]
positive = [0.5, 0.5]
urgent = [0.9, 0.95]
probabilities = 0
cam = 1
{outputs}
[aggregate]
method = "max"
"#
    )
}

/// A package `name` under `root` holding the tiny model file `file` (as model.pt or
/// model.onnx) and `manifest`.
fn package(root: &Path, name: &str, file: &str, manifest: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let target = if file.ends_with(".onnx") { "model.onnx" } else { "model.pt" };
    std::fs::copy(tiny_models().unwrap().join(file), dir.join(target)).unwrap();
    std::fs::write(dir.join("model.toml"), manifest).unwrap();
    dir
}

fn cpu() -> LoadOptions {
    LoadOptions::on(DeviceChoice::Cpu.resolve().unwrap())
}

/// The node's binary on `args` with the models of `models`, and `env` set.
fn node(args: &[&str], models: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triage-node"))
        .envs(test_keys())
        .env("TRIAGE__STORAGE__DATA_DIR", data.path().join("data"))
        .env("TRIAGE__DICOM__PORT", "0")
        .env("TRIAGE__HTTP__PORT", "0")
        .env("TRIAGE__INFERENCE__MODELS_DIR", models)
        .env("TRIAGE__INFERENCE__DEVICE", "cpu")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_onnx_package_gives_what_its_torchscript_twin_gives() {
    let Some(_) = tiny_models() else { return };
    let root = tempfile::tempdir().unwrap();
    // The ONNX package names its input and outputs; the activation is applied by the engine
    // after either runtime.
    package(root.path(), "a-torchscript", "tiny.pt", &manifest("a-torchscript", "", "activation = \"softmax\""));
    package(root.path(), "b-onnx", "tiny.onnx", &manifest("b-onnx", "name = \"image\"", "activation = \"softmax\"\nnames = [\"probabilities\", \"cam\"]"));

    // Through the engine: the same images, batched (3 wait together) and alone.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(triage_node::inference::engine::Engine::load(root.path().to_path_buf(), cpu(), 8, 64, 1)).unwrap();
    let images: Vec<Vec<f32>> = (0..3).map(|k| (0..64).map(|i| ((i * 7 + k * 13) % 64) as f32 / 63.0 - 0.25).collect()).collect();
    let run = |model: usize| {
        rt.block_on(async {
            let answers = engine.submit_many(model, images.clone()).await.unwrap();
            let mut outs = Vec::new();
            for a in answers {
                outs.push(a.await.unwrap().unwrap());
            }
            outs.push(engine.infer(model, images[0].clone()).await.unwrap());
            outs
        })
    };
    let (torch, onnx) = (run(0), run(1));
    assert!(torch.iter().take(3).any(|o| o.batch_size == 3), "the three images ran as one batch");
    for (t, o) in torch.iter().zip(&onnx) {
        assert_eq!((o.cam_rows, o.cam_cols, o.cam.len()), (t.cam_rows, t.cam_cols, t.cam.len()));
        assert_eq!((o.cam_rows, o.cam_cols), (8, 8));
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff(&t.probabilities, &o.probabilities) < 1e-4, "{:?} against {:?}", t.probabilities, o.probabilities);
        assert!((o.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5, "softmax applied: {:?}", o.probabilities);
        assert!(diff(&t.cam, &o.cam) < 1e-4, "CAMs differ by {}", diff(&t.cam, &o.cam));
    }
    drop(engine);

    // Through `triage-node infer` on a real chest CR: the same probabilities.
    let cr = testdata().unwrap().join("ts/cr_explicit_le.dcm");
    let (ok, out, err) = node(&["infer", cr.to_str().unwrap()], root.path(), &[]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let results = line["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{line}");
    let probabilities = |r: &serde_json::Value| r["findings"].as_array().unwrap().iter().map(|f| f["probability"].as_f64().unwrap()).collect::<Vec<_>>();
    let (t, o) = (probabilities(&results[0]), probabilities(&results[1]));
    assert_eq!((results[0]["model"].as_str(), results[1]["model"].as_str()), (Some("a-torchscript"), Some("b-onnx")));
    assert_eq!(t.len(), 2);
    assert!(t.iter().zip(&o).all(|(a, b)| (a - b).abs() < 1e-4), "TorchScript {t:?}, ONNX {o:?}");
}

#[test]
fn an_onnx_model_that_disagrees_with_its_manifest_is_refused_naming_both() {
    let Some(_) = tiny_models() else { return };
    let root = tempfile::tempdir().unwrap();
    let refused = |name: &str, input: &str, outputs: &str| {
        let dir = package(root.path(), name, "tiny.onnx", &manifest(name, input, outputs));
        let e = Package::load(&dir, &cpu()).err().unwrap_or_else(|| panic!("{name}: accepted")).to_string();
        assert!(e.contains(&format!("{name}/model.onnx")) && e.contains(&format!("{name}/model.toml")), "{e}");
        e
    };
    let e = refused("input-name", "name = \"pixels\"", "");
    assert!(e.contains("input.name") && e.contains("\"pixels\"") && e.contains("\"image\""), "{e}");
    let e = refused("output-names", "", "names = [\"probs\", \"cam\"]");
    assert!(e.contains("outputs.names") && e.contains("\"probs\"") && e.contains("\"probabilities\""), "{e}");
    let dir = package(root.path(), "size", "tiny.onnx", &manifest("size", "", "").replace("size = [8, 8]", "size = [16, 16]"));
    let e = Package::load(&dir, &cpu()).err().unwrap().to_string();
    assert!(e.contains("input shape") && e.contains("[N, 1, 16, 16]") && e.contains("[N, 1, 8, 8]"), "{e}");
    let e = refused("dtype", "dtype = \"float16\"", "");
    assert!(e.contains("input.dtype") && e.contains("\"float16\"") && e.contains("float32"), "{e}");
    let three = manifest("labels", "", "")
        .replace(r#"["nodule", "effusion"]"#, r#"["a", "b", "c"]"#)
        .replace("[0.5, 0.5]", "[0.5, 0.5, 0.5]")
        .replace("[0.9, 0.95]", "[0.9, 0.9, 0.9]");
    let dir = package(root.path(), "labels", "tiny.onnx", &three);
    let e = Package::load(&dir, &cpu()).err().unwrap().to_string();
    assert!(e.contains("outputs.probabilities") && e.contains("[N, 3]") && e.contains("[N, 2]"), "{e}");
    // A third output the model does not have.
    let dir = package(root.path(), "cam-index", "tiny.onnx", &manifest("cam-index", "", "").replace("cam = 1", "cam = 2"));
    let e = Package::load(&dir, &cpu()).err().unwrap().to_string();
    assert!(e.contains("outputs.cam: the manifest says output 2") && e.contains("[\"probabilities\", \"cam\"]"), "{e}");
}

#[test]
fn the_node_stops_on_an_onnx_package_it_cannot_run_and_names_why() {
    let Some(_) = tiny_models() else { return };
    let root = tempfile::tempdir().unwrap();
    package(root.path(), "tiny", "tiny.onnx", &manifest("tiny", "name = \"pixels\"", ""));
    let (ok, _, err) = node(&["serve"], root.path(), &[]);
    assert!(!ok && err.contains("loading model packages") && err.contains("tiny/model.onnx"), "{err}");
    assert!(err.contains("\"pixels\"") && err.contains("\"image\"") && !err.contains("listening port="), "{err}");

    // No library where the settings say: the path tried, and how to set it.
    let fixed = manifest("tiny", "", "");
    std::fs::write(root.path().join("tiny/model.toml"), &fixed).unwrap();
    let missing = root.path().join("nowhere/libonnxruntime.so.1.31.1");
    let (ok, _, err) = node(&["serve"], root.path(), &[("TRIAGE__INFERENCE__ONNXRUNTIME_LIBRARY", missing.to_str().unwrap())]);
    assert!(!ok && err.contains(missing.to_str().unwrap()) && err.contains("inference.onnxruntime_library"), "{err}");
    let (ok, _, err) = node(&["serve"], root.path(), &[("ORT_DYLIB_PATH", missing.to_str().unwrap())]);
    assert!(!ok && err.contains(missing.to_str().unwrap()) && err.contains("ORT_DYLIB_PATH"), "{err}");

    // The CUDA provider asked of the CPU-only wheel.
    let (ok, _, err) = node(&["serve"], root.path(), &[("TRIAGE__INFERENCE__ONNX_PROVIDER", "cuda")]);
    assert!(!ok && err.contains("no CUDA execution provider"), "{err}");

    // A node without ONNX packages never opens the library, wherever it is said to be.
    let torch = tempfile::tempdir().unwrap();
    package(torch.path(), "tiny", "tiny.pt", &fixed);
    let cr = testdata().unwrap().join("ts/cr_explicit_le.dcm");
    let (ok, out, err) = node(&["infer", cr.to_str().unwrap()], torch.path(), &[("TRIAGE__INFERENCE__ONNXRUNTIME_LIBRARY", missing.to_str().unwrap())]);
    assert!(ok && out.contains("\"tiny\""), "{err}");
}

#[test]
fn the_demo_detector_and_its_torchscript_twin_give_the_same_boxes_through_the_node() {
    if !peers_ready() {
        return;
    }
    let Some(package) = crate::detection::demo_detector() else { return };
    let Some((cases, _)) = demo_cases() else { return };
    let file = cases.join("case000.dcm");
    // The shipped ONNX package, and its twin.pt as model.pt under the same manifest (a
    // TorchScript model has no input or output names: the ONNX-only fields are not checked
    // there), named apart.
    let root = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(package.join("model.toml")).unwrap();
    let named = |name: &str| manifest.replace("name = \"demo-nodule-detector\"", &format!("name = \"{name}\""));
    for (name, from, to) in [("detector-onnx", "model.onnx", "model.onnx"), ("detector-twin", "twin.pt", "model.pt")] {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(package.join(from), dir.join(to)).unwrap();
        std::fs::write(dir.join("model.toml"), named(name)).unwrap();
    }
    let node = Node::start(NodeOptions { inference: vec![format!("models_dir = \"{}\"", root.path().display())], ..Default::default() });
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let uid = deid_uid(&study_uid_of(&file));
    let results = wait_results(&rt, &db, std::slice::from_ref(&uid), Duration::from_secs(60), &node);
    let by_model = |name: &str| results[0].iter().find(|r| r.model == name).unwrap_or_else(|| panic!("no {name} result: {:?}", results[0]));
    let (onnx, twin) = (by_model("detector-onnx"), by_model("detector-twin"));
    let frames = rt.block_on(db.study_frame_outputs(onnx.study_id)).unwrap();
    let frame = |name: &str| frames.iter().find(|f| f.model == name).unwrap_or_else(|| panic!("no {name} frame output"));
    let (fo, ft) = (frame("detector-onnx"), frame("detector-twin"));
    // Every box of the image (score above 0, best first), compared in the model's input pixels.
    let (sx, sy) = (128.0 / fo.source_cols as f32, 128.0 / fo.source_rows as f32);
    let input = |b: &triage_node::db::DetectedBox| [b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy, b.score];
    assert!(!fo.boxes.is_empty() && fo.boxes.len() == ft.boxes.len(), "ONNX {:?}, TorchScript {:?}", fo.boxes, ft.boxes);
    for (a, b) in fo.boxes.iter().zip(&ft.boxes) {
        let diff = input(a).iter().zip(input(b)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "ONNX {a:?}, TorchScript {b:?}: {diff}");
    }
    // The findings: the same probability, the same kept boxes.
    let (a, b) = (&onnx.findings[0], &twin.findings[0]);
    assert!(a.positive && b.positive && (a.probability - b.probability).abs() < 1e-4, "{a:?} against {b:?}");
    assert_eq!(a.boxes.len(), b.boxes.len());
    for (x, y) in a.boxes.iter().zip(&b.boxes) {
        let diff = input(x).iter().zip(input(y)).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "{x:?} against {y:?}");
    }
}
