//! Retracting a study's AI results (an admin, on the CLI or the API): the PACS gets an IHE IOCM
//! rejection note naming every object of the results that stand (`results::reject`), the RIS a
//! correction that withdraws the observations it was sent, and the study leaves the worklist
//! (its row kept, marked retracted, until a new result replaces it). The files are written
//! first; then one transaction queues them, marks the row and appends the `retract` audit entry
//! (the admin's reason is kept there only); a transaction that does not happen removes them.
//! Each rule whose notice about the result stands (the notifications ledger's, else
//! `results::notify::notified`: the
//! row's priority, before it is marked, is one the rule lists) gets a `retracted` notice in the
//! same transaction.

use serde::Serialize;
use tracing::{info, warn};

use super::AdminError;
use crate::config::Settings;
use crate::db::{Db, NewOutboxItem, RetractOutcome, RetractRecord};
pub use crate::results::kos::Reason;
use crate::results::{Built, Publisher};

/// The longest reason kept (characters): a sentence or two, not a report.
pub const MAX_REASON: usize = 500;

/// What the rejection note says of itself (Key Object Description): fixed, so that no free text
/// (the admin's reason may name the patient) reaches a file on disk or the PACS.
pub const NOTE_DESCRIPTION: &str = "AI triage result retracted by the site: do not use it.";

/// What a retraction did.
#[derive(Debug, Clone, Serialize)]
pub struct Retracted {
    pub study_id: i64,
    /// The rejection note's title: code and meaning.
    pub code: String,
    pub meaning: String,
    pub retracted_at_ms: i64,
    pub by: String,
    /// Objects the rejection note rejects (none without a PACS destination).
    pub objects: usize,
    /// The rejection note's destinations.
    pub destinations: Vec<String>,
    /// A correction was queued for the RIS.
    pub hl7: bool,
}

/// The node's publisher for an operation outside a running node (the CLI): its outbox rows are
/// picked up by the running node's outbox worker at its next poll.
pub fn publisher(settings: &Settings, blobs: crate::blobs::Blobs) -> Publisher {
    Publisher {
        blobs,
        settings: settings.results.clone(),
        station: settings.dicom.ae_title.to_string(),
        node: settings.node_id(),
        wake: std::sync::Arc::new(tokio::sync::Notify::new()),
        hl7: settings.hl7.enabled,
        hl7_order: settings.hl7.order_update(),
        notify: settings.notify.clone(),
        hl7_feedback: settings.hl7.feedback_follow_up(),
    }
}

/// The reason as kept: trimmed, line breaks and other control characters made spaces; required,
/// at most `MAX_REASON` characters.
pub fn reason_text(text: &str) -> Result<String, AdminError> {
    let cleaned: String = text.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if cleaned.is_empty() {
        return Err(AdminError::Invalid("a reason is required (why the AI results are retracted; it is kept in the audit trail)".into()));
    }
    if cleaned.chars().count() > MAX_REASON {
        return Err(AdminError::Invalid(format!("the reason is at most {MAX_REASON} characters")));
    }
    Ok(cleaned)
}

/// Retract the AI results of worklist study `study_id` for `by`, with `reason` (the note's title)
/// and the admin's `text`. Not found: no worklist row. Conflict: nothing to retract (retracted
/// already, no model analysed it, nothing stands at the PACS), or a new result arrived meanwhile.
pub async fn retract(db: &Db, publisher: &Publisher, study_id: i64, reason: Reason, text: &str, by: &str) -> Result<Retracted, AdminError> {
    let text = reason_text(text)?;
    if by.trim().is_empty() {
        return Err(AdminError::Invalid("who retracts is required".into()));
    }
    let row = db.worklist_row(study_id).await?.ok_or_else(|| AdminError::NotFound(format!("no worklist study {study_id}")))?;
    if let Some(r) = &row.retraction {
        return Err(AdminError::Conflict(format!(
            "nothing to retract: the AI results of study {study_id} were retracted already (by {} at {})",
            r.by, r.at_ms
        )));
    }
    if row.priority == crate::results::worklist::StudyPriority::NotApplicable.as_str() {
        return Err(AdminError::Conflict(format!("nothing to retract: no model analysed study {study_id}")));
    }
    let retracted = publisher.retract(db, study_id, reason, NOTE_DESCRIPTION).await?;
    let (note, objects) = match retracted {
        Some((note, objects)) => (Some(note), objects),
        None => (None, Vec::new()),
    };
    if note.is_none() && publisher.sends_objects() {
        return Err(AdminError::Conflict(format!(
            "nothing to retract: no AI result object of study {study_id} stands at the PACS (none was sent, or all were withdrawn)"
        )));
    }
    let mut written: Vec<String> = note.iter().map(|n| n.path.clone()).collect();
    let outcome = queue(db, publisher, &row, note.as_ref(), objects, reason, &text, by, &mut written).await;
    if !matches!(outcome, Ok((RetractOutcome::Done(_), ..))) {
        // Nothing was queued: the files go.
        for path in &written {
            if let Err(error) = publisher.blobs.delete(path).await {
                warn!(%error, "removing an unqueued rejection note or correction failed");
            }
        }
    }
    let (done, objects, hl7) = match outcome? {
        (RetractOutcome::Done(done), objects, hl7) => (done, objects, hl7),
        (RetractOutcome::Missing, ..) => return Err(AdminError::NotFound(format!("no worklist study {study_id}"))),
        (RetractOutcome::Retracted(r), ..) => {
            return Err(AdminError::Conflict(format!(
                "nothing to retract: the AI results of study {study_id} were retracted already (by {} at {})",
                r.by, r.at_ms
            )))
        }
        (RetractOutcome::Replaced, ..) => {
            return Err(AdminError::Conflict(format!(
                "study {study_id} was triaged again while it was being retracted: nothing was retracted; retract the new result"
            )))
        }
    };
    if !written.is_empty() {
        publisher.wake.notify_one();
    }
    let title = reason.title();
    info!(study_id, code = %title.value, objects, hl7, "AI results retracted");
    Ok(Retracted {
        study_id,
        code: title.value,
        meaning: title.meaning,
        retracted_at_ms: done.at_ms,
        by: done.by,
        objects,
        destinations: if note.is_some() { publisher.settings.object_destinations() } else { Vec::new() },
        hl7,
    })
}

/// The correction written, then the transaction: (its outcome, objects rejected, whether the RIS
/// gets a correction). Every file written is added to `written`.
#[allow(clippy::too_many_arguments)]
async fn queue(
    db: &Db,
    publisher: &Publisher,
    row: &crate::db::WorklistRow,
    note: Option<&Built>,
    objects: Vec<String>,
    reason: Reason,
    text: &str,
    by: &str,
    written: &mut Vec<String>,
) -> Result<(RetractOutcome, usize, bool), AdminError> {
    let study_id = row.study_id;
    let mut outbox: Vec<NewOutboxItem> = Vec::new();
    if let Some(note) = note {
        outbox.extend(publisher.outbox_rows(study_id, std::slice::from_ref(note)));
    }
    let correction = publisher.retraction_hl7(db, study_id, reason).await?;
    let hl7 = correction.is_some();
    if let Some(item) = correction {
        written.push(item.path.clone());
        outbox.push(item);
    }
    // Each webhook rule whose notice about this result stands is told it is withdrawn (the code,
    // never the admin's reason), in the same transaction.
    // The rules the ledger says were told (an escalation's too); for notices made before the
    // ledger, the rules' own filters.
    let mut told: Vec<String> = db.study_notifications(study_id).await?.into_iter().filter(|n| n.withdrawn_at_ms.is_none()).map(|n| n.rule).collect();
    told.sort();
    told.dedup();
    let rules: Vec<&crate::config::NotifyRule> = if told.is_empty() {
        crate::results::notify::notified(publisher.notify.rules(), row)
    } else {
        publisher.notify.rules().iter().filter(|r| told.contains(&r.name)).collect()
    };
    if !rules.is_empty() {
        let created_ms = crate::domain::now_ms();
        let notices: Vec<_> = rules
            .iter()
            .map(|r| crate::results::notify::retraction_notice(r, row, reason, &publisher.station, &publisher.notify.link_base, created_ms))
            .collect();
        let writer = publisher.clone();
        let items = tokio::task::spawn_blocking(move || notices.iter().map(|n| writer.notice_item(study_id, n)).collect::<Vec<_>>())
            .await
            .map_err(|e| AdminError::Engine(e.to_string()))?;
        let mut failed = None;
        for item in items {
            match item {
                Ok(item) => {
                    written.push(item.path.clone());
                    outbox.push(item);
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    let code = reason.title().value;
    let details = crate::audit::Retracted {
        user: by.to_string(),
        reason: text.to_string(),
        code: code.clone(),
        note: note.map(|n| n.sop_instance_uid.clone()),
        objects: objects.clone(),
        hl7,
    };
    let event = crate::audit::Event::Retract { study: study_id, details };
    let record = RetractRecord { study_id, result_at_ms: row.result_at_ms, by, code: &code, node: &publisher.node, outbox: &outbox, event: &event };
    Ok((db.worklist_retract(&record).await?, objects.len(), hl7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_required_bounded_and_kept_on_one_line() {
        assert!(matches!(reason_text("  \n\t "), Err(AdminError::Invalid(_))));
        assert_eq!(reason_text("  wrong model\nversion  ").unwrap(), "wrong model version");
        assert_eq!(reason_text(&"x".repeat(MAX_REASON)).unwrap().len(), MAX_REASON);
        assert!(matches!(reason_text(&"é".repeat(MAX_REASON + 1)), Err(AdminError::Invalid(_))));
        assert_eq!(reason_text(&"é".repeat(MAX_REASON)).unwrap().chars().count(), MAX_REASON, "characters, not bytes");
    }
}
