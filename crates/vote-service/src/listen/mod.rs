//! Every listener of the project accepts connections the same way, so that no socket can be held
//! for free: a bound on open connections (when it is full, the connection idle the longest makes
//! room for the new one), a deadline for a connection's first request (a client that sends nothing,
//! or only part of an HTTP/2 preface, is closed), an idle timeout, a bound on HTTP/2 streams per
//! connection, and a drain that stops accepting at once.
//!
//! - [`table`]: the open connections, what each is doing, eviction and the per-connection watchdog.
//! - [`io`]: [`Guarded`], the socket every server reads from: it ends when its watchdog closes it.
//! - [`http`]: [`serve_http`], HTTP/1.1 and HTTP/2 cleartext for hyper and axum services.
//! - [`grpc`]: [`incoming`] and [`TrackRequestsLayer`], the same guards for a tonic server.

pub mod grpc;
pub mod http;
pub mod io;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use grpc::{incoming, TrackRequestsLayer};
pub use http::{serve_http, ServeHttp};
pub use io::{ConnectionInfo, Guarded};
pub use table::{CloseReason, ConnectionTable, ListenMetrics};

/// Default: how many connections one listener keeps open.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default: how long a new connection may take to deliver its first request (the whole request
/// head over HTTP/1.1, the preface and a first stream over HTTP/2).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default: how long a connection with no request in progress stays open.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default: how many HTTP/2 streams one connection may have open at once.
pub const DEFAULT_MAX_H2_STREAMS: u32 = 64;
/// Default: how long a drain waits for requests in progress.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The connections of an internal endpoint (metrics, health, admin) kept open at once.
pub const INTERNAL_MAX_CONNECTIONS: usize = 64;
/// The first and the longest pause after a failed `accept` (for example out of file descriptors).
pub const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// The bounds of one listener.
#[derive(Debug, Clone)]
pub struct ListenLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_h2_streams: u32,
    pub drain_timeout: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_h2_streams: DEFAULT_MAX_H2_STREAMS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl ListenLimits {
    /// The limits of an internal endpoint (metrics, health, admin): few connections.
    pub fn internal() -> Self {
        Self { max_connections: INTERNAL_MAX_CONNECTIONS, ..Self::default() }
    }

    /// What is wrong with these limits, one line each (for `--check-config` and start-up).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_connections == 0 {
            problems.push("max-connections: must be at least 1".to_owned());
        }
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            problems.push("handshake-timeout-ms and idle-timeout-ms: must be above 0".to_owned());
        }
        if self.max_h2_streams == 0 {
            problems.push("max-h2-streams: must be at least 1".to_owned());
        }
        problems
    }
}

/// The listener flags every service shares (`#[command(flatten)]`); the environment variables
/// apply to whichever service reads them.
#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// How many connections may be open at once; when full, the connection idle the longest is
    /// closed to make room, and with none idle a new one is refused.
    #[arg(long, env = "VOTES_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long a new connection may take to deliver its first request, in ms (a client that
    /// sends nothing, or only part of a request head or HTTP/2 preface, is closed after it).
    #[arg(long, env = "VOTES_HANDSHAKE_TIMEOUT_MS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64)]
    pub handshake_timeout_ms: u64,
    /// How long a connection with no request in progress stays open, in ms.
    #[arg(long, env = "VOTES_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
    pub idle_timeout_ms: u64,
    /// How many HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "VOTES_MAX_H2_STREAMS", default_value_t = DEFAULT_MAX_H2_STREAMS)]
    pub max_h2_streams: u32,
}

impl ListenArgs {
    pub fn limits(&self) -> ListenLimits {
        ListenLimits {
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_h2_streams: self.max_h2_streams,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// A bound TCP listener with its connection table: what [`serve_http`] and [`incoming`] serve.
pub struct Listener {
    pub(crate) tcp: tokio::net::TcpListener,
    pub(crate) table: Arc<ConnectionTable>,
}

impl Listener {
    /// Binds `addr`; a port that is taken is reported here, at start-up.
    pub async fn bind(addr: SocketAddr, limits: ListenLimits, metrics: ListenMetrics) -> anyhow::Result<Self> {
        let tcp = bind_with_backlog(addr, &limits).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        Ok(Self::from_tcp(tcp, limits, metrics))
    }

    /// Wraps a listener bound elsewhere.
    pub fn from_tcp(tcp: tokio::net::TcpListener, limits: ListenLimits, metrics: ListenMetrics) -> Self {
        Self { tcp, table: Arc::new(ConnectionTable::new(limits, metrics)) }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The table of this listener's connections (open count, saturation).
    pub fn table(&self) -> Arc<ConnectionTable> {
        self.table.clone()
    }
}

/// Binds `addr` with an accept queue as deep as the connection bound (the kernel caps it at
/// `net.core.somaxconn`), so a burst of new connections waits in the queue rather than having
/// its handshakes dropped while the accept loop catches up.
fn bind_with_backlog(addr: SocketAddr, limits: &ListenLimits) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(u32::try_from(limits.max_connections).unwrap_or(u32::MAX).clamp(1024, 65_535))
}

/// The next connection of `tcp`; a failed accept (out of file descriptors, say) is counted and
/// followed by a pause that doubles while failures go on. `None` once shutdown is requested.
pub(crate) async fn accept(tcp: &tokio::net::TcpListener, table: &ConnectionTable, shutdown: &mut crate::Shutdown) -> Option<tokio::net::TcpStream> {
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = shutdown.wait() => return None,
        };
        match accepted {
            Ok((stream, _)) => return Some(stream),
            Err(error) => {
                failures += 1;
                table.metrics.accept_errors.inc();
                let pause = accept_backoff(failures);
                tracing::warn!(%error, ?pause, "accept failed; pausing");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait() => return None,
                }
            }
        }
    }
}

/// The pause before the next `accept` after `failures` failures in a row: doubling from the
/// first to the longest of [`ACCEPT_BACKOFF`].
pub fn accept_backoff(failures: u32) -> Duration {
    let (first, longest) = ACCEPT_BACKOFF;
    first.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(longest)
}

/// Raises this process's soft limit on open files to its hard limit, so a listener's connection
/// bound, not the descriptor limit, decides when clients are turned away. Returns the limit now
/// in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_up_to_the_longest_pause() {
        assert_eq!(accept_backoff(1), Duration::from_millis(5));
        assert_eq!(accept_backoff(2), Duration::from_millis(10));
        assert_eq!(accept_backoff(4), Duration::from_millis(40));
        assert_eq!(accept_backoff(30), Duration::from_secs(1));
    }

    #[test]
    fn limits_name_what_is_wrong() {
        let limits = ListenLimits { max_connections: 0, max_h2_streams: 0, ..ListenLimits::default() };
        let problems = limits.problems().join("; ");
        assert!(problems.contains("max-connections") && problems.contains("max-h2-streams"), "{problems}");
        assert!(ListenLimits::default().problems().is_empty());
    }
}
