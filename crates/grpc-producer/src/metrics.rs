//! The gRPC producer's Prometheus metrics: the vote metrics both producers share, on path `grpc`,
//! and its call queue's.

use prometheus::{Histogram, HistogramOpts, IntGauge, Registry};
use vote_service::vote_metrics::VoteMetrics;

/// The registry served on `/metrics`, the vote metrics of the `grpc` path and the call queue's.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub votes: VoteMetrics,
    /// Calls waiting for a slot now.
    pub calls_queued: IntGauge,
    /// How long each queued call waited (served or refused).
    pub call_queue_wait_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let votes = VoteMetrics::register(&registry, vote_core::Path::Grpc.as_str());
        let calls_queued = IntGauge::new("grpc_calls_queued", "Calls waiting for a slot in the call queue").expect("valid metric");
        let buckets = prometheus::exponential_buckets(0.000_5, 2.0, 14).expect("valid buckets");
        let call_queue_wait_seconds =
            Histogram::with_opts(HistogramOpts::new("grpc_call_queue_wait_seconds", "Time a call waited in the call queue, served or refused").buckets(buckets)).expect("valid metric");
        registry.register(Box::new(calls_queued.clone())).expect("metric registered once");
        registry.register(Box::new(call_queue_wait_seconds.clone())).expect("metric registered once");
        Self { registry, votes, calls_queued, call_queue_wait_seconds }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
