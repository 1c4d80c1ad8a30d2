//! `publisher-http`: the `votes:platform/publisher` interface over the Kafka Bridge HTTP API, so
//! a producer component runs on Spin, SpinKube or `wasmtime serve`, where the votes host and its
//! Kafka import are not.
//!
//! A request to [`Guest::publish_many`] becomes one `POST /topics/{topic}` per topic (one for a
//! batch of votes) through `wasi:http/outgoing-handler`:
//!
//! - [`settings`]: the bridge's address and timeouts, read from the environment.
//! - [`records`]: the Bridge's JSON, the record list sent and the offsets (or errors) received.
//! - [`transport`]: sending one request and telling "never sent" from "sent, no answer".

mod records;
mod settings;
mod transport;

wit_bindgen::generate!({
    path: "../../wit",
    world: "votes:platform/kafka-bridge-publisher",
    generate_all,
});

use exports::votes::platform::publisher::{Ack, Guest, Message, PublishError};

/// Why a record has no acknowledgement, finer than the interface's cases.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// The bridge could not be reached, or answered that nothing was stored: retry later.
    NotStored(String),
    /// The bridge is busy (HTTP 429): retry after a pause.
    Overloaded(String),
    /// The request went out but no usable answer came back: the record may or may not be stored.
    Indeterminate(String),
    /// The bridge or its broker refused the record; retrying will not help.
    Refused(String),
}

impl Failure {
    /// The interface's error for this failure.
    fn into_publish_error(self) -> PublishError {
        match self {
            Failure::NotStored(reason) => PublishError::Unavailable(reason),
            Failure::Overloaded(reason) => PublishError::Overloaded(reason),
            Failure::Indeterminate(reason) => PublishError::Indeterminate(reason),
            Failure::Refused(reason) => PublishError::Refused(reason),
        }
    }
}

struct PublisherHttp;

impl Guest for PublisherHttp {
    fn publish(message: Message) -> Result<Ack, PublishError> {
        Self::publish_many(vec![message]).pop().unwrap_or_else(|| Err(PublishError::Refused("no outcome for the message".into())))
    }

    /// One request per topic, in the order topics first appear; outcomes in the messages' order.
    fn publish_many(messages: Vec<Message>) -> Vec<Result<Ack, PublishError>> {
        let settings = match settings::Settings::from_environment() {
            Ok(settings) => settings,
            Err(reason) => return messages.iter().map(|_| Err(PublishError::Refused(reason.clone()))).collect(),
        };
        let mut outcomes: Vec<Option<Result<Ack, Failure>>> = vec![None; messages.len()];
        let mut topics: Vec<&str> = Vec::new();
        for message in &messages {
            if !topics.contains(&message.topic.as_str()) {
                topics.push(&message.topic);
            }
        }
        for topic in topics {
            let positions: Vec<usize> = (0..messages.len()).filter(|&i| messages[i].topic == topic).collect();
            let batch: Vec<&Message> = positions.iter().map(|&i| &messages[i]).collect();
            for (position, outcome) in positions.into_iter().zip(publish_to_topic(&settings, topic, &batch)) {
                outcomes[position] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome
                    .unwrap_or_else(|| Err(Failure::Indeterminate("no outcome for the message".into())))
                    .map_err(Failure::into_publish_error)
            })
            .collect()
    }
}

/// Sends the messages of one topic in one request and reads each record's outcome.
fn publish_to_topic(settings: &settings::Settings, topic: &str, batch: &[&Message]) -> Vec<Result<Ack, Failure>> {
    let all = |failure: Failure| -> Vec<Result<Ack, Failure>> { batch.iter().map(|_| Err(failure.clone())).collect() };
    if let Err(reason) = records::check_topic(topic) {
        return all(Failure::Refused(reason));
    }
    let body = records::record_list(batch);
    match transport::post(settings, &format!("/topics/{topic}"), &body) {
        Ok(reply) => records::outcomes(reply.status, &reply.body, batch.len()),
        Err(failure) => all(failure),
    }
}

export!(PublisherHttp);
