//! Registered application entities: modalities allowed to send, PACS to deliver to.

use std::fmt;
use std::str::FromStr;

use super::{get, q, Db, DbError};
use crate::domain::{now_ms, AeTitle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeRole {
    Modality,
    Pacs,
}

impl fmt::Display for AeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            AeRole::Modality => "modality",
            AeRole::Pacs => "pacs",
        })
    }
}

impl FromStr for AeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "modality" => Ok(AeRole::Modality),
            "pacs" => Ok(AeRole::Pacs),
            other => Err(format!("unknown role {other:?} (expected modality or pacs)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredAe {
    pub ae_title: AeTitle,
    /// Host name or IP address the AE must call from (and, for a PACS, where we send).
    pub host: Option<String>,
    pub port: Option<u16>,
    pub role: AeRole,
    pub enabled: bool,
}

impl Db {
    /// Add or replace an AE registration.
    pub async fn upsert_ae(&self, ae: &RegisteredAe) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO ae_titles (ae_title, host, port, role, enabled, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (ae_title) DO UPDATE SET host = excluded.host, port = excluded.port, role = excluded.role, enabled = excluded.enabled",
        )
        .bind(ae.ae_title.as_str())
        .bind(ae.host.clone())
        .bind(ae.port.map(i64::from))
        .bind(ae.role.to_string())
        .bind(i64::from(ae.enabled))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(q("upsert ae_title"))?;
        Ok(())
    }

    /// Remove an AE registration; returns whether it existed.
    pub async fn remove_ae(&self, title: &AeTitle) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM ae_titles WHERE ae_title = $1")
            .bind(title.as_str())
            .execute(&self.pool)
            .await
            .map_err(q("delete ae_title"))?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn find_ae(&self, title: &str) -> Result<Option<RegisteredAe>, DbError> {
        let row = sqlx::query("SELECT ae_title, host, port, role, enabled FROM ae_titles WHERE ae_title = $1")
            .bind(title)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("select ae_title"))?;
        row.map(|r| decode(&r)).transpose()
    }

    pub async fn list_aes(&self) -> Result<Vec<RegisteredAe>, DbError> {
        let rows = sqlx::query("SELECT ae_title, host, port, role, enabled FROM ae_titles ORDER BY ae_title")
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
    })
}
