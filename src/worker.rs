//! One contract for every background loop (in the spirit of garage's `Worker`): a worker does
//! one unit of work at a time and says whether more is waiting; it waits for work in a way of
//! its own (a timer, a notification, a channel); the runner does the rest the same way for all.
//!
//! The runner (`Workers`) records each worker's status (idle, busy, error with the last error
//! and when, units done, restarts) where anyone holding the handle can read it; backs off after
//! an error (1 s doubling to a minute); survives a panicking unit (logged as an error, counted,
//! backed off the same way: one bad input must not stop delivery or triage); and stops every
//! worker within an exit deadline.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn, Instrument};

use crate::domain::now_ms;
pub use crate::domain::WorkerState;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

/// What a unit of work found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkState {
    /// More work is waiting: run the next unit at once.
    Busy,
    /// Nothing to do: wait for work.
    Idle,
    /// The worker has finished for good (its input closed).
    Done,
}

pub trait Worker: Send + 'static {
    fn name(&self) -> &'static str;
    /// Do one unit of work. An error is recorded and retried after a backoff.
    fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>>;
    /// Return when there may be work. Dropped (cancelled) at shutdown.
    fn wait_for_work(&mut self) -> BoxFuture<'_, ()>;
    /// At shutdown, within the exit deadline: let in-flight sub-tasks end.
    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What the runner knows of one worker (no patient data: errors name operations and ids).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub name: &'static str,
    pub state: WorkerState,
    pub units: u64,
    pub errors: u64,
    /// Units that panicked (each also counts as an error).
    pub restarts: u64,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<i64>,
}

/// The background workers of a node: spawn, read their status, stop them.
#[derive(Clone)]
pub struct Workers {
    tracker: TaskTracker,
    stop: CancellationToken,
    statuses: Arc<Mutex<Vec<WorkerStatus>>>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers::new()
    }
}

impl Workers {
    pub fn new() -> Workers {
        Workers { tracker: TaskTracker::new(), stop: CancellationToken::new(), statuses: Arc::default() }
    }

    /// Every worker's status, in the order they were spawned.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.statuses.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn spawn(&self, mut worker: impl Worker) {
        let name = worker.name();
        let index = {
            let mut all = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
            all.push(WorkerStatus { name, state: WorkerState::Idle, units: 0, errors: 0, restarts: 0, last_error: None, last_error_at_ms: None });
            all.len() - 1
        };
        let (stop, statuses) = (self.stop.clone(), self.statuses.clone());
        let set = move |f: &dyn Fn(&mut WorkerStatus)| f(&mut statuses.lock().unwrap_or_else(|p| p.into_inner())[index]);
        let span = tracing::info_span!("worker", worker = name);
        self.tracker.spawn(
            async move {
                let mut failures: u32 = 0;
                loop {
                    if stop.is_cancelled() {
                        break;
                    }
                    set(&|s| s.state = WorkerState::Busy);
                    let outcome = tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        outcome = CatchUnwind(AssertUnwindSafe(worker.work())) => outcome,
                    };
                    let failure = match outcome {
                        Ok(Ok(state)) => {
                            failures = 0;
                            set(&|s| {
                                s.units += 1;
                                s.state = WorkerState::Idle;
                            });
                            match state {
                                WorkState::Busy => continue,
                                WorkState::Done => break,
                                WorkState::Idle => {
                                    tokio::select! {
                                        _ = stop.cancelled() => break,
                                        _ = worker.wait_for_work() => continue,
                                    }
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            error!(error = %e, "background work failed; retrying after a pause");
                            (e.to_string(), false)
                        }
                        Err(_) => {
                            error!("background worker panicked; restarting it");
                            ("panicked (see the log)".to_string(), true)
                        }
                    };
                    failures += 1;
                    let (why, panicked) = failure;
                    set(&|s| {
                        s.state = WorkerState::Error;
                        s.errors += 1;
                        s.restarts += u64::from(panicked);
                        s.last_error = Some(why.clone());
                        s.last_error_at_ms = Some(now_ms());
                    });
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff(failures)) => {}
                    }
                }
                worker.finish().await;
                set(&|s| s.state = WorkerState::Stopped);
            }
            .instrument(span),
        );
    }

    /// Stop every worker: a unit in progress or a wait is dropped (units are restartable:
    /// their state is in the database, claimed under leases), then each finishes within
    /// `deadline`. Returns the names of workers still running after it.
    pub async fn shutdown(&self, deadline: Duration) -> Vec<&'static str> {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait()).await.is_ok() {
            return Vec::new();
        }
        let late: Vec<&'static str> = self.statuses().iter().filter(|s| s.state != WorkerState::Stopped).map(|s| s.name).collect();
        warn!(workers = ?late, ?deadline, "background workers did not stop within the exit deadline");
        late
    }
}

/// The pause after the `failures`-th failure in a row: 1 s, doubling, at most a minute.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// A future whose panic becomes `Err` (the unit failed; the worker goes on).
struct CatchUnwind<F>(AssertUnwindSafe<F>);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut inner.0).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Flaky {
        runs: Arc<AtomicUsize>,
    }

    impl Worker for Flaky {
        fn name(&self) -> &'static str {
            "test"
        }
        fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
            Box::pin(async move {
                match self.runs.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => panic!("a bug triggered by one bad input"),
                    2 => Err("the database is away".into()),
                    _ => Ok(WorkState::Done),
                }
            })
        }
        fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }

    /// A unit that panics or fails is run again after a pause, and the status says so; a
    /// worker that is done ends.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_is_restarted() {
        let workers = Workers::new();
        let runs = Arc::new(AtomicUsize::new(0));
        workers.spawn(Flaky { runs: runs.clone() });
        workers.tracker.close();
        tokio::time::timeout(Duration::from_secs(60), workers.tracker.wait()).await.expect("the runner ends once the worker is done");
        assert_eq!(runs.load(Ordering::SeqCst), 4, "two panics and an error, three restarts");
        let s = &workers.statuses()[0];
        assert_eq!((s.state, s.errors, s.restarts, s.units), (WorkerState::Stopped, 3, 2, 1));
        assert_eq!(s.last_error.as_deref(), Some("the database is away"));
    }

    struct Stuck;

    impl Worker for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn work(&mut self) -> BoxFuture<'_, Result<WorkState, WorkerError>> {
            Box::pin(async { Ok(WorkState::Idle) })
        }
        fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
        fn finish(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }

    /// Shutdown is bounded: a worker that does not finish is named, not waited for.
    #[tokio::test(start_paused = true)]
    async fn shutdown_has_a_deadline() {
        let workers = Workers::new();
        workers.spawn(Stuck);
        tokio::task::yield_now().await;
        assert_eq!(workers.shutdown(Duration::from_secs(5)).await, ["stuck"]);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }
}
