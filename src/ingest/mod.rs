//! C-STORE handling: from the first data byte to a committed row.
//!
//! Owns: the free-disk floor, the incoming file (`spool`: header de-identified in memory, pixel
//! group streamed into the store file), the structural scan, the checks a data set must pass,
//! the `instances` row with its sealed originals and audit entry, and the mapping of every
//! failure to a PS3.4 C-STORE status (`IngestError::dimse_status`). Success is returned only
//! after the de-identified file and its directory are synced and the row is committed; on any
//! failure the store file is removed. The original header never reaches the disk.
//! Must not: know PDUs or SQL, or log identifying values (UIDs are wrapped in `Redacted`
//! wherever they could be printed).

pub mod commit;
pub mod procedure_step;
pub mod spool;
pub mod study_ready;

use std::sync::Arc;

use crate::blobs::{BlobError, Blobs};
use crate::config::{BurnedInPolicy, StorageSettings};
use crate::db::{Db, DbError, InsertOutcome, NewInstance};
use crate::deid::file::{FileError, Written};
use crate::deid::Deidentifier;
use crate::dicom::scan;
use crate::dicom::{Status, TransferSyntax};
use crate::domain::{now_ms, Redacted};
use scan::ScanError;
use spool::{Content, Dirs, IncomingFile, Refusal, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("free disk space {available} bytes is below the configured floor of {floor} bytes")]
    OutOfDisk { available: u64, floor: u64 },
    #[error("checking free disk space: {0}")]
    DiskCheck(std::io::Error),
    #[error("listing the store at {path}: {cause}")]
    ListStore { path: std::path::PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("data set cannot be parsed: {0}")]
    Unparseable(ScanError),
    #[error("data set lacks {0}")]
    MissingAttribute(&'static str),
    #[error("SOP Class UID of the data set differs from the Affected SOP Class UID of the request")]
    SopClassMismatch,
    #[error("SOP Instance UID of the data set differs from the Affected SOP Instance UID of the request")]
    SopInstanceMismatch,
    #[error("Affected SOP Class UID differs from the presentation context's abstract syntax")]
    NotNegotiated,
    #[error("de-identification failed: {0}")]
    Deid(FileError),
    #[error("more than {} MiB before the pixel data: too large to de-identify in memory", spool::MAX_HEAD >> 20)]
    HeaderTooLarge,
    #[error("writing the store file {path}: {cause}")]
    Store { path: std::path::PathBuf, cause: std::io::Error },
    #[error("sealing the re-identification record: {0}")]
    Seal(crate::deid::MapError),
    #[error("recording the instance: {0}")]
    Db(DbError),
    #[error("storing the instance in the object store: {0}")]
    Blob(BlobError),
    #[error("scan task failed: {0}")]
    Task(String),
}

impl From<ScanError> for IngestError {
    fn from(e: ScanError) -> Self {
        IngestError::Unparseable(e)
    }
}

impl From<FileError> for IngestError {
    fn from(e: FileError) -> Self {
        IngestError::Deid(e)
    }
}

impl From<crate::deid::MapError> for IngestError {
    fn from(e: crate::deid::MapError) -> Self {
        IngestError::Seal(e)
    }
}

impl From<DbError> for IngestError {
    fn from(e: DbError) -> Self {
        IngestError::Db(e)
    }
}

impl From<BlobError> for IngestError {
    fn from(e: BlobError) -> Self {
        IngestError::Blob(e)
    }
}

impl IngestError {
    /// The C-STORE response status for this failure (PS3.4 Table B.2-1, PS3.7 Annex C).
    pub fn dimse_status(&self) -> Status {
        match self {
            IngestError::OutOfDisk { .. }
            | IngestError::DiskCheck(_)
            | IngestError::ListStore { .. }
            | IngestError::Spool(_)
            | IngestError::Store { .. }
            | IngestError::HeaderTooLarge => Status::OUT_OF_RESOURCES,
            IngestError::Unparseable(ScanError::InflatesTooLarge { .. }) => Status::OUT_OF_RESOURCES,
            IngestError::Unparseable(_) => Status::CANNOT_UNDERSTAND,
            IngestError::Deid(FileError::Write { .. } | FileError::Read { .. }) => Status::OUT_OF_RESOURCES,
            IngestError::Deid(FileError::Deid(_)) => Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            IngestError::Deid(_) => Status::CANNOT_UNDERSTAND,
            IngestError::Seal(_) => Status::PROCESSING_FAILURE,
            IngestError::MissingAttribute(_) | IngestError::SopClassMismatch | IngestError::SopInstanceMismatch => Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            IngestError::NotNegotiated => Status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
            IngestError::Db(_) | IngestError::Task(_) => Status::PROCESSING_FAILURE,
            // The object store is unreachable or refused the write: a transient refusal, the
            // sender retries later.
            IngestError::Blob(_) => Status::OUT_OF_RESOURCES,
        }
    }
}

impl IngestError {
    /// The Error Comment (0000,0902) for the sender: the reason in its terms, never a path,
    /// an operating-system error or a database message of this machine (the log has those).
    pub fn peer_comment(&self) -> String {
        match self {
            IngestError::ListStore { .. }
            | IngestError::Store { .. }
            | IngestError::DiskCheck(_)
            | IngestError::Spool(SpoolError::Create { .. } | SpoolError::Write { .. } | SpoolError::Task(_))
            | IngestError::Deid(FileError::Read { .. } | FileError::Write { .. } | FileError::NotPart10 { .. })
            | IngestError::Seal(_)
            | IngestError::Db(_)
            | IngestError::Task(_) => "the node could not store the instance (local failure; see its log)".into(),
            IngestError::Blob(_) => "the node could not store the instance (object store unavailable; retry later)".into(),
            other => other.to_string(),
        }
    }
}

/// What the request's command set says about the instance that follows.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub sop_class_uid: Redacted<String>,
    pub sop_instance_uid: Redacted<String>,
    pub transfer_syntax: &'static TransferSyntax,
    pub calling_ae: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored {
        instance_id: i64,
    },
    /// Already stored under this SOP Instance UID: the first copy is kept, Success is returned.
    Duplicate {
        instance_id: i64,
    },
}

pub struct Ingest {
    dirs: Dirs,
    /// Where a stored file goes once written: nowhere else (local), or the cluster's bucket.
    blobs: Blobs,
    min_free_disk: u64,
    fsync: bool,
    db: Db,
    /// The rows of stored instances, committed in groups (`commit`).
    commits: commit::GroupCommit,
    /// Buffers of data sets held whole, reused.
    buffers: spool::HeadBuffers,
    deid: Arc<Deidentifier>,
    burned_in: BurnedInPolicy,
    /// Stored instance ids for the triage stage, so inference starts as each one lands.
    arrivals: Option<tokio::sync::mpsc::Sender<i64>>,
    /// Wakes the study sweep when a procedure step ends (`study_ready::StudyReadyWorker::with_waker`).
    study_wake: Arc<tokio::sync::Notify>,
    /// Procedure steps one AE may hold open (`ingest.mpps_max_open_steps`).
    max_open_steps: u32,
}

impl Ingest {
    pub fn new(
        cfg: &StorageSettings,
        db: Db,
        deid: Deidentifier,
        burned_in: BurnedInPolicy,
        arrivals: Option<tokio::sync::mpsc::Sender<i64>>,
        blobs: Blobs,
        max_open_steps: u32,
    ) -> Arc<Ingest> {
        // Needs the runtime: the group committer is a task.
        Arc::new(Ingest {
            dirs: Dirs::new(&cfg.data_dir),
            min_free_disk: cfg.min_free_disk.0,
            // With a shared bucket the local file is a staging copy: the bucket's acknowledgement
            // makes the instance durable, not an fsync here.
            fsync: cfg.fsync && !blobs.is_shared(),
            blobs,
            commits: commit::GroupCommit::start(db.clone()),
            buffers: Default::default(),
            db,
            deid: Arc::new(deid),
            burned_in,
            arrivals,
            study_wake: Arc::default(),
            max_open_steps,
        })
    }

    /// What the study sweep waits on besides its timer.
    pub fn study_waker(&self) -> Arc<tokio::sync::Notify> {
        self.study_wake.clone()
    }

    /// Move files in the store that have no row into `quarantine/<day>/`: a crash between the
    /// store file and the commit leaves such a file, never acknowledged. But so does a database
    /// restored from a backup, or a lagging replica, and then the files *were* acknowledged:
    /// nothing is deleted, an operator decides (`triage-node status` counts them). Only the two
    /// newest day folders are looked at (where the last writes went). Run before the listener
    /// starts; the data directory belongs to this node alone.
    pub async fn quarantine_unrecorded(&self) -> Result<usize, IngestError> {
        let store = self.dirs.store.clone();
        let list = |path: &std::path::Path| std::fs::read_dir(path).map_err(|source| IngestError::ListStore { path: path.to_path_buf(), cause: source });
        let mut days: Vec<String> =
            list(&store)?.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().into_string().ok()).collect();
        days.sort();
        let mut moved = 0;
        for day in days.iter().rev().take(2) {
            let recorded = self.db.paths_under(&format!("store/{day}/")).await?;
            let folder = store.join(day);
            let quarantine = quarantine_dir(&self.dirs.data).join(day);
            for entry in list(&folder)?.flatten() {
                let relative = format!("store/{day}/{}", entry.file_name().to_string_lossy());
                if recorded.contains(&relative) {
                    // With a shared bucket, a recorded file left here is the staging copy of an
                    // object the bucket holds (a stop between the commit and its move).
                    if self.blobs.is_shared() {
                        let _ = std::fs::remove_file(entry.path());
                    }
                    continue;
                }
                let moved_ok = std::fs::create_dir_all(&quarantine)
                    .and_then(|_| std::fs::rename(entry.path(), quarantine.join(entry.file_name())))
                    .and_then(|_| spool::sync_parent(&quarantine.join(entry.file_name()), self.fsync))
                    .and_then(|_| spool::sync_parent(&entry.path(), self.fsync));
                match moved_ok {
                    Ok(()) => moved += 1,
                    Err(source) => return Err(IngestError::Store { path: entry.path(), cause: source }),
                }
            }
        }
        Ok(moved)
    }

    /// Start receiving an instance, or refuse if the disk is below its floor. Cheap enough for
    /// the network task: one statvfs, no file I/O.
    pub fn begin(&self, req: &StoreRequest) -> Result<IncomingFile, IngestError> {
        let available = free_bytes(&self.dirs.data).map_err(IngestError::DiskCheck)?;
        if available < self.min_free_disk {
            return Err(IngestError::OutOfDisk { available, floor: self.min_free_disk });
        }
        Ok(IncomingFile::new(spool::Target {
            dirs: self.dirs.clone(),
            day: day_folder(now_ms()),
            deid: self.deid.clone(),
            ts: req.transfer_syntax,
            drop_burned_in: self.burned_in == BurnedInPolicy::Exclude,
            min_free_disk: self.min_free_disk,
            buffers: self.buffers.clone(),
        }))
    }

    /// All data set bytes have arrived: validate the whole data set, cut what follows the pixel
    /// group, sync the de-identified file and its directory, then record. On any error the store
    /// file is removed.
    pub async fn complete(&self, req: &StoreRequest, mut incoming: IncomingFile) -> Result<StoreOutcome, IngestError> {
        let phase = Phases::start();
        if let Err(e) = incoming.settle().await {
            incoming.discard().await;
            return Err(e.into());
        }
        phase.done("settle");
        let (dirs, fsync, request, deid, buffers) = (self.dirs.clone(), self.fsync, req.clone(), self.deid.clone(), self.buffers.clone());
        let drop_burned_in = self.burned_in == BurnedInPolicy::Exclude;
        let received_at_ms = now_ms();
        // One trip to the blocking pool for everything that touches the disk.
        let (received_digest, relative, written) = blocking(move || {
            let phase = Phases::start();
            let received = incoming.finish()?;
            phase.done("finish");
            let digest = received.digest;
            match received.content {
                Content::Refused(Refusal::Deid(e)) => Err(e.into()),
                Content::Refused(Refusal::TooLarge) => Err(IngestError::HeaderTooLarge),
                Content::Whole(data) => {
                    let stored = store_whole(&request, &deid, &dirs, &data, received_at_ms, drop_burned_in, fsync, || digest.finish(&data));
                    buffers.give(data);
                    stored
                }
                Content::Split { head, split, header_len, deid, relative, path, file } => {
                    let split = Split { head: &head, split, header_len, path: &path, file: &file };
                    let drop_pixels = crate::deid::file::drops_pixels(&deid, drop_burned_in);
                    let kept = keep_split(&request, split, received.kept_len, drop_pixels, fsync);
                    phase.done("scan_and_sync");
                    kept.map(|(pixels_written, size_bytes)| (digest.finish(&[]), relative, Written { deid: *deid, pixels_written, size_bytes })).inspect_err(
                        |_| {
                            let _ = std::fs::remove_file(&path);
                        },
                    )
                }
            }
        })
        .await?;

        let d = &written.deid;
        let excluded_reason = (!written.pixels_written).then(|| d.content_removed.or(d.burned_in).unwrap_or("no Pixel Data").to_string());
        let stored = self.dirs.data.join(&relative);
        phase.done("disk");
        let sealed = match crate::deid::seal(self.deid.keys(), d) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&stored);
                return Err(e.into());
            }
        };
        let new = NewInstance {
            sop_instance_uid: d.sop_instance_uid.clone(),
            sop_class_uid: d.sop_class_uid.clone(),
            study_instance_uid: d.study_instance_uid.clone(),
            series_instance_uid: d.series_instance_uid.clone(),
            modality: d.object.get(dicom_dictionary_std::tags::MODALITY).and_then(|e| e.to_str().ok()).map(|m| m.trim().to_string()),
            transfer_syntax_uid: req.transfer_syntax.uid.to_string(),
            calling_ae_title: req.calling_ae.clone(),
            path: relative.to_string_lossy().into_owned(),
            size_bytes: written.size_bytes as i64,
            dataset_digest: received_digest,
            received_at_ms,
            excluded_reason,
            deid_method: Some(self.deid.method_json().to_string()),
            patient_pseudonym: d.object.get(dicom_dictionary_std::tags::PATIENT_ID).and_then(|e| e.to_str().ok()).map(|p| p.trim().to_string()),
        };
        phase.done("seal");
        // A shared bucket acknowledges the whole object before its row is committed.
        if self.blobs.is_shared() {
            if let Err(e) = self.blobs.upload(&new.path, &stored).await {
                let _ = std::fs::remove_file(&stored);
                // A conflict leaves the other object alone; a failed upload may have left a
                // partial object, which no row names.
                return Err(e.into());
            }
            phase.done("upload");
        }
        // The file is synced; its folder's entry is synced by the committer, once for every
        // instance of the group created in that folder, before the rows are committed.
        let folder = if self.fsync { stored.parent().map(std::path::Path::to_path_buf) } else { None };
        let inserted = self.commits.insert(new.clone(), sealed, folder).await;
        phase.done("commit");
        match inserted {
            Ok(InsertOutcome::Inserted { instance_id, .. }) => {
                self.blobs.adopt(&new.path, &stored);
                // Never waits: when the triage stage is behind, the study job catches up.
                if let (Some(arrivals), None) = (&self.arrivals, &new.excluded_reason) {
                    let _ = arrivals.try_send(instance_id);
                }
                Ok(StoreOutcome::Stored { instance_id })
            }
            Ok(InsertOutcome::Duplicate { instance_id }) => {
                let _ = std::fs::remove_file(&stored);
                self.forget_upload(&new.path).await;
                Ok(StoreOutcome::Duplicate { instance_id })
            }
            Err(commit::CommitError::Sync { path, cause: source }) => {
                let _ = std::fs::remove_file(&stored);
                self.forget_upload(&new.path).await;
                Err(IngestError::Store { path, cause: source })
            }
            Err(commit::CommitError::Db(e)) => {
                // The error may have come after the commit took effect (a connection lost
                // during COMMIT): ask again before removing the file, so that a row never
                // names a missing file. If even that cannot be answered, the file stays; an
                // unrecorded one is quarantined at the next start, never deleted.
                match self.db.find_instance(&new.sop_instance_uid).await {
                    Ok(Some(row)) if row.path == new.path => {
                        self.blobs.adopt(&new.path, &stored);
                        tracing::warn!(instance_id = row.id, error = %e, "the database reported an error, but the instance was recorded: Success");
                        if let (Some(arrivals), None) = (&self.arrivals, &new.excluded_reason) {
                            let _ = arrivals.try_send(row.id);
                        }
                        Ok(StoreOutcome::Stored { instance_id: row.id })
                    }
                    Ok(_) => {
                        // The uploaded object stays: the COMMIT may still land after this read
                        // (on another connection), and then its row names it. An object no row
                        // names costs only space.
                        let _ = std::fs::remove_file(&stored);
                        Err(e.into())
                    }
                    Err(_) => Err(e.into()),
                }
            }
        }
    }
}

impl Ingest {
    /// An uploaded copy that no row names (a duplicate, a failed commit): removed from the
    /// bucket. A failure to remove it only leaves an object no row names.
    async fn forget_upload(&self, key: &str) {
        if self.blobs.is_shared() {
            if let Err(error) = self.blobs.delete(key).await {
                tracing::warn!(%error, "an uploaded copy no row names could not be removed");
            }
        }
    }
}

/// Time spent per phase of an instance's completion, recorded as `triage_ingest_phase_seconds`
/// (a histogram per phase: `settle` the last buffered writes, `finish` the spool's end,
/// `scan_and_sync` the structural scan and the fsyncs, `disk` that whole blocking trip,
/// `seal` the sealed map record, `commit` the database transaction): where an instance's time
/// goes, readable at `/metrics` in production.
struct Phases {
    since: std::cell::Cell<std::time::Instant>,
}

impl Phases {
    fn start() -> Phases {
        Phases { since: std::cell::Cell::new(std::time::Instant::now()) }
    }

    /// Record the time since the last phase ended under `name`.
    fn done(&self, name: &'static str) {
        let now = std::time::Instant::now();
        metrics::histogram!("triage_ingest_phase_seconds", "phase" => name).record(now.duration_since(self.since.get()).as_secs_f64());
        self.since.set(now);
    }
}

/// A data set received whole (small enough to be held: `spool::IN_MEMORY`; no pixel group; or
/// deflated): validate it, de-identify its header and write the store file in one go: the
/// header before the pixel group de-identified, the pixel group copied byte for byte (the same
/// bytes the streaming path and `triage-node deid` write). `digest` (the keyed digest of the
/// received bytes, CPU work) runs while the file is being written back, before its fsync waits.
/// Returns the digest and the file's path relative to data_dir.
#[allow(clippy::too_many_arguments)]
fn store_whole(
    request: &StoreRequest,
    deid: &Deidentifier,
    dirs: &Dirs,
    data: &[u8],
    received_at_ms: i64,
    drop_burned_in: bool,
    fsync: bool,
    digest: impl FnOnce() -> String,
) -> Result<(String, std::path::PathBuf, Written), IngestError> {
    let ts = request.transfer_syntax;
    let phase = Phases::start();
    let fields = scan::scan(data, Some(data.len() as u64), ts)?;
    phase.done("whole_scan");
    // Offsets mean nothing in a deflated data set: it is de-identified whole.
    let pixels = match (ts.deflated, fields.pixel_group_at) {
        (false, Some(start)) => {
            // The scan's offsets lie within the bytes it read; clamped all the same, so that no
            // offset a peer's bytes produce can slice past the data.
            let len = data.len() as u64;
            let end = fields.trailing_from.filter(|&t| t >= start).unwrap_or(len).min(len);
            Some((start.min(end) as usize, end as usize))
        }
        _ => None,
    };
    check(request, fields)?;
    let head = pixels.map_or(data, |(start, _)| &data[..start]);
    let (deid, encoded) = crate::deid::file::deidentify_header(deid, head, ts.uid, drop_burned_in)?;
    phase.done("whole_deid");
    let pixels = pixels.filter(|_| !crate::deid::file::drops_pixels(&deid, drop_burned_in)).map(|(start, end)| &data[start..end]);
    let (relative, path) = spool::store_path(dirs, &day_folder(received_at_ms))?;
    let stored = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        std::io::Write::write_all(&mut file, &encoded)?;
        if let Some(pixels) = pixels {
            std::io::Write::write_all(&mut file, pixels)?;
        }
        // The disk starts writing now; the digest is computed meanwhile, then fsync waits for
        // what is left.
        spool::start_writeback(&file, 0, (encoded.len() + pixels.map_or(0, <[u8]>::len)) as u64);
        phase.done("whole_write");
        let digest = digest();
        phase.done("whole_digest");
        let durable = durable(&file, fsync).map(|size| (digest, size));
        phase.done("whole_sync");
        durable
    })();
    let (digest, size_bytes) = stored.map_err(|source| {
        let _ = std::fs::remove_file(&path);
        IngestError::Store { path: path.clone(), cause: source }
    })?;
    let pixels_written = pixels.is_some() || deid.object.get(dicom_dictionary_std::tags::PIXEL_DATA).is_some();
    Ok((digest, relative, Written { deid, pixels_written, size_bytes }))
}

/// A store file started while the data set arrived: the original header (in memory) and what
/// follows it in the file.
struct Split<'a> {
    head: &'a [u8],
    split: u64,
    header_len: u64,
    path: &'a std::path::Path,
    file: &'a std::fs::File,
}

/// Validate the whole data set (original header chained with the pixel group on disk), cut
/// what follows the pixel group (or the pixels themselves when they are dropped), and make the
/// file durable. Returns (pixels kept, file size); the caller removes the file on error.
fn keep_split(request: &StoreRequest, s: Split<'_>, len: u64, drop_pixels: bool, fsync: bool) -> Result<(bool, u64), IngestError> {
    let mut pixels = std::fs::File::open(s.path).map_err(ScanError::Io)?;
    std::io::Seek::seek(&mut pixels, std::io::SeekFrom::Start(s.header_len)).map_err(ScanError::Io)?;
    let fields = scan::scan(std::io::Read::chain(s.head, pixels), Some(len), request.transfer_syntax)?;
    let trailing = fields.trailing_from;
    check(request, fields)?;
    // Keep the pixel group only: elements after it are removed by the profile.
    let end = match (drop_pixels, trailing) {
        (true, _) => Some(s.header_len),
        (false, Some(t)) if t >= s.split => Some(s.header_len + t - s.split),
        (false, _) => None,
    };
    let stored = (|| {
        if let Some(end) = end {
            s.file.set_len(end)?;
        }
        durable(s.file, fsync)
    })();
    let size_bytes = stored.map_err(|source| IngestError::Store { path: s.path.to_path_buf(), cause: source })?;
    Ok((!drop_pixels, size_bytes))
}

/// A data set must name the SOP Class and Instance the request named, and its study and series.
fn check(req: &StoreRequest, fields: scan::HeaderFields) -> Result<(), IngestError> {
    let sop_class_uid = fields.sop_class_uid.ok_or(IngestError::MissingAttribute("SOP Class UID (0008,0016)"))?;
    let sop_instance_uid = fields.sop_instance_uid.ok_or(IngestError::MissingAttribute("SOP Instance UID (0008,0018)"))?;
    fields.study_instance_uid.ok_or(IngestError::MissingAttribute("Study Instance UID (0020,000D)"))?;
    fields.series_instance_uid.ok_or(IngestError::MissingAttribute("Series Instance UID (0020,000E)"))?;
    if sop_class_uid != req.sop_class_uid.0 {
        return Err(IngestError::SopClassMismatch);
    }
    if sop_instance_uid != req.sop_instance_uid.0 {
        return Err(IngestError::SopInstanceMismatch);
    }
    Ok(())
}

/// fsync a new store file (when `fsync`); returns its size. Its folder's entry is made durable
/// by the group committer (`commit`), before its row is committed.
fn durable(file: &std::fs::File, fsync: bool) -> std::io::Result<u64> {
    if fsync {
        file.sync_all()?;
    }
    Ok(file.metadata()?.len())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, IngestError> + Send + 'static) -> Result<T, IngestError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| IngestError::Task(e.to_string()))?
}

/// Where store files without a row are moved at start-up (`data_dir/quarantine/<day>/`).
pub fn quarantine_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("quarantine")
}

/// How many files wait in quarantine (for `triage-node status`).
pub fn count_quarantined(data_dir: &std::path::Path) -> usize {
    let Ok(days) = std::fs::read_dir(quarantine_dir(data_dir)) else { return 0 };
    days.flatten().filter_map(|d| std::fs::read_dir(d.path()).ok()).map(|files| files.flatten().count()).sum()
}

/// `YYYYMMDD` (UTC) of a millisecond timestamp: store folders stay a manageable size.
fn day_folder(ms: i64) -> String {
    let (y, m, d) = crate::domain::civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}{m:02}{d:02}")
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_folders() {
        assert_eq!(day_folder(0), "19700101");
        assert_eq!(day_folder(951_782_400_000), "20000229");
        assert_eq!(day_folder(1_795_824_000_000), "20261128");
    }

    #[test]
    fn every_failure_has_a_ps34_status() {
        let check = |e: IngestError, expected: u16| assert_eq!(e.dimse_status().code(), expected, "{e}");
        check(IngestError::OutOfDisk { available: 1, floor: 2 }, 0xA700);
        check(IngestError::Unparseable(ScanError::Truncated { offset: 3 }), 0xC000);
        check(IngestError::SopClassMismatch, 0xA900);
        check(IngestError::SopInstanceMismatch, 0xA900);
        check(IngestError::MissingAttribute("x"), 0xA900);
        check(IngestError::NotNegotiated, 0x0122);
        check(IngestError::Task("x".into()), 0x0110);
    }

    /// No local path or system error reaches the sender's Error Comment.
    #[test]
    fn error_comments_name_no_local_path() {
        let io = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let path = std::path::PathBuf::from("/var/lib/triage-node/store/20261201/x.dcm");
        for e in [
            IngestError::Store { path: path.clone(), cause: io() },
            IngestError::ListStore { path: path.clone(), cause: io() },
            IngestError::Spool(SpoolError::Write { path: path.clone(), cause: io() }),
            IngestError::Spool(SpoolError::Create { path: path.clone(), cause: io() }),
            IngestError::Deid(FileError::Write { path: path.clone(), cause: io() }),
        ] {
            assert!(e.to_string().contains("/var/lib"), "the log keeps the detail: {e}");
            let comment = e.peer_comment();
            assert!(!comment.contains('/') && !comment.contains("denied"), "{comment}");
        }
        assert_eq!(IngestError::SopClassMismatch.peer_comment(), IngestError::SopClassMismatch.to_string());
        assert!(IngestError::Spool(SpoolError::OutOfDisk { available: 1, floor: 2 }).peer_comment().contains("floor"));
    }

    /// An instance held whole is written as the streaming path writes it: the de-identified
    /// header, then the pixel group byte for byte; what follows the pixel group never reaches
    /// the disk, and neither do pixels left out as burned in.
    #[test]
    fn a_whole_instance_is_stored_header_and_pixel_group_only() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        use dicom_transfer_syntax_registry::TransferSyntaxIndex;
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        dirs.prepare().unwrap();
        let deid = Deidentifier::new(crate::deid::Keys::for_tests(1), vec![], vec![]);
        let ts = crate::dicom::sop::transfer_syntax("1.2.840.10008.1.2.1").unwrap();
        let pixels: Vec<u8> = (0..512 * 512 * 2).map(|i| (i * 31 % 251) as u8).collect();
        for burned_in in ["NO", "YES"] {
            let obj = dicom_object::InMemDicomObject::from_element_iter([
                DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")),
                DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
                DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("DOE^JANE")),
                DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.5")),
                DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.6")),
                DataElement::new(tags::BURNED_IN_ANNOTATION, VR::CS, PrimitiveValue::from(burned_in)),
                DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels.clone())),
            ]);
            let mut data = Vec::new();
            obj.write_dataset_with_ts(&mut data, dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts.uid).unwrap()).unwrap();
            let split = crate::dicom::scan::locate_pixel_group(&data, ts).unwrap().unwrap() as usize;
            let group = data[split..].to_vec();
            // A trailer after the pixel group: a private element naming the patient.
            data.extend_from_slice(&[0x09, 0x7F, 0x10, 0x00, b'L', b'O', 8, 0]);
            data.extend_from_slice(b"DOE^JANE");
            let request = StoreRequest {
                sop_class_uid: Redacted("1.2.840.10008.5.1.4.1.1.2".into()),
                sop_instance_uid: Redacted("1.2.3.4".into()),
                transfer_syntax: ts,
                calling_ae: "CT".into(),
            };
            let (_, relative, written) = store_whole(&request, &deid, &dirs, &data, 0, true, false, String::new).unwrap();
            let on_disk = std::fs::read(dir.path().join(relative)).unwrap();
            let (_, header) = crate::deid::file::deidentify_header(&deid, &data[..split], ts.uid, true).unwrap();
            assert!(on_disk.starts_with(&header), "burned in {burned_in}: the de-identified header");
            assert!(!on_disk.windows(8).any(|w| w == b"DOE^JANE"), "burned in {burned_in}: an original value reached the disk");
            if burned_in == "NO" {
                assert!(on_disk[header.len()..] == group[..], "the pixel group, byte for byte, and nothing after it");
                assert!(written.pixels_written);
            } else {
                assert_eq!(on_disk.len(), header.len(), "pixels left out are never written");
                assert!(!written.pixels_written);
            }
            assert_eq!(written.size_bytes, on_disk.len() as u64);
        }
    }

    #[test]
    fn free_bytes_reads_the_file_system() {
        assert!(free_bytes(std::path::Path::new("/")).unwrap() > 0);
        assert!(free_bytes(std::path::Path::new("/no/such/dir")).is_err());
    }
}
