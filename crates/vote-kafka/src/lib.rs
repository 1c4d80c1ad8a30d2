//! The Kafka settings every service shares, so that the gRPC producer, the wasm host and the
//! consumer talk to the broker the same way.
//!
//! - [`Publisher`]: an idempotent, `acks=all` producer whose [`Publisher::publish`] returns only
//!   once the broker acknowledged the message, or with a [`PublishError`] after a bounded wait.
//! - [`consumer_config`]: a consumer that commits by hand, after its writes succeeded.
//! - [`ensure_topic`]: creates the votes topic with its partitions if it is missing.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

/// The default broker address of the local stack.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// The number of partitions of the votes topic, locally and in Kubernetes.
pub const DEFAULT_PARTITIONS: i32 = 6;
/// How long a publish may wait for the broker's acknowledgement before it is reported unavailable.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The consumer group of the vote counter.
pub const CONSUMER_GROUP: &str = "vote-counter";

/// Why a message was not acknowledged by the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker could not be reached or did not acknowledge in time; retrying later may work.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
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

/// The producer settings both producer paths share.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub brokers: String,
    /// The bounded wait for an acknowledgement.
    pub timeout: Duration,
    /// Identifies the producer in the broker's logs.
    pub client_id: String,
}

impl PublisherSettings {
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), timeout: DEFAULT_PUBLISH_TIMEOUT, client_id: client_id.into() }
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

struct PublisherInner {
    settings: PublisherSettings,
    current: RwLock<Arc<FutureProducer>>,
}

impl Publisher {
    pub fn new(settings: &PublisherSettings) -> Result<Self, SetupError> {
        let producer = Arc::new(settings.client_config().create()?);
        Ok(Self { inner: Arc::new(PublisherInner { settings: settings.clone(), current: RwLock::new(producer) }) })
    }

    fn current(&self) -> Arc<FutureProducer> {
        self.inner.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces `failed` by a fresh client, unless another caller already did.
    fn replace(&self, failed: &Arc<FutureProducer>) {
        let mut current = self.inner.current.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match self.inner.settings.client_config().create() {
            Ok(fresh) => {
                tracing::warn!("the broker is unavailable; starting a fresh producer session for when it is back");
                *current = Arc::new(fresh);
            }
            Err(error) => tracing::error!(%error, "could not create a fresh producer; keeping the old one"),
        }
    }

    /// Publishes one message and waits for the broker's acknowledgement.
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
        let record = FutureRecord::to(topic).key(key).payload(payload).headers(owned_headers);
        let producer = self.current();
        match producer.send(record, Timeout::After(self.inner.settings.timeout)).await {
            Ok(delivery) => Ok(Ack { partition: delivery.partition, offset: delivery.offset }),
            Err((error, _message)) => {
                let error = classify(error);
                if matches!(error, PublishError::Unavailable(_)) {
                    self.replace(&producer);
                }
                Err(error)
            }
        }
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

/// Sorts a delivery error into "try again later" and "will never work".
fn classify(error: KafkaError) -> PublishError {
    use RDKafkaErrorCode as Code;
    let retriable = match error.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            Code::MessageTimedOut
                | Code::RequestTimedOut
                | Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::QueueFull
                | Code::NotEnoughReplicas
                | Code::NotEnoughReplicasAfterAppend
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
                | Code::NetworkException
                | Code::UnknownTopicOrPartition
                | Code::OperationTimedOut
                | Code::Fatal
                | Code::CoordinatorNotAvailable
        ),
        None => matches!(error, KafkaError::Canceled),
    };
    if retriable {
        PublishError::Unavailable(error.to_string())
    } else {
        PublishError::Refused(error.to_string())
    }
}

/// A consumer configuration that stores and commits offsets only when told to.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("reconnect.backoff.max.ms", "1000");
    config
}

/// Creates `topic` with `partitions` partitions unless it exists already.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), SetupError> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
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
