//! What the node holds, for an operator or a dashboard: counts by state, and the newest study
//! results with their delivery. No patient data.

use std::path::Path;

use serde::Serialize;

use super::AdminError;
use crate::db::{Db, StudyResult, WorkerReport};

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub instances: i64,
    /// Instances not triaged, by reason.
    pub not_triaged: Vec<(String, i64)>,
    pub awaiting_audit: i64,
    /// Store files without a database row, moved aside at start-up.
    pub quarantined: u64,
    pub studies: Vec<(String, i64)>,
    pub jobs: Vec<(String, i64)>,
    /// Modality Performed Procedure Steps by state.
    pub procedure_steps: Vec<(String, i64)>,
    pub results: Vec<(String, i64)>,
    /// Studies whose instances name different patients (not triaged).
    pub conflicting_studies: i64,
    pub outbox: Vec<(String, i64)>,
    /// Every node's background workers, as they last reported.
    pub workers: Vec<WorkerReport>,
}

pub async fn status(db: &Db, data_dir: &Path) -> Result<NodeStatus, AdminError> {
    let (studies, jobs) = db.state_counts().await?;
    Ok(NodeStatus {
        instances: db.count_instances().await?,
        not_triaged: db.excluded_counts().await?,
        awaiting_audit: db.count_unaudited().await?,
        quarantined: crate::ingest::count_quarantined(data_dir) as u64,
        studies,
        jobs,
        procedure_steps: db.procedure_step_counts().await?,
        results: db.result_counts().await?,
        conflicting_studies: db.count_conflicting_studies().await?,
        outbox: db.outbox_counts().await?,
        workers: db.worker_reports().await?,
    })
}

/// The first `limit` triaged studies in reading order (`results::worklist`): urgent first.
pub async fn worklist(db: &Db, limit: i64) -> Result<Vec<crate::results::worklist::WorklistEntry>, AdminError> {
    if !(1..=super::worklist::MAX_LIMIT).contains(&limit) {
        return Err(AdminError::Invalid(format!("--limit must be 1 to {}", super::worklist::MAX_LIMIT)));
    }
    let req = super::worklist::PageRequest { limit, ..Default::default() };
    Ok(super::worklist::page(db, None, &req).await?.items.into_iter().map(|i| i.entry).collect())
}

/// A study result and the state of its objects' delivery: (kind, state, count).
#[derive(Debug, Clone)]
pub struct ResultSummary {
    pub result: StudyResult,
    pub deliveries: Vec<(String, String, i64)>,
    /// An admin retracted the study's AI results.
    pub retraction: Option<crate::db::Retraction>,
}

/// The newest `limit` study results.
pub async fn recent_results(db: &Db, limit: i64) -> Result<Vec<ResultSummary>, AdminError> {
    if limit < 1 {
        return Err(AdminError::Invalid("--limit must be at least 1".into()));
    }
    let mut out = Vec::new();
    for result in db.recent_results(limit).await? {
        let deliveries = db.outbox_study_states(result.study_id).await?;
        let retraction = db.worklist_row(result.study_id).await?.and_then(|row| row.retraction);
        out.push(ResultSummary { result, deliveries, retraction });
    }
    Ok(out)
}

/// The queue depths a metrics scrape shows: counts by state, no patient data.
#[derive(Debug, Clone, Default)]
pub struct Depths {
    pub awaiting_inference: i64,
    pub studies: Vec<(String, i64)>,
    /// `kind:state`.
    pub jobs: Vec<(String, i64)>,
    pub outbox: Vec<(String, i64)>,
    pub procedure_steps: Vec<(String, i64)>,
    /// (priority, reading state, count).
    pub worklist: Vec<(String, String, i64)>,
}

/// The queue depths now.
pub async fn depths(db: &Db) -> Result<Depths, AdminError> {
    let (studies, jobs) = db.state_counts().await?;
    Ok(Depths {
        awaiting_inference: db.count_awaiting_inference().await?,
        studies,
        jobs,
        outbox: db.outbox_counts().await?,
        procedure_steps: db.procedure_step_counts().await?,
        worklist: db.worklist_counts().await?,
    })
}

/// Whether the database answers.
pub async fn database_answers(db: &Db) -> bool {
    db.ping().await.is_ok()
}
