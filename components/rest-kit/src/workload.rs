//! The endpoint of a workload component: `POST <path>` with one JSON object, checked by the
//! workload's rules into event fields, published as a `vote_platform` envelope on the workload's
//! topic (Kafka key = event id) and answered like a vote: `202` with the id, partition and
//! offset; `400` naming the field; `405`, `413`, `415`, `404`; broker failures as
//! `vote_core::rest::published_item` answers them.

use vote_core::rest::{self, Item};
use vote_core::IdempotencyKey;
use vote_platform::event::{Data, Envelope};

use crate::bindings::votes::platform::publisher::{self, Message};
use crate::fields::FieldError;
use crate::http::{Received, Reply};

/// The largest body a workload endpoint reads.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// What the replies call a workload's event: an `event`, with its `id`.
pub const EVENT: Item = Item { noun: "event", id_field: "id" };

/// One workload a component serves.
pub struct Workload {
    /// The workload's name in the manifest (each envelope's `workload`).
    pub name: &'static str,
    /// The topic its events go to.
    pub topic: &'static str,
    /// Where events are posted (`/tweets`; `/tweets/` too).
    pub path: &'static str,
    /// `name@version` of the component.
    pub producer: &'static str,
    /// The rules: a body into the event's fields, or the field that is wrong.
    pub rules: fn(&[u8]) -> Result<Data, FieldError>,
}

/// The endpoint a request is for.
#[derive(Debug, PartialEq)]
pub enum Endpoint {
    /// `POST <path>`: one event.
    Post,
    /// `GET /.well-known/component`: who serves.
    Identity,
    /// Anything else, answered at once.
    Answer(Reply),
}

impl Workload {
    /// Which endpoint `method path` (path without the query) is for.
    pub fn route(&self, method: &str, path: &str) -> Endpoint {
        let own = path == self.path || path.strip_prefix(self.path) == Some("/");
        match (own, method, path) {
            (true, "POST", _) => Endpoint::Post,
            (true, _, _) => Endpoint::Answer(Reply::error(405, "method", &format!("{method} is not allowed here; use POST")).with_header("allow", "POST")),
            (false, "GET", "/.well-known/component") => Endpoint::Identity,
            (false, _, other) => Endpoint::Answer(Reply::error(404, "path", &format!("no such endpoint: {other}; events go to POST {}", self.path))),
        }
    }

    /// The envelope for a posted body received at `received_at_ms`, or the `400` naming the
    /// wrong field. With an idempotency key the id derives from it and the fields (a retry
    /// names the same event).
    pub fn envelope(&self, body: &[u8], key: Option<&IdempotencyKey>, received_at_ms: i64) -> Result<Envelope, Reply> {
        let data = (self.rules)(body).map_err(|error| error.reply())?;
        Ok(Envelope::new(self.name, self.producer, received_at_ms, key.map(IdempotencyKey::as_str), data))
    }

    /// The message carrying `event` on the workload's topic.
    pub fn message(&self, event: &Envelope) -> Message {
        Message { topic: self.topic.to_owned(), key: event.id.clone().into_bytes(), payload: event.encode(), headers: Vec::new() }
    }
}

/// The reply to one request, however it arrived.
pub fn answer(request: &impl Received, workload: &Workload) -> Reply {
    match workload.route(&request.method(), &request.path()) {
        Endpoint::Post => post(request, workload).unwrap_or_else(|reply| reply),
        Endpoint::Identity => Reply::json(200, &serde_json::json!({ "producer": workload.producer })),
        Endpoint::Answer(reply) => reply,
    }
}

/// Checks the head, reads the body, builds the event, publishes it and answers.
fn post(request: &impl Received, workload: &Workload) -> Result<Reply, Reply> {
    let head = request.head();
    let key = rest::check_head(&head, MAX_BODY_BYTES)?;
    let body = request.body(&head, MAX_BODY_BYTES)?;
    let event = workload.envelope(&body, key.as_ref(), vote_core::now_ms())?;
    let outcome = crate::publishing::outcome(publisher::publish(&workload.message(&event)));
    Ok(rest::published_item(EVENT, &event.id, outcome, key.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vote_platform::event::Value;

    fn rules(body: &[u8]) -> Result<Data, FieldError> {
        let fields = crate::fields::Fields::parse(body, &["n"])?;
        Ok(Data::from([("n".to_owned(), Value::Integer(fields.integer("n", 0..=9)?))]))
    }

    const TEST: Workload = Workload { name: "test", topic: "test", path: "/things", producer: "test@0", rules };

    fn status(endpoint: Endpoint) -> u16 {
        match endpoint {
            Endpoint::Answer(reply) => reply.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(TEST.route("POST", "/things"), Endpoint::Post);
        assert_eq!(TEST.route("POST", "/things/"), Endpoint::Post);
        assert_eq!(TEST.route("GET", "/.well-known/component"), Endpoint::Identity);
        assert_eq!(status(TEST.route("GET", "/things")), 405);
        assert_eq!(status(TEST.route("POST", "/things/more")), 404);
        assert_eq!(status(TEST.route("POST", "/thingsx")), 404);
        assert_eq!(status(TEST.route("POST", "/")), 404);
    }

    #[test]
    fn an_envelope_holds_the_checked_fields_and_a_keyed_id() {
        let event = TEST.envelope(br#"{"n":"7"}"#, None, 1_764_000_000_000).unwrap();
        assert_eq!((event.workload.as_str(), event.producer.as_str()), ("test", "test@0"));
        assert_eq!(event.data["n"], Value::Integer(7));
        assert_eq!(Envelope::decode(&event.encode()).unwrap(), event);
        let key = IdempotencyKey::parse("k-1").unwrap();
        let first = TEST.envelope(br#"{"n":7}"#, Some(&key), 1).unwrap();
        let retry = TEST.envelope(br#"{"n":"7"}"#, Some(&key), 2).unwrap();
        assert_eq!(first.id, retry.id);
        assert!(first.is_keyed());
        let refused = TEST.envelope(br#"{"n":10}"#, None, 1).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(String::from_utf8(refused.body).unwrap().contains(r#""field":"n""#));
    }

    #[test]
    fn answers_name_the_event_id() {
        let reply = rest::published_item(EVENT, "the-id", Ok(vote_core::rest::Ack { partition: 1, offset: 2 }), None);
        assert_eq!(reply.status, 202);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body, serde_json::json!({ "id": "the-id", "partition": 1, "offset": 2 }));
        let key = IdempotencyKey::parse("k").unwrap();
        let maybe = rest::published_item(EVENT, "the-id", Err(vote_core::rest::PublishError::Indeterminate("late".into())), Some(&key));
        assert_eq!(maybe.status, 503);
        assert!(String::from_utf8(maybe.body).unwrap().contains("the event may not have been stored"));
        let refused = rest::published_item(EVENT, "the-id", Err(vote_core::rest::PublishError::Refused("no".into())), None);
        assert_eq!(refused.status, 502);
    }
}
