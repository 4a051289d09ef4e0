//! Study-complete detection: a study is complete after a quiet period with no new instance.
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

#[derive(Clone)]
pub struct StudyReadyWorker {
    db: Db,
    quiet_period: Duration,
}

impl StudyReadyWorker {
    pub fn new(db: Db, quiet_period: Duration) -> Self {
        StudyReadyWorker { db, quiet_period }
    }

    /// One sweep: attach new instances to their studies, then promote every study quiet for the
    /// whole period. Returns how many were promoted.
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
        let cutoff = now_ms() - self.quiet_period.as_millis() as i64;
        let ready = self.db.promote_quiet_studies(cutoff).await?;
        for s in &ready {
            info!(study_id = s.study_id, job_id = s.job_id, instances = s.instance_count, "study ready");
        }
        Ok(ready.len())
    }

    fn tick(&self) -> Duration {
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
            Ok(WorkState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(self.tick()))
    }
}
