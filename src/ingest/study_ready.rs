//! Study-complete detection: a study is complete when the modality's procedure steps (MPPS)
//! say so and every instance they list is stored, else after a quiet period with no new instance.
//!
//! Owns: the periodic sweep that appends the audit entries of newly stored instances (in
//! batches, off the C-STORE path), then promotes quiet studies and queues `study_ready` jobs.
//! The timer lives in the database (`last_received_at_ms`), and so does the audit marker
//! (`instances.audit_seq`), so after a restart the sweep catches up by itself.
//! Must not: hold timers in memory that a restart would lose.

use std::time::Duration;

use tracing::{error, info};

use crate::db::{Db, DbError};
use crate::domain::now_ms;
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

/// How often the sweep looks while an ended procedure step waits for its instances, and how
/// soon after an N-SET it looks (`wake`).
const PERFORMED_TICK_MS: u64 = 50;

#[derive(Clone)]
pub struct StudyReadyWorker {
    db: Db,
    quiet_period: Duration,
    waiting: bool,
    /// Notified when a procedure step ends, so that its study is promoted without a tick's wait.
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// AEs whose procedure steps may complete any study (`ingest.mpps_trusted_aes`).
    trusted_step_aes: Vec<String>,
}

impl StudyReadyWorker {
    pub fn new(db: Db, quiet_period: Duration) -> Self {
        StudyReadyWorker { db, quiet_period, waiting: false, wake: Default::default(), trusted_step_aes: Vec::new() }
    }

    /// Let these AEs' procedure steps complete any study, not only the studies they sent.
    pub fn with_trusted_step_aes(mut self, aes: &[crate::domain::AeTitle]) -> Self {
        self.trusted_step_aes = aes.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Wake on `wake` too (`Ingest::study_waker`: notified when a procedure step ends).
    pub fn with_waker(mut self, wake: std::sync::Arc<tokio::sync::Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// One sweep: audit newly stored instances, attach them to their studies, promote the
    /// studies quiet for the whole period. Returns how many became ready.
    pub async fn sweep(&self) -> Result<usize, DbError> {
        // An audit failure is logged and retried at the next sweep; it does not hold up
        // triage (the instances stay marked unaudited until an entry is written).
        loop {
            match self.db.audit_new_instances(500).await {
                Ok(500) => continue,
                Ok(_) => break,
                Err(error) => {
                    error!(%error, "appending de-identification audit entries failed");
                    break;
                }
            }
        }
        self.db.attach_new_instances().await?;
        let performed = self.db.promote_performed_studies(&self.trusted_step_aes).await?;
        for s in &performed {
            info!(study_id = s.study_id, job_id = s.job_id, instances = s.instance_count, by = "procedure step", "study ready");
        }
        let cutoff = now_ms() - self.quiet_period.as_millis() as i64;
        let quiet = self.db.promote_quiet_studies(cutoff).await?;
        for s in &quiet {
            info!(study_id = s.study_id, job_id = s.job_id, instances = s.instance_count, by = "quiet period", "study ready");
        }
        Ok(performed.len() + quiet.len())
    }

    fn tick(&self) -> Duration {
        if self.waiting {
            return Duration::from_millis(PERFORMED_TICK_MS);
        }
        (self.quiet_period / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

impl Worker for StudyReadyWorker {
    fn name(&self) -> &'static str {
        "study sweep"
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            self.sweep().await?;
            // An ended procedure step waiting for its last instances: look again soon.
            self.waiting = self.db.performed_studies_waiting(now_ms() - self.quiet_period.as_millis() as i64).await?;
            Ok(WorkState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        let tick = self.tick();
        let wake = self.wake.clone();
        Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = wake.notified() => {}
            }
        })
    }
}
