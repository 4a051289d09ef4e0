//! Studies, and the sweep that queues the job handing a complete study to the pipeline.
//!
//! Each sweep first attaches newly received instances to their study (creating it, or setting it
//! back to `receiving`), then promotes every study quiet for the whole period: exactly one node
//! (even with several on one PostgreSQL) flips it to `ready` and queues a `study_ready` job. A
//! later instance sets it back to `receiving`, so it is queued again.

use super::{get, q, Db, DbError, StudyState};
use crate::domain::now_ms;

/// `sql` with `{receiving}` and `{ready}` spelled as `StudyState` stores them.
fn states(sql: &str) -> String {
    super::state::spelled(sql, StudyState::ALL, StudyState::as_str)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyStudy {
    pub study_id: i64,
    pub job_id: i64,
    pub instance_count: i64,
}

impl Db {
    /// Attach instances not yet attached to their studies; returns how many were attached.
    pub async fn attach_new_instances(&self) -> Result<u64, DbError> {
        let groups = sqlx::query(
            "SELECT study_instance_uid, MIN(received_at_ms) AS first_ms, MAX(received_at_ms) AS last_ms, MAX(id) AS max_id
             FROM instances WHERE study_id IS NULL GROUP BY study_instance_uid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select unattached instances"))?;
        let mut attached = 0;
        for row in groups {
            let uid: String = get(&row, "study_instance_uid")?;
            let (first, last, max_id): (i64, i64, i64) = (get(&row, "first_ms")?, get(&row, "last_ms")?, get(&row, "max_id")?);
            let mut tx = self.pool.begin().await.map_err(q("begin"))?;
            let study_id: i64 = sqlx::query_scalar(&states(
                "INSERT INTO studies (study_instance_uid, state, first_received_at_ms, last_received_at_ms, instance_count)
                 VALUES ($1, {receiving}, $2, $3, 0)
                 ON CONFLICT (study_instance_uid) DO UPDATE SET state = {receiving},
                    last_received_at_ms = CASE WHEN excluded.last_received_at_ms > studies.last_received_at_ms
                                               THEN excluded.last_received_at_ms ELSE studies.last_received_at_ms END
                 RETURNING id",
            ))
            .bind(&uid)
            .bind(first)
            .bind(last)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("upsert study"))?;
            // Another node may attach some of them concurrently: count only what this one did.
            let done = sqlx::query("UPDATE instances SET study_id = $1 WHERE study_id IS NULL AND study_instance_uid = $2 AND id <= $3")
                .bind(study_id)
                .bind(&uid)
                .bind(max_id)
                .execute(&mut *tx)
                .await
                .map_err(q("attach instances"))?;
            sqlx::query("UPDATE studies SET instance_count = instance_count + $1 WHERE id = $2")
                .bind(done.rows_affected() as i64)
                .bind(study_id)
                .execute(&mut *tx)
                .await
                .map_err(q("count instances"))?;
            tx.commit().await.map_err(q("commit attach"))?;
            attached += done.rows_affected();
        }
        Ok(attached)
    }

    /// Promote every study quiet since `cutoff_ms`, with no instance still waiting to be
    /// attached, to `ready`, queueing a job for each.
    pub async fn promote_quiet_studies(&self, cutoff_ms: i64) -> Result<Vec<ReadyStudy>, DbError> {
        let due = sqlx::query(&states(
            "SELECT id, last_received_at_ms, instance_count FROM studies s
             WHERE state = {receiving} AND last_received_at_ms <= $1
               AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_id IS NULL AND i.study_instance_uid = s.study_instance_uid)
             ORDER BY id",
        ))
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select quiet studies"))?;
        self.promote(due).await
    }

    /// Studies whose procedure steps say they are complete, flipped to `ready` with their job.
    /// Only steps that may speak for the study count: those of an AE that sent instances of it,
    /// or of an AE in `trusted` (`ingest.mpps_trusted_aes`); any other AE's steps are recorded
    /// and have no effect, so one modality cannot complete another's study.
    pub async fn promote_performed_studies(&self, trusted: &[String]) -> Result<Vec<ReadyStudy>, DbError> {
        // $1 is the IN PROGRESS state; $2.. the trusted AE titles ('' when none: no AE has it).
        let trusted: Vec<&str> = if trusted.is_empty() { vec![""] } else { trusted.iter().map(String::as_str).collect() };
        let list = (0..trusted.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
        let speaks = format!("(p.calling_ae_title IN (SELECT i.calling_ae_title FROM instances i WHERE i.study_id = s.id) OR p.calling_ae_title IN ({list}))");
        let sql = states(&format!(
            "SELECT id, last_received_at_ms, instance_count FROM studies s
             WHERE state = {{receiving}}
               AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_id IS NULL AND i.study_instance_uid = s.study_instance_uid)
               AND EXISTS (SELECT 1 FROM procedure_step_studies ps JOIN procedure_steps p ON p.id = ps.step_id
                           WHERE ps.study_instance_uid = s.study_instance_uid AND p.state <> $1 AND {speaks}
                             AND EXISTS (SELECT 1 FROM procedure_step_instances pi WHERE pi.step_id = p.id))
               -- Any step still in progress holds early completion (another modality may still
               -- be acquiring): the quiet period bounds what a hostile open step can hold.
               AND NOT EXISTS (SELECT 1 FROM procedure_step_studies ps JOIN procedure_steps p ON p.id = ps.step_id
                               WHERE ps.study_instance_uid = s.study_instance_uid AND p.state = $1)
               AND NOT EXISTS (SELECT 1 FROM procedure_step_studies ps JOIN procedure_steps p ON p.id = ps.step_id
                               JOIN procedure_step_instances pi ON pi.step_id = ps.step_id
                               WHERE ps.study_instance_uid = s.study_instance_uid AND {speaks}
                                 AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.sop_instance_uid = pi.sop_instance_uid AND i.study_id IS NOT NULL))
               -- Each ended step completes its study once: an instance that arrives after that
               -- (a straggler, a resend) is left to the quiet period, not re-triaged at once.
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.study_id = s.id AND j.created_at_ms >=
                               (SELECT MAX(p.updated_at_ms) FROM procedure_step_studies ps JOIN procedure_steps p ON p.id = ps.step_id
                                WHERE ps.study_instance_uid = s.study_instance_uid AND {speaks}))
             ORDER BY id",
        ));
        let mut query = sqlx::query(&sql).bind(super::ProcedureStepState::InProgress.as_str());
        for ae in trusted {
            query = query.bind(ae);
        }
        let due = query.fetch_all(&self.pool).await.map_err(q("select performed studies"))?;
        self.promote(due).await
    }

    /// Flip each of `due` (id, last_received_at_ms, instance_count) to `ready` and queue its job,
    /// conditionally on the state and time read: a new instance or another node wins.
    async fn promote(&self, due: Vec<sqlx::any::AnyRow>) -> Result<Vec<ReadyStudy>, DbError> {
        let mut ready = Vec::with_capacity(due.len());
        for row in due {
            let study_id: i64 = get(&row, "id")?;
            let last: i64 = get(&row, "last_received_at_ms")?;
            let instance_count: i64 = get(&row, "instance_count")?;
            let mut tx = self.pool.begin().await.map_err(q("begin"))?;
            let flipped = sqlx::query(&states("UPDATE studies SET state = {ready} WHERE id = $1 AND state = {receiving} AND last_received_at_ms = $2"))
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
            let job_id = super::jobs::queue_study_ready_in(&mut tx, study_id, now).await?;
            super::wake::notify_in(&mut tx, super::Wake::Jobs).await?;
            tx.commit().await.map_err(q("commit study_ready"))?;
            ready.push(ReadyStudy { study_id, job_id, instance_count });
        }
        Ok(ready)
    }

    /// (state, count) of studies and of jobs, for `triage-node status`.
    pub async fn state_counts(&self) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>), DbError> {
        let studies =
            sqlx::query("SELECT state, COUNT(*) AS n FROM studies GROUP BY state ORDER BY state").fetch_all(&self.pool).await.map_err(q("count studies"))?;
        let jobs = sqlx::query("SELECT kind || ':' || state AS state, COUNT(*) AS n FROM jobs GROUP BY kind, state ORDER BY 1")
            .fetch_all(&self.pool)
            .await
            .map_err(q("count jobs"))?;
        let pairs =
            |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<(String, i64)>, DbError> { rows.iter().map(|r| Ok((get(r, "state")?, get(r, "n")?))).collect() };
        Ok((pairs(studies)?, pairs(jobs)?))
    }
}
