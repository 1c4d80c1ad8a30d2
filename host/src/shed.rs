//! Load shedding: the bound on requests running in components and on request bodies held in
//! memory, the timeouts that free them from slow clients, and the fast `503` a client gets when
//! they are full. Connections are bounded by the guarded listener ([`vote_service::listen`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vote_service::listen::ConnectionTable;

/// Default: how long a client may take to send a request's headers, and a new connection its
/// first request (also how long an idle HTTP/1.1 keep-alive connection stays open).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default: how long a client may take to send a whole request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default: the largest request body the host reads (components apply their own, smaller caps).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default: how many bytes of request bodies may be held in memory at once, over every
/// connection and stream (a body read past it gets a fast `503`).
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default: how many connections may be open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = vote_service::listen::DEFAULT_MAX_CONNECTIONS;
/// Default: how many requests may run in components at once (below the instance pool, 256, so a
/// deploy's check and a burst never meet the pool's own limit).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 192;
/// Default: how many requests may wait for a place in a component when all are taken; past it a
/// request gets the fast `503` at once.
pub const DEFAULT_MAX_QUEUED: usize = 1024;
/// Default: how long a request waits in the queue before it gets the `503`.
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Default: how long shutdown waits for requests in flight (below `votectl down`'s 15 s grace).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// What `Retry-After` says to a shed client, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = vote_service::listen::http::RETRY_AFTER_SECONDS;
/// How long after the last shed request `/readyz` keeps saying the host is saturated.
pub const SATURATED_HOLD: Duration = Duration::from_secs(1);

/// The bounds and timeouts of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_buffered_body_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    /// Requests that may wait (in arrival order) for a place once `max_in_flight` run.
    pub max_queued: usize,
    /// How long a request waits for its place before the `503`.
    pub queue_wait: Duration,
    pub idle_timeout: Duration,
    pub max_h2_streams: u32,
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
            queue_wait: DEFAULT_QUEUE_WAIT,
            idle_timeout: vote_service::listen::DEFAULT_IDLE_TIMEOUT,
            max_h2_streams: vote_service::listen::DEFAULT_MAX_H2_STREAMS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl ServeLimits {
    /// The bounds of the host's guarded listener: the first request of a connection is due
    /// within the header timeout.
    pub fn listen_limits(&self) -> vote_service::listen::ListenLimits {
        vote_service::listen::ListenLimits {
            max_connections: self.max_connections,
            handshake_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_h2_streams: self.max_h2_streams,
            drain_timeout: self.drain_timeout,
        }
    }
}

/// Which bound turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    Connections,
    InFlight,
    /// Request bodies held in memory.
    BodyMemory,
}

impl Shed {
    pub fn label(self) -> &'static str {
        match self {
            Shed::Connections => "connections",
            Shed::InFlight => "in_flight",
            Shed::BodyMemory => "body_memory",
        }
    }
}

pub use vote_service::admission::Admission;

/// The bounds on requests, and when a client was last turned away.
pub struct Gate {
    pub limits: ServeLimits,
    connections: Arc<ConnectionTable>,
    in_flight: Admission,
    body_bytes: Arc<Semaphore>,
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
    pub fn new(limits: ServeLimits, connections: Arc<ConnectionTable>) -> Self {
        Self {
            in_flight: Admission::new(limits.max_in_flight, limits.max_queued, limits.queue_wait),
            body_bytes: Arc::new(Semaphore::new(limits.max_buffered_body_bytes)),
            connections,
            limits,
            started: Instant::now(),
            last_shed_ms: AtomicU64::new(0),
        }
    }

    /// A place for one more request in a component, if there is one; never waits.
    pub fn try_in_flight(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.in_flight.try_enter();
        if permit.is_none() {
            self.shed_now();
        }
        permit
    }

    /// A place for one more request in a component: at once if one is free, else after waiting
    /// in arrival order (tokio's semaphore is fair) for at most `queue_wait`, if fewer than
    /// `max_queued` already wait. `None`: the request gets the fast `503`. Reports how long it
    /// waited.
    pub async fn in_flight(&self) -> (Option<OwnedSemaphorePermit>, Duration) {
        let (permit, waited) = self.in_flight.enter().await;
        if permit.is_none() {
            self.shed_now();
        }
        (permit, waited)
    }

    /// Requests waiting for a place in the host's bound now.
    pub fn queued(&self) -> usize {
        self.in_flight.queued()
    }

    /// Room for `bytes` more of request bodies in memory, if there is; never waits.
    pub fn try_body_bytes(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let permit = u32::try_from(bytes).ok().and_then(|n| self.body_bytes.clone().try_acquire_many_owned(n).ok());
        if permit.is_none() {
            self.shed_now();
        }
        permit
    }

    /// Notes that a client was turned away now (readiness says so for a while).
    pub fn shed_now(&self) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.last_shed_ms.store(now, Ordering::Relaxed);
    }

    pub fn saturation(&self) -> Saturation {
        let connections = self.connections.open();
        let in_flight = self.in_flight.running();
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
}

/// The JSON error a shed client reads.
pub fn overloaded_body(shed: Shed) -> serde_json::Value {
    let what = match shed {
        Shed::Connections => "too many open connections",
        Shed::InFlight => "too many requests in progress",
        Shed::BodyMemory => "too many request bodies in memory",
    };
    serde_json::json!({ "error": format!("the host is overloaded ({what}); retry after {RETRY_AFTER_SECONDS} s"), "field": null })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vote_service::listen::ListenMetrics;

    fn gate(limits: ServeLimits) -> Gate {
        let table = Arc::new(ConnectionTable::new(limits.listen_limits(), ListenMetrics::unregistered("test")));
        Gate::new(limits, table)
    }

    #[tokio::test]
    async fn a_full_bound_sheds_and_reports_saturation() {
        let gate = gate(ServeLimits { max_in_flight: 2, ..ServeLimits::default() });
        let (a, b) = (gate.try_in_flight(), gate.try_in_flight());
        assert!(a.is_some() && b.is_some());
        assert!(gate.saturation().saturated, "a full bound is saturation");
        assert!(gate.try_in_flight().is_none(), "the third request is shed");
        drop((a, b));
        let after = gate.saturation();
        assert_eq!(after.in_flight, 0);
        assert!(after.saturated, "saturated for a while after shedding");
    }

    #[tokio::test]
    async fn over_the_bound_requests_wait_in_a_bounded_queue_until_their_deadline() {
        let gate = Arc::new(gate(ServeLimits { max_in_flight: 1, max_queued: 2, queue_wait: Duration::from_millis(600), ..ServeLimits::default() }));
        let (running, waited) = gate.in_flight().await;
        assert!(running.is_some() && waited.is_zero());
        // Two wait; a third finds the queue full and is refused at once.
        let first = tokio::spawn({
            let gate = gate.clone();
            async move { gate.in_flight().await }
        });
        let second = tokio::spawn({
            let gate = gate.clone();
            async move { gate.in_flight().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(gate.queued(), 2);
        let (refused, waited) = gate.in_flight().await;
        assert!(refused.is_none() && waited.is_zero(), "a full queue refuses at once");
        // The running request ends: the first in line gets its place (and keeps it).
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(running);
        let (place, waited) = first.await.unwrap();
        assert!(place.is_some() && waited >= Duration::from_millis(100), "{waited:?}");
        // The second waits until its deadline behind it and gets the 503.
        let (late, waited) = second.await.unwrap();
        assert!(late.is_none() && waited >= Duration::from_millis(600), "{waited:?}");
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test]
    async fn body_memory_is_bounded_over_all_requests() {
        let gate = gate(ServeLimits { max_buffered_body_bytes: 1000, ..ServeLimits::default() });
        let first = gate.try_body_bytes(600).expect("room for the first body");
        assert!(gate.try_body_bytes(600).is_none(), "a second body past the budget is shed");
        drop(first);
        assert!(gate.try_body_bytes(600).is_some(), "the budget is given back with the body");
    }

    #[test]
    fn the_overloaded_body_has_no_field() {
        let body = overloaded_body(Shed::InFlight);
        assert!(body["error"].as_str().unwrap().contains("retry after 1 s"));
        assert!(body["field"].is_null());
    }
}
