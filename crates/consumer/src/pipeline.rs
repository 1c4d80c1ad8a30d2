//! The batch loop: Kafka -> Redis and MongoDB -> dead letters -> offset commit, waiting out
//! temporary failures, re-reading what Redis lost and resynchronising a recreated topic. A batch
//! read from several topics (the votes and the manifest's workloads) is split by topic, and each
//! topic's part goes through the loop on its own: counted, logged, dead-lettered and committed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use vote_kafka::{Publisher, PublisherSettings};
use vote_service::Shutdown;
use vote_platform::workload::Broker;
use vote_platform::WorkloadSpec;
use vote_store::counters::{fingerprint, Aggregate, Behind, CountError, Event, Replayed, Span};
use vote_store::logs::Origin;
use vote_store::{votes, Counters, Logs};

use crate::dlq::{self, DeadLetter, Envelope, Reason};
use crate::health::{Health, Store};
use crate::metrics::Metrics;
use crate::monitor;
use crate::rebalance::{GroupLog, VoteConsumer};
use crate::routes::{Item, Route};
use crate::stream::StreamWorker;
use crate::verify::{self, Verdict};

/// The first wait after a failed write; it doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts, so a store that is back is used within this long.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one broker request of a rewind or a check may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle consumer checks that Redis holds what the group committed.
const BEHIND_CHECK: Duration = Duration::from_secs(5);

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
    /// How long an idempotency key is remembered for deduplication of client retries.
    pub seen_ttl: Duration,
    /// The most distinct band (and album) names the leaderboards hold.
    pub name_cap: u64,
    /// How long the group coordinator waits for a heartbeat before it drops this member.
    pub session_timeout: Duration,
    /// Fault-test hook: sleep this long between the writes and the commit.
    pub pause_before_commit: Duration,
    /// The manifest's JSON workloads: each one's topic is read too, its events counted by its
    /// spec and logged in its collection (empty: the votes topic only).
    pub workloads: Vec<WorkloadSpec>,
    /// The RabbitMQ node's stream listener, for the workloads bound to RabbitMQ (their topics are
    /// streams there, read by [`crate::stream`]).
    pub rabbitmq: Option<vote_rabbit::RabbitSettings>,
}

impl Settings {
    /// The most records kept aside while the stores are failing; past it records are dropped
    /// and their partition re-read from the first one dropped.
    fn carry_bound(&self) -> usize {
        self.batch_max.saturating_mul(4).max(64)
    }
}

/// One message as read, owned so that it can wait in a batch.
pub(crate) struct Received {
    /// The index of its topic's [`Route`].
    pub(crate) route: usize,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
}

impl Received {
    fn of(route: usize, message: &BorrowedMessage<'_>) -> Self {
        Self {
            route,
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }
}

/// Shutdown was requested while waiting; the batch in hand is not committed (it is read again).
pub(crate) struct Stopped;

/// What became of a batch.
enum Outcome {
    /// Written to both stores and dead-lettered: commit it.
    Done,
    /// Redis was behind on some partitions: those are re-read from there, the rest of the batch
    /// was put back in front; nothing was written or is committed.
    Rewound,
}


/// The records of a batch that decoded (votes or one workload's events): each with its index in
/// the batch.
struct Decoded {
    events: Vec<Event>,
    items: Vec<(Item, usize)>,
}

impl Decoded {
    fn remove(&mut self, index: usize) -> (Item, usize) {
        self.events.remove(index);
        self.items.remove(index)
    }
}

/// A partition of one route's topic.
type Partition = (usize, i32);

/// The loop's state: clients, and what it keeps between batches.
struct Worker {
    settings: Settings,
    consumer: Arc<VoteConsumer>,
    counters: Counters,
    /// The topics read: the votes first, then each workload's.
    routes: Vec<Route>,
    logs: Logs,
    dead_letters: Publisher,
    metrics: Metrics,
    health: Health,
    shutdown: Shutdown,
    /// Messages received during a stall, read before anything new (order per partition kept).
    carry: VecDeque<Received>,
    /// Whether the assignment is paused (a stall), resumed once the batch is through.
    paused: bool,
    /// Partitions whose records were dropped at the carry bound, and the first offset dropped:
    /// re-read from there once the stall is over.
    dropped: BTreeMap<Partition, i64>,
    /// Per partition, the first offset still in the log after a rewind found older records
    /// expired: a batch may start there although Redis applied less.
    floors: HashMap<Partition, i64>,
    /// Per partition, the applied offset whose record was found still in the log.
    verified: HashMap<Partition, i64>,
}

/// Connects to the stores (waiting for them, with the reason in the health), then runs the loop
/// until `shutdown` fires; the batch in hand is finished and committed first, or left
/// uncommitted if the stores are failing.
pub async fn run(settings: Settings, metrics: Metrics, health: Health, shutdown: Shutdown) -> anyhow::Result<()> {
    let aggregates = votes::aggregates(settings.name_cap);
    let Some((counters, logs)) = connect_stores(&settings, &aggregates, &health, &shutdown).await else {
        tracing::info!("consumer stopped before the stores answered");
        return Ok(());
    };
    let Some(mut routes) = routes(&settings, &logs, &health, &shutdown).await else {
        tracing::info!("consumer stopped before the workloads' log collections were ready");
        return Ok(());
    };
    let dead_letters = Publisher::new(&PublisherSettings::new(&settings.brokers, format!("consumer-{}-dlq", settings.group)))
        .context("creating the dead-letter producer")?;
    let on_rabbit: Vec<Route> = {
        let (rabbit, kafka): (Vec<Route>, Vec<Route>) = routes.into_iter().partition(|route| route.workload.as_ref().is_some_and(|w| w.spec.broker == Broker::Rabbitmq));
        routes = kafka;
        rabbit
    };
    let mut streams = Vec::new();
    for route in on_rabbit {
        let rabbit = settings.rabbitmq.clone().with_context(|| format!("workload topic {} is bound to rabbitmq: give its node with --rabbitmq", route.topic))?;
        if let Some(workload) = route.workload_name() {
            metrics.start_workload(workload, "rabbitmq");
        }
        let worker = StreamWorker::new(rabbit, route, counters.clone(), logs.clone(), dead_letters.clone(), settings.clone(), metrics.clone(), health.clone(), shutdown.clone());
        streams.push(tokio::spawn(worker.run()));
    }
    for workload in routes.iter().filter_map(Route::workload_name) {
        metrics.start_workload(workload, "kafka");
    }
    let topics: Vec<&str> = routes.iter().map(|route| route.topic.as_str()).collect();
    let consumer: VoteConsumer = vote_kafka::consumer_config(&settings.brokers, &settings.group)
        .set("session.timeout.ms", settings.session_timeout.as_millis().to_string())
        .set("fetch.wait.max.ms", settings.fetch_wait.as_millis().to_string())
        .create_with_context(GroupLog)
        .context("creating the Kafka consumer")?;
    consumer.subscribe(&topics).with_context(|| format!("subscribing to the topics {topics:?}"))?;
    let consumer = Arc::new(consumer);
    let workloads = routes.iter().filter_map(|route| Some((route.topic.clone(), route.workload_name()?.to_owned()))).collect();
    monitor::spawn(consumer.clone(), counters.clone(), logs.clone(), health.clone(), metrics.clone(), workloads);
    health.starting(None);
    tracing::info!(topics = ?topics, dlq = %settings.dlq_topic, group = %settings.group, "consuming");

    let mut worker = Worker {
        settings,
        consumer,
        counters,
        routes,
        logs,
        dead_letters,
        metrics,
        health,
        shutdown,
        carry: VecDeque::new(),
        paused: false,
        dropped: BTreeMap::new(),
        floors: HashMap::new(),
        verified: HashMap::new(),
    };
    'batches: while let Some(batch) = worker.next_batch().await {
        let started = Instant::now();
        for (route, batch) in split_by_route(batch) {
            match worker.process(route, batch).await {
                Err(Stopped) => {
                    tracing::warn!("stopping with a batch not written; it will be read again");
                    break 'batches;
                }
                Ok((Outcome::Rewound, _)) => continue,
                Ok((Outcome::Done, batch)) => {
                    let pause = worker.settings.pause_before_commit;
                    if !pause.is_zero() {
                        tracing::warn!(?pause, "pausing before the commit (fault-test hook)");
                        tokio::time::sleep(pause).await;
                    }
                    worker.commit(route, &batch);
                    worker.health.progressed();
                    worker.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
                }
            }
        }
    }
    for stream in streams {
        let _ = stream.await;
    }
    tracing::info!("consumer stopped");
    Ok(())
}

/// Waits until Redis (with a safe eviction policy) and MongoDB answer; the health says what it
/// waits for. `None` if shutdown came first.
async fn connect_stores(settings: &Settings, aggregates: &[Aggregate], health: &Health, shutdown: &Shutdown) -> Option<(Counters, Logs)> {
    let redis = format!("redis at {} (--redis-url / VOTES_REDIS_URL)", settings.redis_url);
    let counters = retry_until_connected(&redis, health, shutdown, || Counters::connect(&settings.redis_url, settings.seen_ttl, aggregates)).await?;
    let mongo = format!("mongodb at {} (--mongo-url / VOTES_MONGO_URL)", settings.mongo_url);
    let logs = retry_until_connected(&mongo, health, shutdown, || Logs::connect(&settings.mongo_url)).await?;
    match counters.durability().await {
        Ok(durability) => durability.notices().into_iter().for_each(|notice| health.notice(notice)),
        Err(error) => tracing::warn!(%error, "cannot read redis' persistence settings"),
    }
    if counters.recount_incomplete().await.unwrap_or(false) {
        health.notice("a votectl recount started and did not finish: the counters are incomplete until it is run again".to_owned());
    }
    Some((counters, logs))
}

/// The routes: the votes topic, then each workload's topic (its log collection's indexes made
/// sure of, waiting for MongoDB). `None` if shutdown came first.
async fn routes(settings: &Settings, logs: &Logs, health: &Health, shutdown: &Shutdown) -> Option<Vec<Route>> {
    let mut routes = vec![Route::votes(&settings.topic, settings.name_cap)];
    for spec in &settings.workloads {
        let what = format!("mongodb at {} (the indexes of votes.{})", settings.mongo_url, spec.collection());
        routes.push(retry_until_connected(&what, health, shutdown, || Route::workload(spec, logs.client())).await?);
    }
    Some(routes)
}

/// Calls `connect` until it succeeds, every [`MAX_BACKOFF`], with `what` and the error as the
/// health's starting reason meanwhile. `None` if shutdown came first.
pub(crate) async fn retry_until_connected<T, E, F, Fut>(what: &str, health: &Health, shutdown: &Shutdown, mut connect: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        match connect().await {
            Ok(connected) => return Some(connected),
            Err(error) => {
                let why = format!("{what}: {error}");
                tracing::warn!("waiting for {why}");
                health.starting(Some(why));
                wait(MAX_BACKOFF, shutdown).await.ok()?;
            }
        }
    }
}

/// Sleeps `period`, or returns early with [`Stopped`] on shutdown.
pub(crate) async fn wait(period: Duration, shutdown: &Shutdown) -> Result<(), Stopped> {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(period) => Ok(()),
        _ = shutdown.wait() => Err(Stopped),
    }
}

/// A batch split by topic, each part in the order read (so in offset order per partition).
fn split_by_route(batch: Vec<Received>) -> Vec<(usize, Vec<Received>)> {
    let mut parts: Vec<(usize, Vec<Received>)> = Vec::new();
    for received in batch {
        match parts.iter_mut().find(|(route, _)| *route == received.route) {
            Some((_, part)) => part.push(received),
            None => parts.push((received.route, vec![received])),
        }
    }
    parts
}

/// The spans of a batch (of one topic): per partition the first and last offset read and the last record's
/// fingerprint.
pub(crate) fn spans_of(batch: &[Received]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for received in batch {
        let fingerprint = fingerprint(received.key.as_deref());
        match spans.iter_mut().find(|span| span.partition == received.partition) {
            Some(span) => {
                span.first = span.first.min(received.offset);
                if received.offset >= span.last {
                    span.last = received.offset;
                    span.last_fingerprint = fingerprint;
                }
            }
            None => spans.push(Span::new(received.partition, received.offset, received.offset, fingerprint)),
        }
    }
    spans
}


impl Worker {
    fn receive(&mut self, message: Result<BorrowedMessage<'_>, rdkafka::error::KafkaError>) -> Option<Received> {
        match message {
            Ok(message) => {
                self.metrics.messages.inc();
                self.metrics.records.with_label_values(&["kafka", message.topic()]).inc();
                match self.routes.iter().position(|route| route.topic == message.topic()) {
                    Some(route) => Some(Received::of(route, &message)),
                    None => {
                        tracing::warn!(topic = message.topic(), "a record of a topic this consumer does not read; ignored");
                        None
                    }
                }
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
        let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + BEHIND_CHECK, BEHIND_CHECK);
        while batch.is_empty() {
            let message = tokio::select! {
                message = consumer.recv() => message,
                _ = self.shutdown.wait() => return None,
                _ = idle.tick() => {
                    self.rewind_where_redis_is_behind().await;
                    continue;
                }
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

    /// Decodes, counts, logs and dead-letters one batch of the topic of `route`; returns once
    /// all of it is done, or once it was put back because Redis is behind.
    async fn process(&mut self, route: usize, batch: Vec<Received>) -> Result<(Outcome, Vec<Received>), Stopped> {
        let mut dead = Vec::new();
        let mut decoded = Decoded { events: Vec::with_capacity(batch.len()), items: Vec::with_capacity(batch.len()) };
        for (at, received) in batch.iter().enumerate() {
            match self.routes[route].decode(received.partition, received.offset, received.payload.as_deref()) {
                Ok((event, item)) => {
                    decoded.events.push(event);
                    decoded.items.push((item, at));
                }
                Err((reason, error)) => {
                    match self.routes[route].workload_name() {
                        None => self.metrics.poison.inc(),
                        Some(workload) => self.metrics.workload_invalid.with_label_values(&[workload]).inc(),
                    }
                    dead.push(self.dead_letter(received, reason, error));
                }
            }
        }
        let mut spans = spans_of(&batch);
        if let Some(behind) = self.count(route, &mut spans, &mut decoded, &batch, &mut dead).await? {
            self.rewind(route, &behind, batch).await;
            // A stall before the gap paused the assignment: the re-read needs it fetching.
            self.resume().await;
            return Ok((Outcome::Rewound, Vec::new()));
        }
        self.log(route, &decoded.items, &batch, &mut dead).await?;
        self.publish_dead_letters(dead).await?;
        self.resume().await;
        Ok((Outcome::Done, batch))
    }

    fn dead_letter(&self, received: &Received, reason: Reason, error: String) -> DeadLetter {
        let topic = &self.routes[received.route].topic;
        tracing::error!(topic, partition = received.partition, offset = received.offset, reason = reason.label(), %error, "sending a message to the dead-letter topic");
        let envelope = Envelope::new(
            reason,
            error,
            topic,
            received.partition,
            received.offset,
            received.key.as_deref(),
            received.payload.as_deref(),
            &self.settings.group,
        );
        (dlq::key_of(received.key.as_deref()), envelope)
    }

    /// Counts the batch (of the topic of `route`) in Redis; an event Redis refuses goes to the
    /// dead letters and the rest is tried again at once; a replay is checked against the log;
    /// anything else is waited out. Returns the partitions Redis is behind on, if any (nothing
    /// was written then).
    async fn count(&mut self, route: usize, spans: &mut [Span], decoded: &mut Decoded, batch: &[Received], dead: &mut Vec<DeadLetter>) -> Result<Option<Vec<Behind>>, Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            for span in spans.iter_mut() {
                span.floor = self.floors.get(&(route, span.partition)).copied().unwrap_or(-1);
                span.verified = self.verified.get(&(route, span.partition)).copied();
            }
            let started = Instant::now();
            let (topic, aggregates) = (&self.routes[route].topic, &self.routes[route].aggregates);
            match self.counters.count(topic, aggregates, spans, &decoded.events, false).await {
                Ok(counted) => {
                    self.metrics.store_write_seconds.with_label_values(&[Store::Redis.label()]).observe(started.elapsed().as_secs_f64());
                    match self.routes[route].workload_name() {
                        None => {
                            let now = vote_core::now_ms();
                            for &index in &counted.newly_counted {
                                let received_at = decoded.items[index].0.received_at_ms();
                                self.metrics.visible_seconds.observe((now - received_at).max(0) as f64 / 1000.0);
                            }
                            self.metrics.counted.inc_by(counted.counted);
                            self.metrics.duplicates.inc_by(counted.skipped);
                            self.metrics.overflowed.inc_by(counted.overflowed);
                        }
                        Some(workload) => self.metrics.workload_counted(workload, "kafka", &counted, |index| decoded.items[index].0.received_at_ms()),
                    }
                    self.health.store_reachable(Store::Redis, true);
                    for span in spans.iter() {
                        self.floors.remove(&(route, span.partition));
                    }
                    return Ok(None);
                }
                Err(CountError::Event { index, reason }) => {
                    let (item, at) = decoded.remove(index);
                    let what = if self.routes[route].workload.is_some() { "event" } else { "vote" };
                    let reason = format!("redis refused {what} {}: {reason}", item.id());
                    dead.push(self.dead_letter(&batch[at], Reason::RedisRejected, reason));
                }
                Err(CountError::Gap(behind)) => return Ok(Some(behind)),
                Err(CountError::Replay(replayed)) => {
                    if let Err(error) = self.check_replays(route, &replayed).await {
                        tracing::warn!(%error, retry_in = ?backoff, "cannot check the applied offsets against the log, retrying");
                        self.stall(&mut backoff).await?;
                    }
                }
                Err(error @ (CountError::Full(_) | CountError::Store(_) | CountError::Recounting)) => {
                    tracing::error!(%error, retry_in = ?backoff, "nothing of the batch was counted; waiting");
                    self.health.store_reachable(Store::Redis, true);
                    self.health.blocked(Some(error.to_string()));
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

    /// For each partition the batch replays, reads the record at its applied offset: the same
    /// record (or one expired) makes it a redelivery; another one means the topic was recreated
    /// or reset, and the partition's applied offset is forgotten, loudly.
    async fn check_replays(&mut self, route: usize, replayed: &[Replayed]) -> anyhow::Result<()> {
        for replay in replayed {
            let (brokers, topic) = (self.settings.brokers.clone(), self.routes[route].topic.clone());
            let (partition, applied, expected) = (replay.partition, replay.applied, replay.fingerprint.clone());
            let checked = topic.clone();
            let verdict = tokio::task::spawn_blocking(move || verify::check(&brokers, &checked, partition, applied, expected.as_deref(), BROKER_TIMEOUT)).await??;
            match verdict {
                Verdict::Same | Verdict::Unknown => {
                    tracing::info!(topic, partition, applied, ?verdict, "a redelivery: the applied offset's record is the one counted");
                    self.verified.insert((route, partition), applied);
                }
                Verdict::Reset(why) => {
                    if self.counters.resync(&topic, partition, applied).await? {
                        self.metrics.resyncs.inc();
                        let what = if self.routes[route].workload.is_some() { "events" } else { "votes" };
                        let notice = format!("partition {partition} of {topic} was recreated or reset ({why}): counting restarted there; {what} counted before stay counted");
                        tracing::error!("{notice}");
                        self.health.notice(notice);
                    }
                    self.verified.remove(&(route, partition));
                }
            }
        }
        Ok(())
    }

    /// Re-reads each partition of the topic of `route` Redis is behind on from after its applied
    /// offset (or from the oldest record still in the log), and puts the rest of the batch back
    /// in front.
    async fn rewind(&mut self, route: usize, behind: &[Behind], batch: Vec<Received>) {
        let partitions: HashSet<Partition> = behind.iter().map(|b| (route, b.partition)).collect();
        let kept: Vec<Received> = batch.into_iter().filter(|r| !partitions.contains(&(r.route, r.partition))).collect();
        self.carry.retain(|r| !partitions.contains(&(r.route, r.partition)));
        for received in kept.into_iter().rev() {
            self.carry.push_front(received);
        }
        for lag in behind {
            let mut from = lag.applied + 1;
            let (consumer, topic, partition) = (self.consumer.clone(), self.routes[route].topic.clone(), lag.partition);
            let watermarks = tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, BROKER_TIMEOUT)).await;
            if let Ok(Ok((low, _))) = watermarks {
                if low > from {
                    let notice = format!(
                        "partition {partition}{}: records {from} to {} expired from the log before redis kept their counts; run votectl recount to rebuild from the logs",
                        self.topic_suffix(route),
                        low - 1
                    );
                    tracing::error!("{notice}");
                    self.health.notice(notice);
                    self.floors.insert((route, partition), low);
                    from = low;
                }
            }
            self.metrics.rewinds.inc();
            let notice = format!("redis was behind on partition {partition}{} (applied offset {}): re-read from offset {from}", self.topic_suffix(route), lag.applied);
            tracing::warn!("{notice}");
            self.health.notice(notice);
            self.dropped.remove(&(route, partition));
            if let Err(error) = self.consumer.seek(&self.routes[route].topic, partition, Offset::Offset(from), BROKER_TIMEOUT) {
                tracing::warn!(%error, partition, "seek failed; the partition is re-read from its committed offset after the next rebalance");
            }
        }
    }

    /// While idle: for each assigned partition whose committed offset is past what Redis applied
    /// (Redis came back older, and no new record arrives there to show the gap), re-reads from
    /// the applied offset.
    async fn rewind_where_redis_is_behind(&mut self) {
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let assignment = consumer.assignment()?;
            consumer.committed_offsets(assignment, BROKER_TIMEOUT)
        })
        .await;
        let Ok(Ok(committed)) = committed else { return };
        for route in 0..self.routes.len() {
            let positions: Vec<(i32, i64)> = committed
                .elements_for_topic(&self.routes[route].topic)
                .iter()
                .filter_map(|element| match element.offset() {
                    Offset::Offset(next) => Some((element.partition(), next)),
                    _ => None,
                })
                .collect();
            if positions.is_empty() {
                continue;
            }
            let partitions: Vec<i32> = positions.iter().map(|(partition, _)| *partition).collect();
            // Without an epoch Redis lost everything: every partition is behind from -1. With one, a
            // partition it never applied (-1) is left alone: nothing says its counts are missing.
            let (applied, lost_everything) = match self.counters.applied(&self.routes[route].topic, &partitions).await {
                Ok(Some(applied)) => (applied, false),
                Ok(None) => (vec![-1; partitions.len()], true),
                Err(_) => return,
            };
            let behind: Vec<Behind> = positions
                .iter()
                .zip(applied)
                .filter(|((_, next), applied)| (*applied >= 0 || lost_everything) && *next > *applied + 1)
                .map(|((partition, _), applied)| Behind { partition: *partition, applied })
                .collect();
            if !behind.is_empty() {
                self.rewind(route, &behind, Vec::new()).await;
            }
        }
    }

    /// `" of <topic>"` for a workload's topic, nothing for the votes (notices read as before).
    fn topic_suffix(&self, route: usize) -> String {
        match self.routes[route].workload {
            Some(_) => format!(" of {}", self.routes[route].topic),
            None => String::new(),
        }
    }

    /// Logs the votes (or the workload's events) in MongoDB; documents it refuses go to the
    /// dead letters, anything else is waited out (the insert is idempotent).
    async fn log(&mut self, route: usize, items: &[(Item, usize)], batch: &[Received], dead: &mut Vec<DeadLetter>) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let topic = &self.routes[route].topic;
            let documents = items.iter().map(|(item, at)| {
                let received = &batch[*at];
                (item, Origin { topic: topic.clone(), partition: received.partition, offset: received.offset })
            });
            match self.routes[route].log(&self.logs, documents).await {
                Ok(inserted) => {
                    self.metrics.store_write_seconds.with_label_values(&[Store::MongoDb.label()]).observe(started.elapsed().as_secs_f64());
                    match self.routes[route].workload_name() {
                        None => self.metrics.logged.inc_by(inserted.inserted),
                        Some(workload) => self.metrics.workload_logged.with_label_values(&[workload]).inc_by(inserted.inserted),
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
                    self.stall(&mut backoff).await?;
                }
            }
        }
    }

    /// Publishes the dead letters and waits for every acknowledgement ([`dlq::publish_round`]);
    /// a broker that is away is waited out.
    async fn publish_dead_letters(&mut self, mut pending: Vec<DeadLetter>) -> Result<(), Stopped> {
        let mut backoff = FIRST_BACKOFF;
        while !pending.is_empty() {
            let retry_now;
            (pending, retry_now) = dlq::publish_round(&self.dead_letters, &self.settings.dlq_topic, pending, &self.metrics).await;
            if !pending.is_empty() && !retry_now {
                self.stall(&mut backoff).await?;
            }
        }
        Ok(())
    }

    /// Waits `backoff` (then doubles it, up to [`MAX_BACKOFF`]) with the whole assignment paused
    /// (again each time: partitions assigned meanwhile too), still polling so the consumer keeps
    /// its place in the group. Messages already fetched are carried into the next batch, up to a
    /// bound; past it they are dropped and their partition re-read later from the first dropped.
    async fn stall(&mut self, backoff: &mut Duration) -> Result<(), Stopped> {
        self.metrics.write_retries.inc();
        if let Ok(assignment) = self.consumer.assignment() {
            if self.consumer.pause(&assignment).is_ok() {
                self.paused = true;
            }
        }
        let deadline = tokio::time::Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        let consumer = self.consumer.clone();
        let bound = self.settings.carry_bound();
        loop {
            let message = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                _ = self.shutdown.wait() => return Err(Stopped),
                message = consumer.recv() => message,
            };
            let Some(received) = self.receive(message) else { continue };
            let partition = (received.route, received.partition);
            if self.dropped.contains_key(&partition) || self.carry.len() >= bound {
                self.metrics.carry_dropped.inc();
                let first = self.dropped.entry(partition).or_insert(received.offset);
                *first = (*first).min(received.offset);
            } else {
                self.carry.push_back(received);
            }
        }
    }

    /// After a stall: resumes the assignment and re-reads the partitions dropped at the bound.
    async fn resume(&mut self) {
        if !self.paused {
            return;
        }
        self.paused = false;
        if let Ok(assignment) = self.consumer.assignment() {
            // Partitions revoked meanwhile cannot be resumed, and need not be.
            let _ = self.consumer.resume(&assignment);
        }
        for ((route, partition), from) in std::mem::take(&mut self.dropped) {
            if let Err(error) = self.consumer.seek(&self.routes[route].topic, partition, Offset::Offset(from), BROKER_TIMEOUT) {
                tracing::warn!(%error, partition, "seek after a stall failed; the partition is re-read from its committed offset after the next rebalance");
            }
        }
        tracing::info!("stores answer again; partitions resumed");
    }

    /// Commits, for each partition of the batch (of the topic of `route`), the offset after its
    /// last message.
    fn commit(&self, route: usize, batch: &[Received]) {
        let mut next: HashMap<i32, i64> = HashMap::new();
        for received in batch {
            let entry = next.entry(received.partition).or_insert(received.offset + 1);
            *entry = (*entry).max(received.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            if let Err(error) = offsets.add_partition_offset(&self.routes[route].topic, partition, Offset::Offset(offset)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn received(partition: i32, offset: i64, key: &[u8]) -> Received {
        Received { route: 0, partition, offset, key: Some(key.to_vec()), payload: None }
    }

    #[test]
    fn a_span_covers_every_record_of_its_partition_and_names_the_last() {
        let spans = spans_of(&[received(0, 5, b"a"), received(1, 9, b"b"), received(0, 7, b"c")]);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].first, spans[0].last, spans[0].last_fingerprint.as_str()), (5, 7, "63"));
        assert_eq!((spans[1].first, spans[1].last), (9, 9));
    }

    #[test]
    fn a_batch_is_split_by_topic_keeping_the_order_read() {
        let on = |route, partition, offset| Received { route, ..received(partition, offset, b"k") };
        let parts = split_by_route(vec![on(1, 0, 3), on(0, 0, 8), on(1, 0, 4), on(2, 1, 1), on(0, 0, 9)]);
        let offsets: Vec<(usize, Vec<i64>)> = parts.iter().map(|(route, part)| (*route, part.iter().map(|r| r.offset).collect())).collect();
        assert_eq!(offsets, vec![(1, vec![3, 4]), (0, vec![8, 9]), (2, vec![1])]);
    }

}
