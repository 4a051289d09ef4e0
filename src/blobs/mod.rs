//! Where the node's files live: instance files (`store/<day>/<name>.dcm`), result objects
//! (`outbox/results/<uid>.dcm`), HL7 reports and operator-queued files, each named by the key
//! its row stores (a path relative to the data directory).
//!
//! Two backends behind one type, `Blobs`:
//! - `local` (the embedded default): the key is a file under `data_dir`, written and synced by
//!   its owner (ingest, the publisher); nothing here changes what a single node does.
//! - `s3`: an S3-compatible bucket (`object_store`'s S3 client: path-style, plain HTTP for
//!   on-site servers, credentials from the environment or files) shared by every node of a
//!   cluster, so any node can triage, deliver and answer queries for any study. A file is
//!   written locally first (ingest's staging file, a result's bytes), then uploaded: in one
//!   conditional PUT (`If-None-Match: *`) up to `part_size`, in a multipart upload of
//!   `part_size` parts beyond it (memory bounded by the parts in flight). Readers get a local
//!   copy in `data_dir/cache/` (downloaded once, streamed to disk), which the `blob_cache` worker
//!   empties of copies unused for `cache_keep`.
//!
//! Keys are never reused: an instance's key carries a name made for that one upload, a result
//! object's its own SOP Instance UID, so a conditional create is enough to make sure that a
//! second write of the same SOP Instance UID never replaces the first (its row decides which
//! copy counts; the other is deleted).
//!
//! Must not: know DICOM, SQL or which rows name which keys; log anything but keys and sizes
//! (keys carry de-identified names only).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::Deserialize;

use crate::domain::ByteSize;

/// The environment variables the S3 credentials are read from (before the files the settings
/// name).
pub const ACCESS_KEY_ENV: &str = "TRIAGE_S3_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "TRIAGE_S3_SECRET_ACCESS_KEY";

/// Which store holds the files (`[storage] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The data directory: one node.
    #[default]
    Local,
    /// An S3-compatible bucket: a cluster of nodes sharing it and one PostgreSQL.
    S3,
}

/// `[storage.s3]`: the bucket a cluster shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// `http://host:port` or `https://host:port` of the S3 API.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Prepended to every key (`site-a/` keeps several deployments in one bucket apart).
    pub prefix: String,
    /// `true`: `endpoint/bucket/key` (what on-site servers serve); `false`: virtual-hosted.
    pub path_style: bool,
    /// Allow an `http://` endpoint (an on-site server on a closed network).
    pub allow_http: bool,
    /// Files holding the access key id and secret (read when the environment has neither).
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    /// One request's deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed request (connection refused, 5xx), within `retry_timeout` in all: a
    /// C-STORE waits this long at most before its sender is told to retry (0xA700).
    pub max_retries: usize,
    #[serde(with = "humantime_serde")]
    pub retry_timeout: Duration,
    /// Above this size an object is uploaded in parts of this size (at least 5 MiB: S3's floor).
    pub part_size: ByteSize,
    /// Local copies unused for this long are removed from `data_dir/cache/`.
    #[serde(with = "humantime_serde")]
    pub cache_keep: Duration,
}

impl S3Settings {
    /// Why these settings cannot work, if they cannot (checked before anything starts).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.bucket.is_empty() {
            return Some(("storage.s3.bucket", "name the bucket when storage.backend = \"s3\"".into()));
        }
        let http = self.endpoint.starts_with("http://");
        if !(http || self.endpoint.starts_with("https://")) {
            return Some(("storage.s3.endpoint", "must start with http:// or https://".into()));
        }
        if http && !self.allow_http {
            return Some(("storage.s3.allow_http", "an http:// endpoint needs allow_http = true (on-site servers on a closed network only)".into()));
        }
        if self.part_size.0 < 5 << 20 || self.part_size.0 > 512 << 20 {
            return Some(("storage.s3.part_size", "must be between 5MiB (S3's smallest part) and 512MiB".into()));
        }
        if self.timeout.is_zero() || self.retry_timeout.is_zero() {
            return Some(("storage.s3.timeout", "timeout and retry_timeout must be above zero".into()));
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object store: {op} {key}: {cause}")]
    Store { op: &'static str, key: String, cause: object_store::Error },
    #[error("object store: {key} already holds another object")]
    Exists { key: String },
    #[error("{op} {path}: {cause}")]
    Io { op: &'static str, path: PathBuf, cause: std::io::Error },
    #[error("S3 credentials: {0}")]
    Credentials(String),
    #[error("object store task: {0}")]
    Task(String),
}

impl BlobError {
    /// The object (or local file) is not there at all: retrying will not bring it back.
    pub fn is_missing(&self) -> bool {
        match self {
            BlobError::Store { cause: object_store::Error::NotFound { .. }, .. } => true,
            BlobError::Io { cause: source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// The node's files, wherever they live. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("data_dir", &self.inner.data_dir).field("shared", &self.inner.s3.is_some()).finish()
    }
}

struct Inner {
    data_dir: PathBuf,
    s3: Option<S3>,
}

struct S3 {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    cache: PathBuf,
    part_size: usize,
    cache_keep: Duration,
    /// For the blocking callers (the publisher's and the decoders' threads).
    runtime: tokio::runtime::Handle,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BlobError {
    let path = path.to_path_buf();
    move |source| BlobError::Io { op, path, cause: source }
}

impl Blobs {
    /// Files in `data_dir` only (one node; also the offline tools).
    pub fn local(data_dir: &Path) -> Blobs {
        Blobs { inner: Arc::new(Inner { data_dir: data_dir.to_path_buf(), s3: None }) }
    }

    /// The store `[storage]` names. For S3 the bucket is asked for once, so that a wrong
    /// endpoint, bucket or credential stops the node at start-up with the reason instead of
    /// failing every C-STORE. Needs the runtime.
    pub async fn open(data_dir: &Path, backend: Backend, s3: &S3Settings) -> Result<Blobs, BlobError> {
        if backend == Backend::Local {
            return Ok(Blobs::local(data_dir));
        }
        let (key_id, secret) = credentials(s3)?;
        // The S3 client's HTTPS runs on the process's rustls provider: ring, as the DICOM port's.
        let _ = rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
        let retry = object_store::RetryConfig {
            max_retries: s3.max_retries,
            retry_timeout: s3.retry_timeout,
            backoff: object_store::BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2), base: 2.0 },
        };
        let client = object_store::ClientOptions::new()
            .with_allow_http(s3.allow_http)
            .with_timeout(s3.timeout)
            .with_connect_timeout(s3.timeout.min(Duration::from_secs(5)));
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&s3.endpoint)
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(!s3.path_style)
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|source| BlobError::Store { op: "configuring", key: s3.bucket.clone(), cause: source })?;
        let prefix = if s3.prefix.is_empty() || s3.prefix.ends_with('/') { s3.prefix.clone() } else { format!("{}/", s3.prefix) };
        let blobs = Blobs {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                s3: Some(S3 {
                    store: Arc::new(store),
                    prefix,
                    cache: data_dir.join("cache"),
                    part_size: s3.part_size.0 as usize,
                    cache_keep: s3.cache_keep,
                    runtime: tokio::runtime::Handle::current(),
                }),
            }),
        };
        blobs.check().await?;
        Ok(blobs)
    }

    /// Ask the bucket for a key that does not exist: NotFound means reachable and permitted.
    async fn check(&self) -> Result<(), BlobError> {
        let Some(s3) = &self.inner.s3 else { return Ok(()) };
        let key = "nodes/.probe";
        match s3.store.head(&s3.path(key)).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(BlobError::Store { op: "reaching the bucket with", key: key.into(), cause: source }),
        }
    }

    /// Whether the files are shared by a cluster (S3): then any node may read any row's file.
    pub fn is_shared(&self) -> bool {
        self.inner.s3.is_some()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Where `key` is written locally: the file itself (local), the staging copy before its
    /// upload (S3).
    pub fn staging_path(&self, key: &str) -> PathBuf {
        self.inner.data_dir.join(key)
    }

    /// A local file holding `key`'s bytes: the file itself (local; not checked), or a copy in
    /// the cache, downloaded now if this node has none.
    pub async fn fetch(&self, key: &str) -> Result<PathBuf, BlobError> {
        let Some(s3) = &self.inner.s3 else { return Ok(self.inner.data_dir.join(key)) };
        let local = s3.cache.join(key);
        if let Ok(file) = std::fs::File::options().append(true).open(&local) {
            // Used now: the cache sweep keeps it.
            let _ = file.set_modified(std::time::SystemTime::now());
            return Ok(local);
        }
        let started = std::time::Instant::now();
        let mut got = s3.store.get(&s3.path(key)).await.map_err(|source| BlobError::Store { op: "reading", key: key.into(), cause: source })?.into_stream();
        let dir = local.parent().expect("a key names a file in a folder");
        tokio::fs::create_dir_all(dir).await.map_err(io("creating", dir))?;
        let part = dir.join(format!(".{}.{}", uuid::Uuid::new_v4().simple(), "part"));
        let written: Result<(), BlobError> = async {
            let mut out = tokio::fs::File::create(&part).await.map_err(io("creating", &part))?;
            while let Some(chunk) = futures_util::StreamExt::next(&mut got).await {
                let chunk = chunk.map_err(|source| BlobError::Store { op: "reading", key: key.into(), cause: source })?;
                tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await.map_err(io("writing", &part))?;
            }
            tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(io("writing", &part))?;
            tokio::fs::rename(&part, &local).await.map_err(io("renaming", &part))
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        written?;
        metrics::histogram!("triage_blob_seconds", "op" => "get").record(started.elapsed().as_secs_f64());
        Ok(local)
    }

    /// `fetch` from a thread off the runtime's workers (the blocking pool, the publisher).
    pub fn fetch_blocking(&self, key: &str) -> Result<PathBuf, BlobError> {
        match &self.inner.s3 {
            None => Ok(self.inner.data_dir.join(key)),
            Some(s3) => s3.runtime.block_on(self.fetch(key)),
        }
    }

    /// S3: upload the finished local file `local` as `key` (a conditional PUT, or a multipart
    /// upload for a large file, read `part_size` at a time), acknowledged by the store when
    /// this returns. Local: nothing to do (the caller wrote and synced the file in place).
    pub async fn upload(&self, key: &str, local: &Path) -> Result<(), BlobError> {
        let Some(s3) = &self.inner.s3 else { return Ok(()) };
        let started = std::time::Instant::now();
        let path = s3.path(key);
        let mut file = tokio::fs::File::open(local).await.map_err(io("opening", local))?;
        let len = file.metadata().await.map_err(io("reading", local))?.len();
        let store_err = |op: &'static str| {
            let key = key.to_string();
            move |source| BlobError::Store { op, key, cause: source }
        };
        if len as usize <= s3.part_size {
            let mut bytes = Vec::with_capacity(len as usize);
            tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes).await.map_err(io("reading", local))?;
            s3.put_new(key, bytes).await?;
        } else {
            // S3 has no conditional multipart upload every server takes; the key is new (made
            // for this upload), so a key already there is a conflict, never overwritten.
            match s3.store.head(&path).await {
                Err(object_store::Error::NotFound { .. }) => {}
                Ok(_) => return Err(BlobError::Exists { key: key.into() }),
                Err(source) => return Err(BlobError::Store { op: "checking", key: key.into(), cause: source }),
            }
            let upload = s3.store.put_multipart(&path).await.map_err(store_err("starting the upload of"))?;
            // Two parts in flight at most: memory stays within three parts whatever the size.
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, s3.part_size);
            let mut buf = vec![0u8; 1 << 20];
            let sent: Result<(), BlobError> = async {
                loop {
                    let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf).await.map_err(io("reading", local))?;
                    if n == 0 {
                        break;
                    }
                    writer.wait_for_capacity(2).await.map_err(store_err("uploading"))?;
                    writer.write(&buf[..n]);
                }
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => {
                    writer.finish().await.map_err(store_err("completing the upload of"))?;
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            }
        }
        metrics::histogram!("triage_blob_seconds", "op" => "put").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// After `upload` and the row's commit: the staging file becomes this node's cached copy
    /// (S3; a rename within the data directory). Local: nothing to do.
    pub fn adopt(&self, key: &str, staging: &Path) {
        let Some(s3) = &self.inner.s3 else { return };
        let target = s3.cache.join(key);
        let moved = target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|_| std::fs::rename(staging, &target));
        if moved.is_err() {
            let _ = std::fs::remove_file(staging);
        }
    }

    /// Write `bytes` as `key`, durably: local, staged, synced, renamed and the folder synced;
    /// S3, a conditional PUT (acknowledged on return), with a local copy kept in the cache. From
    /// a thread off the runtime's workers.
    pub fn write_blocking(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        match &self.inner.s3 {
            None => write_durably(&self.inner.data_dir.join(key), bytes, true),
            Some(s3) => {
                s3.runtime.block_on(s3.put_new(key, bytes.to_vec()))?;
                // The cached copy need not be durable: the bucket holds the object.
                let _ = write_durably(&s3.cache.join(key), bytes, false);
                Ok(())
            }
        }
    }

    /// `write_blocking` from async code.
    pub async fn write(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let (me, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || me.write_blocking(&key, &bytes)).await.map_err(|e| BlobError::Task(e.to_string()))?
    }

    /// Remove `key` (a copy its row did not keep). Missing is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match &self.inner.s3 {
            None => match tokio::fs::remove_file(self.inner.data_dir.join(key)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BlobError::Io { op: "removing", path: self.inner.data_dir.join(key), cause: e }),
                _ => Ok(()),
            },
            Some(s3) => {
                let _ = tokio::fs::remove_file(s3.cache.join(key)).await;
                match s3.store.delete(&s3.path(key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(source) => Err(BlobError::Store { op: "deleting", key: key.into(), cause: source }),
                }
            }
        }
    }

    /// Whether the store holds `key` (S3: asks the bucket; local: the file exists).
    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match &self.inner.s3 {
            None => Ok(self.inner.data_dir.join(key).exists()),
            Some(s3) => match s3.store.head(&s3.path(key)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(source) => Err(BlobError::Store { op: "checking", key: key.into(), cause: source }),
            },
        }
    }

    /// At start-up (S3 only): the cached copies are not synced, so after a crash any of them may
    /// be cut short; they are all removed and fetched again when needed. Blocking.
    pub fn clear_cache(&self) -> Result<(), BlobError> {
        let Some(s3) = &self.inner.s3 else { return Ok(()) };
        match std::fs::remove_dir_all(&s3.cache) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BlobError::Io { op: "emptying", path: s3.cache.clone(), cause: e }),
            _ => Ok(()),
        }
    }

    /// Remove cached copies unused for `cache_keep` (S3 only). Returns how many. Blocking.
    pub fn sweep_cache(&self) -> usize {
        let Some(s3) = &self.inner.s3 else { return 0 };
        let cutoff = std::time::SystemTime::now() - s3.cache_keep;
        let mut removed = 0;
        let mut dirs = vec![s3.cache.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(e.path());
                } else if meta.modified().is_ok_and(|m| m < cutoff) && std::fs::remove_file(e.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

impl S3 {
    fn path(&self, key: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}{key}", self.prefix))
    }

    /// One conditional PUT (`If-None-Match: *`). A retry of our own PUT that had in fact
    /// succeeded finds the same bytes there: that is success, anything else a conflict.
    async fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let started = std::time::Instant::now();
        let path = self.path(key);
        let len = bytes.len() as u64;
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, PutPayload::from(bytes), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => match self.store.head(&path).await {
                Ok(meta) if meta.size == len => {}
                _ => return Err(BlobError::Exists { key: key.into() }),
            },
            Err(source) => return Err(BlobError::Store { op: "writing", key: key.into(), cause: source }),
        }
        metrics::histogram!("triage_blob_seconds", "op" => "put").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Staged, written, (synced,) renamed into place, (the folder synced.)
fn write_durably(target: &Path, bytes: &[u8], sync: bool) -> Result<(), BlobError> {
    let dir = target.parent().expect("a key names a file in a folder");
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = dir.join(format!(".{name}.part"));
    let mut f = std::fs::File::create(&staging).map_err(io("creating", &staging))?;
    std::io::Write::write_all(&mut f, bytes).map_err(io("writing", &staging))?;
    if sync {
        f.sync_all().map_err(io("syncing", &staging))?;
    }
    std::fs::rename(&staging, target).map_err(io("renaming", &staging))?;
    if sync {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))?;
    }
    Ok(())
}

/// The access key id and secret: the environment first, then the files the settings name.
fn credentials(s3: &S3Settings) -> Result<(String, String), BlobError> {
    let one = |env: &str, file: &Option<PathBuf>, what: &str| -> Result<String, BlobError> {
        if let Ok(v) = std::env::var(env) {
            if !v.trim().is_empty() {
                return Ok(v.trim().to_string());
            }
        }
        match file.as_deref().filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => {
                let unreadable = |e: std::io::Error| BlobError::Credentials(format!("reading the {what} from {}: {e}", path.display()));
                let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).map_err(unreadable)?.permissions());
                if mode & 0o077 != 0 {
                    return Err(BlobError::Credentials(format!(
                        "the {what} file {} is readable by others (mode {:04o}): make it readable by the node's user alone (chmod 0400 or 0600)",
                        path.display(),
                        mode & 0o7777
                    )));
                }
                std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(unreadable)
            }
            None => Err(BlobError::Credentials(format!(
                "no {what}: set {env} or storage.s3.{}",
                if what.contains("id") { "access_key_id_file" } else { "secret_access_key_file" }
            ))),
        }
    };
    Ok((one(ACCESS_KEY_ENV, &s3.access_key_id_file, "access key id")?, one(SECRET_KEY_ENV, &s3.secret_access_key_file, "secret access key")?))
}

/// Removes cached copies unused for `cache_keep` every few minutes (S3 only).
pub struct CacheSweeper {
    blobs: Blobs,
    first: bool,
}

impl CacheSweeper {
    pub fn new(blobs: Blobs) -> CacheSweeper {
        CacheSweeper { blobs, first: true }
    }
}

impl crate::worker::Worker for CacheSweeper {
    fn name(&self) -> &'static str {
        "blob_cache"
    }

    fn work(&mut self) -> crate::worker::BoxFuture<'_, Result<crate::worker::WorkState, crate::worker::WorkerError>> {
        Box::pin(async move {
            self.first = false;
            let blobs = self.blobs.clone();
            let removed = tokio::task::spawn_blocking(move || blobs.sweep_cache()).await?;
            if removed > 0 {
                tracing::info!(removed, "cached copies of shared objects removed");
            }
            Ok(crate::worker::WorkState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> crate::worker::BoxFuture<'_, ()> {
        let first = self.first;
        Box::pin(async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(300)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> S3Settings {
        S3Settings {
            endpoint: "http://127.0.0.1:8333".into(),
            bucket: "triage".into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: true,
            allow_http: true,
            access_key_id_file: None,
            secret_access_key_file: None,
            timeout: Duration::from_secs(30),
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            part_size: ByteSize(8 << 20),
            cache_keep: Duration::from_secs(3600),
        }
    }

    #[test]
    fn s3_settings_are_checked_before_start() {
        assert!(settings().problem().is_none());
        let plain = S3Settings { allow_http: false, ..settings() };
        assert_eq!(plain.problem().unwrap().0, "storage.s3.allow_http");
        let tiny = S3Settings { part_size: ByteSize(1 << 20), ..settings() };
        assert_eq!(tiny.problem().unwrap().0, "storage.s3.part_size");
        let nameless = S3Settings { bucket: String::new(), ..settings() };
        assert_eq!(nameless.problem().unwrap().0, "storage.s3.bucket");
        let scheme = S3Settings { endpoint: "127.0.0.1:8333".into(), ..settings() };
        assert_eq!(scheme.problem().unwrap().0, "storage.s3.endpoint");
    }

    #[test]
    fn credentials_come_from_files_readable_by_the_node_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
        std::fs::write(&id, "key-id\n").unwrap();
        std::fs::write(&secret, "secret\n").unwrap();
        std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = S3Settings { access_key_id_file: Some(id), secret_access_key_file: Some(secret.clone()), ..settings() };
        // The environment is not set in the unit tests' process.
        if std::env::var(ACCESS_KEY_ENV).is_err() && std::env::var(SECRET_KEY_ENV).is_err() {
            let refused = credentials(&s).unwrap_err().to_string();
            assert!(refused.contains("readable by others (mode 0644)"), "{refused}");
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
            assert_eq!(credentials(&s).unwrap(), ("key-id".to_string(), "secret".to_string()));
            let missing = credentials(&S3Settings { secret_access_key_file: None, ..s }).unwrap_err().to_string();
            assert!(missing.contains(SECRET_KEY_ENV), "{missing}");
        }
    }

    #[test]
    fn local_keys_are_files_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path());
        assert!(!blobs.is_shared());
        blobs.write_blocking("outbox/results/x.dcm", b"abc").unwrap();
        assert_eq!(std::fs::read(dir.path().join("outbox/results/x.dcm")).unwrap(), b"abc");
        assert_eq!(blobs.fetch_blocking("outbox/results/x.dcm").unwrap(), dir.path().join("outbox/results/x.dcm"));
        assert_eq!(blobs.sweep_cache(), 0);
    }
}
