//! Score drift crossings (`admin::drift`): whether a model version's label (per scanner group)
//! stands drifted, and how often it crossed. A crossing is claimed by one conditional UPDATE in
//! the transaction that queues its notifications, so two nodes (or two checks) never tell one
//! crossing twice; falling below the threshold re-arms it.

use super::{get, q, Db, DbError};

/// What a drift row is of: model, version, label and scanner group ("" for every study).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DriftKey {
    pub model: String,
    pub model_version: String,
    pub label: String,
    pub scanner: String,
}

/// A drift row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftAlert {
    pub key: DriftKey,
    pub drifted: bool,
    pub crossings: i64,
    pub psi: Option<f64>,
    pub changed_at_ms: i64,
}

impl Db {
    /// Every drift row.
    pub async fn drift_alerts(&self) -> Result<Vec<DriftAlert>, DbError> {
        let rows = sqlx::query("SELECT model, model_version, label, scanner, drifted, crossings, psi, changed_at_ms FROM drift_alerts ORDER BY model, model_version, label, scanner")
            .fetch_all(&self.pool)
            .await
            .map_err(q("list drift alerts"))?;
        rows.iter()
            .map(|r| {
                Ok(DriftAlert {
                    key: DriftKey { model: get(r, "model")?, model_version: get(r, "model_version")?, label: get(r, "label")?, scanner: get(r, "scanner")? },
                    drifted: get::<i64>(r, "drifted")? != 0,
                    crossings: get(r, "crossings")?,
                    psi: get(r, "psi")?,
                    changed_at_ms: get(r, "changed_at_ms")?,
                })
            })
            .collect()
    }

    /// Claim the crossing number `crossing` (1 for the first) of `key` at `psi`: the row goes
    /// from not drifted with `crossing - 1` crossings to drifted with `crossing`, and `items`
    /// (its notifications, written before) are queued, in one transaction. False, changing
    /// nothing, when the row is not in that state (another node or check claimed it).
    pub async fn drift_cross(&self, key: &DriftKey, crossing: i64, psi: f64, now_ms: i64, node: &str, items: &[super::NewOutboxItem]) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let claimed = if crossing == 1 {
            sqlx::query(
                "INSERT INTO drift_alerts (model, model_version, label, scanner, drifted, crossings, psi, changed_at_ms) VALUES ($1, $2, $3, $4, 1, $7, $5, $6)
                 ON CONFLICT (model, model_version, label, scanner) DO NOTHING",
            )
        } else {
            sqlx::query(
                "UPDATE drift_alerts SET drifted = 1, crossings = $7, psi = $5, changed_at_ms = $6
                 WHERE model = $1 AND model_version = $2 AND label = $3 AND scanner = $4 AND drifted = 0 AND crossings = $7 - 1",
            )
        }
        .bind(&key.model)
        .bind(&key.model_version)
        .bind(&key.label)
        .bind(&key.scanner)
        .bind(psi)
        .bind(now_ms)
        .bind(crossing)
        .execute(&mut *tx)
        .await
        .map_err(q("claim a drift crossing"))?;
        if claimed.rows_affected() == 0 {
            return Ok(false);
        }
        for item in items {
            super::outbox::insert_in(&mut tx, node, item, now_ms).await?;
        }
        if !items.is_empty() {
            super::wake::notify_in(&mut tx, super::Wake::Outbox).await?;
        }
        tx.commit().await.map_err(q("commit a drift crossing"))?;
        Ok(true)
    }

    /// `key` fell below the threshold (at `psi`): a later crossing is told again. True when
    /// it stood drifted.
    pub async fn drift_rearm(&self, key: &DriftKey, psi: f64, now_ms: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE drift_alerts SET drifted = 0, psi = $5, changed_at_ms = $6 WHERE model = $1 AND model_version = $2 AND label = $3 AND scanner = $4 AND drifted = 1",
        )
        .bind(&key.model)
        .bind(&key.model_version)
        .bind(&key.label)
        .bind(&key.scanner)
        .bind(psi)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(q("re-arm a drift alert"))?;
        Ok(done.rows_affected() > 0)
    }
}
