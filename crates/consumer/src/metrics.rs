//! The consumer's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

/// Counters and histograms the batch loop keeps.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages read from Kafka.
    pub messages: IntCounter,
    /// Votes counted in Redis for the first time.
    pub counted: IntCounter,
    /// Votes read again after a redelivery and skipped by the Redis dedupe.
    pub duplicates: IntCounter,
    /// Log documents inserted in MongoDB.
    pub logged: IntCounter,
    /// Messages whose payload was not a valid vote event (skipped, with an error log).
    pub poison: IntCounter,
    /// Write attempts that failed and were retried.
    pub write_retries: IntCounter,
    /// Offset commits after a batch.
    pub commits: IntCounter,
    /// Time from the first message of a batch to its commit.
    pub batch_seconds: Histogram,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(counter.clone())).expect("metric registered once");
    counter
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new("consumer_batch_seconds", "Time to write and commit one batch")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets")),
        )
        .expect("valid metric");
        registry.register(Box::new(batch_seconds.clone())).expect("metric registered once");
        Self {
            messages: counter(&registry, "consumer_messages_total", "Messages read from Kafka"),
            counted: counter(&registry, "consumer_votes_counted_total", "Votes counted in Redis for the first time"),
            duplicates: counter(&registry, "consumer_votes_duplicate_total", "Redelivered votes skipped because they were counted before"),
            logged: counter(&registry, "consumer_logs_inserted_total", "Vote log documents inserted in MongoDB"),
            poison: counter(&registry, "consumer_poison_messages_total", "Messages that were not valid vote events"),
            write_retries: counter(&registry, "consumer_write_retries_total", "Failed store writes that were retried"),
            commits: counter(&registry, "consumer_commits_total", "Offset commits"),
            batch_seconds,
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
