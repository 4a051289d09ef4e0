//! The ledger of on-call notifications: one row per notice queued (a study's publication makes
//! level 0 of a chain, an escalation the next level), when it was delivered, when the chain
//! escalates unless acknowledged, and its acknowledgement. The worklist row carries the study's
//! first delivery and its acknowledgement for the reading list.

use super::{get, q, Db, DbError};

/// A notification to record with the outbox row that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The notice's stable id.
    pub id: String,
    pub study_id: i64,
    /// The first notice of the chain (its own id at level 0).
    pub chain: String,
    pub level: i64,
    pub rule: String,
    pub priority: String,
    pub created_at_ms: i64,
    pub last_instance_at_ms: Option<i64>,
    /// None: this rule does not escalate.
    pub escalate_at_ms: Option<i64>,
    /// SHA-256 (hex) of the acknowledgement link's token; None: no link.
    pub ack_token_sha256: Option<String>,
}

/// A notification as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notification {
    pub id: String,
    pub study_id: i64,
    pub chain: String,
    pub level: i64,
    pub rule: String,
    pub priority: String,
    pub created_at_ms: i64,
    pub last_instance_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub escalate_at_ms: Option<i64>,
    pub escalated_at_ms: Option<i64>,
    pub acknowledged_at_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub withdrawn_at_ms: Option<i64>,
}

/// Which notification an acknowledgement is for.
#[derive(Debug, Clone, Copy)]
pub enum AckTarget<'a> {
    /// The one whose link carries the token with this SHA-256 (hex).
    Token(&'a str),
    /// The newest chain of the study (a reader on the worklist).
    Study(i64),
}

/// What acknowledging did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Acknowledged now: the chain's first notice (its creation and the study's last
    /// instance time the acknowledgement).
    Done(Notification),
    /// Someone acknowledged the chain before.
    Already(Notification),
    /// The chain's result was retracted: nothing to acknowledge.
    Withdrawn(Notification),
    /// No such token, or the study has no notification.
    Missing,
}

const COLUMNS: &str = "id, study_id, chain, level, rule, priority, created_at_ms, last_instance_at_ms, delivered_at_ms, escalate_at_ms, escalated_at_ms,
                       acknowledged_at_ms, acknowledged_by, withdrawn_at_ms";

fn decode(r: &sqlx::any::AnyRow) -> Result<Notification, DbError> {
    Ok(Notification {
        id: get(r, "id")?,
        study_id: get(r, "study_id")?,
        chain: get(r, "chain")?,
        level: get(r, "level")?,
        rule: get(r, "rule")?,
        priority: get(r, "priority")?,
        created_at_ms: get(r, "created_at_ms")?,
        last_instance_at_ms: get(r, "last_instance_at_ms")?,
        delivered_at_ms: get(r, "delivered_at_ms")?,
        escalate_at_ms: get(r, "escalate_at_ms")?,
        escalated_at_ms: get(r, "escalated_at_ms")?,
        acknowledged_at_ms: get(r, "acknowledged_at_ms")?,
        acknowledged_by: get(r, "acknowledged_by")?,
        withdrawn_at_ms: get(r, "withdrawn_at_ms")?,
    })
}

/// Record `n` inside the transaction that queues its outbox row (a second record of the same
/// id is ignored: the same notice).
pub(crate) async fn insert_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, n: &NewNotification) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO notifications (id, study_id, chain, level, rule, priority, created_at_ms, last_instance_at_ms, escalate_at_ms, ack_token_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&n.id)
    .bind(n.study_id)
    .bind(&n.chain)
    .bind(n.level)
    .bind(&n.rule)
    .bind(&n.priority)
    .bind(n.created_at_ms)
    .bind(n.last_instance_at_ms)
    .bind(n.escalate_at_ms)
    .bind(n.ack_token_sha256.clone())
    .execute(&mut **tx)
    .await
    .map_err(q("insert notification"))?;
    Ok(())
}

/// A new chain for `study_id`: the worklist's notified and acknowledged times start again.
pub(crate) async fn restart_study_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, study_id: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE worklist SET notified_at_ms = NULL, acknowledged_at_ms = NULL, acknowledged_by = NULL WHERE study_id = $1")
        .bind(study_id)
        .execute(&mut **tx)
        .await
        .map_err(q("restart worklist notification"))?;
    Ok(())
}

/// The study's results were retracted: its chains stop escalating.
pub(crate) async fn withdraw_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, study_id: i64, now_ms: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE notifications SET withdrawn_at_ms = $2 WHERE study_id = $1 AND withdrawn_at_ms IS NULL")
        .bind(study_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await
        .map_err(q("withdraw notifications"))?;
    Ok(())
}

impl Db {
    /// The outbox delivered notice `id` at `now_ms`. Returns the notification when this is its
    /// first delivery, and whether it is the study's first notification delivered (the
    /// worklist's `notified_at_ms` set now).
    pub async fn notification_delivered(&self, id: &str, now_ms: i64) -> Result<Option<(Notification, bool)>, DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let done = sqlx::query("UPDATE notifications SET delivered_at_ms = $2 WHERE id = $1 AND delivered_at_ms IS NULL")
            .bind(id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(q("notification delivered"))?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE id = $1")).bind(id).fetch_one(&mut *tx).await.map_err(q("select notification"))?;
        let n = decode(&row)?;
        let first = sqlx::query("UPDATE worklist SET notified_at_ms = $2 WHERE study_id = $1 AND notified_at_ms IS NULL")
            .bind(n.study_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(q("worklist notified"))?
            .rows_affected()
            > 0;
        tx.commit().await.map_err(q("commit notification delivered"))?;
        Ok(Some((n, first)))
    }

    /// Notifications whose chain should escalate now: due, not escalated, acknowledged or
    /// withdrawn. Oldest first.
    pub async fn notifications_due(&self, now_ms: i64, limit: i64) -> Result<Vec<Notification>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE escalate_at_ms <= $1 AND escalated_at_ms IS NULL AND acknowledged_at_ms IS NULL
             AND withdrawn_at_ms IS NULL ORDER BY escalate_at_ms, id LIMIT $2"
        ))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select notifications due"))?;
        rows.iter().map(decode).collect()
    }

    /// Escalate notification `from` (still due, unacknowledged, not withdrawn: else false and
    /// nothing written): mark it escalated and, when there is a next rule, record and queue its
    /// notice, in one transaction.
    pub async fn notification_escalate(
        &self,
        from: &str,
        now_ms: i64,
        node: &str,
        next: Option<(&NewNotification, &super::NewOutboxItem)>,
    ) -> Result<bool, DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let done = sqlx::query(
            "UPDATE notifications SET escalated_at_ms = $2 WHERE id = $1 AND escalated_at_ms IS NULL AND acknowledged_at_ms IS NULL AND withdrawn_at_ms IS NULL",
        )
        .bind(from)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(q("escalate notification"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some((n, item)) = next {
            insert_in(&mut tx, n).await?;
            super::outbox::insert_in(&mut tx, node, item, now_ms).await?;
            super::wake::notify_in(&mut tx, super::Wake::Outbox).await?;
        }
        tx.commit().await.map_err(q("commit escalation"))?;
        Ok(true)
    }

    /// Acknowledge the study `target` names (by a notice's link, or by the study), for `user`
    /// (`via`: `link` or `api`), with its audit entry, in one transaction: every open notice of
    /// the study (each rule's chain) stops escalating, since someone is on it; the worklist row
    /// shows who and when. The outcome carries the chain named (the link's, else the study's
    /// newest).
    pub async fn notification_acknowledge(&self, target: AckTarget<'_>, user: &str, via: &str, now_ms: i64) -> Result<AckOutcome, DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let found = match target {
            AckTarget::Token(sha) => sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE ack_token_sha256 = $1"))
                .bind(sha)
                .fetch_optional(&mut *tx)
                .await
                .map_err(q("select notification by token"))?,
            AckTarget::Study(study_id) => sqlx::query(&format!(
                "SELECT {COLUMNS} FROM notifications WHERE study_id = $1 AND level = 0
                 ORDER BY CASE WHEN acknowledged_at_ms IS NULL AND withdrawn_at_ms IS NULL THEN 0 ELSE 1 END, created_at_ms DESC, id LIMIT 1"
            ))
            .bind(study_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("select study notification"))?,
        };
        let Some(found) = found else { return Ok(AckOutcome::Missing) };
        let chain = decode(&found)?.chain;
        let first = decode(
            &sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE id = $1")).bind(&chain).fetch_one(&mut *tx).await.map_err(q("select chain"))?,
        )?;
        if first.withdrawn_at_ms.is_some() {
            return Ok(AckOutcome::Withdrawn(first));
        }
        if first.acknowledged_at_ms.is_some() {
            return Ok(AckOutcome::Already(first));
        }
        sqlx::query("UPDATE notifications SET acknowledged_at_ms = $2, acknowledged_by = $3 WHERE study_id = $1 AND acknowledged_at_ms IS NULL AND withdrawn_at_ms IS NULL")
            .bind(first.study_id)
            .bind(now_ms)
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(q("acknowledge notifications"))?;
        sqlx::query("UPDATE worklist SET acknowledged_at_ms = $2, acknowledged_by = $3 WHERE study_id = $1")
            .bind(first.study_id)
            .bind(now_ms)
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(q("worklist acknowledged"))?;
        let details = crate::audit::Acknowledged {
            user: user.to_string(),
            via: via.to_string(),
            notification: first.id.clone(),
            rule: first.rule.clone(),
            after_ms: now_ms - first.created_at_ms,
        };
        super::audit::append_in(&mut tx, key, &crate::audit::Event::Acknowledge { study: first.study_id, details }).await?;
        tx.commit().await.map_err(q("commit acknowledgement"))?;
        Ok(AckOutcome::Done(Notification { acknowledged_at_ms: Some(now_ms), acknowledged_by: Some(user.to_string()), ..first }))
    }

    /// The first notice of the chain whose link carries the token with SHA-256 `sha` (None: no
    /// such token). Reads only: showing the acknowledgement page changes nothing.
    pub async fn notification_chain_by_token(&self, sha: &str) -> Result<Option<Notification>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE id = (SELECT chain FROM notifications WHERE ack_token_sha256 = $1)"))
            .bind(sha)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select notification chain by token"))?;
        row.as_ref().map(decode).transpose()
    }

    /// The study's notifications, oldest first.
    pub async fn study_notifications(&self, study_id: i64) -> Result<Vec<Notification>, DbError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE study_id = $1 ORDER BY created_at_ms, level, id"))
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select study notifications"))?;
        rows.iter().map(decode).collect()
    }
}
