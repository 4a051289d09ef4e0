//! DICOM Part 10 files (PS3.10 section 7): the File Meta Information, and who we say we are in
//! it and in association negotiation.

use std::path::Path;

/// Our Implementation Class UID (a UUID-derived UID, PS3.5 Annex B.2).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.295948990826898533780275983353880880464";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("TRIAGE_", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum Part10Error {
    #[error("reading {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path} is not a DICOM Part 10 file: {reason}")]
    NotPart10 { path: String, reason: String },
}

/// What the File Meta Information of a Part 10 file says, and where its data set starts.
#[derive(Debug, Clone)]
pub struct Part10 {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub dataset_offset: u64,
}

impl Part10 {
    fn from_meta(meta: &dicom_object::meta::FileMetaTable, dataset_offset: u64) -> Part10 {
        Part10 {
            sop_class_uid: meta.media_storage_sop_class_uid().to_string(),
            sop_instance_uid: meta.media_storage_sop_instance_uid().to_string(),
            transfer_syntax_uid: meta.transfer_syntax().to_string(),
            dataset_offset,
        }
    }
}

/// Read the File Meta Information of `path` (not the data set).
pub fn read(path: &Path) -> Result<Part10, Part10Error> {
    use std::io::{Read, Seek};
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|source| Part10Error::Read { path: name.clone(), cause: source })?;
    let mut preamble = [0u8; 128];
    file.read_exact(&mut preamble).map_err(|source| Part10Error::Read { path: name.clone(), cause: source })?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut file).map_err(|e| Part10Error::NotPart10 { path: name.clone(), reason: e.to_string() })?;
    let dataset_offset = file.stream_position().map_err(|source| Part10Error::Read { path: name, cause: source })?;
    Ok(Part10::from_meta(&meta, dataset_offset))
}

/// The File Meta Information of a Part 10 object held in memory; `name` says what it is in errors.
pub fn read_bytes(bytes: &[u8], name: &str) -> Result<Part10, Part10Error> {
    // After the 128-byte preamble; from_reader checks "DICM" and reads exactly the meta group.
    let mut rest = bytes.get(128..).unwrap_or_default();
    let meta =
        dicom_object::meta::FileMetaTable::from_reader(&mut rest).map_err(|e| Part10Error::NotPart10 { path: name.to_string(), reason: e.to_string() })?;
    Ok(Part10::from_meta(&meta, (bytes.len() - rest.len()) as u64))
}
