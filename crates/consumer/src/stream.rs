//! Reads a workload's topic that the manifest binds to RabbitMQ (a stream) with the guarantees of
//! a Kafka topic: the stream is one partition (0) whose offsets go to the same Redis script, so
//! each event is counted once per offset and id, logged idempotently, dead-lettered with a reason,
//! and the position is stored on the node only after both writes. A crash in between re-reads the
//! batch from the stored position and the applied offset skips what was counted.

use std::time::{Duration, Instant};

use vote_kafka::Publisher;
use vote_rabbit::reader::ReadError;
use vote_rabbit::{At, RabbitSettings, StreamReader};
use vote_service::Shutdown;
use vote_store::counters::{fingerprint, Behind, CountError, Replayed};
use vote_store::logs::Origin;
use vote_store::{Counters, Logs};

use crate::dlq::{self, DeadLetter, Envelope, Reason};
use crate::health::{Health, Store};
use crate::metrics::Metrics;
use crate::pipeline::{spans_of, wait, Received, Settings, Stopped, FIRST_BACKOFF, MAX_BACKOFF};
use crate::routes::{Item, Route};

/// The `broker` label of this reader's metrics.
const BROKER: &str = "rabbitmq";

/// The partition a stream's records count under: a stream is one ordered log.
const PARTITION: i32 = 0;

/// What Redis keeps a stream's applied offset under: never a Kafka topic's name (`:` is not
/// allowed in those), so moving a topic between brokers starts its offsets afresh.
pub fn counted_as(topic: &str) -> String {
    format!("rabbitmq:{topic}")
}

/// One stream's loop: the reader and what it keeps between batches.
pub struct StreamWorker {
    rabbit: RabbitSettings,
    reader: StreamReader,
    route: Route,
    counters: Counters,
    logs: Logs,
    dead_letters: Publisher,
    settings: Settings,
    metrics: Metrics,
    health: Health,
    shutdown: Shutdown,
    /// Whether the subscription is open, and the offset it was opened at (until a record shows
    /// where the stream really starts).
    opened_at: Option<i64>,
    subscribed: bool,
    /// The first offset still in the stream after records older than it expired: a batch may
    /// start there although Redis applied less.
    floor: i64,
    /// The applied offset found still in the stream (a redelivery, not a recreated stream).
    verified: Option<i64>,
}

impl StreamWorker {
    /// A worker for `route`'s stream on the node at `rabbit`, storing its position under the
    /// consumer group's name.
    #[allow(clippy::too_many_arguments)]
    pub fn new(rabbit: RabbitSettings, route: Route, counters: Counters, logs: Logs, dead_letters: Publisher, settings: Settings, metrics: Metrics, health: Health, shutdown: Shutdown) -> Self {
        let reader = StreamReader::new(rabbit.clone(), &route.topic, &settings.group);
        Self { rabbit, reader, route, counters, logs, dead_letters, settings, metrics, health, shutdown, opened_at: None, subscribed: false, floor: -1, verified: None }
    }

    /// Reads, counts, logs and stores until shutdown.
    pub async fn run(mut self) {
        let topic = self.route.topic.clone();
        tracing::info!(%topic, broker = BROKER, "consuming a rabbitmq stream");
        loop {
            if !self.subscribed && self.subscribe(None).await.is_err() {
                break;
            }
            let Some(batch) = self.next_batch().await else { break };
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            match self.process(batch).await {
                Err(Stopped) => break,
                Ok(None) => {}
                Ok(Some(next)) => {
                    if self.store(next).await.is_err() {
                        break;
                    }
                    self.health.progressed();
                    self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
                }
            }
        }
        self.reader.close().await;
        tracing::info!(%topic, "stopped reading the rabbitmq stream");
    }

    /// Opens the subscription at `from`, or where this group stored its position (the stream's
    /// start if it never did), waiting for the node meanwhile (the health says why).
    async fn subscribe(&mut self, from: Option<i64>) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let opened = async {
                let from = match from {
                    Some(from) => from,
                    None => self.reader.stored().await?.unwrap_or(0),
                };
                self.reader.open(Some(from)).await.map(|()| from)
            }
            .await;
            match opened {
                Ok(from) => {
                    self.health.stream_reachable(&self.route.topic, None);
                    self.opened_at = Some(from);
                    self.subscribed = true;
                    return Ok(());
                }
                Err(ReadError::NoStream(stream)) => {
                    // Like a Kafka topic the stack creates, bounded (vote_rabbit::publisher::STREAM_MAX_BYTES).
                    tracing::info!(%stream, "creating the missing rabbitmq stream");
                    if let Err(error) = vote_rabbit::publisher::ensure_stream(&self.rabbit, &stream).await {
                        tracing::warn!(%error, %stream, "cannot create the rabbitmq stream");
                        self.health.stream_reachable(&self.route.topic, Some(format!("creating stream {stream}: {error}")));
                        wait(backoff, &self.shutdown).await?;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, topic = %self.route.topic, "cannot read the rabbitmq stream");
                    self.health.stream_reachable(&self.route.topic, Some(error.to_string()));
                    wait(backoff, &self.shutdown).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Up to `batch_max` records, waiting for the first and then at most the linger time. Empty
    /// when the subscription ended (it is opened again); `None` on shutdown.
    async fn next_batch(&mut self) -> Option<Vec<Received>> {
        let mut batch = Vec::new();
        let mut shutdown = self.shutdown.clone();
        let first = tokio::select! {
            record = self.reader.next() => record,
            _ = shutdown.wait() => return None,
        };
        if !self.take(first, &mut batch) {
            return Some(batch);
        }
        let deadline = tokio::time::Instant::now() + self.settings.batch_linger;
        while batch.len() < self.settings.batch_max {
            match tokio::time::timeout_at(deadline, self.reader.next()).await {
                Ok(record) => {
                    if !self.take(record, &mut batch) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Adds a record read to the batch; false when the subscription ended or failed.
    fn take(&mut self, record: Option<Result<vote_rabbit::Record, vote_rabbit::reader::ReadError>>, batch: &mut Vec<Received>) -> bool {
        match record {
            Some(Ok(record)) => {
                self.metrics.messages.inc();
                self.metrics.records.with_label_values(&[BROKER, &self.route.topic]).inc();
                if let Some(opened_at) = self.opened_at.take() {
                    if record.offset > opened_at {
                        if opened_at > 0 {
                            let notice = format!("rabbitmq stream {}: records {opened_at} to {} expired before they were counted; run votectl recount to rebuild from the logs", self.route.topic, record.offset - 1);
                            tracing::error!("{notice}");
                            self.health.notice(notice);
                        }
                        self.floor = record.offset;
                    }
                }
                batch.push(Received { route: 0, partition: PARTITION, offset: record.offset, key: record.key, payload: record.payload });
                true
            }
            Some(Err(error)) => {
                tracing::warn!(%error, topic = %self.route.topic, "the rabbitmq subscription failed; opening it again");
                self.subscribed = false;
                false
            }
            None => {
                self.subscribed = false;
                false
            }
        }
    }

    /// Counts, logs and dead-letters one batch. `Some(next)`: done, store `next`; `None`: the
    /// batch was given back (Redis is behind; the stream is read again from what it applied).
    async fn process(&mut self, batch: Vec<Received>) -> Result<Option<i64>, Stopped> {
        let mut dead = Vec::new();
        let mut events = Vec::with_capacity(batch.len());
        let mut items: Vec<(Item, usize)> = Vec::with_capacity(batch.len());
        for (at, received) in batch.iter().enumerate() {
            match self.route.decode(PARTITION, received.offset, received.payload.as_deref()) {
                Ok((event, item)) => {
                    events.push(event);
                    items.push((item, at));
                }
                Err((reason, error)) => {
                    if let Some(workload) = self.route.workload_name() {
                        self.metrics.workload_invalid.with_label_values(&[workload]).inc();
                    }
                    dead.push(self.dead_letter(received, reason, error));
                }
            }
        }
        let counted_as = counted_as(&self.route.topic);
        let mut spans = spans_of(&batch);
        let mut backoff = FIRST_BACKOFF;
        loop {
            for span in spans.iter_mut() {
                span.floor = self.floor;
                span.verified = self.verified;
            }
            let started = Instant::now();
            match self.counters.count(&counted_as, &self.route.aggregates, &spans, &events, false).await {
                Ok(counted) => {
                    self.metrics.store_write_seconds.with_label_values(&[Store::Redis.label()]).observe(started.elapsed().as_secs_f64());
                    if let Some(workload) = self.route.workload_name() {
                        self.metrics.workload_counted(workload, BROKER, &counted, |index| items[index].0.received_at_ms());
                    }
                    self.health.store_reachable(Store::Redis, true);
                    self.floor = -1;
                    break;
                }
                Err(CountError::Event { index, reason }) => {
                    events.remove(index);
                    let (item, at) = items.remove(index);
                    dead.push(self.dead_letter(&batch[at], Reason::RedisRejected, format!("redis refused event {}: {reason}", item.id())));
                }
                Err(CountError::Gap(behind)) => {
                    self.reread(&behind).await?;
                    return Ok(None);
                }
                Err(CountError::Replay(replayed)) => {
                    if let Err(error) = self.check_replays(&replayed).await {
                        tracing::warn!(%error, retry_in = ?backoff, "cannot check the applied offset against the stream, retrying");
                        self.backoff(&mut backoff).await?;
                    }
                }
                Err(error @ (CountError::Full(_) | CountError::Store(_) | CountError::Recounting)) => {
                    tracing::error!(%error, retry_in = ?backoff, "nothing of the batch was counted; waiting");
                    self.health.blocked(Some(error.to_string()));
                    self.backoff(&mut backoff).await?;
                }
                Err(error @ CountError::Unavailable(_)) => {
                    tracing::warn!(%error, retry_in = ?backoff, "counting failed, retrying");
                    self.health.store_reachable(Store::Redis, false);
                    self.backoff(&mut backoff).await?;
                }
            }
        }
        self.log(&items, &batch, &mut dead).await?;
        let mut backoff = FIRST_BACKOFF;
        while !dead.is_empty() {
            let retry_now;
            (dead, retry_now) = dlq::publish_round(&self.dead_letters, &self.settings.dlq_topic, dead, &self.metrics).await;
            if !dead.is_empty() && !retry_now {
                self.backoff(&mut backoff).await?;
            }
        }
        Ok(batch.iter().map(|r| r.offset + 1).max())
    }

    /// Logs the events in the workload's collection; documents MongoDB refuses go to the dead
    /// letters, anything else is waited out (the insert is idempotent).
    async fn log(&mut self, items: &[(Item, usize)], batch: &[Received], dead: &mut Vec<DeadLetter>) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let documents = items.iter().map(|(item, at)| (item, Origin { topic: self.route.topic.clone(), partition: PARTITION, offset: batch[*at].offset }));
            match self.route.log(&self.logs, documents).await {
                Ok(inserted) => {
                    self.metrics.store_write_seconds.with_label_values(&[Store::MongoDb.label()]).observe(started.elapsed().as_secs_f64());
                    if let Some(workload) = self.route.workload_name() {
                        self.metrics.workload_logged.with_label_values(&[workload]).inc_by(inserted.inserted);
                    }
                    for (index, reason) in inserted.rejected {
                        dead.push(self.dead_letter(&batch[items[index].1], Reason::MongodbRejected, reason));
                    }
                    self.health.store_reachable(Store::MongoDb, true);
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "logging failed, retrying");
                    self.health.store_reachable(Store::MongoDb, false);
                    self.backoff(&mut backoff).await?;
                }
            }
        }
    }

    /// Stores on the node that every record before `next` is counted and logged, retrying while
    /// the node is away (then the subscription is opened again from what was stored: anything
    /// read twice is skipped by the applied offset).
    async fn store(&mut self, next: i64) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.reader.store(next).await {
                Ok(()) => {
                    self.metrics.commits.inc();
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "storing the stream position failed; reading again from the stored one");
                    self.subscribed = false;
                    self.backoff(&mut backoff).await?;
                    self.subscribe(None).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Redis holds less than the batch follows (it lost counts): reads the stream again from
    /// after what it applied.
    async fn reread(&mut self, behind: &[Behind]) -> Result<(), Stopped> {
        let applied = behind.iter().map(|b| b.applied).min().unwrap_or(-1);
        let from = applied + 1;
        self.metrics.rewinds.inc();
        let notice = format!("redis was behind on rabbitmq stream {} (applied offset {applied}): re-read from offset {from}", self.route.topic);
        tracing::warn!("{notice}");
        self.health.notice(notice);
        self.subscribe(Some(from)).await
    }

    /// For a batch that re-reads at or before the applied offset: the record Redis counted there
    /// still in the stream (or expired) makes it a redelivery; another one, or none, means the
    /// stream was recreated, and its applied offset is forgotten, loudly.
    async fn check_replays(&mut self, replayed: &[Replayed]) -> anyhow::Result<()> {
        for replay in replayed {
            let found = self.reader.key_at(replay.applied).await?;
            let same = match (&found, &replay.fingerprint) {
                (At::End, _) => false,
                (At::Expired, _) | (At::Record(_), None) => true,
                (At::Record(key), Some(expected)) => fingerprint(key.as_deref()) == *expected,
            };
            if same {
                tracing::info!(topic = %self.route.topic, applied = replay.applied, "a redelivery: the applied offset's record is the one counted");
                self.verified = Some(replay.applied);
                continue;
            }
            let counted_as = counted_as(&self.route.topic);
            if self.counters.resync(&counted_as, PARTITION, replay.applied).await? {
                self.metrics.resyncs.inc();
                let notice = format!("rabbitmq stream {} was recreated (no record or another one at the applied offset {}): counting restarted there; events counted before stay counted", self.route.topic, replay.applied);
                tracing::error!("{notice}");
                self.health.notice(notice);
            }
            self.verified = None;
        }
        Ok(())
    }

    fn dead_letter(&self, received: &Received, reason: Reason, error: String) -> DeadLetter {
        tracing::error!(topic = %self.route.topic, offset = received.offset, reason = reason.label(), %error, "sending a record to the dead-letter topic");
        let envelope = Envelope::new(reason, error, &self.route.topic, PARTITION, received.offset, received.key.as_deref(), received.payload.as_deref(), &self.settings.group);
        (dlq::key_of(received.key.as_deref()), envelope)
    }

    /// Waits `backoff` (then doubles it): the records not read meanwhile wait on the node, and
    /// the subscription's own buffer is bounded by its credit.
    async fn backoff(&mut self, backoff: &mut Duration) -> Result<(), Stopped> {
        self.metrics.write_retries.inc();
        wait(*backoff, &self.shutdown).await?;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}
