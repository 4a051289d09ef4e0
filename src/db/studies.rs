//! Studies and the jobs that hand a complete study to the pipeline.
//!
//! A study is `receiving` while instances arrive; once `quiet_period` has passed since the last
//! one, exactly one node (even with several on one PostgreSQL) flips it to `ready` and queues a
//! `study_ready` job. A later instance sets it back to `receiving`, so it is queued again.

use super::{get, q, Db, DbError};
use crate::domain::now_ms;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyStudy {
    pub study_id: i64,
    pub job_id: i64,
    pub instance_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub study_id: i64,
    pub state: String,
}

impl Db {
    /// Promote every study quiet since `cutoff_ms` to `ready`, queueing a job for each.
    pub async fn promote_quiet_studies(&self, cutoff_ms: i64) -> Result<Vec<ReadyStudy>, DbError> {
        let due = sqlx::query("SELECT id, last_received_at_ms, instance_count FROM studies WHERE state = 'receiving' AND last_received_at_ms <= $1 ORDER BY id")
            .bind(cutoff_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select quiet studies"))?;
        let mut ready = Vec::with_capacity(due.len());
        for row in due {
            let study_id: i64 = get(&row, "id")?;
            let last: i64 = get(&row, "last_received_at_ms")?;
            let instance_count: i64 = get(&row, "instance_count")?;
            let mut tx = self.pool.begin().await.map_err(q("begin"))?;
            // Conditional on the state and time we saw: a new instance or another node wins.
            let flipped = sqlx::query("UPDATE studies SET state = 'ready' WHERE id = $1 AND state = 'receiving' AND last_received_at_ms = $2")
                .bind(study_id)
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(q("mark study ready"))?;
            if flipped.rows_affected() != 1 {
                tx.rollback().await.map_err(q("rollback"))?;
                continue;
            }
            let now = now_ms();
            let job_id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (kind, study_id, state, attempts, created_at_ms, updated_at_ms) VALUES ('study_ready', $1, 'pending', 0, $2, $2) RETURNING id",
            )
            .bind(study_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("insert study_ready job"))?;
            tx.commit().await.map_err(q("commit study_ready"))?;
            ready.push(ReadyStudy { study_id, job_id, instance_count });
        }
        Ok(ready)
    }

    /// (state, count) of studies and of jobs, for `triage-node status`.
    pub async fn state_counts(&self) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>), DbError> {
        let studies = sqlx::query("SELECT state, COUNT(*) AS n FROM studies GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(q("count studies"))?;
        let jobs = sqlx::query("SELECT kind || ':' || state AS state, COUNT(*) AS n FROM jobs GROUP BY kind, state ORDER BY 1")
            .fetch_all(&self.pool)
            .await
            .map_err(q("count jobs"))?;
        let pairs = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<(String, i64)>, DbError> { rows.iter().map(|r| Ok((get(r, "state")?, get(r, "n")?))).collect() };
        Ok((pairs(studies)?, pairs(jobs)?))
    }

    pub async fn list_jobs(&self) -> Result<Vec<Job>, DbError> {
        let rows = sqlx::query("SELECT id, kind, study_id, state FROM jobs ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(q("list jobs"))?;
        rows.iter()
            .map(|r| Ok(Job { id: get(r, "id")?, kind: get(r, "kind")?, study_id: get(r, "study_id")?, state: get(r, "state")? }))
            .collect()
    }
}
