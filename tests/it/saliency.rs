//! A classifier without a class activation map gets the node's own map (`outputs.saliency =
//! "gradient"`): a tiny TorchScript classifier (tests/peers/make_tiny_classifier.py) whose
//! positive label looks only at the top-right 32 x 32 pixels of its 128 x 128 input; the map of
//! that finding, on a 32 x 32 grid, is 1 exactly over those pixels' cells and 0 elsewhere, and
//! the label that is not positive gets no map.

use std::time::Duration;

use crate::common::*;

const CLASSIFIER: &str = r#"
name = "tiny-classifier"
version = "0.1"
intended_use = "Test fixture: a classifier without a class activation map."
limits = "Not a medical device."
[routing]
modalities = ["CR", "DX"]
[input]
size = [128, 128]
channels = 1
[outputs]
labels = ["spot", "other"]
positive = [0.5, 0.5]
urgent = [0.99, 0.99]
probabilities = 0
activation = "sigmoid"
saliency = "gradient"
[aggregate]
method = "max"
"#;

#[test]
fn a_classifier_without_a_cam_gets_a_gradient_map_where_it_looks() {
    if !peers_ready() {
        return;
    }
    let Some((dir, _)) = demo_cases() else { return };
    let models = tempfile::tempdir().unwrap();
    let Some(models_dir) = scripted_package(models.path(), "tiny-classifier", "make_tiny_classifier.py", CLASSIFIER) else { return };
    let node = Node::start(NodeOptions { inference: vec![models_dir], ..Default::default() });
    let file = dir.join("case001.dcm");
    assert!(node.storescu(std::slice::from_ref(&file)).status.success(), "{}", node.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(node.db());
    let results = wait_results(&rt, &db, &[deid_uid(&study_uid_of(&file))], Duration::from_secs(60), &node);
    let r = &results[0][0];
    assert_eq!((r.model.as_str(), r.state.as_str()), ("tiny-classifier", "triaged"), "{r:?}");
    let spot = r.findings.iter().find(|f| f.label == "spot").expect("the spot finding");
    assert!(spot.positive, "{spot:?}");
    assert_eq!((spot.cam_rows, spot.cam_cols), (32, 32));
    // Cells of 4 x 4 input pixels: rows 0..8 and columns 24..32 are the top-right 32 x 32.
    for row in 0..32 {
        for col in 0..32 {
            let v = spot.cam[row * 32 + col];
            let inside = row < 8 && col >= 24;
            assert!(if inside { (v - 1.0).abs() < 1e-5 } else { v == 0.0 }, "cell ({row}, {col}) = {v}");
        }
    }
    if let Some(other) = r.findings.iter().find(|f| f.label == "other") {
        assert!(!other.positive && other.cam.iter().all(|&v| v == 0.0), "{other:?}");
    }
    assert!(node.log().contains("study triaged"), "{}", node.log());
}
