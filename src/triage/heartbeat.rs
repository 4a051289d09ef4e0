//! A claim's heartbeat: renewing an instance pass's or a study job's claim while the work runs,
//! so a short lease only ever expires for a node that died or stalled.

use std::time::Duration;

use tracing::{warn, Instrument};

use crate::db::DbError;
use crate::domain::now_ms;

/// A claim's heartbeat: a task renewing it every third of the lease until `renew` says it is no
/// longer ours; aborted when the work ends, however it ends.
pub(super) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    pub(super) fn start<F, Fut>(lease: Duration, mut renew: F) -> Heartbeat
    where
        F: FnMut(i64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<bool, DbError>> + Send,
    {
        Heartbeat(tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match renew(now_ms() + lease.as_millis() as i64).await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(error) => warn!(%error, "renewing a claim failed"),
                    }
                }
            }
            .in_current_span(),
        ))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
