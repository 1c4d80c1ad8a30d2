//! The host's Prometheus metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Request counts, latency histograms and the serving version.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests by status class and serving version.
    pub requests: IntCounterVec,
    /// Whole-request latency (until the response head), by version.
    pub request_seconds: HistogramVec,
    /// Time to instantiate the component in a fresh store, by version.
    pub instantiate_seconds: HistogramVec,
    /// Time the component ran, until its handler returned, by version.
    pub execute_seconds: HistogramVec,
    /// Component failures (trap, deadline, memory cap), by version.
    pub component_failures: IntCounterVec,
    /// 1 for the serving version, 0 for the others still loaded.
    pub serving: IntGaugeVec,
    /// Deploys and rollbacks by outcome.
    pub swaps: IntCounterVec,
}

fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets()), &["version"]).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("metric registered once");
            h
        };
        let request_seconds = histogram("host_request_seconds", "Request latency until the response head");
        let instantiate_seconds = histogram("host_instantiate_seconds", "Component instantiation time per request");
        let execute_seconds = histogram("host_execute_seconds", "Component execution time per request");
        let requests = IntCounterVec::new(Opts::new("host_requests_total", "Requests by status class and version"), &["status", "version"]).expect("valid metric");
        let component_failures = IntCounterVec::new(Opts::new("host_component_failures_total", "Requests whose component trapped, ran out of time or memory"), &["version"]).expect("valid metric");
        let serving = IntGaugeVec::new(Opts::new("host_component_serving", "1 for the serving component version"), &["version"]).expect("valid metric");
        let swaps = IntCounterVec::new(Opts::new("host_component_swaps_total", "Deploys and rollbacks by outcome"), &["action", "outcome"]).expect("valid metric");
        for metric in [&requests, &component_failures, &swaps] {
            registry.register(Box::new(metric.clone())).expect("metric registered once");
        }
        registry.register(Box::new(serving.clone())).expect("metric registered once");
        Self { registry, requests, request_seconds, instantiate_seconds, execute_seconds, component_failures, serving, swaps }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
