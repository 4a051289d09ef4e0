//! Backup and restore of a node on SQLite with its files in the data directory: `backup DEST`
//! takes a consistent snapshot while the node runs (the database by `VACUUM INTO`, then the
//! store's and the outbox's files, which were written and synced before the rows that name them
//! were committed, so every file the snapshot names is there), and writes `manifest.json` last
//! (size and SHA-256 of every file; its presence is what makes the backup complete). `restore
//! SRC` checks every checksum before it writes anything, and only into an empty data directory.
//!
//! Never in a backup: the keys (pseudonym, map, audit). Without them the sealed map cannot be
//! opened and the audit chain not verified: keep them apart, as the site keeps other secrets.
//! Not covered: PostgreSQL (use `pg_dump`) and an S3 bucket (its own versioning or replication).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AdminError;
use crate::config::Settings;

/// The folders of the data directory a backup holds (besides the database).
const FOLDERS: [&str; 2] = ["store", "outbox"];
const DATABASE: &str = "triage.db";
const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Relative to the backup (and to the data directory when restored).
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub node_version: String,
    pub created_at_ms: i64,
    /// The node id the backup was taken from (host and data directory).
    pub node: String,
    pub files: Vec<Entry>,
}

/// What a backup or a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dir: PathBuf,
    pub files: usize,
    pub bytes: u64,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AdminError + 'a {
    move |source| AdminError::Io { what, path: path.display().to_string(), source }
}

fn sha256_of(path: &Path) -> Result<(u64, String), AdminError> {
    let mut f = std::fs::File::open(path).map_err(io("reading", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// Every file under `root/folder`, relative to `root`, sorted.
fn files_under(root: &Path, folder: &str) -> Result<Vec<String>, AdminError> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(folder)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(AdminError::Io { what: "listing", path: dir.display().to_string(), source: e }),
        };
        for e in entries {
            let e = e.map_err(io("listing", &dir))?;
            let path = e.path();
            let kind = e.file_type().map_err(io("listing", &path))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                if let Ok(rel) = path.strip_prefix(root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn sync_file(path: &Path) -> Result<(), AdminError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io("syncing", path))
}

/// Take a backup of the node `settings` describe into `dest` (absent or empty), while it runs.
pub async fn backup(settings: &Settings, dest: &Path) -> Result<Report, AdminError> {
    if !settings.database.url.is_empty() && !settings.database.url.starts_with("sqlite:") {
        return Err(AdminError::Invalid("backup copies a node on SQLite; for PostgreSQL use pg_dump (and the bucket's own versioning for its files)".into()));
    }
    if settings.storage.backend != crate::blobs::Backend::Local {
        return Err(AdminError::Invalid(
            "backup copies the files of the data directory; an S3 bucket is backed up by its own versioning or replication".into(),
        ));
    }
    if dest.exists() && std::fs::read_dir(dest).map_err(io("listing", dest))?.next().is_some() {
        return Err(AdminError::Invalid(format!("{} is not empty: a backup goes into a new folder", dest.display())));
    }
    std::fs::create_dir_all(dest).map_err(io("creating", dest))?;
    let db = super::open(settings, super::Access::Read).await?;
    let snapshot = dest.join(DATABASE);
    db.sqlite_snapshot(&snapshot).await?;
    db.close().await;
    sync_file(&snapshot)?;
    let data = settings.storage.data_dir.clone();
    let dest_owned = dest.to_path_buf();
    let node = settings.node_id();
    tokio::task::spawn_blocking(move || {
        let dest = dest_owned.as_path();
        let (size, sha) = sha256_of(&dest.join(DATABASE))?;
        let mut files = vec![Entry { path: DATABASE.into(), size, sha256: sha }];
        for folder in FOLDERS {
            for rel in files_under(&data, folder)? {
                let (from, to) = (data.join(&rel), dest.join(&rel));
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                match std::fs::copy(&from, &to) {
                    Ok(_) => {}
                    // Removed since it was listed (a finished outbox file): not named by the snapshot's rows
                    // that still need it, or named by a row the node was about to delete.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(AdminError::Io { what: "copying", path: from.display().to_string(), source: e }),
                }
                sync_file(&to)?;
                let (size, sha256) = sha256_of(&to)?;
                files.push(Entry { path: rel, size, sha256 });
            }
        }
        let manifest = Manifest { format: 1, node_version: env!("CARGO_PKG_VERSION").into(), created_at_ms: crate::domain::now_ms(), node, files };
        let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| AdminError::Invalid(format!("writing the manifest: {e}")))?;
        let path = dest.join(MANIFEST);
        std::fs::write(&path, text).map_err(io("writing", &path))?;
        sync_file(&path)?;
        std::fs::File::open(dest).and_then(|d| d.sync_all()).map_err(io("syncing", dest))?;
        Ok(Report { dir: dest.to_path_buf(), files: manifest.files.len(), bytes })
    })
    .await
    .map_err(|e| AdminError::Engine(e.to_string()))?
}

/// Check the backup in `src` (every file's size and SHA-256) and, only if all hold, copy it into
/// the data directory `settings` name, which must hold no database and no stored files.
pub fn restore(settings: &Settings, src: &Path) -> Result<Report, AdminError> {
    let path = src.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| AdminError::Invalid(format!("{}: no readable manifest.json ({e}): not a complete backup", src.display())))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| AdminError::Invalid(format!("{}: {e}", path.display())))?;
    if manifest.format != 1 {
        return Err(AdminError::Invalid(format!("{}: backup format {} is not one this node reads", path.display(), manifest.format)));
    }
    for e in &manifest.files {
        if e.path.split('/').any(|c| c == ".." || c.is_empty()) || Path::new(&e.path).is_absolute() {
            return Err(AdminError::Invalid(format!("{}: the path {:?} leaves the backup", path.display(), e.path)));
        }
        let (size, sha) = sha256_of(&src.join(&e.path))?;
        if size != e.size || sha != e.sha256 {
            return Err(AdminError::Invalid(format!("{}: {} does not match the manifest (size or SHA-256): nothing was restored", src.display(), e.path)));
        }
    }
    let data = &settings.storage.data_dir;
    if data.join(DATABASE).exists() || FOLDERS.iter().any(|f| files_under(data, f).map(|v| !v.is_empty()).unwrap_or(true)) {
        return Err(AdminError::Invalid(format!(
            "{} already holds a node (a database or stored files): restore goes into an empty data directory",
            data.display()
        )));
    }
    let mut bytes = 0;
    for e in &manifest.files {
        let (from, to) = (src.join(&e.path), data.join(&e.path));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        std::fs::copy(&from, &to).map_err(io("copying", &from))?;
        sync_file(&to)?;
        bytes += e.size;
    }
    Ok(Report { dir: data.clone(), files: manifest.files.len(), bytes })
}
