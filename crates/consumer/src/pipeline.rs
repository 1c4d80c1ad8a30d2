//! The batch loop: Kafka -> Redis and MongoDB -> offset commit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use vote_core::proto::VoteEvent;
use vote_service::Shutdown;

use crate::counters::Counters;
use crate::logs::Logs;
use crate::metrics::Metrics;

/// Where the consumer reads from and writes to, and how it batches.
#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub redis_url: String,
    pub mongo_url: String,
    /// The most messages one batch holds.
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first one.
    pub batch_linger: Duration,
    /// How long a vote id is remembered for deduplication.
    pub seen_ttl: Duration,
    /// Fault-test hook: sleep this long between the writes and the commit.
    pub pause_before_commit: Duration,
}

/// One message of a batch, decoded or not, with where it came from.
struct Received {
    partition: i32,
    offset: i64,
    event: Option<VoteEvent>,
}

/// Runs the loop until `shutdown` fires; the batch in hand is finished and committed first.
pub async fn run(settings: Settings, metrics: Metrics, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let counters = Counters::connect(&settings.redis_url, settings.seen_ttl)
        .await
        .with_context(|| format!("connecting to Redis at {}", settings.redis_url))?;
    let logs = Logs::connect(&settings.mongo_url)
        .await
        .with_context(|| format!("connecting to MongoDB at {}", settings.mongo_url))?;
    let consumer: StreamConsumer = vote_kafka::consumer_config(&settings.brokers, &settings.group)
        .create()
        .context("creating the Kafka consumer")?;
    consumer.subscribe(&[&settings.topic]).context("subscribing to the votes topic")?;
    tracing::info!(topic = %settings.topic, group = %settings.group, "consuming");

    loop {
        let first = tokio::select! {
            message = consumer.recv() => message,
            _ = shutdown.wait() => break,
        };
        let mut batch = Vec::with_capacity(settings.batch_max);
        match first {
            Ok(message) => batch.push(receive(&message, &metrics)),
            Err(error) => {
                tracing::warn!(%error, "kafka receive error");
                continue;
            }
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + settings.batch_linger;
        while batch.len() < settings.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(message)) => batch.push(receive(&message, &metrics)),
                Ok(Err(error)) => tracing::warn!(%error, "kafka receive error"),
                Err(_) => break,
            }
        }
        write_batch(&batch, &counters, &logs, &metrics, &shutdown).await?;
        if !settings.pause_before_commit.is_zero() {
            tracing::warn!(pause = ?settings.pause_before_commit, "pausing before the commit (fault-test hook)");
            tokio::time::sleep(settings.pause_before_commit).await;
        }
        commit(&consumer, &settings.topic, &batch, &metrics);
        metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
    }
    tracing::info!("consumer stopped");
    Ok(())
}

fn receive(message: &rdkafka::message::BorrowedMessage<'_>, metrics: &Metrics) -> Received {
    metrics.messages.inc();
    let event = match message.payload().map(vote_core::decode_event) {
        Some(Ok(event)) => Some(event),
        Some(Err(error)) => {
            tracing::error!(partition = message.partition(), offset = message.offset(), %error, "skipping a message that is not a vote event");
            metrics.poison.inc();
            None
        }
        None => {
            tracing::error!(partition = message.partition(), offset = message.offset(), "skipping a message with no payload");
            metrics.poison.inc();
            None
        }
    };
    Received { partition: message.partition(), offset: message.offset(), event }
}

/// Writes the batch to both stores, retrying until both succeed. Returns an error only if
/// shutdown is requested while the stores are failing (the batch is then read again later).
async fn write_batch(batch: &[Received], counters: &Counters, logs: &Logs, metrics: &Metrics, shutdown: &Shutdown) -> anyhow::Result<()> {
    let events: Vec<VoteEvent> = batch.iter().filter_map(|r| r.event.clone()).collect();
    let counted = with_retries("Redis", metrics, shutdown, || counters.count(&events)).await?;
    metrics.counted.inc_by(counted);
    metrics.duplicates.inc_by(events.len() as u64 - counted);
    let logged = with_retries("MongoDB", metrics, shutdown, || logs.insert(&events)).await?;
    metrics.logged.inc_by(logged);
    tracing::debug!(messages = batch.len(), counted, logged, "batch written");
    Ok(())
}

/// Runs one store write until it succeeds, backing off up to 5 s between attempts; gives up
/// only when shutdown is requested.
async fn with_retries<T, E, F, Fut>(store: &str, metrics: &Metrics, shutdown: &Shutdown, mut write: F) -> anyhow::Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(value) => return Ok(value),
            Err(error) if shutdown.requested() => {
                anyhow::bail!("{store} write failed during shutdown, the batch will be redelivered: {error}")
            }
            Err(error) => {
                tracing::warn!(store, %error, retry_in = ?backoff, "write failed, retrying");
                metrics.write_retries.inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Commits, for each partition of the batch, the offset after its last message.
fn commit(consumer: &StreamConsumer, topic: &str, batch: &[Received], metrics: &Metrics) {
    let mut next: HashMap<i32, i64> = HashMap::new();
    for received in batch {
        let entry = next.entry(received.partition).or_insert(received.offset + 1);
        *entry = (*entry).max(received.offset + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in next {
        if let Err(error) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::error!(%error, partition, "bad offset");
        }
    }
    match consumer.commit(&offsets, CommitMode::Sync) {
        Ok(()) => metrics.commits.inc(),
        // The writes are idempotent: a failed commit only means the batch is read once more.
        Err(error) => tracing::warn!(%error, "offset commit failed; the batch will be redelivered and deduplicated"),
    }
}
