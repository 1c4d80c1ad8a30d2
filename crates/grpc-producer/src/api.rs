//! The `VoteService` handlers: validate with vote-core, publish, answer after the broker's ack,
//! within a concurrency limit and a deadline per call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use vote_core::proto::{CastSummary, Receipt, Rejection, Vote};
use vote_core::{encode_event, maybe_stored_advice, new_event, now_ms, validate, IdempotencyKey, KeyedVote, Occurrences, Path, VoteError, VoteInput, IDEMPOTENCY_KEY_HEADER, TOPIC};
use vote_kafka::{PublishError, Publisher};
use vote_service::admission::Admission;
use vote_service::vote_metrics::Outcome;

use crate::deadline::call_deadline;
use crate::metrics::Metrics;

/// How many votes of one stream may wait for the broker at once.
pub const STREAM_IN_FLIGHT: usize = 256;
/// How many rejections a `CastSummary` lists, the first by position (the counts are complete).
pub const MAX_LISTED_REJECTIONS: usize = 100;

/// The producer's limits (flags of the binary).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Calls (`Cast` or `CastStream`) served at once; one more waits in the call queue.
    pub max_concurrent_calls: usize,
    /// Calls that may wait for a slot; one more answers `RESOURCE_EXHAUSTED` at once.
    pub max_queued_calls: usize,
    /// How long a call waits for a slot before it answers `RESOURCE_EXHAUSTED`.
    pub call_queue_wait: Duration,
    /// The longest a `Cast` runs (a client's shorter `grpc-timeout` wins).
    pub call_timeout: Duration,
    /// The most votes one `CastStream` takes.
    pub stream_max_votes: u64,
    /// The longest a `CastStream` runs (a client's shorter `grpc-timeout` wins).
    pub stream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 1024,
            max_queued_calls: 1024,
            call_queue_wait: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
            stream_max_votes: 10_000,
            stream_timeout: Duration::from_secs(60),
        }
    }
}

/// The service state: one shared publisher, this producer's name@version, and its limits.
#[derive(Clone)]
pub struct VoteApi {
    publisher: Publisher,
    producer: String,
    metrics: Metrics,
    limits: Limits,
    calls: Arc<Admission>,
}

impl VoteApi {
    pub fn new(publisher: Publisher, metrics: Metrics, limits: Limits) -> Self {
        let producer = format!("{}@{}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        let calls = Arc::new(Admission::new(limits.max_concurrent_calls, limits.max_queued_calls, limits.call_queue_wait));
        Self { publisher, producer, metrics, limits, calls }
    }

    /// A slot for one call: at once if one is free, else after waiting in the call queue (in
    /// arrival order, at most `Limits::call_queue_wait`); `RESOURCE_EXHAUSTED` when the queue is
    /// full or the wait ran out.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        if let Some(slot) = self.calls.try_enter() {
            return Ok(slot);
        }
        self.metrics.calls_queued.inc();
        let (slot, waited) = self.calls.enter().await;
        self.metrics.calls_queued.dec();
        self.metrics.call_queue_wait_seconds.observe(waited.as_secs_f64());
        slot.ok_or_else(|| {
            self.metrics.votes.received(Outcome::Overloaded);
            Status::resource_exhausted(format!(
                "the producer is serving its limit of {} calls and {} more wait (at most {:?} each); nothing was stored, retry shortly",
                self.limits.max_concurrent_calls,
                self.limits.max_queued_calls,
                self.limits.call_queue_wait
            ))
        })
    }

    /// Validates and publishes one vote; `vote_id` is the id the client's idempotency key gave.
    /// Counts the vote by its outcome, and an accepted one's time from arrival to the broker's ack.
    async fn cast_one(&self, vote: &Vote, keyed: Option<KeyedVote>) -> Result<Receipt, CastError> {
        let received = Instant::now();
        let outcome = self.publish_one(vote, keyed).await;
        match &outcome {
            Ok(_) => self.metrics.votes.accepted(received.elapsed()),
            Err(error) => self.record_refusal(error),
        }
        outcome
    }

    async fn publish_one(&self, vote: &Vote, keyed: Option<KeyedVote>) -> Result<Receipt, CastError> {
        let valid = validate(&VoteInput::from(vote)).map_err(CastError::Invalid)?;
        let vote_id = keyed.map(|k| k.vote_id(&valid));
        let event = new_event(valid, Path::Grpc, &self.producer, now_ms(), vote_id);
        let payload = encode_event(&event);
        let ack = self
            .publisher
            .publish(TOPIC, event.vote_id.as_bytes(), &payload, &[])
            .await
            .map_err(CastError::Publish)?;
        Ok(Receipt { vote_id: event.vote_id, partition: ack.partition, offset: ack.offset })
    }

    fn record_refusal(&self, error: &CastError) {
        match error {
            CastError::Invalid(_) => self.metrics.votes.received(Outcome::Invalid),
            CastError::Publish(error) => self.metrics.votes.publish_failed(error),
        }
    }
}

/// The client's idempotency key from the call's `idempotency-key` metadata, if it sent one.
fn idempotency_key<T>(request: &Request<T>) -> Result<Option<IdempotencyKey>, VoteError> {
    let Some(value) = request.metadata().get(IDEMPOTENCY_KEY_HEADER) else { return Ok(None) };
    // Bytes that are not text fail the key's own check, with its message.
    IdempotencyKey::parse(&String::from_utf8_lossy(value.as_bytes())).map(Some)
}

/// Why one vote was not cast.
#[derive(Debug)]
enum CastError {
    Invalid(VoteError),
    Publish(PublishError),
}

/// A vote's status for the client: invalid names the field; a broker failure says whether the
/// vote was stored (never, for overload and unavailability; maybe, for no acknowledgement, with
/// the idempotency key echoed in the trailers when one was sent).
fn status(error: CastError, key: Option<&IdempotencyKey>) -> Status {
    match error {
        CastError::Invalid(error) => invalid_argument(error.field.as_str(), &error.reason, error.to_string()),
        CastError::Publish(PublishError::Overloaded(reason)) => {
            Status::resource_exhausted(format!("overloaded: the vote was not stored, retry shortly ({reason})"))
        }
        CastError::Publish(PublishError::Unavailable(reason)) => {
            Status::unavailable(format!("the vote was not stored, try again ({reason})"))
        }
        CastError::Publish(PublishError::Indeterminate(reason)) => maybe_stored(tonic::Code::Unavailable, &reason, key),
        CastError::Publish(error @ PublishError::Refused(_)) => Status::internal(error.to_string()),
    }
}

/// The vote may or may not be stored: retry under the same key (echoed in the trailers).
fn maybe_stored(code: tonic::Code, reason: &str, key: Option<&IdempotencyKey>) -> Status {
    let mut status = Status::new(code, format!("{} ({reason})", maybe_stored_advice(key.is_some())));
    if let Some(value) = key.and_then(|k| k.as_str().parse().ok()) {
        status.metadata_mut().insert(IDEMPOTENCY_KEY_HEADER, value);
    }
    status
}

fn invalid_argument(field: &str, reason: &str, message: String) -> Status {
    let details = ErrorDetails::with_bad_request_violation(field, reason);
    Status::with_error_details(tonic::Code::InvalidArgument, message, details)
}

impl CastError {
    fn rejection(&self, index: u64) -> Rejection {
        match self {
            CastError::Invalid(error) => Rejection { index, field: error.field.as_str().to_owned(), reason: error.reason.clone() },
            CastError::Publish(error) => Rejection { index, field: "broker".to_owned(), reason: error.to_string() },
        }
    }
}

/// What a stream has done so far, in bounded memory: counts, and the rejections with the lowest
/// positions (at most [`MAX_LISTED_REJECTIONS`]).
#[derive(Default)]
struct StreamTally {
    accepted: u64,
    rejected: u64,
    first_rejections: BTreeMap<u64, Rejection>,
}

impl StreamTally {
    fn add(&mut self, position: u64, outcome: &Result<Receipt, CastError>) {
        match outcome {
            Ok(_) => self.accepted += 1,
            Err(error) => {
                self.rejected += 1;
                self.first_rejections.insert(position, error.rejection(position));
                if self.first_rejections.len() > MAX_LISTED_REJECTIONS {
                    self.first_rejections.pop_last();
                }
            }
        }
    }

    fn summary(self) -> CastSummary {
        CastSummary { accepted: self.accepted, rejected: self.rejected, rejections: self.first_rejections.into_values().collect() }
    }

    /// What was done, for a status that ends the stream early.
    fn so_far(&self) -> String {
        format!("{} votes were accepted and {} rejected before it", self.accepted, self.rejected)
    }
}

/// Why a stream stopped reading before its end.
enum Cut {
    Cap,
    Deadline,
}

#[tonic::async_trait]
impl vote_grpc::VoteService for VoteApi {
    async fn cast(&self, request: Request<Vote>) -> Result<Response<Receipt>, Status> {
        let _slot = self.admit().await?;
        let deadline = call_deadline(request.metadata(), self.limits.call_timeout);
        let key = idempotency_key(&request).map_err(|error| self.refuse_key(error))?;
        let keyed = key.as_ref().map(|k| k.item(None));
        match tokio::time::timeout(deadline, self.cast_one(request.get_ref(), keyed)).await {
            Ok(outcome) => {
                outcome.map(Response::new).map_err(|error| status(error, key.as_ref()))
            }
            Err(_elapsed) => {
                self.metrics.votes.received(Outcome::Unavailable);
                let reason = format!("no acknowledgement within the call deadline of {deadline:?}");
                Err(maybe_stored(tonic::Code::DeadlineExceeded, &reason, key.as_ref()))
            }
        }
    }

    /// Publishes valid votes as they arrive (up to [`STREAM_IN_FLIGHT`] at once) and answers the
    /// counts and the first rejections by position. A stream takes at most
    /// `Limits::stream_max_votes` votes and runs at most `Limits::stream_timeout` (or the
    /// client's shorter deadline): past either, it stops reading, lets the votes in flight finish,
    /// and ends with `INVALID_ARGUMENT` (field `stream`) or `DEADLINE_EXCEEDED` saying how many
    /// were accepted. With an idempotency key, each vote gets the id the key gives that vote (the n-th equal one).
    async fn cast_stream(&self, request: Request<Streaming<Vote>>) -> Result<Response<CastSummary>, Status> {
        let _slot = self.admit().await?;
        let deadline = call_deadline(request.metadata(), self.limits.stream_timeout);
        // Reading stops early enough that the votes still in flight finish within the deadline
        // (one publish bound before it; halfway through a deadline too short for that).
        let stop_reading = tokio::time::Instant::now() + deadline.saturating_sub(self.publisher.bound()).max(deadline / 2);
        let key = idempotency_key(&request).map_err(|error| self.refuse_key(error))?;
        let mut incoming = request.into_inner();
        let mut in_flight = FuturesUnordered::new();
        let mut tally = StreamTally::default();
        let mut index = 0u64;
        let mut occurrences = Occurrences::default();
        let mut cut = None;
        loop {
            tokio::select! {
                next = incoming.next(), if in_flight.len() < STREAM_IN_FLIGHT => match next {
                    Some(Ok(_)) if index >= self.limits.stream_max_votes => {
                        cut = Some(Cut::Cap);
                        break;
                    }
                    Some(Ok(vote)) => {
                        let api = self.clone();
                        let position = index;
                        // Equal votes of one stream are told apart by their occurrence, so a
                        // stream retried whole, in part or reordered names each vote as before.
                        let keyed = key.as_ref().map(|k| {
                            let occurrence = validate(&VoteInput::from(&vote)).map(|v| occurrences.next(&v)).unwrap_or(0);
                            k.item(Some(occurrence))
                        });
                        in_flight.push(async move { (position, api.cast_one(&vote, keyed).await) });
                        index += 1;
                    }
                    Some(Err(status)) => return Err(status),
                    None => break,
                },
                Some((position, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    tally.add(position, &outcome);
                }
                () = tokio::time::sleep_until(stop_reading) => {
                    cut = Some(Cut::Deadline);
                    break;
                }
            }
        }
        while let Some((position, outcome)) = in_flight.next().await {
            tally.add(position, &outcome);
        }
        match cut {
            None => Ok(Response::new(tally.summary())),
            Some(Cut::Cap) => {
                let max = self.limits.stream_max_votes;
                let reason = format!("a stream takes at most {max} votes; the rest was not read: send it in a new stream");
                Err(invalid_argument("stream", &reason, format!("stream: {reason} ({})", tally.so_far())))
            }
            Some(Cut::Deadline) => Err(Status::deadline_exceeded(format!(
                "the stream ran past its deadline of {deadline:?}; the rest was not read: send it in a new stream ({})",
                tally.so_far()
            ))),
        }
    }
}

impl VoteApi {
    /// Counts and answers a call refused before any vote was read (a bad idempotency key).
    fn refuse_key(&self, error: VoteError) -> Status {
        self.metrics.votes.received(Outcome::Invalid);
        invalid_argument(error.field.as_str(), &error.reason, error.to_string())
    }
}
