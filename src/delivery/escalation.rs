//! The worker that escalates on-call notifications nobody acknowledged in time
//! (`results::escalate`): it looks every second (a query on an index), so a chain escalates
//! within about a second of its deadline, on whichever node looks first.

use std::time::Duration;

use crate::db::Db;
use crate::domain::now_ms;
use crate::results::Publisher;
use crate::worker::{BoxFuture, WorkState, Worker, WorkerError};

/// How often the worker looks for notifications due.
const EVERY: Duration = Duration::from_secs(1);

pub struct Escalator {
    db: Db,
    publisher: Publisher,
}

impl Escalator {
    pub fn new(db: Db, publisher: Publisher) -> Escalator {
        Escalator { db, publisher }
    }
}

impl Worker for Escalator {
    fn name(&self) -> &'static str {
        "notification escalation"
    }

    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
        Box::pin(async move {
            let n = crate::results::escalate::escalate_due(&self.db, &self.publisher, now_ms()).await?;
            Ok(if n > 0 { WorkState::Busy } else { WorkState::Idle })
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(EVERY))
    }
}
