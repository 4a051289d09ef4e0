//! The audit trail for an auditor: verify the chain (optionally against a checkpoint kept
//! outside the database), sign a checkpoint of its head, list it.

use super::{audit_key, open, Access, AdminError};
use crate::audit::{Checkpoint, Entry};
use crate::config::Settings;

const WHY: &str = "the audit trail is keyed with the site keys";

/// What a verification found (it fails with `AuditDamaged` otherwise).
#[derive(Debug, Clone)]
pub struct Verified {
    pub entries: usize,
    pub head_hash: String,
    /// The entry a checkpoint named, when one was given and holds.
    pub checkpoint_seq: Option<i64>,
}

/// Check every entry's keyed hash and link, and, with `checkpoint` (a signed line, or a file
/// holding one), that the entry it names is still there unchanged.
pub async fn verify(settings: &Settings, checkpoint: Option<&str>) -> Result<Verified, AdminError> {
    let (entries, head_seq, head_hash) = chain(settings).await?;
    let key = audit_key(settings, WHY)?;
    let verified = crate::audit::verify(&key, &entries, head_seq, &head_hash).map_err(AdminError::AuditDamaged)?;
    let checkpoint_seq = match checkpoint {
        None => None,
        Some(cp) => {
            let text = if std::path::Path::new(cp).is_file() {
                std::fs::read_to_string(cp).map_err(|source| AdminError::Io { what: "reading the checkpoint", path: cp.to_string(), source })?
            } else {
                cp.to_string()
            };
            let cp = Checkpoint::parse(&key, &text).map_err(AdminError::AuditDamaged)?;
            cp.check(&entries).map_err(AdminError::AuditDamaged)?;
            Some(cp.seq)
        }
    };
    Ok(Verified { entries: verified, head_hash, checkpoint_seq })
}

/// A signed checkpoint of the chain's head, to keep outside the database. Never signs a head
/// the chain does not support.
pub async fn head(settings: &Settings) -> Result<String, AdminError> {
    let (entries, head_seq, head_hash) = chain(settings).await?;
    let key = audit_key(settings, WHY)?;
    crate::audit::verify(&key, &entries, head_seq, &head_hash).map_err(AdminError::AuditDamaged)?;
    Ok(Checkpoint { seq: head_seq, hash: head_hash, at_ms: crate::domain::now_ms() }.signed(&key))
}

/// Every entry (they hold no patient data).
pub async fn list(settings: &Settings) -> Result<Vec<Entry>, AdminError> {
    Ok(chain(settings).await?.0)
}

async fn chain(settings: &Settings) -> Result<(Vec<Entry>, i64, String), AdminError> {
    let db = open(settings, Access::Read).await?;
    let chain = db.audit_chain().await;
    db.close().await;
    Ok(chain?)
}
