//! Publishes to RabbitMQ streams and answers only after the broker's confirm, with the same
//! `Unavailable` / `Overloaded` / `Indeterminate` / `Refused` distinctions as the Kafka publisher.

use std::collections::HashMap;
use std::sync::Arc;

use rabbitmq_stream_client::error::{ClientError, ProducerCreateError, ProducerPublishError, StreamCreateError};
use rabbitmq_stream_client::types::{ByteCapacity, Message, ResponseCode, SimpleValue};
use rabbitmq_stream_client::{Environment, NoDedup, Producer};
use tokio::sync::{Mutex, Semaphore};
use vote_kafka::{Ack, PublishError};

use crate::settings::RabbitSettings;

/// The most publishes waiting for a confirm at once; past it a publish answers `Overloaded`.
pub const MAX_UNCONFIRMED: usize = 10_000;
/// The most bytes a stream keeps before its oldest segments go (the broker's retention bound).
pub const STREAM_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// How long the producer gathers messages before it sends them as one batch (the client's
/// default is 100 ms, which every publish would wait for): the Kafka publisher's `linger.ms`.
pub const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// The most messages in one batch; a full batch goes out at once.
pub const BATCH_MAX: usize = 500;

/// One connection to the node and a producer per stream, made on first use and dropped when the
/// node stops answering, so the next publish connects afresh.
struct Connected {
    environment: Environment,
    producers: HashMap<String, Producer<NoDedup>>,
}

struct Inner {
    settings: RabbitSettings,
    connected: Mutex<Option<Connected>>,
    unconfirmed: Semaphore,
}

/// A RabbitMQ stream publisher with confirms. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct StreamPublisher {
    inner: Arc<Inner>,
}

impl StreamPublisher {
    /// A publisher that connects on its first publish (a node that is down answers `Unavailable`
    /// then, not at start-up).
    pub fn new(settings: RabbitSettings) -> Self {
        Self { inner: Arc::new(Inner { settings, connected: Mutex::new(None), unconfirmed: Semaphore::new(MAX_UNCONFIRMED) }) }
    }

    pub fn settings(&self) -> &RabbitSettings {
        &self.inner.settings
    }

    /// Publishes one message to the stream `topic` and waits for the confirm, at most the
    /// settings' timeout. The key travels as the AMQP `message-id`, headers as application
    /// properties. RabbitMQ confirms carry no offset: the ack names partition 0, offset -1.
    pub async fn publish(&self, topic: &str, key: &[u8], payload: &[u8], headers: &[(&str, &[u8])]) -> Result<Ack, PublishError> {
        let Ok(_permit) = self.inner.unconfirmed.try_acquire() else {
            return Err(PublishError::Overloaded(format!("{MAX_UNCONFIRMED} messages already wait for rabbitmq's confirm")));
        };
        let producer = self.producer(topic).await?;
        let mut properties = Message::builder().body(payload.to_vec()).application_properties();
        for (name, value) in headers {
            properties = properties.insert(*name, SimpleValue::Binary(value.to_vec()));
        }
        let message = properties.message_builder().properties().message_id(key.to_vec()).message_builder().build();
        let sent = tokio::time::timeout(self.inner.settings.timeout, producer.send_with_confirm(message)).await;
        let error = match sent {
            Ok(Ok(status)) if status.confirmed() => return Ok(Ack { partition: 0, offset: -1 }),
            Ok(Ok(status)) => refusal(topic, status.status()),
            // Never handed to the connection: not stored.
            Ok(Err(ProducerPublishError::Closed)) => PublishError::Unavailable(format!("the producer of stream {topic} is closed")),
            Ok(Err(error)) => PublishError::Indeterminate(format!("stream {topic}: {error}")),
            Err(_elapsed) => PublishError::Indeterminate(format!("no confirm from rabbitmq within {:?}", self.inner.settings.timeout)),
        };
        if matches!(error, PublishError::Unavailable(_) | PublishError::Indeterminate(_)) {
            self.forget().await;
        }
        Err(error)
    }

    /// The producer of `stream`, connecting (and making the producer) if needed.
    async fn producer(&self, stream: &str) -> Result<Producer<NoDedup>, PublishError> {
        let mut connected = self.inner.connected.lock().await;
        if connected.is_none() {
            let environment = tokio::time::timeout(self.inner.settings.timeout, self.inner.settings.connect())
                .await
                .map_err(|_| PublishError::Unavailable(format!("rabbitmq at {} did not answer within {:?}", self.inner.settings.endpoint(), self.inner.settings.timeout)))?
                .map_err(|error| PublishError::Unavailable(format!("rabbitmq at {}: {error}", self.inner.settings.endpoint())))?;
            *connected = Some(Connected { environment, producers: HashMap::new() });
        }
        let state = connected.as_mut().expect("connected above");
        if let Some(producer) = state.producers.get(stream).filter(|p| !p.is_closed()) {
            return Ok(producer.clone());
        }
        let built = tokio::time::timeout(self.inner.settings.timeout, state.environment.producer().batch_size(BATCH_MAX).batch_delay(BATCH_DELAY).build(stream)).await;
        match built {
            Ok(Ok(producer)) => {
                state.producers.insert(stream.to_owned(), producer.clone());
                Ok(producer)
            }
            // A node that restarts recovers its streams after it accepts connections, and a new
            // stream is made by the consumer or `votectl up`: try again later, not a refusal.
            Ok(Err(ProducerCreateError::StreamDoesNotExist { stream })) => Err(PublishError::Unavailable(format!("rabbitmq has no stream {stream} (yet)"))),
            // A node under a resource alarm (disk, measured on 3.10; its memory alarm does not
            // stop stream publishers) refuses new publishers this way: overload, retry later.
            Ok(Err(ProducerCreateError::Create { stream, status: ResponseCode::PrecoditionFailed })) => {
                Err(PublishError::Overloaded(format!("rabbitmq refuses publishers to stream {stream} (precondition failed: a resource alarm blocks publishing)")))
            }
            Ok(Err(ProducerCreateError::Create { stream, status })) => Err(refusal(&stream, &status)),
            Ok(Err(error)) => {
                *connected = None;
                Err(PublishError::Unavailable(format!("rabbitmq: {error}")))
            }
            Err(_) => {
                *connected = None;
                Err(PublishError::Unavailable(format!("rabbitmq did not make a producer for {stream} within {:?}", self.inner.settings.timeout)))
            }
        }
    }

    /// Drops the connection and its producers: the next publish connects afresh.
    async fn forget(&self) {
        if let Some(old) = self.inner.connected.lock().await.take() {
            tracing::warn!(endpoint = %self.inner.settings.endpoint(), "rabbitmq stopped answering; reconnecting on the next publish");
            drop(old);
        }
    }
}

/// A negative answer of the broker: not stored. Access refused will not change by retrying;
/// anything else (a stream not recovered yet after a restart, say) may.
fn refusal(stream: &str, status: &ResponseCode) -> PublishError {
    match status {
        ResponseCode::AccessRefused => PublishError::Refused(format!("rabbitmq refused the message for stream {stream}: {status:?}")),
        _ => PublishError::Unavailable(format!("rabbitmq did not store the message for stream {stream}: {status:?}")),
    }
}

/// Creates the stream `name` if it is missing, bounded to [`STREAM_MAX_BYTES`].
pub async fn ensure_stream(settings: &RabbitSettings, name: &str) -> Result<(), ClientError> {
    let environment = settings.connect().await?;
    match environment.stream_creator().max_length(ByteCapacity::B(STREAM_MAX_BYTES)).create(name).await {
        Ok(()) => Ok(()),
        Err(StreamCreateError::Create { status: ResponseCode::StreamAlreadyExists, .. }) => Ok(()),
        Err(StreamCreateError::Create { stream, status }) => Err(ClientError::GenericError(format!("creating stream {stream}: {status:?}").into())),
        Err(StreamCreateError::Client(error)) => Err(error),
    }
}
