//! The vote metrics both producers export under the same names and labels, the contract with the
//! Grafana dashboards (every metric is listed in `docs/metrics.md`).

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use vote_kafka::PublishError;

/// Votes received, by `path` and `outcome`.
pub const VOTES_RECEIVED: &str = "votes_received_total";
/// Time from receiving a vote to the broker's acknowledgement, by `path` (accepted votes only).
pub const VOTE_INGEST_SECONDS: &str = "vote_ingest_seconds";
/// Publishes the broker did not acknowledge, by `path` and `reason`.
pub const VOTE_PUBLISH_FAILURES: &str = "vote_publish_failures_total";

/// What became of one vote a producer received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Published and acknowledged by the broker.
    Accepted,
    /// Refused by the vote rules (or a bad request); nothing was published.
    Invalid,
    /// Shed because the producer or its publisher queue was full.
    Overloaded,
    /// The broker did not acknowledge in time or could not be reached.
    Unavailable,
    /// Anything else: the broker refused the message, or the component failed.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [Outcome::Accepted, Outcome::Invalid, Outcome::Overloaded, Outcome::Unavailable, Outcome::Error];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Invalid => "invalid",
            Outcome::Overloaded => "overloaded",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }
}

/// Why the broker did not acknowledge a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The broker could not be reached.
    Unavailable,
    /// The client's send queue was full.
    Overloaded,
    /// The broker or the client refused the message; retrying will not help.
    Refused,
    /// No acknowledgement within the publish timeout.
    Timeout,
}

impl FailureReason {
    pub const ALL: [FailureReason; 4] = [FailureReason::Unavailable, FailureReason::Overloaded, FailureReason::Refused, FailureReason::Timeout];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Unavailable => "unavailable",
            FailureReason::Overloaded => "overloaded",
            FailureReason::Refused => "refused",
            FailureReason::Timeout => "timeout",
        }
    }

    /// Sorts a publish error by the librdkafka error code its message names.
    pub fn of(error: &PublishError) -> Self {
        match error {
            PublishError::Refused(_) => FailureReason::Refused,
            PublishError::Overloaded(_) => FailureReason::Overloaded,
            PublishError::Indeterminate(_) => FailureReason::Timeout,
            PublishError::Unavailable(text) if text.contains("QueueFull") => FailureReason::Overloaded,
            PublishError::Unavailable(text) if text.contains("TimedOut") => FailureReason::Timeout,
            PublishError::Unavailable(_) => FailureReason::Unavailable,
        }
    }

    /// What a vote whose publish failed this way counts as.
    pub fn outcome(self) -> Outcome {
        match self {
            FailureReason::Unavailable | FailureReason::Timeout => Outcome::Unavailable,
            FailureReason::Overloaded => Outcome::Overloaded,
            FailureReason::Refused => Outcome::Error,
        }
    }
}

/// Latency buckets for the vote histograms: 0.5 ms doubling to about 16 s.
pub fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_5, 2.0, 16).expect("valid buckets")
}

/// The vote metrics of one producer path (`wasm`, `grpc`, ...), registered with every label
/// value already present at zero, so a dashboard shows 0 rather than no data before the first
/// failure.
#[derive(Clone)]
pub struct VoteMetrics {
    received: Vec<IntCounter>,
    failures: Vec<IntCounter>,
    ingest: Histogram,
}

impl VoteMetrics {
    /// Registers the three vote metrics in `registry` for `path`.
    pub fn register(registry: &Registry, path: &str) -> Self {
        let received = IntCounterVec::new(Opts::new(VOTES_RECEIVED, "Votes received, by producer path and outcome"), &["path", "outcome"])
            .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(VOTE_PUBLISH_FAILURES, "Publishes the broker did not acknowledge, by producer path and reason"),
            &["path", "reason"],
        )
        .expect("valid metric");
        let ingest = HistogramVec::new(
            HistogramOpts::new(VOTE_INGEST_SECONDS, "Time from receiving a vote to the broker's acknowledgement, accepted votes")
                .buckets(latency_buckets()),
            &["path"],
        )
        .expect("valid metric");
        registry.register(Box::new(received.clone())).expect("metric registered once");
        registry.register(Box::new(failures.clone())).expect("metric registered once");
        registry.register(Box::new(ingest.clone())).expect("metric registered once");
        Self {
            received: Outcome::ALL.iter().map(|o| received.with_label_values(&[path, o.as_str()])).collect(),
            failures: FailureReason::ALL.iter().map(|r| failures.with_label_values(&[path, r.as_str()])).collect(),
            ingest: ingest.with_label_values(&[path]),
        }
    }

    /// Counts one vote with its outcome.
    pub fn received(&self, outcome: Outcome) {
        self.received[outcome as usize].inc();
    }

    /// Counts one accepted vote and the time from its arrival to the broker's acknowledgement.
    pub fn accepted(&self, ingest: Duration) {
        self.received(Outcome::Accepted);
        self.ingest.observe(ingest.as_secs_f64());
    }

    /// Counts one vote whose publish failed: the failure by reason, the vote by its outcome.
    pub fn publish_failed(&self, error: &PublishError) {
        let reason = FailureReason::of(error);
        self.failures[reason as usize].inc();
        self.received(reason.outcome());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(registry: &Registry) -> String {
        crate::render_metrics(registry)
    }

    #[test]
    fn every_label_value_is_exported_at_zero_before_any_vote() {
        let registry = Registry::new();
        VoteMetrics::register(&registry, "grpc");
        let text = exported(&registry);
        for outcome in Outcome::ALL {
            assert!(text.contains(&format!("votes_received_total{{outcome=\"{}\",path=\"grpc\"}} 0", outcome.as_str())), "{text}");
        }
        for reason in FailureReason::ALL {
            assert!(text.contains(&format!("vote_publish_failures_total{{path=\"grpc\",reason=\"{}\"}} 0", reason.as_str())), "{text}");
        }
        assert!(text.contains("vote_ingest_seconds_count{path=\"grpc\"} 0"), "{text}");
    }

    #[test]
    fn publish_errors_are_sorted_by_their_librdkafka_code() {
        let cases = [
            (PublishError::Unavailable("Message production error: MessageTimedOut (Local: Message timed out)".into()), FailureReason::Timeout),
            (PublishError::Unavailable("Message production error: QueueFull (Local: Queue full)".into()), FailureReason::Overloaded),
            (PublishError::Unavailable("Message production error: AllBrokersDown (Local: All broker connections are down)".into()), FailureReason::Unavailable),
            (PublishError::Refused("Message production error: MessageSizeTooLarge".into()), FailureReason::Refused),
        ];
        for (error, reason) in cases {
            assert_eq!(FailureReason::of(&error), reason, "{error}");
        }
    }

    #[test]
    fn a_failed_publish_counts_its_reason_and_the_votes_outcome() {
        let registry = Registry::new();
        let metrics = VoteMetrics::register(&registry, "wasm");
        metrics.publish_failed(&PublishError::Unavailable("MessageTimedOut".into()));
        metrics.accepted(Duration::from_millis(3));
        let text = exported(&registry);
        assert!(text.contains("vote_publish_failures_total{path=\"wasm\",reason=\"timeout\"} 1"), "{text}");
        assert!(text.contains("votes_received_total{outcome=\"unavailable\",path=\"wasm\"} 1"), "{text}");
        assert!(text.contains("votes_received_total{outcome=\"accepted\",path=\"wasm\"} 1"), "{text}");
        assert!(text.contains("vote_ingest_seconds_count{path=\"wasm\"} 1"), "{text}");
    }
}
