//! Escalation of on-call notifications nobody acknowledged in time: a chain whose newest
//! notice's rule says `escalate_after` / `escalate_to` is, once that time has passed with no
//! acknowledgement and no retraction, told to the next rule: the same de-identified notice (read
//! back as it was sent), a level up, with its own stable id and acknowledgement link, recorded
//! and queued in one transaction that also marks the previous notice escalated (so two nodes
//! never escalate one notice twice). Must not: send anything (the outbox does).

use tracing::{info, warn};

use super::{notify, Publisher, ResultsError};
use crate::db::{Db, NewNotification, Notification, ObjectKind};

/// Most notifications escalated per call.
const BATCH: i64 = 32;

/// Escalate every notification due at `now_ms`. Returns how many were escalated.
pub async fn escalate_due(db: &Db, publisher: &Publisher, now_ms: i64) -> Result<usize, ResultsError> {
    let due = db.notifications_due(now_ms, BATCH).await?;
    let mut escalated = 0;
    for n in due {
        let next = publisher.notify.rule_named(&n.rule).and_then(|r| r.escalate_to.as_deref()).and_then(|to| publisher.notify.rule_named(to));
        let Some(next) = next else {
            // The rule no longer escalates (the configuration changed): the chain ends here.
            warn!(notification = %n.id, rule = %n.rule, "a notification is due to escalate, but its rule no longer names a rule to escalate to");
            db.notification_escalate(&n.id, now_ms, &publisher.node, None).await?;
            continue;
        };
        let Some(previous) = sent_notice(db, publisher, &n).await? else {
            warn!(notification = %n.id, "the notice to escalate is no longer in the outbox: the chain ends here");
            db.notification_escalate(&n.id, now_ms, &publisher.node, None).await?;
            continue;
        };
        let (token, sha) = notify::ack_token();
        let up = notify::escalation_notice(&previous, &n.chain, next, &publisher.notify.link_base, &token, now_ms);
        let row = NewNotification {
            id: up.id.clone(),
            study_id: n.study_id,
            chain: n.chain.clone(),
            level: i64::from(up.level),
            rule: next.name.clone(),
            priority: n.priority.clone(),
            created_at_ms: now_ms,
            last_instance_at_ms: n.last_instance_at_ms,
            escalate_at_ms: next.escalate_after.map(|d| now_ms + d.as_millis() as i64),
            ack_token_sha256: Some(sha),
        };
        let (writer, study_id) = (publisher.clone(), n.study_id);
        let item = tokio::task::spawn_blocking(move || writer.notice_item(study_id, &up)).await.map_err(|e| ResultsError::Task(e.to_string()))??;
        if db.notification_escalate(&n.id, now_ms, &publisher.node, Some((&row, &item))).await? {
            metrics::counter!("triage_notifications_escalated_total", "rule" => n.rule.clone()).increment(1);
            info!(notification = %n.id, from = %n.rule, to = %next.name, level = row.level, "notification unacknowledged in time: escalated");
            escalated += 1;
        } else if let Err(error) = publisher.blobs.delete(&item.path).await {
            // Acknowledged (or escalated elsewhere) meanwhile: the notice written goes.
            warn!(%error, "removing an unqueued escalation notice failed");
        }
    }
    Ok(escalated)
}

/// The notice `n` as it was queued (its outbox file, named after its id).
async fn sent_notice(db: &Db, publisher: &Publisher, n: &Notification) -> Result<Option<notify::Notice>, ResultsError> {
    let prefix = format!("outbox/notify/{}.", n.id);
    let Some(path) = db.outbox_study_paths(n.study_id, ObjectKind::Notice).await?.into_iter().find(|p| p.starts_with(&prefix)) else { return Ok(None) };
    let local = publisher.blobs.fetch(&path).await?;
    let bytes = tokio::fs::read(&local).await.map_err(|cause| ResultsError::Write { path: local.clone(), cause })?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| ResultsError::Encode(format!("reading back notice {}: {e}", n.id)))
}
