//! The bridge's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// Records by outcome, requests by status, and the time a produce request takes.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Records by topic and outcome: `sent`, `unavailable`, `overloaded`, `indeterminate`, `refused`, `not_allowed`.
    pub records: IntCounterVec,
    /// Produce requests by HTTP status.
    pub requests: IntCounterVec,
    /// Time from receiving a produce request to answering it (every record acknowledged or failed).
    pub request_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let records =
            IntCounterVec::new(Opts::new("bridge_records_total", "Records received, by topic and outcome"), &["topic", "outcome"]).expect("valid metric");
        let requests = IntCounterVec::new(Opts::new("bridge_requests_total", "Produce requests, by HTTP status"), &["status"]).expect("valid metric");
        let request_seconds = Histogram::with_opts(
            HistogramOpts::new("bridge_request_seconds", "Time from a produce request to its answer")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        registry.register(Box::new(records.clone())).expect("metric registered once");
        registry.register(Box::new(requests.clone())).expect("metric registered once");
        registry.register(Box::new(request_seconds.clone())).expect("metric registered once");
        Self { registry, records, requests, request_seconds }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
