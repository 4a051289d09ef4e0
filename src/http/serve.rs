//! The HTTP listener (issue 28): hyper's HTTP/1.1 connections driven here, so that no client,
//! authenticated or not, can hold the descriptors the DICOM side needs. Bounded: connections
//! open at once (`max_connections`, and `max_connections_per_host` per peer address: past
//! either, the connection is answered 503 and closed by a small pool, or just closed past that);
//! the time to send a request head (`header_timeout`, from the accept or the previous response:
//! hyper's header read timeout); the time a connection stays idle after a response
//! (`keep_alive_timeout`: no byte either way and no request running). The request's own time
//! (`request_timeout`) is the router's. At start the soft descriptor limit is raised to the hard
//! one, and `max_connections` is lowered to a quarter of it if need be: the rest stays for DICOM.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::domain::{HostCounts, HostSlot};

/// The connection limits of `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_host: usize,
}

/// HTTP connections may hold at most 1/HTTP_SHARE of the descriptor limit; the rest is for DICOM
/// associations, their store files, the database and the models.
pub const HTTP_SHARE: u64 = 4;
/// HTTP connections allowed however few descriptors the process may open.
const MIN_CONNECTIONS: usize = 8;
/// Connections over a limit answered 503 at the same time (past that, closed at once).
const MAX_REFUSING: usize = 16;
/// How long a refused connection is kept for its client to read the 503.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// At most one warning per this long while connections are refused.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur as u64;
        }
    }
    limit.rlim_cur as u64
}

/// The connections HTTP may hold with `nofile` descriptors: as configured, at most a quarter of
/// them, and never fewer than a few.
pub fn connection_cap(configured: usize, nofile: u64) -> usize {
    let room = nofile / HTTP_SHARE;
    configured.min(usize::try_from(room).unwrap_or(usize::MAX)).max(MIN_CONNECTIONS.min(configured))
}

/// Serve `app` on `listener` within `limits` until `shutdown`; then requests running finish
/// (bounded by the timeouts) and this returns.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: Limits, shutdown: CancellationToken) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let hosts = Arc::new(HostCounts::default());
    let tracker = TaskTracker::new();
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Responses go out as written (a multipart retrieve writes part by part): without this,
        // Nagle's algorithm holds a short last write until the client's delayed ACK, ~40 ms.
        let _ = stream.set_nodelay(true);
        let host = hosts.clone().take(peer.ip(), limits.max_connections_per_host);
        let permit = if host.is_some() { total.clone().try_acquire_owned().ok() } else { None };
        match (host, permit) {
            (Some(host), Some(permit)) => {
                tracker.spawn(connection(stream, peer, app.clone(), limits, shutdown.clone(), (permit, host)));
            }
            (host, _) => {
                let reason = if host.is_none() { "host_limit" } else { "connection_limit" };
                metrics::counter!("triage_http_connections_refused_total", "reason" => reason).increment(1);
                if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    warn!(peer = %peer.ip(), reason, max_connections = limits.max_connections, max_connections_per_host = limits.max_connections_per_host, "HTTP connections refused over the limit (said at most every 10 s)");
                }
                if let Ok(slot) = refusing.clone().try_acquire_owned() {
                    tracker.spawn(refuse(stream, reason, slot));
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    info!("HTTP server stopped");
}

/// One connection: hyper's HTTP/1.1 with the header read timeout, closed when idle past
/// `keep_alive_timeout`, shut down gracefully with the node.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
    slots: (OwnedSemaphorePermit, HostSlot),
) {
    let _slots = slots;
    let _open = OpenGauge::new();
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let router = TowerToHyperService::new(app);
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let running = Running::new(tracked.clone());
        let response = hyper::service::Service::call(&router, req);
        async move {
            let response = response.await;
            drop(running);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = activity.idle(limits.keep_alive_timeout);
    tokio::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(error) = ended {
                    // hyper's reasons (timeouts, parse errors) name no value of the request.
                    debug!(peer = %peer.ip(), %error, "HTTP connection closed");
                }
                return;
            }
            () = &mut idle => {
                debug!(peer = %peer.ip(), "idle HTTP connection closed");
                return;
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Answer 503 with the reason, give the client a moment to read it, close.
async fn refuse(mut stream: TcpStream, reason: &'static str, _slot: OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let why = if reason == "host_limit" { "too many HTTP connections from this address" } else { "too many HTTP connections" };
    let body = format!("{{\"error\":\"{why}; try again shortly\"}}");
    let answer =
        format!("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read until the client closes, so that closing does not reset the answer away.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// The open connections, as the `triage_http_connections_open` gauge.
struct OpenGauge;

impl OpenGauge {
    fn new() -> OpenGauge {
        metrics::gauge!("triage_http_connections_open").increment(1.0);
        OpenGauge
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!("triage_http_connections_open").decrement(1.0);
    }
}

/// What a connection did last: the keep-alive watch reads it.
struct Activity {
    start: Instant,
    /// The last byte read or written, or the last request's end: ms since `start`.
    last_ms: AtomicU64,
    running: AtomicUsize,
    served: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0), running: AtomicUsize::new(0), served: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once the connection has served a request and then, with none running, seen no
    /// byte either way for `keep_alive`. Before its first request the header timeout applies.
    async fn idle(&self, keep_alive: Duration) {
        loop {
            let now = Instant::now();
            let quiet_since = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let between = self.running.load(Ordering::Relaxed) == 0 && self.served.load(Ordering::Relaxed) > 0;
            if between && now >= quiet_since + keep_alive {
                return;
            }
            let next = if between { quiet_since + keep_alive } else { now + keep_alive };
            tokio::time::sleep_until(next.max(now + Duration::from_millis(50))).await;
        }
    }
}

/// A request being handled on a connection (from the head's end to the handler's response).
struct Running(Arc<Activity>);

impl Running {
    fn new(activity: Arc<Activity>) -> Running {
        activity.running.fetch_add(1, Ordering::Relaxed);
        Running(activity)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.served.fetch_add(1, Ordering::Relaxed);
        self.0.touch();
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP stream, noting when bytes move.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_keeps_to_a_quarter_of_the_descriptors() {
        assert_eq!(connection_cap(256, 20_000), 256);
        assert_eq!(connection_cap(256, 1_024), 256);
        assert_eq!(connection_cap(256, 400), 100);
        assert_eq!(connection_cap(256, 16), MIN_CONNECTIONS);
        assert_eq!(connection_cap(4, 16), 4);
        assert_eq!(connection_cap(256, u64::MAX), 256);
    }
}
