//! The reading worklist: one row per triaged study, replaced in the transaction that saves the
//! study's results, and its reading state (claim, read, release), each change audited in the
//! same transaction. Pages are read in reading order (or by arrival) with keyset cursors, so
//! page 200 costs what page 1 does. Row ids and de-identified values only.

use super::{get, q, Db, DbError, ReadingState};
use crate::domain::now_ms;

/// A worklist row as the triage stage writes it and the API reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorklistRow {
    pub study_id: i64,
    /// The study's de-identified Study Instance UID (filled in when read).
    pub study_instance_uid: String,
    /// `URGENT`, `POSITIVE`, `FAILED`, `NOT_ANALYSED`, `NEGATIVE`, `NOT_APPLICABLE`.
    pub priority: String,
    /// 0 (URGENT) .. 4 (NOT_APPLICABLE); FAILED and NOT_ANALYSED share 2.
    pub priority_rank: i64,
    /// The highest positive probability (URGENT and POSITIVE).
    pub score: Option<f64>,
    pub received_at_ms: i64,
    pub result_at_ms: i64,
    pub modalities: Vec<String>,
    pub models: Vec<String>,
    pub positive_labels: Vec<String>,
    pub demonstration: bool,
    /// JSON the triage stage wrote (findings without their maps; failure reasons).
    pub findings_json: String,
    pub reasons_json: String,
    /// The priority a new analysis lowered this study from (never silent).
    pub lowered_from: Option<String>,
    pub reading: Reading,
    /// An admin retracted the study's AI results: the row has left every listing (kept, its
    /// history) until a new result replaces it.
    pub retraction: Option<Retraction>,
    /// The study's on-call notification: first delivered, acknowledged (by whom).
    pub notified: Notified,
    /// The scanner of the result's key image ("Manufacturer Model (kernel K)"), if known.
    pub scanner: Option<String>,
}

/// A standing (not retracted) worklist row's findings, for the performance figures.
#[derive(Debug, Clone)]
pub struct StandingFindings {
    pub study_id: i64,
    pub findings_json: String,
    /// From the last instance to the result.
    pub turnaround_ms: i64,
    pub scanner: Option<String>,
}

/// When the study's on-call notification first reached someone, and its acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notified {
    pub at_ms: Option<i64>,
    pub acknowledged_at_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
}

/// An admin's retraction of a study's AI results. The admin's reason is in the audit trail only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    pub at_ms: i64,
    /// The admin (CLI: the operator's name; API: the token's user).
    pub by: String,
    /// The rejection note's title code: 113001 (quality) or 113037 (patient safety).
    pub code: String,
}

/// What `worklist_retract` saves in one transaction: the row marked retracted, the rejection
/// note's and the correction's outbox rows, the audit entry.
pub struct RetractRecord<'a> {
    pub study_id: i64,
    /// The row's `result_at_ms` when the note was built: a study triaged again since then is not
    /// retracted by this note.
    pub result_at_ms: i64,
    pub by: &'a str,
    pub code: &'a str,
    /// The node the outbox rows belong to.
    pub node: &'a str,
    pub outbox: &'a [super::NewOutboxItem],
    pub event: &'a crate::audit::Event,
}

/// What `worklist_retract` did; nothing is written unless `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetractOutcome {
    Done(Retraction),
    /// No worklist row for the study.
    Missing,
    /// Retracted already.
    Retracted(Retraction),
    /// A new result replaced the row since the note was built.
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub state: ReadingState,
    pub reader: Option<String>,
    pub at_ms: Option<i64>,
}

impl Reading {
    pub fn unread() -> Reading {
        Reading { state: ReadingState::Unread, reader: None, at_ms: None }
    }
}

/// Which rows a page holds. Text values match one whole delimited value.
#[derive(Debug, Clone, Default)]
pub struct WorklistFilter {
    pub priorities: Vec<String>,
    pub finding: Option<String>,
    pub modality: Option<String>,
    pub model: Option<String>,
    pub reading: Option<ReadingState>,
    pub received_since_ms: Option<i64>,
    pub received_until_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorklistSort {
    /// URGENT, POSITIVE by score, then the rest; oldest first within each.
    #[default]
    Priority,
    Newest,
    Oldest,
}

/// Where the previous page ended (its last row's sort key).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorklistCursor {
    pub priority_rank: i64,
    pub sort_score: f64,
    pub received_at_ms: i64,
    pub study_id: i64,
}

impl WorklistCursor {
    pub fn after(row: &WorklistRow) -> WorklistCursor {
        WorklistCursor {
            priority_rank: row.priority_rank,
            sort_score: sort_score(row.priority_rank, row.score),
            received_at_ms: row.received_at_ms,
            study_id: row.study_id,
        }
    }

    /// An opaque token: the four keys, the score's bits exactly.
    pub fn encode(&self) -> String {
        format!("{}.{:x}.{}.{}", self.priority_rank, self.sort_score.to_bits(), self.received_at_ms, self.study_id)
    }

    pub fn parse(s: &str) -> Option<WorklistCursor> {
        let mut it = s.split('.');
        let c = WorklistCursor {
            priority_rank: it.next()?.parse().ok()?,
            sort_score: f64::from_bits(u64::from_str_radix(it.next()?, 16).ok()?),
            received_at_ms: it.next()?.parse().ok()?,
            study_id: it.next()?.parse().ok()?,
        };
        (it.next().is_none() && c.sort_score.is_finite()).then_some(c)
    }
}

/// What a reader does to a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadingAction {
    Claim,
    MarkRead,
    Release,
}

impl ReadingAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadingAction::Claim => "claim",
            ReadingAction::MarkRead => "read",
            ReadingAction::Release => "release",
        }
    }
}

/// Within URGENT and POSITIVE the higher score first; elsewhere arrival alone.
fn sort_score(rank: i64, score: Option<f64>) -> f64 {
    match (rank, score) {
        // URGENT and POSITIVE by score; a NEGATIVE with a score (an uncertain one) before the
        // confident negatives (none).
        (0 | 1 | 3, Some(s)) if s.is_finite() => -s,
        _ => 0.0,
    }
}

fn delimited(values: &[String]) -> String {
    format!("|{}|", values.join("|"))
}

fn undelimit(s: &str) -> Vec<String> {
    s.split('|').filter(|v| !v.is_empty()).map(str::to_string).collect()
}

/// `%|value|%` for LIKE, with LIKE's own characters escaped.
fn contains_pattern(value: &str) -> String {
    let escaped: String = value.chars().flat_map(|c| if matches!(c, '\\' | '%' | '_') { vec!['\\', c] } else { vec![c] }).collect();
    format!("%|{escaped}|%")
}

enum Arg {
    I(i64),
    F(f64),
    S(String),
}

const COLUMNS: &str = "w.study_id, s.study_instance_uid, w.priority, w.priority_rank, w.score, w.received_at_ms, w.result_at_ms, w.modalities, w.models,
                       w.positive_labels, w.demonstration, w.findings, w.reasons, w.lowered_from, w.reading_state, w.reader, w.reading_at_ms,
                       w.retracted_at_ms, w.retracted_by, w.retraction_reason, w.notified_at_ms, w.acknowledged_at_ms, w.acknowledged_by, w.scanner";

fn decode(r: &sqlx::any::AnyRow) -> Result<WorklistRow, DbError> {
    Ok(WorklistRow {
        study_id: get(r, "study_id")?,
        study_instance_uid: get(r, "study_instance_uid")?,
        priority: get(r, "priority")?,
        priority_rank: get(r, "priority_rank")?,
        score: get(r, "score")?,
        received_at_ms: get(r, "received_at_ms")?,
        result_at_ms: get(r, "result_at_ms")?,
        modalities: undelimit(&get::<String>(r, "modalities")?),
        models: undelimit(&get::<String>(r, "models")?),
        positive_labels: undelimit(&get::<String>(r, "positive_labels")?),
        demonstration: get::<i64>(r, "demonstration")? != 0,
        findings_json: get(r, "findings")?,
        reasons_json: get(r, "reasons")?,
        lowered_from: get(r, "lowered_from")?,
        reading: Reading { state: get::<String>(r, "reading_state")?.parse()?, reader: get(r, "reader")?, at_ms: get(r, "reading_at_ms")? },
        retraction: retraction(r)?,
        notified: Notified { at_ms: get(r, "notified_at_ms")?, acknowledged_at_ms: get(r, "acknowledged_at_ms")?, acknowledged_by: get(r, "acknowledged_by")? },
        scanner: get(r, "scanner")?,
    })
}

fn retraction(r: &sqlx::any::AnyRow) -> Result<Option<Retraction>, DbError> {
    Ok(match get::<Option<i64>>(r, "retracted_at_ms")? {
        None => None,
        Some(at_ms) => Some(Retraction {
            at_ms,
            by: get::<Option<String>>(r, "retracted_by")?.unwrap_or_default(),
            code: get::<Option<String>>(r, "retraction_reason")?.unwrap_or_default(),
        }),
    })
}

/// The outcome of a reading action that conflicts with someone else's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadingOutcome {
    Done(Reading),
    /// Another reader holds the study.
    Conflict(Reading),
    /// No such worklist study.
    Missing,
}

impl Db {
    /// One page of the worklist: up to `limit` rows after `cursor`, in `sort` order.
    pub async fn worklist_page(
        &self,
        filter: &WorklistFilter,
        sort: WorklistSort,
        cursor: Option<WorklistCursor>,
        limit: i64,
    ) -> Result<Vec<WorklistRow>, DbError> {
        // A retracted study has left the worklist (its row is kept).
        let mut clauses: Vec<String> = vec!["w.retracted_at_ms IS NULL".into()];
        let mut args: Vec<Arg> = Vec::new();
        let next = |args: &mut Vec<Arg>, a: Arg| {
            args.push(a);
            format!("${}", args.len())
        };
        if !filter.priorities.is_empty() {
            let list: Vec<String> = filter.priorities.iter().map(|p| next(&mut args, Arg::S(p.clone()))).collect();
            clauses.push(format!("w.priority IN ({})", list.join(", ")));
        }
        for (column, value) in [("w.positive_labels", &filter.finding), ("w.modalities", &filter.modality), ("w.models", &filter.model)] {
            if let Some(v) = value {
                let p = next(&mut args, Arg::S(contains_pattern(v)));
                clauses.push(format!("{column} LIKE {p} ESCAPE '\\'"));
            }
        }
        if let Some(state) = filter.reading {
            let p = next(&mut args, Arg::S(state.as_str().into()));
            clauses.push(format!("w.reading_state = {p}"));
        }
        if let Some(since) = filter.received_since_ms {
            let p = next(&mut args, Arg::I(since));
            clauses.push(format!("w.received_at_ms >= {p}"));
        }
        if let Some(until) = filter.received_until_ms {
            let p = next(&mut args, Arg::I(until));
            clauses.push(format!("w.received_at_ms < {p}"));
        }
        if let Some(c) = cursor {
            let clause = match sort {
                WorklistSort::Priority => {
                    let (a, b, d, e) = (
                        next(&mut args, Arg::I(c.priority_rank)),
                        next(&mut args, Arg::F(c.sort_score)),
                        next(&mut args, Arg::I(c.received_at_ms)),
                        next(&mut args, Arg::I(c.study_id)),
                    );
                    format!("(w.priority_rank, w.sort_score, w.received_at_ms, w.study_id) > ({a}, {b}, {d}, {e})")
                }
                WorklistSort::Newest => {
                    let (a, b) = (next(&mut args, Arg::I(c.received_at_ms)), next(&mut args, Arg::I(c.study_id)));
                    format!("(w.received_at_ms, w.study_id) < ({a}, {b})")
                }
                WorklistSort::Oldest => {
                    let (a, b) = (next(&mut args, Arg::I(c.received_at_ms)), next(&mut args, Arg::I(c.study_id)));
                    format!("(w.received_at_ms, w.study_id) > ({a}, {b})")
                }
            };
            clauses.push(clause);
        }
        let order = match sort {
            WorklistSort::Priority => "w.priority_rank, w.sort_score, w.received_at_ms, w.study_id",
            WorklistSort::Newest => "w.received_at_ms DESC, w.study_id DESC",
            WorklistSort::Oldest => "w.received_at_ms, w.study_id",
        };
        let where_ = format!("WHERE {}", clauses.join(" AND "));
        let limit_p = next(&mut args, Arg::I(limit));
        let sql = format!("SELECT {COLUMNS} FROM worklist w JOIN studies s ON s.id = w.study_id {where_} ORDER BY {order} LIMIT {limit_p}");
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                Arg::I(v) => query.bind(v),
                Arg::F(v) => query.bind(v),
                Arg::S(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(q("select worklist page"))?;
        rows.iter().map(decode).collect()
    }

    /// One study's worklist row, retracted or not.
    pub async fn worklist_row(&self, study_id: i64) -> Result<Option<WorklistRow>, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM worklist w JOIN studies s ON s.id = w.study_id WHERE w.study_id = $1"))
            .bind(study_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select worklist row"))?;
        row.as_ref().map(decode).transpose()
    }

    /// (priority, count) of worklist studies, and (reading state, count), for the page's
    /// header and the metrics. Retracted studies are not on the worklist.
    pub async fn worklist_counts(&self) -> Result<Vec<(String, String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT priority, reading_state, COUNT(*) AS n FROM worklist WHERE retracted_at_ms IS NULL GROUP BY priority, reading_state ORDER BY priority, reading_state",
        )
            .fetch_all(&self.pool)
            .await
            .map_err(q("count worklist"))?;
        rows.iter().map(|r| Ok((get(r, "priority")?, get(r, "reading_state")?, get(r, "n")?))).collect()
    }

    /// Studies that have results but no worklist row (results saved before the worklist
    /// existed): the node adds their rows at start-up.
    pub async fn studies_missing_from_worklist(&self, limit: i64) -> Result<Vec<String>, DbError> {
        sqlx::query_scalar(
            "SELECT s.study_instance_uid FROM studies s WHERE EXISTS (SELECT 1 FROM study_results r WHERE r.study_id = s.id)
             AND NOT EXISTS (SELECT 1 FROM worklist w WHERE w.study_id = s.id) ORDER BY s.id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("select studies missing from the worklist"))
    }

    /// Write a study's row outside a result's transaction (the start-up backfill).
    pub async fn worklist_save(&self, row: &WorklistRow) -> Result<Option<String>, DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let lowered = upsert_in(&mut tx, row, now_ms()).await?;
        tx.commit().await.map_err(q("commit worklist row"))?;
        Ok(lowered)
    }

    /// Claim, mark read or release a study for `reader`, audited in the same transaction
    /// (`reading` entry: who, which study row, what; no patient data). A claim another reader
    /// holds is a conflict; so is marking read or releasing it. Claiming one's own claim again,
    /// or releasing an unclaimed study, changes nothing and succeeds. A retracted study is not
    /// on the worklist: missing.
    pub async fn worklist_reading(&self, study_id: i64, action: ReadingAction, reader: &str) -> Result<ReadingOutcome, DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        // Taking the row's write lock first (PostgreSQL) or the database's (SQLite): two
        // claims of one study are serialised here, and the second sees the first.
        let touched = sqlx::query("UPDATE worklist SET updated_at_ms = updated_at_ms WHERE study_id = $1 AND retracted_at_ms IS NULL")
            .bind(study_id)
            .execute(&mut *tx)
            .await
            .map_err(q("lock worklist row"))?;
        if touched.rows_affected() == 0 {
            return Ok(ReadingOutcome::Missing);
        }
        let row = sqlx::query("SELECT reading_state, reader, reading_at_ms FROM worklist WHERE study_id = $1")
            .bind(study_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("select reading state"))?;
        let current = Reading { state: get::<String>(&row, "reading_state")?.parse()?, reader: get(&row, "reader")?, at_ms: get(&row, "reading_at_ms")? };
        let someone_else = current.state == ReadingState::Claimed && current.reader.as_deref() != Some(reader);
        if someone_else {
            return Ok(ReadingOutcome::Conflict(current));
        }
        let now = now_ms();
        let next = match action {
            ReadingAction::Claim if current.state == ReadingState::Claimed => return Ok(ReadingOutcome::Done(current)),
            ReadingAction::Claim => Reading { state: ReadingState::Claimed, reader: Some(reader.into()), at_ms: Some(now) },
            ReadingAction::MarkRead => Reading { state: ReadingState::Read, reader: Some(reader.into()), at_ms: Some(now) },
            ReadingAction::Release if current.state != ReadingState::Claimed => return Ok(ReadingOutcome::Done(current)),
            ReadingAction::Release => Reading::unread(),
        };
        sqlx::query("UPDATE worklist SET reading_state = $1, reader = $2, reading_at_ms = $3, updated_at_ms = $4 WHERE study_id = $5")
            .bind(next.state.as_str())
            .bind(next.reader.clone())
            .bind(next.at_ms)
            .bind(now)
            .bind(study_id)
            .execute(&mut *tx)
            .await
            .map_err(q("update reading state"))?;
        let details = crate::audit::ReadingChange {
            action: action.as_str().into(),
            reader: reader.to_string(),
            from: current.state.as_str().into(),
            to: next.state.as_str().into(),
        };
        super::audit::append_in(&mut tx, key, &crate::audit::Event::Reading { study: study_id, details }).await?;
        tx.commit().await.map_err(q("commit reading state"))?;
        Ok(ReadingOutcome::Done(next))
    }
}

impl Db {
    /// Every standing (not retracted) row's study id, findings JSON and time from the last
    /// instance to the result: what the performance figures count.
    pub async fn worklist_findings_all(&self) -> Result<Vec<StandingFindings>, DbError> {
        let rows = sqlx::query(
            "SELECT study_id, findings, result_at_ms - received_at_ms AS turnaround_ms, scanner FROM worklist WHERE retracted_at_ms IS NULL ORDER BY study_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("select worklist findings"))?;
        rows.iter()
            .map(|r| {
                Ok(StandingFindings {
                    study_id: get(r, "study_id")?,
                    findings_json: get(r, "findings")?,
                    turnaround_ms: get(r, "turnaround_ms")?,
                    scanner: get(r, "scanner")?,
                })
            })
            .collect()
    }
}

impl Db {
    /// Retract a study's AI results, in one transaction: the row marked retracted (it stays,
    /// leaving every listing), the rejection note's and the correction's outbox rows queued,
    /// the audit entry appended. Nothing is written unless the row exists, is not retracted
    /// and still holds the result the note was built from.
    pub async fn worklist_retract(&self, r: &RetractRecord<'_>) -> Result<RetractOutcome, DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        // The row's write lock first (see `worklist_reading`): a retraction and a new result of
        // the same study are serialised here.
        let touched = sqlx::query("UPDATE worklist SET updated_at_ms = updated_at_ms WHERE study_id = $1")
            .bind(r.study_id)
            .execute(&mut *tx)
            .await
            .map_err(q("lock worklist row"))?;
        if touched.rows_affected() == 0 {
            return Ok(RetractOutcome::Missing);
        }
        let row = sqlx::query("SELECT result_at_ms, retracted_at_ms, retracted_by, retraction_reason FROM worklist WHERE study_id = $1")
            .bind(r.study_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("select worklist retraction"))?;
        if let Some(earlier) = retraction(&row)? {
            return Ok(RetractOutcome::Retracted(earlier));
        }
        if get::<i64>(&row, "result_at_ms")? != r.result_at_ms {
            return Ok(RetractOutcome::Replaced);
        }
        let now = now_ms();
        sqlx::query("UPDATE worklist SET retracted_at_ms = $2, retracted_by = $3, retraction_reason = $4, updated_at_ms = $2 WHERE study_id = $1")
            .bind(r.study_id)
            .bind(now)
            .bind(r.by)
            .bind(r.code)
            .execute(&mut *tx)
            .await
            .map_err(q("retract worklist row"))?;
        for item in r.outbox {
            super::outbox::insert_in(&mut tx, r.node, item, now).await?;
        }
        super::notifications::withdraw_in(&mut tx, r.study_id, now).await?;
        super::audit::append_in(&mut tx, key, r.event).await?;
        if !r.outbox.is_empty() {
            super::wake::notify_in(&mut tx, super::Wake::Outbox).await?;
        }
        tx.commit().await.map_err(q("commit retraction"))?;
        Ok(RetractOutcome::Done(Retraction { at_ms: now, by: r.by.to_string(), code: r.code.to_string() }))
    }
}

impl Db {
    /// Benchmark fixtures only (`triage-node bench-seed-worklist`): per (sealed record, row), a
    /// `ready` study under the record's Study Instance UID, the record, and the row (its
    /// `study_id` is replaced by the new study's); one transaction.
    pub async fn seed_worklist_studies(&self, rows: &[(super::SealedRecord, WorklistRow)]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let now = now_ms();
        for (record, row) in rows {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO studies (study_instance_uid, state, first_received_at_ms, last_received_at_ms, instance_count) VALUES ($1, $2, $3, $3, 1) RETURNING id",
            )
            .bind(&record.study_instance_uid)
            .bind(super::StudyState::Ready.as_str())
            .bind(row.received_at_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("seed study"))?;
            super::reid_map::insert_in(&mut tx, record).await?;
            upsert_in(&mut tx, &WorklistRow { study_id: id, ..row.clone() }, now).await?;
        }
        tx.commit().await.map_err(q("commit seeded worklist"))
    }
}

/// Insert or replace a study's row inside the caller's transaction, keeping its reading state;
/// a retracted row comes back (a new result stands).
/// Returns the priority the study had when the new one is lower (the change is recorded in
/// `lowered_from`, so it is shown, not silent).
pub(crate) async fn upsert_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, row: &WorklistRow, now_ms: i64) -> Result<Option<String>, DbError> {
    // Write before reading: a SQLite transaction that reads first and then writes cannot be
    // upgraded once another connection has committed (SQLITE_BUSY, not retried by the busy
    // timeout); a write first waits for the lock instead. A no-op on a new study.
    sqlx::query("UPDATE worklist SET updated_at_ms = updated_at_ms WHERE study_id = $1")
        .bind(row.study_id)
        .execute(&mut **tx)
        .await
        .map_err(q("lock worklist row"))?;
    let old = sqlx::query("SELECT priority, priority_rank, lowered_from, retracted_at_ms FROM worklist WHERE study_id = $1")
        .bind(row.study_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(q("select worklist row"))?;
    let (exists, lowered, lowered_from) = match &old {
        None => (false, None, None),
        // The priority it had was withdrawn (retracted): the new result lowers nothing.
        Some(r) if get::<Option<i64>>(r, "retracted_at_ms")?.is_some() => (true, None, None),
        Some(r) => {
            let (priority, rank, earlier): (String, i64, Option<String>) = (get(r, "priority")?, get(r, "priority_rank")?, get(r, "lowered_from")?);
            if row.priority_rank > rank {
                // Lowered now: say from what (the highest it ever had, if lowered before).
                let from = earlier.unwrap_or(priority.clone());
                (true, Some(priority), Some(from))
            } else if row.priority_rank == rank {
                (true, None, earlier)
            } else {
                (true, None, None)
            }
        }
    };
    let sql = if exists {
        "UPDATE worklist SET priority = $2, priority_rank = $3, score = $4, sort_score = $5, received_at_ms = $6, result_at_ms = $7, modalities = $8,
                models = $9, positive_labels = $10, demonstration = $11, findings = $12, reasons = $13, lowered_from = $14, updated_at_ms = $15,
                scanner = $16, retracted_at_ms = NULL, retracted_by = NULL, retraction_reason = NULL
         WHERE study_id = $1"
    } else {
        "INSERT INTO worklist (study_id, priority, priority_rank, score, sort_score, received_at_ms, result_at_ms, modalities, models, positive_labels,
                               demonstration, findings, reasons, lowered_from, updated_at_ms, scanner, reading_state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    };
    let mut query = sqlx::query(sql)
        .bind(row.study_id)
        .bind(&row.priority)
        .bind(row.priority_rank)
        .bind(row.score)
        .bind(sort_score(row.priority_rank, row.score))
        .bind(row.received_at_ms)
        .bind(row.result_at_ms)
        .bind(delimited(&row.modalities))
        .bind(delimited(&row.models))
        .bind(delimited(&row.positive_labels))
        .bind(i64::from(row.demonstration))
        .bind(&row.findings_json)
        .bind(&row.reasons_json)
        .bind(lowered_from)
        .bind(now_ms)
        .bind(row.scanner.clone());
    if !exists {
        query = query.bind(ReadingState::Unread.as_str());
    }
    query.execute(&mut **tx).await.map_err(q("save worklist row"))?;
    Ok(lowered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_exactly_and_refuse_garbage() {
        let c = WorklistCursor { priority_rank: 1, sort_score: -0.734_912_345_678_9, received_at_ms: 1_700_000_000_123, study_id: 42 };
        assert_eq!(WorklistCursor::parse(&c.encode()), Some(c));
        for bad in ["", "1.2.3", "1.zz.3.4", "1.0.3.4.5", "a.0.1.2", &format!("0.{:x}.1.2", f64::NAN.to_bits())] {
            assert_eq!(WorklistCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn filter_values_are_matched_whole_with_like_characters_escaped() {
        assert_eq!(contains_pattern("CT"), "%|CT|%");
        assert_eq!(contains_pattern("pleural_effusion"), "%|pleural\\_effusion|%");
        assert_eq!(contains_pattern("50%"), "%|50\\%|%");
        assert_eq!(undelimit(&delimited(&["CR".into(), "DX".into()])), ["CR", "DX"]);
        assert!(undelimit("||").is_empty());
    }
}
