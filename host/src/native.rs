//! The native REST baseline (`votes-host --native`): `POST /votes` and `POST /votes/batch`
//! answered by native code over the same `vote_core::rest` rules, HTTP server, limits and Kafka
//! publisher as the component, so native REST against wasm REST is what the sandbox costs.

use std::time::Instant;

use bytes::Bytes;
use futures::future::join_all;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use vote_core::proto::VoteEvent;
use vote_core::rest::{self, Ack, Batch, Endpoint, Policy, PublishError, Reply, RequestHead};
use vote_core::{IdempotencyKey, Path, IDEMPOTENCY_KEY_HEADER, TOPIC};
use vote_service::vote_metrics::VoteMetrics;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The producer name and version this baseline records in its events.
pub const PRODUCER: &str = concat!("native-rest@", env!("CARGO_PKG_VERSION"));

/// The baseline's state: the shared publisher and the vote metrics of path `native`.
pub struct NativeRest {
    publisher: vote_kafka::Publisher,
    votes: VoteMetrics,
}

impl Policy for NativeRest {
    fn producer(&self) -> &str {
        PRODUCER
    }

    fn path(&self) -> Path {
        Path::Native
    }
}

/// The publisher's outcome in vote-core's terms (the component hears the same through the
/// `votes:platform/publisher` import).
fn outcome(published: Result<vote_kafka::Ack, vote_kafka::PublishError>) -> Result<Ack, PublishError> {
    match published {
        Ok(ack) => Ok(Ack { partition: ack.partition, offset: ack.offset }),
        Err(vote_kafka::PublishError::Unavailable(reason)) => Err(PublishError::Unavailable(reason)),
        Err(vote_kafka::PublishError::Overloaded(reason)) => Err(PublishError::Overloaded(reason)),
        Err(vote_kafka::PublishError::Indeterminate(reason)) => Err(PublishError::Indeterminate(reason)),
        Err(vote_kafka::PublishError::Refused(reason)) => Err(PublishError::Refused(reason)),
    }
}

impl NativeRest {
    pub fn new(publisher: vote_kafka::Publisher, votes: VoteMetrics) -> Self {
        Self { publisher, votes }
    }

    /// Publishes one event and counts it in the vote metrics, as the host's publisher import
    /// does for a component.
    async fn publish(&self, event: &VoteEvent, received: Instant) -> Result<Ack, PublishError> {
        let (key, payload) = rest::message(event);
        let published = self.publisher.publish(TOPIC, &key, &payload, &[]).await;
        match &published {
            Ok(_) => self.votes.accepted(received.elapsed()),
            Err(error) => self.votes.publish_failed(error),
        }
        outcome(published)
    }

    /// Answers one request whose body the server has read (within its own cap).
    pub async fn handle(&self, request: Request<Bytes>, received: Instant) -> Response<HyperOutgoingBody> {
        let (head, body) = request.into_parts();
        let endpoint = rest::route(head.method.as_str(), head.uri.path());
        let reply = match endpoint {
            Endpoint::CastOne | Endpoint::CastBatch => {
                let header = |name: &str| head.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                let request_head = RequestHead {
                    content_type: header("content-type"),
                    content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
                    idempotency_key: header(IDEMPOTENCY_KEY_HEADER),
                };
                let limit = endpoint.body_limit();
                match rest::check_head(&request_head, limit) {
                    Err(reply) => reply,
                    Ok(_) if body.len() > limit => rest::too_large(limit),
                    Ok(key) if endpoint == Endpoint::CastOne => self.cast_one(&body, key, received).await,
                    Ok(key) => self.cast_batch(&body, key, received).await,
                }
            }
            Endpoint::Identity => rest::identity(self),
            Endpoint::Answer(reply) => reply,
        };
        response(reply)
    }

    async fn cast_one(&self, body: &[u8], key: Option<IdempotencyKey>, received: Instant) -> Reply {
        match rest::prepare_one(body, key.as_ref(), self) {
            Ok(event) => rest::published(&event, self.publish(&event, received).await, key.as_ref()),
            Err(reply) => reply,
        }
    }

    async fn cast_batch(&self, body: &[u8], key: Option<IdempotencyKey>, received: Instant) -> Reply {
        let batch = match Batch::prepare(body, key, self) {
            Ok(batch) => batch,
            Err(reply) => return reply,
        };
        let outcomes = join_all(batch.events().map(|event| self.publish(event, received))).await;
        batch.answer(outcomes)
    }
}

/// A [`Reply`] as a hyper response.
fn response(reply: Reply) -> Response<HyperOutgoingBody> {
    let body = crate::serve::whole_body(reply.body);
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
