//! The RIS's follow-up of readers' verdicts (`[hl7] feedback`): when a reader gives a verdict
//! on an AI finding, the newest HL7 report the RIS was sent for the study is sent again as a
//! correction (OBR-25 C) carrying every standing verdict of the study's current result (each in
//! its own OBX group, `hl7::oru_r01`), under a control ID of its own. De-identified like every
//! queued report (the patient is put in at sending); the reader is never named; the comment
//! only where the site allows it (`feedback_comment`). Must not: send anything (the outbox does).

use super::{coded_finding, Publisher, ResultsError};
use crate::db::{Db, Feedback, NewOutboxItem, ObjectKind};
use crate::hl7::{ReaderVerdict, Report};
use crate::inference::package::Manifest;

/// The corrected label that says "no finding at all" (as `admin::feedback` takes it).
const NO_FINDING: &str = "no_finding";

/// `verdicts` as the RIS gets them: coded, without the reader, the comment when `comment`.
pub fn reader_verdicts(verdicts: &[Feedback], manifests: &[Manifest], comment: bool) -> Vec<ReaderVerdict> {
    verdicts
        .iter()
        .map(|f| {
            let manifest = manifests.iter().find(|m| m.name == f.model);
            let judged = coded_finding(manifest, &f.label);
            let corrected = f.corrected_label.as_deref().map(|l| match l {
                NO_FINDING => ("99TRIAGE".to_string(), "NOFINDING".to_string(), "No finding".to_string()),
                l => {
                    let c = coded_finding(manifest, l);
                    (c.scheme, c.value, c.meaning)
                }
            });
            ReaderVerdict {
                scheme: judged.scheme,
                code: judged.value,
                meaning: judged.meaning,
                model: f.model.clone(),
                model_version: f.model_version.clone(),
                verdict: f.verdict.as_str().into(),
                corrected,
                comment: f.comment.clone().filter(|_| comment),
            }
        })
        .collect()
}

/// The follow-up of `sent` (the newest report queued for the study) with `verdicts`, made at
/// `now_ms` for study row `study_id`: a correction, an ORU (not an order message).
pub fn follow_up(sent: Report, verdicts: Vec<ReaderVerdict>, study_id: i64, now_ms: i64) -> Report {
    Report {
        // MSH-10 is at most 20 characters: F, the milliseconds in base 36 (8 digits until
        // 2059), the study row (up to 8 digits).
        control_id: format!("TNF{}S{study_id}", base36(now_ms)),
        created_ms: now_ms,
        correction: true,
        order_update: crate::hl7::OrderUpdate::None,
        verdicts,
        ..sent
    }
}

/// `n` (not negative) in base 36, lower case.
fn base36(n: i64) -> String {
    let mut n = n.max(0) as u64;
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

impl Publisher {
    /// The RIS's follow-up of `verdicts` (the study's standing verdicts, the new one
    /// included), written durably, and its outbox row. None when `[hl7] feedback` is off, or
    /// the RIS holds no report of the study that stands (none queued, or the newest is a
    /// retraction).
    pub async fn feedback_hl7(&self, db: &Db, study_id: i64, verdicts: &[Feedback], manifests: &[Manifest]) -> Result<Option<NewOutboxItem>, ResultsError> {
        let Some(comment) = self.hl7_feedback else { return Ok(None) };
        let Some(path) = db.outbox_study_paths(study_id, ObjectKind::Hl7).await?.into_iter().next() else { return Ok(None) };
        let verdicts = reader_verdicts(verdicts, manifests, comment);
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let unreadable = |why: String| ResultsError::Task(format!("reading the HL7 report {path} the RIS was sent: {why}"));
            let file = match me.blobs.fetch_blocking(&path) {
                Ok(file) => file,
                Err(e) if e.is_missing() => return Err(unreadable(e.to_string())),
                Err(e) => return Err(e.into()),
            };
            let bytes = std::fs::read(&file).map_err(|e| unreadable(e.to_string()))?;
            let sent: Report = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
            if sent.retracted.is_some() {
                return Ok(None);
            }
            me.hl7_item(study_id, &follow_up(sent, verdicts, study_id, crate::domain::now_ms())).map(Some)
        })
        .await
        .map_err(|e| ResultsError::Task(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_up_s_control_id_fits_msh_10() {
        assert_eq!((base36(0), base36(35), base36(36), base36(1_796_691_650_871)), ("0".into(), "z".into(), "10".into(), "mxdztid3".into()));
        let id = format!("TNF{}S{}", base36(1_796_691_650_871), 12_345_678);
        assert!(id.len() <= 20, "{id}");
    }
}
