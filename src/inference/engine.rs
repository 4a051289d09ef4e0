//! The inference engine: one OS thread owns the loaded models of a device and runs their
//! forward passes (TorchScript through libtorch, ONNX through ONNX Runtime: a package's
//! `Backend`), fed by a bounded queue. Requests for the same model that are waiting
//! together are run as one batch (up to `max_batch`), so a burst of CT slices is batched while
//! a lone chest radiograph is not delayed.
//!
//! Owns: the models after start-up, batching, and splitting batch outputs back into one result
//! per image. Must not: run on the async runtime, or touch files or the database.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::package::{Activation, LoadOptions, Manifest, MaskFormat, OutputKind, Outputs, Package};
use super::runtime::Output;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the inference engine has stopped")]
    Stopped,
    #[error("model {model}: input of {got} values, expected {expected}")]
    Input { model: String, got: usize, expected: usize },
    #[error("model {model}: {reason}")]
    Forward { model: String, reason: String },
}

/// What the model said about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOutput {
    /// One probability per label (the manifest's activation applied).
    pub probabilities: Vec<f32>,
    /// The class activation maps, [labels][cam_rows][cam_cols] flattened; empty (0 x 0) for a
    /// model without one.
    pub cam: Vec<f32>,
    pub cam_rows: usize,
    pub cam_cols: usize,
    /// A volume model's map depth ([labels][cam_depth][cam_rows][cam_cols]); 1 for an image's.
    pub cam_depth: usize,
    /// A detector's boxes that score above 0, best first, in the model's input pixels; empty
    /// for a classifier.
    pub boxes: Vec<ModelBox>,
    /// The image's embedding as the model gives it (`outputs.embedding`); empty without one.
    pub embedding: Vec<f32>,
    /// Time waiting in the queue, the batch's forward pass, and the batch size it ran in.
    pub queue_us: u64,
    pub forward_us: u64,
    pub batch_size: usize,
}

/// One box a detector found on one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelBox {
    /// x0, y0, x1, y1 in the model's input pixels ((0, 0) the top left corner of the top left
    /// pixel), ordered so that x0 <= x1 and y0 <= y1.
    pub corners: [f32; 4],
    /// The score, a probability (a manifest declares no activation for a detector).
    pub score: f32,
    /// The label index.
    pub label: usize,
}

/// Image `i` of a batch of `n`: a detector's boxes (scoring above 0, with a label the manifest
/// has, finite corners), best first, and each label's probability: its best box's score, 0
/// without one.
pub fn detections(o: &Outputs, outs: &[Output], n: usize, i: usize) -> Result<(Vec<f32>, Vec<ModelBox>), String> {
    let get = |index: Option<usize>, what: &str| outs.get(index.unwrap_or(usize::MAX)).ok_or(format!("no {what} output"));
    let boxes = get(o.boxes, "boxes")?;
    let scores = get(o.scores, "scores")?;
    let [batch, k, 4] = boxes.shape[..] else { return Err(format!("boxes of shape {:?} for a batch of {n}", boxes.shape)) };
    if batch != n as i64 || scores.shape != [batch, k] {
        return Err(format!("boxes of shape {:?} and scores of shape {:?} for a batch of {n}", boxes.shape, scores.shape));
    }
    let labels = match o.box_labels {
        Some(_) => {
            let l = get(o.box_labels, "box labels")?;
            if l.shape != [batch, k] {
                return Err(format!("box labels of shape {:?} for boxes of shape {:?}", l.shape, boxes.shape));
            }
            Some(l)
        }
        None => None,
    };
    let k = k as usize;
    let only = o.findings().next().map_or(0, |(index, _)| index);
    let mut found = Vec::new();
    for b in 0..k {
        let at = i * k + b;
        let score = scores.values[at];
        let c = &boxes.values[at * 4..at * 4 + 4];
        let label = match labels {
            Some(l) => l.values[at],
            None => only as f32,
        };
        if score.is_nan() || score <= 0.0 || c.iter().any(|v| !v.is_finite()) || label < 0.0 || label as usize >= o.labels.len() || label.fract() != 0.0 {
            continue;
        }
        let corners = [c[0].min(c[2]), c[1].min(c[3]), c[0].max(c[2]), c[1].max(c[3])];
        found.push(ModelBox { corners, score: score.min(1.0), label: label as usize });
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut probabilities = vec![0.0f32; o.labels.len()];
    for b in &found {
        probabilities[b.label] = probabilities[b.label].max(b.score);
    }
    Ok((probabilities, found))
}

/// Image `i` of a batch of `n`: a segmenter's per-pixel class probabilities (the manifest's
/// activation applied: sigmoid per value, softmax over the labels of each pixel),
/// [labels][rows][cols] flattened, with rows and columns, and each label's probability: its
/// mask's maximum.
pub fn segmentation(o: &Outputs, outs: &[Output], n: usize, i: usize) -> Result<(Vec<f32>, Vec<f32>, usize, usize), String> {
    let mask = outs.get(o.mask.unwrap_or(usize::MAX)).ok_or("no mask output")?;
    let labels = o.labels.len();
    if o.mask_format == MaskFormat::Labels {
        return label_map(mask, labels, n, i);
    }
    if mask.shape.len() != 4 || mask.shape[..2] != [n as i64, labels as i64] {
        return Err(format!("mask of shape {:?} for a batch of {n} and {labels} labels", mask.shape));
    }
    let (rows, cols) = (mask.shape[2] as usize, mask.shape[3] as usize);
    let plane = rows * cols;
    let mut values = mask.values[i * labels * plane..(i + 1) * labels * plane].to_vec();
    match o.activation {
        Activation::None => {}
        Activation::Sigmoid => Activation::Sigmoid.apply(&mut values),
        Activation::Softmax => {
            let mut pixel = vec![0.0f32; labels];
            for p in 0..plane {
                pixel.iter_mut().enumerate().for_each(|(c, v)| *v = values[c * plane + p]);
                Activation::Softmax.apply(&mut pixel);
                pixel.iter().enumerate().for_each(|(c, v)| values[c * plane + p] = *v);
            }
        }
    }
    if values.iter().any(|v| !(0.0..=1.0).contains(v)) {
        return Err("mask probabilities outside 0..1 (apply the sigmoid or softmax inside the model, or declare outputs.activation)".into());
    }
    let probabilities = (0..labels).map(|c| values[c * plane..(c + 1) * plane].iter().copied().fold(0.0f32, f32::max)).collect();
    Ok((probabilities, values, rows, cols))
}

/// Each image's embedding of a batch of `n`: the output [N, E] split by rows, every value finite.
pub fn embeddings(e: &Output, n: usize) -> Result<Vec<Vec<f32>>, String> {
    let [batch, d] = e.shape[..] else { return Err(format!("embedding of shape {:?} for a batch of {n}", e.shape)) };
    if batch != n as i64 || d < 1 || e.values.len() != n * d as usize {
        return Err(format!("embedding of shape {:?} for a batch of {n}", e.shape));
    }
    if e.values.iter().any(|v| !v.is_finite()) {
        return Err("embedding values not finite".into());
    }
    Ok(e.values.chunks(d as usize).map(<[f32]>::to_vec).collect())
}

/// Image `i` of a label map [N, 1, h, w] or [N, h, w] (each pixel its label's index) as one-hot
/// probabilities [labels][h][w], and each label's probability (1 where it has a pixel).
fn label_map(mask: &Output, labels: usize, n: usize, i: usize) -> Result<(Vec<f32>, Vec<f32>, usize, usize), String> {
    let s = &mask.shape;
    let fits = s.len() == 3 && s[0] == n as i64 || s.len() == 4 && s[..2] == [n as i64, 1];
    if !fits {
        return Err(format!("label map of shape {s:?} for a batch of {n} (expected [N, 1, h, w] or [N, h, w])"));
    }
    let (rows, cols) = (s[s.len() - 2] as usize, s[s.len() - 1] as usize);
    let plane = rows * cols;
    let mut values = vec![0.0f32; labels * plane];
    for (p, &v) in mask.values[i * plane..(i + 1) * plane].iter().enumerate() {
        let k = v.round();
        if !(0.0..labels as f32).contains(&k) || (v - k).abs() > 1e-3 {
            return Err(format!("label map value {v} is not the index of one of the {labels} labels"));
        }
        values[k as usize * plane + p] = 1.0;
    }
    let probabilities = (0..labels).map(|c| values[c * plane..(c + 1) * plane].iter().copied().fold(0.0f32, f32::max)).collect();
    Ok((probabilities, values, rows, cols))
}

struct Request {
    model: usize,
    input: Vec<f32>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<ImageOutput, EngineError>>,
}

/// A handle on the engine thread; cheap to clone. The thread stops when the last handle is
/// dropped, after finishing what is queued.
#[derive(Clone)]
pub struct Engine {
    /// Requests go in groups: the images one caller queues together reach the engine together.
    tx: mpsc::Sender<Vec<Request>>,
    manifests: std::sync::Arc<Vec<Manifest>>,
    thread: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// The engine's OS thread, to be joined at shutdown once every `Engine` handle is dropped.
pub struct EngineThread(std::thread::JoinHandle<()>);

impl EngineThread {
    /// Wait up to `deadline` for the thread to end (it ends when the last handle is dropped,
    /// after the batch in progress). Returns whether it did.
    pub async fn join(self, deadline: std::time::Duration) -> bool {
        // Joined on a plain thread (not the blocking pool, which the runtime waits for at
        // exit): past the deadline the process ends without waiting for a stuck model.
        let handle = self.0;
        let (done, joined) = oneshot::channel();
        let joiner = std::thread::Builder::new().name("inference-join".into()).spawn(move || {
            let _ = done.send(handle.join().is_ok());
        });
        if joiner.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(deadline, joined).await, Ok(Ok(true)))
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting the inference thread: {0}")]
    Spawn(std::io::Error),
    #[error("loading model packages: {0}")]
    Package(super::package::PackageError),
    #[error("the inference thread ended while loading the model packages")]
    Died,
    #[error("choosing the device: {0}")]
    Device(super::runtime::RuntimeError),
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Spawn(e)
    }
}

impl From<super::package::PackageError> for StartError {
    fn from(e: super::package::PackageError) -> Self {
        StartError::Package(e)
    }
}

impl From<super::runtime::RuntimeError> for StartError {
    fn from(e: super::runtime::RuntimeError) -> Self {
        StartError::Device(e)
    }
}

/// What starting an engine takes: the `[inference]` settings that concern it.
#[derive(Debug, Clone)]
pub struct Options {
    pub models_dir: std::path::PathBuf,
    pub device: super::runtime::DeviceChoice,
    pub max_batch: usize,
    pub queue_depth: usize,
    pub torch_threads: usize,
    /// ONNX packages: where `libonnxruntime` is (`None`: `ORT_DYLIB_PATH`, else the
    /// venv's onnxruntime wheel) and which execution provider runs them.
    pub onnxruntime_library: Option<std::path::PathBuf>,
    pub onnx_provider: super::onnx::Provider,
}

impl Engine {
    /// The device chosen, resolved on this machine, and every package of the models folder
    /// loaded on it: how the node and the offline commands start an engine alike.
    pub async fn from_settings(o: &Options) -> Result<(Engine, tch::Device), StartError> {
        let device = o.device.resolve()?;
        tracing::info!(device = ?device, "inference device: {}", o.device.describe(device));
        // ONNX Runtime's sessions get as many intra-op threads as libtorch.
        let onnx =
            super::onnx::Options { library: o.onnxruntime_library.clone(), provider: o.onnx_provider, threads: super::runtime::thread_count(o.torch_threads) };
        let engine = Engine::load(o.models_dir.clone(), LoadOptions { device, onnx }, o.max_batch, o.queue_depth, o.torch_threads).await?;
        Ok((engine, device))
    }

    /// Start the engine's thread (`inference-<device>`) and load every package of `models_dir`
    /// on it, warm-up passes included, so that every libtorch call runs on that one thread:
    /// a model loaded and warmed up on one thread and run on another ran slower with two
    /// intra-op threads than with one (DenseNet-121 at batch 1 on 2 cores: 112 against 91
    /// ms/image; Python torch does the same when it warms up on its main thread and runs on
    /// another), and as fast as Python when one thread did all of it. `queue` bounds the images
    /// waiting (callers wait when it is full); `max_batch` bounds a batch.
    pub async fn load(
        models_dir: std::path::PathBuf,
        options: LoadOptions,
        max_batch: usize,
        queue: usize,
        torch_threads: usize,
    ) -> Result<Engine, StartError> {
        let (loaded_tx, loaded) = oneshot::channel();
        let (tx, rx) = mpsc::channel(queue.max(1));
        let name = format!("inference-{:?}", options.device).to_lowercase();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            super::runtime::set_threads(torch_threads);
            match super::package::load_all(&models_dir, &options) {
                Ok(packages) => {
                    let manifests: Vec<Manifest> = packages.iter().map(|p| p.manifest.clone()).collect();
                    if loaded_tx.send(Ok(manifests)).is_ok() {
                        run(packages, rx, max_batch.max(1));
                    }
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                }
            }
        })?;
        let manifests = loaded.await.map_err(|_| StartError::Died)??;
        Ok(Engine { tx, manifests: std::sync::Arc::new(manifests), thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))) })
    }

    /// The engine's thread, for the owner to join at shutdown (`None` once taken).
    pub fn take_thread(&self) -> Option<EngineThread> {
        self.thread.lock().unwrap_or_else(|p| p.into_inner()).take().map(EngineThread)
    }

    /// The manifests of the loaded models, indexed as `infer` expects.
    pub fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    /// Run model `model` on one image (channels x rows x cols values, as its manifest says).
    pub async fn infer(&self, model: usize, input: Vec<f32>) -> Result<ImageOutput, EngineError> {
        self.submit(model, input).await?.await.map_err(|_| EngineError::Stopped)?
    }

    /// Queue one image (waiting while the queue is full) and return where its output will come.
    pub async fn submit(&self, model: usize, input: Vec<f32>) -> Result<oneshot::Receiver<Result<ImageOutput, EngineError>>, EngineError> {
        let mut answers = self.submit_many(model, vec![input]).await?;
        Ok(answers.pop().expect("one answer per image"))
    }

    /// Queue several images for one model at once (waiting while the queue is full; the group
    /// takes one place in it) and return where each output will come, in order. They reach the
    /// engine together, so they share a batch (up to `max_batch`): queued one at a time, the
    /// engine could wake for the first and run it alone while the others are still being sent.
    pub async fn submit_many(&self, model: usize, inputs: Vec<Vec<f32>>) -> Result<Vec<oneshot::Receiver<Result<ImageOutput, EngineError>>>, EngineError> {
        let enqueued = Instant::now();
        let (requests, answers): (Vec<_>, Vec<_>) = inputs
            .into_iter()
            .map(|input| {
                let (reply, answer) = oneshot::channel();
                (Request { model, input, enqueued, reply }, answer)
            })
            .unzip();
        if !requests.is_empty() {
            self.tx.send(requests).await.map_err(|_| EngineError::Stopped)?;
        }
        Ok(answers)
    }
}

fn run(mut packages: Vec<Package>, mut rx: mpsc::Receiver<Vec<Request>>, max_batch: usize) {
    let mut held: VecDeque<Request> = VecDeque::new();
    loop {
        if held.is_empty() {
            match rx.blocking_recv() {
                Some(group) => held.extend(group),
                None => return,
            }
        }
        // Whatever else is already waiting, while a batch could still grow.
        while held.len() < max_batch {
            match rx.try_recv() {
                Ok(group) => held.extend(group),
                Err(_) => break,
            }
        }
        let Some(first) = held.pop_front() else { continue };
        // Gather what is already waiting for the same model; others wait for the next batch.
        let mut batch = vec![first];
        let mut i = 0;
        while batch.len() < max_batch && i < held.len() {
            if held[i].model == batch[0].model {
                batch.push(held.remove(i).expect("index in range"));
            } else {
                i += 1;
            }
        }
        match packages.get_mut(batch[0].model) {
            Some(package) => run_batch(package, batch),
            None => {
                for r in batch {
                    let _ = r.reply.send(Err(EngineError::Forward { model: format!("#{}", r.model), reason: "no such model".into() }));
                }
            }
        }
    }
}

/// The largest side of a gradient saliency map, in cells.
const SALIENCY_GRID: i64 = 32;

fn run_batch(package: &mut Package, batch: Vec<Request>) {
    let m = &package.manifest;
    let per_image = m.input.values_per_image();
    let (good, bad): (Vec<Request>, Vec<Request>) = batch.into_iter().partition(|r| r.input.len() == per_image);
    for r in bad {
        let got = r.input.len();
        let _ = r.reply.send(Err(EngineError::Input { model: m.name.clone(), got, expected: per_image }));
    }
    if good.is_empty() {
        return;
    }
    let n = good.len();
    let started = Instant::now();
    // A batch of one (a volume, typically) is given as it came, not copied.
    let mut good = good;
    let input = if n == 1 {
        std::mem::take(&mut good[0].input)
    } else {
        let mut input = Vec::with_capacity(n * per_image);
        for r in &good {
            input.extend_from_slice(&r.input);
        }
        input
    };
    let shape = m.input.shape(n as i64);
    // A panic inside libtorch's or ONNX Runtime's bindings must not end the engine thread
    // (every later request would then wait for nothing): it fails this batch like any forward
    // error.
    let model = &mut package.model;
    let outputs =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.forward(&input, &shape))).unwrap_or_else(|_| Err("the forward pass panicked".into()));
    let forward_us = started.elapsed().as_micros() as u64;
    metrics::histogram!("triage_inference_seconds", "model" => m.name.clone()).record(forward_us as f64 / 1e6);
    metrics::histogram!("triage_inference_batch_size", "model" => m.name.clone()).record(n as f64);
    let split = outputs.as_ref().map_err(String::clone).and_then(|outs| {
        let labels = m.outputs.labels.len();
        // A segmenter's mask is its findings' map.
        if m.outputs.kind == OutputKind::Segmentation {
            return (0..n)
                .map(|i| segmentation(&m.outputs, outs, n, i).map(|(p, mask, rows, cols)| (p, mask, 1, rows, cols, Vec::new())))
                .collect::<Result<Vec<_>, String>>();
        }
        // A model without a class activation map: findings without a map (0 x 0).
        let none = Output { shape: vec![n as i64, labels as i64, 0, 0], values: Vec::new() };
        let cam = match m.outputs.cam {
            Some(i) => outs.get(i).ok_or("no class activation map output")?,
            None => &none,
        };
        // A volume model's map is [N, labels, D', H', W'].
        if !(cam.shape.len() == 4 || cam.shape.len() == 5 && m.input.depth.is_some()) || cam.shape[..2] != [n as i64, labels as i64] {
            return Err(format!("class activation maps of shape {:?} for a batch of {n}", cam.shape));
        }
        let d = cam.shape.len();
        let (cam_depth, cam_rows, cam_cols) = (if d == 5 { cam.shape[2] as usize } else { 1 }, cam.shape[d - 2] as usize, cam.shape[d - 1] as usize);
        let cam_len = labels * cam_depth * cam_rows * cam_cols;
        let cam_of = |i: usize| cam.values[i * cam_len..(i + 1) * cam_len].to_vec();
        if m.outputs.kind == OutputKind::Detection {
            return (0..n)
                .map(|i| detections(&m.outputs, outs, n, i).map(|(p, boxes)| (p, cam_of(i), cam_depth, cam_rows, cam_cols, boxes)))
                .collect::<Result<Vec<_>, String>>();
        }
        let probs = outs.get(m.outputs.probabilities_index()).ok_or("no probabilities output")?;
        if probs.shape != [n as i64, labels as i64] {
            return Err(format!("probabilities of shape {:?} for a batch of {n}", probs.shape));
        }
        (0..n)
            .map(|i| {
                let mut p = probs.values[i * labels..(i + 1) * labels].to_vec();
                m.outputs.activation.apply(&mut p);
                if m.outputs.saliency.is_some() {
                    // The node's own map of each positive label (the others' stay 0).
                    let positive: Vec<usize> =
                        (0..labels).filter(|&j| p[j] >= m.outputs.positive[j] && m.outputs.negative.as_deref() != Some(&m.outputs.labels[j])).collect();
                    if !positive.is_empty() {
                        let shape = m.input.shape(1);
                        let nhwc = m.input.layout == crate::inference::preprocess::Layout::Nhwc;
                        let (h, w) = if nhwc { (shape[1], shape[2]) } else { (shape[2], shape[3]) };
                        let grid = (h.min(SALIENCY_GRID), w.min(SALIENCY_GRID));
                        let one = &input[i * per_image..(i + 1) * per_image];
                        let maps = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            model.saliency(one, &shape, m.outputs.probabilities_index(), &positive, nhwc, grid)
                        }))
                        .unwrap_or_else(|_| Err("the saliency pass panicked".into()))
                        .map_err(|e| format!("saliency: {e}"))?;
                        let cells = (grid.0 * grid.1) as usize;
                        let mut cam = vec![0.0f32; labels * cells];
                        for (j, map) in positive.iter().zip(maps) {
                            cam[j * cells..(j + 1) * cells].copy_from_slice(&map);
                        }
                        return Ok((p, cam, 1, grid.0 as usize, grid.1 as usize, Vec::new()));
                    }
                }
                Ok((p, cam_of(i), cam_depth, cam_rows, cam_cols, Vec::new()))
            })
            .collect::<Result<Vec<_>, String>>()
    });
    let split = split.and_then(|per_image| {
        let embeddings = match (m.outputs.embedding, &outputs) {
            (Some(index), Ok(outs)) => embeddings(outs.get(index).ok_or("no embedding output")?, n)?,
            _ => vec![Vec::new(); n],
        };
        Ok(per_image.into_iter().zip(embeddings).collect::<Vec<_>>())
    });
    match split {
        Ok(per_image) => {
            for (r, ((probabilities, cam, cam_depth, cam_rows, cam_cols, boxes), embedding)) in good.into_iter().zip(per_image) {
                let queue_us = started.duration_since(r.enqueued).as_micros() as u64;
                let _ =
                    r.reply.send(Ok(ImageOutput { probabilities, cam, cam_rows, cam_cols, cam_depth, boxes, embedding, queue_us, forward_us, batch_size: n }));
            }
        }
        Err(reason) => {
            for r in good {
                let _ = r.reply.send(Err(EngineError::Forward { model: m.name.clone(), reason: reason.clone() }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(box_labels: bool, labels: &[&str], activation: &str) -> Outputs {
        let text = format!(
            "kind = \"detection\"\nlabels = {labels:?}\npositive = {p:?}\nurgent = {p:?}\nboxes = 0\nscores = 1\n{}activation = \"{activation}\"",
            if box_labels { "box_labels = 2\n" } else { "" },
            p = vec![0.5; labels.len()],
        );
        config::Config::builder().add_source(config::File::from_str(&text, config::FileFormat::Toml)).build().unwrap().try_deserialize().unwrap()
    }

    /// Padded boxes (score 0 or below), unknown labels and non-finite corners are dropped; the
    /// rest come best first, corners ordered; a label's probability is its best box's score.
    #[test]
    fn detections_keep_real_boxes_and_give_each_label_its_best_score() {
        let o = outputs(true, &["nodule", "mass"], "none");
        // A batch of 2 images, K = 3 boxes each; image 1 is the one read.
        let boxes = Output {
            shape: vec![2, 3, 4],
            values: [[0.0; 4], [0.0; 4], [0.0; 4], [10.0, 20.0, 30.0, 40.0], [50.0, 60.0, 40.0, 50.0], [f32::NAN, 0.0, 1.0, 1.0]].concat(),
        };
        let scores = Output { shape: vec![2, 3], values: vec![0.9, 0.9, 0.9, 0.6, 0.8, 0.99] };
        let labels = Output { shape: vec![2, 3], values: vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0] };
        let (p, found) = detections(&o, &[boxes.clone(), scores.clone(), labels.clone()], 2, 1).unwrap();
        assert_eq!(p, [0.0, 0.8]);
        assert_eq!(
            found,
            [ModelBox { corners: [40.0, 50.0, 50.0, 60.0], score: 0.8, label: 1 }, ModelBox { corners: [10.0, 20.0, 30.0, 40.0], score: 0.6, label: 1 }]
        );
        // Padding: every score 0 or below gives no box and probability 0.
        let padded = Output { shape: vec![2, 3], values: vec![0.0, -1.0, 0.0, 0.0, -1.0, 0.0] };
        assert_eq!(detections(&o, &[boxes.clone(), padded, labels.clone()], 2, 1).unwrap(), (vec![0.0, 0.0], vec![]));
        // A label index the manifest does not have is dropped.
        let wrong = Output { shape: vec![2, 3], values: vec![0.0, 0.0, 0.0, 7.0, 1.0, 0.0] };
        assert_eq!(detections(&o, &[boxes.clone(), scores.clone(), wrong], 2, 1).unwrap().1.len(), 1);
        // Without box labels every box is of the one finding label.
        let one = outputs(false, &["nodule"], "none");
        let (p, found) = detections(&one, &[boxes.clone(), scores.clone()], 2, 1).unwrap();
        assert_eq!((p, found.iter().map(|b| (b.score, b.label)).collect::<Vec<_>>()), (vec![0.8], vec![(0.8, 0), (0.6, 0)]));
        // Shapes that do not fit the batch are refused.
        assert!(detections(&o, &[boxes, Output { shape: vec![2, 4], values: vec![0.0; 8] }, labels], 2, 1).is_err());
    }

    /// A segmenter's mask: the activation per pixel (softmax over the labels of each pixel),
    /// each label's probability its mask's maximum, image `i` of the batch.
    #[test]
    fn a_segmenters_mask_is_activated_per_pixel_and_its_maximum_is_the_probability() {
        let text = "kind = \"segmentation\"\nlabels = [\"background\", \"lesion\"]\nnegative = \"background\"\npositive = [1.0, 0.5]\nurgent = [1.0, 0.9]\nmask = 0\nactivation = \"softmax\"";
        let o: Outputs =
            config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)).build().unwrap().try_deserialize().unwrap();
        // Two images of 1 x 2 pixels; the second's lesion logits 0 and ln 3 over background 0.
        let mask = Output { shape: vec![2, 2, 1, 2], values: vec![9.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3f32.ln()] };
        let (p, values, rows, cols) = segmentation(&o, std::slice::from_ref(&mask), 2, 1).unwrap();
        assert_eq!((rows, cols), (1, 2));
        let want = [0.5, 0.25, 0.5, 0.75];
        assert!(values.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{values:?}");
        assert!((p[1] - 0.75).abs() < 1e-6 && (p[0] - 0.5).abs() < 1e-6, "{p:?}");
        assert!(segmentation(&o, &[mask], 3, 0).is_err(), "a batch of another size");
        let plain = Outputs { activation: Activation::None, ..o };
        assert!(segmentation(&plain, &[Output { shape: vec![1, 2, 1, 1], values: vec![2.0, 0.0] }], 1, 0).is_err(), "not probabilities");
    }
}
