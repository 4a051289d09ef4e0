//! The AI result objects this node produced, as a Query/Retrieve SCP answers for them: an
//! in-memory index of each object as it is delivered (re-identified), rebuilt from the outbox
//! rows, the de-identified files and the sealed map at start-up and kept up to date from the
//! outbox before each query.
//!
//! Identifiers stay sealed at rest: the database holds only de-identified values and the
//! sealed map, the files are de-identified; the original patient and study identifiers exist
//! only in this process's memory. Building the index opens every map record its objects
//! reference without an audit entry each; it appends one entry saying how many objects and
//! records it opened. What a query or retrieve discloses is audited by the service.
//!
//! - `keys`: the keys held per level and how they are matched.
//! - `index`: the snapshot (patients, studies, series, objects).
//! - `query`: an identifier read, matched, and answered.

pub mod index;
pub mod keys;
pub mod query;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use dicom_dictionary_std::tags;
use tracing::{info, warn};

use crate::db::{Db, DbError};
use crate::deid::{self, Keys, MapError, Originals};
use crate::results::reidentify::{self, ReidError};
pub use index::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("re-identification map: {0}")]
    Map(MapError),
    #[error("reading result objects: {0}")]
    Task(String),
    #[error("reading a result object: {0}")]
    Blob(crate::blobs::BlobError),
}

impl From<MapError> for ArchiveError {
    fn from(e: MapError) -> Self {
        ArchiveError::Map(e)
    }
}

impl From<crate::blobs::BlobError> for ArchiveError {
    fn from(e: crate::blobs::BlobError) -> Self {
        ArchiveError::Blob(e)
    }
}

/// Outbox rows read per step of a refresh.
const STEP: i64 = 2000;
/// Rows younger than this are read again at the next refresh: row ids are handed out when a
/// transaction inserts, not when it commits, so a row of a slower transaction (another study
/// job, another node) can appear below ids already read. A transaction that queues objects
/// commits within milliseconds; this is the margin.
const SETTLE_MS: i64 = 30_000;

pub struct Archive {
    db: Db,
    keys: Keys,
    blobs: crate::blobs::Blobs,
    /// This node's id; `None` with a shared bucket (every node's objects are readable).
    node: Option<String>,
    current: RwLock<Arc<Snapshot>>,
    /// One refresh at a time; queries meanwhile read the current snapshot.
    refreshing: tokio::sync::Mutex<()>,
}

impl Archive {
    /// Build the index of every result object this node has queued (with a shared bucket:
    /// every node has).
    pub async fn open(db: Db, keys: Keys, blobs: crate::blobs::Blobs, node: String) -> Result<Archive, ArchiveError> {
        let node = (!blobs.is_shared()).then_some(node);
        let archive = Archive { db, keys, blobs, node, current: RwLock::new(Arc::new(Snapshot::default())), refreshing: tokio::sync::Mutex::new(()) };
        let started = std::time::Instant::now();
        let opened = archive.refresh().await?;
        let s = archive.snapshot_now();
        info!(objects = s.instances, studies = s.studies(), map_records = opened, ms = started.elapsed().as_millis() as u64, "query index built");
        Ok(archive)
    }

    /// The current snapshot, without looking for new objects.
    pub fn snapshot_now(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The snapshot with every object queued until now.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, ArchiveError> {
        self.refresh().await?;
        Ok(self.snapshot_now())
    }

    /// Read the result objects queued since the last refresh into a new snapshot; returns how
    /// many map records were opened.
    async fn refresh(&self) -> Result<usize, ArchiveError> {
        let _one = self.refreshing.lock().await;
        let current = self.snapshot_now();
        let mut rows = self.db.result_objects_after(self.node.as_deref(), current.high_water, STEP).await?;
        if rows.is_empty() {
            return Ok(0); // the common case: one indexed SELECT, no copy
        }
        let mut next = (*current).clone();
        drop(current);
        let mut opened_total = 0;
        let mut objects = 0;
        // Originals already opened in this refresh, by de-identified SOP Instance UID.
        let mut originals: HashMap<String, Option<Originals>> = HashMap::new();
        let settled_before = crate::domain::now_ms() - SETTLE_MS;
        while let Some(&(last, _, _)) = rows.last() {
            // The high-water mark stops below the first row young enough to have overtaken a
            // slower transaction's row; from there on, rows are read again next time.
            let unsettled = rows.iter().find(|(_, _, created)| *created >= settled_before).map(|(id, _, _)| id - 1);
            for (_, path, _) in std::mem::take(&mut rows) {
                if next.has_path(&path) {
                    continue;
                }
                let file = match self.blobs.fetch(&path).await {
                    Ok(file) => file,
                    Err(error) if error.is_missing() => {
                        warn!(%error, path, "a queued result object is missing; it is not queryable");
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let header = tokio::task::spawn_blocking(move || {
                    dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(&file).map(|f| f.into_inner())
                })
                .await
                .map_err(|e| ArchiveError::Task(e.to_string()))?;
                let obj = match header {
                    Ok(o) => o,
                    Err(error) => {
                        warn!(%error, path, "a queued result object cannot be read; it is not queryable");
                        continue;
                    }
                };
                let mut opened = Vec::new();
                for uid in reidentify::references(&obj) {
                    if !originals.contains_key(&uid) {
                        let o = match self.db.reid_record(&uid).await? {
                            Some(record) => {
                                opened_total += 1;
                                Some(deid::open(&self.keys, &record)?)
                            }
                            None => None, // the node's own object (a heatmap the report references)
                        };
                        originals.insert(uid.clone(), o);
                    }
                    if let Some(Some(o)) = originals.get(&uid) {
                        opened.push((uid, o.clone()));
                    }
                }
                match reidentify::apply(obj, &self.keys, &opened) {
                    Ok(obj) => {
                        next.insert(&obj, &path, Arc::from(opened));
                        objects += 1;
                    }
                    Err(ReidError::NoReference) => warn!(path, "a queued result object references no stored instance; it is not queryable"),
                    Err(error) => warn!(%error, path, "a queued result object cannot be re-identified; it is not queryable"),
                }
            }
            next.high_water = unsettled.unwrap_or(last).max(next.high_water);
            if unsettled.is_some() {
                break;
            }
            rows = self.db.result_objects_after(self.node.as_deref(), next.high_water, STEP).await?;
        }
        if opened_total > 0 {
            let details = crate::audit::IndexOpened { purpose: "query index".into(), objects: objects as u64, map_records: opened_total as u64 };
            self.db.audit_append(&crate::audit::Event::ReidentifyIndex { details }).await?;
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(opened_total)
    }

    /// An indexed object re-identified for sending, by the code the outbox sends with
    /// (`results::reidentify`), with the originals the index opened for it: the caller audits
    /// the retrieve that discloses it.
    pub async fn reidentified(&self, object: &Arc<index::Instance>) -> Result<reidentify::Reidentified, ReidError> {
        let path = self.blobs.fetch(&object.path).await.map_err(|e| ReidError::Read(e.to_string()))?;
        let (keys, object) = (self.keys.clone(), object.clone());
        tokio::task::spawn_blocking(move || reidentify::with_originals(&keys, &path, &object.originals)).await.map_err(|e| ReidError::Read(e.to_string()))?
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
