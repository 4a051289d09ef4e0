//! Inference: from stored instances to findings. Today it holds the pixel preprocessing and the
//! TorchScript runtime (`runtime`, the only code in the node that knows tch); model packages,
//! the engine thread and findings arrive with the rest of the inference issue.
//! Must not: leak tensors or decoder types outside this module.

pub mod package;
pub mod preprocess;
pub mod runtime;
