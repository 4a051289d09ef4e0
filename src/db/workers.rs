//! Each node's background workers as they last reported themselves (`worker_status`).

use super::{get, q, Db, DbError};
use crate::domain::WorkerState;

/// One worker's status on one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerReport {
    pub node: String,
    pub name: String,
    pub state: WorkerState,
    pub units: i64,
    pub errors: i64,
    pub restarts: i64,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<i64>,
    /// When the node wrote this report.
    pub updated_at_ms: i64,
}

impl Db {
    /// Replace the reports of `reports`' workers (one transaction).
    pub async fn report_workers(&self, reports: &[WorkerReport]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        for r in reports {
            sqlx::query(
                "INSERT INTO worker_status (node, name, state, units, errors, restarts, last_error, last_error_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (node, name) DO UPDATE SET state = excluded.state, units = excluded.units, errors = excluded.errors,
                    restarts = excluded.restarts, last_error = excluded.last_error, last_error_at_ms = excluded.last_error_at_ms,
                    updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&r.node)
            .bind(&r.name)
            .bind(r.state.as_str())
            .bind(r.units)
            .bind(r.errors)
            .bind(r.restarts)
            .bind(r.last_error.clone())
            .bind(r.last_error_at_ms)
            .bind(r.updated_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(q("report worker status"))?;
        }
        tx.commit().await.map_err(q("commit worker status"))
    }

    /// Every node's workers, by node and name.
    pub async fn worker_reports(&self) -> Result<Vec<WorkerReport>, DbError> {
        let rows = sqlx::query("SELECT * FROM worker_status ORDER BY node, name").fetch_all(&self.pool).await.map_err(q("select worker status"))?;
        rows.iter()
            .map(|r| {
                Ok(WorkerReport {
                    node: get(r, "node")?,
                    name: get(r, "name")?,
                    state: get::<String>(r, "state")?.parse().map_err(DbError::Invalid)?,
                    units: get(r, "units")?,
                    errors: get(r, "errors")?,
                    restarts: get(r, "restarts")?,
                    last_error: get(r, "last_error")?,
                    last_error_at_ms: get(r, "last_error_at_ms")?,
                    updated_at_ms: get(r, "updated_at_ms")?,
                })
            })
            .collect()
    }
}
