//! De-identified exports for research: files de-identified with the node's engine, keys and
//! options into a folder; each audited; nothing enters the re-identification map.

use std::path::{Path, PathBuf};

use super::{open, Access, AdminError};
use crate::config::{BurnedInPolicy, Settings};

/// One input file's outcome.
#[derive(Debug)]
pub struct Exported {
    pub input: PathBuf,
    pub result: Result<ExportedFile, String>,
}

#[derive(Debug)]
pub struct ExportedFile {
    pub output: PathBuf,
    /// Why the pixels were left out (burned-in annotation, or none in the input).
    pub pixels_left_out: Option<String>,
}

#[derive(Debug)]
pub struct Export {
    pub files: Vec<Exported>,
    /// The keys are the fixed public demo keys: the pseudonyms can be reversed.
    pub demo_keys: bool,
}

/// De-identify `input` (a file, or every file under a folder) into `out`.
pub async fn deidentify(settings: &Settings, input: &Path, out: &Path) -> Result<Export, AdminError> {
    let deid = settings.deid.deidentifier().map_err(|source| AdminError::Keys { why: "de-identification needs the site keys", source })?;
    let inputs = crate::delivery::collect_files(&[input.to_path_buf()])?;
    std::fs::create_dir_all(out).map_err(|source| AdminError::Io { what: "creating", path: out.display().to_string(), source })?;
    let db = open(settings, Access::Audited).await?;
    let drop_burned_in = settings.deid.burned_in_annotation == BurnedInPolicy::Exclude;
    let method: serde_json::Value = serde_json::from_str(deid.method_json()).map_err(|e| AdminError::Invalid(format!("de-identification method: {e}")))?;
    let mut files = Vec::with_capacity(inputs.len());
    for file in inputs {
        let result = match crate::deid::file::export(&deid, &file, out, drop_burned_in) {
            Ok((target, w)) => {
                let details = crate::audit::Deidentified {
                    instance_id: None,
                    calling_ae: None,
                    received_at_ms: None,
                    export: true,
                    method: method.clone(),
                    pixels: if w.pixels_written { "kept".into() } else { format!("not kept: {}", w.deid.burned_in.unwrap_or("no Pixel Data")) },
                };
                db.audit_append(&crate::audit::Event::Deidentify { instance: w.deid.sop_instance_uid.clone(), details }).await?;
                let pixels_left_out = (!w.pixels_written).then(|| w.deid.burned_in.unwrap_or("no Pixel Data").to_string());
                Ok(ExportedFile { output: target, pixels_left_out })
            }
            Err(e) => Err(e.to_string()),
        };
        files.push(Exported { input: file, result });
    }
    db.close().await;
    Ok(Export { files, demo_keys: deid.keys().demo })
}
