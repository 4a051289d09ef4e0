//! The only module with SQL. Returns domain types, never rows.
//!
//! Owns: the connection pool (SQLite in WAL mode by default, PostgreSQL for shared stores),
//! migrations per engine, and one file per aggregate: `ae_titles`, `instances`, `inference`
//! (each instance's pass and its frame outputs), `studies`, `jobs`, `results` (study results
//! and findings), `outbox`, `notifications` (on-call notifications, their escalation and acknowledgement), `drift` (score drift crossings, told once each), `commitment`, `reid_map`, `audit`. Functions that must commit
//! together compose inside one transaction through each aggregate's `*_in` helpers (saving a
//! result queues its objects and finishes its job). Every stored state is an enum of `state`,
//! spelled there once.
//! Queries use `$n` placeholders, which both engines accept, so one statement serves both.
//! Must not: know DICOM encodings, PDUs or files on disk.

mod ae_titles;
mod audit;
mod commitment;
mod drift;
mod embeddings;
mod feedback;
mod inference;
mod instances;
mod jobs;
mod notifications;
mod outbox;
mod procedure_steps;
mod reid_map;
mod results;
mod state;
mod studies;
mod wake;
mod workers;
mod worklist;

pub use crate::domain::AeRole;
pub use ae_titles::RegisteredAe;
pub use drift::{DriftAlert, DriftKey};
pub use embeddings::{LabelVerdicts, StoredEmbedding, StudyEmbedding, YOUNG_MS as EMBEDDINGS_YOUNG_MS};
pub use feedback::{Feedback, FeedbackOutcome, Verdict};
pub use inference::{DetectedBox, FrameOutput, InputStats, PendingInference};
pub use instances::{InsertOutcome, InstanceRef, NewInstance, StoredInstance};
pub use jobs::{ClaimedJob, Job};
pub use notifications::{AckOutcome, AckTarget, NewNotification, Notification};
pub use outbox::{NewOutboxItem, OutboxItem};
pub use procedure_steps::{ProcedureStep, StepCreated};
pub use reid_map::SealedRecord;
pub use results::{Finding, ShadowFinding, ShadowPair, ShadowResult, SpanSlice, StudyResult, StudySave};
pub use state::{InferenceState, JobState, ObjectKind, OutboxState, Priority, ProcedureStepState, ReadingState, ResultState, StudyState};
pub use studies::ReadyStudy;
pub use wake::{Wake, WakeListener};
pub use workers::WorkerReport;
pub use worklist::{
    Notified, Reading, ReadingAction, ReadingOutcome, RetractOutcome, RetractRecord, Retraction, StandingFindings, WorklistCursor, WorklistFilter, WorklistRow,
    WorklistSort,
};

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("connecting to the database: {0}")]
    Connect(sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("database query `{query}` failed: {cause}")]
    Query { query: &'static str, cause: sqlx::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("job {0} was taken over by another claimer after its lease ran out: this run's results are not saved")]
    ClaimLost(i64),
}

pub(crate) fn q(query: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Query { query, cause: source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    engine: Engine,
    /// The key of the audit chain's HMAC (`Keys::audit_key`); appends fail without it.
    audit_key: Option<std::sync::Arc<zeroize::Zeroizing<[u8; 32]>>>,
    /// Audit entries waiting for their group commit (`audit::AuditQueue`), shared by clones.
    audit_queue: std::sync::Arc<audit::AuditQueue>,
}

impl Db {
    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(q("ping"))?;
        Ok(())
    }

    /// Open a pool on `url` (`sqlite:` or `postgres://`) and apply pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("postgres") { Engine::Postgres } else { Engine::Sqlite };
        // A SQLite file that does not exist yet is created (read-write-create), as for the
        // default URL, unless the URL says otherwise.
        let url = match engine {
            Engine::Sqlite if !url.contains("mode=") => format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' }),
            _ => url.to_string(),
        };
        let url = url.as_str();
        let pool = AnyPoolOptions::new()
            .max_connections(if engine == Engine::Sqlite { max_connections.min(4) } else { max_connections })
            .acquire_timeout(Duration::from_secs(30))
            // SQLite is a local file: nothing to reap. Without idle timeout and max lifetime sqlx
            // starts no pool-maintenance task; one was seen spinning at 100% CPU in a CLI command.
            .idle_timeout(if engine == Engine::Sqlite { None } else { Some(Duration::from_secs(600)) })
            .max_lifetime(if engine == Engine::Sqlite { None } else { Some(Duration::from_secs(1800)) })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        // WAL for concurrent readers; FULL so a committed row survives power loss;
                        // a generous busy timeout because several associations commit at once.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(DbError::Connect)?;
        let db = Db { pool, engine, audit_key: None, audit_queue: Default::default() };
        db.migrate().await?;
        Ok(db)
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.engine {
            Engine::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await,
            Engine::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await,
        }
        .map_err(DbError::Migrate)
    }

    /// This handle appends audit entries keyed with `key` (see `audit`).
    pub fn with_audit_key(mut self, key: zeroize::Zeroizing<[u8; 32]>) -> Db {
        self.audit_key = Some(std::sync::Arc::new(key));
        self
    }

    pub(crate) fn audit_key(&self) -> Result<&[u8; 32], DbError> {
        self.audit_key
            .as_deref()
            .map(|k| &**k)
            .ok_or_else(|| DbError::Invalid("the audit trail needs the site keys (TRIAGE_PSEUDONYM_KEY, or deid.pseudonym_key_file)".into()))
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A consistent copy of a SQLite database, taken while the node runs (`VACUUM INTO`: one
    /// read transaction, so every committed row and nothing half-written), written to `path`
    /// (which must not exist). PostgreSQL has its own tools (`pg_dump`).
    pub async fn sqlite_snapshot(&self, path: &std::path::Path) -> Result<(), DbError> {
        if self.engine != Engine::Sqlite {
            return Err(DbError::Invalid("a snapshot is taken of a SQLite database only; for PostgreSQL use pg_dump".into()));
        }
        sqlx::query("VACUUM INTO $1").bind(path.display().to_string()).execute(&self.pool).await.map_err(q("vacuum into"))?;
        Ok(())
    }
}

fn get<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T, DbError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get(column).map_err(q(column))
}
