//! The REST endpoints of a vote producer: `POST /votes` (one vote) and `POST /votes/batch` (a
//! bounded JSON array, answered per item), over the shared vote-core rules.

use vote_core::proto::VoteEvent;
use vote_core::{encode_event, new_event, now_ms, parse_json_vote, parse_json_votes, validate, IdempotencyKey, Path, ValidVote, VoteError, VoteInput, TOPIC};

use crate::bindings::votes::platform::publisher::{self, Ack, Message, PublishError};
use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use crate::http::{method_name, path, read_body, RequestHeaders, Reply};

/// The largest body `POST /votes` reads.
pub const MAX_VOTE_BYTES: usize = 16 * 1024;
/// The largest body `POST /votes/batch` reads.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The most votes one batch may hold.
pub const MAX_BATCH_ITEMS: usize = 500;
/// Seconds a client should wait before retrying when the broker is unavailable or the host
/// overloaded.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// What makes one producer component different from another.
pub trait Policy {
    /// `name@version` of the component, recorded in every event it publishes.
    fn producer(&self) -> &str;

    /// Rules on top of vote-core's (none by default).
    fn check(&self, _vote: &ValidVote) -> Result<(), VoteError> {
        Ok(())
    }
}

/// Answers one request.
pub fn serve(request: IncomingRequest, out: ResponseOutparam, policy: &dyn Policy) {
    route(&request, policy).send(out);
}

fn route(request: &IncomingRequest, policy: &dyn Policy) -> Reply {
    let method = method_name(request);
    match (path(request).as_str(), method.as_str()) {
        ("/votes", "POST") => cast_one(request, policy),
        ("/votes/batch", "POST") => cast_batch(request, policy),
        ("/.well-known/component", "GET") => Reply::json(200, &serde_json::json!({ "producer": policy.producer() })),
        ("/votes" | "/votes/batch", _) => {
            Reply::error(405, "method", &format!("{method} is not allowed here; use POST")).with_header("allow", "POST")
        }
        (other, _) => Reply::error(404, "path", &format!("no such endpoint: {other}; votes go to POST /votes")),
    }
}

fn invalid(error: &VoteError) -> Reply {
    Reply::error(400, error.field.as_str(), &error.reason)
}

/// The body of a JSON request, at most `limit` bytes (`415` if it is not JSON, `413` if larger),
/// and the client's idempotency key if it sent one (`400` naming `idempotency-key` if bad).
fn json_body(request: &IncomingRequest, limit: usize) -> Result<(Vec<u8>, Option<IdempotencyKey>), Reply> {
    let headers = RequestHeaders::of(request);
    if !headers.is_json() {
        return Err(Reply::error(415, "content-type", "send the vote as JSON with content-type: application/json"));
    }
    let key = headers.idempotency_key.as_deref().map(IdempotencyKey::parse).transpose().map_err(|error| invalid(&error))?;
    Ok((read_body(request, &headers, limit)?, key))
}

/// Validates a received vote and builds its event (with the id its idempotency key gave, if
/// any), or says which field is wrong.
fn accept(input: Result<VoteInput, VoteError>, policy: &dyn Policy, vote_id: Option<String>) -> Result<VoteEvent, VoteError> {
    let vote = validate(&input?)?;
    policy.check(&vote)?;
    Ok(new_event(vote, Path::Wasm, policy.producer(), now_ms(), vote_id))
}

fn message(event: &VoteEvent) -> Message {
    Message { topic: TOPIC.to_owned(), key: event.vote_id.clone().into_bytes(), payload: encode_event(event), headers: Vec::new() }
}

/// The answer to one published vote. Broker failures are `503` with `Retry-After`, and say
/// exactly what is known: not stored (overloaded, unavailable) or maybe stored (indeterminate,
/// where the retry must reuse the idempotency key, echoed back when one was sent).
fn published(event: &VoteEvent, outcome: Result<Ack, PublishError>, key: Option<&IdempotencyKey>) -> Reply {
    let reason = match outcome {
        Ok(ack) => {
            return Reply::json(202, &serde_json::json!({ "vote_id": event.vote_id, "partition": ack.partition, "offset": ack.offset }))
        }
        Err(PublishError::Refused(reason)) => return Reply::error(502, "broker", &format!("the broker refused the vote: {reason}")),
        Err(PublishError::Overloaded(reason)) => format!("overloaded: the vote was not stored, retry shortly ({reason})"),
        Err(PublishError::Unavailable(reason)) => format!("the vote was not stored, try again ({reason})"),
        Err(PublishError::Indeterminate(reason)) => {
            let mut body = serde_json::json!({
                "error": format!("{} ({reason})", vote_core::maybe_stored_advice(key.is_some())),
                "field": "broker",
                "vote_id": event.vote_id,
            });
            if let Some(key) = key {
                body["idempotency_key"] = key.as_str().into();
            }
            let reply = Reply::json(503, &body).with_header("retry-after", RETRY_AFTER_SECONDS);
            return match key {
                Some(key) => reply.with_header(vote_core::IDEMPOTENCY_KEY_HEADER, key.as_str()),
                None => reply,
            };
        }
    };
    Reply::error(503, "broker", &reason).with_header("retry-after", RETRY_AFTER_SECONDS)
}

fn cast_one(request: &IncomingRequest, policy: &dyn Policy) -> Reply {
    let (body, key) = match json_body(request, MAX_VOTE_BYTES) {
        Ok(read) => read,
        Err(reply) => return reply,
    };
    match accept(parse_json_vote(&body), policy, key.as_ref().map(|k| k.vote_id(None))) {
        Ok(event) => {
            let outcome = publisher::publish(&message(&event));
            published(&event, outcome, key.as_ref())
        }
        Err(error) => invalid(&error),
    }
}

/// Publishes the valid votes of a batch together and answers each item with the status and
/// body `POST /votes` would have given it. The batch answers 200 unless every item failed at the
/// broker with a 503 (then 503 with `Retry-After`, so clients retry the whole batch, under the
/// same idempotency key). With an idempotency key,
/// item `i` gets the id the key gives item `i`, so a retried batch counts each vote once.
fn cast_batch(request: &IncomingRequest, policy: &dyn Policy) -> Reply {
    let (body, key) = match json_body(request, MAX_BATCH_BYTES) {
        Ok(read) => read,
        Err(reply) => return reply,
    };
    let items = match parse_json_votes(&body, MAX_BATCH_ITEMS) {
        Ok(items) => items,
        Err(error) => return invalid(&error),
    };
    let checked: Vec<Result<VoteEvent, VoteError>> = items
        .into_iter()
        .enumerate()
        .map(|(position, item)| accept(item, policy, key.as_ref().map(|k| k.vote_id(Some(position as u64)))))
        .collect();
    let events: Vec<&VoteEvent> = checked.iter().filter_map(|c| c.as_ref().ok()).collect();
    let messages: Vec<Message> = events.iter().map(|e| message(e)).collect();
    let mut outcomes = publisher::publish_many(&messages).into_iter();

    let mut results = Vec::with_capacity(checked.len());
    let (mut accepted, mut unavailable) = (0usize, 0usize);
    for item in &checked {
        let reply = match item {
            Ok(event) => {
                let outcome = outcomes.next().unwrap_or_else(|| Err(PublishError::Refused("the host answered fewer items".into())));
                published(event, outcome, key.as_ref())
            }
            Err(error) => invalid(error),
        };
        match reply.status {
            202 => accepted += 1,
            503 => unavailable += 1,
            _ => {}
        }
        let mut body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        body["status"] = reply.status.into();
        results.push(body);
    }
    let summary = serde_json::json!({ "accepted": accepted, "rejected": checked.len() - accepted, "results": results });
    if unavailable == checked.len() {
        return Reply::json(503, &summary).with_header("retry-after", RETRY_AFTER_SECONDS);
    }
    Reply::json(200, &summary)
}
