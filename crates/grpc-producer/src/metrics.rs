//! The gRPC producer's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// Outcome counters and the publish latency.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Votes by outcome: `accepted`, `invalid`, `unavailable`, `refused`.
    pub votes: IntCounterVec,
    /// Time from receiving a vote to the broker's acknowledgement.
    pub publish_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let votes = IntCounterVec::new(Opts::new("grpc_votes_total", "Votes received, by outcome"), &["outcome"]).expect("valid metric");
        let publish_seconds = Histogram::with_opts(
            HistogramOpts::new("grpc_publish_seconds", "Time from receiving a vote to the broker's acknowledgement")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 15).expect("valid buckets")),
        )
        .expect("valid metric");
        registry.register(Box::new(votes.clone())).expect("metric registered once");
        registry.register(Box::new(publish_seconds.clone())).expect("metric registered once");
        Self { registry, votes, publish_seconds }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
