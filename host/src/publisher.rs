//! The `votes:platform/publisher` import, implemented with the shared Kafka publisher.

use std::sync::Arc;

use futures::future::join_all;
use vote_kafka::PublishError as KafkaError;

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

/// Publishes one message if its topic is allowed. Takes owned handles so the future does not
/// borrow the store's state (which is not `Sync`).
async fn publish_one(publisher: vote_kafka::Publisher, allowed_topics: Arc<Vec<String>>, message: Message) -> Result<Ack, PublishError> {
    if !allowed_topics.iter().any(|t| t == &message.topic) {
        return Err(PublishError::Refused(format!("this host only publishes to {:?}, not {:?}", allowed_topics, message.topic)));
    }
    let headers: Vec<(&str, &[u8])> = message.headers.iter().map(|h| (h.key.as_str(), h.value.as_slice())).collect();
    match publisher.publish(&message.topic, &message.key, &message.payload, &headers).await {
        Ok(ack) => Ok(Ack { partition: ack.partition, offset: ack.offset }),
        Err(KafkaError::Unavailable(reason)) => Err(PublishError::Unavailable(reason)),
        Err(KafkaError::Refused(reason)) => Err(PublishError::Refused(reason)),
    }
}

impl Host for HostState {
    async fn publish(&mut self, message: Message) -> Result<Ack, PublishError> {
        publish_one(self.publisher.clone(), self.allowed_topics.clone(), message).await
    }

    async fn publish_many(&mut self, messages: Vec<Message>) -> Vec<Result<Ack, PublishError>> {
        let (publisher, topics) = (self.publisher.clone(), self.allowed_topics.clone());
        join_all(messages.into_iter().map(|m| publish_one(publisher.clone(), topics.clone(), m))).await
    }
}
