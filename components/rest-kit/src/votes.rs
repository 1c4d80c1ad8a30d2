//! The REST endpoints of a vote producer component, `POST /votes` (one vote) and `POST
//! /votes/batch` (a bounded JSON array, answered per item): the `wasi:http` and publisher
//! plumbing (both exports) around `vote_core::rest`, which holds every rule and reply (the host's native
//! baseline uses the same).

use std::borrow::Cow;

use vote_core::rest::{self, Batch, Endpoint};
use vote_core::proto::VoteEvent;
use vote_core::TOPIC;

pub use vote_core::rest::{Policy, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_VOTE_BYTES, RETRY_AFTER_SECONDS};

use crate::bindings::votes::platform::publisher::{self, Message};
use crate::http::{Received, Reply};
use crate::publishing::outcome;

/// The reply to one request, however it arrived.
pub fn answer(request: &impl Received, policy: &dyn Policy) -> Reply {
    let endpoint = rest::route(&request.method(), &request.path());
    match endpoint {
        Endpoint::CastOne | Endpoint::CastBatch => match json_body(request, endpoint.body_limit()) {
            Ok((body, key)) if endpoint == Endpoint::CastOne => cast_one(&body, key, policy),
            Ok((body, key)) => cast_batch(&body, key, policy),
            Err(reply) => reply,
        },
        Endpoint::Identity => rest::identity(policy),
        Endpoint::Answer(reply) => reply,
    }
}

/// The body of a JSON request within `limit` bytes and the client's idempotency key, or the
/// reply refusing them.
fn json_body(request: &impl Received, limit: usize) -> Result<(Cow<'_, [u8]>, Option<vote_core::IdempotencyKey>), Reply> {
    let head = request.head();
    let key = rest::check_head(&head, limit)?;
    Ok((request.body(&head, limit)?, key))
}

fn message(event: &VoteEvent) -> Message {
    let (key, payload) = rest::message(event);
    Message { topic: TOPIC.to_owned(), key, payload, headers: Vec::new() }
}

fn cast_one(body: &[u8], key: Option<vote_core::IdempotencyKey>, policy: &dyn Policy) -> Reply {
    match rest::prepare_one(body, key.as_ref(), policy) {
        Ok(event) => rest::published(&event, outcome(publisher::publish(&message(&event))), key.as_ref()),
        Err(reply) => reply,
    }
}

/// Publishes the valid votes of a batch together and answers each item.
fn cast_batch(body: &[u8], key: Option<vote_core::IdempotencyKey>, policy: &dyn Policy) -> Reply {
    let batch = match Batch::prepare(body, key, policy) {
        Ok(batch) => batch,
        Err(reply) => return reply,
    };
    let messages: Vec<Message> = batch.events().map(message).collect();
    let outcomes = publisher::publish_many(&messages).into_iter().map(outcome).collect();
    batch.answer(outcomes)
}
