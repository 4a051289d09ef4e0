//! The spool: a received instance is streamed to a file here, hashed on the way, and read back
//! by the de-identifier, which writes the stored copy; the spool file is then deleted.
//!
//! Owns: spool and store paths, the Part 10 preamble and File Meta Information of the spool
//! copy, directory durability, and start-up cleanup of half-written spool files.
//! Must not: parse data sets (scan does) or touch the database.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use std::io::Write;

use crate::association::negotiation::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

const WRITE_BUFFER: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("creating spool file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("writing spool file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("syncing {path}: {source}")]
    Sync { path: PathBuf, source: std::io::Error },
    #[error("building the file meta information: {0}")]
    Meta(String),
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

/// The Part 10 header (preamble, "DICM", File Meta Information) for a received instance.
pub fn part10_header(sop_class: &str, sop_instance: &str, transfer_syntax: &str, calling_ae: &str) -> Result<Vec<u8>, SpoolError> {
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(calling_ae)
        .build()
        .map_err(|e| SpoolError::Meta(e.to_string()))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| SpoolError::Meta(e.to_string()))?;
    Ok(out)
}

/// A background write: gives the file and its (now written) buffer back.
type InFlightWrite = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Vec<u8>)>>;

/// A spool file being written. Bytes are hashed and gathered in a 256 KiB buffer; a full buffer is
/// written on the blocking pool *while the next one fills* (double buffering), and each written
/// chunk is handed to the kernel for write-back at once, so the final fsync has little left to do.
pub struct SpoolFile {
    path: PathBuf,
    /// The file, when no write is in flight.
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    in_flight: Option<InFlightWrite>,
    written: u64,
    hasher: Sha256,
    header_len: u64,
    dataset_len: u64,
}

/// A spool file fully written and synced.
#[derive(Debug)]
pub struct Spooled {
    pub path: PathBuf,
    pub header_len: u64,
    pub dataset_len: u64,
    /// SHA-256 of the data set bytes exactly as received.
    pub dataset_sha256: String,
}

impl SpoolFile {
    /// Start a spool file with the Part 10 header. Nothing touches the disk yet: the file is
    /// created by the first write on the blocking pool, off the network task.
    pub fn new(dirs: &Dirs, header: &[u8]) -> SpoolFile {
        let path = dirs.spool.join(format!("{}.part", uuid::Uuid::new_v4()));
        let mut buf = Vec::with_capacity(WRITE_BUFFER);
        buf.extend_from_slice(header);
        SpoolFile { path, file: None, buf, in_flight: None, written: 0, hasher: Sha256::new(), header_len: header.len() as u64, dataset_len: 0 }
    }

    /// Append data set bytes as they arrive from the network.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.hasher.update(bytes);
        self.dataset_len += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_BUFFER {
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
        let (file, mut buf) = handle
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|source| SpoolError::Write { path: self.path.clone(), source })?;
        self.file = Some(file);
        buf.clear();
        Ok(buf)
    }

    /// Wait for the write in flight, so that `finish` or `discard` may run. Call before them.
    pub async fn settle(&mut self) -> Result<(), SpoolError> {
        self.wait_in_flight().await.map(|_| ())
    }

    /// Write what is buffered and fsync. Blocking; `settle` first. On error the file is left for
    /// the caller to remove (its path is in the error).
    pub fn finish(mut self, fsync: bool) -> Result<Spooled, SpoolError> {
        let path = self.path.clone();
        let mut file = match self.file.take() {
            Some(f) => f,
            None => create(&path).map_err(|source| SpoolError::Create { path: path.clone(), source })?,
        };
        file.write_all(&self.buf).map_err(|source| SpoolError::Write { path: path.clone(), source })?;
        if fsync {
            file.sync_all().map_err(|source| SpoolError::Sync { path: path.clone(), source })?;
        }
        Ok(Spooled { path, header_len: self.header_len, dataset_len: self.dataset_len, dataset_sha256: hex::encode(self.hasher.finalize()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the file of a message that will not be acknowledged.
    pub async fn discard(mut self) {
        let _ = self.settle().await;
        drop(self.file.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

fn create(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

/// Ask the kernel to start writing a range back now (Linux `sync_file_range`), so the fsync at
/// the end waits only for the tail. Advisory: errors are ignored, fsync still decides.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
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
    std::fs::create_dir_all(parent).map_err(|source| SpoolError::Create { path: parent.to_path_buf(), source })?;
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

    #[test]
    fn header_is_a_valid_part10_prefix() {
        let h = part10_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1", "CT1").unwrap();
        assert_eq!(&h[128..132], b"DICM");
        let meta = dicom_object::meta::FileMetaTable::from_reader(&h[128..]).unwrap();
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2.1");
        assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3");
        assert_eq!(meta.implementation_class_uid(), IMPLEMENTATION_CLASS_UID);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spooled_bytes_and_hash_match_what_was_written() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.prepare().unwrap();
        let header = vec![7u8; 300];
        // Sizes below, at and across the buffer size, in uneven pieces.
        for total in [0usize, 10, WRITE_BUFFER - 300, WRITE_BUFFER, 3 * WRITE_BUFFER + 12345] {
            let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
            let mut spool = SpoolFile::new(&dirs, &header);
            for piece in data.chunks(40_000) {
                spool.write(piece).await.unwrap();
            }
            spool.settle().await.unwrap();
            let done = spool.finish(true).unwrap();
            assert_eq!(done.dataset_len as usize, total);
            assert_eq!(done.dataset_sha256, hex::encode(Sha256::digest(&data)), "hash for {total} bytes");
            let on_disk = std::fs::read(&done.path).unwrap();
            assert_eq!(on_disk.len(), header.len() + total);
            assert!(on_disk[..300] == header[..] && on_disk[300..] == data[..]);
        }
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
