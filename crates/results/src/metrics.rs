//! The results service's Prometheus metrics.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the service counts.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Snapshots published to the pages (one per change of the counters).
    pub snapshots: IntCounter,
    /// Failed Redis reads of the poller.
    pub redis_errors: IntCounter,
    /// Pages connected to `/api/events` right now.
    pub sse_clients: IntGauge,
    /// Log searches by outcome (`ok`, `invalid`, `error`).
    pub searches: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let snapshots = IntCounter::new("results_snapshots_published_total", "Snapshots of the counters sent to the pages").expect("valid metric");
        let redis_errors = IntCounter::new("results_redis_errors_total", "Failed Redis reads of the live poller").expect("valid metric");
        let sse_clients = IntGauge::new("results_sse_clients", "Pages connected to the live event stream").expect("valid metric");
        let searches = IntCounterVec::new(Opts::new("results_log_searches_total", "Log searches by outcome"), &["outcome"]).expect("valid metric");
        for metric in [Box::new(snapshots.clone()) as Box<dyn prometheus::core::Collector>, Box::new(redis_errors.clone()), Box::new(sse_clients.clone()), Box::new(searches.clone())] {
            registry.register(metric).expect("metric registered once");
        }
        Self { registry, snapshots, redis_errors, sse_clients, searches }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
