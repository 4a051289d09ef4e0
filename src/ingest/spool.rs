//! Receiving an instance into the store: its header is held in memory until the pixel group
//! starts, de-identified, and written to a new store file, to which the rest of the data set
//! (the pixel group) is streamed as it arrives. The original header never reaches the disk.
//!
//! Owns: store paths, the in-memory head and its bound (`MAX_HEAD`), double-buffered writes,
//! directory durability, start-up cleanup of the (legacy) spool folder.
//! Must not: decide whether an instance is acceptable (ingest does), or touch the database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::deid::file::{deidentify_header, FileError};
use crate::deid::{Deidentified, Deidentifier};
use crate::dicom::scan::{locate_pixel_group, PixelGroupEnd};
use crate::dicom::sop::TransferSyntax;

const WRITE_BUFFER: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("creating {path}: {cause}")]
    Create { path: PathBuf, cause: std::io::Error },
    #[error("writing {path}: {cause}")]
    Write { path: PathBuf, cause: std::io::Error },
    #[error("background task failed: {0}")]
    Task(String),
    #[error("free disk space {available} bytes fell below the configured floor of {floor} bytes while receiving")]
    OutOfDisk { available: u64, floor: u64 },
}

/// Directory layout under `data_dir`.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub data: PathBuf,
    pub spool: PathBuf,
    pub store: PathBuf,
}

impl Dirs {
    pub fn new(data_dir: &Path) -> Dirs {
        Dirs { data: data_dir.to_path_buf(), spool: data_dir.join("spool"), store: data_dir.join("store") }
    }

    /// Create the directories and delete spool files left by a crash: nothing in the spool was
    /// ever acknowledged, so nothing there is owed to anyone.
    pub fn prepare(&self) -> std::io::Result<usize> {
        std::fs::create_dir_all(&self.spool)?;
        std::fs::create_dir_all(&self.store)?;
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.spool)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A data set of at most this many bytes is held whole in memory and written in one go when it
/// has arrived (`Content::Whole`: one trip to the blocking pool, no re-reading from disk); a
/// larger one is split at its pixel group and streamed. A CT or MR slice (512x512x16 bit, about
/// 0.5 MB) stays under it; so memory per association stays about 1 MiB, now bounded by this
/// too (the held bytes, at most twice this in capacity while the buffer grows).
pub const IN_MEMORY: usize = 1 << 20;

/// Buffers for data sets held whole, kept from one instance to the next (at most
/// `KEPT_BUFFERS`, each of `HEAD_CAPACITY`): a new buffer per instance cost the C-STORE path
/// about a page fault per 4 KiB and a copy each time it grew (measured with 16 senders: page
/// faults and copies were a sixth of the node's CPU time).
#[derive(Clone, Default)]
pub struct HeadBuffers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Room for `IN_MEMORY` and the largest P-DATA-TF we accept arriving on top of it.
const HEAD_CAPACITY: usize = IN_MEMORY + (320 << 10);
const KEPT_BUFFERS: usize = 16;

impl HeadBuffers {
    fn take(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_else(|| Vec::with_capacity(HEAD_CAPACITY))
    }

    /// Keep `buf` for a later instance (emptied first; an oversized one is let go).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < HEAD_CAPACITY || buf.capacity() > 2 * HEAD_CAPACITY {
            return;
        }
        buf.clear();
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT_BUFFERS {
            kept.push(buf);
        }
    }
}

/// Beyond this many bytes before the pixel group (or in a data set that cannot be split), an
/// instance is refused rather than held in memory.
pub const MAX_HEAD: usize = 16 << 20;

/// What an incoming instance needs to be de-identified and written.
#[derive(Clone)]
pub struct Target {
    pub dirs: Dirs,
    pub day: String,
    pub deid: Arc<Deidentifier>,
    pub ts: &'static TransferSyntax,
    pub drop_burned_in: bool,
    /// The free-disk floor, checked again as the instance grows (every `DISK_CHECK_EVERY`).
    pub min_free_disk: u64,
    /// Where the buffer for a data set held whole comes from.
    pub buffers: HeadBuffers,
}

/// How many bytes may be written between two checks of the free-disk floor.
const DISK_CHECK_EVERY: u64 = 16 << 20;

/// Why an incoming instance cannot be kept, found while it was still arriving. The rest of its
/// bytes are read and dropped; the failure is answered at the end.
#[derive(Debug)]
pub enum Refusal {
    Deid(FileError),
    TooLarge,
}

/// A background write: gives the file and its (now written) buffer back.
type InFlightWrite = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Vec<u8>)>>;

/// An instance being received. Its first bytes (up to the pixel group) stay in memory; once
/// the pixel group starts, they are de-identified and written to a new store file, and every
/// later byte is appended to it as it arrives: 256 KiB buffers written on the blocking pool
/// *while the next one fills* (double buffering), each handed to the kernel for write-back at
/// once, so the final fsync has little left to do. The original header never reaches the disk.
pub struct IncomingFile {
    target: Target,
    head: Vec<u8>,
    next_locate_at: usize,
    state: State,
    hasher: blake3::Hasher,
    dataset_len: u64,
    /// Where the pixel group ends, once the header is split off: nothing after it is written.
    group: Option<(u64, PixelGroupEnd)>,
}

/// A header being de-identified, and the store file started with it, on the blocking pool.
type StartTask = tokio::task::JoinHandle<Result<Started, StartError>>;

struct Started {
    deid: Deidentified,
    header_len: u64,
    relative: PathBuf,
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    /// The pixels may show identity and are not kept: none of them was written.
    dropped: bool,
}

enum StartError {
    Deid(FileError),
    Spool(SpoolError),
}

/// While the header is de-identified, the bytes that keep arriving are held in memory up to
/// this much; past it, receiving waits for the de-identification.
const MAX_AHEAD: usize = 4 << 20;

enum State {
    /// Collecting the first bytes; `splittable` until the header proves it cannot be split.
    Head {
        splittable: bool,
    },
    /// The pixel group starts at `split`: the header before it is being de-identified and the
    /// store file started (with the pixel bytes received so far) while more bytes arrive.
    Deidentifying {
        split: u64,
        task: StartTask,
        ahead: Vec<u8>,
    },
    Streaming(Box<Streaming>),
    Refused(Refusal),
}

struct Streaming {
    /// Where the pixel group starts in the data set.
    split: u64,
    /// Bytes of File Meta Information + de-identified header at the start of the file.
    header_len: u64,
    deid: Deidentified,
    relative: PathBuf,
    path: PathBuf,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    in_flight: Option<InFlightWrite>,
    written: u64,
    min_free_disk: u64,
    data_dir: PathBuf,
    checked_at: u64,
}

/// An instance fully received.
pub struct Received {
    pub dataset_len: u64,
    /// The data set bytes kept: up to the end of the pixel group (trailers never kept).
    pub kept_len: u64,
    /// Keyed BLAKE3 (`Keys::content_mac`) of the data set bytes exactly as received (keyed, so
    /// that the original file cannot be linked to the row).
    pub digest: ReceivedDigest,
    pub content: Content,
}

/// The keyed digest of a received data set: done, or, for a data set held whole
/// (`Content::Whole`), still to be taken over the held bytes: the caller does that where it
/// costs no time, while the store file is being written back to the disk.
/// (One per instance, moved once: the hasher's 2 KB inline spare the C-STORE path an allocation.)
#[allow(clippy::large_enum_variant)]
pub enum ReceivedDigest {
    Done(String),
    OverWhole(blake3::Hasher),
}

impl ReceivedDigest {
    /// The hex digest; `whole` is the data set held whole (ignored when done).
    pub fn finish(self, whole: &[u8]) -> String {
        match self {
            ReceivedDigest::Done(hex) => hex,
            ReceivedDigest::OverWhole(mut mac) => {
                mac.update(whole);
                mac.finalize().to_hex().to_string()
            }
        }
    }
}

pub enum Content {
    /// The whole data set, in memory (at most `IN_MEMORY`; or no pixel group; or deflated).
    Whole(Vec<u8>),
    /// Header de-identified and written, pixel group appended (not yet synced).
    Split {
        head: Vec<u8>,
        split: u64,
        header_len: u64,
        deid: Box<Deidentified>,
        relative: PathBuf,
        path: PathBuf,
        file: std::fs::File,
    },
    Refused(Refusal),
}

impl IncomingFile {
    pub fn new(target: Target) -> IncomingFile {
        let splittable = !target.ts.deflated;
        let hasher = target.deid.keys().content_mac();
        let head = target.buffers.take();
        IncomingFile { target, head, next_locate_at: 0, state: State::Head { splittable }, hasher, dataset_len: 0, group: None }
    }

    /// The part of `bytes` (and any header bytes held back before them) in the pixel group.
    fn in_group<'a>(&mut self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let Some((_, group)) = &mut self.group else { return std::borrow::Cow::Borrowed(bytes) };
        let (release, n) = group.feed(bytes);
        if release.is_empty() {
            std::borrow::Cow::Borrowed(&bytes[..n])
        } else {
            std::borrow::Cow::Owned([release.as_slice(), &bytes[..n]].concat())
        }
    }

    /// Append data set bytes as they arrive from the network.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        // Bytes held in the head are digested when it is split, or by the caller of `finish`.
        if !matches!(self.state, State::Head { .. }) {
            self.hasher.update(bytes);
        }
        self.dataset_len += bytes.len() as u64;
        if matches!(self.state, State::Streaming(_) | State::Deidentifying { .. }) {
            let kept = self.in_group(bytes);
            if kept.is_empty() {
                return Ok(());
            }
            return match &mut self.state {
                State::Streaming(s) => s.write(&kept).await,
                State::Deidentifying { task, ahead, .. } => {
                    ahead.extend_from_slice(&kept);
                    if task.is_finished() || ahead.len() > MAX_AHEAD {
                        self.start_streaming().await?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            };
        }
        match &mut self.state {
            State::Refused(_) | State::Streaming(_) | State::Deidentifying { .. } => Ok(()),
            State::Head { splittable } => {
                let splittable = *splittable;
                self.head.extend_from_slice(bytes);
                if self.head.len() > MAX_HEAD {
                    self.head = Vec::new();
                    self.state = State::Refused(Refusal::TooLarge);
                    return Ok(());
                }
                if splittable && self.head.len() > IN_MEMORY && self.head.len() >= self.next_locate_at {
                    // Retried only each time the head has doubled: linear work overall.
                    self.next_locate_at = (self.head.len() * 2).max(16 << 10);
                    match locate_pixel_group(&self.head, self.target.ts) {
                        Ok(Some(split)) => self.split(split).await?,
                        Ok(None) => {}
                        // A malformed header: keep it whole; the final scan says what is wrong.
                        Err(_) => self.state = State::Head { splittable: false },
                    }
                }
                Ok(())
            }
        }
    }

    /// The pixel group starts at `split`: on the blocking pool, de-identify what precedes it
    /// and start the store file with it and the pixel bytes received so far, in one trip,
    /// without waiting (the network keeps being read meanwhile).
    async fn split(&mut self, split: u64) -> Result<(), SpoolError> {
        self.hasher.update(&self.head);
        let arrived = self.head.split_off(split as usize);
        self.head.shrink_to_fit();
        self.group = Some((split, PixelGroupEnd::new(self.target.ts)));
        let pixels = self.in_group(&arrived).into_owned();
        drop(arrived);
        let head = self.head.clone();
        let t = self.target.clone();
        let task = tokio::task::spawn_blocking(move || {
            let (deid, encoded) = deidentify_header(&t.deid, &head, t.ts.uid, t.drop_burned_in).map_err(StartError::Deid)?;
            let (relative, path) = store_path(&t.dirs, &t.day).map_err(StartError::Spool)?;
            // Pixels that may show identity and are not kept never reach the disk at all.
            let dropped = crate::deid::file::drops_pixels(&deid, t.drop_burned_in);
            let written = (|| {
                let mut file = create(&path)?;
                file.write_all(&encoded)?;
                let pixels: &[u8] = if dropped { &[] } else { &pixels };
                file.write_all(pixels)?;
                let written = (encoded.len() + pixels.len()) as u64;
                start_writeback(&file, 0, written);
                Ok((file, written))
            })();
            match written {
                Ok((file, written)) => Ok(Started { deid, header_len: encoded.len() as u64, relative, path, file, written, dropped }),
                Err(source) => {
                    let _ = std::fs::remove_file(&path);
                    Err(StartError::Spool(SpoolError::Write { path, cause: source }))
                }
            }
        });
        self.state = State::Deidentifying { split, task, ahead: Vec::new() };
        Ok(())
    }

    /// Wait for the header's de-identification and the store file's start; from then on,
    /// bytes are appended to the file.
    async fn start_streaming(&mut self) -> Result<(), SpoolError> {
        let State::Deidentifying { split, task, ahead } = std::mem::replace(&mut self.state, State::Head { splittable: false }) else {
            return Ok(());
        };
        let started = match task.await.map_err(|e| SpoolError::Task(e.to_string()))? {
            Ok(started) => started,
            Err(StartError::Spool(e)) => return Err(e),
            Err(StartError::Deid(e)) => {
                self.head = Vec::new();
                self.state = State::Refused(Refusal::Deid(e));
                return Ok(());
            }
        };
        let Started { deid, header_len, relative, path, file, written, dropped } = started;
        let ahead = if dropped {
            if let Some((_, group)) = &mut self.group {
                group.discard_rest();
            }
            Vec::new()
        } else {
            ahead
        };
        let (min_free_disk, data_dir) = (self.target.min_free_disk, self.target.dirs.data.clone());
        let mut streaming = Streaming {
            split,
            header_len,
            deid,
            relative,
            path,
            file: Some(file),
            buf: ahead,
            in_flight: None,
            written,
            min_free_disk,
            data_dir,
            checked_at: 0,
        };
        streaming.write(&[]).await?; // sends the backlog on if it fills a buffer
        self.state = State::Streaming(Box::new(streaming));
        Ok(())
    }

    /// Wait for the write in flight, so that `finish` or `discard` may run. Call before them.
    pub async fn settle(&mut self) -> Result<(), SpoolError> {
        if matches!(self.state, State::Deidentifying { .. }) {
            self.start_streaming().await?;
        }
        match &mut self.state {
            State::Streaming(s) => s.wait_in_flight().await.map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Write what is buffered (no fsync: the caller validates first). Blocking; `settle` first.
    /// On error the store file is removed.
    pub fn finish(self) -> Result<Received, SpoolError> {
        let mut digest = None;
        let content = match self.state {
            State::Head { .. } => {
                digest = Some(ReceivedDigest::OverWhole(self.hasher.clone()));
                Content::Whole(self.head)
            }
            State::Deidentifying { .. } => unreachable!("settle() ends de-identification before finish()"),
            State::Refused(r) => Content::Refused(r),
            State::Streaming(s) => {
                let s = *s;
                let path = s.path.clone();
                let written = (|| {
                    let mut file = match s.file {
                        Some(f) => f,
                        None => create(&path)?,
                    };
                    file.write_all(&s.buf)?;
                    Ok(file)
                })();
                let file = written.map_err(|source| {
                    let _ = std::fs::remove_file(&path);
                    SpoolError::Write { path: path.clone(), cause: source }
                })?;
                Content::Split { head: self.head, split: s.split, header_len: s.header_len, deid: Box::new(s.deid), relative: s.relative, path, file }
            }
        };
        let kept_len = self.group.as_ref().map_or(self.dataset_len, |(split, g)| split + g.kept);
        let digest = digest.unwrap_or_else(|| ReceivedDigest::Done(self.hasher.finalize().to_hex().to_string()));
        Ok(Received { dataset_len: self.dataset_len, kept_len, digest, content })
    }

    /// Drop an instance that will not be acknowledged, and its store file if one was started.
    pub async fn discard(mut self) {
        let _ = self.settle().await;
        if let State::Streaming(s) = self.state {
            drop(s.file);
            let _ = std::fs::remove_file(&s.path);
        }
    }
}

impl Streaming {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_BUFFER {
            if self.written >= self.checked_at + DISK_CHECK_EVERY {
                // One large transfer, or many at once, must not fill the disk past the floor
                // (the database's journal lives there too).
                self.checked_at = self.written;
                let available = super::free_bytes(&self.data_dir).map_err(|source| SpoolError::Write { path: self.path.clone(), cause: source })?;
                if available < self.min_free_disk {
                    return Err(SpoolError::OutOfDisk { available, floor: self.min_free_disk });
                }
            }
            let spare = self.wait_in_flight().await?;
            let full = std::mem::replace(&mut self.buf, spare);
            let (file, path) = (self.file.take(), self.path.clone());
            let offset = self.written;
            self.written += full.len() as u64;
            self.in_flight = Some(tokio::task::spawn_blocking(move || {
                let mut file = match file {
                    Some(f) => f,
                    None => create(&path)?,
                };
                file.write_all(&full)?;
                start_writeback(&file, offset, full.len() as u64);
                Ok((file, full))
            }));
        }
        Ok(())
    }

    /// Wait for the write in flight, if any; returns an empty buffer to fill next.
    async fn wait_in_flight(&mut self) -> Result<Vec<u8>, SpoolError> {
        let Some(handle) = self.in_flight.take() else { return Ok(Vec::with_capacity(WRITE_BUFFER)) };
        let (file, mut buf) =
            handle.await.map_err(std::io::Error::other).and_then(|r| r).map_err(|source| SpoolError::Write { path: self.path.clone(), cause: source })?;
        self.file = Some(file);
        buf.clear();
        Ok(buf)
    }
}

fn create(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

/// Ask the kernel to start writing a range back now (Linux `sync_file_range`), so the fsync at
/// the end waits only for the tail. Advisory: errors are ignored, fsync still decides.
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor and an in-file range; the call only schedules I/O.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// A new, unique path `store/<day>/<uuid>.dcm` (its folder created). Returns (relative to
/// data_dir, absolute). Blocking.
pub fn store_path(dirs: &Dirs, day: &str) -> Result<(PathBuf, PathBuf), SpoolError> {
    let relative = PathBuf::from("store").join(day).join(format!("{}.dcm", uuid::Uuid::new_v4()));
    let target = dirs.data.join(&relative);
    let parent = target.parent().expect("store paths have a parent");
    if !parent.is_dir() {
        // A new day folder: its own entry in store/ must be durable before any file in it is
        // acknowledged (a file's fsync covers neither its folder's name nor the folder's).
        let create = |source| SpoolError::Create { path: parent.to_path_buf(), cause: source };
        std::fs::create_dir_all(parent).map_err(create)?;
        std::fs::File::open(&dirs.store).and_then(|d| d.sync_all()).map_err(create)?;
    }
    Ok((relative, target))
}

/// Make a new file's directory entry durable (a file's fsync does not cover its name).
pub fn sync_parent(file: &Path, fsync: bool) -> std::io::Result<()> {
    match (fsync, file.parent()) {
        (true, Some(parent)) => std::fs::File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small CT-like data set: a few header attributes, then `pixels` bytes of Pixel Data.
    fn dataset(pixels: usize) -> Vec<u8> {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        use dicom_transfer_syntax_registry::TransferSyntaxIndex;
        let obj = dicom_object::InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("DOE^JANE")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.5")),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.6")),
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from((0..pixels).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())),
        ]);
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").unwrap();
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, ts).unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_header_is_deidentified_and_the_pixels_stream_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.prepare().unwrap();
        let deid = Arc::new(Deidentifier::new(crate::deid::Keys::for_tests(1), vec![], vec![]));
        let ts = crate::dicom::sop::transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        let target = Target { dirs, day: "20261128".into(), deid: deid.clone(), ts, drop_burned_in: true, min_free_disk: 0, buffers: Default::default() };
        // Past the in-memory bound (smaller data sets are held whole): pixel data below, at and
        // across the buffer size beyond it, in uneven pieces.
        for pixels in [IN_MEMORY + 10, IN_MEMORY + WRITE_BUFFER, IN_MEMORY + 3 * WRITE_BUFFER + 12345] {
            let data = dataset(pixels);
            let split = locate_pixel_group(&data, ts).unwrap().expect("pixel data found");
            let mut incoming = IncomingFile::new(target.clone());
            for piece in data.chunks(40_000) {
                incoming.write(piece).await.unwrap();
            }
            incoming.settle().await.unwrap();
            let received = incoming.finish().unwrap();
            assert_eq!(received.dataset_len as usize, data.len());
            let mut mac = crate::deid::Keys::for_tests(1).content_mac();
            mac.update(&data);
            let ReceivedDigest::Done(digest) = received.digest else { panic!("a streamed data set is digested as it arrives") };
            assert_eq!(digest, mac.finalize().to_hex().to_string());
            assert_ne!(digest, blake3::hash(&data).to_hex().to_string(), "the plain digest links the original file");
            assert_ne!(digest, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)), "the plain digest links the original file");
            let Content::Split { header_len, path, .. } = received.content else { panic!("not split") };
            let on_disk = std::fs::read(&path).unwrap();
            let (_, expected_header) = deidentify_header(&deid, &data[..split as usize], ts.uid, true).unwrap();
            assert!(on_disk[..header_len as usize] == expected_header[..], "header differs for {pixels} bytes of pixels");
            assert!(on_disk[header_len as usize..] == data[split as usize..], "pixel group differs for {pixels} bytes");
            assert!(!on_disk.windows(8).any(|w| w == b"DOE^JANE"), "the original name reached the disk");
        }
    }

    /// Elements after the pixel group (an out-of-order Patient's Name, a private block) are
    /// never written to the store file, not even while the transfer is in progress: a file cut
    /// afterwards would leave them in freed blocks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trailing_elements_never_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.prepare().unwrap();
        let deid = Arc::new(Deidentifier::new(crate::deid::Keys::for_tests(1), vec![], vec![]));
        let ts = crate::dicom::sop::transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        let target = Target { dirs, day: "20261201".into(), deid, ts, drop_burned_in: true, min_free_disk: 0, buffers: Default::default() };
        let mut trailer = vec![0x10, 0x00, 0x10, 0x00, b'P', b'N', 16, 0];
        trailer.extend_from_slice(b"TRAILING^SECRET ");
        trailer.extend_from_slice(&[0x99, 0x00, 0x10, 0x10, b'L', b'O', 14, 0]);
        trailer.extend_from_slice(b"PRIVATE SECRET");
        for pixels in [IN_MEMORY + 10, IN_MEMORY + 3 * WRITE_BUFFER + 7] {
            let data = [dataset(pixels), trailer.clone()].concat();
            for piece_len in [1000usize, 40_000, 333_333] {
                let mut incoming = IncomingFile::new(target.clone());
                for piece in data.chunks(piece_len) {
                    incoming.write(piece).await.unwrap();
                }
                incoming.settle().await.unwrap();
                let State::Streaming(s) = &incoming.state else { panic!("not streaming") };
                let path = s.path.clone();
                let received = incoming.finish().unwrap();
                assert_eq!(received.dataset_len as usize, data.len());
                assert_eq!(received.kept_len as usize, data.len() - trailer.len(), "{pixels} pixel bytes, pieces of {piece_len}");
                let on_disk = std::fs::read(&path).unwrap();
                assert!(!on_disk.windows(6).any(|w| w == b"SECRET"), "a trailer reached the disk ({pixels} pixel bytes, pieces of {piece_len})");
                assert!(on_disk.ends_with(&data[data.len() - trailer.len() - 16..data.len() - trailer.len()]), "the pixel group is whole");
            }
        }
    }

    /// A data set within `IN_MEMORY` is held whole: no store file exists until it has arrived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_data_set_is_held_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.prepare().unwrap();
        let deid = Arc::new(Deidentifier::new(crate::deid::Keys::for_tests(1), vec![], vec![]));
        let ts = crate::dicom::sop::transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        let target = Target { dirs: dirs.clone(), day: "20261206".into(), deid, ts, drop_burned_in: true, min_free_disk: 0, buffers: Default::default() };
        let data = dataset(512 * 512 * 2);
        let mut incoming = IncomingFile::new(target);
        for piece in data.chunks(16_384) {
            incoming.write(piece).await.unwrap();
        }
        incoming.settle().await.unwrap();
        assert!(!dirs.store.join("20261206").exists(), "nothing was written while receiving");
        let received = incoming.finish().unwrap();
        let Content::Whole(whole) = received.content else { panic!("not held whole") };
        assert!(whole == data);
        let mut mac = crate::deid::Keys::for_tests(1).content_mac();
        mac.update(&data);
        assert_eq!(received.digest.finish(&whole), mac.finalize().to_hex().to_string());
    }

    #[test]
    fn prepare_removes_leftover_spool_files() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.prepare().unwrap();
        std::fs::write(dirs.spool.join("a.part"), b"half").unwrap();
        assert_eq!(dirs.prepare().unwrap(), 1);
        assert_eq!(std::fs::read_dir(&dirs.spool).unwrap().count(), 0);
    }
}
