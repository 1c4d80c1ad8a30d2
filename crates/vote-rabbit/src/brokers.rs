//! Sends each topic to the broker the manifest binds it to: Kafka unless it is one of the
//! RabbitMQ streams.

use std::collections::HashSet;
use std::sync::Arc;

use vote_kafka::{Ack, PublishError, Publisher};

use crate::publisher::StreamPublisher;

/// The publishers of a process and which topics live on RabbitMQ. Cheap to clone.
#[derive(Clone)]
pub struct Brokers {
    kafka: Publisher,
    rabbit: Option<StreamPublisher>,
    on_rabbit: Arc<HashSet<String>>,
}

impl Brokers {
    /// Every topic on Kafka.
    pub fn kafka(kafka: Publisher) -> Self {
        Self { kafka, rabbit: None, on_rabbit: Arc::default() }
    }

    /// `topics` on RabbitMQ through `rabbit`, the rest on Kafka.
    pub fn with_rabbit(kafka: Publisher, rabbit: StreamPublisher, topics: impl IntoIterator<Item = String>) -> Self {
        Self { kafka, rabbit: Some(rabbit), on_rabbit: Arc::new(topics.into_iter().collect()) }
    }

    /// The Kafka publisher (the votes, dead letters, deploy orders).
    pub fn kafka_publisher(&self) -> &Publisher {
        &self.kafka
    }

    /// `"rabbitmq"` or `"kafka"`: the broker `topic` lives on (the `broker` label of metrics).
    pub fn broker_of(&self, topic: &str) -> &'static str {
        if self.on_rabbit.contains(topic) { "rabbitmq" } else { "kafka" }
    }

    /// The topics on RabbitMQ, sorted.
    pub fn rabbit_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.on_rabbit.iter().cloned().collect();
        topics.sort();
        topics
    }

    /// Publishes to the broker `topic` lives on and waits for its acknowledgement.
    pub async fn publish(&self, topic: &str, key: &[u8], payload: &[u8], headers: &[(&str, &[u8])]) -> Result<Ack, PublishError> {
        match &self.rabbit {
            Some(rabbit) if self.on_rabbit.contains(topic) => rabbit.publish(topic, key, payload, headers).await,
            _ => self.kafka.publish(topic, key, payload, headers).await,
        }
    }
}
