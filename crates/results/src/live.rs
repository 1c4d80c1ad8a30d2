//! Shared pollers: each watches one total counter (`{votes}:total` for the band contest, a
//! workload's total key for a manifest workload) and publishes a fresh snapshot to every page
//! when it changed; pages receive them as server-sent events.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::watch;
use vote_service::Shutdown;
use vote_store::workload_view::WorkloadView;

use crate::metrics::Metrics;
use crate::snapshot::{self, Snapshot};

/// How often the poller reads `{votes}:total` by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A full re-read happens at least this often even when the total did not move (a recount can
/// end on the same total with other counts).
pub const FULL_REFRESH: Duration = Duration::from_secs(5);
/// Health fails when the last successful read is older than this.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// What a poller publishes: its total, and whether another one shows the same thing.
pub trait View: Serialize + Send + Sync + 'static {
    fn total(&self) -> u64;
    /// Whether `other` shows the same thing (the read time aside).
    fn same_as(&self, other: &Self) -> bool;
}

impl View for Snapshot {
    fn total(&self) -> u64 {
        self.total
    }
    fn same_as(&self, b: &Self) -> bool {
        let a = self;
        a.total == b.total && a.bands == b.bands && a.paths == b.paths && a.top_albums == b.top_albums && a.recent == b.recent
    }
}

impl View for WorkloadView {
    fn total(&self) -> u64 {
        self.total
    }
    fn same_as(&self, other: &Self) -> bool {
        WorkloadView::same_as(self, other)
    }
}

/// A snapshot and its JSON, serialised once for every client.
#[derive(Debug)]
pub struct Published<T = Snapshot> {
    pub snapshot: T,
    pub json: String,
}

impl<T: View> Published<T> {
    fn new(snapshot: T) -> Arc<Self> {
        let json = serde_json::to_string(&snapshot).expect("a snapshot serialises");
        Arc::new(Self { snapshot, json })
    }
}

/// The latest snapshot, watched by every SSE client.
pub struct Live<T = Snapshot> {
    latest: watch::Receiver<Option<Arc<Published<T>>>>,
    last_read_ms: Arc<AtomicI64>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self { latest: self.latest.clone(), last_read_ms: self.last_read_ms.clone() }
    }
}

impl<T> Live<T> {
    /// A receiver that yields the latest snapshot, then every later one. A slow client skips
    /// intermediate snapshots instead of queueing them.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published<T>>>> {
        self.latest.clone()
    }

    /// How long ago Redis last answered the poller, or None if it never did.
    pub fn since_last_read(&self) -> Option<Duration> {
        let last = self.last_read_ms.load(Ordering::Relaxed);
        (last > 0).then(|| Duration::from_millis((vote_core::now_ms() - last).max(0) as u64))
    }
}

/// Reads one full snapshot (from a clone of the shared connection).
pub type Reader<T> = Box<dyn Fn(ConnectionManager) -> Pin<Box<dyn Future<Output = redis::RedisResult<T>> + Send>> + Send + Sync>;

/// Starts the band contest's poller on its own task; it stops when `shutdown` fires.
pub fn spawn(redis: ConnectionManager, interval: Duration, metrics: Metrics, shutdown: Shutdown) -> Live {
    let read: Reader<Snapshot> = Box::new(|mut redis| Box::pin(async move { snapshot::read(&mut redis).await }));
    spawn_watching(redis, interval, vote_store::keys::TOTAL.to_owned(), read, metrics, shutdown)
}

/// Starts a poller of `total_key` that publishes what `read` reads when the total moved (or
/// every [`FULL_REFRESH`]); it stops when `shutdown` fires.
pub fn spawn_watching<T: View>(redis: ConnectionManager, interval: Duration, total_key: String, read: Reader<T>, metrics: Metrics, shutdown: Shutdown) -> Live<T> {
    let (sender, latest) = watch::channel(None);
    let last_read_ms = Arc::new(AtomicI64::new(0));
    let poller = Poller { redis, interval, total_key, read, sender, last_read_ms: last_read_ms.clone(), metrics };
    tokio::spawn(poller.run(shutdown));
    Live { latest, last_read_ms }
}

struct Poller<T> {
    redis: ConnectionManager,
    interval: Duration,
    total_key: String,
    read: Reader<T>,
    sender: watch::Sender<Option<Arc<Published<T>>>>,
    last_read_ms: Arc<AtomicI64>,
    metrics: Metrics,
}

impl<T: View> Poller<T> {
    async fn run(mut self, mut shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_total: Option<u64> = None;
        let mut last_full = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait() => return,
            }
            let total: Option<u64> = match redis::cmd("GET").arg(&self.total_key).query_async(&mut self.redis).await {
                Ok(total) => total,
                Err(error) => {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(%error, key = %self.total_key, "reading a total from Redis");
                    continue;
                }
            };
            self.last_read_ms.store(vote_core::now_ms(), Ordering::Relaxed);
            if last_total == Some(total.unwrap_or(0)) && last_full.elapsed() < FULL_REFRESH {
                continue;
            }
            match (self.read)(self.redis.clone()).await {
                Ok(snapshot) => {
                    last_total = Some(snapshot.total());
                    last_full = Instant::now();
                    let unchanged = self.sender.borrow().as_ref().is_some_and(|p| p.snapshot.same_as(&snapshot));
                    if !unchanged {
                        self.metrics.snapshots.inc();
                        self.sender.send_replace(Some(Published::new(snapshot)));
                    }
                }
                Err(error) => {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(%error, key = %self.total_key, "reading the counters from Redis");
                }
            }
        }
    }
}
