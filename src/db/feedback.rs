//! Readers' verdicts on AI findings (the trust loop): one row per study, model, label and
//! reader, saved with its audit entry in one transaction, closed once the study is marked read.

use super::{get, q, Db, DbError};
use crate::domain::now_ms;

/// A reader's verdict on one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Agree,
    Disagree,
    NotAssessable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Agree => "agree",
            Verdict::Disagree => "disagree",
            Verdict::NotAssessable => "not_assessable",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        [Verdict::Agree, Verdict::Disagree, Verdict::NotAssessable].into_iter().find(|v| v.as_str() == s)
    }
}

/// What a reader said of a finding, and what the model had said.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Feedback {
    pub study_id: i64,
    pub model: String,
    pub model_version: String,
    pub label: String,
    pub probability: f64,
    pub positive: bool,
    pub verdict: Verdict,
    pub corrected_label: Option<String>,
    /// The reader's own words (never in the audit trail, the log or an export).
    pub comment: Option<String>,
    pub reader: String,
    /// The worklist row's result this verdict is about.
    pub result_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What saving a verdict did.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedbackOutcome {
    /// Saved (`edited`: it replaced the reader's earlier verdict on the finding).
    Saved { feedback: Feedback, edited: bool },
    /// The study is marked read: its feedback is closed.
    Closed,
    /// No worklist row for the study.
    Missing,
}

const COLUMNS: &str =
    "study_id, model, model_version, label, probability, positive, verdict, corrected_label, comment, reader, result_at_ms, created_at_ms, updated_at_ms";

fn decode(r: &sqlx::any::AnyRow) -> Result<Feedback, DbError> {
    let verdict: String = get(r, "verdict")?;
    Ok(Feedback {
        study_id: get(r, "study_id")?,
        model: get(r, "model")?,
        model_version: get(r, "model_version")?,
        label: get(r, "label")?,
        probability: get(r, "probability")?,
        positive: get::<i64>(r, "positive")? != 0,
        verdict: Verdict::parse(&verdict).ok_or_else(|| DbError::Invalid(format!("unknown feedback verdict {verdict:?}")))?,
        corrected_label: get(r, "corrected_label")?,
        comment: get(r, "comment")?,
        reader: get(r, "reader")?,
        result_at_ms: get(r, "result_at_ms")?,
        created_at_ms: get(r, "created_at_ms")?,
        updated_at_ms: get(r, "updated_at_ms")?,
    })
}

impl Db {
    /// Save `f` (its times are set here) unless the study is marked read, with its audit entry
    /// (who, which finding, the verdict; never the comment) and the RIS's follow-up `queued`
    /// (node, item) when given, in one transaction.
    pub async fn feedback_save(&self, f: &Feedback, queued: Option<(&str, &super::NewOutboxItem)>) -> Result<FeedbackOutcome, DbError> {
        let key = self.audit_key()?;
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        // The row's write lock first (as reading changes take it): a verdict and "mark read"
        // are serialised.
        let touched = sqlx::query("UPDATE worklist SET updated_at_ms = updated_at_ms WHERE study_id = $1")
            .bind(f.study_id)
            .execute(&mut *tx)
            .await
            .map_err(q("lock worklist row"))?;
        if touched.rows_affected() == 0 {
            return Ok(FeedbackOutcome::Missing);
        }
        let state: String = sqlx::query_scalar("SELECT reading_state FROM worklist WHERE study_id = $1")
            .bind(f.study_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("select reading state"))?;
        if state == super::ReadingState::Read.as_str() {
            return Ok(FeedbackOutcome::Closed);
        }
        let earlier: Option<i64> = sqlx::query_scalar("SELECT created_at_ms FROM feedback WHERE study_id = $1 AND model = $2 AND label = $3 AND reader = $4")
            .bind(f.study_id)
            .bind(&f.model)
            .bind(&f.label)
            .bind(&f.reader)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("select feedback"))?;
        let sql = if earlier.is_some() {
            "UPDATE feedback SET model_version = $5, probability = $6, positive = $7, verdict = $8, corrected_label = $9, comment = $10, result_at_ms = $11,
                    updated_at_ms = $12 WHERE study_id = $1 AND model = $2 AND label = $3 AND reader = $4 AND $13 = $13"
        } else {
            "INSERT INTO feedback (study_id, model, label, reader, model_version, probability, positive, verdict, corrected_label, comment, result_at_ms,
                                   updated_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        };
        sqlx::query(sql)
            .bind(f.study_id)
            .bind(&f.model)
            .bind(&f.label)
            .bind(&f.reader)
            .bind(&f.model_version)
            .bind(f.probability)
            .bind(i64::from(f.positive))
            .bind(f.verdict.as_str())
            .bind(f.corrected_label.clone())
            .bind(f.comment.clone())
            .bind(f.result_at_ms)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(q("save feedback"))?;
        let details = crate::audit::FeedbackGiven {
            user: f.reader.clone(),
            model: f.model.clone(),
            model_version: f.model_version.clone(),
            label: f.label.clone(),
            verdict: f.verdict.as_str().into(),
            corrected_label: f.corrected_label.clone(),
            edited: earlier.is_some(),
        };
        super::audit::append_in(&mut tx, key, &crate::audit::Event::Feedback { study: f.study_id, details }).await?;
        if let Some((node, item)) = queued {
            super::outbox::insert_in(&mut tx, node, item, now).await?;
            super::wake::notify_in(&mut tx, super::Wake::Outbox).await?;
        }
        tx.commit().await.map_err(q("commit feedback"))?;
        let created_at_ms = earlier.unwrap_or(now);
        Ok(FeedbackOutcome::Saved { feedback: Feedback { created_at_ms, updated_at_ms: now, ..f.clone() }, edited: earlier.is_some() })
    }

    /// The study's verdicts, oldest first.
    pub async fn study_feedback(&self, study_id: i64) -> Result<Vec<Feedback>, DbError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM feedback WHERE study_id = $1 ORDER BY created_at_ms, model, label, reader"))
            .bind(study_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("select study feedback"))?;
        rows.iter().map(decode).collect()
    }

    /// Every verdict (of `model` when given), by study.
    pub async fn feedback_all(&self, model: Option<&str>) -> Result<Vec<Feedback>, DbError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM feedback WHERE ($1 = '' OR model = $1) ORDER BY study_id, model, label, reader"))
            .bind(model.unwrap_or(""))
            .fetch_all(&self.pool)
            .await
            .map_err(q("select feedback"))?;
        rows.iter().map(decode).collect()
    }
}
