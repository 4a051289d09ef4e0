//! Model packages: `models/<name>/model.pt` (TorchScript) and `models/<name>/model.toml` (the
//! manifest: identity, intended use, routing, input, outputs, aggregation).
//!
//! Owns: the manifest's schema and its validation, loading every package of a folder with a
//! warm-up forward pass whose outputs must match the manifest, and errors that name the file
//! and the problem (the node refuses to start on a broken package). Must not: decide which
//! instance goes to which model at run time (the engine will), or log pixel values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::preprocess::{self, ImageAttrs, InputSpec, WindowRule};
use super::runtime::{Model, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("reading {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: warm-up forward pass: {reason}")]
    WarmUp { path: PathBuf, reason: String },
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
    pub fn takes(&self, a: &ImageAttrs) -> bool {
        !a.image_type.iter().any(|t| NEVER_INFERRED.contains(&t.as_str())) && self.routing.accepts(a) && self.series.accepts(a)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// [height, width] the model takes.
    pub size: [u32; 2],
    pub channels: u32,
    /// Per modality: `{ center, width }` (CT, in HU after the Modality LUT), or `"file"` (the
    /// file's VOI window, else the percentile window) or `"percentile"`.
    #[serde(default)]
    pub window: std::collections::BTreeMap<String, Window>,
    /// Percentiles for the percentile window, e.g. [0.5, 99.5].
    #[serde(default = "default_percentiles")]
    pub percentiles: [f32; 2],
    /// After windowing to 0..1: (x - mean) / std.
    #[serde(default)]
    pub mean: f32,
    #[serde(default = "one")]
    pub std: f32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Window {
    Fixed { center: f64, width: f64 },
    Named(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    pub labels: Vec<String>,
    /// Per label: probability at or above which the finding is positive, and urgent.
    pub positive: Vec<f32>,
    pub urgent: Vec<f32>,
    /// Which element of the model's output tuple holds the per-label probabilities [N, labels],
    /// and which the class activation maps [N, labels, h, w].
    pub probabilities: usize,
    pub cam: usize,
    /// Per label, the finding's code for the SR as "SCHEME:VALUE:Meaning" (for example
    /// "SCT:27925004:Nodule"); without one, a private 99TRIAGE code named after the label.
    #[serde(default)]
    pub codes: Vec<String>,
}

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
        let window = match self.window.iter().find(|(m, _)| m.eq_ignore_ascii_case(modality)).map(|(_, w)| w) {
            Some(Window::Fixed { center, width }) => WindowRule::Fixed(preprocess::Window { center: *center, width: *width }),
            Some(Window::Named(n)) if n == "percentile" => WindowRule::Percentile(percentiles),
            _ => WindowRule::File { percentiles },
        };
        InputSpec { rows: self.size[0] as usize, cols: self.size[1] as usize, channels: self.channels as usize, window, mean: self.mean, std: self.std }
    }
}

fn default_percentiles() -> [f32; 2] {
    [0.5, 99.5]
}
fn one() -> f32 {
    1.0
}
fn one_usize() -> usize {
    1
}

/// A package loaded, validated and warmed up.
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub model: Model,
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
        if o.probabilities == o.cam {
            return Err("outputs.probabilities and outputs.cam must be different outputs".into());
        }
        let i = &self.input;
        if i.size[0] == 0 || i.size[1] == 0 || !(i.channels == 1 || i.channels == 3) {
            return Err("input.size must be above zero and input.channels 1 or 3".into());
        }
        if i.std <= 0.0 || !(0.0..100.0).contains(&i.percentiles[0]) || i.percentiles[0] >= i.percentiles[1] || i.percentiles[1] > 100.0 {
            return Err("input.std must be above zero and input.percentiles increasing within 0..100".into());
        }
        for (modality, w) in &i.window {
            match w {
                Window::Fixed { width, .. } if *width < 1.0 => return Err(format!("input.window.{modality}: width must be at least 1")),
                Window::Named(n) if n != "file" && n != "percentile" => {
                    return Err(format!("input.window.{modality}: {n:?} is not {{ center, width }}, \"file\" or \"percentile\""))
                }
                _ => {}
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

impl Package {
    /// Load `dir/model.toml` and `dir/model.pt` on `device`, and run a warm-up forward pass on
    /// a zero batch whose outputs must have the shapes the manifest promises.
    pub fn load(dir: &Path, device: tch::Device) -> Result<Package, PackageError> {
        let manifest = Manifest::load(&dir.join("model.toml"))?;
        let pt = dir.join("model.pt");
        let model = Model::load(&pt, device, manifest.allow_half)?;
        let [h, w] = manifest.input.size;
        let shape = [1, i64::from(manifest.input.channels), i64::from(h), i64::from(w)];
        let warm = |reason: String| PackageError::WarmUp { path: pt.clone(), reason };
        let outputs = model.forward(&vec![0.0; shape.iter().product::<i64>() as usize], shape).map_err(|e| warm(e.to_string()))?;
        let labels = manifest.outputs.labels.len() as i64;
        let get = |i: usize, what: &str| outputs.get(i).ok_or_else(|| warm(format!("no output {i} ({what}); the model returned {}", outputs.len())));
        let probs = get(manifest.outputs.probabilities, "probabilities")?;
        if probs.shape != [1, labels] {
            return Err(warm(format!("probabilities have shape {:?}, expected [1, {labels}]", probs.shape)));
        }
        if probs.values.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(warm("probabilities outside 0..1 (apply the sigmoid or softmax inside the model)".into()));
        }
        let cam = get(manifest.outputs.cam, "class activation map")?;
        if cam.shape.len() != 4 || cam.shape[..2] != [1, labels] {
            return Err(warm(format!("class activation map has shape {:?}, expected [1, {labels}, h, w]", cam.shape)));
        }
        Ok(Package { dir: dir.to_path_buf(), manifest, model })
    }
}

/// Every package in `models_dir` (each sub-folder holding a `model.toml`), in name order. A
/// missing folder holds no packages; any broken package is an error.
pub fn load_all(models_dir: &Path, device: tch::Device) -> Result<Vec<Package>, PackageError> {
    let entries = match std::fs::read_dir(models_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PackageError::Read { path: models_dir.to_path_buf(), cause: source }),
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.join("model.toml").is_file()).collect();
    dirs.sort();
    dirs.iter().map(|d| Package::load(d, device)).collect()
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
}
