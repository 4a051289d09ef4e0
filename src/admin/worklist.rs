//! The reading worklist as the CLI and the HTTP API serve it: pages in reading order (keyset
//! cursors), one study's view, and the reading state. Patients are named only when the caller
//! passes the keys (an authenticated user of the API): their records are opened in memory from
//! the sealed map, and each page or study that names patients is one `worklist_view` audit
//! entry (who, which study rows; no patient data), unless the same user was shown the same
//! studies in the last ten minutes (the page's auto-refresh): that view is already recorded.

use std::collections::HashMap;

use serde::Serialize;

use super::AdminError;
use crate::db::{Db, Reading, ReadingAction, ReadingOutcome, WorklistCursor, WorklistFilter, WorklistRow, WorklistSort};
use crate::deid::Keys;
use crate::results::worklist::WorklistEntry;

/// Rows per page at most.
pub const MAX_LIMIT: i64 = 500;

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub filter: WorklistFilter,
    pub sort: WorklistSort,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: i64,
}

/// Who the study belongs to, as the PACS and the RIS know it (re-identified).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Patient {
    pub name: Option<String>,
    pub id: Option<String>,
    pub issuer: Option<String>,
    pub accession: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delivery {
    pub kind: String,
    pub state: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReadingView {
    pub state: String,
    pub reader: Option<String>,
    pub at_ms: Option<i64>,
}

impl From<&Reading> for ReadingView {
    fn from(r: &Reading) -> Self {
        ReadingView { state: r.state.as_str().into(), reader: r.reader.clone(), at_ms: r.at_ms }
    }
}

/// A retraction as the API shows it (the admin's reason is in the audit trail only).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetractionView {
    pub at_ms: i64,
    pub by: String,
    /// The rejection note's title code: 113001 (quality) or 113037 (patient safety).
    pub code: String,
}

impl From<&crate::db::Retraction> for RetractionView {
    fn from(r: &crate::db::Retraction) -> Self {
        RetractionView { at_ms: r.at_ms, by: r.by.clone(), code: r.code.clone() }
    }
}

/// A study's on-call notification as the worklist shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationView {
    pub notified_at_ms: Option<i64>,
    pub acknowledged_at_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
    /// From the study's last instance received to the first notification delivered.
    pub time_to_notification_ms: Option<i64>,
    /// From the study's last instance received to the acknowledgement.
    pub time_to_acknowledgement_ms: Option<i64>,
}

impl NotificationView {
    /// None when the study was never notified.
    pub fn of(row: &WorklistRow) -> Option<NotificationView> {
        let n = &row.notified;
        if n.at_ms.is_none() && n.acknowledged_at_ms.is_none() {
            return None;
        }
        let since_last = |t: Option<i64>| t.map(|t| (t - row.received_at_ms).max(0));
        Some(NotificationView {
            notified_at_ms: n.at_ms,
            acknowledged_at_ms: n.acknowledged_at_ms,
            acknowledged_by: n.acknowledged_by.clone(),
            time_to_notification_ms: since_last(n.at_ms),
            time_to_acknowledgement_ms: since_last(n.acknowledged_at_ms),
        })
    }
}

/// One worklist row.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    #[serde(flatten)]
    pub entry: WorklistEntry,
    pub modalities: Vec<String>,
    pub models: Vec<String>,
    /// The priority a newer analysis lowered this study from.
    pub lowered_from: Option<String>,
    pub reading: ReadingView,
    /// The result objects' (SR, SC, HL7) delivery, by kind and state.
    pub deliveries: Vec<Delivery>,
    /// An admin retracted the study's AI results (only a retracted row, read by id, has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retraction: Option<RetractionView>,
    /// The on-call notification: when it first reached someone and its acknowledgement, with
    /// the times from the study's last instance (absent: nobody was notified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationView>,
    /// Only for an authenticated user of the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<Patient>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub items: Vec<Item>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Whom to name patients for: the keys to open the sealed map, the user (for the audit), and
/// the views already recorded.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub keys: &'a Keys,
    pub user: &'a str,
    pub recorded: &'a RecordedViews,
}

/// The views recorded in the audit trail lately, by (user, studies): the page reloads the same
/// rows for the same reader every few seconds, and that disclosure is already in the trail, so
/// a repeat within `REPEAT_WINDOW` is not recorded again. Anything else (another user, another
/// study, later) is.
#[derive(Default)]
pub struct RecordedViews {
    seen: std::sync::Mutex<HashMap<[u8; 32], i64>>,
}

/// How long a recorded view covers its repeats.
pub const REPEAT_WINDOW_MS: i64 = 10 * 60 * 1000;

impl RecordedViews {
    fn key(user: &str, ids: &[i64]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        for id in sorted {
            h.update(id.to_le_bytes());
        }
        h.finalize().into()
    }

    fn recorded_recently(&self, key: &[u8; 32], now: i64) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(key).is_some_and(|at| now - at < REPEAT_WINDOW_MS)
    }

    fn remember(&self, key: [u8; 32], now: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, at| now - *at < REPEAT_WINDOW_MS);
        }
        seen.insert(key, now);
    }
}

/// One page of the worklist.
pub async fn page(db: &Db, viewer: Option<Viewer<'_>>, req: &PageRequest) -> Result<Page, AdminError> {
    if !(1..=MAX_LIMIT).contains(&req.limit) {
        return Err(AdminError::Invalid(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let cursor = match &req.cursor {
        None => None,
        Some(c) => Some(WorklistCursor::parse(c).ok_or_else(|| AdminError::Invalid("cursor is not one this node returned".into()))?),
    };
    // One row more than asked says whether there is a next page.
    let mut rows = db.worklist_page(&req.filter, req.sort, cursor, req.limit + 1).await?;
    let more = rows.len() as i64 > req.limit;
    rows.truncate(req.limit as usize);
    let next_cursor = if more { rows.last().map(|r| WorklistCursor::after(r).encode()) } else { None };
    let items = items(db, viewer, &rows).await?;
    Ok(Page { items, next_cursor })
}

/// The items of `rows`, with their deliveries and (for a viewer) their patients.
pub async fn items(db: &Db, viewer: Option<Viewer<'_>>, rows: &[WorklistRow]) -> Result<Vec<Item>, AdminError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.study_id).collect();
    let mut deliveries: HashMap<i64, Vec<Delivery>> = HashMap::new();
    for (study, kind, state, count) in db.outbox_states_of(&ids).await? {
        deliveries.entry(study).or_default().push(Delivery { kind, state, count });
    }
    let patients = match viewer {
        Some(v) => patients(db, v, rows).await?,
        None => HashMap::new(),
    };
    Ok(rows
        .iter()
        .map(|r| Item {
            entry: WorklistEntry::from_row(r),
            modalities: r.modalities.clone(),
            models: r.models.clone(),
            lowered_from: r.lowered_from.clone(),
            reading: ReadingView::from(&r.reading),
            deliveries: deliveries.remove(&r.study_id).unwrap_or_default(),
            retraction: r.retraction.as_ref().map(RetractionView::from),
            notification: NotificationView::of(r),
            patient: viewer.map(|_| patients.get(&r.study_instance_uid).cloned().unwrap_or(Patient { name: None, id: None, issuer: None, accession: None })),
        })
        .collect())
}

/// The patients of `rows`, opened from the sealed map, recorded as one audit entry.
async fn patients(db: &Db, viewer: Viewer<'_>, rows: &[WorklistRow]) -> Result<HashMap<String, Patient>, AdminError> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let uids: Vec<String> = rows.iter().map(|r| r.study_instance_uid.clone()).collect();
    let records = db.reid_records_for_studies(&uids).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.study_id).collect();
    // Recorded before anything is shown: a view that cannot be audited names no one.
    let key = RecordedViews::key(viewer.user, &ids);
    let now = crate::domain::now_ms();
    if !viewer.recorded.recorded_recently(&key, now) {
        let details = crate::audit::Viewed { user: viewer.user.to_string(), studies: ids.clone(), opened: records.len() as u64 };
        db.audit_append(&crate::audit::Event::WorklistView { user: viewer.user.to_string(), details }).await?;
        viewer.recorded.remember(key, now);
    }
    let mut out = HashMap::new();
    for record in &records {
        let o = crate::deid::open(viewer.keys, record)?;
        out.insert(
            record.study_instance_uid.clone(),
            Patient { name: o.patient_name.clone(), id: o.patient_id.clone(), issuer: o.issuer_of_patient_id.clone(), accession: o.accession_number.clone() },
        );
    }
    Ok(out)
}

/// A study's row (retracted or not), or None.
pub async fn row(db: &Db, study_id: i64) -> Result<Option<WorklistRow>, AdminError> {
    Ok(db.worklist_row(study_id).await?)
}

/// Every model's result of the study a row is about (findings included).
pub async fn results(db: &Db, row: &WorklistRow) -> Result<Vec<crate::db::StudyResult>, AdminError> {
    Ok(db.study_results(&row.study_instance_uid).await?)
}

/// The study's result objects, heatmaps then reports, newest first within each kind: what the
/// API's `/objects/{n}` counts.
pub async fn result_objects(db: &Db, study_id: i64) -> Result<Vec<(crate::db::ObjectKind, String)>, AdminError> {
    let mut out = Vec::new();
    for kind in [crate::db::ObjectKind::Sr, crate::db::ObjectKind::Sc] {
        for path in db.outbox_study_paths(study_id, kind).await? {
            out.push((kind, path));
        }
    }
    Ok(out)
}

/// A stored instance (a finding's key image) by its row id, or None once it is gone.
pub async fn instance(db: &Db, instance_id: i64) -> Result<Option<crate::db::InstanceRef>, AdminError> {
    Ok(db.instance_ref(instance_id).await?)
}

/// Claim, mark read or release; a conflicting claim is `AdminError::Conflict`.
pub async fn reading(db: &Db, study_id: i64, action: ReadingAction, user: &str) -> Result<ReadingView, AdminError> {
    match db.worklist_reading(study_id, action, user).await? {
        ReadingOutcome::Done(r) => Ok(ReadingView::from(&r)),
        ReadingOutcome::Conflict(r) => {
            Err(AdminError::Conflict(format!("claimed by {} since {}", r.reader.as_deref().unwrap_or("another reader"), r.at_ms.unwrap_or(0))))
        }
        ReadingOutcome::Missing => Err(AdminError::NotFound(format!("no worklist study {study_id}"))),
    }
}

/// Add the rows of studies triaged before the worklist table existed; returns how many.
pub async fn backfill(db: &Db) -> Result<usize, AdminError> {
    let mut added = 0;
    loop {
        let uids = db.studies_missing_from_worklist(200).await?;
        if uids.is_empty() {
            return Ok(added);
        }
        for uid in &uids {
            let results = db.study_results(uid).await?;
            let Some(entry) = crate::results::worklist::entries(&results).into_iter().next() else { continue };
            let modalities = db.study_modalities(entry.study_id).await?;
            db.worklist_save(&entry.to_row(modalities)).await?;
            added += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_a_repeat_only_for_the_same_user_and_studies_within_the_window() {
        let r = RecordedViews::default();
        let k = RecordedViews::key("dr.grey", &[3, 1, 2]);
        assert!(!r.recorded_recently(&k, 1_000));
        r.remember(k, 1_000);
        assert!(r.recorded_recently(&RecordedViews::key("dr.grey", &[1, 2, 3]), 1_000 + REPEAT_WINDOW_MS - 1), "order does not matter");
        assert!(!r.recorded_recently(&k, 1_000 + REPEAT_WINDOW_MS), "the window ends");
        assert!(!r.recorded_recently(&RecordedViews::key("dr.house", &[1, 2, 3]), 1_001), "another user");
        assert!(!r.recorded_recently(&RecordedViews::key("dr.grey", &[1, 2, 4]), 1_001), "another study");
    }
}
