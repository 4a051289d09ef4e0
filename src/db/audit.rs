//! The audit trail's storage: appends serialised by the `audit_head` row, on both engines.

use super::{get, q, Db, DbError};
use crate::audit::{entry_mac, Entry, Event};
use crate::domain::now_ms;

impl Db {
    /// Append one entry to the chain.
    pub async fn audit_append(&self, event: &Event) -> Result<Entry, DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let entry = append_in(&mut tx, key, event).await?;
        tx.commit().await.map_err(q("commit audit entry"))?;
        Ok(entry)
    }
}

/// Append inside the caller's transaction, so an entry commits (or not) with what it records.
pub(crate) async fn append_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, key: &[u8; 32], event: &Event) -> Result<Entry, DbError> {
    let (event, subject, details) = (event.name(), event.subject(), event.details());
    let (subject, details) = (subject.as_str(), details.as_str());
    // The UPDATE takes the head row's write lock first: concurrent appends queue here, on
    // SQLite and PostgreSQL alike. RETURNING gives the new seq and the (unchanged) old hash.
    let row =
        sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash").fetch_one(&mut **tx).await.map_err(q("advance audit head"))?;
    let (seq, prev_hash): (i64, String) = (get(&row, "seq")?, get(&row, "hash")?);
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
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut **tx).await.map_err(q("set audit head"))?;
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
