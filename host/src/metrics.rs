//! The host's Prometheus metrics: its own `host_*` metrics, labelled by component (its id in the
//! application) and version, and the vote metrics both producers share, on path `wasm`.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use vote_service::listen::ListenMetrics;
use vote_service::vote_metrics::{Outcome, VoteMetrics};

/// The producer path label of every vote this host serves.
pub const PATH: &str = "wasm";

/// Request counts, latency histograms, the serving version and the vote metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests by status class and serving version.
    pub requests: IntCounterVec,
    /// Whole-request latency (until the response head), by version.
    pub request_seconds: HistogramVec,
    /// Time to instantiate the component in a fresh store, by version.
    pub instantiate_seconds: HistogramVec,
    /// Instances that served a request, by component and `fresh` or `reused`.
    pub instances: IntCounterVec,
    /// Idle instances waiting to serve their component's next request (set when /metrics is read).
    pub instances_idle: IntGaugeVec,
    /// Time the component ran, until its handler returned, by version.
    pub execute_seconds: HistogramVec,
    /// Component failures (trap, deadline, memory cap), by version.
    pub component_failures: IntCounterVec,
    /// 1 for the serving version, 0 for the others still loaded.
    pub serving: IntGaugeVec,
    /// When the serving version took over (Unix seconds): start-up, deploy or rollback.
    pub serving_since: Gauge,
    /// Deploys and rollbacks by outcome.
    pub swaps: IntCounterVec,
    /// Requests and connections turned away with a `503`, by the bound that was full
    /// (`connections`, `in_flight`, `instances`).
    pub shed: IntCounterVec,
    /// Requests ended by a timeout, by kind (`body`).
    pub timeouts: IntCounterVec,
    /// The listener's `host_open_connections`, `host_connections_closed_total{reason}` and
    /// `host_accept_errors_total`.
    pub listen: ListenMetrics,
    /// Requests running in components (set when `/metrics` is read).
    pub in_flight: IntGauge,
    /// Requests waiting for a place in a component (set when `/metrics` is read).
    pub queued: IntGauge,
    /// How long requests that had to queue waited for their place (or for their `503`).
    pub queue_wait_seconds: prometheus::Histogram,
    /// Publishes refused for their topic, by component.
    pub publish_refused: IntCounterVec,
    /// Requests running in each component, and waiting for a place in it (set when `/metrics`
    /// is read).
    pub component_in_flight: IntGaugeVec,
    pub component_queued: IntGaugeVec,
    /// Requests shed by a component's own bound, by component.
    pub component_shed: IntCounterVec,
    /// `votes_received_total`, `vote_ingest_seconds`, `vote_publish_failures_total` of path `wasm`.
    pub votes: VoteMetrics,
}

fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Self {
        Self::for_path(PATH)
    }

    /// The metrics of a host whose votes go on `path` (`native` for the baseline).
    pub fn for_path(path: &str) -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets()), &["component", "version"]).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("metric registered once");
            h
        };
        let request_seconds = histogram("host_request_seconds", "Request latency until the response head");
        let instantiate_seconds = histogram("host_instantiate_seconds", "Component instantiation time per request");
        let execute_seconds = histogram("host_execute_seconds", "Component execution time per request");
        let requests = IntCounterVec::new(Opts::new("host_requests_total", "Requests by status class and version"), &["status", "component", "version"]).expect("valid metric");
        let instances = IntCounterVec::new(Opts::new("host_instances_total", "Requests served by a fresh instance or by a reused one (instance_reuse)"), &["component", "how"]).expect("valid metric");
        let instances_idle = IntGaugeVec::new(Opts::new("host_instances_idle", "Instances waiting to serve their component's next request (instance_reuse; set when /metrics is read)"), &["component"]).expect("valid metric");
        let component_failures = IntCounterVec::new(Opts::new("host_component_failures_total", "Requests whose component trapped, ran out of time or memory"), &["component", "version"]).expect("valid metric");
        let serving = IntGaugeVec::new(Opts::new("host_component_serving", "1 for the serving component version"), &["component", "version"]).expect("valid metric");
        let publish_refused = IntCounterVec::new(Opts::new("host_publish_refused_total", "Publishes refused because the component was not granted the topic"), &["component"]).expect("valid metric");
        let component_in_flight = IntGaugeVec::new(Opts::new("host_component_in_flight", "Requests running in a component (set when /metrics is read)"), &["component"]).expect("valid metric");
        let component_queued = IntGaugeVec::new(Opts::new("host_component_queued", "Requests waiting for a place in a component (set when /metrics is read)"), &["component"]).expect("valid metric");
        let component_shed = IntCounterVec::new(Opts::new("host_component_shed_total", "Requests answered 503 because their component's share of requests in flight and its queue were full"), &["component"]).expect("valid metric");
        let serving_since = Gauge::new("host_component_serving_since_seconds", "When the serving component version took over, Unix seconds").expect("valid metric");
        let swaps = IntCounterVec::new(Opts::new("host_component_swaps_total", "Deploys and rollbacks by result"), &["action", "result"]).expect("valid metric");
        for (action, result) in [("deploy", "ok"), ("deploy", "refused"), ("rollback", "ok")] {
            swaps.with_label_values(&[action, result]);
        }
        let shed = IntCounterVec::new(Opts::new("host_shed_total", "Requests and connections answered 503 because a bound was full"), &["reason"]).expect("valid metric");
        let timeouts = IntCounterVec::new(Opts::new("host_timeouts_total", "Requests ended by a timeout, by kind"), &["kind"]).expect("valid metric");
        // Present at zero from the start, so the dashboards show no shedding rather than no data.
        for reason in ["connections", "in_flight", "instances", "body_memory"] {
            shed.with_label_values(&[reason]);
        }
        timeouts.with_label_values(&["body"]);
        for metric in [&requests, &instances, &component_failures, &swaps, &shed, &timeouts, &publish_refused, &component_shed] {
            registry.register(Box::new(metric.clone())).expect("metric registered once");
        }
        let in_flight = IntGauge::new("host_requests_in_flight", "Requests running in components").expect("valid metric");
        registry.register(Box::new(serving.clone())).expect("metric registered once");
        registry.register(Box::new(component_in_flight.clone())).expect("metric registered once");
        registry.register(Box::new(component_queued.clone())).expect("metric registered once");
        registry.register(Box::new(instances_idle.clone())).expect("metric registered once");
        registry.register(Box::new(in_flight.clone())).expect("metric registered once");
        registry.register(Box::new(serving_since.clone())).expect("metric registered once");
        let votes = VoteMetrics::register(&registry, path);
        let listen = ListenMetrics::register(&registry, "host");
        let queued = IntGauge::new("host_requests_queued", "Requests waiting for a place in a component").expect("valid metric");
        registry.register(Box::new(queued.clone())).expect("metric registered once");
        let queue_wait_seconds = prometheus::Histogram::with_opts(HistogramOpts::new("host_queue_wait_seconds", "Time a request waited in the admission queue").buckets(buckets()))
            .expect("valid metric");
        registry.register(Box::new(queue_wait_seconds.clone())).expect("metric registered once");
        Self {
            registry,
            requests,
            request_seconds,
            instantiate_seconds,
            instances,
            instances_idle,
            execute_seconds,
            component_failures,
            serving,
            serving_since,
            swaps,
            shed,
            timeouts,
            listen,
            in_flight,
            queued,
            queue_wait_seconds,
            publish_refused,
            component_in_flight,
            component_queued,
            component_shed,
            votes,
        }
    }

    /// Marks `new` as the serving version of `component` (and `old`, if any, as no longer
    /// serving), now.
    pub fn serve(&self, component: &str, old: Option<&str>, new: &str) {
        if let Some(old) = old {
            self.serving.with_label_values(&[component, old]).set(0);
        }
        self.serving.with_label_values(&[component, new]).set(1);
        // Present at zero from the start, so the dashboards show no failures rather than no data.
        self.component_failures.with_label_values(&[component, new]);
        self.publish_refused.with_label_values(&[component]);
        self.component_shed.with_label_values(&[component]);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
        self.serving_since.set(now);
    }

    /// Counts the votes the host can only see in the response status: a refused request
    /// (400, 413, 415, 422) is one invalid vote, a failed component (500) one error. Accepted votes
    /// and failed publishes are counted per vote where they are published (`publisher`).
    pub fn record_vote_response(&self, status: u16) {
        match status {
            400 | 413 | 415 | 422 => self.votes.received(Outcome::Invalid),
            500 => self.votes.received(Outcome::Error),
            _ => {}
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
