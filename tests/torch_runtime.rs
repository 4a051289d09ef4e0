//! The libtorch runtime against PyTorch itself: a TorchScript model made and run by Python
//! torch 2.13.0 (tests/peers/make_tiny_model.py, at set-up) gives the same outputs through tch.

mod common;

use common::*;
use triage_node::inference::runtime::{DeviceChoice, Model};

#[test]
fn torchscript_forward_matches_python_torch() {
    let Some(data) = testdata() else { return };
    let dir = data.join("models");
    if !require("the tiny TorchScript model (scripts/setup-test-env.sh)", dir.join("tiny.pt").is_file()) {
        return;
    }
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tiny_expected.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<f32>>();
    let ints = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect::<Vec<i64>>();
    let shape: [i64; 4] = ints(&expected["input_shape"]).try_into().unwrap();
    let model = Model::load(&dir.join("tiny.pt"), DeviceChoice::Cpu.resolve().unwrap()).unwrap();
    let outputs = model.forward(&floats(&expected["input"]), shape).unwrap();
    let want = expected["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), want.len(), "a (probabilities, CAM) tuple");
    for (got, want) in outputs.iter().zip(want) {
        assert_eq!(got.shape, ints(&want["shape"]));
        let max_diff = got.values.iter().zip(floats(&want["values"])).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-6, "differs from PyTorch by {max_diff}");
    }
    assert!(model.forward(&[0.0; 3], shape).is_err(), "a short input is refused");
}
