//! The consumer's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters and histograms the batch loop keeps.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Messages read from Kafka.
    pub messages: IntCounter,
    /// Votes counted in Redis for the first time.
    pub counted: IntCounter,
    /// Votes read again after a redelivery or a replay and skipped by the Redis dedupe.
    pub duplicates: IntCounter,
    /// Log documents inserted in MongoDB.
    pub logged: IntCounter,
    /// Messages whose payload was not a valid vote event (sent to the dead-letter topic).
    pub poison: IntCounter,
    /// Write attempts that failed and were retried.
    pub write_retries: IntCounter,
    /// Offset commits after a batch.
    pub commits: IntCounter,
    /// Time from the first message of a batch to its commit.
    pub batch_seconds: Histogram,
    /// Messages behind the high watermark, per assigned partition (committed offset to high watermark).
    pub lag: IntGaugeVec,
    /// From a vote's `received_at` to the moment the Redis write that counted it returned.
    pub visible_seconds: Histogram,
    /// Duration of one successful store write, per store (`redis`, `mongodb`).
    pub store_write_seconds: HistogramVec,
    /// Messages published to the dead-letter topic, per reason.
    pub dlq: IntCounterVec,
    /// Dead letters the broker refused even in their reduced form: given up, logged.
    pub dlq_lost: IntCounter,
    /// Partitions re-read from an earlier offset because Redis was behind the batch.
    pub rewinds: IntCounter,
    /// Partitions whose applied offset was forgotten because the topic was recreated or reset.
    pub resyncs: IntCounter,
    /// Votes counted in a leaderboard's overflow because it holds its cap of names.
    pub overflowed: IntCounter,
    /// Records dropped from the carry buffer at its bound during a stall (re-read afterwards).
    pub carry_dropped: IntCounter,
    /// Per manifest workload: events counted in Redis for the first time.
    pub workload_counted: IntCounterVec,
    /// Per workload: events read again (a redelivery, a replay, a retry under one key) and skipped.
    pub workload_duplicates: IntCounterVec,
    /// Per workload: event log documents inserted in MongoDB.
    pub workload_logged: IntCounterVec,
    /// Per workload: records of its topic that could not be counted (sent to the dead-letter topic).
    pub workload_invalid: IntCounterVec,
    /// Per workload: writes counted in a leaderboard's overflow because it holds its cap of members.
    pub workload_overflowed: IntCounterVec,
    /// Per workload and assigned partition of its topic: committed offset to high watermark.
    pub workload_lag: IntGaugeVec,
    /// Records read, per broker (`kafka`, `rabbitmq`) and topic.
    pub records: IntCounterVec,
    /// Per workload and broker: from an event's `received_at` to its count returned by Redis.
    pub workload_visible_seconds: HistogramVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn per_workload(registry: &Registry, name: &str, help: &str) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), &["workload"]).expect("valid metric"))
}

fn seconds(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets"))
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let batch_seconds = Histogram::with_opts(seconds("consumer_batch_seconds", "Time to write and commit one batch")).expect("valid metric");
        let visible_seconds = Histogram::with_opts(seconds("vote_visible_seconds", "From a vote's received_at to its count returned by Redis")).expect("valid metric");
        let store_write_seconds = HistogramVec::new(seconds("consumer_store_write_seconds", "Duration of one successful store write"), &["store"]).expect("valid metric");
        let lag = IntGaugeVec::new(Opts::new("consumer_lag_messages", "Messages between the committed offset and the high watermark"), &["partition"]).expect("valid metric");
        let workload_lag = IntGaugeVec::new(Opts::new("consumer_workload_lag_messages", "Messages of a workload's topic between the committed offset and the high watermark"), &["workload", "partition"]).expect("valid metric");
        let records = IntCounterVec::new(Opts::new("consumer_records_read_total", "Records read, per broker and topic"), &["broker", "topic"]).expect("valid metric");
        let workload_visible_seconds =
            HistogramVec::new(seconds("consumer_workload_visible_seconds", "From a workload event's received_at to its count returned by Redis"), &["workload", "broker"]).expect("valid metric");
        let dlq = IntCounterVec::new(Opts::new("consumer_dlq_messages_total", "Messages published to the dead-letter topic"), &["reason"]).expect("valid metric");
        Self {
            messages: counter(&registry, "consumer_messages_total", "Messages read from Kafka"),
            counted: counter(&registry, "consumer_votes_counted_total", "Votes counted in Redis for the first time"),
            duplicates: counter(&registry, "consumer_votes_duplicate_total", "Redelivered votes skipped because they were counted before"),
            logged: counter(&registry, "consumer_logs_inserted_total", "Vote log documents inserted in MongoDB"),
            poison: counter(&registry, "consumer_poison_messages_total", "Messages that were not valid vote events"),
            write_retries: counter(&registry, "consumer_write_retries_total", "Failed store writes that were retried"),
            commits: counter(&registry, "consumer_commits_total", "Offset commits"),
            batch_seconds: register(&registry, batch_seconds),
            lag: register(&registry, lag),
            visible_seconds: register(&registry, visible_seconds),
            store_write_seconds: register(&registry, store_write_seconds),
            dlq: register(&registry, dlq),
            dlq_lost: counter(&registry, "consumer_dlq_lost_total", "Dead letters the broker refused even reduced (logged and given up)"),
            rewinds: counter(&registry, "consumer_rewinds_total", "Partitions re-read from an earlier offset because Redis was behind"),
            resyncs: counter(&registry, "consumer_resyncs_total", "Partitions whose applied offset was reset because the topic was recreated"),
            overflowed: counter(&registry, "consumer_votes_overflowed_total", "Votes counted in a leaderboard's overflow (name cap reached)"),
            carry_dropped: counter(&registry, "consumer_carry_dropped_total", "Records dropped at the carry bound during a stall and read again later"),
            workload_counted: per_workload(&registry, "consumer_workload_events_counted_total", "Workload events counted in Redis for the first time"),
            workload_duplicates: per_workload(&registry, "consumer_workload_events_duplicate_total", "Workload events read again and skipped because they were counted before"),
            workload_logged: per_workload(&registry, "consumer_workload_logs_inserted_total", "Workload event log documents inserted in MongoDB"),
            workload_invalid: per_workload(&registry, "consumer_workload_events_invalid_total", "Records of a workload's topic that could not be counted (dead-lettered)"),
            workload_overflowed: per_workload(&registry, "consumer_workload_overflowed_total", "Workload writes counted in a leaderboard's overflow (member cap reached)"),
            workload_lag: register(&registry, workload_lag),
            records: register(&registry, records),
            workload_visible_seconds: register(&registry, workload_visible_seconds),
            registry,
        }
    }
}

impl Metrics {
    /// Records what one count of a workload's batch read from `broker` did, and how long after
    /// its arrival each event counted now became visible (`received_at_ms` of the batch's events).
    pub fn workload_counted(&self, workload: &str, broker: &str, counted: &vote_store::counters::Counted, received_at_ms: impl Fn(usize) -> i64) {
        let now = vote_core::now_ms();
        let visible = self.workload_visible_seconds.with_label_values(&[workload, broker]);
        for &index in &counted.newly_counted {
            visible.observe((now - received_at_ms(index)).max(0) as f64 / 1000.0);
        }
        self.workload_counted.with_label_values(&[workload]).inc_by(counted.counted);
        self.workload_duplicates.with_label_values(&[workload]).inc_by(counted.skipped);
        self.workload_overflowed.with_label_values(&[workload]).inc_by(counted.overflowed);
    }

    /// Exports the counters of `workload` (its topic on `broker`) at zero, so that its series
    /// exist (and rates read 0) before its first event.
    pub fn start_workload(&self, workload: &str, broker: &str) {
        for counter in [&self.workload_counted, &self.workload_duplicates, &self.workload_logged, &self.workload_invalid, &self.workload_overflowed] {
            counter.with_label_values(&[workload]).inc_by(0);
        }
        self.workload_visible_seconds.with_label_values(&[workload, broker]);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
