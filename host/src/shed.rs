//! Load shedding: the bounds on open connections and on requests running in components, the
//! timeouts that free them from slow clients, and the fast `503` a client gets when they are full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default: how long a client may take to send a request's headers (also how long an idle
/// keep-alive connection stays open).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default: how long a client may take to send a whole request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default: the largest request body the host reads (components apply their own, smaller caps).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default: how many connections may be open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default: how many requests may run in components at once (below the instance pool, 256, so a
/// deploy's check and a burst never meet the pool's own limit).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 192;
/// Default: how long shutdown waits for requests in flight (below `votectl down`'s 15 s grace).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// What `Retry-After` says to a shed client, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// How long after the last shed request `/readyz` keeps saying the host is saturated.
pub const SATURATED_HOLD: Duration = Duration::from_secs(1);
/// How many refused connections may be answered at once; beyond that they are closed at once.
pub const MAX_REFUSALS_IN_PROGRESS: usize = 64;
/// How long answering a refused connection may take (write the 503, read what the client sent).
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// The first and the longest pause after a failed `accept` (for example EMFILE).
pub const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// The bounds and timeouts of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Which bound turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    Connections,
    InFlight,
}

impl Shed {
    pub fn label(self) -> &'static str {
        match self {
            Shed::Connections => "connections",
            Shed::InFlight => "in_flight",
        }
    }
}

/// The two bounds, and when a client was last turned away.
pub struct Gate {
    pub limits: ServeLimits,
    connections: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    started: Instant,
    /// Milliseconds since `started` of the last shed, plus one (0: never).
    last_shed_ms: AtomicU64,
}

/// What `/healthz` and `/readyz` report about the bounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Saturation {
    pub connections: usize,
    pub max_connections: usize,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// True while a bound is full or a client was turned away within the last second.
    pub saturated: bool,
}

impl Gate {
    pub fn new(limits: ServeLimits) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS)),
            limits,
            started: Instant::now(),
            last_shed_ms: AtomicU64::new(0),
        }
    }

    /// A place for one more open connection, if there is one.
    pub fn try_connection(&self) -> Option<OwnedSemaphorePermit> {
        self.try_take(&self.connections)
    }

    /// A place for one more request in a component, if there is one; never waits.
    pub fn try_in_flight(&self) -> Option<OwnedSemaphorePermit> {
        self.try_take(&self.in_flight)
    }

    fn try_take(&self, bound: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        let permit = bound.clone().try_acquire_owned().ok();
        if permit.is_none() {
            let now = self.started.elapsed().as_millis() as u64 + 1;
            self.last_shed_ms.store(now, Ordering::Relaxed);
        }
        permit
    }

    pub fn saturation(&self) -> Saturation {
        let connections = self.limits.max_connections - self.connections.available_permits();
        let in_flight = self.limits.max_in_flight - self.in_flight.available_permits();
        let last = self.last_shed_ms.load(Ordering::Relaxed);
        let recently_shed = last != 0 && self.started.elapsed().as_millis() as u64 + 1 - last < SATURATED_HOLD.as_millis() as u64;
        Saturation {
            connections,
            max_connections: self.limits.max_connections,
            in_flight,
            max_in_flight: self.limits.max_in_flight,
            saturated: recently_shed || connections >= self.limits.max_connections || in_flight >= self.limits.max_in_flight,
        }
    }

    /// Answers a connection over the bound with a fixed `503` and closes it, without letting it
    /// hold anything for longer than [`REFUSAL_TIMEOUT`]; when too many refusals are under way
    /// already, the connection is simply closed.
    pub fn refuse(&self, stream: TcpStream) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            drop(stream);
            return;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer_refused(stream)).await;
            drop(permit);
        });
    }
}

/// The JSON error a shed client reads.
pub fn overloaded_body(shed: Shed) -> serde_json::Value {
    let what = match shed {
        Shed::Connections => "too many open connections",
        Shed::InFlight => "too many requests in progress",
    };
    serde_json::json!({ "error": format!("the host is overloaded ({what}); retry after {RETRY_AFTER_SECONDS} s"), "field": null })
}

/// Writes the `503`, says no more will be written, and reads what the client sent until it
/// closes, so the close does not reset the connection before the client has read the answer.
async fn answer_refused(mut stream: TcpStream) {
    let body = overloaded_body(Shed::Connections).to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_SECONDS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// The pause before the next `accept` after `failures` failures in a row: doubling from the
/// first to the longest of [`ACCEPT_BACKOFF`].
pub fn accept_backoff(failures: u32) -> Duration {
    let (first, longest) = ACCEPT_BACKOFF;
    first.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(longest)
}

/// Raises this process's soft limit on open files to its hard limit, so the connection bound and
/// not the descriptor limit decides when clients are turned away. Returns the limit now in force.
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

    #[tokio::test]
    async fn a_full_bound_sheds_and_reports_saturation() {
        let gate = Gate::new(ServeLimits { max_in_flight: 2, ..ServeLimits::default() });
        let (a, b) = (gate.try_in_flight(), gate.try_in_flight());
        assert!(a.is_some() && b.is_some());
        assert!(gate.saturation().saturated, "a full bound is saturation");
        assert!(gate.try_in_flight().is_none(), "the third request is shed");
        drop((a, b));
        let after = gate.saturation();
        assert_eq!(after.in_flight, 0);
        assert!(after.saturated, "saturated for a while after shedding");
    }

    #[test]
    fn the_overloaded_body_has_no_field() {
        let body = overloaded_body(Shed::InFlight);
        assert!(body["error"].as_str().unwrap().contains("retry after 1 s"));
        assert!(body["field"].is_null());
    }
}
