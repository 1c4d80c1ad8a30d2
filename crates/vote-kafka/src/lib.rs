//! The Kafka settings every service shares, so that the gRPC producer, the wasm host and the
//! consumer talk to the broker the same way.
//!
//! - [`Publisher`]: an idempotent, `acks=all` producer whose [`Publisher::publish`] returns only
//!   once the broker acknowledged the message, or with a [`PublishError`] after a bounded wait
//!   ([`Publisher::bound`]; callers check their own deadline against it with
//!   [`check_caller_deadline`]).
//! - [`consumer_config`]: a consumer that commits by hand, after its writes succeeded.
//! - [`ensure_topic`]: creates the votes topic with its partitions if it is missing.
//! - [`outcome`]: how a failed publish is sorted (from the message's persistence status);
//!   [`delivery`]: the producer context that reports it.

pub mod delivery;
pub mod outcome;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::util::Timeout;
use tokio::sync::oneshot;

use crate::delivery::ReportingContext;
use crate::outcome::{classify, Persistence};

/// The default broker address of the local stack.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// The number of partitions of the votes topic, locally and in Kubernetes.
pub const DEFAULT_PARTITIONS: i32 = 6;
/// How long a publish may wait for the broker's acknowledgement before it is reported unavailable.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The dead-letter topic: votes the consumer cannot count, as JSON envelopes (see docs/consumer.md).
pub const DLQ_TOPIC: &str = "votes.dlq";
/// How long after the message timeout `publish` still waits for librdkafka's own report before it
/// answers [`PublishError::Indeterminate`] by itself.
pub const DELIVERY_REPORT_GRACE: Duration = Duration::from_millis(200);
/// The time a caller's deadline must leave beyond [`Publisher::bound`] for the rest of its work
/// (validating, encoding, answering), so a publish never outlives the request that waits for it.
pub const CALLER_HEADROOM: Duration = Duration::from_secs(1);
/// The consumer group of the vote counter.
pub const CONSUMER_GROUP: &str = "vote-counter";

/// Why a message was not acknowledged by the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message was not written (the broker refused the write for now, or it never left this
    /// process); retrying later may work.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// This process' queue to the broker is full: backpressure, not an outage. The message was not
    /// written; retry shortly.
    #[error("the producer is overloaded: {0}")]
    Overloaded(String),
    /// The message may or may not have been written (it was handed to the broker, or may have
    /// been, and no acknowledgement came in time). Retry under the same idempotency key, so a
    /// vote that was stored is not counted twice.
    #[error("the broker did not acknowledge in time; the message may have been stored: {0}")]
    Indeterminate(String),
    /// The broker or the client refused the message; retrying will not help.
    #[error("the broker refused the message: {0}")]
    Refused(String),
}

/// Where a message landed once the broker acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
}

/// An error from setting up a Kafka client.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {0}")]
pub struct SetupError(#[from] KafkaError);

/// A caller's deadline that does not leave room for a whole publish.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {caller} ({deadline:?}) must be longer than the publish timeout ({timeout:?}) plus {margin:?}, \
     or a publish could outlive the call that waits for it; raise the {caller} or lower the publish timeout"
)]
pub struct DeadlineError {
    pub caller: String,
    pub deadline: Duration,
    pub timeout: Duration,
    pub margin: Duration,
}

/// Checks that a caller's deadline (the host's request timeout, the gRPC per-call deadline) is
/// longer than a whole publish: `deadline >= timeout + DELIVERY_REPORT_GRACE + CALLER_HEADROOM`.
pub fn check_caller_deadline(caller: &str, deadline: Duration, publish_timeout: Duration) -> Result<(), DeadlineError> {
    let margin = DELIVERY_REPORT_GRACE + CALLER_HEADROOM;
    if deadline < publish_timeout + margin {
        return Err(DeadlineError { caller: caller.to_owned(), deadline, timeout: publish_timeout, margin });
    }
    Ok(())
}

/// The producer settings both producer paths share.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub brokers: String,
    /// The bounded wait for an acknowledgement (librdkafka's `message.timeout.ms`).
    pub timeout: Duration,
    /// Identifies the producer in the broker's logs.
    pub client_id: String,
    /// The most messages waiting in this process for the broker (`queue.buffering.max.messages`);
    /// beyond it a publish answers [`PublishError::Overloaded`] at once. librdkafka's default
    /// (100,000) when `None`.
    pub queue_max_messages: Option<u32>,
}

impl PublisherSettings {
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), timeout: DEFAULT_PUBLISH_TIMEOUT, client_id: client_id.into(), queue_max_messages: None }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", self.timeout.as_millis().to_string())
            .set("reconnect.backoff.max.ms", "1000");
        if let Some(max) = self.queue_max_messages {
            config.set("queue.buffering.max.messages", max.to_string());
        }
        config
    }
}

/// An idempotent, `acks=all` producer. Cheap to clone; share one per process.
///
/// When a publish finds the broker unavailable, the underlying client is replaced by a fresh one,
/// so that once the broker is back the producer starts a new idempotence session (new producer
/// id) instead of resuming sequences the broker may no longer know: a restarted Tansu rejects
/// those, and any broker would fence them after a long outage. Every message of the old client
/// has already failed back to its caller, so nothing acknowledged is dropped.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

/// The client under a [`Publisher`]: its delivery reports carry each message's persistence status.
type Client = ThreadedProducer<ReportingContext>;

struct PublisherInner {
    settings: PublisherSettings,
    current: RwLock<Arc<Client>>,
}

impl Publisher {
    pub fn new(settings: &PublisherSettings) -> Result<Self, SetupError> {
        let producer = Arc::new(settings.client_config().create_with_context(ReportingContext)?);
        Ok(Self { inner: Arc::new(PublisherInner { settings: settings.clone(), current: RwLock::new(producer) }) })
    }

    fn current(&self) -> Arc<Client> {
        self.inner.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces `failed` by a fresh client, unless another caller already did.
    fn replace(&self, failed: &Arc<Client>) {
        let mut current = self.inner.current.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match self.inner.settings.client_config().create_with_context(ReportingContext) {
            Ok(fresh) => {
                tracing::warn!("the broker is unavailable; starting a fresh producer session for when it is back");
                *current = Arc::new(fresh);
            }
            Err(error) => tracing::error!(%error, "could not create a fresh producer; keeping the old one"),
        }
    }

    /// Publishes one message and waits for the broker's acknowledgement, at most
    /// [`Publisher::bound`]. The message is queued without waiting: a full queue answers
    /// [`PublishError::Overloaded`] at once. A failure is sorted by [`outcome::classify`].
    pub async fn publish(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<Ack, PublishError> {
        let mut owned_headers = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in headers {
            owned_headers = owned_headers.insert(Header { key, value: Some(*value) });
        }
        let (report, delivered) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(report)).key(key).payload(payload).headers(owned_headers);
        let producer = self.current();
        let error = match producer.send(record) {
            // Never queued, so never sent.
            Err((error, _record)) => classify(error.rdkafka_error_code(), Persistence::NotPersisted, error.to_string()),
            Ok(()) => match tokio::time::timeout(self.bound(), delivered).await {
                Ok(Ok(Ok(ack))) => return Ok(ack),
                Ok(Ok(Err(failure))) => classify(failure.code, failure.persistence, failure.text),
                // The report was dropped unsent (the client went away with the message): sent or not.
                Ok(Err(_dropped)) => PublishError::Indeterminate("the producer closed with the message in it".into()),
                Err(_elapsed) => PublishError::Indeterminate(format!("no delivery report within {:?}", self.bound())),
            },
        };
        if matches!(error, PublishError::Unavailable(_) | PublishError::Indeterminate(_)) {
            self.replace(&producer);
        }
        Err(error)
    }

    /// The longest a [`Publisher::publish`] takes: the message timeout plus
    /// [`DELIVERY_REPORT_GRACE`]. Every caller's deadline must be longer
    /// ([`check_caller_deadline`]).
    pub fn bound(&self) -> Duration {
        self.inner.settings.timeout + DELIVERY_REPORT_GRACE
    }

    /// Waits up to `timeout` for queued messages to be delivered (used on shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.current().flush(Timeout::After(timeout)) {
            tracing::warn!(%error, "messages still queued at shutdown");
        }
    }

    /// The bounded wait for an acknowledgement.
    pub fn timeout(&self) -> Duration {
        self.inner.settings.timeout
    }
}

/// How long a group coordinator waits for a consumer's heartbeat before it drops the member.
pub const SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A consumer configuration that stores and commits offsets only when told to.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string())
        .set("heartbeat.interval.ms", "1000")
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// Creates `topic` with `partitions` partitions unless it exists already.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), SetupError> {
    ensure_topic_with(brokers, topic, partitions, &[]).await
}

/// Creates `topic` with `partitions` partitions and the given topic configuration (for example
/// `cleanup.policy=compact`) unless it exists already.
pub async fn ensure_topic_with(brokers: &str, topic: &str, partitions: i32, config: &[(&str, &str)]) -> Result<(), SetupError> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new_topic = config
        .iter()
        .fold(NewTopic::new(topic, partitions, TopicReplication::Fixed(1)), |new_topic, (key, value)| new_topic.set(key, value));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new_topic], &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(SetupError(KafkaError::AdminOp(code))),
        }
    }
    Ok(())
}

/// Asks the broker for the cluster metadata: a readiness probe for the broker and the topic.
/// Returns the topic's partition count (0 when the topic does not exist).
pub fn probe(brokers: &str, topic: &str, timeout: Duration) -> Result<usize, SetupError> {
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let metadata = producer.client().fetch_metadata(Some(topic), Timeout::After(timeout))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publisher whose broker is a local port that is listened on but never answered (kept
    /// bound by the returned listener, so no other process can take it): nothing is ever
    /// acknowledged, and nothing fails early either.
    fn unanswered(timeout: Duration, queue_max_messages: Option<u32>) -> (Publisher, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut settings = PublisherSettings::new(listener.local_addr().unwrap().to_string(), "vote-kafka-test");
        settings.timeout = timeout;
        settings.queue_max_messages = queue_max_messages;
        (Publisher::new(&settings).unwrap(), listener)
    }

    /// Waits (at most 2 s) until the publisher's client holds a message.
    async fn wait_until_queued(publisher: &Publisher) {
        let started = std::time::Instant::now();
        while publisher.current().in_flight_count() < 1 {
            assert!(started.elapsed() < Duration::from_secs(2), "the message was never queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_overload_answered_at_once() {
        let (publisher, _broker) = unanswered(Duration::from_secs(30), Some(1));
        let waiting = tokio::spawn({
            let publisher = publisher.clone();
            async move { publisher.publish("votes", b"k", b"first", &[]).await }
        });
        // The first message holds the only slot until its timeout; the second finds it taken.
        wait_until_queued(&publisher).await;
        let started = std::time::Instant::now();
        let second = publisher.publish("votes", b"k", b"second", &[]).await;
        assert!(matches!(second, Err(PublishError::Overloaded(_))), "{second:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "overload must be answered at once, took {:?}", started.elapsed());
        // The client was not swapped for the overload: the first message is still queued in it.
        assert_eq!(publisher.current().in_flight_count(), 1);
        waiting.abort();
    }

    #[tokio::test]
    async fn an_unacknowledged_message_is_indeterminate_within_the_bound() {
        let (publisher, _broker) = unanswered(Duration::from_millis(500), None);
        let started = std::time::Instant::now();
        let outcome = publisher.publish("votes", b"k", b"v", &[]).await;
        assert!(matches!(outcome, Err(PublishError::Indeterminate(_))), "{outcome:?}");
        assert!(started.elapsed() < publisher.bound() + Duration::from_secs(1), "{:?}", started.elapsed());
    }

    /// A message purged from the local queue (what librdkafka does to every queued message when a
    /// client is replaced or closed, as during a broker kill) never reached a broker: `unavailable`,
    /// which a client retries, never `refused`.
    #[tokio::test]
    async fn a_purged_message_is_unavailable_not_refused() {
        use rdkafka::producer::PurgeConfig;
        let (publisher, _broker) = unanswered(Duration::from_secs(30), None);
        let waiting = tokio::spawn({
            let publisher = publisher.clone();
            async move { publisher.publish("votes", b"k", b"v", &[]).await }
        });
        wait_until_queued(&publisher).await;
        publisher.current().purge(PurgeConfig::default().queue().inflight());
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the purge is reported").unwrap();
        assert!(matches!(outcome, Err(PublishError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn a_caller_deadline_must_cover_a_whole_publish() {
        let timeout = Duration::from_secs(5);
        assert!(check_caller_deadline("request timeout", Duration::from_secs(10), timeout).is_ok());
        let error = check_caller_deadline("request timeout", Duration::from_secs(5), timeout).unwrap_err();
        assert!(error.to_string().contains("request timeout"), "{error}");
        assert!(check_caller_deadline("request timeout", timeout + DELIVERY_REPORT_GRACE, timeout).is_err());
    }
}
