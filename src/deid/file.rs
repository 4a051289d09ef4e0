//! De-identified Part 10 encoding, in bounded memory.
//!
//! A data set is split at its first top-level group 7FE0 element: only the attributes before it
//! (a few KiB) are parsed and de-identified; the pixel group is carried over byte for byte, so a
//! 200 MB instance costs no more memory than a small one. The transfer syntax is kept. Top-level
//! elements after group 7FE0 (Data Set Trailing Padding, Digital Signatures, private groups: all
//! removed by the profile) are not carried over. A deflated data set cannot be split and is
//! processed whole in memory. Ingest uses `deidentify_header` on the bytes as they arrive;
//! `deidentify_file` does the same for a file on disk (`triage-node deid`).
//!
//! Owns: parsing the header part, encoding File Meta Information + data set, copying the pixel
//! group. Must not: touch the database or log values.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::engine::{DeidError, Deidentified, Deidentifier};
use crate::dicom::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("writing {path}: {cause}")]
    Write { path: PathBuf, cause: std::io::Error },
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

/// Where a Part 10 file's data set is, and where its pixel group starts and ends.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dataset_offset: u64,
    pub dataset_len: u64,
    pub transfer_syntax: String,
    /// First top-level group 7FE0 element, relative to the data set (None if absent or deflated).
    pub pixel_group_at: Option<u64>,
    /// First top-level element after group 7FE0, relative to the data set.
    pub trailing_from: Option<u64>,
}

impl Layout {
    /// The byte range kept after the de-identified header: the pixel group, without trailers.
    pub fn pixel_range(&self) -> Option<(u64, u64)> {
        self.pixel_group_at.map(|start| (start, self.trailing_from.unwrap_or(self.dataset_len)))
    }
}

/// The de-identified instance's description (the object itself has been written).
#[derive(Debug)]
pub struct Written {
    pub deid: Deidentified,
    pub pixels_written: bool,
    pub size_bytes: u64,
}

/// Parse `head` (a data set, or its part before the pixel group) in transfer syntax `ts_uid`,
/// de-identify it, and encode File Meta Information and data set as the start of a Part 10
/// file. When `drop_burned_in` and the pixels may show identity, any pixel data in `head` is
/// removed; the caller must then not append the pixel group either (see `drops_pixels`).
pub fn deidentify_header(d: &Deidentifier, head: &[u8], ts_uid: &str, drop_burned_in: bool) -> Result<(Deidentified, Vec<u8>), FileError> {
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| FileError::TransferSyntax(ts_uid.into()))?;
    let (head, un_sequences) = split_undefined_un(head, ts_uid)?;
    let mut obj = dicom_object::InMemDicomObject::read_dataset_with_ts(&head[..], ts).map_err(|e| FileError::Parse(e.to_string()))?;
    for elem in un_sequences {
        obj.put(elem);
    }
    let mut deid = d.apply(obj)?;
    if drops_pixels(&deid, drop_burned_in) {
        let pixel_group: Vec<_> = deid.object.tags().filter(|t| t.group() == 0x7FE0).collect();
        for tag in pixel_group {
            deid.object.remove_element(tag);
        }
    }
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(deid.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(deid.sop_instance_uid.as_str())
        .transfer_syntax(ts_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| FileError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(head.len() + 1024);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| FileError::Encode(e.to_string()))?;
    deid.object.write_dataset_with_ts(&mut out, ts).map_err(|e| FileError::Encode(e.to_string()))?;
    Ok((deid, out))
}

/// Take the undefined-length UN elements out of an explicit-VR header (their items are in
/// Implicit VR Little Endian, PS3.5 6.2.2, which the explicit parser cannot read), each read
/// apart as the sequence it is; the engine then de-identifies it like any sequence. One that
/// does not parse is dropped (removed). Such an element nested inside a sequence cannot be cut
/// out without rewriting its parents' lengths: the instance is refused, saying so.
fn split_undefined_un<'a>(head: &'a [u8], ts_uid: &str) -> Result<(std::borrow::Cow<'a, [u8]>, Vec<dicom_object::mem::InMemElement>), FileError> {
    let Some(ts) = crate::dicom::sop::transfer_syntax(ts_uid) else { return Ok((head.into(), Vec::new())) };
    let ranges = crate::dicom::scan::undefined_un_elements(head, ts).map_err(|e| FileError::Parse(e.to_string()))?;
    if ranges.is_empty() {
        return Ok((head.into(), Vec::new()));
    }
    if ranges.iter().any(|&(_, _, top)| !top) {
        return Err(FileError::Parse("a sequence of unknown VR (UN, undefined length) nested inside another sequence".into()));
    }
    let implicit = TransferSyntaxRegistry.get("1.2.840.10008.1.2").ok_or_else(|| FileError::TransferSyntax("1.2.840.10008.1.2".into()))?;
    use dicom_core::header::Header;
    let (mut kept, mut elements, mut at) = (Vec::with_capacity(head.len()), Vec::new(), 0usize);
    for (start, end, _) in ranges {
        let (start, end) = (start as usize, end as usize);
        kept.extend_from_slice(&head[at..start]);
        at = end;
        // Explicit header: tag (4), "UN", reserved (2), length (4); the value follows.
        let element = &head[start..end];
        let (group, elem) = if ts.big_endian {
            (u16::from_be_bytes([element[0], element[1]]), u16::from_be_bytes([element[2], element[3]]))
        } else {
            (u16::from_le_bytes([element[0], element[1]]), u16::from_le_bytes([element[2], element[3]]))
        };
        let mut encoded = Vec::with_capacity(element.len());
        encoded.extend_from_slice(&group.to_le_bytes());
        encoded.extend_from_slice(&elem.to_le_bytes());
        encoded.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        encoded.extend_from_slice(&element[12..]);
        if let Ok(parsed) = dicom_object::InMemDicomObject::read_dataset_with_ts(&encoded[..], implicit) {
            elements.extend(parsed.into_iter().filter(|e| e.tag() == dicom_core::Tag(group, elem) && e.vr() == dicom_core::VR::SQ));
        }
    }
    kept.extend_from_slice(&head[at..]);
    Ok((kept.into(), elements))
}

/// Whether the pixels of this instance are left out under the burned-in policy.
pub fn drops_pixels(deid: &Deidentified, drop_burned_in: bool) -> bool {
    drop_burned_in && deid.burned_in.is_some()
}

/// De-identify the Part 10 file `input` into a new file `output` (created, never overwritten):
/// the header part in memory, the pixel group copied byte for byte. The same bytes ingest
/// writes for the same data set received over the network.
pub fn deidentify_file(d: &Deidentifier, input: &Path, output: &Path, drop_burned_in: bool) -> Result<Written, FileError> {
    let layout = describe(input)?;
    let read_err = |source| FileError::Read { path: input.to_path_buf(), cause: source };
    let mut file = File::open(input).map_err(read_err)?;
    file.seek(SeekFrom::Start(layout.dataset_offset)).map_err(read_err)?;
    let split = layout.pixel_range();
    let head_len = split.map_or(layout.dataset_len, |(start, _)| start);
    let mut head = Vec::with_capacity(head_len as usize);
    (&mut file).take(head_len).read_to_end(&mut head).map_err(read_err)?;
    let (deid, encoded) = deidentify_header(d, &head, &layout.transfer_syntax, drop_burned_in)?;
    let dropped = drops_pixels(&deid, drop_burned_in);

    let write_err = |source| FileError::Write { path: output.to_path_buf(), cause: source };
    let out = std::fs::OpenOptions::new().write(true).create_new(true).open(output).map_err(write_err)?;
    let mut w = BufWriter::with_capacity(256 << 10, out);
    w.write_all(&encoded).map_err(write_err)?;
    let mut pixels_written = split.is_none() && deid.object.get(tags::PIXEL_DATA).is_some();
    if let (Some((start, end)), false) = (split, dropped) {
        file.seek(SeekFrom::Start(layout.dataset_offset + start)).map_err(read_err)?;
        let copied = std::io::copy(&mut (&mut file).take(end - start), &mut w).map_err(write_err)?;
        if copied != end - start {
            return Err(read_err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "pixel data shorter than scanned")));
        }
        pixels_written = true;
    }
    let out = w.into_inner().map_err(|e| write_err(e.into_error()))?;
    let size_bytes = out.metadata().map_err(write_err)?.len();
    Ok(Written { deid, pixels_written, size_bytes })
}

/// Locate the data set of a Part 10 file on disk and scan it.
pub fn describe(path: &Path) -> Result<Layout, FileError> {
    let not = |reason: &str| FileError::NotPart10 { path: path.to_path_buf(), reason: reason.into() };
    let io = |source| FileError::Read { path: path.to_path_buf(), cause: source };
    let mut file = File::open(path).map_err(io)?;
    let total = file.metadata().map_err(io)?.len();
    file.seek(SeekFrom::Start(128)).map_err(io)?;
    // from_reader reads "DICM" and then exactly the meta group (its group length says how much).
    let mut counted = CountingReader { inner: BufReader::new(&mut file), n: 0 };
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut counted).map_err(|e| not(&e.to_string()))?;
    let dataset_offset = 128 + counted.n;
    let transfer_syntax = meta.transfer_syntax().trim_end_matches('\0').to_string();
    let ts = crate::dicom::sop::transfer_syntax(&transfer_syntax).ok_or_else(|| FileError::TransferSyntax(transfer_syntax.clone()))?;
    file.seek(SeekFrom::Start(dataset_offset)).map_err(io)?;
    let dataset_len = total.checked_sub(dataset_offset).ok_or_else(|| not("shorter than its meta information"))?;
    let fields = crate::dicom::scan::scan(&mut file, Some(dataset_len), ts).map_err(|e| FileError::Parse(e.to_string()))?;
    let (pixel_group_at, trailing_from) = if ts.deflated { (None, None) } else { (fields.pixel_group_at, fields.trailing_from) };
    Ok(Layout { dataset_offset, dataset_len, transfer_syntax, pixel_group_at, trailing_from })
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
    let staging = out_dir.join(format!(".{}.part", uuid::Uuid::new_v4()));
    let written = deidentify_file(d, input, &staging, drop_burned_in).inspect_err(|_| {
        let _ = std::fs::remove_file(&staging);
    })?;
    let target = out_dir.join(format!("{}.dcm", written.deid.sop_instance_uid));
    std::fs::rename(&staging, &target).map_err(|source| {
        let _ = std::fs::remove_file(&staging);
        FileError::Write { path: target.clone(), cause: source }
    })?;
    Ok((target, written))
}
