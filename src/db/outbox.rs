//! The durable outbox: objects waiting for delivery, one row per (object, destination). The
//! objects are files in the queueing node's data directory, so rows belong to that node.
//! States (`OutboxState`): pending (due at `next_attempt_at_ms`), sending (claimed until
//! `lease_until_ms`, a destination's lane at a time, renewed while it sends; a crashed claimer's
//! rows come back when the lease runs out), delivered, dead (with why).

use super::{get, q, Db, DbError, ObjectKind, OutboxState};
use crate::domain::now_ms;

/// `sql` with each `{state}` placeholder (`{pending}`, `{sending}`, `{delivered}`, `{dead}`)
/// replaced by that state's stored spelling, so the spelling lives in `OutboxState` alone.
/// The condition that a claim held until `held` is still the row's (`$n`): nothing when the
/// caller holds no lease to check (the placeholder is then compared with itself).
fn fence(held: Option<i64>, n: usize) -> String {
    match held {
        Some(_) => format!(" AND state = '{}' AND lease_until_ms = ${n}", OutboxState::Sending.as_str()),
        None => format!(" AND ${n} = ${n}"),
    }
}

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

/// One destination's lane: the items a claimer holds until `lease_until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxClaim {
    pub destination: String,
    pub lease_until_ms: i64,
    pub items: Vec<OutboxItem>,
}

/// What waits for one destination (`outbox_destinations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationLoad {
    pub destination: String,
    /// Items pending or being sent.
    pub waiting: i64,
    /// When the oldest item that is due (not waiting for a retry) became due.
    pub oldest_due_ms: Option<i64>,
    /// The most failed attempts of any waiting item.
    pub attempts: i64,
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

/// Items of URGENT studies (worklist rank 0, saved with the study's results) before others.
const URGENT_FIRST: &str = "CASE WHEN EXISTS (SELECT 1 FROM worklist w WHERE w.study_id = outbox.study_id AND w.priority_rank = 0) THEN 0 ELSE 1 END";

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

    /// Claim up to `limit` due items for one destination (the first due item's, in the order
    /// of `outbox_claim_lane`) queued by `node` (None: by any node, their files being shared),
    /// holding them for `lease_ms`.
    pub async fn outbox_claim(&self, node: Option<&str>, lease_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, DbError> {
        Ok(self.outbox_claim_lane(node, lease_ms, limit, &[]).await?.map(|c| c.items).unwrap_or_default())
    }

    /// Claim one destination's lane: the first claimable item whose destination is not in
    /// `busy` (items of URGENT studies first, then the oldest), and up to `limit` of that
    /// destination's claimable items in the same order, all held until `lease_until_ms`. Rows
    /// queued by `node` only (None: by any node, their files being shared). Each claim is a
    /// conditional update, so two claimers never get one row.
    pub async fn outbox_claim_lane(&self, node: Option<&str>, lease_ms: i64, limit: usize, busy: &[String]) -> Result<Option<OutboxClaim>, DbError> {
        let node = node.unwrap_or("");
        let now = now_ms();
        // On PostgreSQL concurrent claimers skip each other's locked rows instead of queueing
        // behind them (and then finding them taken); SQLite serialises writers anyway.
        let skip = if self.engine == super::Engine::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        // $1 lease until, $2 now, $3 node, $4 the lane's destination, $5.. the busy ones.
        let not_busy: Vec<String> = (0..busy.len()).map(|i| format!("${}", i + 5)).collect();
        let not_busy = if not_busy.is_empty() { String::new() } else { format!(" AND destination NOT IN ({})", not_busy.join(", ")) };
        let mut claimed: Vec<OutboxItem> = Vec::new();
        while claimed.len() < limit {
            let sql = states(&format!(
                "UPDATE outbox SET state = {{sending}}, lease_until_ms = $1, updated_at_ms = $2
                 WHERE id = (SELECT id FROM outbox WHERE {CLAIMABLE} AND ($4 = '' OR destination = $4){not_busy} ORDER BY {URGENT_FIRST}, id LIMIT 1{skip}) AND {CLAIMABLE}
                 RETURNING {COLUMNS}"
            ));
            let first = claimed.first().map(|c| c.destination.clone()).unwrap_or_default();
            let mut query = sqlx::query(&sql).bind(now + lease_ms).bind(now).bind(node).bind(first);
            for b in busy {
                query = query.bind(b.clone());
            }
            match query.fetch_optional(&self.pool).await.map_err(q("claim outbox item"))? {
                Some(row) => claimed.push(decode(&row)?),
                None => break,
            }
        }
        Ok(claimed.first().map(|c| c.destination.clone()).map(|destination| OutboxClaim { destination, lease_until_ms: now + lease_ms, items: claimed }))
    }

    /// Extend a lane's claim: its items still held until `held_until_ms` (not yet recorded, not
    /// taken over by another claimer after the lease ran out) are held until `until_ms`.
    /// Returns how many were.
    pub async fn outbox_renew(&self, ids: &[i64], held_until_ms: i64, until_ms: i64) -> Result<u64, DbError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = states(&format!("UPDATE outbox SET lease_until_ms = $1 WHERE state = {{sending}} AND lease_until_ms = $2 AND id IN ({})", list.join(", ")));
        let mut query = sqlx::query(&sql).bind(until_ms).bind(held_until_ms);
        for id in ids {
            query = query.bind(*id);
        }
        Ok(query.execute(&self.pool).await.map_err(q("renew outbox claim"))?.rows_affected())
    }

    /// Give back a claimed item that was not attempted: due again at once, no attempt counted.
    /// With `held`, only while the claim is still the one held until then (false: another
    /// claimer has it now, and nothing changed).
    pub async fn outbox_release(&self, id: i64, held: Option<i64>) -> Result<bool, DbError> {
        let sql = states(&format!(
            "UPDATE outbox SET state = {{pending}}, lease_until_ms = 0, updated_at_ms = $1 WHERE id = $2 AND state = {{sending}}{}",
            fence(held, 3)
        ));
        let done = sqlx::query(&sql).bind(now_ms()).bind(id).bind(held.unwrap_or(0)).execute(&self.pool).await.map_err(q("release outbox item"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Per destination with items waiting (pending or being sent) queued by `node` (None: by any
    /// node): how many, since when the oldest due one is due, and the most failed attempts of
    /// any of them (each failure counts one; a delivery or dead-letter ends the item).
    pub async fn outbox_destinations(&self, node: Option<&str>, now_ms: i64) -> Result<Vec<DestinationLoad>, DbError> {
        let rows = sqlx::query(&states(
            "SELECT destination, COUNT(*) AS waiting, MIN(CASE WHEN next_attempt_at_ms <= $2 THEN next_attempt_at_ms END) AS oldest_due_ms, MAX(attempts) AS attempts
             FROM outbox WHERE ($1 = '' OR node = $1) AND state IN ({pending}, {sending}) GROUP BY destination ORDER BY destination",
        ))
        .bind(node.unwrap_or(""))
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(q("outbox load per destination"))?;
        rows.iter()
            .map(|r| {
                Ok(DestinationLoad {
                    destination: get(r, "destination")?,
                    waiting: get(r, "waiting")?,
                    oldest_due_ms: get(r, "oldest_due_ms")?,
                    attempts: get(r, "attempts")?,
                })
            })
            .collect()
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

    /// The result objects (SR, heatmap SC and Parametric Map, segmentations, rejection notes; re-identified at sending) queued in rows after
    /// `after_id` by node `node` (None: by any node, their files being shared): (row id, path,
    /// created_at_ms), oldest first, up to `limit` rows. The query index reads them.
    pub async fn result_objects_after(&self, node: Option<&str>, after_id: i64, limit: i64) -> Result<Vec<(i64, String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT id, path, created_at_ms FROM outbox WHERE ($1 = '' OR node = $1) AND id > $2 AND reidentify = 1 AND kind IN ($3, $4, $5, $6, $7) ORDER BY id LIMIT $8",
        )
        .bind(node.unwrap_or(""))
        .bind(after_id)
        .bind(ObjectKind::Sr.as_str())
        .bind(ObjectKind::Sc.as_str())
        .bind(ObjectKind::Pm.as_str())
        .bind(ObjectKind::Kos.as_str())
        .bind(ObjectKind::Seg.as_str())
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
        let sql = format!(
            "SELECT study_id, kind, state, COUNT(*) AS n FROM outbox WHERE study_id IN ({}) GROUP BY study_id, kind, state ORDER BY study_id, kind, state",
            list.join(", ")
        );
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

    /// Record a delivery. With `held`, only while the sender's claim is still the one held
    /// until then: a sender whose lease ran out (and whose items another claimer may have taken)
    /// changes nothing, and learns it from `false`.
    pub async fn outbox_delivered(&self, id: i64, held: Option<i64>) -> Result<bool, DbError> {
        let sql = states(&format!(
            "UPDATE outbox SET state = {{delivered}}, attempts = attempts + 1, delivered_at_ms = $1, updated_at_ms = $1, last_error = NULL WHERE id = $2{}",
            fence(held, 3)
        ));
        let done = sqlx::query(&sql).bind(now_ms()).bind(id).bind(held.unwrap_or(0)).execute(&self.pool).await.map_err(q("mark outbox item delivered"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Record a failed attempt, due again at `next_attempt_at_ms` (`held` as for a delivery).
    pub async fn outbox_retry_later(&self, id: i64, next_attempt_at_ms: i64, error: &str, held: Option<i64>) -> Result<bool, DbError> {
        let sql = states(&format!(
            "UPDATE outbox SET state = {{pending}}, attempts = attempts + 1, next_attempt_at_ms = $1, last_error = $2, updated_at_ms = $3 WHERE id = $4{}",
            fence(held, 5)
        ));
        let done = sqlx::query(&sql)
            .bind(next_attempt_at_ms)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .bind(held.unwrap_or(0))
            .execute(&self.pool)
            .await
            .map_err(q("reschedule outbox item"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Dead-letter an item with the reason (`held` as for a delivery).
    pub async fn outbox_dead(&self, id: i64, error: &str, held: Option<i64>) -> Result<bool, DbError> {
        let sql = states(&format!(
            "UPDATE outbox SET state = {{dead}}, attempts = attempts + 1, last_error = $1, updated_at_ms = $2 WHERE id = $3{}",
            fence(held, 4)
        ));
        let done =
            sqlx::query(&sql).bind(error).bind(now_ms()).bind(id).bind(held.unwrap_or(0)).execute(&self.pool).await.map_err(q("dead-letter outbox item"))?;
        Ok(done.rows_affected() == 1)
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
            Some(id) => {
                sqlx::query(&states(
                    "UPDATE outbox SET state = {pending}, attempts = 0, next_attempt_at_ms = $1, updated_at_ms = $1 WHERE id = $2 AND state <> {delivered}",
                ))
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query(&states("UPDATE outbox SET state = {pending}, attempts = 0, next_attempt_at_ms = $1, updated_at_ms = $1 WHERE state = {dead}"))
                    .bind(now)
                    .execute(&self.pool)
                    .await
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes: the first due item (urgent studies' first, then the oldest) picks the
    /// destination, a busy destination is skipped, a lane holds one destination's items in the
    /// same order; renewal holds only what is still claimed; release counts no attempt.
    #[tokio::test]
    async fn lanes_claim_urgent_first_skip_busy_destinations_and_renew() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 1).await.unwrap();
        // The worklist's foreign key to studies is not what this test is about.
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&db.pool).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let item = |path: &str, destination: &str, study: Option<i64>| NewOutboxItem {
            path: path.into(),
            destination: destination.into(),
            kind: ObjectKind::Sr,
            study_id: study,
            reidentify: false,
        };
        for (path, destination, study) in [("a", "PACS", Some(1)), ("b", "HL7", Some(1)), ("c", "PACS", Some(2)), ("d", "HL7", Some(2)), ("e", "OTHER", None)] {
            insert_in(&mut conn, "n", &item(path, destination, study), 1_000).await.unwrap();
        }
        for (study, priority, rank) in [(1, "NEGATIVE", 3), (2, "URGENT", 0)] {
            sqlx::query(
                "INSERT INTO worklist (study_id, priority, priority_rank, sort_score, received_at_ms, result_at_ms, modalities, models, positive_labels, demonstration, findings, reasons, reading_state, updated_at_ms)
                 VALUES ($1, $2, $3, 0, 0, 0, '', '', '', 0, '[]', '[]', 'unread', 0)",
            )
            .bind(study)
            .bind(priority)
            .bind(rank)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        drop(conn);
        let paths = |c: &OutboxClaim| c.items.iter().map(|i| i.path.clone()).collect::<Vec<_>>();
        // The urgent study's PACS item comes first, then the older one of that destination.
        let pacs = db.outbox_claim_lane(Some("n"), 60_000, 10, &[]).await.unwrap().unwrap();
        assert_eq!((pacs.destination.as_str(), paths(&pacs)), ("PACS", vec!["c".to_string(), "a".to_string()]));
        // PACS is busy (and claimed): the next lane is another destination, urgent first.
        let hl7 = db.outbox_claim_lane(Some("n"), 60_000, 1, &["PACS".into()]).await.unwrap().unwrap();
        assert_eq!((hl7.destination.as_str(), paths(&hl7)), ("HL7", vec!["d".to_string()]));
        let other = db.outbox_claim_lane(Some("n"), 60_000, 10, &["PACS".into(), "HL7".into()]).await.unwrap().unwrap();
        assert_eq!(paths(&other), ["e"]);
        assert!(db.outbox_claim_lane(Some("n"), 60_000, 10, &["HL7".into()]).await.unwrap().is_none(), "the rest is busy or claimed");
        let hl7_b = db.outbox_claim_lane(Some("n"), 60_000, 10, &[]).await.unwrap().unwrap();
        assert_eq!(paths(&hl7_b), ["b"]);

        // Renewal: held rows with the claim's lease, not a recorded one, not another claim's.
        let ids: Vec<i64> = pacs.items.iter().map(|i| i.id).collect();
        db.outbox_delivered(ids[0], None).await.unwrap();
        assert_eq!(db.outbox_renew(&ids, pacs.lease_until_ms, pacs.lease_until_ms + 1).await.unwrap(), 1);
        assert_eq!(db.outbox_renew(&ids, pacs.lease_until_ms, pacs.lease_until_ms + 2).await.unwrap(), 0, "the lease moved on");
        // Released: due again, no attempt counted; recorded rows are not released.
        db.outbox_release(ids[1], None).await.unwrap();
        db.outbox_release(ids[0], None).await.unwrap();
        let all = db.outbox_list(None).await.unwrap();
        let a = all.iter().find(|i| i.id == ids[1]).unwrap();
        assert_eq!((a.state, a.attempts), (OutboxState::Pending, 0));
        assert_eq!(all.iter().find(|i| i.id == ids[0]).unwrap().state, OutboxState::Delivered);

        // A lane whose claim was taken over records nothing: each outcome is fenced by the lease
        // the lane holds. The HL7 item "d" is re-claimed by another claimer (its lease moved on).
        let d = hl7.items[0].id;
        sqlx::query("UPDATE outbox SET lease_until_ms = lease_until_ms + 5 WHERE id = $1").bind(d).execute(&db.pool).await.unwrap();
        let stale = Some(hl7.lease_until_ms);
        assert!(!db.outbox_delivered(d, stale).await.unwrap());
        assert!(!db.outbox_retry_later(d, 0, "late", stale).await.unwrap());
        assert!(!db.outbox_dead(d, "late", stale).await.unwrap());
        assert!(!db.outbox_release(d, stale).await.unwrap());
        let now_held = Some(hl7.lease_until_ms + 5);
        assert!(db.outbox_delivered(d, now_held).await.unwrap(), "the holder of the current lease records");
        let d_row = db.outbox_list(None).await.unwrap().into_iter().find(|i| i.id == d).unwrap();
        assert_eq!((d_row.state, d_row.attempts, d_row.last_error), (OutboxState::Delivered, 1, None));
        sqlx::query("UPDATE outbox SET state = 'pending', attempts = 0, delivered_at_ms = NULL WHERE id = $1").bind(d).execute(&db.pool).await.unwrap();

        // What waits per destination.
        let load = db.outbox_destinations(Some("n"), now_ms()).await.unwrap();
        let names: Vec<(&str, i64)> = load.iter().map(|d| (d.destination.as_str(), d.waiting)).collect();
        assert_eq!(names, [("HL7", 2), ("OTHER", 1), ("PACS", 1)]);
        assert!(load.iter().all(|d| d.oldest_due_ms == Some(1_000) && d.attempts == 0), "{load:?}");
    }
}
