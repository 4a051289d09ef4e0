//! The node's administrative operations as typed functions: the CLI (`main.rs`) parses its
//! arguments, calls one of these and prints what it returns; the HTTP API will call the same.
//! Each operation's rules live here once: validation, auditing (in the same transaction as the
//! change), and which keys and database it needs.
//!
//! Must not: print, exit, or parse command lines.

pub mod ae;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod doctor;
pub mod drift;
pub mod evaluate;
pub mod export;
pub mod feedback;
pub mod model_import;
pub mod notify;
pub mod outbox;
pub mod performance;
pub mod reid;
pub mod report;
pub mod results;
pub mod shadow;
pub mod similar;
pub mod worklist;

use crate::config::Settings;
use crate::db::{Db, DbError};
use crate::delivery::DeliveryError;
use crate::domain::AeTitle;
use crate::net::client::Peer;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with the current state (a study another reader claimed).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("no AE titled {0} is registered")]
    UnknownAe(AeTitle),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("{why}")]
    Keys { why: &'static str, source: crate::deid::KeyError },
    #[error("audit log damaged: {0}")]
    AuditDamaged(crate::audit::VerifyError),
    #[error("{what} {path}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("{0}")]
    Engine(String),
    #[error(transparent)]
    Map(#[from] crate::deid::MapError),
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
    /// Building or reading result objects (a rejection note, the RIS's correction) failed.
    #[error(transparent)]
    Results(#[from] crate::results::ResultsError),
}

/// Whether an operation appends to the audit trail (and so needs the site keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Audited,
}

/// The node's database, for one operation: the data directory is created first (the default
/// SQLite file lives there); `Audited` keys the handle for audit appends.
pub async fn open(settings: &Settings, access: Access) -> Result<Db, AdminError> {
    std::fs::create_dir_all(&settings.storage.data_dir).map_err(|source| AdminError::Io {
        what: "creating the data directory",
        path: settings.storage.data_dir.display().to_string(),
        source,
    })?;
    let db = Db::open(&settings.database_url(), 1).await?;
    Ok(match access {
        Access::Read => db,
        Access::Audited => db.with_audit_key(audit_key(settings, "changes are audited with the site keys")?),
    })
}

/// The node's files (the data directory, or the cluster's bucket), for one operation.
pub async fn open_blobs(settings: &Settings) -> Result<crate::blobs::Blobs, AdminError> {
    let s = &settings.storage;
    Ok(crate::blobs::Blobs::open(&s.data_dir, s.backend, &s.s3).await?)
}

/// The audit trail's key, derived from the site keys.
pub fn audit_key(settings: &Settings, why: &'static str) -> Result<zeroize::Zeroizing<[u8; 32]>, AdminError> {
    Ok(settings.deid.deidentifier().map_err(|source| AdminError::Keys { why, source })?.keys().audit_key())
}

/// A registered AE as a peer we can associate with, calling as our AE title.
pub async fn peer(settings: &Settings, to: &str) -> Result<Peer, AdminError> {
    let ours = settings.dicom.ae_title.clone();
    let tls = crate::net::tls::Connector::from_settings(&settings.dicom.tls).map_err(|e| AdminError::Invalid(e.to_string()))?;
    let db = open(settings, Access::Read).await?;
    let peer = crate::delivery::resolve(&db, to, &ours, std::time::Duration::from_secs(30), &tls).await;
    db.close().await;
    Ok(peer?)
}
