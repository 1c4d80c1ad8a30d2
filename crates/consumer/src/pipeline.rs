//! The batch loop: Kafka -> Redis and MongoDB -> dead letters -> offset commit, waiting out temporary failures.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use vote_kafka::{Publisher, PublisherSettings};
use vote_service::Shutdown;
use vote_store::counters::{CountError, Delivery};
use vote_store::{Counters, Logs};

use crate::dlq::{Envelope, Reason};
use crate::health::{Health, Store};
use crate::metrics::Metrics;
use crate::monitor;
use crate::rebalance::{GroupLog, VoteConsumer};

/// The first wait after a failed write; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts, so a store that is back is used within this long.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where the consumer reads from and writes to, and how it batches.
#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    pub topic: String,
    /// Where messages that cannot be counted go, before their offset is committed.
    pub dlq_topic: String,
    pub group: String,
    pub redis_url: String,
    pub mongo_url: String,
    /// The most messages one batch holds.
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first one.
    pub batch_linger: Duration,
    /// The longest the broker holds a fetch that found nothing new (`fetch.wait.max.ms`): how
    /// late a vote arriving at an idle partition is seen, at worst.
    pub fetch_wait: Duration,
    /// How long a vote id is remembered for deduplication.
    pub seen_ttl: Duration,
    /// How long the group coordinator waits for a heartbeat before it drops this member.
    pub session_timeout: Duration,
    /// Fault-test hook: sleep this long between the writes and the commit.
    pub pause_before_commit: Duration,
}

/// One message as read, owned so that it can wait in a batch.
struct Received {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

impl Received {
    fn of(message: &BorrowedMessage<'_>) -> Self {
        Self {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }
}

/// Shutdown was requested while waiting; the batch in hand is not committed (it is read again).
struct Stopped;

/// A message for the dead-letter topic: its key there and its envelope.
type DeadLetter = (Vec<u8>, Envelope);

/// The loop's state: clients, and the messages received while the partitions were paused.
struct Worker {
    settings: Settings,
    consumer: Arc<VoteConsumer>,
    counters: Counters,
    logs: Logs,
    dead_letters: Publisher,
    metrics: Metrics,
    health: Health,
    shutdown: Shutdown,
    /// Messages received during a stall, read before anything new (order per partition kept).
    carry: VecDeque<Received>,
    /// The partitions paused during a stall, resumed once the batch is through.
    paused: Option<TopicPartitionList>,
}

/// Runs the loop until `shutdown` fires; the batch in hand is finished and committed first, or
/// left uncommitted if the stores are failing.
pub async fn run(settings: Settings, metrics: Metrics, health: Health, shutdown: Shutdown) -> anyhow::Result<()> {
    let counters = Counters::connect(&settings.redis_url, settings.seen_ttl)
        .await
        .with_context(|| format!("Redis at {} (--redis-url / VOTES_REDIS_URL)", settings.redis_url))?;
    let logs = Logs::connect(&settings.mongo_url)
        .await
        .with_context(|| format!("connecting to MongoDB at {} (--mongo-url / VOTES_MONGO_URL)", settings.mongo_url))?;
    let dead_letters = Publisher::new(&PublisherSettings::new(&settings.brokers, format!("consumer-{}-dlq", settings.group)))
        .context("creating the dead-letter producer")?;
    let consumer: VoteConsumer = vote_kafka::consumer_config(&settings.brokers, &settings.group)
        .set("session.timeout.ms", settings.session_timeout.as_millis().to_string())
        .set("fetch.wait.max.ms", settings.fetch_wait.as_millis().to_string())
        .create_with_context(GroupLog)
        .context("creating the Kafka consumer")?;
    consumer.subscribe(&[&settings.topic]).context("subscribing to the votes topic")?;
    let consumer = Arc::new(consumer);
    monitor::spawn(consumer.clone(), counters.clone(), logs.clone(), health.clone(), metrics.clone());
    tracing::info!(topic = %settings.topic, dlq = %settings.dlq_topic, group = %settings.group, "consuming");

    let mut worker = Worker { settings, consumer, counters, logs, dead_letters, metrics, health, shutdown, carry: VecDeque::new(), paused: None };
    while let Some(batch) = worker.next_batch().await {
        let started = Instant::now();
        if worker.process(&batch).await.is_err() {
            tracing::warn!(messages = batch.len(), "stopping with a batch not written; it will be read again");
            break;
        }
        let pause = worker.settings.pause_before_commit;
        if !pause.is_zero() {
            tracing::warn!(?pause, "pausing before the commit (fault-test hook)");
            tokio::time::sleep(pause).await;
        }
        worker.commit(&batch);
        worker.health.progressed();
        worker.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
    }
    tracing::info!("consumer stopped");
    Ok(())
}

impl Worker {
    fn receive(&mut self, message: Result<BorrowedMessage<'_>, rdkafka::error::KafkaError>) -> Option<Received> {
        match message {
            Ok(message) => {
                self.metrics.messages.inc();
                Some(Received::of(&message))
            }
            Err(error) => {
                tracing::warn!(%error, "kafka receive error");
                None
            }
        }
    }

    /// The next batch: carried messages first, then up to `batch_max` within the linger time
    /// after the first. `None` once shutdown is requested.
    async fn next_batch(&mut self) -> Option<Vec<Received>> {
        let take = self.carry.len().min(self.settings.batch_max);
        let mut batch: Vec<Received> = self.carry.drain(..take).collect();
        let consumer = self.consumer.clone();
        while batch.is_empty() {
            let message = tokio::select! {
                message = consumer.recv() => message,
                _ = self.shutdown.wait() => return None,
            };
            batch.extend(self.receive(message));
        }
        let deadline = tokio::time::Instant::now() + self.settings.batch_linger;
        while batch.len() < self.settings.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(message) => batch.extend(self.receive(message)),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Decodes, counts, logs and dead-letters one batch; returns once all of it is done.
    async fn process(&mut self, batch: &[Received]) -> Result<(), Stopped> {
        let mut dead = Vec::new();
        let mut votes = Vec::with_capacity(batch.len());
        let mut origins = Vec::with_capacity(batch.len());
        for (at, received) in batch.iter().enumerate() {
            let decoded = match &received.payload {
                Some(payload) => vote_core::decode_event(payload).map_err(|e| (Reason::of_event_error(&e), e.to_string())),
                None => Err((Reason::Undecodable, "the record has no payload".to_owned())),
            };
            match decoded {
                Ok(event) => {
                    votes.push(Delivery { partition: received.partition, offset: received.offset, event });
                    origins.push(at);
                }
                Err((reason, error)) => {
                    self.metrics.poison.inc();
                    dead.push(self.dead_letter(received, reason, error));
                }
            }
        }
        self.count(&mut votes, &mut origins, batch, &mut dead).await?;
        self.log(&votes, &origins, batch, &mut dead).await?;
        self.publish_dead_letters(dead).await?;
        if let Some(paused) = self.paused.take() {
            // Partitions revoked meanwhile cannot be resumed, and need not be.
            let _ = self.consumer.resume(&paused);
            tracing::info!("stores answer again; partitions resumed");
        }
        Ok(())
    }

    fn dead_letter(&self, received: &Received, reason: Reason, error: String) -> DeadLetter {
        tracing::error!(partition = received.partition, offset = received.offset, reason = reason.label(), %error, "sending a message to the dead-letter topic");
        let envelope = Envelope::new(
            reason,
            error,
            &self.settings.topic,
            received.partition,
            received.offset,
            received.key.as_deref(),
            received.payload.as_deref(),
            &self.settings.group,
        );
        (received.key.clone().unwrap_or_default(), envelope)
    }

    /// Counts the votes in Redis; a vote Redis refuses goes to the dead letters and the rest is
    /// tried again at once; anything else is waited out.
    async fn count(&mut self, votes: &mut Vec<Delivery>, origins: &mut Vec<usize>, batch: &[Received], dead: &mut Vec<DeadLetter>) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            match self.counters.count(&self.settings.topic, votes).await {
                Ok(counted) => {
                    self.metrics.store_write_seconds.with_label_values(&[Store::Redis.label()]).observe(started.elapsed().as_secs_f64());
                    let now = vote_core::now_ms();
                    for &index in &counted.newly_counted {
                        let received_at = votes[index].event.received_at_ms;
                        self.metrics.visible_seconds.observe((now - received_at).max(0) as f64 / 1000.0);
                    }
                    self.metrics.counted.inc_by(counted.counted);
                    self.metrics.duplicates.inc_by(counted.skipped);
                    self.health.store_reachable(Store::Redis, true);
                    return Ok(());
                }
                Err(CountError::Vote { index, reason }) => {
                    let vote = votes.remove(index);
                    let at = origins.remove(index);
                    let reason = format!("redis refused vote {}: {reason}", vote.event.vote_id);
                    dead.push(self.dead_letter(&batch[at], Reason::RedisRejected, reason));
                }
                Err(CountError::Store(reason)) => {
                    tracing::error!(%reason, "the Redis counters are damaged and need an operator; nothing of the batch was counted, retrying");
                    self.stall(&mut backoff).await?;
                }
                Err(error @ CountError::Unavailable(_)) => {
                    tracing::warn!(%error, retry_in = ?backoff, "counting failed, retrying");
                    self.health.store_reachable(Store::Redis, false);
                    self.stall(&mut backoff).await?;
                }
            }
        }
    }

    /// Logs the votes in MongoDB; documents it refuses go to the dead letters, anything else
    /// is waited out (the insert is idempotent).
    async fn log(&mut self, votes: &[Delivery], origins: &[usize], batch: &[Received], dead: &mut Vec<DeadLetter>) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            match self.logs.insert(votes.iter().map(|vote| &vote.event)).await {
                Ok(inserted) => {
                    self.metrics.store_write_seconds.with_label_values(&[Store::MongoDb.label()]).observe(started.elapsed().as_secs_f64());
                    self.metrics.logged.inc_by(inserted.inserted);
                    for (index, reason) in inserted.rejected {
                        dead.push(self.dead_letter(&batch[origins[index]], Reason::MongodbRejected, reason));
                    }
                    self.health.store_reachable(Store::MongoDb, true);
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "logging failed, retrying");
                    self.health.store_reachable(Store::MongoDb, false);
                    self.stall(&mut backoff).await?;
                }
            }
        }
    }

    /// Publishes the dead letters and waits for every acknowledgement.
    async fn publish_dead_letters(&mut self, mut pending: Vec<DeadLetter>) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        while !pending.is_empty() {
            let topic = self.settings.dlq_topic.clone();
            let sends = pending.iter().map(|(key, envelope)| {
                let (publisher, topic) = (self.dead_letters.clone(), topic.clone());
                let payload = envelope.to_json();
                async move { publisher.publish(&topic, key, &payload, &[]).await }
            });
            let results = futures::future::join_all(sends).await;
            let mut failed = Vec::new();
            for ((key, envelope), result) in pending.into_iter().zip(results) {
                match result {
                    Ok(ack) => {
                        self.metrics.dlq.with_label_values(&[envelope.reason.label()]).inc();
                        tracing::info!(partition = envelope.partition, offset = envelope.offset, dlq_partition = ack.partition, dlq_offset = ack.offset, "dead letter stored");
                    }
                    Err(error) => {
                        tracing::warn!(%error, partition = envelope.partition, offset = envelope.offset, "dead letter not stored, retrying");
                        failed.push((key, envelope));
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                self.stall(&mut backoff).await?;
            }
        }
        Ok(())
    }

    /// Waits `backoff` (then doubles it, up to [`MAX_BACKOFF`]) with the partitions paused,
    /// still polling so the consumer keeps its place in the group; messages already fetched are
    /// carried into the next batch.
    async fn stall(&mut self, backoff: &mut Duration) -> Result<(), Stopped> {
        self.metrics.write_retries.inc();
        if self.paused.is_none() {
            if let Ok(assignment) = self.consumer.assignment() {
                if self.consumer.pause(&assignment).is_ok() {
                    self.paused = Some(assignment);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        let consumer = self.consumer.clone();
        loop {
            let message = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                _ = self.shutdown.wait() => return Err(Stopped),
                message = consumer.recv() => message,
            };
            if let Some(received) = self.receive(message) {
                self.carry.push_back(received);
            }
        }
    }

    /// Commits, for each partition of the batch, the offset after its last message.
    fn commit(&self, batch: &[Received]) {
        let mut next: HashMap<i32, i64> = HashMap::new();
        for received in batch {
            let entry = next.entry(received.partition).or_insert(received.offset + 1);
            *entry = (*entry).max(received.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            if let Err(error) = offsets.add_partition_offset(&self.settings.topic, partition, Offset::Offset(offset)) {
                tracing::error!(%error, partition, "bad offset");
            }
        }
        match self.consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => self.metrics.commits.inc(),
            // The writes are idempotent: a failed commit only means the batch is read once more.
            Err(error) => tracing::warn!(%error, "offset commit failed; the batch will be redelivered and skipped by the applied offsets"),
        }
    }
}
