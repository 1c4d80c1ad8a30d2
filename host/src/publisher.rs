//! The `votes:platform/publisher` import: each topic to its broker (Kafka, or a RabbitMQ stream
//! the manifest binds it to), answered only after the broker acknowledged it.

use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use vote_kafka::PublishError as KafkaError;
use vote_service::vote_metrics::VoteMetrics;

use crate::runtime::HostState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "votes:platform/producer",
    imports: { default: async },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
    },
    require_store_data_send: true,
});

use votes::platform::publisher::{Ack, Host, Message, PublishError};

pub use votes::platform::publisher::add_to_linker;

/// Publishes one message if the component was granted its topic (nothing reaches the broker
/// otherwise), and counts a message to the votes topic in the vote metrics. Takes owned handles
/// so the future does not borrow the store's state (which is not `Sync`).
async fn publish_one(outbox: Outbox, message: Message) -> Result<Ack, PublishError> {
    if !outbox.allowed_topics.iter().any(|t| t == &message.topic) {
        if let Some(refusals) = &outbox.refusals {
            refusals.with_label_values(&[&outbox.component]).inc();
        }
        let topic: String = message.topic.chars().take(64).collect();
        return Err(PublishError::Refused(format!("component {} may only publish to {:?}, not {topic:?}", outbox.component, outbox.allowed_topics)));
    }
    let headers: Vec<(&str, &[u8])> = message.headers.iter().map(|h| (h.key.as_str(), h.value.as_slice())).collect();
    let published = outbox.publisher.publish(&message.topic, &message.key, &message.payload, &headers).await;
    if let Some(votes) = outbox.votes.as_ref().filter(|_| message.topic == vote_core::TOPIC) {
        match &published {
            Ok(_) => votes.accepted(outbox.received.elapsed()),
            Err(error) => votes.publish_failed(error),
        }
    }
    match published {
        Ok(ack) => Ok(Ack { partition: ack.partition, offset: ack.offset }),
        Err(KafkaError::Unavailable(reason)) => Err(PublishError::Unavailable(reason)),
        Err(KafkaError::Overloaded(reason)) => Err(PublishError::Overloaded(reason)),
        Err(KafkaError::Indeterminate(reason)) => Err(PublishError::Indeterminate(reason)),
        Err(KafkaError::Refused(reason)) => Err(PublishError::Refused(reason)),
    }
}

/// What one publish needs from the store's state, owned.
#[derive(Clone)]
struct Outbox {
    publisher: vote_rabbit::Brokers,
    allowed_topics: Arc<Vec<String>>,
    component: Arc<str>,
    votes: Option<VoteMetrics>,
    refusals: Option<prometheus::IntCounterVec>,
    received: Instant,
}

impl HostState {
    fn outbox(&self) -> Outbox {
        Outbox {
            publisher: self.publisher.clone(),
            allowed_topics: self.allowed_topics.clone(),
            component: self.component.clone(),
            votes: self.votes.clone(),
            refusals: self.refusals.clone(),
            received: self.received,
        }
    }
}

impl Host for HostState {
    async fn publish(&mut self, message: Message) -> Result<Ack, PublishError> {
        publish_one(self.outbox(), message).await
    }

    async fn publish_many(&mut self, messages: Vec<Message>) -> Vec<Result<Ack, PublishError>> {
        let outbox = self.outbox();
        join_all(messages.into_iter().map(|m| publish_one(outbox.clone(), m))).await
    }
}
