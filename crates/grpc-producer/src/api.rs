//! The `VoteService` handlers: validate with vote-core, publish, answer after the broker's ack.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use vote_core::proto::{CastSummary, Receipt, Rejection, Vote};
use vote_core::{encode_event, new_event, now_ms, validate, IdempotencyKey, Path, VoteError, VoteInput, IDEMPOTENCY_KEY_HEADER, TOPIC};
use vote_kafka::{PublishError, Publisher};

use crate::metrics::Metrics;

/// How many votes of one stream may wait for the broker at once.
pub const STREAM_IN_FLIGHT: usize = 256;
/// How many rejections a `CastSummary` lists (the counts are always complete).
pub const MAX_LISTED_REJECTIONS: usize = 100;

/// The service state: one shared publisher and this producer's name@version.
#[derive(Clone)]
pub struct VoteApi {
    publisher: Publisher,
    producer: String,
    metrics: Metrics,
}

impl VoteApi {
    pub fn new(publisher: Publisher, metrics: Metrics) -> Self {
        let producer = format!("{}@{}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        Self { publisher, producer, metrics }
    }

    /// Validates and publishes one vote; `vote_id` is the id the client's idempotency key gave.
    async fn cast_one(&self, vote: &Vote, vote_id: Option<String>) -> Result<Receipt, CastError> {
        let received = Instant::now();
        let valid = validate(&VoteInput::from(vote)).map_err(CastError::Invalid)?;
        let event = new_event(valid, Path::Grpc, &self.producer, now_ms(), vote_id);
        let payload = encode_event(&event);
        let ack = self
            .publisher
            .publish(TOPIC, event.vote_id.as_bytes(), &payload, &[])
            .await
            .map_err(CastError::Publish)?;
        self.metrics.publish_seconds.observe(received.elapsed().as_secs_f64());
        Ok(Receipt { vote_id: event.vote_id, partition: ack.partition, offset: ack.offset })
    }

    fn record(&self, outcome: &Result<Receipt, CastError>) {
        let label = match outcome {
            Ok(_) => "accepted",
            Err(CastError::Invalid(_)) => "invalid",
            Err(CastError::Publish(PublishError::Unavailable(_))) => "unavailable",
            Err(CastError::Publish(PublishError::Refused(_))) => "refused",
        };
        self.metrics.votes.with_label_values(&[label]).inc();
    }
}

/// The client's idempotency key from the call's `idempotency-key` metadata, if it sent one.
fn idempotency_key<T>(request: &Request<T>) -> Result<Option<IdempotencyKey>, CastError> {
    let Some(value) = request.metadata().get(IDEMPOTENCY_KEY_HEADER) else { return Ok(None) };
    // Bytes that are not text fail the key's own check, with its message.
    IdempotencyKey::parse(&String::from_utf8_lossy(value.as_bytes())).map(Some).map_err(CastError::Invalid)
}

/// Why one vote was not cast.
#[derive(Debug)]
enum CastError {
    Invalid(VoteError),
    Publish(PublishError),
}

impl From<CastError> for Status {
    fn from(error: CastError) -> Self {
        match error {
            CastError::Invalid(error) => {
                let details = ErrorDetails::with_bad_request_violation(error.field.as_str(), error.reason.clone());
                Status::with_error_details(tonic::Code::InvalidArgument, error.to_string(), details)
            }
            CastError::Publish(error @ PublishError::Unavailable(_)) => Status::unavailable(error.to_string()),
            CastError::Publish(error @ PublishError::Refused(_)) => Status::internal(error.to_string()),
        }
    }
}

impl CastError {
    fn rejection(&self, index: u64) -> Rejection {
        match self {
            CastError::Invalid(error) => Rejection { index, field: error.field.as_str().to_owned(), reason: error.reason.clone() },
            CastError::Publish(error) => Rejection { index, field: "broker".to_owned(), reason: error.to_string() },
        }
    }
}

#[tonic::async_trait]
impl vote_grpc::VoteService for VoteApi {
    async fn cast(&self, request: Request<Vote>) -> Result<Response<Receipt>, Status> {
        let outcome = match idempotency_key(&request) {
            Ok(key) => self.cast_one(request.get_ref(), key.map(|k| k.vote_id(None))).await,
            Err(error) => Err(error),
        };
        self.record(&outcome);
        Ok(Response::new(outcome?))
    }

    /// Publishes valid votes as they arrive (up to [`STREAM_IN_FLIGHT`] at once) and reports
    /// every vote that was not published, invalid or unacknowledged, by its position.
    /// With an idempotency key, vote `i` of the stream gets the id the key gives item `i`.
    async fn cast_stream(&self, request: Request<Streaming<Vote>>) -> Result<Response<CastSummary>, Status> {
        let key = idempotency_key(&request).map_err(Status::from)?;
        let mut incoming = request.into_inner();
        let mut in_flight = FuturesUnordered::new();
        let mut outcomes: Vec<(u64, Result<Receipt, CastError>)> = Vec::new();
        let mut index = 0u64;
        loop {
            tokio::select! {
                next = incoming.next(), if in_flight.len() < STREAM_IN_FLIGHT => match next {
                    Some(Ok(vote)) => {
                        let api = self.clone();
                        let position = index;
                        let vote_id = key.as_ref().map(|k| k.vote_id(Some(position)));
                        in_flight.push(async move { (position, api.cast_one(&vote, vote_id).await) });
                        index += 1;
                    }
                    Some(Err(status)) => return Err(status),
                    None => break,
                },
                Some(done) = in_flight.next(), if !in_flight.is_empty() => outcomes.push(done),
            }
        }
        while let Some(done) = in_flight.next().await {
            outcomes.push(done);
        }
        outcomes.sort_by_key(|(position, _)| *position);
        let mut summary = CastSummary::default();
        for (position, outcome) in &outcomes {
            self.record(outcome);
            match outcome {
                Ok(receipt) => {
                    summary.accepted += 1;
                    summary.vote_ids.push(receipt.vote_id.clone());
                }
                Err(error) => {
                    summary.rejected += 1;
                    if summary.rejections.len() < MAX_LISTED_REJECTIONS {
                        summary.rejections.push(error.rejection(*position));
                    }
                }
            }
        }
        Ok(Response::new(summary))
    }
}
