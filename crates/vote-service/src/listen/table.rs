//! The open connections of one listener: what each is doing (waiting for its first request, busy,
//! idle since when), the watchdog that closes it at its deadline, and eviction of the connection
//! idle the longest when the table is full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Notify;

use super::ListenLimits;

/// How many closed connections may still be winding down beyond the bound: a new connection that
/// evicted an idle one is let in before the evicted one has finished closing.
pub const EVICTION_OVERSHOOT: usize = 64;

/// Why this side closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// No first request within the handshake timeout.
    HandshakeTimeout = 1,
    /// No request in progress for the idle timeout.
    IdleTimeout = 2,
    /// The table was full and this connection was the one idle the longest.
    Evicted = 3,
    /// The table was full with every connection busy: the new one was turned away.
    Refused = 4,
    /// The server is shutting down.
    Drain = 5,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Refused => "refused",
            CloseReason::Drain => "drain",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        [Self::HandshakeTimeout, Self::IdleTimeout, Self::Evicted, Self::Refused, Self::Drain].into_iter().find(|r| *r as u8 == value)
    }
}

/// The metrics of one listener, named `<prefix>_open_connections`,
/// `<prefix>_connections_closed_total{reason}` and `<prefix>_accept_errors_total`.
#[derive(Clone)]
pub struct ListenMetrics {
    pub open: IntGauge,
    pub closed: IntCounterVec,
    pub accept_errors: IntCounter,
}

impl ListenMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry, prefix: &str) -> Self {
        let metrics = Self::unregistered(prefix);
        for collector in [Box::new(metrics.open.clone()) as Box<dyn prometheus::core::Collector>, Box::new(metrics.closed.clone()), Box::new(metrics.accept_errors.clone())] {
            registry.register(collector).expect("listener metrics register once per prefix");
        }
        metrics
    }

    /// Metrics kept by the table but exported nowhere (internal endpoints).
    pub fn unregistered(prefix: &str) -> Self {
        let metrics = Self {
            open: IntGauge::new(format!("{prefix}_open_connections"), "Connections open now.").expect("valid metric"),
            closed: IntCounterVec::new(
                Opts::new(format!("{prefix}_connections_closed_total"), "Connections this side closed or refused, by reason (handshake_timeout, idle_timeout, evicted, refused, drain)."),
                &["reason"],
            )
            .expect("valid metric"),
            accept_errors: IntCounter::new(format!("{prefix}_accept_errors_total"), "Failed accept calls (for example out of file descriptors).").expect("valid metric"),
        };
        // Every reason at zero from the start, so a dashboard shows 0 rather than no data.
        for reason in [CloseReason::HandshakeTimeout, CloseReason::IdleTimeout, CloseReason::Evicted, CloseReason::Refused, CloseReason::Drain] {
            metrics.closed.with_label_values(&[reason.label()]);
        }
        metrics
    }
}

/// One open connection, shared by its socket ([`super::Guarded`]), its watchdog and the requests
/// running on it.
pub struct Slot {
    id: u64,
    accepted_at: Instant,
    /// Requests (and response bodies) in progress on this connection.
    requests: AtomicUsize,
    /// Whether a first request arrived.
    served: AtomicBool,
    /// Milliseconds since the table's epoch when the connection last became idle.
    idle_since_ms: AtomicU64,
    closed: AtomicBool,
    reason: AtomicU8,
    pub(crate) read_waker: AtomicWaker,
    pub(crate) write_waker: AtomicWaker,
    /// Wakes the watchdog when a request starts or ends, or the connection closes.
    changed: Notify,
}

impl Slot {
    /// Whether this side closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Why this side closed it, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.reason.load(Ordering::Acquire))
    }

    /// Marks a request as running on this connection until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>, table: &Arc<ConnectionTable>) -> RequestGuard {
        self.served.store(true, Ordering::Release);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        RequestGuard { slot: self.clone(), table: table.clone() }
    }
}

/// A request (or response body) in progress; the connection is not idle while one exists.
pub struct RequestGuard {
    slot: Arc<Slot>,
    table: Arc<ConnectionTable>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.slot.requests.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.slot.idle_since_ms.store(self.table.now_ms(), Ordering::Release);
            self.slot.changed.notify_one();
        }
    }
}

/// The open connections of one listener.
pub struct ConnectionTable {
    pub limits: ListenLimits,
    pub metrics: ListenMetrics,
    epoch: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// What [`ConnectionTable::admit`] decided for a new connection.
pub enum Admission {
    Admitted(Arc<Slot>),
    /// The table is full of busy connections.
    Refused,
}

impl ConnectionTable {
    pub fn new(limits: ListenLimits, metrics: ListenMetrics) -> Self {
        Self { limits, metrics, epoch: Instant::now(), next_id: AtomicU64::new(1), slots: Mutex::default() }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now (including ones this side is closing).
    pub fn open(&self) -> usize {
        self.slots().len()
    }

    /// Takes a place for a new connection. When the table is full, the connection idle the
    /// longest (a connection that never sent a request counts as idle since it was accepted) is
    /// closed to make room; with none idle, the new one is refused.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut slots = self.slots();
        let open = slots.values().filter(|slot| !slot.is_closed()).count();
        if open >= self.limits.max_connections {
            if slots.len() >= self.limits.max_connections + EVICTION_OVERSHOOT {
                drop(slots);
                self.metrics.closed.with_label_values(&[CloseReason::Refused.label()]).inc();
                return Admission::Refused;
            }
            let victim = slots
                .values()
                .filter(|slot| !slot.is_closed() && slot.requests.load(Ordering::Acquire) == 0)
                .min_by_key(|slot| slot.idle_since_ms.load(Ordering::Acquire))
                .cloned();
            match victim {
                Some(victim) => self.close(&victim, CloseReason::Evicted),
                None => {
                    drop(slots);
                    self.metrics.closed.with_label_values(&[CloseReason::Refused.label()]).inc();
                    return Admission::Refused;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            accepted_at: Instant::now(),
            requests: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            closed: AtomicBool::new(false),
            reason: AtomicU8::new(0),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            changed: Notify::new(),
        });
        slots.insert(id, slot.clone());
        self.metrics.open.set(slots.len() as i64);
        Admission::Admitted(slot)
    }

    /// Closes a connection from this side: its socket reads end and writes fail from now on.
    pub fn close(&self, slot: &Slot, reason: CloseReason) {
        if slot.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        slot.reason.store(reason as u8, Ordering::Release);
        self.metrics.closed.with_label_values(&[reason.label()]).inc();
        slot.read_waker.wake();
        slot.write_waker.wake();
        slot.changed.notify_one();
    }

    /// Closes every idle connection (used when draining: busy ones finish first).
    pub fn close_idle(&self) {
        let idle: Vec<Arc<Slot>> = self.slots().values().filter(|slot| slot.requests.load(Ordering::Acquire) == 0).cloned().collect();
        for slot in idle {
            self.close(&slot, CloseReason::Drain);
        }
    }

    /// Forgets a connection whose socket is gone.
    pub(crate) fn remove(&self, slot: &Slot) {
        let mut slots = self.slots();
        slots.remove(&slot.id);
        self.metrics.open.set(slots.len() as i64);
        drop(slots);
        slot.closed.store(true, Ordering::Release);
        slot.changed.notify_one();
    }

    /// When an idle `slot` is due to be closed, and why.
    fn deadline(&self, slot: &Slot) -> (Instant, CloseReason) {
        if slot.served.load(Ordering::Acquire) {
            let idle_since = self.epoch + Duration::from_millis(slot.idle_since_ms.load(Ordering::Acquire));
            (idle_since + self.limits.idle_timeout, CloseReason::IdleTimeout)
        } else {
            (slot.accepted_at + self.limits.handshake_timeout, CloseReason::HandshakeTimeout)
        }
    }

    /// Closes `slot` when it misses its first-request deadline or stays idle past the idle
    /// timeout; returns once the connection is closed either way.
    pub async fn watch(self: Arc<Self>, slot: Arc<Slot>) {
        loop {
            let changed = slot.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if slot.is_closed() {
                return;
            }
            if slot.requests.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let (deadline, _) = self.deadline(&slot);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {
                    // A request may have come and gone meanwhile: decide on the state now.
                    let (deadline, reason) = self.deadline(&slot);
                    if slot.requests.load(Ordering::Acquire) == 0 && Instant::now() >= deadline {
                        self.close(&slot, reason);
                        return;
                    }
                }
                _ = &mut changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_connections: usize, handshake: Duration, idle: Duration) -> Arc<ConnectionTable> {
        let limits = ListenLimits { max_connections, handshake_timeout: handshake, idle_timeout: idle, ..ListenLimits::default() };
        Arc::new(ConnectionTable::new(limits, ListenMetrics::unregistered("test")))
    }

    fn admitted(table: &Arc<ConnectionTable>) -> Arc<Slot> {
        match table.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => panic!("refused"),
        }
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_connection_idle_the_longest() {
        let table = table(3, Duration::from_secs(60), Duration::from_secs(60));
        let silent = admitted(&table);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = admitted(&table);
        let _request = busy.begin_request(&table);
        let newer = admitted(&table);
        let fourth = admitted(&table);
        assert!(silent.is_closed(), "the oldest idle connection makes room");
        assert_eq!(silent.close_reason(), Some(CloseReason::Evicted));
        assert!(!busy.is_closed() && !newer.is_closed() && !fourth.is_closed());
        table.remove(&silent);
        assert_eq!(table.open(), 3);
    }

    #[tokio::test]
    async fn a_table_full_of_busy_connections_refuses() {
        let table = table(2, Duration::from_secs(60), Duration::from_secs(60));
        let (a, b) = (admitted(&table), admitted(&table));
        let _guards = (a.begin_request(&table), b.begin_request(&table));
        assert!(matches!(table.admit(), Admission::Refused));
        assert_eq!(table.metrics.closed.with_label_values(&["refused"]).get(), 1);
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_closed_at_the_handshake_deadline() {
        let table = table(10, Duration::from_millis(50), Duration::from_secs(60));
        let slot = admitted(&table);
        tokio::time::timeout(Duration::from_secs(2), table.clone().watch(slot.clone())).await.expect("watchdog ends");
        assert_eq!(slot.close_reason(), Some(CloseReason::HandshakeTimeout));
    }

    #[tokio::test]
    async fn a_busy_connection_is_kept_and_closed_once_idle_long_enough() {
        let table = table(10, Duration::from_millis(30), Duration::from_millis(80));
        let slot = admitted(&table);
        let watchdog = tokio::spawn(table.clone().watch(slot.clone()));
        let request = slot.begin_request(&table);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!slot.is_closed(), "a request in progress keeps the connection past both deadlines");
        let idle_from = Instant::now();
        drop(request);
        tokio::time::timeout(Duration::from_secs(2), watchdog).await.expect("watchdog ends").unwrap();
        assert_eq!(slot.close_reason(), Some(CloseReason::IdleTimeout));
        assert!(idle_from.elapsed() >= Duration::from_millis(80));
    }
}
