//! Storage Commitment of delivered objects: which objects a transaction asked the PACS to
//! commit to, and what its report said.

use super::{get, q, Db, DbError};
use crate::domain::now_ms;

impl Db {
    /// Record a commitment request for `items` (outbox id, SOP Instance UID) before it is sent,
    /// so a report that arrives at once finds its rows.
    pub async fn commitment_requested(&self, transaction_uid: &str, destination: &str, items: &[(i64, String)]) -> Result<(), DbError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        for (outbox_id, sop) in items {
            sqlx::query(
                "INSERT INTO storage_commitments (transaction_uid, outbox_id, sop_instance_uid, destination, state, requested_at_ms)
                 VALUES ($1, $2, $3, $4, 'requested', $5)",
            )
            .bind(transaction_uid)
            .bind(outbox_id)
            .bind(sop)
            .bind(destination)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("record commitment request"))?;
        }
        tx.commit().await.map_err(q("commit commitment request"))
    }

    /// The N-ACTION failed: the transaction's rows say why.
    pub async fn commitment_refused(&self, transaction_uid: &str, reason: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE storage_commitments SET state = 'refused', reason = $2, reported_at_ms = $3 WHERE transaction_uid = $1 AND state = 'requested'")
            .bind(transaction_uid)
            .bind(reason)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(q("record commitment refusal"))?;
        Ok(())
    }

    /// Apply a report from `destination`: `committed` SOP Instance UIDs and `failed` ones with
    /// the reason. Only rows of that destination still awaiting a report are settled; returns
    /// how many (0: not ours, or already settled).
    pub async fn commitment_reported(
        &self,
        transaction_uid: &str,
        destination: &str,
        committed: &[String],
        failed: &[(String, String)],
    ) -> Result<u64, DbError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let mut settled = 0;
        let updates = committed.iter().map(|s| (s, "committed", None)).chain(failed.iter().map(|(s, r)| (s, "failed", Some(r.as_str()))));
        for (sop, state, reason) in updates {
            settled += sqlx::query(
                "UPDATE storage_commitments SET state = $4, reason = $5, reported_at_ms = $6
                 WHERE transaction_uid = $1 AND destination = $2 AND sop_instance_uid = $3 AND state = 'requested'",
            )
            .bind(transaction_uid)
            .bind(destination)
            .bind(sop)
            .bind(state)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("record commitment report"))?
            .rows_affected();
        }
        tx.commit().await.map_err(q("commit commitment report"))?;
        Ok(settled)
    }

    /// Per outbox item, the state of its newest commitment request (for `outbox list`).
    pub async fn commitment_states(&self) -> Result<std::collections::HashMap<i64, String>, DbError> {
        let rows = sqlx::query(
            "SELECT c.outbox_id, c.state FROM storage_commitments c
             WHERE c.id = (SELECT MAX(d.id) FROM storage_commitments d WHERE d.outbox_id = c.outbox_id)",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select commitment states"))?;
        rows.iter().map(|r| Ok((get(r, "outbox_id")?, get(r, "state")?))).collect()
    }
}
