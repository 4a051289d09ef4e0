//! Inference: from stored instances to findings. Today it holds the pixel preprocessing; the
//! TorchScript runtime (tch) arrives with the inference issue and will be the only code in the
//! node that knows tch. Must not: leak tensors or decoder types outside this module.

pub mod preprocess;
