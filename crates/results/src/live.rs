//! One shared poller of `{votes}:total` that publishes a fresh snapshot to every page when it
//! changed; pages receive them as server-sent events.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::watch;
use vote_service::Shutdown;

use crate::metrics::Metrics;
use crate::snapshot::{self, Snapshot};

/// How often the poller reads `{votes}:total` by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A full re-read happens at least this often even when the total did not move (a recount can
/// end on the same total with other counts).
pub const FULL_REFRESH: Duration = Duration::from_secs(5);
/// Health fails when the last successful read is older than this.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// A snapshot and its JSON, serialised once for every client.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Snapshot,
    pub json: String,
}

impl Published {
    fn new(snapshot: Snapshot) -> Arc<Self> {
        let json = serde_json::to_string(&snapshot).expect("a snapshot serialises");
        Arc::new(Self { snapshot, json })
    }
}

/// The latest snapshot, watched by every SSE client.
#[derive(Clone)]
pub struct Live {
    latest: watch::Receiver<Option<Arc<Published>>>,
    last_read_ms: Arc<AtomicI64>,
}

impl Live {
    /// A receiver that yields the latest snapshot, then every later one. A slow client skips
    /// intermediate snapshots instead of queueing them.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.latest.clone()
    }

    /// How long ago Redis last answered the poller, or None if it never did.
    pub fn since_last_read(&self) -> Option<Duration> {
        let last = self.last_read_ms.load(Ordering::Relaxed);
        (last > 0).then(|| Duration::from_millis((vote_core::now_ms() - last).max(0) as u64))
    }
}

/// Starts the poller on its own task; it stops when `shutdown` fires.
pub fn spawn(redis: ConnectionManager, interval: Duration, metrics: Metrics, shutdown: Shutdown) -> Live {
    let (sender, latest) = watch::channel(None);
    let last_read_ms = Arc::new(AtomicI64::new(0));
    tokio::spawn(poll(redis, interval, sender, last_read_ms.clone(), metrics, shutdown));
    Live { latest, last_read_ms }
}

async fn poll(
    mut redis: ConnectionManager,
    interval: Duration,
    sender: watch::Sender<Option<Arc<Published>>>,
    last_read_ms: Arc<AtomicI64>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_total: Option<u64> = None;
    let mut last_full = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => return,
        }
        let total = match snapshot::read_total(&mut redis).await {
            Ok(total) => total,
            Err(error) => {
                metrics.redis_errors.inc();
                tracing::warn!(%error, "reading the total from Redis");
                continue;
            }
        };
        last_read_ms.store(vote_core::now_ms(), Ordering::Relaxed);
        if last_total == Some(total) && last_full.elapsed() < FULL_REFRESH {
            continue;
        }
        match snapshot::read(&mut redis).await {
            Ok(snapshot) => {
                last_total = Some(snapshot.total);
                last_full = Instant::now();
                let unchanged = sender.borrow().as_ref().is_some_and(|p| same_counts(&p.snapshot, &snapshot));
                if !unchanged {
                    metrics.snapshots.inc();
                    sender.send_replace(Some(Published::new(snapshot)));
                }
            }
            Err(error) => {
                metrics.redis_errors.inc();
                tracing::warn!(%error, "reading the counters from Redis");
            }
        }
    }
}

/// Whether two snapshots show the same thing (the read time aside).
fn same_counts(a: &Snapshot, b: &Snapshot) -> bool {
    a.total == b.total && a.bands == b.bands && a.paths == b.paths && a.top_albums == b.top_albums && a.recent == b.recent
}
