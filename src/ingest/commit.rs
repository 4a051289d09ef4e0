//! Group commit of the C-STORE path's rows: every association whose instance is durable on disk
//! hands its `instances` row and sealed map record to one committer task, which records
//! whatever is waiting together in one transaction (one WAL sync on SQLite, one commit on
//! PostgreSQL) and answers each caller. A lone sender's row is committed alone, at once (no
//! waiting to fill a batch); while one commit runs, the rows arriving behind it gather for the
//! next, so the cost of durability per instance falls as concurrent senders rise, and SQLite
//! writers never queue on its write lock (whose busy handler sleeps in milliseconds).
//!
//! Owns: the batching and the per-caller outcome. Must not: decide what a row holds (ingest
//! does) or hold SQL (db does).

use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, DbError, InsertOutcome, NewInstance, SealedRecord};

/// Rows committed in one transaction at most.
const MAX_BATCH: usize = 128;

struct Pending {
    new: NewInstance,
    sealed: SealedRecord,
    reply: oneshot::Sender<Result<InsertOutcome, DbError>>,
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

    /// Record `new` with its sealed originals; returns once the transaction holding them has
    /// committed (or failed).
    pub async fn insert(&self, new: NewInstance, sealed: SealedRecord) -> Result<InsertOutcome, DbError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || DbError::Invalid("the ingest committer has stopped".into());
        self.tx.send(Pending { new, sealed, reply }).await.map_err(|_| stopped())?;
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
        let rows: Vec<_> = batch.iter().map(|p| (&p.new, Some(&p.sealed))).collect();
        match db.insert_instances(&rows).await {
            Ok(outcomes) => {
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch.pop().expect("one").reply.send(Err(e));
            }
            // One bad row must not fail the others: each is tried alone, with its own answer.
            Err(error) => {
                tracing::warn!(rows = batch.len(), %error, "a group commit failed; committing its rows one at a time");
                for p in batch {
                    let outcome = db.insert_instance(&p.new, Some(&p.sealed)).await;
                    let _ = p.reply.send(outcome);
                }
            }
        }
    }
}
