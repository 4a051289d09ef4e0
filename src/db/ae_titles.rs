//! Registered application entities: modalities allowed to send, PACS to deliver to.

use super::{get, q, Db, DbError};
use crate::domain::{now_ms, AeRole, AeTitle};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredAe {
    pub ae_title: AeTitle,
    /// Host name or IP address the AE must call from (and, for a PACS, where we send).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub role: AeRole,
    pub enabled: bool,
    /// Over TLS only: a caller is refused on the plain port, and we call it over TLS.
    pub tls: bool,
    /// The identity its TLS client certificate must carry (SAN DNS name, IP address or URI, or
    /// subject common name): on the TLS port a caller using this AE title without it is refused.
    pub tls_identity: Option<String>,
}

impl Db {
    /// Add or replace an AE registration.
    pub async fn upsert_ae(&self, ae: &RegisteredAe) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await.map_err(q("acquire"))?;
        upsert(&mut conn, ae).await
    }

    /// Remove an AE registration; returns whether it existed.
    pub async fn remove_ae(&self, title: &AeTitle) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM ae_titles WHERE ae_title = $1").bind(title.as_str()).execute(&self.pool).await.map_err(q("delete ae_title"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Register or update `ae` and append its `ae_add` audit entry, in one transaction: the
    /// change and its record commit together or not at all.
    pub async fn save_ae_audited(&self, ae: &RegisteredAe) -> Result<(), DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        upsert(&mut tx, ae).await?;
        let details = crate::audit::Registration {
            host: ae.host.clone(),
            port: ae.port,
            role: ae.role.to_string(),
            enabled: ae.enabled,
            tls: ae.tls,
            tls_identity: ae.tls_identity.clone(),
        };
        super::audit::append_in(&mut tx, key, &crate::audit::Event::AeAdd { ae: ae.ae_title.to_string(), details }).await?;
        tx.commit().await.map_err(q("commit ae_title"))
    }

    /// Remove an AE registration and append its `ae_remove` audit entry, in one transaction;
    /// returns whether it existed (nothing is recorded when it did not).
    pub async fn remove_ae_audited(&self, title: &AeTitle) -> Result<bool, DbError> {
        let key = self.audit_key()?;
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let done = sqlx::query("DELETE FROM ae_titles WHERE ae_title = $1").bind(title.as_str()).execute(&mut *tx).await.map_err(q("delete ae_title"))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        super::audit::append_in(&mut tx, key, &crate::audit::Event::AeRemove { ae: title.to_string() }).await?;
        tx.commit().await.map_err(q("commit ae_title removal"))?;
        Ok(true)
    }

    pub async fn find_ae(&self, title: &str) -> Result<Option<RegisteredAe>, DbError> {
        let row = sqlx::query("SELECT ae_title, host, port, role, enabled, tls, tls_identity FROM ae_titles WHERE ae_title = $1")
            .bind(title)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select ae_title"))?;
        row.map(|r| decode(&r)).transpose()
    }

    pub async fn list_aes(&self) -> Result<Vec<RegisteredAe>, DbError> {
        let rows = sqlx::query("SELECT ae_title, host, port, role, enabled, tls, tls_identity FROM ae_titles ORDER BY ae_title")
            .fetch_all(&self.pool)
            .await
            .map_err(q("list ae_titles"))?;
        rows.iter().map(decode).collect()
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<RegisteredAe, DbError> {
    let title: String = get(row, "ae_title")?;
    let role: String = get(row, "role")?;
    let port: Option<i64> = get(row, "port")?;
    Ok(RegisteredAe {
        ae_title: AeTitle::parse(&title).map_err(|e| DbError::Invalid(format!("stored AE title: {e}")))?,
        host: get(row, "host")?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        role: role.parse().map_err(DbError::Invalid)?,
        enabled: get::<i64>(row, "enabled")? != 0,
        tls: get::<i64>(row, "tls")? != 0,
        tls_identity: get(row, "tls_identity")?,
    })
}

async fn upsert(conn: &mut sqlx::AnyConnection, ae: &RegisteredAe) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO ae_titles (ae_title, host, port, role, enabled, created_at_ms, tls, tls_identity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (ae_title) DO UPDATE SET host = excluded.host, port = excluded.port, role = excluded.role, enabled = excluded.enabled, tls = excluded.tls,
             tls_identity = excluded.tls_identity",
    )
    .bind(ae.ae_title.as_str())
    .bind(ae.host.clone())
    .bind(ae.port.map(i64::from))
    .bind(ae.role.to_string())
    .bind(i64::from(ae.enabled))
    .bind(now_ms())
    .bind(i64::from(ae.tls))
    .bind(ae.tls_identity.clone())
    .execute(conn)
    .await
    .map_err(q("upsert ae_title"))?;
    Ok(())
}
