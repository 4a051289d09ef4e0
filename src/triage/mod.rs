//! AI triage of stored studies: each instance is inferred as soon as it is stored (so a CT's
//! slices are done while the rest of the series arrives), and when a study is complete its
//! `study_ready` job catches up anything missed (a full arrival queue, a restart), waits for
//! passes still running, aggregates the outputs into one result per model, with findings, and
//! hands them to `results::publish`.
//!
//! - `pass`: one instance's pass, and the `Arrivals` worker that runs each as it lands.
//! - `job`: the study job (claim -> passes -> aggregate -> publish) and the `StudyJobs` worker.
//! - `series`: slab and volume models, run on a whole series by the study job.
//! - `heartbeat`: renewing a claim while its work runs.
//! - `aggregate`, `evaluate`, `offline`: pure aggregation, metrics, the offline commands.
//!
//! Owns: the per-instance pass (claim -> decode and preprocess on the blocking pool, bounded to
//! the cores -> engine -> one transaction), the study job, and the failure rule: an instance
//! whose pixels cannot be decoded is recorded as failed with the reason and fails its study's
//! result (visible, never a crash). Must not: know tch or PDUs; log identifying values (rows
//! are named by id).

pub mod aggregate;
pub mod evaluate;
mod heartbeat;
mod job;
pub mod offline;
mod pass;
mod series;

pub use job::StudyJobs;
pub use pass::Arrivals;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::db::{Db, DbError};
use crate::inference::engine::Engine;
use aggregate::Tiers;

#[derive(Debug, thiserror::Error)]
pub enum TriageError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("instance {0} has no row")]
    NoInstance(i64),
    #[error("preprocessing task failed: {0}")]
    Task(String),
    #[error("reading the instance file: {0}")]
    Blob(crate::blobs::BlobError),
    #[error("publishing the study's results: {0}")]
    Publish(crate::results::ResultsError),
}

impl From<crate::blobs::BlobError> for TriageError {
    fn from(e: crate::blobs::BlobError) -> Self {
        TriageError::Blob(e)
    }
}

pub struct Triage {
    db: Db,
    engine: Engine,
    /// The instance files, wherever they live (a shared bucket: any node's instances).
    blobs: crate::blobs::Blobs,
    /// How long a claimed instance pass or study job is held before another node may take it
    /// over; a running job renews its claim every third of it.
    lease: Duration,
    tiers: Tiers,
    preprocess: Arc<Semaphore>,
    /// Builds the SR and heatmaps of each result and queues them (None: results stay here).
    publisher: Option<crate::results::Publisher>,
}

impl Triage {
    pub fn new(
        db: Db,
        engine: Engine,
        blobs: crate::blobs::Blobs,
        lease: Duration,
        tiers: Tiers,
        preprocess_threads: usize,
        publisher: Option<crate::results::Publisher>,
    ) -> Arc<Triage> {
        let publisher = publisher.filter(crate::results::Publisher::enabled);
        Arc::new(Triage { db, engine, blobs, lease, tiers, preprocess: Arc::new(Semaphore::new(preprocess_threads.max(1))), publisher })
    }
}
