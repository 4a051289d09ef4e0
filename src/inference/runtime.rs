//! libtorch through tch: the device a model runs on and TorchScript models loaded on it.
//!
//! Owns: device choice (`auto`, `cpu`, `cuda:N`), loading a TorchScript file with an error that
//! names the file, and a forward pass from a plain `f32` batch to plain outputs. Must not: let
//! tch types out of `inference`, or run on the async runtime (callers use a dedicated thread).

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("device {0:?} is not `auto`, `cpu` or `cuda:N`")]
    BadDevice(String),
    #[error(
        "inference.device = \"cuda:{index}\" but this machine has {available} CUDA device(s){}; set inference.device = \"auto\" (a CUDA device if there is one, else the CPU) or \"cpu\"",
        if *available > 0 { format!(" (cuda:0 to cuda:{})", available - 1) } else { String::new() }
    )]
    NoCuda { index: usize, available: usize },
    #[error("loading TorchScript model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("input of {len} values does not fill a batch of shape {shape:?}")]
    Shape { len: usize, shape: Vec<i64> },
    #[error("forward pass failed: {0}")]
    Forward(String),
    #[error("model output is not a tensor or a tuple of tensors")]
    Output,
}

/// Where inference runs, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first CUDA device if there is one, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn parse(raw: &str) -> Result<DeviceChoice, RuntimeError> {
        match raw.trim() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            other => other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceChoice::Cuda).ok_or_else(|| RuntimeError::BadDevice(raw.to_string())),
        }
    }

    /// The device this choice means on this machine now.
    pub fn resolve(self) -> Result<Device, RuntimeError> {
        let available = cuda_devices();
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto if available > 0 => Ok(Device::Cuda(0)),
            DeviceChoice::Auto => Ok(Device::Cpu),
            DeviceChoice::Cuda(index) if index < available => Ok(Device::Cuda(index)),
            DeviceChoice::Cuda(index) => Err(RuntimeError::NoCuda { index, available }),
        }
    }

    /// What the node says at start about `device`, this choice resolved: the device and why
    /// (`cpu (auto: no CUDA device)`, `cuda:0 (auto: 2 CUDA devices)`, `cpu (configured)`).
    pub fn describe(self, device: Device) -> String {
        let name = match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        };
        match (self, cuda_devices()) {
            (DeviceChoice::Auto, 0) => format!("{name} (auto: no CUDA device)"),
            (DeviceChoice::Auto, 1) => format!("{name} (auto: 1 CUDA device)"),
            (DeviceChoice::Auto, n) => format!("{name} (auto: {n} CUDA devices)"),
            _ => format!("{name} (configured)"),
        }
    }
}

/// How many CUDA devices libtorch sees on this machine (0 without a driver or a GPU).
pub fn cuda_devices() -> usize {
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

/// Read from the settings as `auto`, `cpu` or `cuda:N`; anything else is refused there, naming
/// the value.
impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DeviceChoice::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Give the calling thread's libtorch `n` intra-op threads (0: one per core but one, at least
/// one: the node preprocesses, receives and writes on the other cores). Measured on the 2-core
/// machine (scripts/bench-infer.sh, the packages loaded on the engine thread): DenseNet-121 at
/// batch 1 runs about 91 ms/image with 1 thread and 62 with 2; at batch 8, 88 and 51 (Python
/// torch, 2 threads: 67, 63).
pub fn set_threads(n: usize) {
    tch::set_num_threads(thread_count(n) as i32);
}

/// `n`, or for 0 one per core but one, at least one (`inference.torch_threads`).
pub fn thread_count(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if n == 0 {
        cores.saturating_sub(1).max(1)
    } else {
        n
    }
}

/// One output of a forward pass: its shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

/// A TorchScript model loaded on a device, in evaluation mode.
pub struct Model {
    module: CModule,
    device: Device,
    half: bool,
    /// The model takes a float16 input tensor (its manifest's `input.dtype`).
    half_input: bool,
}

impl Model {
    /// Load `path` on `device`; with `allow_half` on a CUDA device, the weights are converted to
    /// fp16 and inputs follow (outputs are returned as f32).
    pub fn load(path: &Path, device: Device, allow_half: bool) -> Result<Model, RuntimeError> {
        let load = |reason: String| RuntimeError::Load { path: path.to_path_buf(), reason };
        if !path.is_file() {
            return Err(load("no such file".into()));
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| load(first_line(&e.to_string())))?;
        module.set_eval();
        let half = allow_half && device.is_cuda();
        if half {
            module.to(device, Kind::Half, false);
        }
        Ok(Model { module, device, half, half_input: false })
    }

    /// Give the model its input as float16 (`input.dtype = "float16"`: the values rounded to
    /// the nearest half, as `tensor.half()` does), whatever the device.
    pub fn with_half_input(mut self, half_input: bool) -> Model {
        self.half_input = half_input;
        self
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether it runs in fp16.
    pub fn half(&self) -> bool {
        self.half
    }

    /// Run a batch of `shape` ([N, C, H, W] or [N, H, W, C], as the manifest's layout says; [N,
    /// C, D, H, W] for a volume) from
    /// `input` (its values, row-major). A model returning a tuple (e.g. probabilities and a
    /// class activation map) gives several outputs.
    pub fn forward(&self, input: &[f32], shape: &[i64]) -> Result<Vec<Output>, RuntimeError> {
        if shape.iter().product::<i64>() != input.len() as i64 {
            return Err(RuntimeError::Shape { len: input.len(), shape: shape.to_vec() });
        }
        let _guard = tch::no_grad_guard();
        // One host-to-device copy per batch: `input` is the whole batch, stacked on the CPU by
        // the engine (engine::run_batch), and each output comes back in one copy for the batch,
        // split per image there. Never move images one at a time.
        let mut x = Tensor::from_slice(input).reshape(shape).to_device(self.device);
        if self.half || self.half_input {
            x = x.to_kind(Kind::Half);
        }
        let out = self.module.forward_is(&[IValue::Tensor(x)]).map_err(|e| RuntimeError::Forward(first_line(&e.to_string())))?;
        let tensors = match out {
            IValue::Tensor(t) => vec![t],
            IValue::Tuple(items) | IValue::GenericList(items) => {
                items.into_iter().map(|i| if let IValue::Tensor(t) = i { Ok(t) } else { Err(RuntimeError::Output) }).collect::<Result<_, _>>()?
            }
            _ => return Err(RuntimeError::Output),
        };
        tensors
            .into_iter()
            .map(|t| {
                let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
                let shape = t.size();
                let values = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(|e| RuntimeError::Forward(e.to_string()))?;
                Ok(Output { shape, values })
            })
            .collect()
    }
}

impl Model {
    /// See `Backend::saliency`: one forward pass with the input's gradient kept, then one
    /// backward pass per label (the graph kept between them), in fp32.
    pub fn saliency(
        &self,
        input: &[f32],
        shape: &[i64],
        output: usize,
        labels: &[usize],
        channels_last: bool,
        grid: (i64, i64),
    ) -> Result<Vec<Vec<f32>>, RuntimeError> {
        if shape.iter().product::<i64>() != input.len() as i64 || shape.len() != 4 {
            return Err(RuntimeError::Shape { len: input.len(), shape: shape.to_vec() });
        }
        let x = Tensor::from_slice(input).reshape(shape).to_device(self.device).set_requires_grad(true);
        let out = self.module.forward_is(&[IValue::Tensor(x.shallow_clone())]).map_err(|e| RuntimeError::Forward(first_line(&e.to_string())))?;
        let scores = match out {
            IValue::Tensor(t) if output == 0 => t,
            IValue::Tuple(items) | IValue::GenericList(items) => match items.into_iter().nth(output) {
                Some(IValue::Tensor(t)) => t,
                _ => return Err(RuntimeError::Output),
            },
            _ => return Err(RuntimeError::Output),
        };
        let mut maps = Vec::with_capacity(labels.len());
        for (i, &label) in labels.iter().enumerate() {
            let score = scores.f_select(1, label as i64).map_err(|e| RuntimeError::Forward(e.to_string()))?.sum(Kind::Float);
            let keep = i + 1 < labels.len();
            let grad = Tensor::f_run_backward(&[&score], &[&x], keep, false).map_err(|e| RuntimeError::Forward(first_line(&e.to_string())))?;
            let g = grad.into_iter().next().ok_or(RuntimeError::Output)?.abs().to_kind(Kind::Float);
            // [1, H, W]: the largest over channels.
            let g = if channels_last { g.amax([3], false) } else { g.amax([1], false) };
            let cells = g.unsqueeze(1).adaptive_avg_pool2d([grid.0, grid.1]).flatten(0, -1).to_device(Device::Cpu);
            let mut values = Vec::<f32>::try_from(cells).map_err(|e| RuntimeError::Forward(e.to_string()))?;
            let top = values.iter().copied().fold(0.0f32, f32::max);
            if top > 0.0 {
                values.iter_mut().for_each(|v| *v /= top);
            }
            maps.push(values);
        }
        Ok(maps)
    }
}

/// libtorch errors carry a C++ backtrace after the first line; the first line says what failed.
/// An exception raised inside a TorchScript model says so on its first line and gives its own
/// message (e.g. "RuntimeError: expected ...") after the TorchScript traceback: that line.
fn first_line(text: &str) -> String {
    if text.contains("The following operation failed in the TorchScript interpreter") {
        let raised = text.lines().map(str::trim).rfind(|l| l.split_once(": ").is_some_and(|(kind, _)| kind.ends_with("Error") || kind.ends_with("Exception")));
        if let Some(line) = raised {
            return format!("the model raised {line}");
        }
    }
    text.lines().next().unwrap_or(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(DeviceChoice::parse("auto").unwrap(), DeviceChoice::Auto);
        assert_eq!(DeviceChoice::parse("cuda:1").unwrap(), DeviceChoice::Cuda(1));
        assert!(DeviceChoice::parse("gpu").is_err());
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
        assert_eq!(DeviceChoice::Cpu.describe(Device::Cpu), "cpu (configured)");
    }

    /// Asking for a CUDA device the machine lacks names it, says how many there are and what
    /// to set instead.
    #[test]
    fn a_missing_cuda_device_says_what_to_set_instead() {
        let none = RuntimeError::NoCuda { index: 0, available: 0 }.to_string();
        assert!(none.contains("\"cuda:0\"") && none.contains("has 0 CUDA device(s);") && none.contains("\"auto\"") && none.contains("\"cpu\""), "{none}");
        let two = RuntimeError::NoCuda { index: 2, available: 2 }.to_string();
        assert!(two.contains("\"cuda:2\" but this machine has 2 CUDA device(s) (cuda:0 to cuda:1)"), "{two}");
    }

    #[test]
    fn a_missing_or_broken_model_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pt");
        assert!(Model::load(&missing, Device::Cpu, false).err().unwrap().to_string().contains("none.pt"));
        let broken = dir.path().join("broken.pt");
        std::fs::write(&broken, b"not a TorchScript archive").unwrap();
        let err = Model::load(&broken, Device::Cpu, false).err().unwrap().to_string();
        assert!(err.contains("broken.pt") && !err.contains('\n'), "{err}");
    }
}
