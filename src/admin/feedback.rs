//! Readers' verdicts on AI findings (issue: the trust loop): given on the study page or the
//! API, one per finding and reader, editable until the study is marked read, audited without
//! the reader's comment, exported de-identified for the model's vendor (the node's study row id,
//! the model's call and the verdict; no patient, no reader, no comment), and followed up to the
//! RIS when `[hl7] feedback` is on (`results::followup`).

use serde::{Deserialize, Serialize};

use super::AdminError;
use crate::db::{Db, Feedback, FeedbackOutcome, Verdict};
use crate::inference::package::Manifest;
use crate::results::worklist::WorklistEntry;
use crate::results::Publisher;

/// The longest comment kept.
pub const COMMENT_MAX: usize = 500;
/// The corrected label that says "no finding at all".
pub const NO_FINDING: &str = "no_finding";

/// A verdict as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    pub model: String,
    pub label: String,
    /// `agree`, `disagree` or `not_assessable`.
    pub verdict: String,
    /// What the finding should have been: one of the model's labels, or `no_finding`.
    #[serde(default)]
    pub corrected_label: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Save `reader`'s verdict on the finding `input` names in the study's current result; with
/// `publisher` (and `[hl7] feedback` on), the RIS's follow-up of the study's verdicts is queued
/// in the same transaction (`results::followup`).
pub async fn give(
    db: &Db,
    manifests: &[Manifest],
    publisher: Option<&Publisher>,
    study_id: i64,
    reader: &str,
    input: &FeedbackInput,
) -> Result<Feedback, AdminError> {
    let verdict = Verdict::parse(&input.verdict).ok_or_else(|| AdminError::Invalid("verdict must be agree, disagree or not_assessable".into()))?;
    let row = db.worklist_row(study_id).await?.ok_or_else(|| AdminError::NotFound(format!("no worklist study {study_id}")))?;
    let entry = WorklistEntry::from_row(&row);
    let finding = entry
        .findings
        .iter()
        .find(|f| f.model == input.model && f.label == input.label)
        .ok_or_else(|| AdminError::Invalid(format!("study {study_id}'s result has no finding {:?} of model {:?}", input.label, input.model)))?;
    let corrected_label = match input.corrected_label.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => {
            let known = l == NO_FINDING
                || manifests.iter().find(|m| m.name == input.model).is_some_and(|m| m.outputs.labels.iter().any(|x| x == l))
                || entry.findings.iter().any(|f| f.model == input.model && f.label == l);
            if !known {
                return Err(AdminError::Invalid(format!("corrected_label must be one of model {:?}'s labels or {NO_FINDING:?}", input.model)));
            }
            Some(l.to_string())
        }
    };
    let comment = match input.comment.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) if c.chars().count() > COMMENT_MAX => return Err(AdminError::Invalid(format!("comment must be at most {COMMENT_MAX} characters"))),
        Some(c) if c.chars().any(|ch| ch.is_control() && ch != '\n' && ch != '\t') => {
            return Err(AdminError::Invalid("comment must not hold control characters".into()))
        }
        Some(c) => Some(c.to_string()),
    };
    let feedback = Feedback {
        study_id,
        model: finding.model.clone(),
        model_version: finding.model_version.clone(),
        label: finding.label.clone(),
        probability: finding.probability,
        positive: finding.positive,
        verdict,
        corrected_label,
        comment,
        reader: reader.to_string(),
        result_at_ms: row.result_at_ms,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    // The RIS's follow-up: every standing verdict on the current result, this one in place of
    // the reader's earlier one on the finding.
    let follow_up = match publisher.filter(|p| p.hl7_feedback.is_some()) {
        None => None,
        Some(p) => {
            let mut verdicts: Vec<Feedback> = db
                .study_feedback(study_id)
                .await?
                .into_iter()
                .filter(|f| f.result_at_ms == row.result_at_ms && !(f.model == feedback.model && f.label == feedback.label && f.reader == feedback.reader))
                .collect();
            verdicts.push(feedback.clone());
            p.feedback_hl7(db, study_id, &verdicts, manifests).await?.map(|item| (p, item))
        }
    };
    let outcome = db.feedback_save(&feedback, follow_up.as_ref().map(|(p, item)| (p.node.as_str(), item))).await;
    if let Some((p, item)) = &follow_up {
        match &outcome {
            Ok(FeedbackOutcome::Saved { .. }) => p.wake.notify_one(),
            // Not saved: the follow-up written goes.
            _ => {
                if let Err(error) = p.blobs.delete(&item.path).await {
                    tracing::warn!(%error, "removing an unqueued HL7 follow-up failed");
                }
            }
        }
    }
    match outcome? {
        FeedbackOutcome::Saved { feedback, .. } => {
            metrics::counter!("triage_feedback_total", "model" => feedback.model.clone(), "verdict" => feedback.verdict.as_str()).increment(1);
            Ok(feedback)
        }
        FeedbackOutcome::Closed => Err(AdminError::Conflict(format!("study {study_id} is marked read: its feedback is closed"))),
        FeedbackOutcome::Missing => Err(AdminError::NotFound(format!("no worklist study {study_id}"))),
    }
}

/// One verdict as exported for a model's vendor: de-identified (the node's study row id; no
/// patient, no reader, no comment).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportRow {
    pub node_study_id: i64,
    pub model: String,
    pub model_version: String,
    pub label: String,
    pub probability: f64,
    pub positive: bool,
    pub verdict: String,
    pub corrected_label: Option<String>,
    pub result_at_ms: i64,
}

/// Every verdict (of `model` when given), de-identified.
pub async fn export(db: &Db, model: Option<&str>) -> Result<Vec<ExportRow>, AdminError> {
    Ok(db
        .feedback_all(model)
        .await?
        .into_iter()
        .map(|f| ExportRow {
            node_study_id: f.study_id,
            model: f.model,
            model_version: f.model_version,
            label: f.label,
            probability: f.probability,
            positive: f.positive,
            verdict: f.verdict.as_str().into(),
            corrected_label: f.corrected_label,
            result_at_ms: f.result_at_ms,
        })
        .collect())
}

/// The rows as CSV (RFC 4180: a header line, fields quoted where they hold a comma or a quote).
pub fn csv(rows: &[ExportRow]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let mut out = String::from("node_study_id,model,model_version,label,probability,positive,verdict,corrected_label,result_at_ms\r\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\r\n",
            r.node_study_id,
            field(&r.model),
            field(&r.model_version),
            field(&r.label),
            r.probability,
            r.positive,
            r.verdict,
            field(r.corrected_label.as_deref().unwrap_or("")),
            r.result_at_ms
        ));
    }
    out
}

/// The study's verdicts.
pub async fn of_study(db: &Db, study_id: i64) -> Result<Vec<Feedback>, AdminError> {
    Ok(db.study_feedback(study_id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_quotes_what_it_must() {
        let row = ExportRow {
            node_study_id: 7,
            model: "demo-nodule".into(),
            model_version: "1.0".into(),
            label: "a,\"b\"".into(),
            probability: 0.5,
            positive: false,
            verdict: "disagree".into(),
            corrected_label: None,
            result_at_ms: 1,
        };
        assert_eq!(
            csv(&[row]),
            "node_study_id,model,model_version,label,probability,positive,verdict,corrected_label,result_at_ms\r\n7,demo-nodule,1.0,\"a,\"\"b\"\"\",0.5,false,disagree,,1\r\n"
        );
    }
}
