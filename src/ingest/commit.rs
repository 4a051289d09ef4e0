//! Group commit of the C-STORE path: every association whose instance file is synced hands its
//! `instances` row, its sealed map record and the store folder the file was created in to one
//! committer task. The committer takes whatever is waiting together, makes each folder's new
//! entries durable with one fsync of that folder, then records all the rows in one
//! transaction (one WAL sync on SQLite, one commit on PostgreSQL), and answers each caller. A
//! lone sender's instance is committed alone, at once (no waiting to fill a batch); while one
//! commit runs, the instances arriving behind it gather for the next, so the cost of
//! durability per instance falls as concurrent senders rise, and SQLite writers never queue
//! on its write lock (whose busy handler sleeps in milliseconds).
//!
//! Order kept: a file's data, then its folder entry, then its row; an answer only after the
//! row's commit. Owns: the batching and the per-caller outcome. Must not: decide what a row
//! holds (ingest does) or hold SQL (db does).

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, DbError, InsertOutcome, NewInstance, SealedRecord};

/// Rows committed in one transaction at most.
const MAX_BATCH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("syncing the store folder {path}: {cause}")]
    Sync { path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Db(#[from] DbError),
}

struct Pending {
    new: NewInstance,
    sealed: SealedRecord,
    /// The folder whose new entry (the instance's file) must be durable before the row.
    folder: Option<PathBuf>,
    reply: oneshot::Sender<Result<InsertOutcome, CommitError>>,
}

/// A handle on the committer task; it ends when the last handle is dropped, after committing
/// what was handed to it.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Start the committer on the current runtime.
    pub fn start(db: Db) -> GroupCommit {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(db, rx));
        GroupCommit { tx }
    }

    /// Sync `folder` (when given: the store folder of the instance's synced file), then record
    /// `new` with its sealed originals; returns once the transaction holding them has committed
    /// (or failed).
    pub async fn insert(&self, new: NewInstance, sealed: SealedRecord, folder: Option<PathBuf>) -> Result<InsertOutcome, CommitError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || CommitError::Db(DbError::Invalid("the ingest committer has stopped".into()));
        self.tx.send(Pending { new, sealed, folder, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        metrics::histogram!("triage_ingest_commit_batch").record(batch.len() as f64);
        let batch = sync_folders(batch).await;
        if batch.is_empty() {
            continue;
        }
        let rows: Vec<_> = batch.iter().map(|p| (&p.new, Some(&p.sealed))).collect();
        match db.insert_instances(&rows).await {
            Ok(outcomes) => {
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch.into_iter().next().expect("one").reply.send(Err(e.into()));
            }
            // One bad row must not fail the others: each is tried alone, with its own answer.
            Err(error) => {
                tracing::warn!(rows = batch.len(), %error, "a group commit failed; committing its rows one at a time");
                for p in batch {
                    let outcome = db.insert_instance(&p.new, Some(&p.sealed)).await;
                    let _ = p.reply.send(outcome.map_err(CommitError::from));
                }
            }
        }
    }
}

/// fsync each distinct folder of the batch once (on the blocking pool); the instances whose
/// folder could not be synced are answered with the error and left out.
async fn sync_folders(batch: Vec<Pending>) -> Vec<Pending> {
    let mut folders: Vec<PathBuf> = batch.iter().filter_map(|p| p.folder.clone()).collect();
    folders.sort();
    folders.dedup();
    if folders.is_empty() {
        return batch;
    }
    let synced = tokio::task::spawn_blocking(move || {
        folders
            .into_iter()
            .map(|f| {
                let result = std::fs::File::open(&f).and_then(|d| d.sync_all());
                (f, result)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let failed: Vec<(PathBuf, std::io::Error)> = match synced {
        Ok(results) => results.into_iter().filter_map(|(f, r)| r.err().map(|e| (f, e))).collect(),
        Err(e) => batch.iter().filter_map(|p| p.folder.clone()).map(|f| (f, std::io::Error::other(e.to_string()))).collect(),
    };
    if failed.is_empty() {
        return batch;
    }
    let mut kept = Vec::with_capacity(batch.len());
    for p in batch {
        match failed.iter().find(|(f, _)| Some(f) == p.folder.as_ref()) {
            Some((f, e)) => {
                let _ = p.reply.send(Err(CommitError::Sync { path: f.clone(), cause: std::io::Error::new(e.kind(), e.to_string()) }));
            }
            None => kept.push(p),
        }
    }
    kept
}
