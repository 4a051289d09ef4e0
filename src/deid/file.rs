//! De-identify a Part 10 file into a new Part 10 file, in bounded memory.
//!
//! Only the attributes before Pixel Data are parsed (a few KiB); the Pixel Data element is
//! copied byte for byte from the input, so a 200 MB instance costs no more memory than a small
//! one. The transfer syntax is kept. A deflated data set cannot be split that way and is
//! processed whole in memory (deflate is rare and used for small, non-image objects).
//! Elements after Pixel Data (Data Set Trailing Padding, Digital Signatures: X in the table)
//! are not carried over.
//!
//! Owns: reading the header part, writing File Meta Information + data set + copied pixels,
//! file durability when asked. Must not: touch the database or log values.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::engine::{DeidError, Deidentified, Deidentifier};
use crate::association::negotiation::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("transfer syntax {0} is not supported for de-identification")]
    TransferSyntax(String),
    #[error("the data set cannot be parsed for de-identification: {0}")]
    Parse(String),
    #[error("the de-identified data set cannot be encoded: {0}")]
    Encode(String),
    #[error(transparent)]
    Deid(#[from] DeidError),
    #[error("{path} is not a DICOM Part 10 file: {reason}")]
    NotPart10 { path: PathBuf, reason: String },
}

/// Where the data set of an input file is and what the structural scan found.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub path: &'a Path,
    pub dataset_offset: u64,
    pub dataset_len: u64,
    pub transfer_syntax: &'a str,
    /// Top-level Pixel Data (start, end), relative to the data set; `None` if absent.
    pub pixel_data: Option<(u64, u64)>,
}

/// The de-identified instance's description (the object itself has been written).
#[derive(Debug)]
pub struct Written {
    pub deid: Deidentified,
    pub pixels_written: bool,
    pub size_bytes: u64,
}

/// De-identify `input` into a new file at `output` (created, never overwritten). When
/// `drop_burned_in` and the instance may show identity in its pixels, Pixel Data is left out.
pub fn deidentify_file(d: &Deidentifier, input: &Input<'_>, output: &Path, drop_burned_in: bool, fsync: bool) -> Result<Written, FileError> {
    let ts = TransferSyntaxRegistry.get(input.transfer_syntax).ok_or_else(|| FileError::TransferSyntax(input.transfer_syntax.into()))?;
    let read_err = |source| FileError::Read { path: input.path.to_path_buf(), source };
    let mut file = File::open(input.path).map_err(read_err)?;
    file.seek(SeekFrom::Start(input.dataset_offset)).map_err(read_err)?;
    let deflated = input.transfer_syntax == "1.2.840.10008.1.2.1.99";
    // Split at Pixel Data unless deflated (then the offsets are not file offsets).
    let split = if deflated { None } else { input.pixel_data };
    let head_len = split.map_or(input.dataset_len, |(start, _)| start);
    let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(BufReader::new((&mut file).take(head_len)), ts)
        .map_err(|e| FileError::Parse(e.to_string()))?;
    let mut deid = d.apply(obj)?;
    let drop_pixels = drop_burned_in && deid.burned_in.is_some();
    if drop_pixels {
        deid.object.remove_element(tags::PIXEL_DATA);
    }

    let write_err = |source| FileError::Write { path: output.to_path_buf(), source };
    let out = std::fs::OpenOptions::new().write(true).create_new(true).open(output).map_err(write_err)?;
    let mut w = BufWriter::with_capacity(256 << 10, out);
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(deid.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(deid.sop_instance_uid.as_str())
        .transfer_syntax(input.transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| FileError::Encode(e.to_string()))?;
    w.write_all(&[0u8; 128]).and_then(|_| w.write_all(b"DICM")).map_err(write_err)?;
    meta.write(&mut w).map_err(|e| FileError::Encode(e.to_string()))?;
    deid.object.write_dataset_with_ts(&mut w, ts).map_err(|e| FileError::Encode(e.to_string()))?;
    let mut pixels_written = split.is_none() && !drop_pixels && deid.object.element_opt(tags::PIXEL_DATA).ok().flatten().is_some();
    if let (Some((start, end)), false) = (split, drop_pixels) {
        file.seek(SeekFrom::Start(input.dataset_offset + start)).map_err(read_err)?;
        let copied = std::io::copy(&mut (&mut file).take(end - start), &mut w).map_err(write_err)?;
        if copied != end - start {
            return Err(read_err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "pixel data shorter than scanned")));
        }
        pixels_written = true;
    }
    let out = w.into_inner().map_err(|e| write_err(e.into_error()))?;
    if fsync {
        out.sync_all().map_err(write_err)?;
    }
    let size_bytes = out.metadata().map_err(write_err)?.len();
    Ok(Written { deid, pixels_written, size_bytes })
}

/// Locate the data set of a Part 10 file on disk and scan it (for `triage-node deid`).
pub fn describe(path: &Path) -> Result<(u64, u64, String, Option<(u64, u64)>), FileError> {
    let not = |reason: &str| FileError::NotPart10 { path: path.to_path_buf(), reason: reason.into() };
    let mut file = File::open(path).map_err(|source| FileError::Read { path: path.to_path_buf(), source })?;
    let total = file.metadata().map_err(|source| FileError::Read { path: path.to_path_buf(), source })?.len();
    let mut preamble = [0u8; 132];
    file.read_exact(&mut preamble).map_err(|_| not("shorter than a preamble"))?;
    if &preamble[128..] != b"DICM" {
        return Err(not("no DICM prefix"));
    }
    file.seek(SeekFrom::Start(128)).map_err(|source| FileError::Read { path: path.to_path_buf(), source })?;
    // from_reader reads "DICM" and then exactly the meta group (its group length says how much).
    let mut counted = CountingReader { inner: BufReader::new(&mut file), n: 0 };
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut counted).map_err(|e| not(&e.to_string()))?;
    let dataset_offset = 128 + counted.n;
    let ts_uid = meta.transfer_syntax().trim_end_matches('\0').to_string();
    let ts = crate::association::sop::transfer_syntax(&ts_uid).ok_or_else(|| FileError::TransferSyntax(ts_uid.clone()))?;
    file.seek(SeekFrom::Start(dataset_offset)).map_err(|source| FileError::Read { path: path.to_path_buf(), source })?;
    let fields = crate::ingest::scan::scan(&mut file, Some(total - dataset_offset), ts).map_err(|e| FileError::Parse(e.to_string()))?;
    Ok((dataset_offset, total - dataset_offset, ts_uid, fields.pixel_data))
}

/// Counts bytes actually consumed, so the data set offset is exact even through a BufReader.
struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// De-identify the Part 10 file `input` into the folder `out_dir` as `<new SOP Instance UID>.dcm`
/// (names of input files may identify a patient; output names never do). Returns the path.
pub fn export(d: &Deidentifier, input: &Path, out_dir: &Path, drop_burned_in: bool) -> Result<(PathBuf, Written), FileError> {
    let (dataset_offset, dataset_len, ts, pixel_data) = describe(input)?;
    let staging = out_dir.join(format!(".{}.part", uuid::Uuid::new_v4()));
    let src = Input { path: input, dataset_offset, dataset_len, transfer_syntax: &ts, pixel_data };
    let written = deidentify_file(d, &src, &staging, drop_burned_in, false).inspect_err(|_| {
        let _ = std::fs::remove_file(&staging);
    })?;
    let target = out_dir.join(format!("{}.dcm", written.deid.sop_instance_uid));
    std::fs::rename(&staging, &target).map_err(|source| {
        let _ = std::fs::remove_file(&staging);
        FileError::Write { path: target.clone(), source }
    })?;
    Ok((target, written))
}
