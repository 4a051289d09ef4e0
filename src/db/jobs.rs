//! Jobs: work queued in the database and claimed under a lease by any node. Today one kind,
//! `study_ready` (queued by the study sweep when a study is complete, run by the study job
//! worker, finished in the transaction that saves the study's results).

use super::{get, q, Db, DbError, JobState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    pub study_id: i64,
    /// When the study was found complete (the job was queued).
    pub ready_at_ms: i64,
    pub last_received_at_ms: i64,
    /// This claim's number (the job's attempt count once claimed): the fence that lets only
    /// the latest claimer finish the job (`finish_in`, `renew_study_job`).
    pub attempt: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub study_id: i64,
    pub state: JobState,
}

impl Db {
    /// Claim the oldest `study_ready` job that is pending, or running under an expired lease.
    pub async fn claim_study_job(&self, now_ms: i64, lease_until_ms: i64) -> Result<Option<ClaimedJob>, DbError> {
        loop {
            let row = sqlx::query(
                "SELECT j.id, j.study_id, j.created_at_ms, j.state, j.lease_until_ms, j.attempts, s.last_received_at_ms FROM jobs j JOIN studies s ON s.id = j.study_id
                 WHERE j.kind = 'study_ready' AND (j.state = $2 OR (j.state = $3 AND j.lease_until_ms < $1))
                 ORDER BY j.id LIMIT 1",
            )
            .bind(now_ms)
            .bind(JobState::Pending.as_str())
            .bind(JobState::Running.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select due job"))?;
            let Some(row) = row else { return Ok(None) };
            let (id, state, lease, attempts): (i64, String, i64, i64) =
                (get(&row, "id")?, get(&row, "state")?, get(&row, "lease_until_ms")?, get(&row, "attempts")?);
            let state: JobState = state.parse()?;
            let claimed = sqlx::query(
                "UPDATE jobs SET state = $6, lease_until_ms = $2, attempts = attempts + 1, updated_at_ms = $3
                 WHERE id = $1 AND state = $4 AND lease_until_ms = $5 AND attempts = $7",
            )
            .bind(id)
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(state.as_str())
            .bind(lease)
            .bind(JobState::Running.as_str())
            .bind(attempts)
            .execute(&self.pool)
            .await
            .map_err(q("claim job"))?;
            if claimed.rows_affected() == 1 {
                return Ok(Some(ClaimedJob {
                    id,
                    study_id: get(&row, "study_id")?,
                    ready_at_ms: get(&row, "created_at_ms")?,
                    last_received_at_ms: get(&row, "last_received_at_ms")?,
                    attempt: attempts + 1,
                }));
            }
            // Another node took it: look again.
        }
    }

    /// Extend a running claim's lease (the claimer's heartbeat). False when the claim is no
    /// longer this one: its lease ran out and another node took the job over.
    pub async fn renew_study_job(&self, job: &ClaimedJob, lease_until_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE jobs SET lease_until_ms = $3 WHERE id = $1 AND attempts = $2 AND state = $4")
            .bind(job.id)
            .bind(job.attempt)
            .bind(lease_until_ms)
            .bind(JobState::Running.as_str())
            .execute(&self.pool)
            .await
            .map_err(q("renew job"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Give a claimed job back (to be retried after its lease) with the reason.
    pub async fn fail_job(&self, job_id: i64, error: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE jobs SET last_error = $2, updated_at_ms = $3 WHERE id = $1")
            .bind(job_id)
            .bind(error)
            .bind(crate::domain::now_ms())
            .execute(&self.pool)
            .await
            .map_err(q("fail job"))?;
        Ok(())
    }

    /// A node alone on its SQLite file holds every claim: at start-up, the job claims of its
    /// previous run are void, so jobs run again at once instead of after their lease.
    pub async fn void_job_claims(&self) -> Result<u64, DbError> {
        let jobs = sqlx::query("UPDATE jobs SET state = $1, lease_until_ms = 0 WHERE state = $2 AND kind = 'study_ready'")
            .bind(JobState::Pending.as_str())
            .bind(JobState::Running.as_str())
            .execute(&self.pool)
            .await
            .map_err(q("void job claims"))?;
        Ok(jobs.rows_affected())
    }

    pub async fn list_jobs(&self) -> Result<Vec<Job>, DbError> {
        let rows = sqlx::query("SELECT id, kind, study_id, state FROM jobs ORDER BY id").fetch_all(&self.pool).await.map_err(q("list jobs"))?;
        rows.iter()
            .map(|r| Ok(Job { id: get(r, "id")?, kind: get(r, "kind")?, study_id: get(r, "study_id")?, state: get::<String>(r, "state")?.parse()? }))
            .collect()
    }
}

/// Queue a `study_ready` job for `study_id` inside the caller's transaction; its id.
pub(crate) async fn queue_study_ready_in(conn: &mut sqlx::AnyConnection, study_id: i64, now_ms: i64) -> Result<i64, DbError> {
    sqlx::query_scalar(
        "INSERT INTO jobs (kind, study_id, state, attempts, created_at_ms, updated_at_ms) VALUES ('study_ready', $1, $3, 0, $2, $2) RETURNING id",
    )
    .bind(study_id)
    .bind(now_ms)
    .bind(JobState::Pending.as_str())
    .fetch_one(conn)
    .await
    .map_err(q("queue job"))
}

/// Mark a claimed job done inside the caller's transaction (with what it produced), if the
/// claim is still this one: a claimer whose lease ran out while another node took the job over
/// gets `DbError::ClaimLost`, and its transaction (results, outbox rows) is rolled back, so a
/// job's results are saved and queued once.
pub(crate) async fn finish_in(conn: &mut sqlx::AnyConnection, job: &ClaimedJob, now_ms: i64) -> Result<(), DbError> {
    let done = sqlx::query("UPDATE jobs SET state = $3, last_error = NULL, updated_at_ms = $2 WHERE id = $1 AND attempts = $4 AND state = $5")
        .bind(job.id)
        .bind(now_ms)
        .bind(JobState::Done.as_str())
        .bind(job.attempt)
        .bind(JobState::Running.as_str())
        .execute(conn)
        .await
        .map_err(q("finish job"))?;
    if done.rows_affected() != 1 {
        return Err(DbError::ClaimLost(job.id));
    }
    Ok(())
}
