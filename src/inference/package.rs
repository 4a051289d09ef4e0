//! Model packages: `models/<name>/model.pt` (TorchScript, through libtorch) or
//! `models/<name>/model.onnx` (ONNX, through ONNX Runtime), and `models/<name>/model.toml` (the
//! manifest: identity, intended use, routing, input, outputs, aggregation).
//!
//! Owns: the manifest's schema and its validation, loading every package of a folder with a
//! warm-up forward pass whose outputs must match the manifest (an ONNX model's declared names,
//! element types and shapes too, before it runs), the `Backend` a package runs on, and errors
//! that name the file and the problem (the node refuses to start on a broken package). Must
//! not: decide which instance goes to which model at run time (the engine will), or log pixel
//! values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::onnx::{self, OnnxError};
use super::preprocess::{self, Color, ImageAttrs, InputSpec, Layout, WindowRule};
use super::runtime::{Model, Output, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("reading {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("{path}: warm-up forward pass: {reason}")]
    WarmUp { path: PathBuf, reason: String },
    #[error("{path} does not match its manifest {manifest}: {reason}")]
    Mismatch { path: PathBuf, manifest: PathBuf, reason: String },
    #[error("{dir}: holds both model.pt and model.onnx; a package holds one model")]
    TwoModels { dir: PathBuf },
}

/// The manifest, `model.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// Shown in every result: what the model is for, and its limits.
    pub intended_use: String,
    pub limits: String,
    /// Who made the model (the SR's Device Observer Manufacturer).
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// A demonstration model, not clinically validated (said in every result).
    #[serde(default)]
    pub demonstration: bool,
    /// Run in half precision (fp16) on a CUDA device. Ignored on the CPU.
    #[serde(default)]
    pub allow_half: bool,
    /// An imported draft nobody has reviewed yet (`triage-node model import` writes it): the
    /// node refuses to serve it (its thresholds and routing are placeholders, and even its
    /// negatives would reorder a worklist); `infer` and `evaluate` run it, to choose them.
    #[serde(default)]
    pub draft: bool,
    /// `live` (the default) or `shadow`: a shadow model runs on the studies it takes like any
    /// other, and its results are stored and compared with those of the live model `shadow_of`
    /// names, but never sent, listed on the worklist, reported or notified.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub shadow_of: Option<String>,
    pub routing: Routing,
    /// Which series of a study the model takes, and which one when several qualify.
    #[serde(default)]
    pub series: Series,
    pub input: Input,
    pub outputs: Outputs,
    pub aggregate: Aggregate,
}

/// Which instances the model accepts; an empty list accepts any value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    pub modalities: Vec<String>,
    #[serde(default)]
    pub body_parts: Vec<String>,
    #[serde(default)]
    pub sop_classes: Vec<String>,
    #[serde(default)]
    pub photometric: Vec<String>,
}

/// Series selection: instance attributes a series must have (each rule empty: any), and the
/// rule that picks one series of a study when several qualify (one result per study and model).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// Every one of these values is in Image Type (e.g. ORIGINAL, PRIMARY, AXIAL).
    #[serde(default)]
    pub image_type_all: Vec<String>,
    /// None of these values is in Image Type (LOCALIZER and the dose screens' types are always
    /// excluded: `NEVER_INFERRED`).
    #[serde(default)]
    pub image_type_none: Vec<String>,
    /// [min, max] Slice Thickness in mm, inclusive; an instance without one does not qualify.
    #[serde(default)]
    pub slice_thickness: Option<[f64; 2]>,
    /// The Convolution Kernel contains one of these (ignoring case), e.g. ["SOFT", "STANDARD", "H30"].
    #[serde(default)]
    pub kernels: Vec<String>,
    /// true: contrast-enhanced only (Contrast/Bolus Agent present); false: without contrast only.
    #[serde(default)]
    pub contrast: Option<bool>,
    /// When several series qualify: "thinnest" (smallest Slice Thickness, then most instances;
    /// the default) or "most_instances".
    #[serde(default)]
    pub pick: Pick,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    #[default]
    Thinnest,
    MostInstances,
}

/// Image Type values whose images no model ever takes: localizers (scouts, topograms) and the
/// screen captures of dose pages.
pub const NEVER_INFERRED: [&str; 5] = ["LOCALIZER", "SCOUT", "SCREEN SAVE", "DOSE_INFO", "DOSE INFO"];

impl Series {
    pub fn accepts(&self, a: &ImageAttrs) -> bool {
        let has = |v: &String| a.image_type.iter().any(|t| t.eq_ignore_ascii_case(v));
        self.image_type_all.iter().all(has)
            && !self.image_type_none.iter().any(has)
            && self.slice_thickness.is_none_or(|[lo, hi]| a.slice_thickness.is_some_and(|t| (lo..=hi).contains(&t)))
            && (self.kernels.is_empty() || self.kernels.iter().any(|k| a.kernel.to_ascii_uppercase().contains(&k.to_ascii_uppercase())))
            && self.contrast.is_none_or(|c| c == a.contrast)
    }
}

impl Manifest {
    /// Whether the model takes an instance: its routing, its series rules, and never a
    /// localizer or a dose screen.
    /// A model that takes RGB takes colour images only (RGB or YBR Photometric Interpretation).
    pub fn takes(&self, a: &ImageAttrs) -> bool {
        let colour = a.photometric.eq_ignore_ascii_case("RGB") || a.photometric.to_ascii_uppercase().starts_with("YBR");
        !a.image_type.iter().any(|t| NEVER_INFERRED.contains(&t.as_str()))
            && self.routing.accepts(a)
            && self.series.accepts(a)
            && (self.input.color == Color::Grey || colour)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawInput")]
pub struct Input {
    /// What one input is: "slice" (one image, the default), "slab" (`slab` adjacent slices of
    /// a series as channels, centred on each slice) or "volume" (the whole series as one
    /// [1, C, D, H, W] tensor, run when the study is ready).
    pub kind: InputKind,
    /// A slab model's number of slices (odd; `channels` equals it).
    pub slab: Option<u32>,
    /// A volume model's depth: `size = [D, H, W]` in the manifest (`size` holds H and W).
    pub depth: Option<u32>,
    /// A volume model's voxel spacing [z, y, x] in mm: the series is resampled (trilinear) to
    /// it, centred, and `size` voxels taken (outside the series: the window's bottom). None:
    /// the whole series is resampled to `size`.
    pub spacing: Option<[f64; 3]>,
    /// A slab or volume model refuses a series of fewer slices.
    pub min_slices: u32,
    /// [height, width] the model takes (a volume's `size = [D, H, W]`: `depth` holds D).
    pub size: [u32; 2],
    pub channels: u32,
    /// Where the channels come from: "grey" (the windowed grey image, repeated, or one window
    /// per channel; the default) or "rgb" (a colour image's RGB planes, value / (2^bits - 1)).
    pub color: Color,
    /// "nchw" ([N, channels, height, width], the default) or "nhwc" (channels last).
    pub layout: Layout,
    /// What white becomes before mean/std: "0..1" (the default) or "0..255".
    pub range: Range,
    /// The input tensor's type: "float32" (the default) or "float16".
    pub dtype: Dtype,
    /// The model's input name (an ONNX model's is checked against it; TorchScript inputs have
    /// no name).
    pub name: Option<String>,
    /// Per modality: `{ center, width }` (CT, in HU after the Modality LUT), or `"file"` (the
    /// file's VOI window, else the percentile window) or `"percentile"`; or a list of those, one
    /// window per channel.
    pub window: std::collections::BTreeMap<String, WindowSetting>,
    /// Percentiles for the percentile window, e.g. [0.5, 99.5].
    pub percentiles: [f32; 2],
    /// After windowing and scaling to `range`: (x - mean) / std; one value for every channel,
    /// or a list with one per channel.
    pub mean: PerChannel,
    pub std: PerChannel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    #[serde(default)]
    kind: InputKind,
    #[serde(default)]
    slab: Option<u32>,
    #[serde(default)]
    spacing: Option<[f64; 3]>,
    #[serde(default = "one_u32")]
    min_slices: u32,
    size: Vec<u32>,
    channels: u32,
    #[serde(default)]
    color: Color,
    #[serde(default)]
    layout: Layout,
    #[serde(default)]
    range: Range,
    #[serde(default)]
    dtype: Dtype,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    window: std::collections::BTreeMap<String, WindowSetting>,
    #[serde(default = "default_percentiles")]
    percentiles: [f32; 2],
    #[serde(default = "zero_each")]
    mean: PerChannel,
    #[serde(default = "one_each")]
    std: PerChannel,
}

impl TryFrom<RawInput> for Input {
    type Error = String;
    fn try_from(r: RawInput) -> Result<Input, String> {
        let (depth, size) = match (r.kind, &r.size[..]) {
            (InputKind::Volume, &[d, h, w]) => (Some(d), [h, w]),
            (InputKind::Volume, _) => return Err(format!("input.size: a volume model (input.kind = \"volume\") takes [D, H, W], not {:?}", r.size)),
            (_, &[h, w]) => (None, [h, w]),
            _ => return Err(format!("input.size: [height, width] (a volume model's [D, H, W]), not {:?}", r.size)),
        };
        Ok(Input {
            kind: r.kind,
            slab: r.slab,
            depth,
            spacing: r.spacing,
            min_slices: r.min_slices,
            size,
            channels: r.channels,
            color: r.color,
            layout: r.layout,
            range: r.range,
            dtype: r.dtype,
            name: r.name,
            window: r.window,
            percentiles: r.percentiles,
            mean: r.mean,
            std: r.std,
        })
    }
}

/// What one input of a model is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum InputKind {
    /// One image (a frame of an instance), run as the instance lands.
    #[default]
    Slice,
    /// `input.slab` adjacent slices of the chosen series as channels, centred on each slice.
    Slab,
    /// The chosen series as one [1, C, D, H, W] tensor.
    Volume,
}

impl InputKind {
    /// The manifest's word for it.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Slice => "slice",
            InputKind::Slab => "slab",
            InputKind::Volume => "volume",
        }
    }
}

impl TryFrom<String> for InputKind {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("slice", InputKind::Slice), ("slab", InputKind::Slab), ("volume", InputKind::Volume)])
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Window {
    Fixed { center: f64, width: f64 },
    Named(String),
}

/// A modality's window: one for the grey image, or one per channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WindowSetting {
    One(Window),
    PerChannel(Vec<Window>),
}

/// One value for every channel, or one per channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerChannel {
    One(f32),
    Each(Vec<f32>),
}

impl PerChannel {
    /// The value of each of `channels` channels.
    pub fn values(&self, channels: usize) -> Vec<f32> {
        match self {
            PerChannel::One(v) => vec![*v; channels],
            PerChannel::Each(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Range {
    #[default]
    Unit,
    Byte,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Dtype {
    #[default]
    Float32,
    Float16,
}

impl TryFrom<String> for Range {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("0..1", Range::Unit), ("0..255", Range::Byte)])
    }
}

impl TryFrom<String> for Dtype {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("float32", Dtype::Float32), ("float16", Dtype::Float16)])
    }
}

impl TryFrom<String> for Activation {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("none", Activation::None), ("sigmoid", Activation::Sigmoid), ("softmax", Activation::Softmax)])
    }
}

/// What the node applies to the model's class output before thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Activation {
    /// The outputs are probabilities already (0..1).
    #[default]
    None,
    /// Independent labels: 1 / (1 + e^-x) each.
    Sigmoid,
    /// Mutually exclusive classes: e^x / sum(e^x) over the labels of an image.
    Softmax,
}

impl Activation {
    /// Apply to one image's outputs (one value per label), in place.
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Sigmoid => values.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            Activation::Softmax => {
                let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = values.iter().map(|x| (x - max).exp()).sum();
                values.iter_mut().for_each(|x| *x = (*x - max).exp() / sum);
            }
        }
    }
}

/// What a model's outputs are: per-label probabilities (a classifier), boxes with scores (a
/// What a segmenter's mask output holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MaskFormat {
    #[default]
    Probabilities,
    Labels,
}

impl TryFrom<String> for MaskFormat {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("probabilities", MaskFormat::Probabilities), ("labels", MaskFormat::Labels)])
    }
}

/// The DICOM Segmentation Type a segmenter's masks are stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SegmentationType {
    Fractional,
    Binary,
}

impl TryFrom<String> for SegmentationType {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("fractional", SegmentationType::Fractional), ("binary", SegmentationType::Binary)])
    }
}

impl Outputs {
    /// The Segmentation Type: as declared, else binary for a label map, fractional otherwise.
    pub fn segmentation_type(&self) -> SegmentationType {
        self.segmentation_type.unwrap_or(match self.mask_format {
            MaskFormat::Labels => SegmentationType::Binary,
            MaskFormat::Probabilities => SegmentationType::Fractional,
        })
    }
}

/// How the node makes a map for a classifier that gives none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Saliency {
    Gradient,
}

impl TryFrom<String> for Saliency {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("gradient", Saliency::Gradient)])
    }
}

/// Whether a model's results count (`live`) or are only compared (`shadow`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Mode {
    #[default]
    Live,
    Shadow,
}

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(&v, &[("live", Mode::Live), ("shadow", Mode::Shadow)])
    }
}

/// detector), or per-pixel class probabilities (a segmenter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum OutputKind {
    #[default]
    Classification,
    Detection,
    Segmentation,
}

impl TryFrom<String> for OutputKind {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        preprocess::one_of(
            &v,
            &[("classification", OutputKind::Classification), ("detection", OutputKind::Detection), ("segmentation", OutputKind::Segmentation)],
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// "classification" (the default: `probabilities`, optionally `cam`) or "detection"
    /// (`boxes` and `scores`, optionally `box_labels`: a label's probability is its best box's
    /// score; scores are probabilities, no activation) or "segmentation" (`mask`: a label's
    /// probability is its mask's maximum).
    #[serde(default)]
    pub kind: OutputKind,
    pub labels: Vec<String>,
    /// Per label: probability at or above which the finding is positive, and urgent. For a
    /// detector, a box scoring at least `positive` is kept on the finding.
    pub positive: Vec<f32>,
    pub urgent: Vec<f32>,
    /// Which element of the model's output tuple holds the per-label probabilities [N, labels]
    /// (or logits, with an activation), and which the class activation maps [N, labels, h, w]
    /// (none: findings without a map). A classifier's; a detector has none.
    #[serde(default)]
    pub probabilities: Option<usize>,
    #[serde(default)]
    pub cam: Option<usize>,
    /// A detector's outputs: boxes [N, K, 4] as x0, y0, x1, y1 in the model's input pixels
    /// (after the resize; (0, 0) the top left corner of the top left pixel), their scores
    /// [N, K] (a padded box scores 0 or below), and optionally each box's label index [N, K]
    /// (without it, every box is of the one finding label).
    #[serde(default)]
    pub boxes: Option<usize>,
    #[serde(default)]
    pub scores: Option<usize>,
    #[serde(default)]
    pub box_labels: Option<usize>,
    /// A segmenter's output: per-pixel class probabilities [N, labels, h, w] at the model's
    /// input size (or logits, with an activation: sigmoid per value, softmax over the labels of
    /// each pixel). The node keeps it as the finding's map (like a class activation map).
    #[serde(default)]
    pub mask: Option<usize>,
    /// What the mask holds: "probabilities" (the default: [N, labels, h, w] per-pixel
    /// probabilities, or logits with an activation) or "labels" (a label map [N, 1, h, w] or
    /// [N, h, w]: each pixel the index of its label, e.g. 0 for "background"; taken as one-hot
    /// probabilities).
    #[serde(default)]
    pub mask_format: MaskFormat,
    /// How the DICOM Segmentation stores the masks: "fractional" (PROBABILITY, 8 bits) or
    /// "binary" (1 bit, inside where the probability is at least 0.5). Default: fractional for
    /// probabilities, binary for a label map.
    #[serde(default)]
    pub segmentation_type: Option<SegmentationType>,
    /// The model's output names, in order (an ONNX model's are checked against them;
    /// TorchScript outputs have no names).
    #[serde(default)]
    pub names: Vec<String>,
    /// Applied by the node to the model's class output: "none" (already probabilities, the
    /// default), "sigmoid" or "softmax".
    #[serde(default)]
    pub activation: Activation,
    /// A label that is never a finding (e.g. "normal" of a softmax classifier): no finding, no
    /// heatmap, never positive.
    #[serde(default)]
    pub negative: Option<String>,
    /// A classifier without a class activation map output: "gradient" makes each positive
    /// finding's map from the gradient of its class output with respect to the input (|d
    /// output / d pixel|, the largest over channels, averaged onto a grid of at most 32 x 32
    /// cells, scaled to 0..1); a TorchScript model only. Costs one backward pass per positive
    /// label of an image. None: findings without a map.
    #[serde(default)]
    pub saliency: Option<Saliency>,
    /// Per label, the finding's code for the SR as "SCHEME:VALUE:Meaning" (for example
    /// "SCT:27925004:Nodule"); without one, a private 99TRIAGE code named after the label.
    #[serde(default)]
    pub codes: Vec<String>,
    /// Which element of the output tuple holds an embedding [N, E] per image (E at most
    /// `EMBEDDING_MAX`; a volume model's [1, E]): kept for the study (the key image's), so that a
    /// reader can see the nearest earlier confirmed cases. Any output kind. None: no embedding.
    #[serde(default)]
    pub embedding: Option<usize>,
}

/// The largest embedding a manifest may declare (values per image).
pub const EMBEDDING_MAX: i64 = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// How slice results become a series result: "max", "mean_top_k" (the mean of the k
    /// highest), or "adjacent" (a volume: the best minimum over k consecutive slices in
    /// position order, so a finding needs support on k adjacent slices; the key slice is the
    /// strongest of that run).
    pub method: String,
    #[serde(default = "one_usize")]
    pub k: usize,
}

impl Outputs {
    /// The output index of a classifier's probabilities (0 for a detector, which has none:
    /// `validate` holds a classifier to declaring it).
    pub fn probabilities_index(&self) -> usize {
        self.probabilities.unwrap_or(0)
    }

    /// Every output index the manifest names, with its field.
    pub fn indexes(&self) -> Vec<(&'static str, usize)> {
        [
            ("outputs.probabilities", self.probabilities),
            ("outputs.cam", self.cam),
            ("outputs.boxes", self.boxes),
            ("outputs.scores", self.scores),
            ("outputs.box_labels", self.box_labels),
            ("outputs.mask", self.mask),
            ("outputs.embedding", self.embedding),
        ]
        .into_iter()
        .filter_map(|(f, i)| Some((f, i?)))
        .collect()
    }

    /// The labels that are findings (every label but the negative class), with their index.
    pub fn findings(&self) -> impl Iterator<Item = (usize, &String)> {
        self.labels.iter().enumerate().filter(move |(_, l)| self.negative.as_ref() != Some(*l))
    }
}

impl Routing {
    /// Whether the model takes an instance with these attributes (comparisons ignore case).
    pub fn accepts(&self, a: &ImageAttrs) -> bool {
        let ok = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v.eq_ignore_ascii_case(value));
        ok(&self.modalities, &a.modality)
            && ok(&self.body_parts, &a.body_part)
            && ok(&self.sop_classes, &a.sop_class_uid)
            && ok(&self.photometric, &a.photometric)
    }
}

impl Input {
    /// The preprocessing for an instance of `modality`: the manifest's window for it (a fixed
    /// window, `"file"` or `"percentile"`), else the file's window, else the percentile window.
    pub fn spec(&self, modality: &str) -> InputSpec {
        let percentiles = [f64::from(self.percentiles[0]), f64::from(self.percentiles[1])];
        let rule = |w: Option<&Window>| match w {
            Some(Window::Fixed { center, width }) => WindowRule::Fixed(preprocess::Window { center: *center, width: *width }),
            Some(Window::Named(n)) if n == "percentile" => WindowRule::Percentile(percentiles),
            _ => WindowRule::File { percentiles },
        };
        let (window, channel_windows) = match self.window.iter().find(|(m, _)| m.eq_ignore_ascii_case(modality)).map(|(_, w)| w) {
            Some(WindowSetting::PerChannel(ws)) => (rule(ws.first()), ws.iter().map(|w| rule(Some(w))).collect()),
            Some(WindowSetting::One(w)) => (rule(Some(w)), Vec::new()),
            None => (rule(None), Vec::new()),
        };
        let channels = self.channels as usize;
        InputSpec {
            rows: self.size[0] as usize,
            cols: self.size[1] as usize,
            channels,
            window,
            channel_windows,
            color: self.color,
            layout: self.layout,
            scale: match self.range {
                Range::Unit => 1.0,
                Range::Byte => 255.0,
            },
            mean: self.mean.values(channels),
            std: self.std.values(channels),
        }
    }

    /// The shape of a batch of `n` inputs, in the manifest's layout ([N, C, D, H, W] for a
    /// volume).
    pub fn shape(&self, n: i64) -> Vec<i64> {
        let (c, h, w) = (i64::from(self.channels), i64::from(self.size[0]), i64::from(self.size[1]));
        match (self.depth, self.layout) {
            (Some(d), _) => vec![n, c, i64::from(d), h, w],
            (None, Layout::Nchw) => vec![n, c, h, w],
            (None, Layout::Nhwc) => vec![n, h, w, c],
        }
    }

    /// The number of values of one input (one image, slab or volume).
    pub fn values_per_image(&self) -> usize {
        (self.channels * self.depth.unwrap_or(1) * self.size[0] * self.size[1]) as usize
    }
}

fn default_percentiles() -> [f32; 2] {
    [0.5, 99.5]
}
fn zero_each() -> PerChannel {
    PerChannel::One(0.0)
}
fn one_each() -> PerChannel {
    PerChannel::One(1.0)
}
fn one_usize() -> usize {
    1
}
fn one_u32() -> u32 {
    1
}

/// A package loaded, validated and warmed up.
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub model: Backend,
}

/// The runtime a package's model runs on: libtorch (`model.pt`) or ONNX Runtime
/// (`model.onnx`). The engine drives both the same way: a plain `f32` batch in, plain outputs
/// back, the manifest's activation applied after.
pub enum Backend {
    Torch(Model),
    Onnx(onnx::Model),
}

impl Backend {
    /// Run a batch of `shape` (the manifest's layout) from `input`, row-major.
    pub fn forward(&mut self, input: &[f32], shape: &[i64]) -> Result<Vec<Output>, String> {
        match self {
            Backend::Torch(m) => m.forward(input, shape).map_err(|e| e.to_string()),
            Backend::Onnx(m) => m.forward(input, shape).map_err(|e| e.to_string()),
        }
    }

    /// Per label of `labels`, the gradient saliency of one image (`input`, of `shape` [1, ...])
    /// on a `grid`: |d output[label] / d input|, the largest over channels, averaged per cell,
    /// scaled so the largest cell is 1 (all 0 where the gradient is 0). TorchScript only.
    pub fn saliency(
        &mut self,
        input: &[f32],
        shape: &[i64],
        output: usize,
        labels: &[usize],
        channels_last: bool,
        grid: (i64, i64),
    ) -> Result<Vec<Vec<f32>>, String> {
        match self {
            Backend::Torch(m) => m.saliency(input, shape, output, labels, channels_last, grid).map_err(|e| e.to_string()),
            Backend::Onnx(_) => Err("saliency needs a TorchScript model".into()),
        }
    }

    /// `torchscript` or `onnx`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Torch(_) => "torchscript",
            Backend::Onnx(_) => "onnx",
        }
    }
}

/// What loading packages takes: the device of TorchScript models, ONNX Runtime's options.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: tch::Device,
    pub onnx: onnx::Options,
}

impl LoadOptions {
    /// On `device`, ONNX packages on ONNX Runtime's CPU provider with its library found the
    /// default way.
    pub fn on(device: tch::Device) -> LoadOptions {
        LoadOptions { device, onnx: onnx::Options::default() }
    }
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, PackageError> {
        let text = std::fs::read_to_string(path).map_err(|source| PackageError::Read { path: path.to_path_buf(), cause: source })?;
        let bad = |reason: String| PackageError::Manifest { path: path.to_path_buf(), reason };
        let manifest: Manifest = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| bad(e.to_string()))?;
        manifest.validate().map_err(bad)?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        let o = &self.outputs;
        if self.name.trim().is_empty() || self.version.trim().is_empty() {
            return Err("name and version must not be empty".into());
        }
        if self.intended_use.trim().is_empty() || self.limits.trim().is_empty() {
            return Err("intended_use and limits must say what the model is for and where it fails".into());
        }
        if o.saliency.is_some() && (o.kind != OutputKind::Classification || o.cam.is_some()) {
            return Err("outputs.saliency is for a classifier without a class activation map (outputs.cam)".into());
        }
        match (self.mode, self.shadow_of.as_deref().map(str::trim)) {
            (Mode::Shadow, None | Some("")) => return Err("mode = \"shadow\" needs shadow_of: the name of the live model it is compared with".into()),
            (Mode::Shadow, Some(live)) if live == self.name => return Err("shadow_of must name another model than this one".into()),
            (Mode::Live, Some(_)) => return Err("shadow_of is only for mode = \"shadow\"".into()),
            _ => {}
        }
        if o.labels.is_empty() {
            return Err("outputs.labels must name at least one finding".into());
        }
        if o.positive.len() != o.labels.len() || o.urgent.len() != o.labels.len() {
            return Err(format!("outputs.positive and outputs.urgent need one threshold per label ({})", o.labels.len()));
        }
        for (i, (p, u)) in o.positive.iter().zip(&o.urgent).enumerate() {
            if !(0.0..=1.0).contains(p) || !(0.0..=1.0).contains(u) || p > u {
                return Err(format!("label {:?}: thresholds must satisfy 0 <= positive <= urgent <= 1", o.labels[i]));
            }
        }
        if !o.codes.is_empty() && o.codes.len() != o.labels.len() {
            return Err(format!("outputs.codes needs one code per label ({}) or none", o.labels.len()));
        }
        for c in &o.codes {
            let parts: Vec<&str> = c.splitn(3, ':').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.trim().is_empty()) || parts[0].len() > 16 || parts[1].len() > 16 || parts[2].len() > 64 {
                return Err(format!("outputs.codes: {c:?} is not \"SCHEME:VALUE:Meaning\" (scheme and value at most 16 characters, meaning 64; for example \"SCT:27925004:Nodule\")"));
            }
        }
        validate_kind(o)?;
        let indexes = o.indexes();
        if let Some((field, index)) = indexes.iter().find(|(_, i)| !o.names.is_empty() && o.names.len() <= *i) {
            return Err(format!("outputs.names: {} name(s) but {field} = {index}", o.names.len()));
        }
        for (a, (fa, ia)) in indexes.iter().enumerate() {
            if let Some((fb, _)) = indexes[a + 1..].iter().find(|(_, ib)| ib == ia) {
                return Err(format!("{fa} and {fb} must be different outputs"));
            }
        }
        if let Some(negative) = &o.negative {
            if !o.labels.contains(negative) {
                return Err(format!("outputs.negative: {negative:?} is not one of outputs.labels {:?}", o.labels));
            }
            if o.labels.len() < 2 {
                return Err("outputs.negative needs at least one other label: a model must be able to report a finding".into());
            }
        }
        if o.activation == Activation::Softmax && o.labels.len() < 2 {
            return Err("outputs.activation = \"softmax\" needs at least two labels (one class gives 1 always; use \"sigmoid\")".into());
        }
        let i = &self.input;
        validate_input_kind(i)?;
        if i.kind == InputKind::Volume && o.kind != OutputKind::Classification {
            return Err(
                "input.kind = \"volume\": outputs.kind must be \"classification\" (probabilities for the study, an optional 3D map as outputs.cam)".into()
            );
        }
        if i.size[0] == 0 || i.size[1] == 0 || i.depth == Some(0) || !(i.channels == 1 || i.channels == 3 || i.kind == InputKind::Slab) {
            return Err("input.size must be above zero and input.channels 1 or 3".into());
        }
        if i.color == Color::Rgb && i.channels != 3 {
            return Err("input.color = \"rgb\" needs input.channels = 3".into());
        }
        for (field, v) in [("mean", &i.mean), ("std", &i.std)] {
            if let PerChannel::Each(list) = v {
                if list.len() != i.channels as usize {
                    return Err(format!("input.{field}: {} values for {} channel(s); give one number, or one per channel", list.len(), i.channels));
                }
            }
            if v.values(i.channels as usize).iter().any(|x| !x.is_finite()) {
                return Err(format!("input.{field} must be finite"));
            }
        }
        if i.std.values(i.channels as usize).iter().any(|s| *s <= 0.0) {
            return Err("input.std must be above zero".into());
        }
        if !(0.0..100.0).contains(&i.percentiles[0]) || i.percentiles[0] >= i.percentiles[1] || i.percentiles[1] > 100.0 {
            return Err("input.percentiles must be increasing within 0..100".into());
        }
        for (modality, setting) in &i.window {
            let list = match setting {
                WindowSetting::One(w) => std::slice::from_ref(w),
                WindowSetting::PerChannel(ws) => {
                    if ws.len() != i.channels as usize {
                        return Err(format!(
                            "input.window.{modality}: {} windows for {} channel(s); give one window, or one per channel",
                            ws.len(),
                            i.channels
                        ));
                    }
                    if i.color == Color::Rgb {
                        return Err(format!("input.window.{modality}: a window per channel is for grey images; input.color = \"rgb\" takes no window"));
                    }
                    ws.as_slice()
                }
            };
            for w in list {
                match w {
                    Window::Fixed { width, .. } if *width < 1.0 => return Err(format!("input.window.{modality}: width must be at least 1")),
                    Window::Named(n) if n != "file" && n != "percentile" => {
                        return Err(format!("input.window.{modality}: {n:?} is not {{ center, width }}, \"file\" or \"percentile\""))
                    }
                    _ => {}
                }
            }
        }
        match self.aggregate.method.as_str() {
            "max" => {}
            "mean_top_k" | "adjacent" if self.aggregate.k >= 1 => {}
            other => return Err(format!("aggregate.method {other:?} is not \"max\", \"mean_top_k\" or \"adjacent\" (with k >= 1)")),
        }
        if self.routing.modalities.is_empty() {
            return Err("routing.modalities must list the modalities the model was trained on".into());
        }
        Ok(())
    }
}

/// What each input kind needs: a slab model an odd `input.slab` equal to `input.channels`,
/// grey images in NCHW; a volume model `input.size = [D, H, W]`, NCHW (read NCDHW), grey, a
/// classifier (its map, `outputs.cam`, [1, labels, D', H', W']); `input.spacing` only for a
/// volume; `input.min_slices` at least 1.
fn validate_input_kind(i: &Input) -> Result<(), String> {
    if i.min_slices == 0 {
        return Err("input.min_slices must be at least 1".into());
    }
    match i.kind {
        InputKind::Slice => {
            if i.slab.is_some() || i.spacing.is_some() || i.min_slices != 1 {
                return Err("input.slab, input.spacing and input.min_slices are for input.kind = \"slab\" or \"volume\"".into());
            }
        }
        InputKind::Slab => {
            let Some(k) = i.slab else { return Err("input.kind = \"slab\" needs input.slab (the odd number of adjacent slices)".into()) };
            if k == 0 || k % 2 == 0 || k != i.channels {
                return Err(format!("input.slab = {k}: must be odd and equal input.channels ({}): the slices are the channels", i.channels));
            }
            if i.spacing.is_some() {
                return Err("input.spacing is for input.kind = \"volume\"".into());
            }
        }
        InputKind::Volume => {
            if i.slab.is_some() {
                return Err("input.slab is for input.kind = \"slab\"".into());
            }
            if let Some(sp) = i.spacing {
                if sp.iter().any(|v| !v.is_finite() || *v <= 0.0) {
                    return Err(format!("input.spacing: [z, y, x] in mm, each above zero, not {sp:?}"));
                }
            }
        }
    }
    if i.kind != InputKind::Slice && (i.layout != Layout::Nchw || i.color != Color::Grey) {
        return Err(format!("input.kind = {:?}: takes grey images in input.layout = \"nchw\"", i.kind.name()));
    }
    Ok(())
}

/// The fields each output kind needs and refuses: a classifier names `probabilities` and no
/// box output; a detector names `boxes` and `scores` (and `box_labels` where it has several
/// finding labels), no `probabilities`, and no softmax (its scores are independent).
fn validate_kind(o: &Outputs) -> Result<(), String> {
    match o.kind {
        OutputKind::Classification => {
            if o.probabilities.is_none() {
                return Err(
                    "outputs.probabilities: a classifier (outputs.kind = \"classification\", the default) needs the index of its probabilities output".into()
                );
            }
            if let Some((field, _)) =
                [("outputs.boxes", o.boxes), ("outputs.scores", o.scores), ("outputs.box_labels", o.box_labels)].iter().find(|(_, i)| i.is_some())
            {
                return Err(format!("{field} is a detector's output: declare outputs.kind = \"detection\""));
            }
            if o.mask.is_some() || o.mask_format != MaskFormat::Probabilities || o.segmentation_type.is_some() {
                return Err("outputs.mask is a segmenter's output: declare outputs.kind = \"segmentation\"".into());
            }
        }
        OutputKind::Detection => {
            if o.boxes.is_none() || o.scores.is_none() {
                return Err("outputs.kind = \"detection\" needs outputs.boxes ([N, K, 4] boxes) and outputs.scores ([N, K] scores)".into());
            }
            if o.probabilities.is_some() {
                return Err("outputs.probabilities: a detector has none (a label's probability is its best box's score); remove it".into());
            }
            if o.activation != Activation::None {
                return Err("outputs.activation: a detector's scores are probabilities as the model gives them (a padded box scores 0 or below); apply the sigmoid inside the model".into());
            }
            if o.box_labels.is_none() && o.findings().count() != 1 {
                return Err(format!("outputs.box_labels: a detector of {} finding labels needs each box's label index", o.findings().count()));
            }
            if o.mask.is_some() {
                return Err("outputs.mask is a segmenter's output: a detector has none".into());
            }
        }
        OutputKind::Segmentation => {
            if o.mask.is_none() {
                return Err("outputs.kind = \"segmentation\" needs outputs.mask (the index of its [N, labels, h, w] probabilities)".into());
            }
            if o.probabilities.is_some() {
                return Err("outputs.probabilities: a segmenter has none (a label's probability is its mask's maximum); remove it".into());
            }
            if o.cam.is_some() {
                return Err("outputs.cam: a segmenter's mask is its map; remove it".into());
            }
            if o.mask_format == MaskFormat::Labels && o.activation != Activation::None {
                return Err("outputs.activation: a label map (mask_format = \"labels\") holds label indices, no logits; remove it".into());
            }
            if let Some((field, _)) =
                [("outputs.boxes", o.boxes), ("outputs.scores", o.scores), ("outputs.box_labels", o.box_labels)].iter().find(|(_, i)| i.is_some())
            {
                return Err(format!("{field} is a detector's output: a segmenter has none"));
            }
        }
    }
    Ok(())
}

impl Package {
    /// Load `dir/model.toml` and `dir/model.pt` on the device (or `dir/model.onnx` on ONNX
    /// Runtime, its declared inputs and outputs held against the manifest first), and run a
    /// warm-up forward pass on a zero batch whose outputs must have the shapes the manifest
    /// promises.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Package, PackageError> {
        let manifest = Manifest::load(&dir.join("model.toml"))?;
        let (pt, onnx_file) = (dir.join("model.pt"), dir.join("model.onnx"));
        let (path, mut model) = if onnx_file.exists() {
            if pt.exists() {
                return Err(PackageError::TwoModels { dir: dir.to_path_buf() });
            }
            let model = onnx::Model::load(&onnx_file, &options.onnx)?;
            let (inputs, outputs) = model.signature();
            check_signature(&manifest, inputs, outputs).map_err(|reason| PackageError::Mismatch {
                path: onnx_file.clone(),
                manifest: dir.join("model.toml"),
                reason,
            })?;
            (onnx_file, Backend::Onnx(model))
        } else {
            let model = Model::load(&pt, options.device, manifest.allow_half)?.with_half_input(manifest.input.dtype == Dtype::Float16);
            (pt, Backend::Torch(model))
        };
        if manifest.outputs.saliency.is_some() && matches!(model, Backend::Onnx(_)) {
            return Err(PackageError::Manifest {
                path: dir.join("model.toml"),
                reason: "outputs.saliency needs a TorchScript model (model.pt): ONNX Runtime gives no gradients".into(),
            });
        }
        let half_ignored = match &model {
            Backend::Torch(m) if manifest.allow_half && !m.half() => Some("half precision (fp16) runs only on a CUDA device; it runs in fp32 on the CPU"),
            Backend::Onnx(_) if manifest.allow_half => Some("an ONNX package runs in the precision it was exported in"),
            _ => None,
        };
        if let Some(why) = half_ignored {
            tracing::warn!(model = %manifest.name, device = ?options.device, "model {}: allow_half = true ignored: {why}", manifest.name);
        }
        let shape = manifest.input.shape(1);
        let warm = |reason: String| PackageError::WarmUp { path: path.clone(), reason };
        let outputs = model.forward(&vec![0.0; manifest.input.values_per_image()], &shape).map_err(warm)?;
        let labels = manifest.outputs.labels.len() as i64;
        let get = |i: usize, what: &str| outputs.get(i).ok_or_else(|| warm(format!("no output {i} ({what}); the model returned {}", outputs.len())));
        if manifest.outputs.kind == OutputKind::Detection {
            let o = &manifest.outputs;
            let boxes = get(o.boxes.unwrap_or(0), "boxes")?;
            let [1, k, 4] = boxes.shape[..] else {
                return Err(warm(format!("boxes have shape {:?}, expected [1, K, 4]", boxes.shape)));
            };
            for (index, what) in [(o.scores, "scores"), (o.box_labels, "box labels")] {
                let Some(index) = index else { continue };
                let out = get(index, what)?;
                if out.shape != [1, k] {
                    return Err(warm(format!("{what} have shape {:?}, expected [1, {k}] (one per box)", out.shape)));
                }
            }
        } else if manifest.outputs.kind == OutputKind::Segmentation {
            let mask = get(manifest.outputs.mask.unwrap_or(0), "mask")?;
            let fits = match manifest.outputs.mask_format {
                MaskFormat::Probabilities => mask.shape.len() == 4 && mask.shape[..2] == [1, labels],
                MaskFormat::Labels => mask.shape.len() == 3 && mask.shape[0] == 1 || mask.shape.len() == 4 && mask.shape[..2] == [1, 1],
            };
            if !fits {
                let expected =
                    if manifest.outputs.mask_format == MaskFormat::Labels { "[1, 1, h, w] or [1, h, w]".to_string() } else { format!("[1, {labels}, h, w]") };
                return Err(warm(format!("mask has shape {:?}, expected {expected}", mask.shape)));
            }
        } else {
            let probs = get(manifest.outputs.probabilities_index(), "probabilities")?;
            if probs.shape != [1, labels] {
                return Err(warm(format!("probabilities have shape {:?}, expected [1, {labels}]", probs.shape)));
            }
            let mut activated = probs.values.clone();
            manifest.outputs.activation.apply(&mut activated);
            if activated.iter().any(|p| !(0.0..=1.0).contains(p)) {
                return Err(warm(match manifest.outputs.activation {
                    Activation::None => "probabilities outside 0..1 (apply the sigmoid or softmax inside the model, or declare outputs.activation)".into(),
                    _ => "outputs not finite".into(),
                }));
            }
        }
        if let Some(index) = manifest.outputs.embedding {
            let e = get(index, "embedding")?;
            let fits = matches!(e.shape[..], [1, d] if (1..=EMBEDDING_MAX).contains(&d));
            if !fits || e.values.iter().any(|v| !v.is_finite()) {
                return Err(warm(format!("embedding has shape {:?}, expected [1, E] with 1 <= E <= {EMBEDDING_MAX}, finite", e.shape)));
            }
        }
        if let Some(index) = manifest.outputs.cam {
            let cam = get(index, "class activation map")?;
            let dims = if manifest.input.kind == InputKind::Volume { 5 } else { 4 };
            if cam.shape.len() != dims || cam.shape[..2] != [1, labels] {
                let want = if dims == 5 { "d, h, w" } else { "h, w" };
                return Err(warm(format!("class activation map has shape {:?}, expected [1, {labels}, {want}]", cam.shape)));
            }
        }
        Ok(Package { dir: dir.to_path_buf(), manifest, model })
    }
}

/// An ONNX model's declared input and outputs against its manifest: one input, named as
/// `input.name` says (when it says), of `input.dtype`, of the manifest's shape with the batch
/// axis free (or fixed to 1: the engine then runs images one at a time); outputs named as
/// `outputs.names` says (when it says), probabilities [N, labels], class activation maps
/// [N, labels, h, w], in float32 or float16. A dimension the model leaves free (-1) agrees with
/// any. Each reason names what the manifest says and what the model declares.
fn check_signature(m: &Manifest, inputs: &[onnx::Port], outputs: &[onnx::Port]) -> Result<(), String> {
    let names = |ports: &[onnx::Port]| ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let [input] = inputs else {
        return Err(format!("the manifest describes one input, the model declares {} ({:?})", inputs.len(), names(inputs)));
    };
    if let Some(name) = &m.input.name {
        if *name != input.name {
            return Err(format!("input.name: the manifest says {name:?}, the model's input is {:?}", input.name));
        }
    }
    let dtype = match m.input.dtype {
        Dtype::Float32 => "float32",
        Dtype::Float16 => "float16",
    };
    if input.element != dtype {
        return Err(format!("input.dtype: the manifest says {dtype:?}, the model's input {:?} is {}", input.name, input.element));
    }
    let want = m.input.shape(-1);
    let agrees = |have: &[i64], want: &[i64]| have.len() == want.len() && have.iter().zip(want).all(|(h, w)| *h < 0 || *w < 0 || h == w);
    if !agrees(&input.shape, &want) || input.shape[0] > 1 {
        return Err(format!(
            "input shape: the manifest says {} (input.size, input.channels, input.layout; N free or 1), the model's input {:?} is {}",
            dims(&want),
            input.name,
            dims(&input.shape)
        ));
    }
    if !m.outputs.names.is_empty() && m.outputs.names != names(outputs) {
        return Err(format!("outputs.names: the manifest says {:?}, the model's outputs are {:?}", m.outputs.names, names(outputs)));
    }
    let labels = m.outputs.labels.len() as i64;
    let o = &m.outputs;
    let mut expected = Vec::new();
    let shapes = [
        (o.probabilities, "outputs.probabilities", vec![-1, labels]),
        (o.cam, "outputs.cam", if m.input.depth.is_some() { vec![-1, labels, -1, -1, -1] } else { vec![-1, labels, -1, -1] }),
        (o.boxes, "outputs.boxes", vec![-1, -1, 4]),
        (o.scores, "outputs.scores", vec![-1, -1]),
        (o.box_labels, "outputs.box_labels", vec![-1, -1]),
        (o.mask, "outputs.mask", if o.mask_format == MaskFormat::Labels { vec![-1, 1, -1, -1] } else { vec![-1, labels, -1, -1] }),
        (o.embedding, "outputs.embedding", vec![-1, -1]),
    ];
    for (index, field, want) in shapes {
        if let Some(index) = index {
            expected.push((index, field, want));
        }
    }
    for (index, field, want) in expected {
        let Some(out) = outputs.get(index) else {
            return Err(format!("{field}: the manifest says output {index}, the model has {} output(s) {:?}", outputs.len(), names(outputs)));
        };
        if !agrees(&out.shape, &want) {
            return Err(format!(
                "{field} = {index}: the manifest says {} ({labels} labels), the model's output {:?} is {}",
                dims(&want),
                out.name,
                dims(&out.shape)
            ));
        }
        let integer_labels = field == "outputs.box_labels" && (out.element == "int64" || out.element == "int32");
        if out.element != "float32" && out.element != "float16" && !integer_labels {
            return Err(format!("{field} = {index}: the model's output {:?} is {}, not float32 or float16", out.name, out.element));
        }
    }
    Ok(())
}

/// A shape as [N, 3, 224, 224], a free dimension as its letter or `?`.
fn dims(shape: &[i64]) -> String {
    let d: Vec<String> = shape
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if *d >= 0 {
                d.to_string()
            } else if i == 0 {
                "N".into()
            } else {
                "?".into()
            }
        })
        .collect();
    format!("[{}]", d.join(", "))
}

/// Every package in `models_dir` (each sub-folder holding a `model.toml`), in name order. A
/// missing folder holds no packages; any broken package is an error. ONNX Runtime is opened
/// only if a package holds `model.onnx`.
pub fn load_all(models_dir: &Path, options: &LoadOptions) -> Result<Vec<Package>, PackageError> {
    let entries = match std::fs::read_dir(models_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PackageError::Read { path: models_dir.to_path_buf(), cause: source }),
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.join("model.toml").is_file()).collect();
    dirs.sort();
    let packages: Vec<Package> = dirs.iter().map(|d| Package::load(d, options)).collect::<Result<_, _>>()?;
    // A shadow is compared with a live model loaded beside it.
    for (dir, p) in dirs.iter().zip(&packages) {
        if let Some(live) = p.manifest.shadow_of.as_deref() {
            if !packages.iter().any(|o| o.manifest.name == live && o.manifest.mode == Mode::Live) {
                return Err(PackageError::Manifest {
                    path: dir.join("model.toml"),
                    reason: format!("shadow_of = {live:?}: no live model of that name is loaded beside it"),
                });
            }
        }
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(text: &str) -> T {
        config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)).build().unwrap().try_deserialize().unwrap()
    }

    /// Series rules select by Image Type, thickness, kernel and contrast; localizers and dose
    /// screens are never taken, whatever the manifest says.
    #[test]
    fn series_rules_and_the_images_never_inferred() {
        let series: Series = parse("image_type_all = [\"ORIGINAL\", \"AXIAL\"]\nslice_thickness = [0.5, 3.0]\nkernels = [\"SOFT\", \"H30\"]\ncontrast = false");
        let axial = ImageAttrs {
            modality: "CT".into(),
            image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "AXIAL".into()],
            slice_thickness: Some(1.0),
            kernel: "H30s".into(),
            ..Default::default()
        };
        assert!(series.accepts(&axial));
        assert!(!series.accepts(&ImageAttrs { slice_thickness: Some(5.0), ..axial.clone() }));
        assert!(!series.accepts(&ImageAttrs { slice_thickness: None, ..axial.clone() }));
        assert!(!series.accepts(&ImageAttrs { kernel: "BONE".into(), ..axial.clone() }));
        assert!(!series.accepts(&ImageAttrs { contrast: true, ..axial.clone() }));
        assert!(!series.accepts(&ImageAttrs { image_type: vec!["DERIVED".into(), "AXIAL".into()], ..axial.clone() }));
        let any: Series = parse("");
        assert_eq!(any.pick, Pick::Thinnest);
        let scout = ImageAttrs { image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "LOCALIZER".into()], ..axial.clone() };
        assert!(any.accepts(&scout), "the manifest's rules alone would take it");
        let m = Manifest { series: any, ..parse::<Manifest>(include_str!("../../models/demo-nodule/model.toml")) };
        let cr = ImageAttrs { modality: "CR".into(), body_part: "CHEST".into(), photometric: "MONOCHROME2".into(), ..Default::default() };
        assert!(m.takes(&cr));
        assert!(!m.takes(&ImageAttrs { image_type: vec!["DERIVED".into(), "SECONDARY".into(), "SCREEN SAVE".into()], ..cr.clone() }));
        assert!(!m.takes(&ImageAttrs { image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "LOCALIZER".into()], ..cr }));
    }

    const BASE: &str = r#"
name = "m"
version = "1"
intended_use = "test"
limits = "test"
[routing]
modalities = ["CT"]
[input]
size = [24, 20]
channels = 3
INPUT
[outputs]
labels = ["normal", "bleed", "fracture"]
positive = [1.0, 0.5, 0.5]
urgent = [1.0, 0.9, 0.9]
probabilities = 0
OUTPUTS
[aggregate]
method = "max"
"#;

    /// `BASE` with these [input] and [outputs] lines, loaded from a `model.toml` file.
    fn load(input: &str, outputs: &str) -> Result<Manifest, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.toml");
        std::fs::write(&path, BASE.replace("INPUT", input).replace("OUTPUTS", outputs)).unwrap();
        Manifest::load(&path).map_err(|e| e.to_string())
    }

    /// The shipped manifests keep today's meaning: NCHW, the grey image, 0..1, float32, one
    /// mean and std for every channel, probabilities as the model gives them, a CAM.
    #[test]
    fn existing_manifests_mean_what_they_meant() {
        for text in [include_str!("../../models/demo-nodule/model.toml"), include_str!("../../models/demo-ct-hyperdense/model.toml")] {
            let m: Manifest = parse(text);
            m.validate().unwrap();
            let i = &m.input;
            assert_eq!((i.color, i.layout, i.range, i.dtype), (Color::Grey, Layout::Nchw, Range::Unit, Dtype::Float32));
            assert_eq!((m.outputs.activation, m.outputs.negative.as_deref(), m.outputs.cam), (Activation::None, None, Some(1)));
            let spec = i.spec("CT");
            assert_eq!((spec.scale, spec.mean.as_slice(), spec.std.as_slice(), spec.channel_windows.len()), (1.0, &[0.0][..], &[1.0][..], 0));
            assert_eq!(i.shape(2), [2, 1, 128, 128]);
            assert_eq!(m.outputs.findings().count(), m.outputs.labels.len());
        }
    }

    #[test]
    fn layouts_windows_per_channel_and_activations_are_read() {
        let m = load(
            r#"layout = "nhwc"
range = "0..255"
dtype = "float16"
window = { CT = [{ center = 40, width = 80 }, { center = 80, width = 200 }, "percentile"] }
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]"#,
            "activation = \"softmax\"\nnegative = \"normal\"",
        )
        .unwrap();
        assert_eq!(m.input.shape(4), [4, 24, 20, 3]);
        assert_eq!(m.input.values_per_image(), 24 * 20 * 3);
        assert_eq!(m.input.dtype, Dtype::Float16);
        let spec = m.input.spec("CT");
        assert_eq!((spec.scale, spec.layout, spec.mean[2], spec.std[1]), (255.0, Layout::Nhwc, 103.53, 57.12));
        assert_eq!(spec.window, WindowRule::Fixed(preprocess::Window { center: 40.0, width: 80.0 }));
        assert_eq!(spec.channel_windows.len(), 3);
        assert_eq!(spec.channel_windows[2], WindowRule::Percentile([0.5, 99.5]));
        // Another modality has no window of its own: the file's, the same for every channel.
        assert!(m.input.spec("MR").channel_windows.is_empty());
        assert_eq!(m.outputs.cam, None);
        let findings: Vec<&String> = m.outputs.findings().map(|(_, l)| l).collect();
        assert_eq!(findings, ["bleed", "fracture"]);
        let rgb = load("color = \"rgb\"\nmean = [0.485, 0.456, 0.406]\nstd = 0.25", "cam = 1").unwrap();
        assert_eq!(rgb.input.spec("OT").std, [0.25; 3]);
        let cr = ImageAttrs { modality: "CT".into(), photometric: "MONOCHROME2".into(), ..Default::default() };
        assert!(!rgb.takes(&cr), "an RGB model takes colour images only");
        assert!(rgb.takes(&ImageAttrs { photometric: "RGB".into(), ..cr.clone() }));
        assert!(rgb.takes(&ImageAttrs { photometric: "YBR_FULL_422".into(), ..cr.clone() }));
    }

    /// A shadow names the live model it is compared with; a live model names none.
    #[test]
    fn a_shadow_names_its_live_model() {
        let manifest = |top: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("model.toml");
            std::fs::write(&path, BASE.replace("version = \"1\"", &format!("version = \"1\"\n{top}")).replace("INPUT", "").replace("OUTPUTS", "")).unwrap();
            Manifest::load(&path).map_err(|e| e.to_string())
        };
        let shadow = manifest("mode = \"shadow\"\nshadow_of = \"live-one\"").unwrap();
        assert_eq!((shadow.mode, shadow.shadow_of.as_deref()), (Mode::Shadow, Some("live-one")));
        assert_eq!(manifest("").unwrap().mode, Mode::Live);
        for (top, why) in [
            ("mode = \"shadow\"", "needs shadow_of"),
            ("mode = \"shadow\"\nshadow_of = \"m\"", "another model"),
            ("shadow_of = \"live-one\"", "only for mode = \"shadow\""),
            ("mode = \"canary\"", "\"canary\" is not \"live\" or \"shadow\""),
        ] {
            let e = manifest(top).err().unwrap_or_else(|| panic!("accepted: {top}"));
            assert!(e.contains("model.toml") && e.contains(why), "{top}: {e}");
        }
    }

    /// Every refusal names the file and the field.
    #[test]
    fn bad_layouts_and_outputs_are_refused_naming_the_field() {
        let refused = |input: &str, outputs: &str, field: &str| {
            let e = load(input, outputs).err().unwrap_or_else(|| panic!("accepted: {input} / {outputs}"));
            assert!(e.contains("model.toml") && e.contains(field), "{field}: {e}");
        };
        refused("layout = \"nwhc\"", "", "\"nwhc\" is not \"nchw\" or \"nhwc\" for key `input.layout`");
        refused("range = \"0..100\"", "", "\"0..100\" is not \"0..1\" or \"0..255\" for key `input.range`");
        refused("dtype = \"int8\"", "", "\"int8\" is not \"float32\" or \"float16\" for key `input.dtype`");
        refused("color = \"bgr\"", "", "\"bgr\" is not \"grey\" or \"rgb\" for key `input.color`");
        refused("mean = [0.5, 0.5]", "", "input.mean");
        refused("std = [1.0, 0.0, 1.0]", "", "input.std");
        refused("window = { CT = [{ center = 40, width = 80 }, { center = 80, width = 200 }] }", "", "input.window");
        refused("window = { CT = [{ center = 40, width = 80 }, { center = 80, width = 200 }, \"auto\"] }", "", "input.window");
        refused("color = \"rgb\"\nwindow = { CT = [\"file\", \"file\", \"file\"] }", "", "input.window");
        let one = BASE.replace("channels = 3", "channels = 1").replace("INPUT", "color = \"rgb\"").replace("OUTPUTS", "");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.toml"), one).unwrap();
        let e = Manifest::load(&dir.path().join("model.toml")).err().unwrap().to_string();
        assert!(e.contains("input.color") && e.contains("channels = 3"), "{e}");
        refused("", "negative = \"healthy\"", "outputs.negative");
        refused("", "activation = \"relu\"", "\"relu\" is not \"none\" or \"sigmoid\" or \"softmax\" for key `outputs.activation`");
        refused("", "cam = 0", "outputs.cam");
        refused("", "cam = 1\nsaliency = \"gradient\"", "outputs.saliency is for a classifier without a class activation map");
        refused("", "saliency = \"grad-cam\"", "\"grad-cam\" is not \"gradient\" for key `outputs.saliency`");
        assert_eq!(load("", "saliency = \"gradient\"").unwrap().outputs.saliency, Some(Saliency::Gradient));
    }

    /// `outputs.kind = "detection"` takes boxes and scores (and box labels for several finding
    /// labels) in place of probabilities; each refusal names the field.
    #[test]
    fn detection_outputs_are_validated_naming_the_field() {
        let detector = |outputs: &str| BASE.replace("probabilities = 0\n", "").replace("OUTPUTS", outputs).replace("INPUT", "");
        let load_text = |text: String| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("model.toml"), text).unwrap();
            Manifest::load(&dir.path().join("model.toml")).map_err(|e| e.to_string())
        };
        let m = load_text(detector("kind = \"detection\"\nboxes = 0\nscores = 1\nbox_labels = 2\nnegative = \"normal\"")).unwrap();
        assert_eq!(
            (m.outputs.kind, m.outputs.boxes, m.outputs.scores, m.outputs.box_labels, m.outputs.probabilities),
            (OutputKind::Detection, Some(0), Some(1), Some(2), None)
        );
        // One finding label: box labels may be left out.
        let one = BASE
            .replace("probabilities = 0\n", "")
            .replace("[\"normal\", \"bleed\", \"fracture\"]", "[\"nodule\"]")
            .replace("[1.0, 0.5, 0.5]", "[0.5]")
            .replace("[1.0, 0.9, 0.9]", "[0.9]");
        assert!(load_text(one.replace("OUTPUTS", "kind = \"detection\"\nboxes = 1\nscores = 0").replace("INPUT", "")).is_ok());
        // Today's manifests are classifiers.
        assert_eq!(load("", "").unwrap().outputs.kind, OutputKind::Classification);
        let refused = |text: String, field: &str| {
            let e = load_text(text.clone()).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains("model.toml") && e.contains(field), "{field}: {e}");
        };
        refused(detector("kind = \"detection\"\nscores = 1\nbox_labels = 2"), "needs outputs.boxes");
        refused(detector("kind = \"detection\"\nboxes = 0\nbox_labels = 2"), "and outputs.scores");
        refused(detector("kind = \"detection\"\nboxes = 0\nscores = 1"), "outputs.box_labels: a detector of 3 finding labels");
        refused(detector("kind = \"detection\"\nprobabilities = 3\nboxes = 0\nscores = 1\nbox_labels = 2"), "outputs.probabilities: a detector has none");
        refused(detector("kind = \"detection\"\nboxes = 0\nscores = 0\nbox_labels = 2"), "outputs.boxes and outputs.scores must be different outputs");
        refused(detector("kind = \"detection\"\nboxes = 0\nscores = 1\nbox_labels = 2\nactivation = \"softmax\""), "outputs.activation");
        refused(detector("kind = \"detection\"\nboxes = 0\nscores = 1\nbox_labels = 2\nnames = [\"boxes\", \"scores\"]"), "outputs.box_labels = 2");
        refused(
            detector("kind = \"boxes\"\nboxes = 0\nscores = 1"),
            "\"boxes\" is not \"classification\" or \"detection\" or \"segmentation\" for key `outputs.kind`",
        );
        refused(detector(""), "outputs.probabilities: a classifier");
        refused(BASE.replace("OUTPUTS", "boxes = 1").replace("INPUT", ""), "outputs.boxes is a detector's output");
    }

    /// `outputs.kind = "segmentation"` takes a mask (per-pixel probabilities) in place of
    /// probabilities; each refusal names the field.
    #[test]
    fn segmentation_outputs_are_validated_naming_the_field() {
        let segmenter = |outputs: &str| BASE.replace("probabilities = 0\n", "").replace("OUTPUTS", outputs).replace("INPUT", "");
        let load_text = |text: String| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("model.toml"), text).unwrap();
            Manifest::load(&dir.path().join("model.toml")).map_err(|e| e.to_string())
        };
        let m = load_text(segmenter("kind = \"segmentation\"\nmask = 0\nnegative = \"normal\"\nactivation = \"softmax\"")).unwrap();
        assert_eq!((m.outputs.kind, m.outputs.mask, m.outputs.probabilities), (OutputKind::Segmentation, Some(0), None));
        let refused = |text: String, field: &str| {
            let e = load_text(text.clone()).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(e.contains("model.toml") && e.contains(field), "{field}: {e}");
        };
        refused(segmenter("kind = \"segmentation\""), "needs outputs.mask");
        let labels = load_text(segmenter("kind = \"segmentation\"\nmask = 0\nmask_format = \"labels\"")).unwrap();
        assert_eq!((labels.outputs.mask_format, labels.outputs.segmentation_type()), (MaskFormat::Labels, SegmentationType::Binary));
        let fractional = load_text(segmenter("kind = \"segmentation\"\nmask = 0\nmask_format = \"labels\"\nsegmentation_type = \"fractional\"")).unwrap();
        assert_eq!(fractional.outputs.segmentation_type(), SegmentationType::Fractional);
        refused(segmenter("kind = \"segmentation\"\nmask = 0\nmask_format = \"labels\"\nactivation = \"softmax\""), "a label map");
        refused(BASE.replace("OUTPUTS", "mask_format = \"labels\"").replace("INPUT", ""), "declare outputs.kind = \"segmentation\"");
        refused(segmenter("kind = \"segmentation\"\nmask = 0\nprobabilities = 1"), "outputs.probabilities: a segmenter has none");
        refused(segmenter("kind = \"segmentation\"\nmask = 0\ncam = 1"), "outputs.cam: a segmenter's mask is its map");
        refused(segmenter("kind = \"segmentation\"\nmask = 0\nboxes = 1"), "outputs.boxes is a detector's output: a segmenter has none");
        refused(segmenter("kind = \"segmentation\"\nmask = 0\nnames = [\"mask\"]\nscores = 1"), "outputs.scores");
        refused(
            segmenter("kind = \"detection\"\nboxes = 0\nscores = 1\nbox_labels = 2\nmask = 3"),
            "outputs.mask is a segmenter's output: a detector has none",
        );
        refused(BASE.replace("OUTPUTS", "mask = 1").replace("INPUT", ""), "outputs.mask is a segmenter's output: declare outputs.kind = \"segmentation\"");
    }

    /// `input.kind`: slice by default (today's meaning), slab and volume read with their keys;
    /// each refusal names the key.
    #[test]
    fn input_kinds_are_read_and_refusals_name_the_key() {
        let slice = load("", "").unwrap();
        assert_eq!((slice.input.kind, slice.input.depth, slice.input.shape(1)), (InputKind::Slice, None, vec![1, 3, 24, 20]));
        let slab = load("kind = \"slab\"\nslab = 3\nmin_slices = 5", "").unwrap();
        assert_eq!((slab.input.kind, slab.input.slab, slab.input.min_slices, slab.input.shape(2)), (InputKind::Slab, Some(3), 5, vec![2, 3, 24, 20]));
        let text = BASE
            .replace("size = [24, 20]\nchannels = 3", "size = [16, 24, 20]\nchannels = 1")
            .replace("OUTPUTS", "")
            .replace("INPUT", "kind = \"volume\"\nspacing = [2.0, 1.0, 1.0]");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.toml"), &text).unwrap();
        let volume = Manifest::load(&dir.path().join("model.toml")).unwrap();
        assert_eq!((volume.input.depth, volume.input.size, volume.input.spacing), (Some(16), [24, 20], Some([2.0, 1.0, 1.0])));
        assert_eq!((volume.input.shape(1), volume.input.values_per_image()), (vec![1, 1, 16, 24, 20], 16 * 24 * 20));
        let refused = |input: &str, field: &str| {
            let e = load(input, "").err().unwrap_or_else(|| panic!("accepted: {input}"));
            assert!(e.contains("model.toml") && e.contains(field), "{field}: {e}");
        };
        refused("kind = \"stack\"", "\"stack\" is not \"slice\" or \"slab\" or \"volume\"");
        refused("kind = \"slab\"", "input.slab");
        refused("kind = \"slab\"\nslab = 2", "input.slab = 2");
        refused("kind = \"slab\"\nslab = 5", "input.slab = 5");
        refused("kind = \"volume\"", "input.size");
        refused("slab = 3", "input.slab");
        refused("min_slices = 0", "input.min_slices");
        let bad = text.replace("spacing = [2.0, 1.0, 1.0]", "spacing = [0.0, 1.0, 1.0]");
        std::fs::write(dir.path().join("model.toml"), bad).unwrap();
        let e = Manifest::load(&dir.path().join("model.toml")).unwrap_err().to_string();
        assert!(e.contains("input.spacing"), "{e}");
    }

    #[test]
    fn activations() {
        let mut v = [1.0f32, 2.0, 3.0];
        Activation::Softmax.apply(&mut v);
        let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
        let sum: f32 = e.iter().sum();
        assert!(v.iter().zip(e).all(|(a, b)| (a - b / sum).abs() < 1e-6), "{v:?}");
        // Large logits do not overflow.
        let mut big = [1000.0f32, 0.0];
        Activation::Softmax.apply(&mut big);
        assert_eq!(big, [1.0, 0.0]);
        let mut s = [0.0f32, 2.0];
        Activation::Sigmoid.apply(&mut s);
        assert!((s[0] - 0.5).abs() < 1e-7 && (s[1] - 0.880_797).abs() < 1e-6, "{s:?}");
        let mut n = [0.3f32];
        Activation::None.apply(&mut n);
        assert_eq!(n, [0.3]);
    }
}
