//! The REST endpoints' rules, shared by the wasm component (through `rest-kit`) and the host's
//! native baseline: routing, the request checks, the vote's event, and every reply's status and
//! body. No I/O: the caller reads the body and publishes, this module decides everything else.
//!
//! A request travels: [`route`] names the [`Endpoint`]; [`check_head`] refuses a body that is not
//! JSON or a bad idempotency key; the caller reads the body within [`Endpoint::body_limit`]
//! ([`too_large`] otherwise); [`prepare_one`] (or [`Batch::prepare`]) validates and builds the
//! event(s); the caller publishes them; [`published`] (or [`Batch::answer`]) builds the reply.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::proto::VoteEvent;
use crate::{encode_event, new_event, now_ms, parse_json_vote, parse_json_votes, validate, IdempotencyKey, Path, ValidVote, VoteError, VoteInput};

/// The largest body `POST /votes` reads.
pub const MAX_VOTE_BYTES: usize = 16 * 1024;
/// The largest body `POST /votes/batch` reads.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The most votes one batch may hold.
pub const MAX_BATCH_ITEMS: usize = 500;
/// Seconds a client should wait before retrying when the broker is unavailable or the producer
/// overloaded.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// A reply to send: status, extra headers and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        // Encoding a `Body` or a `serde_json::Value` (string keys only) into a Vec cannot fail.
        Self { status, headers: Vec::new(), body: serde_json::to_vec(value).unwrap_or_default() }
    }

    /// A JSON error naming the field (or `body`) and the reason.
    pub fn error(status: u16, field: &str, reason: &str) -> Self {
        Answer::error(status, field, reason).reply()
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A member of a reply body: text, a whole number, or a batch's list of bodies. The replies are
/// built from these rather than `serde_json::Value`, whose numbers may be floats: its float
/// formatter (17 KiB of tables) would sit in the memory of every guest instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Member {
    Text(String),
    Whole(i64),
    Bodies(Vec<Body>),
}

/// A reply body: a JSON object, its members in name order.
pub type Body = BTreeMap<&'static str, Member>;

/// A reply before its body is encoded, so a batch can gather each item's body: the status and
/// headers in `head` (whose body stays empty), the body as members.
struct Answer {
    head: Reply,
    body: Body,
}

impl Answer {
    fn new(status: u16, body: Body) -> Self {
        Self { head: Reply { status, headers: Vec::new(), body: Vec::new() }, body }
    }

    fn error(status: u16, field: &str, reason: &str) -> Self {
        Self::new(status, Body::from([("error", Member::Text(reason.to_owned())), ("field", Member::Text(field.to_owned()))]))
    }

    fn with_header(self, name: &str, value: &str) -> Self {
        Self { head: self.head.with_header(name, value), ..self }
    }

    fn reply(self) -> Reply {
        Reply { body: Reply::json(self.head.status, &self.body).body, ..self.head }
    }
}

/// What makes one REST producer different from another.
pub trait Policy {
    /// `name@version` of the producer, recorded in every event it publishes.
    fn producer(&self) -> &str;

    /// The path recorded in its events: components are `wasm`, the host's native baseline
    /// `native`.
    fn path(&self) -> Path {
        Path::Wasm
    }

    /// Rules on top of vote-core's (none by default).
    fn check(&self, _vote: &ValidVote) -> Result<(), VoteError> {
        Ok(())
    }
}

/// Why a publish was not acknowledged (the shape of `votes:platform/publisher`'s error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The broker refused the message; retrying will not help.
    Refused(String),
    /// The producer's queue is full: not stored, retry shortly.
    Overloaded(String),
    /// The broker could not be reached: not stored.
    Unavailable(String),
    /// No acknowledgement in time: maybe stored.
    Indeterminate(String),
}

/// Where the broker stored a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
}

/// The endpoint a request is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// `POST /votes`
    CastOne,
    /// `POST /votes/batch`
    CastBatch,
    /// `GET /.well-known/component`: who serves.
    Identity,
    /// Anything else, answered at once.
    Answer(Reply),
}

impl Endpoint {
    /// The largest body the endpoint reads.
    pub fn body_limit(&self) -> usize {
        match self {
            Endpoint::CastBatch => MAX_BATCH_BYTES,
            _ => MAX_VOTE_BYTES,
        }
    }
}

/// Which endpoint `method path` (path without the query) is for.
pub fn route(method: &str, path: &str) -> Endpoint {
    match (path, method) {
        ("/votes", "POST") => Endpoint::CastOne,
        ("/votes/batch", "POST") => Endpoint::CastBatch,
        ("/.well-known/component", "GET") => Endpoint::Identity,
        ("/votes" | "/votes/batch", _) => Endpoint::Answer(
            Reply::error(405, "method", &format!("{method} is not allowed here; use POST")).with_header("allow", "POST"),
        ),
        (other, _) => Endpoint::Answer(Reply::error(404, "path", &format!("no such endpoint: {other}; votes go to POST /votes"))),
    }
}

/// The reply to `GET /.well-known/component`.
pub fn identity(policy: &dyn Policy) -> Reply {
    Reply::json(200, &Body::from([("producer", Member::Text(policy.producer().to_owned()))]))
}

/// The request headers a REST producer reads.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub content_type: Option<String>,
    pub content_length: Option<usize>,
    pub idempotency_key: Option<String>,
}

impl RequestHead {
    /// Whether the body is JSON (`application/json`, any parameters).
    pub fn is_json(&self) -> bool {
        self.content_type
            .as_deref()
            .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
            .unwrap_or(false)
    }
}

fn invalid(error: &VoteError) -> Reply {
    invalid_answer(error).reply()
}

fn invalid_answer(error: &VoteError) -> Answer {
    Answer::error(400, error.field.as_str(), &error.reason)
}

/// The `413` for a body over `limit` bytes.
pub fn too_large(limit: usize) -> Reply {
    Reply::error(413, "body", &format!("the body is larger than the limit of {limit} bytes"))
}

/// Checks the head before the body is read: `415` if it is not JSON, `413` if its declared
/// length is over `limit`, `400` naming `idempotency-key` if the key is bad. Returns the key.
pub fn check_head(head: &RequestHead, limit: usize) -> Result<Option<IdempotencyKey>, Reply> {
    if !head.is_json() {
        return Err(Reply::error(415, "content-type", "send the body as JSON with content-type: application/json"));
    }
    let key = head.idempotency_key.as_deref().map(IdempotencyKey::parse).transpose().map_err(|error| invalid(&error))?;
    if head.content_length.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    Ok(key)
}

/// Validates a received vote and builds its event (with the id its idempotency key gave, if
/// any), or says which field is wrong.
fn accept(input: Result<VoteInput, VoteError>, policy: &dyn Policy, vote_id: impl FnOnce(&ValidVote) -> Option<String>) -> Result<VoteEvent, VoteError> {
    let vote = validate(&input?)?;
    policy.check(&vote)?;
    let vote_id = vote_id(&vote);
    Ok(new_event(vote, policy.path(), policy.producer(), now_ms(), vote_id))
}

/// The Kafka key and payload of an event (topic [`crate::TOPIC`]).
pub fn message(event: &VoteEvent) -> (Vec<u8>, Vec<u8>) {
    (event.vote_id.clone().into_bytes(), encode_event(event))
}

/// The event to publish for `POST /votes`, or the `400` naming the wrong field.
pub fn prepare_one(body: &[u8], key: Option<&IdempotencyKey>, policy: &dyn Policy) -> Result<VoteEvent, Reply> {
    accept(parse_json_vote(body), policy, |vote| key.map(|k| k.vote_id(vote, None))).map_err(|error| invalid(&error))
}

/// What a reply calls the published message: its noun and the reply field holding its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub noun: &'static str,
    pub id_field: &'static str,
}

/// A band vote, `vote_id`.
pub const VOTE: Item = Item { noun: "vote", id_field: "vote_id" };

/// The answer to one published vote. Broker failures are `503` with `Retry-After`, and say
/// exactly what is known: not stored (overloaded, unavailable) or maybe stored (indeterminate,
/// where the retry must reuse the idempotency key, echoed back when one was sent).
pub fn published(event: &VoteEvent, outcome: Result<Ack, PublishError>, key: Option<&IdempotencyKey>) -> Reply {
    published_item(VOTE, &event.vote_id, outcome, key)
}

/// [`published`] for any message: `202` with its id (named `item.id_field`), partition and
/// offset; a refusal `502`; not stored or maybe stored `503` with `Retry-After`.
pub fn published_item(item: Item, id: &str, outcome: Result<Ack, PublishError>, key: Option<&IdempotencyKey>) -> Reply {
    published_answer(item, id, outcome, key).reply()
}

/// [`published_item`] before it is encoded.
fn published_answer(item: Item, id: &str, outcome: Result<Ack, PublishError>, key: Option<&IdempotencyKey>) -> Answer {
    let noun = item.noun;
    let reason = match outcome {
        Ok(ack) => {
            let body = Body::from([
                ("partition", Member::Whole(ack.partition.into())),
                ("offset", Member::Whole(ack.offset)),
                (item.id_field, Member::Text(id.to_owned())),
            ]);
            return Answer::new(202, body);
        }
        Err(PublishError::Refused(reason)) => return Answer::error(502, "broker", &format!("the broker refused the {noun}: {reason}")),
        Err(PublishError::Overloaded(reason)) => format!("overloaded: the {noun} was not stored, retry shortly ({reason})"),
        Err(PublishError::Unavailable(reason)) => format!("the {noun} was not stored, try again ({reason})"),
        Err(PublishError::Indeterminate(reason)) => {
            let mut answer = Answer::error(503, "broker", &format!("{} ({reason})", crate::maybe_stored_advice_for(noun, key.is_some())));
            answer.body.insert(item.id_field, Member::Text(id.to_owned()));
            answer = answer.with_header("retry-after", RETRY_AFTER_SECONDS);
            if let Some(key) = key {
                answer.body.insert("idempotency_key", Member::Text(key.as_str().to_owned()));
                answer = answer.with_header(crate::IDEMPOTENCY_KEY_HEADER, key.as_str());
            }
            return answer;
        }
    };
    Answer::error(503, "broker", &reason).with_header("retry-after", RETRY_AFTER_SECONDS)
}

/// A checked `POST /votes/batch`: every item validated, the valid ones to publish together.
pub struct Batch {
    checked: Vec<Result<VoteEvent, VoteError>>,
    key: Option<IdempotencyKey>,
}

impl Batch {
    /// Parses and checks a batch body. With an idempotency key, each vote gets the id the key
    /// gives that vote (the n-th equal one: [`crate::Occurrences`]), so a retried batch, whole,
    /// a subset or reordered, counts each vote once.
    pub fn prepare(body: &[u8], key: Option<IdempotencyKey>, policy: &dyn Policy) -> Result<Self, Reply> {
        let items = parse_json_votes(body, MAX_BATCH_ITEMS).map_err(|error| invalid(&error))?;
        let mut occurrences = crate::Occurrences::default();
        let checked = items
            .into_iter()
            .map(|item| accept(item, policy, |vote| key.as_ref().map(|k| k.vote_id(vote, Some(occurrences.next(vote))))))
            .collect();
        Ok(Self { checked, key })
    }

    /// The valid votes' events, in order, to publish together.
    pub fn events(&self) -> impl Iterator<Item = &VoteEvent> {
        self.checked.iter().filter_map(|c| c.as_ref().ok())
    }

    /// Answers each item with the status and body `POST /votes` would have given it, from the
    /// outcomes of [`Batch::events`] in order. The batch answers 200 unless every item failed at
    /// the broker with a 503 (then 503 with `Retry-After`, so clients retry the whole batch,
    /// under the same idempotency key).
    pub fn answer(&self, outcomes: Vec<Result<Ack, PublishError>>) -> Reply {
        let mut outcomes = outcomes.into_iter();
        let mut results = Vec::with_capacity(self.checked.len());
        let (mut accepted, mut unavailable) = (0usize, 0usize);
        for item in &self.checked {
            let answer = match item {
                Ok(event) => {
                    let outcome = outcomes.next().unwrap_or_else(|| Err(PublishError::Refused("the publisher answered fewer items".into())));
                    published_answer(VOTE, &event.vote_id, outcome, self.key.as_ref())
                }
                Err(error) => invalid_answer(error),
            };
            match answer.head.status {
                202 => accepted += 1,
                503 => unavailable += 1,
                _ => {}
            }
            let mut body = answer.body;
            body.insert("status", Member::Whole(answer.head.status.into()));
            results.push(body);
        }
        let count = |n: usize| Member::Whole(i64::try_from(n).unwrap_or(i64::MAX));
        let summary = Body::from([("accepted", count(accepted)), ("rejected", count(self.checked.len() - accepted)), ("results", Member::Bodies(results))]);
        if unavailable == self.checked.len() {
            return Reply::json(503, &summary).with_header("retry-after", RETRY_AFTER_SECONDS);
        }
        Reply::json(200, &summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    impl Policy for Plain {
        fn producer(&self) -> &str {
            "test@0"
        }
    }

    fn json_head() -> RequestHead {
        RequestHead { content_type: Some("application/json; charset=utf-8".into()), ..RequestHead::default() }
    }

    #[test]
    fn routes_and_refusals() {
        assert_eq!(route("POST", "/votes"), Endpoint::CastOne);
        assert_eq!(route("POST", "/votes/batch").body_limit(), MAX_BATCH_BYTES);
        let Endpoint::Answer(reply) = route("GET", "/votes") else { panic!("405 expected") };
        assert_eq!(reply.status, 405);
        let Endpoint::Answer(reply) = route("POST", "/elsewhere") else { panic!("404 expected") };
        assert_eq!(reply.status, 404);
    }

    #[test]
    fn the_head_is_checked_before_the_body() {
        assert_eq!(check_head(&RequestHead::default(), MAX_VOTE_BYTES).unwrap_err().status, 415);
        let long = RequestHead { content_length: Some(MAX_VOTE_BYTES + 1), ..json_head() };
        assert_eq!(check_head(&long, MAX_VOTE_BYTES).unwrap_err().status, 413);
        let bad_key = RequestHead { idempotency_key: Some("has space".into()), ..json_head() };
        assert!(String::from_utf8(check_head(&bad_key, MAX_VOTE_BYTES).unwrap_err().body).unwrap().contains("idempotency-key"));
        assert_eq!(check_head(&json_head(), MAX_VOTE_BYTES).unwrap(), None);
    }

    #[test]
    fn a_vote_is_accepted_or_its_field_named() {
        let event = prepare_one(br#"{"name":"Alux Nahual","album":"Conquista","year":"1986","rank":1}"#, None, &Plain).unwrap();
        assert_eq!(event.path, "wasm");
        let reply = published(&event, Ok(Ack { partition: 2, offset: 41 }), None);
        assert_eq!(reply.status, 202);
        let refused = prepare_one(br#"{"name":"","album":"Conquista","year":"1986","rank":1}"#, None, &Plain).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(String::from_utf8(refused.body).unwrap().contains("\"field\":\"name\""));
    }

    #[test]
    fn reply_bodies_are_the_json_clients_read() {
        let text = |reply: &Reply| String::from_utf8(reply.body.clone()).unwrap();
        let accepted = published_item(VOTE, "v-1", Ok(Ack { partition: 3, offset: 42 }), None);
        assert_eq!((accepted.status, text(&accepted)), (202, r#"{"offset":42,"partition":3,"vote_id":"v-1"}"#.to_owned()));
        let key = IdempotencyKey::parse("retry-me").unwrap();
        let maybe = published_item(VOTE, "v-2", Err(PublishError::Indeterminate("timed out".into())), Some(&key));
        let body: serde_json::Value = serde_json::from_slice(&maybe.body).unwrap();
        assert_eq!((maybe.status, &body["field"], &body["vote_id"], &body["idempotency_key"]), (503, &"broker".into(), &"v-2".into(), &"retry-me".into()));
        assert!(body["error"].as_str().unwrap().ends_with("(timed out)"), "{body}");
        assert_eq!(maybe.headers, [("retry-after".to_owned(), RETRY_AFTER_SECONDS.to_owned()), (crate::IDEMPOTENCY_KEY_HEADER.to_owned(), "retry-me".to_owned())]);
        assert_eq!(text(&identity(&Plain)), r#"{"producer":"test@0"}"#);
        assert_eq!(text(&Reply::error(404, "path", "no \"such\" endpoint")), r#"{"error":"no \"such\" endpoint","field":"path"}"#);

        let body = br#"[{"name":"Legion","album":"Legion","year":1989,"rank":1},{"name":"","album":"x","year":1989,"rank":1}]"#;
        let batch = Batch::prepare(body, None, &Plain).unwrap();
        let vote_id = batch.events().next().unwrap().vote_id.clone();
        let answer: serde_json::Value = serde_json::from_slice(&batch.answer(vec![Ok(Ack { partition: 0, offset: 7 })]).body).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({
                "accepted": 1,
                "rejected": 1,
                "results": [
                    { "offset": 7, "partition": 0, "vote_id": vote_id, "status": 202 },
                    { "error": "must not be empty", "field": "name", "status": 400 },
                ],
            })
        );
    }

    #[test]
    fn a_batch_fails_as_a_whole_only_when_every_item_was_unavailable() {
        let body = br#"[{"name":"Legion","album":"Legion","year":1989,"rank":1},{"name":"","album":"x","year":1989,"rank":1}]"#;
        let batch = Batch::prepare(body, None, &Plain).unwrap();
        assert_eq!(batch.events().count(), 1);
        assert_eq!(batch.answer(vec![Ok(Ack { partition: 0, offset: 1 })]).status, 200);
        assert_eq!(batch.answer(vec![Err(PublishError::Unavailable("down".into()))]).status, 200, "the invalid item is not a 503");
        let only_valid = Batch::prepare(br#"[{"name":"Legion","album":"Legion","year":1989,"rank":1}]"#, None, &Plain).unwrap();
        assert_eq!(only_valid.answer(vec![Err(PublishError::Unavailable("down".into()))]).status, 503);
    }
}
