//! Inference: from a stored, de-identified instance to what a model says about it.
//! `preprocess` (pixels as the model sees them), `package` (model packages and routing),
//! `runtime` (the only code that knows tch), `onnx` (the only code that knows ONNX Runtime),
//! `volume` (a series ordered, checked and resampled for a slab or volume model),
//! `engine` (the thread that owns the models and
//! batches their forward passes), `heatmap` (a class activation map drawn over its image).
//! Must not: leak tensors or decoder types outside this module, or touch the database.

pub mod engine;
pub mod heatmap;
pub mod onnx;
pub mod package;
pub mod preprocess;
pub mod runtime;
pub mod volume;
