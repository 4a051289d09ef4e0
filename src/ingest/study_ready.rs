//! Study-complete detection: a study is complete after a quiet period with no new instance.
//!
//! Owns: the periodic sweep that appends the audit entries of newly stored instances (in
//! batches, off the C-STORE path), then promotes quiet studies and queues `study_ready` jobs.
//! The timer lives in the database (`last_received_at_ms`), and so does the audit marker
//! (`instances.audit_seq`), so after a restart the sweep catches up by itself.
//! Must not: hold timers in memory that a restart would lose.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::db::Db;
use crate::domain::now_ms;

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
    pub async fn sweep(&self) -> usize {
        loop {
            match self.db.audit_new_instances(500).await {
                Ok(n) if n == 500 => continue,
                Ok(_) => break,
                Err(error) => {
                    error!(%error, "appending de-identification audit entries failed");
                    break;
                }
            }
        }
        if let Err(error) = self.db.attach_new_instances().await {
            error!(%error, "attaching instances to studies failed");
            return 0;
        }
        let cutoff = now_ms() - self.quiet_period.as_millis() as i64;
        match self.db.promote_quiet_studies(cutoff).await {
            Ok(ready) => {
                for s in &ready {
                    info!(study_id = s.study_id, job_id = s.job_id, instances = s.instance_count, "study ready");
                }
                ready.len()
            }
            Err(error) => {
                error!(%error, "study-ready sweep failed");
                0
            }
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        // Sweep often enough that a study is promoted within ~10% of the quiet period.
        let tick = (self.quiet_period / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => { self.sweep().await; }
            }
        }
    }
}
