//! The durable outbox: objects waiting for delivery, one row per (object, destination). The
//! objects are files in the queueing node's data directory, so rows belong to that node.
//! States (`OutboxState`): pending (due at `next_attempt_at_ms`), sending (claimed until
//! `lease_until_ms`; a crashed claimer's rows come back when the lease runs out), delivered,
//! dead (with why).

use super::{get, q, Db, DbError, ObjectKind, OutboxState};
use crate::domain::now_ms;

/// `sql` with each `{state}` placeholder (`{pending}`, `{sending}`, `{delivered}`, `{dead}`)
/// replaced by that state's stored spelling, so the spelling lives in `OutboxState` alone.
fn states(sql: &str) -> String {
    super::state::spelled(sql, OutboxState::ALL, OutboxState::as_str)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    /// Relative to the data directory.
    pub path: String,
    pub destination: String,
    pub state: OutboxState,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub kind: ObjectKind,
    pub study_id: Option<i64>,
    /// Re-identified at sending (result objects are stored de-identified).
    pub reidentify: bool,
}

/// An item to queue together with the study result it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxItem {
    pub path: String,
    pub destination: String,
    pub kind: ObjectKind,
    pub study_id: Option<i64>,
    pub reidentify: bool,
}

const COLUMNS: &str = "id, path, destination, state, attempts, next_attempt_at_ms, last_error, kind, study_id, reidentify";
/// A row is claimable when pending and due, or when a claimer's lease ran out.
const CLAIMABLE: &str = "($3 = '' OR node = $3) AND ((state = {pending} AND next_attempt_at_ms <= $2) OR (state = {sending} AND lease_until_ms < $2))";

fn decode(r: &sqlx::any::AnyRow) -> Result<OutboxItem, DbError> {
    Ok(OutboxItem {
        id: get(r, "id")?,
        path: get(r, "path")?,
        destination: get(r, "destination")?,
        state: get::<String>(r, "state")?.parse()?,
        attempts: get(r, "attempts")?,
        next_attempt_at_ms: get(r, "next_attempt_at_ms")?,
        last_error: get(r, "last_error")?,
        kind: get::<String>(r, "kind")?.parse()?,
        study_id: get(r, "study_id")?,
        reidentify: get::<i64>(r, "reidentify")? != 0,
    })
}

impl Db {
    /// Queue `path` (a file an operator queued) for `destination`; `None` if that pair is
    /// already queued.
    pub async fn outbox_enqueue(&self, node: &str, path: &str, destination: &str) -> Result<Option<i64>, DbError> {
        let item = NewOutboxItem { path: path.into(), destination: destination.into(), kind: ObjectKind::File, study_id: None, reidentify: false };
        let mut conn = self.pool.acquire().await.map_err(q("acquire"))?;
        let id = insert_in(&mut conn, node, &item, now_ms()).await?;
        super::wake::notify_in(&mut conn, super::Wake::Outbox).await?;
        Ok(id)
    }

    /// Claim up to `limit` due items for one destination (the oldest due item's) queued by
    /// `node` (None: by any node, their files being shared), holding them for `lease_ms`. Each
    /// claim is a conditional update, so two claimers never get one row.
    pub async fn outbox_claim(&self, node: Option<&str>, lease_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, DbError> {
        let node = node.unwrap_or("");
        let now = now_ms();
        // On PostgreSQL concurrent claimers skip each other's locked rows instead of queueing
        // behind them (and then finding them taken); SQLite serialises writers anyway.
        let skip = if self.engine == super::Engine::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let mut claimed: Vec<OutboxItem> = Vec::new();
        while claimed.len() < limit {
            let sql = match claimed.first() {
                None => format!(
                    "UPDATE outbox SET state = {{sending}}, lease_until_ms = $1, updated_at_ms = $2
                     WHERE id = (SELECT id FROM outbox WHERE {CLAIMABLE} ORDER BY id LIMIT 1{skip}) AND {CLAIMABLE}
                     RETURNING {COLUMNS}"
                ),
                Some(_) => format!(
                    "UPDATE outbox SET state = {{sending}}, lease_until_ms = $1, updated_at_ms = $2
                     WHERE id = (SELECT id FROM outbox WHERE {CLAIMABLE} AND destination = $4 ORDER BY id LIMIT 1{skip}) AND {CLAIMABLE}
                     RETURNING {COLUMNS}"
                ),
            };
            let sql = states(&sql);
            let mut query = sqlx::query(&sql).bind(now + lease_ms).bind(now).bind(node);
            if let Some(first) = claimed.first() {
                query = query.bind(first.destination.clone());
            }
            match query.fetch_optional(&self.pool).await.map_err(q("claim outbox item"))? {
                Some(row) => claimed.push(decode(&row)?),
                None => break,
            }
        }
        Ok(claimed)
    }

    /// At start-up: this node's earlier process is gone, so its claims are void.
    pub async fn outbox_release_claims(&self, node: &str) -> Result<u64, DbError> {
        let done = sqlx::query(&states("UPDATE outbox SET state = {pending}, lease_until_ms = 0 WHERE node = $1 AND state = {sending}"))
            .bind(node)
            .execute(&self.pool)
            .await
            .map_err(q("release outbox claims"))?;
        Ok(done.rows_affected())
    }

    /// Paths of queued objects under `prefix` (any state), to reconcile the folder with the rows.
    pub async fn outbox_paths_under(&self, prefix: &str) -> Result<std::collections::HashSet<String>, DbError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT path FROM outbox WHERE path LIKE $1")
            .bind(format!("{prefix}%"))
            .fetch_all(&self.pool)
            .await
            .map_err(q("select outbox paths"))?;
        Ok(rows.into_iter().collect())
    }

    /// The result objects (SR and heatmap SC, re-identified at sending) queued in rows after
    /// `after_id` by node `node` (None: by any node, their files being shared): (row id, path,
    /// created_at_ms), oldest first, up to `limit` rows. The query index reads them.
    pub async fn result_objects_after(&self, node: Option<&str>, after_id: i64, limit: i64) -> Result<Vec<(i64, String, i64)>, DbError> {
        let rows = sqlx::query("SELECT id, path, created_at_ms FROM outbox WHERE ($1 = '' OR node = $1) AND id > $2 AND reidentify = 1 AND kind IN ($3, $4) ORDER BY id LIMIT $5")
            .bind(node.unwrap_or(""))
            .bind(after_id)
            .bind(ObjectKind::Sr.as_str())
            .bind(ObjectKind::Sc.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select result objects"))?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "path")?, get(r, "created_at_ms")?))).collect()
    }

    /// Per (kind, state), how many of a study's result objects there are (for `results`).
    pub async fn outbox_study_states(&self, study_id: i64) -> Result<Vec<(String, String, i64)>, DbError> {
        let rows = sqlx::query("SELECT kind, state, COUNT(*) AS n FROM outbox WHERE study_id = $1 GROUP BY kind, state ORDER BY kind, state")
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("count a study's outbox items"))?;
        rows.iter().map(|r| Ok((get(r, "kind")?, get(r, "state")?, get(r, "n")?))).collect()
    }

    /// Per study of `study_ids`, (study id, kind, state, count) of its queued objects.
    pub async fn outbox_states_of(&self, study_ids: &[i64]) -> Result<Vec<(i64, String, String, i64)>, DbError> {
        if study_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (1..=study_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT study_id, kind, state, COUNT(*) AS n FROM outbox WHERE study_id IN ({}) GROUP BY study_id, kind, state ORDER BY study_id, kind, state", list.join(", "));
        let mut query = sqlx::query(&sql);
        for id in study_ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(q("count a page's outbox items"))?;
        rows.iter().map(|r| Ok((get(r, "study_id")?, get(r, "kind")?, get(r, "state")?, get(r, "n")?))).collect()
    }

    /// The distinct paths of a study's queued objects of `kind`, newest first.
    pub async fn outbox_study_paths(&self, study_id: i64, kind: ObjectKind) -> Result<Vec<String>, DbError> {
        sqlx::query_scalar("SELECT path FROM outbox WHERE study_id = $1 AND kind = $2 GROUP BY path ORDER BY MAX(id) DESC")
            .bind(study_id)
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(q("select a study's result objects"))
    }

    /// Items by state (for `status`).
    pub async fn outbox_counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(q("count outbox items"))?;
        rows.iter().map(|r| Ok((get(r, "state")?, get(r, "n")?))).collect()
    }

    /// When the study of an item last received an instance, and when it was last found ready
    /// (its newest job), for the delivery latency.
    pub async fn study_last_received(&self, study_id: i64) -> Result<Option<(i64, Option<i64>)>, DbError> {
        let row = sqlx::query(
            "SELECT last_received_at_ms, (SELECT MAX(created_at_ms) FROM jobs j WHERE j.study_id = s.id) AS ready_at_ms FROM studies s WHERE id = $1",
        )
        .bind(study_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("select study receive time"))?;
        row.map(|r| Ok((super::get(&r, "last_received_at_ms")?, super::get(&r, "ready_at_ms")?))).transpose()
    }

    pub async fn outbox_delivered(&self, id: i64) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(&states("UPDATE outbox SET state = {delivered}, attempts = attempts + 1, delivered_at_ms = $1, updated_at_ms = $1, last_error = NULL WHERE id = $2"))
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("mark outbox item delivered"))?;
        Ok(())
    }

    pub async fn outbox_retry_later(&self, id: i64, next_attempt_at_ms: i64, error: &str) -> Result<(), DbError> {
        sqlx::query(&states("UPDATE outbox SET state = {pending}, attempts = attempts + 1, next_attempt_at_ms = $1, last_error = $2, updated_at_ms = $3 WHERE id = $4"))
            .bind(next_attempt_at_ms)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("reschedule outbox item"))?;
        Ok(())
    }

    pub async fn outbox_dead(&self, id: i64, error: &str) -> Result<(), DbError> {
        sqlx::query(&states("UPDATE outbox SET state = {dead}, attempts = attempts + 1, last_error = $1, updated_at_ms = $2 WHERE id = $3"))
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("dead-letter outbox item"))?;
        Ok(())
    }

    pub async fn outbox_list(&self, state: Option<OutboxState>) -> Result<Vec<OutboxItem>, DbError> {
        let rows = match state {
            Some(s) => sqlx::query(&format!("SELECT {COLUMNS} FROM outbox WHERE state = $1 ORDER BY id")).bind(s.as_str()).fetch_all(&self.pool).await,
            None => sqlx::query(&format!("SELECT {COLUMNS} FROM outbox ORDER BY id")).fetch_all(&self.pool).await,
        }
        .map_err(q("list outbox"))?;
        rows.iter().map(decode).collect()
    }

    /// Put dead (or, with `id`, that one non-delivered) items back in the queue, due now.
    pub async fn outbox_requeue(&self, id: Option<i64>) -> Result<u64, DbError> {
        let now = now_ms();
        let done = match id {
            Some(id) => sqlx::query(&states("UPDATE outbox SET state = {pending}, attempts = 0, next_attempt_at_ms = $1, updated_at_ms = $1 WHERE id = $2 AND state <> {delivered}"))
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await,
            None => sqlx::query(&states("UPDATE outbox SET state = {pending}, attempts = 0, next_attempt_at_ms = $1, updated_at_ms = $1 WHERE state = {dead}"))
                .bind(now)
                .execute(&self.pool)
                .await,
        }
        .map_err(q("requeue outbox items"))?;
        if done.rows_affected() > 0 {
            let mut conn = self.pool.acquire().await.map_err(q("acquire"))?;
            super::wake::notify_in(&mut conn, super::Wake::Outbox).await?;
        }
        Ok(done.rows_affected())
    }
}

/// Queue one object inside the caller's transaction (or on a connection): the one INSERT of
/// the outbox. `None` if that (object, destination) pair is already queued.
pub(crate) async fn insert_in(conn: &mut sqlx::AnyConnection, node: &str, item: &NewOutboxItem, now_ms: i64) -> Result<Option<i64>, DbError> {
    sqlx::query_scalar(
        "INSERT INTO outbox (path, destination, node, state, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms, kind, study_id, reidentify)
         VALUES ($1, $2, $3, $8, 0, $4, $4, $4, $5, $6, $7) ON CONFLICT (path, destination) DO NOTHING RETURNING id",
    )
    .bind(&item.path)
    .bind(&item.destination)
    .bind(node)
    .bind(now_ms)
    .bind(item.kind.as_str())
    .bind(item.study_id)
    .bind(i64::from(item.reidentify))
    .bind(OutboxState::Pending.as_str())
    .fetch_optional(conn)
    .await
    .map_err(q("queue outbox item"))
}
