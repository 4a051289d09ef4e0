//! The durable spool: a received instance is streamed to a file here, hashed on the way,
//! fsynced, and only then moved atomically into the store.
//!
//! Owns: spool and store paths, the Part 10 preamble and File Meta Information we write, file
//! durability (fsync of file and directory), and start-up cleanup of half-written spool files.
//! Must not: parse data sets (scan does) or touch the database.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::association::negotiation::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("creating spool file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("writing spool file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("syncing {path}: {source}")]
    Sync { path: PathBuf, source: std::io::Error },
    #[error("moving {from} into the store: {source}")]
    Rename { from: PathBuf, source: std::io::Error },
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

/// A spool file being written.
pub struct SpoolFile {
    path: PathBuf,
    out: BufWriter<tokio::fs::File>,
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
    pub async fn create(dirs: &Dirs, header: &[u8]) -> Result<SpoolFile, SpoolError> {
        let path = dirs.spool.join(format!("{}.part", uuid::Uuid::new_v4()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|source| SpoolError::Create { path: path.clone(), source })?;
        let mut spool = SpoolFile { path, out: BufWriter::with_capacity(WRITE_BUFFER, file), hasher: Sha256::new(), header_len: header.len() as u64, dataset_len: 0 };
        spool.out.write_all(header).await.map_err(|source| SpoolError::Write { path: spool.path.clone(), source })?;
        Ok(spool)
    }

    /// Append data set bytes as they arrive from the network.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.hasher.update(bytes);
        self.dataset_len += bytes.len() as u64;
        self.out.write_all(bytes).await.map_err(|source| SpoolError::Write { path: self.path.clone(), source })
    }

    pub async fn finish(mut self, fsync: bool) -> Result<Spooled, SpoolError> {
        let path = self.path.clone();
        self.out.flush().await.map_err(|source| SpoolError::Write { path: path.clone(), source })?;
        let file = self.out.into_inner();
        if fsync {
            file.sync_all().await.map_err(|source| SpoolError::Sync { path: path.clone(), source })?;
        }
        Ok(Spooled { path, header_len: self.header_len, dataset_len: self.dataset_len, dataset_sha256: hex::encode(self.hasher.finalize()) })
    }

    pub async fn discard(self) {
        let path = self.path.clone();
        drop(self.out);
        let _ = tokio::fs::remove_file(path).await;
    }
}

/// Move a synced spool file to `store/<day>/<name>.dcm`; returns the path relative to data_dir.
pub async fn commit_to_store(dirs: &Dirs, spooled: &Spooled, day: &str, fsync: bool) -> Result<PathBuf, SpoolError> {
    let relative = PathBuf::from("store").join(day).join(format!("{}.dcm", uuid::Uuid::new_v4()));
    let target = dirs.data.join(&relative);
    let parent = target.parent().expect("store paths have a parent").to_path_buf();
    tokio::fs::create_dir_all(&parent).await.map_err(|source| SpoolError::Rename { from: spooled.path.clone(), source })?;
    tokio::fs::rename(&spooled.path, &target).await.map_err(|source| SpoolError::Rename { from: spooled.path.clone(), source })?;
    if fsync {
        // The rename is durable only once the directory entry is.
        let dir = parent.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(|e| SpoolError::Sync { path: parent.clone(), source: std::io::Error::other(e) })?
            .map_err(|source| SpoolError::Sync { path: parent, source })?;
    }
    Ok(relative)
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
