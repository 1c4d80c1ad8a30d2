//! The gRPC producer's Prometheus metrics: the vote metrics both producers share, on path `grpc`.

use prometheus::Registry;
use vote_service::vote_metrics::VoteMetrics;

/// The registry served on `/metrics` and the vote metrics of the `grpc` path.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub votes: VoteMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let votes = VoteMetrics::register(&registry, vote_core::Path::Grpc.as_str());
        Self { registry, votes }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
