//! Wake-ups between the nodes of a cluster (PostgreSQL LISTEN/NOTIFY). A transaction that queues
//! work sends a NOTIFY on its kind's channel, which PostgreSQL delivers to every listening node
//! when (and only if) the transaction commits, so the workers of every node start at once instead
//! of at their next poll. The polls stay: a notification lost while a listener reconnects delays
//! work by one poll at most. SQLite: nothing is sent (one node, woken in memory).

use super::{q, DbError};

/// What was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Outbox items (result objects, HL7 reports, operator files).
    Outbox,
    /// Study jobs.
    Jobs,
}

impl Wake {
    pub const ALL: [Wake; 2] = [Wake::Outbox, Wake::Jobs];

    /// The channel, a fixed identifier (NOTIFY takes no parameter).
    pub fn channel(self) -> &'static str {
        match self {
            Wake::Outbox => "triage_outbox",
            Wake::Jobs => "triage_jobs",
        }
    }
}

/// Inside the caller's transaction: tell the other nodes at commit (PostgreSQL only).
pub(crate) async fn notify_in(conn: &mut sqlx::AnyConnection, wake: Wake) -> Result<(), DbError> {
    if conn.backend_name() != "PostgreSQL" {
        return Ok(());
    }
    sqlx::query(match wake {
        Wake::Outbox => "NOTIFY triage_outbox",
        Wake::Jobs => "NOTIFY triage_jobs",
    })
    .execute(&mut *conn)
    .await
    .map_err(q("notify"))?;
    Ok(())
}

/// A connection listening on every channel (PostgreSQL only); reconnects by itself.
pub struct WakeListener {
    inner: sqlx::postgres::PgListener,
}

impl WakeListener {
    /// `None` for SQLite.
    pub async fn connect(url: &str) -> Result<Option<WakeListener>, DbError> {
        if !url.starts_with("postgres") {
            return Ok(None);
        }
        let mut inner = sqlx::postgres::PgListener::connect(url).await.map_err(DbError::Connect)?;
        inner.listen_all(Wake::ALL.map(Wake::channel)).await.map_err(q("listen"))?;
        Ok(Some(WakeListener { inner }))
    }

    /// The next wake-up. After a lost connection the listener reconnects and says `None`: what
    /// was sent meanwhile is unknown, so the caller wakes everything once.
    pub async fn recv(&mut self) -> Result<Option<Wake>, DbError> {
        match self.inner.try_recv().await.map_err(q("wait for a notification"))? {
            None => Ok(None),
            Some(n) => Ok(Wake::ALL.into_iter().find(|w| w.channel() == n.channel())),
        }
    }
}
