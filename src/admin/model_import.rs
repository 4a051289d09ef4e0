//! `model import`: a MONAI bundle in its published layout (`configs/metadata.json`,
//! `models/model.ts`) becomes a model package DRAFT, `<models_dir>/<name>/` with `model.pt`
//! (the TorchScript file, copied) and `model.toml` (the manifest, filled from the metadata
//! where it says enough, `TODO` comments and conservative placeholders where it does not).
//!
//! `draft` is pure: metadata in, manifest text and the list of what a person must fill in or
//! review out. `import` checks the bundle, writes the package (never over an existing one
//! unless forced) and tries to load it the way the node will (CPU, warm-up pass).
//!
//! Decisions: the draft is `demonstration = true` until a person edits it; the thresholds are
//! placeholders of 1.0 (positive and urgent: nothing is flagged short of a saturated output),
//! so a complete 2D classification draft loads as written, `triage-node evaluate` can run it
//! to choose the operating point, and it can never raise a study's priority before a person
//! has chosen one. What the node cannot run as the bundle ships it (a 3D network in MONAI's
//! array order and patches, or a 3D segmentation output) still gets a draft, and the import
//! says plainly that it will not load.
//!
//! Must not: print, or run anything of the bundle but its TorchScript file's warm-up pass.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::AdminError;
use crate::inference::package::{LoadOptions, Package};
use crate::inference::runtime::DeviceChoice;

/// What a person must do about one field of the draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Todo {
    /// The manifest field (`outputs.positive`, `routing.body_parts`, ...).
    pub field: String,
    /// True: the package does not load until this is done; false: a placeholder is written,
    /// to be reviewed before clinical use.
    pub blocking: bool,
    pub what: String,
}

/// A manifest draft made from a bundle's metadata.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The text of `model.toml`.
    pub manifest: String,
    /// Each field filled from the metadata, with where it came from.
    pub inferred: Vec<String>,
    pub todos: Vec<Todo>,
    /// Why this node cannot run the model today (a 3D input or segmentation output); empty:
    /// a 2D classifier.
    pub unsupported: Vec<String>,
}

/// What `import` did.
#[derive(Debug)]
pub struct Imported {
    /// The bundle's own name and version (metadata.json).
    pub bundle: String,
    pub dir: PathBuf,
    pub draft: Draft,
    /// Loading the package the way the node does (CPU, warm-up pass): `Err` says why not.
    pub load_check: Result<(), String>,
}

/// A package name: letters, digits, `.`, `_` and `-`, not starting with `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The package name made from a bundle's folder name (other characters become `-`).
pub fn name_from_folder(folder: &str) -> String {
    let name: String = folder.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c.to_ascii_lowercase() } else { '-' }).collect();
    let name = name.trim_start_matches('.').chars().take(64).collect::<String>();
    if name.is_empty() {
        "imported".into()
    } else {
        name
    }
}

/// Check the bundle, write `<models_dir>/<name>/` (refusing an existing package unless
/// `force`), and try to load it as the node will.
pub fn import(bundle: &Path, models_dir: &Path, name: Option<&str>, force: bool) -> Result<Imported, AdminError> {
    let not_bundle = |why: String| {
        AdminError::Invalid(format!(
            "{} is not a MONAI bundle: {why} (a bundle in its published layout holds configs/metadata.json and models/model.ts)",
            bundle.display()
        ))
    };
    if !bundle.is_dir() {
        return Err(not_bundle("no such folder".into()));
    }
    let metadata_path = bundle.join("configs/metadata.json");
    let model_ts = bundle.join("models/model.ts");
    if !metadata_path.is_file() {
        return Err(not_bundle("no configs/metadata.json".into()));
    }
    if !model_ts.is_file() {
        return Err(not_bundle("no models/model.ts (the TorchScript export; this node runs TorchScript or ONNX)".into()));
    }
    let text =
        std::fs::read_to_string(&metadata_path).map_err(|source| AdminError::Io { what: "reading", path: metadata_path.display().to_string(), source })?;
    let metadata: Value = serde_json::from_str(&text).map_err(|e| not_bundle(format!("configs/metadata.json is not JSON ({e})")))?;
    let name = match name {
        Some(n) if valid_name(n) => n.to_string(),
        Some(n) => {
            return Err(AdminError::Invalid(format!("--name {n:?}: a package name is letters, digits, '.', '_' and '-' (at most 64, not starting with '.')")))
        }
        None => {
            name_from_folder(&bundle.canonicalize().unwrap_or(bundle.to_path_buf()).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
        }
    };
    let draft = draft(&metadata, &name).map_err(|why| not_bundle(format!("configs/metadata.json: {why}")))?;

    let dir = models_dir.join(&name);
    let exists = dir.join("model.toml").exists() || dir.join("model.pt").exists() || dir.join("model.onnx").exists();
    if exists && !force {
        return Err(AdminError::Conflict(format!("{} already holds a model package; --force replaces it", dir.display())));
    }
    let io = |what: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| AdminError::Io { what, path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let onnx = dir.join("model.onnx");
    if onnx.exists() {
        std::fs::remove_file(&onnx).map_err(io("removing", &onnx))?;
    }
    let pt = dir.join("model.pt");
    std::fs::copy(&model_ts, &pt).map_err(io("copying models/model.ts to", &pt))?;
    let toml = dir.join("model.toml");
    std::fs::write(&toml, &draft.manifest).map_err(io("writing", &toml))?;

    let load_check = DeviceChoice::Cpu
        .resolve()
        .map_err(|e| e.to_string())
        .and_then(|device| Package::load(&dir, &LoadOptions::on(device)).map(|_| ()).map_err(|e| e.to_string()));
    let bundle_name = format!("{} {}", text_of(&metadata, "name").unwrap_or_else(|| name.clone()), text_of(&metadata, "version").unwrap_or_default());
    Ok(Imported { bundle: bundle_name.trim().to_string(), dir, draft, load_check })
}

/// A string field (or a list of strings, joined with ", ").
fn text_of(v: &Value, key: &str) -> Option<String> {
    let s = match v.get(key)? {
        Value::String(s) => s.trim().to_string(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::trim).collect::<Vec<_>>().join(", "),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn quoted_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", "))
}

/// One dimension of a `spatial_shape`: a number, or what the bundle wrote ("32*n").
#[derive(Debug, Clone, PartialEq)]
enum Dim {
    Fixed(u32),
    Symbolic(String),
}

fn dims(v: Option<&Value>) -> Vec<Dim> {
    let Some(Value::Array(items)) = v else { return Vec::new() };
    items
        .iter()
        .map(|d| match d {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map_or(Dim::Symbolic(n.to_string()), Dim::Fixed),
            Value::String(s) => s.trim().parse::<u32>().map_or(Dim::Symbolic(s.clone()), Dim::Fixed),
            other => Dim::Symbolic(other.to_string()),
        })
        .collect()
}

fn shown(d: &[Dim]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbolic(s) => quoted(s),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// DICOM Modality values for what a bundle's `modality` says (a code, or a common word).
fn modalities(said: &str) -> Option<Vec<String>> {
    const CODES: [&str; 16] = ["CR", "DX", "CT", "MR", "US", "MG", "PT", "NM", "XA", "RF", "OT", "SM", "ES", "OP", "IO", "PX"];
    let up = said.trim().to_ascii_uppercase();
    if CODES.contains(&up.as_str()) {
        return Some(vec![up]);
    }
    let list: &[&str] = match up.replace(['-', ' ', '_'], "").as_str() {
        "XRAY" | "CXR" | "RADIOGRAPH" | "RADIOGRAPHY" => &["CR", "DX"],
        "MRI" => &["MR"],
        "PET" => &["PT"],
        "ULTRASOUND" => &["US"],
        "MAMMOGRAPHY" | "MAMMOGRAM" => &["MG"],
        "ENDOSCOPY" => &["ES"],
        "PATHOLOGY" | "WSI" | "HISTOPATHOLOGY" => &["SM"],
        _ => return None,
    };
    Some(list.iter().map(|s| s.to_string()).collect())
}

/// The one entry of `section` named `preferred`, else its only entry.
fn port<'a>(section: Option<&'a Value>, preferred: &str) -> Option<(&'a str, &'a Value)> {
    let map = section?.as_object()?;
    map.get_key_value(preferred).or_else(|| if map.len() == 1 { map.iter().next() } else { None }).map(|(k, v)| (k.as_str(), v))
}

/// The manifest draft for package `name` from a bundle's `metadata.json`. Errs (with the
/// reason) only when the metadata has no `network_data_format` input or output to read.
pub fn draft(metadata: &Value, name: &str) -> Result<Draft, String> {
    let format = metadata.get("network_data_format").ok_or("no network_data_format")?;
    let (input_key, input) = port(format.get("inputs"), "image").ok_or("network_data_format.inputs has no \"image\" (nor a single input)")?;
    let (output_key, output) = port(format.get("outputs"), "pred").ok_or("network_data_format.outputs has no \"pred\" (nor a single output)")?;
    let (inp, out) = (format!("network_data_format.inputs.{input_key}"), format!("network_data_format.outputs.{output_key}"));

    let mut inferred = Vec::new();
    let mut todos = Vec::new();
    let mut unsupported = Vec::new();
    let mut todo = |field: &str, blocking: bool, what: String| todos.push(Todo { field: field.into(), blocking, what });
    let mut toml = Vec::<String>::new();
    let mut line = |s: String| toml.push(s);

    let bundle_name = text_of(metadata, "name").unwrap_or_else(|| name.to_string());
    let version = text_of(metadata, "version");
    line(format!("# DRAFT made by `triage-node model import` from the MONAI bundle {}.", quoted(&bundle_name)));
    line("# Lines marked TODO need a person; `triage-node model import` listed them. It stays".into());
    line("# `demonstration = true` (every result says \"demonstration model, not clinically validated\")".into());
    line("# until a person has validated the model at this site and edited this file.".into());
    line(format!("name = {}", quoted(name)));
    inferred.push(format!("name = {name:?} (the package's name)"));
    match &version {
        Some(v) => {
            line(format!("version = {}", quoted(v)));
            inferred.push(format!("version = {v:?} (metadata version)"));
        }
        None => {
            line("# TODO: the model's version (metadata.json has none).".into());
            line("version = \"0.0.0\"".into());
            todo("version", false, "metadata.json gives no version; \"0.0.0\" written".into());
        }
    }
    line("# TODO: remove once a person has reviewed this draft: `serve` refuses a draft package".into());
    line("# (infer and evaluate run it, to choose the thresholds).".into());
    line("draft = true".into());
    todo("draft", false, "`serve` refuses the package until this line is removed (infer and evaluate run it)".into());
    line("# TODO: false only once the model is validated at this site.".into());
    line("demonstration = true".into());
    todo("demonstration", false, "true until the model is validated at this site: every result says it is a demonstration model".into());
    if let Some(authors) = text_of(metadata, "authors") {
        line(format!("manufacturer = {}", quoted(&authors)));
        inferred.push(format!("manufacturer = {authors:?} (metadata authors)"));
    } else {
        todo("manufacturer", false, "metadata.json names no authors; the SR's Device Observer Manufacturer is left out".into());
    }
    let description = text_of(metadata, "description").unwrap_or_default();
    let task = text_of(metadata, "task").map(|t| format!(" (task: {t})")).unwrap_or_default();
    let intended = format!("{bundle_name}: {description}{task}");
    line("# TODO: what the model is for at this site, in the words every result shows.".into());
    line(format!("intended_use = {}", quoted(intended.trim_end_matches([':', ' ']))));
    inferred.push("intended_use (metadata name, description, task)".into());
    todo("intended_use", false, "the bundle's description is written; say what the model is for at this site".into());
    let theirs = text_of(metadata, "intended_use").map(|u| format!(" The bundle says: {u}")).unwrap_or_default();
    line("# TODO: where the model fails (population, views, devices, what it was trained on).".into());
    line(format!(
        "limits = {}",
        quoted(
            &format!("Imported from the MONAI bundle {bundle_name} {}; not validated at this site.{theirs}", version.as_deref().unwrap_or(""))
                .replace("  ", " ")
        )
    ));
    todo("limits", false, "placeholder written; say where the model fails (population, views, devices)".into());

    // Routing.
    line(String::new());
    line("[routing]".into());
    let modality = text_of(input, "modality");
    let routed = modality.as_deref().and_then(modalities);
    match (&modality, &routed) {
        (Some(m), Some(list)) => {
            line(format!("modalities = {}", quoted_list(list)));
            inferred.push(format!("routing.modalities = {list:?} ({inp}.modality {m:?})"));
        }
        _ => {
            line(format!("# TODO: the DICOM modalities the model was trained on ({inp}.modality is {modality:?})."));
            line("modalities = []".into());
            todo("routing.modalities", true, format!("{inp}.modality {modality:?} is no DICOM modality; list the modalities (e.g. [\"CR\", \"DX\"])"));
        }
    }
    line("# TODO: the Body Part Examined values the model was trained on (e.g. [\"CHEST\"]); empty takes any.".into());
    line("body_parts = []".into());
    todo("routing.body_parts", false, "empty (any body part) written; list the body parts the model was trained on".into());

    // Input.
    line(String::new());
    line("[input]".into());
    let spatial = dims(input.get("spatial_shape"));
    let concrete: Vec<u32> = spatial.iter().filter_map(|d| if let Dim::Fixed(n) = d { Some(*n) } else { None }).collect();
    match spatial.len() {
        2 if concrete.len() == 2 => {
            line(format!("size = [{}, {}]", concrete[0], concrete[1]));
            inferred.push(format!("input.size = {concrete:?} ({inp}.spatial_shape)"));
        }
        2 => {
            line(format!("# TODO: [height, width]: {inp}.spatial_shape is {}; choose sizes it allows.", shown(&spatial)));
            line("size = [0, 0]".into());
            todo("input.size", true, format!("{inp}.spatial_shape is {}: choose a concrete [height, width] it allows", shown(&spatial)));
        }
        3 => {
            unsupported.push(format!("a 3D input ({inp}.spatial_shape {})", shown(&spatial)));
            let (h, w) = match spatial[..2] {
                [Dim::Fixed(h), Dim::Fixed(w)] => (h, w),
                _ => (0, 0),
            };
            // The node feeds a volume classifier the whole series as [1, C, D, H, W], slices
            // first; a MONAI 3D network takes its loader's array order (spatial dimensions last
            // is the slice axis) in patches: a person must wrap it (permute, patch) first.
            line(format!(
                "# TODO: {inp}.spatial_shape is {} (a volume). The node feeds volume models (input.kind = \"volume\") the series as [1, C, D, H, W], slices first, whole; this network takes its loader's order (slices last) and patches: wrap it to permute, then set kind and size = [D, H, W].",
                shown(&spatial)
            ));
            line(format!("size = [{h}, {w}]"));
            todo(
                "input.size",
                true,
                format!(
                    "a volume input ({}): wrap the network to take [1, C, D, H, W] (slices first, the whole series) and set input.kind = \"volume\"",
                    shown(&spatial)
                ),
            );
        }
        _ => {
            line(format!("# TODO: [height, width]: {inp}.spatial_shape is {}.", shown(&spatial)));
            line("size = [0, 0]".into());
            todo("input.size", true, format!("{inp}.spatial_shape is {}: give the model's [height, width]", shown(&spatial)));
        }
    }
    let channels = input.get("num_channels").and_then(Value::as_u64).unwrap_or(0);
    let in_format = text_of(input, "format").unwrap_or_default().to_ascii_lowercase();
    if channels == 1 || channels == 3 {
        line(format!("channels = {channels}"));
        inferred.push(format!("input.channels = {channels} ({inp}.num_channels)"));
        if channels == 3 && in_format.contains("rgb") {
            line("color = \"rgb\"".into());
            inferred.push(format!("input.color = \"rgb\" ({inp}.format {in_format:?})"));
        } else if channels == 3 {
            line("# TODO: 3 channels of the windowed grey image (one window per channel possible); \"rgb\" for colour images.".into());
            todo("input.color", false, "grey repeated over 3 channels written; \"rgb\" if the model takes colour images".into());
        }
    } else {
        line(format!("# TODO: {inp}.num_channels is {channels}; the node feeds 1 or 3 channels."));
        line(format!("channels = {channels}"));
        todo("input.channels", true, format!("{inp}.num_channels is {channels}: the node feeds 1 or 3 channels"));
    }
    let range = input.get("value_range").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_f64).collect::<Vec<_>>());
    match range.as_deref() {
        Some([lo, hi]) if *lo == 0.0 && *hi == 1.0 => inferred.push(format!("input.range = \"0..1\" ({inp}.value_range)")),
        Some([lo, hi]) if *lo == 0.0 && *hi == 255.0 => {
            line("range = \"0..255\"".into());
            inferred.push(format!("input.range = \"0..255\" ({inp}.value_range)"));
        }
        other => {
            line(format!("# TODO: {inp}.value_range is {other:?}; the node scales white to 0..1 (or \"0..255\") before mean/std."));
            todo(
                "input.range",
                false,
                format!("{inp}.value_range is {other:?}: \"0..1\" written; set range, mean and std so the model sees its training values"),
            );
        }
    }
    match text_of(input, "dtype").as_deref() {
        Some("float32") | None => {}
        Some("float16") => {
            line("dtype = \"float16\"".into());
            inferred.push(format!("input.dtype = \"float16\" ({inp}.dtype)"));
        }
        Some(other) => todo("input.dtype", false, format!("{inp}.dtype is {other:?}; the node feeds float32 (or float16)")),
    }
    let routed = routed.unwrap_or_default();
    if routed.iter().any(|m| m == "CT") || in_format == "hounsfield" {
        line("# TODO: the HU window the model was trained with, e.g. CT = { center = 40, width = 400 }: from".into());
        line("# configs/inference.json's ScaleIntensityRanged, center = (a_min + a_max) / 2, width = a_max - a_min.".into());
        todo(
            "input.window",
            false,
            "CT: the file's window is written; give the HU window of training (inference.json's ScaleIntensityRanged a_min/a_max)".into(),
        );
    }
    if !routed.is_empty() {
        let windows: Vec<String> = routed.iter().map(|m| format!("{m} = \"file\"")).collect();
        line(format!("window = {{ {} }}", windows.join(", ")));
    }
    line("# TODO: the normalisation of training (configs/inference.json's NormalizeIntensityd, if any).".into());
    line("mean = 0.0".into());
    line("std = 1.0".into());
    todo("input.mean / input.std", false, "0 / 1 written; copy the normalisation of configs/inference.json's preprocessing".into());
    if input.get("is_patch_data").and_then(Value::as_bool) == Some(true) {
        todo("input.size", false, format!("{inp}.is_patch_data: trained on patches; the node resizes the whole image to input.size"));
    }

    // Outputs.
    line(String::new());
    line("[outputs]".into());
    let out_type = text_of(output, "type").unwrap_or_default().to_ascii_lowercase();
    let out_format = text_of(output, "format").unwrap_or_default().to_ascii_lowercase();
    let out_spatial = dims(output.get("spatial_shape"));
    let segmentation = out_format == "segmentation" || (out_type == "image" && out_spatial.len() >= 2);
    // A 2D segmentation head runs here (`outputs.kind = "segmentation"`: a DICOM SEG and area in
    // the SR); a 3D one does not (volume models are classifiers).
    if segmentation {
        line("kind = \"segmentation\"".into());
        inferred.push(format!("outputs.kind = \"segmentation\" ({out}.format {out_format:?}: per-pixel class scores)"));
        if spatial.len() != 2 {
            unsupported.push(format!("a 3D segmentation output ({out}.format {out_format:?}, spatial_shape {})", shown(&out_spatial)));
        }
    }
    let num = output.get("num_channels").and_then(Value::as_u64).unwrap_or(0) as usize;
    let mut defined: Vec<(u64, String)> = output
        .get("channel_def")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.trim().parse::<u64>().ok()?, v.as_str()?.trim().to_string()))).collect())
        .unwrap_or_default();
    defined.sort();
    let labels: Vec<String> = if !defined.is_empty() && defined.iter().enumerate().all(|(i, (k, l))| *k == i as u64 && !l.is_empty()) {
        if num != 0 && num != defined.len() {
            todo("outputs.labels", false, format!("{out}.channel_def names {} classes, num_channels says {num}", defined.len()));
        }
        inferred.push(format!("outputs.labels ({out}.channel_def)"));
        defined.into_iter().map(|(_, l)| l).collect()
    } else {
        let n = num.max(1);
        todo("outputs.labels", false, format!("{out}.channel_def gives no names for channels 0..{n}; class_0.. written"));
        (0..n).map(|i| format!("class_{i}")).collect()
    };
    line(format!("labels = {}", quoted_list(&labels)));
    let negative = labels.iter().find(|l| l.eq_ignore_ascii_case("background")).filter(|_| labels.len() >= 2);
    if let Some(n) = negative {
        line(format!("negative = {}", quoted(n)));
        inferred.push(format!("outputs.negative = {n:?} (the background class)"));
    }
    let ones = vec!["1.0"; labels.len()].join(", ");
    line("# TODO: the operating point per label, chosen on this site's cases with `triage-node evaluate`.".into());
    line("# Placeholders of 1.0 flag nothing short of a saturated output.".into());
    line(format!("positive = [{ones}]"));
    line(format!("urgent = [{ones}]"));
    todo(
        "outputs.positive / outputs.urgent",
        false,
        "1.0 per label written (nothing flagged short of a saturated output); choose the operating point with `triage-node evaluate`".into(),
    );
    line(if segmentation { "mask = 0" } else { "probabilities = 0" }.into());
    let probabilities = out_type.contains("probabilit") || out_format.contains("probabilit");
    let exclusive = labels.len() >= 2;
    let (activation, why) = if segmentation {
        (if exclusive { "softmax" } else { "sigmoid" }, "a segmentation head gives logits")
    } else if probabilities {
        ("none", "the bundle says its output is probabilities")
    } else if exclusive {
        ("softmax", "a classification head gives logits; softmax over exclusive classes")
    } else {
        ("sigmoid", "a one-class head gives a logit")
    };
    line(format!("# {why}: check configs/inference.json's postprocessing (an Activations transform there means model.ts returns logits)."));
    line(format!("activation = \"{activation}\""));
    inferred.push(format!("outputs.activation = \"{activation}\" ({out}.type {out_type:?}, format {out_format:?}: {why})"));
    todo(
        "outputs.activation",
        false,
        format!("\"{activation}\" inferred ({why}); confirm against configs/inference.json's postprocessing (Activations: softmax / sigmoid)"),
    );
    let examples: Vec<String> = labels.iter().map(|l| format!("SCT:TODO:{l}")).collect();
    line("# TODO: the finding's SNOMED CT code per label (\"SCHEME:VALUE:Meaning\", one per label, the negative".into());
    line("# class's unused); without codes the SR uses private 99TRIAGE codes named after the labels.".into());
    line(format!("# codes = {}", quoted_list(&examples)));
    todo("outputs.codes", false, "none written (private 99TRIAGE codes); give a SNOMED CT code per label".into());

    line(String::new());
    line("[aggregate]".into());
    line("# TODO: how slice results become a series result: \"max\", \"mean_top_k\" or \"adjacent\" (with k).".into());
    line("method = \"max\"".into());
    todo("aggregate.method", false, "\"max\" written; review for multi-image series".into());

    if !unsupported.is_empty() {
        todo("(model)", true, format!("this node runs 2D classifiers today; {} is issue-31 work", unsupported.join(" and ")));
    }
    let mut manifest = toml.join("\n");
    manifest.push('\n');
    Ok(Draft { manifest, inferred, todos, unsupported })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::package::{Activation, Manifest, OutputKind};

    /// A 2D two-class classifier on 64x64 grey CR, written the way MONAI's bundles write it.
    fn classifier() -> Value {
        serde_json::json!({
            "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
            "version": "0.1.0",
            "monai_version": "1.3.0",
            "name": "CR pneumothorax classification",
            "task": "Pneumothorax classification",
            "description": "A pre-trained model for classifying frontal chest radiographs",
            "authors": "MONAI team",
            "intended_use": "This is an example, not to be used for diagnostic purposes",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "CR", "num_channels": 1,
                    "spatial_shape": [64, 64], "dtype": "float32", "value_range": [0, 1], "is_patch_data": false,
                    "channel_def": {"0": "image"}}},
                "outputs": {"pred": {"type": "logits", "format": "classification", "num_channels": 2,
                    "spatial_shape": [2], "dtype": "float32", "value_range": [], "channel_def": {"0": "background", "1": "pneumothorax"}}}
            }
        })
    }

    fn load(text: &str) -> Result<Manifest, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.toml"), text).unwrap();
        Manifest::load(&dir.path().join("model.toml")).map_err(|e| e.to_string())
    }

    fn blocking(d: &Draft) -> Vec<&str> {
        d.todos.iter().filter(|t| t.blocking).map(|t| t.field.as_str()).collect()
    }

    /// A complete 2D classifier's draft loads as written: a demonstration, with thresholds
    /// that flag nothing, and every placeholder listed.
    #[test]
    fn a_2d_segmentation_bundle_gives_a_segmentation_manifest_the_node_parses() {
        let mut v = classifier();
        v["network_data_format"]["outputs"]["pred"] = serde_json::json!({"type": "image", "format": "segmentation", "num_channels": 2,
            "spatial_shape": [64, 64], "dtype": "float32", "value_range": [], "channel_def": {"0": "background", "1": "lesion"}});
        let d = draft(&v, "cr-lesion").unwrap();
        assert!(d.unsupported.is_empty() && blocking(&d).is_empty(), "{:?} {:?}", d.unsupported, d.todos);
        let m = load(&d.manifest).unwrap_or_else(|e| panic!("{e}\n{}", d.manifest));
        assert_eq!((m.outputs.kind, m.outputs.mask, m.outputs.probabilities), (OutputKind::Segmentation, Some(0), None), "{}", d.manifest);
        assert_eq!((m.outputs.negative.as_deref(), m.outputs.activation), (Some("background"), Activation::Softmax));
    }

    #[test]
    fn a_2d_classifier_gives_a_manifest_the_node_parses() {
        let d = draft(&classifier(), "cr-ptx").unwrap();
        assert!(d.unsupported.is_empty() && blocking(&d).is_empty(), "{:?}", d.todos);
        let m = load(&d.manifest).unwrap_or_else(|e| panic!("{e}\n{}", d.manifest));
        assert_eq!((m.name.as_str(), m.version.as_str(), m.demonstration), ("cr-ptx", "0.1.0", true));
        assert_eq!(m.manufacturer.as_deref(), Some("MONAI team"));
        assert!(m.intended_use.contains("classifying frontal chest radiographs"), "{}", m.intended_use);
        assert!(m.limits.contains("not to be used for diagnostic purposes"), "{}", m.limits);
        assert_eq!((m.routing.modalities.as_slice(), m.routing.body_parts.len()), (&["CR".to_string()][..], 0));
        assert_eq!((m.input.size, m.input.channels), ([64, 64], 1));
        assert_eq!(m.outputs.labels, ["background", "pneumothorax"]);
        assert_eq!((m.outputs.negative.as_deref(), m.outputs.activation), (Some("background"), Activation::Softmax));
        assert_eq!((m.outputs.positive.as_slice(), m.outputs.urgent.as_slice()), (&[1.0, 1.0][..], &[1.0, 1.0][..]));
        let fields: Vec<&str> = d.todos.iter().map(|t| t.field.as_str()).collect();
        for f in ["demonstration", "routing.body_parts", "outputs.positive / outputs.urgent", "outputs.codes", "outputs.activation", "limits"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(!fields.contains(&"input.window"), "no HU window for a CR model");
    }

    /// What the format says picks the activation; odd modalities, symbolic sizes and channel
    /// counts the node cannot feed are listed as blocking.
    #[test]
    fn activations_and_blocking_todos_follow_the_metadata() {
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut v = classifier();
            edit(&mut v);
            draft(&v, "m").unwrap()
        };
        let probs = with(&|v| v["network_data_format"]["outputs"]["pred"]["type"] = "probabilities".into());
        assert_eq!(load(&probs.manifest).unwrap().outputs.activation, Activation::None);
        let one = with(&|v| {
            let pred = &mut v["network_data_format"]["outputs"]["pred"];
            pred["num_channels"] = 1.into();
            pred["channel_def"] = serde_json::json!({"0": "nodule"});
        });
        let m = load(&one.manifest).unwrap();
        assert_eq!((m.outputs.activation, m.outputs.negative), (Activation::Sigmoid, None));
        let xray = with(&|v| v["network_data_format"]["inputs"]["image"]["modality"] = "X-ray".into());
        assert_eq!(load(&xray.manifest).unwrap().routing.modalities, ["CR", "DX"]);
        let symbolic = with(&|v| v["network_data_format"]["inputs"]["image"]["spatial_shape"] = serde_json::json!(["32*n", "32*n"]));
        assert_eq!(blocking(&symbolic), ["input.size"]);
        assert!(symbolic.manifest.contains("\"32*n\""), "{}", symbolic.manifest);
        assert!(load(&symbolic.manifest).unwrap_err().contains("input.size"));
        let filled = symbolic.manifest.replace("size = [0, 0]", "size = [64, 64]");
        assert!(load(&filled).is_ok(), "filling the TODO makes it load");
        let fish = with(&|v| v["network_data_format"]["inputs"]["image"]["modality"] = "fish".into());
        assert_eq!(blocking(&fish), ["routing.modalities"]);
        assert!(load(&fish.manifest).unwrap_err().contains("routing.modalities"));
        let two = with(&|v| v["network_data_format"]["inputs"]["image"]["num_channels"] = 2.into());
        assert_eq!(blocking(&two), ["input.channels"]);
        let hu = with(&|v| {
            let image = &mut v["network_data_format"]["inputs"]["image"];
            image["modality"] = "CT".into();
            image["format"] = "hounsfield".into();
        });
        assert!(hu.todos.iter().any(|t| t.field == "input.window"), "{:?}", hu.todos);
        assert!(load(&hu.manifest).is_ok());
        let quoted = with(&|v| v["description"] = "says \"hi\"\nand \\ more".into());
        assert!(load(&quoted.manifest).unwrap().intended_use.contains("says \"hi\"\nand \\ more"));
    }

    /// A 3D segmentation bundle (MONAI's spleen_ct_segmentation) still gets a draft, and says
    /// the node cannot run it.
    #[test]
    fn a_volume_segmentation_bundle_is_drafted_but_flagged_unsupported() {
        let spleen = serde_json::json!({
            "version": "0.5.9", "name": "Spleen CT segmentation", "authors": ["MONAI team"],
            "description": "A pre-trained model for volumetric (3D) segmentation of the spleen from CT image",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                    "spatial_shape": [96, 96, 96], "dtype": "float32", "value_range": [0, 1], "is_patch_data": true,
                    "channel_def": {"0": "image"}}},
                "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                    "spatial_shape": [96, 96, 96], "dtype": "float32", "value_range": [0, 1], "is_patch_data": true,
                    "channel_def": {"0": "background", "1": "spleen"}}}
            }
        });
        let d = draft(&spleen, "spleen").unwrap();
        assert_eq!(d.unsupported.len(), 2, "{:?}", d.unsupported);
        assert!(d.unsupported[0].contains("3D input") && d.unsupported[1].contains("3D segmentation"), "{:?}", d.unsupported);
        assert_eq!(blocking(&d), ["input.size", "(model)"]);
        let m = load(&d.manifest).unwrap();
        assert_eq!((m.outputs.activation, m.outputs.negative.as_deref()), (Activation::Softmax, Some("background")));
        assert_eq!(m.routing.modalities, ["CT"]);
    }

    #[test]
    fn metadata_without_a_network_data_format_is_refused() {
        assert!(draft(&serde_json::json!({"name": "x"}), "x").unwrap_err().contains("network_data_format"));
        let no_pred = serde_json::json!({"network_data_format": {"inputs": {"image": {}}, "outputs": {"a": {}, "b": {}}}});
        assert!(draft(&no_pred, "x").unwrap_err().contains("pred"));
    }

    #[test]
    fn package_names() {
        assert_eq!(name_from_folder("Spleen CT seg"), "spleen-ct-seg");
        assert_eq!(name_from_folder("..x"), "x");
        assert_eq!(name_from_folder(""), "imported");
        assert!(valid_name("spleen_ct-1.0") && !valid_name("../x") && !valid_name(".hidden") && !valid_name("a/b"));
    }
}
