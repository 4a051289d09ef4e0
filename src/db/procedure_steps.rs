//! Modality Performed Procedure Steps: what a modality said it performed (de-identified UIDs
//! only), and the studies they complete.
//!
//! A study is complete by MPPS when none of its steps is still IN PROGRESS, at least one has
//! ended (COMPLETED or DISCONTINUED) listing instances, and every instance its ended steps list
//! is stored and attached. Only steps of an AE that sent instances of the study (or of a
//! trusted AE) count. `studies::promote_performed_studies` promotes such studies; the quiet
//! period still promotes every other one.

use super::{get, q, Db, DbError, ProcedureStepState};
use crate::domain::now_ms;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcedureStep {
    pub id: i64,
    pub state: ProcedureStepState,
    pub calling_ae_title: String,
    /// How many instances it lists.
    pub listed: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepCreated {
    Created(i64),
    /// A step with this SOP Instance UID exists (N-CREATE answers 0x0111).
    Duplicate,
}

impl Db {
    /// Record a new step (N-CREATE): its de-identified UID, state, the studies its Scheduled
    /// Step Attributes name and the instances it lists (usually none yet).
    pub async fn create_procedure_step(
        &self,
        sop_instance_uid: &str,
        state: ProcedureStepState,
        calling_ae: &str,
        studies: &[String],
        instances: &[String],
    ) -> Result<StepCreated, DbError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO procedure_steps (sop_instance_uid, state, calling_ae_title, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING id",
        )
        .bind(sop_instance_uid)
        .bind(state.as_str())
        .bind(calling_ae)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(q("insert procedure step"))?;
        let Some(id) = id else {
            tx.rollback().await.map_err(q("rollback"))?;
            return Ok(StepCreated::Duplicate);
        };
        for study in dedup(studies) {
            sqlx::query("INSERT INTO procedure_step_studies (step_id, study_instance_uid) VALUES ($1, $2)")
                .bind(id)
                .bind(study)
                .execute(&mut *tx)
                .await
                .map_err(q("insert procedure step study"))?;
        }
        replace_instances_in(&mut tx, id, instances).await?;
        tx.commit().await.map_err(q("commit procedure step"))?;
        Ok(StepCreated::Created(id))
    }

    pub async fn procedure_step(&self, sop_instance_uid: &str) -> Result<Option<ProcedureStep>, DbError> {
        let row = sqlx::query(
            "SELECT id, state, calling_ae_title, (SELECT COUNT(*) FROM procedure_step_instances i WHERE i.step_id = p.id) AS listed
             FROM procedure_steps p WHERE sop_instance_uid = $1",
        )
        .bind(sop_instance_uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("select procedure step"))?;
        let Some(row) = row else { return Ok(None) };
        let state: String = get(&row, "state")?;
        Ok(Some(ProcedureStep { id: get(&row, "id")?, state: state.parse()?, calling_ae_title: get(&row, "calling_ae_title")?, listed: get(&row, "listed")? }))
    }

    /// How many steps `calling_ae` holds IN PROGRESS that were created or updated since
    /// `since_ms` (the cap on open steps per AE).
    pub async fn open_procedure_steps(&self, calling_ae: &str, since_ms: i64) -> Result<i64, DbError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM procedure_steps WHERE calling_ae_title = $1 AND state = $2 AND updated_at_ms >= $3")
            .bind(calling_ae)
            .bind(ProcedureStepState::InProgress.as_str())
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(q("count open procedure steps"))
    }

    /// Apply an N-SET: the new state, and the instance list when the request carried the
    /// Performed Series Sequence (which replaces the whole list). Only a step still IN PROGRESS
    /// changes (returns false otherwise, e.g. when another association ended it meanwhile).
    pub async fn update_procedure_step(&self, id: i64, state: ProcedureStepState, instances: Option<&[String]>) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let updated = sqlx::query("UPDATE procedure_steps SET state = $1, updated_at_ms = $2 WHERE id = $3 AND state = $4")
            .bind(state.as_str())
            .bind(now_ms())
            .bind(id)
            .bind(ProcedureStepState::InProgress.as_str())
            .execute(&mut *tx)
            .await
            .map_err(q("update procedure step"))?;
        if updated.rows_affected() != 1 {
            tx.rollback().await.map_err(q("rollback"))?;
            return Ok(false);
        }
        if let Some(instances) = instances {
            sqlx::query("DELETE FROM procedure_step_instances WHERE step_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(q("clear procedure step instances"))?;
            replace_instances_in(&mut tx, id, instances).await?;
        }
        tx.commit().await.map_err(q("commit procedure step"))?;
        Ok(true)
    }

    /// Whether a step that ended since `since_ms` waits for a study still receiving (the
    /// sweep then runs often; after the quiet period, that rule decides anyway).
    pub async fn performed_studies_waiting(&self, since_ms: i64) -> Result<bool, DbError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM procedure_steps p JOIN procedure_step_studies ps ON ps.step_id = p.id
             JOIN studies s ON s.study_instance_uid = ps.study_instance_uid
             WHERE p.state <> $1 AND s.state = $2 AND p.updated_at_ms >= $3",
        )
        .bind(ProcedureStepState::InProgress.as_str())
        .bind(super::StudyState::Receiving.as_str())
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(q("count waiting procedure steps"))?;
        Ok(n > 0)
    }

    /// (state, count) of procedure steps, for `status` and the metrics.
    pub async fn procedure_step_counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM procedure_steps GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(q("count procedure steps"))?;
        rows.iter().map(|r| Ok((get(r, "state")?, get(r, "n")?))).collect()
    }
}

async fn replace_instances_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: i64, instances: &[String]) -> Result<(), DbError> {
    for uid in dedup(instances) {
        sqlx::query("INSERT INTO procedure_step_instances (step_id, sop_instance_uid) VALUES ($1, $2)")
            .bind(id)
            .bind(uid)
            .execute(&mut **tx)
            .await
            .map_err(q("insert procedure step instance"))?;
    }
    Ok(())
}

fn dedup(values: &[String]) -> Vec<&String> {
    let mut seen = std::collections::BTreeSet::new();
    values.iter().filter(|v| seen.insert(v.as_str())).collect()
}
