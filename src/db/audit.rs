//! The audit trail's storage: appends serialised by the `audit_head` row, on both engines.
//!
//! `audit_append` is a group commit: the entries of callers that wait at the same moment are
//! appended in one transaction, so they share one sync of the database (a synced SQLite WAL
//! commit costs milliseconds on a slow disk; every disclosing query and retrieve makes one).
//! Each caller returns only once the transaction holding its entry has committed, so "recorded
//! before answered" holds for every one of them.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{get, q, Db, DbError};
use crate::audit::{entry_mac, Entry, Event};
use crate::domain::now_ms;

/// An entry waiting for its commit, and where its caller waits for the outcome.
type Waiting = (Event, oneshot::Sender<Result<Entry, String>>);

/// The entries waiting for the next audit commit, and the lock its committer holds.
#[derive(Default)]
pub(crate) struct AuditQueue {
    waiting: std::sync::Mutex<Vec<Waiting>>,
    committing: Arc<tokio::sync::Mutex<()>>,
    /// Audit transactions committed (each holding one or more entries).
    commits: std::sync::atomic::AtomicU64,
}

impl Db {
    /// Append one entry to the chain; returns once it is committed (with the entries of other
    /// callers that waited at the same time, in one transaction).
    pub async fn audit_append(&self, event: &Event) -> Result<Entry, DbError> {
        self.audit_key()?;
        let (done, mut result) = oneshot::channel();
        self.audit_queue.waiting.lock().unwrap_or_else(|p| p.into_inner()).push((event.clone(), done));
        let committing = self.audit_queue.committing.clone().lock_owned().await;
        match result.try_recv() {
            Ok(outcome) => return outcome.map_err(DbError::Invalid), // committed by the caller before us
            Err(oneshot::error::TryRecvError::Closed) => return Err(DbError::Invalid("the audit commit did not finish".into())),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        // This caller commits everything waiting now, its own entry among it. The commit runs
        // as its own task: a caller that goes away does not cancel the others' entries.
        let batch = std::mem::take(&mut *self.audit_queue.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        let db = self.clone();
        let task = tokio::spawn(async move {
            let _committing = committing;
            let events: Vec<&Event> = batch.iter().map(|(e, _)| e).collect();
            let outcome = db.append_batch(&events).await;
            match outcome {
                Ok(entries) => {
                    for ((_, done), entry) in batch.into_iter().zip(entries) {
                        let _ = done.send(Ok(entry));
                    }
                }
                Err(error) => {
                    let error = error.to_string();
                    for (_, done) in batch {
                        let _ = done.send(Err(error.clone()));
                    }
                }
            }
        });
        let _ = task.await;
        match result.await {
            Ok(outcome) => outcome.map_err(DbError::Invalid),
            Err(_) => Err(DbError::Invalid("the audit commit did not finish".into())),
        }
    }

    /// Append `events` in order in one transaction: the head row advanced once for all of them
    /// (its lock taken first, as `append_in` does), each entry chained to the one before.
    async fn append_batch(&self, events: &[&Event]) -> Result<Vec<Entry>, DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let row = sqlx::query("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash")
            .bind(events.len() as i64)
            .fetch_one(&mut *tx)
            .await
            .map_err(q("advance audit head"))?;
        let (last, mut prev_hash): (i64, String) = (get(&row, "seq")?, get(&row, "hash")?);
        let mut entries = Vec::with_capacity(events.len());
        for (seq, event) in (last + 1 - events.len() as i64..).zip(events) {
            let entry = insert_entry(&mut tx, key, seq, prev_hash, event).await?;
            prev_hash = entry.hash.clone();
            entries.push(entry);
        }
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&prev_hash).execute(&mut *tx).await.map_err(q("set audit head"))?;
        tx.commit().await.map_err(q("commit audit entries"))?;
        self.audit_queue.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::histogram!("triage_audit_commit_batch").record(entries.len() as f64);
        Ok(entries)
    }
}

/// Append inside the caller's transaction, so an entry commits (or not) with what it records.
pub(crate) async fn append_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, key: &[u8; 32], event: &Event) -> Result<Entry, DbError> {
    // The UPDATE takes the head row's write lock first: concurrent appends queue here, on
    // SQLite and PostgreSQL alike. RETURNING gives the new seq and the (unchanged) old hash.
    let row =
        sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash").fetch_one(&mut **tx).await.map_err(q("advance audit head"))?;
    let (seq, prev_hash): (i64, String) = (get(&row, "seq")?, get(&row, "hash")?);
    let entry = insert_entry(tx, key, seq, prev_hash, event).await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&entry.hash).execute(&mut **tx).await.map_err(q("set audit head"))?;
    Ok(entry)
}

/// Insert entry `seq` of the chain after `prev_hash` (the head row is the caller's to update).
async fn insert_entry(tx: &mut sqlx::Transaction<'_, sqlx::Any>, key: &[u8; 32], seq: i64, prev_hash: String, event: &Event) -> Result<Entry, DbError> {
    let (event, subject, details) = (event.name(), event.subject(), event.details());
    let (subject, details) = (subject.as_str(), details.as_str());
    let at_ms = now_ms();
    let hash = entry_mac(key, &prev_hash, seq, at_ms, event, subject, details);
    sqlx::query("INSERT INTO audit_log (seq, at_ms, event, subject, details, prev_hash, hash, keyed) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)")
        .bind(seq)
        .bind(at_ms)
        .bind(event)
        .bind(subject)
        .bind(details)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await
        .map_err(q("insert audit entry"))?;
    Ok(Entry { seq, at_ms, event: event.into(), subject: subject.into(), details: details.into(), prev_hash, hash, keyed: true })
}

impl Db {
    /// Append a `deidentify` entry for each stored instance that has none yet (at most `limit`),
    /// in one transaction, and mark each with its entry's sequence number. The head row is
    /// locked before the instances are read, so nodes sharing a database never audit one twice.
    pub async fn audit_new_instances(&self, limit: i64) -> Result<usize, DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1").execute(&mut *tx).await.map_err(q("lock audit head"))?;
        let rows = sqlx::query(
            "SELECT id, sop_instance_uid, calling_ae_title, received_at_ms, excluded_reason, deid_method
             FROM instances WHERE audit_seq IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(q("select unaudited instances"))?;
        for row in &rows {
            let id: i64 = get(row, "id")?;
            let uid: String = get(row, "sop_instance_uid")?;
            let excluded: Option<String> = get(row, "excluded_reason")?;
            let method: Option<String> = get(row, "deid_method")?;
            let details = crate::audit::Deidentified {
                instance_id: Some(id),
                calling_ae: Some(get::<String>(row, "calling_ae_title")?),
                received_at_ms: Some(get::<i64>(row, "received_at_ms")?),
                export: false,
                method: method.and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok()).unwrap_or_default(),
                pixels: excluded.map_or("kept".to_string(), |why| format!("not kept: {why}")),
            };
            let entry = append_in(&mut tx, key, &Event::Deidentify { instance: uid.clone(), details }).await?;
            sqlx::query("UPDATE instances SET audit_seq = $1 WHERE id = $2")
                .bind(entry.seq)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(q("mark instance audited"))?;
        }
        tx.commit().await.map_err(q("commit audit entries"))?;
        Ok(rows.len())
    }

    /// Every entry in sequence order, and the head (seq, hash).
    pub async fn audit_chain(&self) -> Result<(Vec<Entry>, i64, String), DbError> {
        let rows = sqlx::query("SELECT seq, at_ms, event, subject, details, prev_hash, hash, keyed FROM audit_log ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(q("read audit log"))?;
        let entries = rows
            .iter()
            .map(|r| {
                Ok(Entry {
                    seq: get(r, "seq")?,
                    at_ms: get(r, "at_ms")?,
                    event: get(r, "event")?,
                    subject: get(r, "subject")?,
                    details: get(r, "details")?,
                    prev_hash: get(r, "prev_hash")?,
                    hash: get(r, "hash")?,
                    keyed: get::<i64>(r, "keyed")? != 0,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.pool).await.map_err(q("read audit head"))?;
        Ok((entries, get(&head, "seq")?, get(&head, "hash")?))
    }
}

impl Db {
    /// Up to `limit` entries after `after`, in sequence order. An entry's sequence number is
    /// taken under the head row's lock and committed before the next one can be taken, so
    /// what this reads never has a gap that a later commit fills.
    pub async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<Entry>, DbError> {
        let rows = sqlx::query("SELECT seq, at_ms, event, subject, details, prev_hash, hash, keyed FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(q("read audit entries to export"))?;
        rows.iter()
            .map(|r| {
                Ok(Entry {
                    seq: get(r, "seq")?,
                    at_ms: get(r, "at_ms")?,
                    event: get(r, "event")?,
                    subject: get(r, "subject")?,
                    details: get(r, "details")?,
                    prev_hash: get(r, "prev_hash")?,
                    hash: get(r, "hash")?,
                    keyed: get::<i64>(r, "keyed")? != 0,
                })
            })
            .collect()
    }

    /// The last entry the audit export delivered (0: none yet).
    pub async fn audit_export_position(&self) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT seq FROM audit_export WHERE id = 1").fetch_one(&self.pool).await.map_err(q("read audit export position"))?;
        get(&row, "seq")
    }

    /// Record that every entry up to `seq` was delivered. Never moves back.
    pub async fn set_audit_export_position(&self, seq: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE audit_export SET seq = $1, updated_at_ms = $2 WHERE id = 1 AND seq < $1")
            .bind(seq)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(q("advance audit export position"))?;
        Ok(())
    }

    /// The (de-identified) Study Instance UID and SOP Class UID of a stored instance, by its
    /// (de-identified) SOP Instance UID.
    pub async fn instance_study(&self, sop_instance_uid: &str) -> Result<Option<(String, String)>, DbError> {
        let row = sqlx::query("SELECT study_instance_uid, sop_class_uid FROM instances WHERE sop_instance_uid = $1")
            .bind(sop_instance_uid)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read an instance's study"))?;
        row.map(|r| Ok((get(&r, "study_instance_uid")?, get(&r, "sop_class_uid")?))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    async fn db(dir: &std::path::Path) -> Db {
        Db::open(&format!("sqlite://{}", dir.join("t.db").display()), 4).await.unwrap().with_audit_key(zeroize::Zeroizing::new([7; 32]))
    }

    /// Appends that wait together share one transaction; each caller gets its own entry, in the
    /// order they queued, and the chain verifies.
    #[tokio::test]
    async fn appends_waiting_together_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        db.audit_append(&Event::AeRemove { ae: "FIRST".into() }).await.unwrap();
        assert_eq!(db.audit_queue.commits.load(Ordering::Relaxed), 1);
        // Hold the committer's lock while 16 callers queue, as a commit in progress would.
        let held = db.audit_queue.committing.clone().lock_owned().await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let caller = db.clone();
            tasks.push(tokio::spawn(async move { caller.audit_append(&Event::AeRemove { ae: format!("AE{i}") }).await.unwrap() }));
            while db.audit_queue.waiting.lock().unwrap().len() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        let mut seqs = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let entry = t.await.unwrap();
            assert_eq!(entry.subject, format!("AE{i}"));
            seqs.push(entry.seq);
        }
        assert_eq!(seqs, (2..18).collect::<Vec<_>>(), "in the order queued");
        assert_eq!(db.audit_queue.commits.load(Ordering::Relaxed), 2, "16 entries, one commit");
        let (entries, head_seq, head_hash) = db.audit_chain().await.unwrap();
        assert_eq!(crate::audit::verify(&[7; 32], &entries, head_seq, &head_hash), Ok(17));
    }

    /// Not a test: entries per second, one caller at a time and 16 at once (`cargo test --lib
    /// audit_commit_rate -- --ignored --nocapture`; set TMPDIR to the disk being measured).
    #[tokio::test]
    #[ignore]
    async fn audit_commit_rate() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        let n = 64;
        let started = std::time::Instant::now();
        for i in 0..n {
            db.audit_append(&Event::AeRemove { ae: format!("S{i}") }).await.unwrap();
        }
        let serial = started.elapsed().as_secs_f64() * 1000.0 / n as f64;
        let (commits, started) = (db.audit_queue.commits.load(Ordering::Relaxed), std::time::Instant::now());
        let tasks: Vec<_> = (0..16)
            .map(|c| {
                let db = db.clone();
                tokio::spawn(async move {
                    for i in 0..n / 4 {
                        db.audit_append(&Event::AeRemove { ae: format!("C{c}-{i}") }).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let concurrent = started.elapsed().as_secs_f64() * 1000.0 / (n * 4) as f64;
        let batches = db.audit_queue.commits.load(Ordering::Relaxed) - commits;
        println!("one caller: {serial:.3} ms per entry; 16 callers: {concurrent:.3} ms per entry, {:.1} entries per commit", (n * 4) as f64 / batches as f64);
    }
}
