//! ONNX Runtime through `ort`: the library opened at run time, ONNX models loaded as sessions,
//! and a forward pass from a plain `f32` batch to plain outputs, like `runtime` does for
//! TorchScript.
//!
//! Owns: finding `libonnxruntime` (the configured path, else `ORT_DYLIB_PATH`, else the
//! `onnxruntime/capi/` folder of the venv the node was built against, else the system's search
//! path), opening it once per process and only when a package holds `model.onnx` (a node
//! without one never needs it), the execution provider (CPU by default; CUDA only when
//! configured, refused when the library lacks it), and a model's signature (names, element
//! types, shapes) for `package` to hold against the manifest. Must not: let `ort` types out of
//! `inference`, or run on the async runtime.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::ExecutionProvider as _;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

use super::runtime::Output;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OnnxError {
    #[error("opening the ONNX Runtime library {path} ({source_of_path}): {reason}; set inference.onnxruntime_library or ORT_DYLIB_PATH to libonnxruntime.so (pip install onnxruntime==1.31.1 ships it in onnxruntime/capi/)")]
    Library { path: PathBuf, source_of_path: &'static str, reason: String },
    #[error("inference.onnx_provider {0:?} is not \"cpu\", \"cuda\" or \"cuda:N\"")]
    BadProvider(String),
    #[error("inference.onnx_provider = \"cuda\": the ONNX Runtime library {path} has no CUDA execution provider (the onnxruntime-gpu wheel has one)")]
    NoCuda { path: PathBuf },
    #[error("loading ONNX model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("input of {len} values does not fill a batch of shape {shape:?}")]
    Shape { len: usize, shape: Vec<i64> },
    #[error("ONNX Runtime forward pass failed: {0}")]
    Forward(String),
}

/// Which ONNX Runtime execution provider runs the models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Provider {
    /// ONNX Runtime's own CPU kernels (the default).
    #[default]
    Cpu,
    /// CUDA device N (`cuda` is `cuda:0`); the library must have the CUDA provider.
    Cuda(i32),
}

impl Provider {
    pub fn parse(raw: &str) -> Result<Provider, OnnxError> {
        match raw.trim() {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda(0)),
            other => other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Provider::Cuda).ok_or_else(|| OnnxError::BadProvider(raw.to_string())),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Provider {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Provider::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// What loading ONNX packages takes: the `[inference]` settings that concern ONNX Runtime.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `inference.onnxruntime_library`; `None`: `ORT_DYLIB_PATH`, else the default.
    pub library: Option<PathBuf>,
    pub provider: Provider,
    /// Intra-op threads of each session (0: ONNX Runtime's own choice).
    pub threads: usize,
}

/// The venv's `onnxruntime/capi/` folder next to the `torch` the node was built against
/// (`build.rs`, from `LIBTORCH`), where the pinned wheel puts `libonnxruntime.so.<version>`.
const BUILT_AGAINST: Option<&str> = option_env!("TRIAGE_ONNXRUNTIME_DIR");

/// The library file to open, and why that one: the configured path, else `ORT_DYLIB_PATH`,
/// else the first `libonnxruntime.so*` of the venv's `onnxruntime/capi/` folder, else the
/// bare name for the system's search path.
pub fn library_path(configured: Option<&Path>) -> (PathBuf, &'static str) {
    if let Some(path) = configured.filter(|p| !p.as_os_str().is_empty()) {
        return (path.to_path_buf(), "inference.onnxruntime_library");
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return (PathBuf::from(path), "ORT_DYLIB_PATH");
    }
    if let Some(dir) = BUILT_AGAINST.map(Path::new) {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
            .collect();
        found.sort();
        if let Some(first) = found.into_iter().next() {
            return (first, "the onnxruntime wheel of the build's venv");
        }
        return (dir.join("libonnxruntime.so"), "the onnxruntime wheel of the build's venv");
    }
    (PathBuf::from("libonnxruntime.so"), "the system's library path")
}

/// The process's one ONNX Runtime environment (ort allows one), with the library it opened.
struct Runtime {
    path: PathBuf,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Runtime, OnnxError>> = OnceLock::new();

/// Open the library (once per process: later calls get the first outcome).
fn runtime(options: &Options) -> Result<&'static Runtime, OnnxError> {
    RUNTIME
        .get_or_init(|| {
            let (path, source_of_path) = library_path(options.library.as_deref());
            let path = if path.is_relative() && path.components().count() > 1 { std::env::current_dir().map(|d| d.join(&path)).unwrap_or(path) } else { path };
            let fail = |reason: String| OnnxError::Library { path: path.clone(), source_of_path, reason };
            // ort panics where ONNX Runtime answers with no API (a library too old for it).
            if path.is_absolute() && !path.exists() {
                return Err(fail("no such file".into()));
            }
            let built = std::panic::catch_unwind(|| {
                let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
                builder.with_name("triage-node").with_logger(std::sync::Arc::new(log)).build().map_err(|e| e.to_string())
            });
            let env = built.unwrap_or_else(|_| Err("not a usable ONNX Runtime library".into())).map_err(fail)?;
            Ok(Runtime { path, env })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// ONNX Runtime's warnings and errors in the node's log; its chatter (info, verbose) dropped.
fn log(level: ort::logging::LogLevel, _category: &str, _id: &str, _location: &str, message: &str) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", "{message}"),
        LogLevel::Error | LogLevel::Fatal => tracing::error!(target: "onnxruntime", "{message}"),
        LogLevel::Verbose | LogLevel::Info => {}
    }
}

/// One input or output of a model as it declares it: name, element type (`float32`,
/// `float16`, ...) and shape (-1 for a dimension left free).
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub element: String,
    pub shape: Vec<i64>,
}

/// An ONNX model loaded in a session.
pub struct Model {
    session: Session,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    /// The model takes at most this many images at once (its batch axis is fixed to 1), else any.
    max_batch: Option<usize>,
}

impl Model {
    /// Open the library if this is the first ONNX model, and load `path` with the configured
    /// execution provider.
    pub fn load(path: &Path, options: &Options) -> Result<Model, OnnxError> {
        let rt = runtime(options)?;
        let load = |reason: String| OnnxError::Load { path: path.to_path_buf(), reason };
        if !path.is_file() {
            return Err(load("no such file".into()));
        }
        let mut builder = Session::builder(&rt.env).map_err(|e| load(e.to_string()))?;
        if options.threads > 0 {
            builder = builder.with_intra_threads(options.threads).map_err(|e| load(e.to_string()))?;
        }
        if let Provider::Cuda(device) = options.provider {
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(OnnxError::NoCuda { path: rt.path.clone() });
            }
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().with_device_id(device).build().error_on_failure()])
                .map_err(|e| load(e.to_string()))?;
        }
        let session = builder.commit_from_file(path).map_err(|e| load(first_line(&e.to_string())))?;
        let port = |o: &ort::value::Outlet| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => Port { name: o.name().to_string(), element: element_name(*ty), shape: shape.to_vec() },
            other => Port { name: o.name().to_string(), element: format!("{other:?}"), shape: Vec::new() },
        };
        let inputs: Vec<Port> = session.inputs().iter().map(port).collect();
        let outputs: Vec<Port> = session.outputs().iter().map(port).collect();
        let max_batch = inputs.first().and_then(|i| i.shape.first()).filter(|b| **b == 1).map(|_| 1);
        Ok(Model { session, inputs, outputs, max_batch })
    }

    /// The model's inputs and outputs as it declares them.
    pub fn signature(&self) -> (&[Port], &[Port]) {
        (&self.inputs, &self.outputs)
    }

    /// Run a batch of `shape` from `input` (row-major), given to the model as float32 or, when
    /// its input is float16, rounded to half. Outputs come back as f32, in the model's order.
    /// A model whose batch axis is fixed to 1 runs the images one at a time.
    pub fn forward(&mut self, input: &[f32], shape: &[i64]) -> Result<Vec<Output>, OnnxError> {
        if shape.iter().product::<i64>() != input.len() as i64 || shape.first().is_none_or(|n| *n < 1) {
            return Err(OnnxError::Shape { len: input.len(), shape: shape.to_vec() });
        }
        let step = self.max_batch.unwrap_or(shape[0] as usize);
        let per_image = input.len() / shape[0] as usize;
        let mut merged: Vec<Output> = Vec::new();
        for chunk in input.chunks(step * per_image) {
            let n = (chunk.len() / per_image) as i64;
            let mut one = shape.to_vec();
            one[0] = n;
            let outs = self.run(one, chunk)?;
            if merged.is_empty() {
                merged = outs;
            } else {
                for (m, o) in merged.iter_mut().zip(outs) {
                    m.shape[0] += o.shape.first().copied().unwrap_or(0);
                    m.values.extend(o.values);
                }
            }
        }
        Ok(merged)
    }

    fn run(&mut self, shape: Vec<i64>, input: &[f32]) -> Result<Vec<Output>, OnnxError> {
        let forward = |e: ort::Error| OnnxError::Forward(first_line(&e.to_string()));
        let half = self.inputs.first().is_some_and(|i| i.element == "float16");
        let value: ort::value::DynValue = if half {
            Tensor::from_array((shape.clone(), input.iter().map(|x| half::f16::from_f32(*x)).collect::<Vec<_>>())).map_err(forward)?.into_dyn()
        } else {
            Tensor::from_array((shape, input.to_vec())).map_err(forward)?.into_dyn()
        };
        let names: Vec<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
        let outputs = self.session.run(ort::inputs![value]).map_err(forward)?;
        names
            .iter()
            .map(|name| {
                let v = outputs.get(name).ok_or_else(|| OnnxError::Forward(format!("no output {name:?}")))?;
                if let Ok((shape, values)) = v.try_extract_tensor::<f32>() {
                    return Ok(Output { shape: shape.to_vec(), values: values.to_vec() });
                }
                // A detector's box label indexes may be integers.
                if let Ok((shape, values)) = v.try_extract_tensor::<i64>() {
                    return Ok(Output { shape: shape.to_vec(), values: values.iter().map(|x| *x as f32).collect() });
                }
                if let Ok((shape, values)) = v.try_extract_tensor::<i32>() {
                    return Ok(Output { shape: shape.to_vec(), values: values.iter().map(|x| *x as f32).collect() });
                }
                let (shape, values) = v.try_extract_tensor::<half::f16>().map_err(forward)?;
                Ok(Output { shape: shape.to_vec(), values: values.iter().map(|x| x.to_f32()).collect() })
            })
            .collect()
    }
}

fn element_name(ty: TensorElementType) -> String {
    match ty {
        TensorElementType::Float32 => "float32".into(),
        TensorElementType::Float16 => "float16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// ONNX Runtime's messages can run over several lines; the first says what failed.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse() {
        assert_eq!(Provider::parse("cpu").unwrap(), Provider::Cpu);
        assert_eq!(Provider::parse("cuda").unwrap(), Provider::Cuda(0));
        assert_eq!(Provider::parse("cuda:2").unwrap(), Provider::Cuda(2));
        assert!(Provider::parse("tensorrt").unwrap_err().to_string().contains("\"tensorrt\""));
    }

    #[test]
    fn the_configured_library_comes_first() {
        let (path, why) = library_path(Some(Path::new("/opt/ort/libonnxruntime.so.1.31.1")));
        assert_eq!((path.to_str().unwrap(), why), ("/opt/ort/libonnxruntime.so.1.31.1", "inference.onnxruntime_library"));
        // Unset (or empty): the environment or the wheel, never an empty path.
        assert!(!library_path(Some(Path::new(""))).0.as_os_str().is_empty());
    }
}
