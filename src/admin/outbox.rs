//! The outbox for an operator: queue files, list items, queue items again.

use std::path::PathBuf;

use super::AdminError;
use crate::config::Settings;
use crate::db::{Db, OutboxItem, OutboxState};

/// Queue files for a registered AE; each file with its item id (`None`: already queued).
pub async fn add(db: &Db, settings: &Settings, to: &str, files: &[PathBuf]) -> Result<Vec<(PathBuf, Option<i64>)>, AdminError> {
    Ok(crate::delivery::enqueue(db, &settings.node_id(), &super::open_blobs(settings).await?, to, files).await?)
}

/// An item and what its destination said of committing to it.
#[derive(Debug, Clone)]
pub struct ListedItem {
    pub item: OutboxItem,
    pub commitment: Option<String>,
}

/// Items, optionally in one state (`pending`, `sending`, `delivered`, `dead`).
pub async fn list(db: &Db, state: Option<&str>) -> Result<Vec<ListedItem>, AdminError> {
    let state = state
        .map(|s| s.parse::<OutboxState>().map_err(|_| AdminError::Invalid(format!("unknown outbox state {s:?} (pending, sending, delivered or dead)"))))
        .transpose()?;
    let mut commitments = db.commitment_states().await?;
    Ok(db.outbox_list(state).await?.into_iter().map(|item| ListedItem { commitment: commitments.remove(&item.id), item }).collect())
}

/// Queue an item again, or every dead item (`None`); how many were.
pub async fn retry(db: &Db, id: Option<i64>) -> Result<u64, AdminError> {
    Ok(db.outbox_requeue(id).await?)
}
