//! The AI result objects this node produced, as a Query/Retrieve SCP answers for them: an
//! in-memory index of each object as it is delivered (re-identified), rebuilt from the outbox
//! rows, the de-identified files and the sealed map at start-up and kept up to date from the
//! outbox before each query.
//!
//! Identifiers stay sealed at rest: the database holds only de-identified values and the
//! sealed map, the files are de-identified; the original patient and study identifiers exist
//! only in this process's memory. Building the index opens every map record its objects
//! reference without an audit entry each (an object that references no stored instance, such
//! as an IOCM rejection note, takes its study's identity: from an indexed object of the same
//! study and patient pseudonym, else from the record the outbox would open for it); it appends
//! one entry saying how many objects and records it opened. What a query or retrieve discloses
//! is audited by the service.
//!
//! - `keys`: the keys held per level and how they are matched.
//! - `index`: the snapshot (patients, studies, series, objects); an indexed rejection note hides
//!   the objects it names from query and retrieve (IHE IOCM), the note itself stays.
//! - `query`: an identifier read, matched, and answered.
//! - `disclose`: who may see which result, and the audit entry of each query and retrieve (the
//!   rule the DIMSE SCP and DICOMweb share).
//! - `render`: a Secondary Capture or Parametric Map as a PNG picture (WADO-RS `rendered`).

pub mod disclose;
pub mod index;
pub mod keys;
pub mod query;
pub mod render;

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
        // Below the first row young enough to have overtaken a slower transaction's row, once seen.
        let mut unsettled: Option<i64> = None;
        while let Some(&(last, _, _)) = rows.last() {
            // The high-water mark stops below the first young row; from there on, rows are
            // indexed now and read again (and skipped) next time. Reading goes on past it, so a
            // burst of young rows larger than a STEP is indexed whole, not a STEP until it settles.
            unsettled = unsettled.or_else(|| rows.iter().find(|(_, _, created)| *created >= settled_before).map(|(id, _, _)| id - 1));
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
                let text = |t| obj.get(t).and_then(|e| e.to_str().ok()).unwrap_or_default().trim_end_matches(['\0', ' ']).to_string();
                let deid = (text(tags::STUDY_INSTANCE_UID), text(tags::PATIENT_ID));
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
                let opened: index::Opened = match (opened.is_empty(), next.study_originals(&deid)) {
                    (false, _) => Arc::from(opened),
                    // No stored instance referenced (a rejection note references only the node's
                    // own objects): the identity of its study and patient, as an indexed object
                    // of them has it,
                    (true, Some(known)) => known,
                    // or from the record the outbox takes for it (`reidentify::study_record`).
                    (true, None) => match reidentify::study_record(&self.db, &obj).await.map_err(|e| match e {
                        ReidError::Map(e) => ArchiveError::Map(e),
                        other => ArchiveError::Task(other.to_string()),
                    })? {
                        Some(record) => {
                            let o = match originals.get(&record.sop_instance_uid) {
                                Some(Some(o)) => o.clone(),
                                _ => {
                                    opened_total += 1;
                                    let o = deid::open(&self.keys, &record)?;
                                    originals.insert(record.sop_instance_uid.clone(), Some(o.clone()));
                                    o
                                }
                            };
                            Arc::from(vec![(record.sop_instance_uid, o)])
                        }
                        None => Arc::from(opened),
                    },
                };
                match reidentify::apply(obj, &self.keys, &opened) {
                    Ok(obj) => {
                        next.insert(&obj, &path, &deid, opened);
                        objects += 1;
                    }
                    Err(ReidError::NoReference) => {
                        warn!(path, "a queued result object references no stored instance nor has its study one; it is not queryable")
                    }
                    Err(error) => warn!(%error, path, "a queued result object cannot be re-identified; it is not queryable"),
                }
            }
            next.high_water = unsettled.unwrap_or(last).max(next.high_water);
            rows = self.db.result_objects_after(self.node.as_deref(), last, STEP).await?;
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

#[cfg(test)]
mod tests {
    use dicom_core::VR;
    use dicom_object::InMemDicomObject;

    use super::*;
    use crate::db::SealedRecord;
    use crate::results::dataset::{self, put, put_seq};

    /// A de-identified result object of `study` referencing `referenced` (a stored instance's
    /// de-identified UID, or one of the node's own objects).
    fn object(dir: &std::path::Path, name: &str, class: &str, study: &str, sop: &str, referenced: &str) -> String {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::SOP_CLASS_UID, VR::UI, class);
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, sop);
        put(&mut o, tags::PATIENT_ID, VR::LO, "PSEUDONYM");
        put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, study);
        put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &format!("{sop}.1"));
        put(&mut o, tags::CONTENT_DATE, VR::DA, "20260105");
        let mut r = InMemDicomObject::new_empty();
        put(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, referenced);
        put_seq(&mut o, tags::REFERENCED_SOP_SEQUENCE, vec![r]);
        let rel = format!("outbox/results/{name}.dcm");
        std::fs::create_dir_all(dir.join("outbox/results")).unwrap();
        std::fs::write(dir.join(&rel), dataset::part10(&o, class, sop).unwrap()).unwrap();
        rel
    }

    /// The number of map records each index-building audit entry says it opened.
    async fn index_openings(db: &Db) -> Vec<u64> {
        let (entries, ..) = db.audit_chain().await.unwrap();
        entries
            .iter()
            .filter(|e| e.subject == "query-index")
            .map(|e| serde_json::from_str::<crate::audit::IndexOpened>(&e.details).unwrap().map_records)
            .collect()
    }

    #[tokio::test]
    async fn a_rejection_note_takes_its_studys_identity_from_the_index_or_the_map() {
        const SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
        const KOS: &str = "1.2.840.10008.5.1.4.1.1.88.59";
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::for_tests(5);
        let db = Db::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 1).await.unwrap().with_audit_key(keys.audit_key());
        let originals = serde_json::json!({
            "specific_character_set": null, "patient_id": "ORIG-1", "issuer_of_patient_id": null, "patient_name": "ROE^JANE",
            "patient_birth_date": null, "patient_sex": null, "accession_number": "ACC-1", "study_instance_uid": "1.2.3",
            "series_instance_uid": "1.2.3.4", "sop_instance_uid": "1.2.3.4.5", "study_date": null, "study_time": null, "study_id": null,
            "referring_physician_name": null, "study_description": null
        });
        let (study, stored) = (keys.uid("1.2.3"), keys.uid("1.2.3.4.5"));
        let (nonce, sealed) = keys.seal(&serde_json::to_vec(&originals).unwrap(), &stored).unwrap();
        let record =
            SealedRecord { sop_instance_uid: stored.clone(), study_instance_uid: study.clone(), key_id: keys.map_key_id(), nonce, sealed, created_at_ms: 0 };

        // A rejection note alone: the identity from the record of a stored instance of its study.
        let kos = object(dir.path(), "kos", KOS, &study, "2.25.20", "2.25.10");
        db.seed_result_objects("n1", "PACS", &[(record.clone(), kos)]).await.unwrap();
        let archive = Archive::open(db.clone(), keys.clone(), crate::blobs::Blobs::local(dir.path()), "n1".into()).await.unwrap();
        let s = archive.snapshot_now();
        let study_node = &s.patients[0].studies[0];
        assert_eq!((study_node.uid.as_str(), s.patients[0].attrs.text(tags::PATIENT_ID)), ("1.2.3", "ORIG-1"));
        assert_eq!(study_node.attrs.text(tags::ACCESSION_NUMBER), "ACC-1");
        let note = &study_node.series[0].instances[0];
        assert_eq!((note.sop_class_uid.as_str(), note.originals[0].0.as_str()), (KOS, stored.as_str()));
        assert_eq!(index_openings(&db).await, [1], "the record opened is audited with the index");

        // A report and another note of the same study in one refresh: the note takes the
        // report's originals, no record is opened for it.
        let sr = object(dir.path(), "sr", SR, &study, "2.25.10", &stored);
        let kos2 = object(dir.path(), "kos2", KOS, &study, "2.25.21", "2.25.10");
        db.seed_result_objects("n1", "PACS", &[(record.clone(), sr), (record, kos2)]).await.unwrap();
        let s = archive.snapshot().await.unwrap();
        assert_eq!((s.instances, s.studies()), (3, 1));
        let uids: Vec<&str> = s.patients[0].studies[0].series.iter().map(|se| se.instances[0].uid.as_str()).collect();
        assert_eq!(uids, ["2.25.20", "2.25.10", "2.25.21"]);
        assert_eq!(index_openings(&db).await, [1, 1], "the report's record only");

        // A note whose study has neither indexed objects nor stored instances is not indexed.
        let orphan = object(dir.path(), "orphan", KOS, "2.25.999", "2.25.22", "2.25.10");
        let (nonce, sealed) = keys.seal(b"{}", "2.25.998").unwrap();
        let unrelated = SealedRecord {
            sop_instance_uid: "2.25.998".into(),
            study_instance_uid: "2.25.997".into(),
            key_id: keys.map_key_id(),
            nonce,
            sealed,
            created_at_ms: 0,
        };
        db.seed_result_objects("n1", "PACS", &[(unrelated, orphan)]).await.unwrap();
        assert_eq!(archive.snapshot().await.unwrap().instances, 3);
    }

    /// More than one STEP of rows queued in the last SETTLE_MS (a burst of results, a restart
    /// right after one): every object is indexed at once, not the first STEP only until the
    /// rows settle; the young rows are still read again (and skipped) at the next refresh.
    #[tokio::test]
    async fn a_burst_of_young_rows_larger_than_a_step_is_indexed_whole() {
        const SR: &str = "1.2.840.10008.5.1.4.1.1.88.34";
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::for_tests(6);
        let db = Db::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 1).await.unwrap().with_audit_key(keys.audit_key());
        let originals = serde_json::json!({
            "specific_character_set": null, "patient_id": "ORIG-2", "issuer_of_patient_id": null, "patient_name": "ROE^JOHN",
            "patient_birth_date": null, "patient_sex": null, "accession_number": "ACC-2", "study_instance_uid": "1.2.4",
            "series_instance_uid": "1.2.4.4", "sop_instance_uid": "1.2.4.4.5", "study_date": null, "study_time": null, "study_id": null,
            "referring_physician_name": null, "study_description": null
        });
        let (study, stored) = (keys.uid("1.2.4"), keys.uid("1.2.4.4.5"));
        let (nonce, sealed) = keys.seal(&serde_json::to_vec(&originals).unwrap(), &stored).unwrap();
        let record =
            SealedRecord { sop_instance_uid: stored.clone(), study_instance_uid: study.clone(), key_id: keys.map_key_id(), nonce, sealed, created_at_ms: 0 };
        let n = STEP as usize + 3;
        let rows: Vec<_> = (0..n).map(|i| (record.clone(), object(dir.path(), &format!("sr{i}"), SR, &study, &format!("2.25.{}", 100 + i), &stored))).collect();
        db.seed_result_objects("n1", "PACS", &rows).await.unwrap();
        let archive = Archive::open(db.clone(), keys.clone(), crate::blobs::Blobs::local(dir.path()), "n1".into()).await.unwrap();
        assert_eq!(archive.snapshot_now().instances, n, "every young row is indexed at start-up");
        let more = object(dir.path(), "late", SR, &study, "2.25.99", &stored);
        db.seed_result_objects("n1", "PACS", &[(record, more)]).await.unwrap();
        assert_eq!(archive.snapshot().await.unwrap().instances, n + 1, "and a row queued after them at the next refresh");
    }
}
