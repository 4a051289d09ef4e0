//! Acknowledging a study's on-call notification: by the one-time link a notification carries
//! (`/ack/<token>`), or by a reader on the worklist. One acknowledgement stops the chain's
//! escalation, is audited, shows on the worklist and is counted at `/metrics` (with the time
//! from the study's last instance).

use serde::Serialize;

use super::AdminError;
use crate::db::{AckOutcome, AckTarget, Db, Notification};
use crate::domain::now_ms;

/// An acknowledgement link's token as the page and the database take it: 64 hex digits.
pub fn token_sha256(token: &str) -> Option<String> {
    (token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())).then(|| crate::results::notify::token_sha256(&token.to_ascii_lowercase()))
}

/// What an acknowledgement found or did, as the API and the page show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Acknowledgement {
    /// `acknowledged` (now), `already` (before), `withdrawn` (the result was retracted).
    pub outcome: &'static str,
    pub study_id: i64,
    pub rule: String,
    pub priority: String,
    pub acknowledged_at_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
}

impl Acknowledgement {
    fn of(outcome: &'static str, n: &Notification) -> Acknowledgement {
        Acknowledgement {
            outcome,
            study_id: n.study_id,
            rule: n.rule.clone(),
            priority: n.priority.clone(),
            acknowledged_at_ms: n.acknowledged_at_ms,
            acknowledged_by: n.acknowledged_by.clone(),
        }
    }
}

/// Acknowledge the chain `target` names for `user` (`via`: `link` or `api`).
pub async fn acknowledge(db: &Db, target: AckTarget<'_>, user: &str, via: &'static str) -> Result<Acknowledgement, AdminError> {
    let now = now_ms();
    match db.notification_acknowledge(target, user, via, now).await? {
        AckOutcome::Done(n) => {
            metrics::counter!("triage_notifications_acknowledged_total", "via" => via).increment(1);
            if let Some(last) = n.last_instance_at_ms {
                metrics::histogram!("triage_time_to_acknowledgement_seconds", "priority" => n.priority.clone()).record((now - last).max(0) as f64 / 1000.0);
            }
            Ok(Acknowledgement::of("acknowledged", &n))
        }
        AckOutcome::Already(n) => Ok(Acknowledgement::of("already", &n)),
        AckOutcome::Withdrawn(n) => Ok(Acknowledgement::of("withdrawn", &n)),
        AckOutcome::Missing => Err(AdminError::NotFound(match target {
            AckTarget::Token(_) => "this acknowledgement link is unknown (mistyped, or from another node's database)".into(),
            AckTarget::Study(id) => format!("study {id} has no on-call notification to acknowledge"),
        })),
    }
}

/// What the acknowledgement page shows before its button is pressed (reads only).
pub async fn link_state(db: &Db, sha: &str) -> Result<Option<Acknowledgement>, AdminError> {
    Ok(db.notification_chain_by_token(sha).await?.map(|n| {
        let outcome = if n.withdrawn_at_ms.is_some() {
            "withdrawn"
        } else if n.acknowledged_at_ms.is_some() {
            "already"
        } else {
            "pending"
        };
        Acknowledgement::of(outcome, &n)
    }))
}

/// The study's notifications (the study page).
pub async fn study_notifications(db: &Db, study_id: i64) -> Result<Vec<Notification>, AdminError> {
    Ok(db.study_notifications(study_id).await?)
}
