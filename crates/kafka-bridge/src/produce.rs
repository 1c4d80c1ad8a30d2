//! `POST /topics/{topic}`: every record of the list is published through the shared publisher
//! and answered in order with its offset or its error, as the Strimzi Kafka Bridge answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use vote_kafka::{PublishError, Publisher};

use crate::metrics::Metrics;
use crate::records::{decode, BridgeError, DecodedRecord, OffsetList, RecordList, RecordOutcome, BINARY_RECORDS, BRIDGE_REPLY};

/// The error code of a record whose topic this bridge does not publish to: the Bridge's own
/// answer for a topic that is not in the cluster's metadata.
pub const TOPIC_NOT_FOUND: i32 = 404;
/// The error code of a record that was not written (broker unavailable): retry later.
pub const NOT_STORED: i32 = 503;
/// The error code of a record that was not written because the producer's queue is full:
/// retry shortly.
pub const OVERLOADED: i32 = 429;
/// The error code of a record sent but not acknowledged in time: it may have been written.
pub const MAYBE_STORED: i32 = 504;
/// The error code of a record the broker refused (retrying will not help).
pub const REFUSED: i32 = 400;
/// The most records one request may carry; more get 413 and nothing is published.
pub const MAX_RECORDS: usize = 500;
/// The largest record (key, value and header values, decoded) one request may carry; a larger
/// one gets the whole request 413 and nothing is published.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// What the produce handler shares.
#[derive(Clone)]
pub struct Producer {
    pub publisher: Publisher,
    pub allowed_topics: Arc<Vec<String>>,
    pub metrics: Metrics,
    /// False while the last publish found the broker unavailable (for `/ready`).
    pub broker_reachable: Arc<AtomicBool>,
}

/// A reply in the Bridge's content type.
fn bridge_reply(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let json = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, BRIDGE_REPLY)], json).into_response()
}

/// A request refused as a whole, with the Bridge's `Error` body.
pub(crate) fn refuse(status: StatusCode, message: String, validation_errors: Vec<String>) -> Response {
    bridge_reply(status, &BridgeError { error_code: status.as_u16(), message, validation_errors })
}

/// The handler of `POST /topics/{topic}`.
pub async fn produce(State(producer): State<Producer>, Path(topic): Path<String>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let reply = answer(&producer, &topic, &headers, body).await;
    producer.metrics.requests.with_label_values(&[reply.status().as_str()]).inc();
    producer.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
    reply
}

async fn answer(producer: &Producer, topic: &str, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(BINARY_RECORDS) {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("this bridge takes records as {BINARY_RECORDS}, not {content_type:?}"), Vec::new());
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return refuse(rejection.status(), rejection.body_text(), Vec::new()),
    };
    let list: RecordList = match serde_json::from_slice(&body) {
        Ok(list) => list,
        Err(error) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, "The record list is not valid.".into(), vec![error.to_string()]),
    };
    let records = match decode(list) {
        Ok(records) => records,
        Err(problems) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, "The record list contains invalid records.".into(), problems),
    };
    if let Err(problems) = within_caps(&records) {
        producer.metrics.records.with_label_values(&[topic, "too_large"]).inc_by(records.len() as u64);
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "The record list is over this bridge's limits; nothing was published.".into(), problems);
    }
    let offsets = if producer.allowed_topics.iter().any(|allowed| allowed == topic) {
        join_all(records.iter().map(|record| publish(producer, topic, record))).await
    } else {
        producer.metrics.records.with_label_values(&[topic, "not_allowed"]).inc_by(records.len() as u64);
        let message = format!("Topic {topic} not present in metadata: this bridge publishes only to {:?}", producer.allowed_topics);
        records.iter().map(|_| RecordOutcome::Failed { error_code: TOPIC_NOT_FOUND, message: message.clone() }).collect()
    };
    bridge_reply(StatusCode::OK, &OffsetList { offsets })
}

/// Checks a request's caps before anything is published: at most [`MAX_RECORDS`] records of
/// at most [`MAX_RECORD_BYTES`] each.
fn within_caps(records: &[DecodedRecord]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if records.len() > MAX_RECORDS {
        problems.push(format!("records: {} records, at most {MAX_RECORDS} per request", records.len()));
    }
    for (index, record) in records.iter().enumerate() {
        let size = record.key.len() + record.value.len() + record.headers.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>();
        if size > MAX_RECORD_BYTES {
            problems.push(format!("records[{index}]: {size} bytes, at most {MAX_RECORD_BYTES} per record"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Publishes one record and waits for the broker's acknowledgement.
async fn publish(producer: &Producer, topic: &str, record: &DecodedRecord) -> RecordOutcome {
    let headers: Vec<(&str, &[u8])> = record.headers.iter().map(|(key, value)| (key.as_str(), value.as_slice())).collect();
    let outcome = producer.publisher.publish(topic, &record.key, &record.value, &headers).await;
    producer.broker_reachable.store(!matches!(outcome, Err(PublishError::Unavailable(_) | PublishError::Indeterminate(_))), Ordering::Relaxed);
    let failed = |error_code: i32, error: &PublishError| RecordOutcome::Failed { error_code, message: error.to_string() };
    let (label, reply) = match &outcome {
        Ok(ack) => ("sent", RecordOutcome::Sent { partition: ack.partition, offset: ack.offset }),
        Err(error @ PublishError::Unavailable(_)) => ("unavailable", failed(NOT_STORED, error)),
        Err(error @ PublishError::Overloaded(_)) => ("overloaded", failed(OVERLOADED, error)),
        Err(error @ PublishError::Indeterminate(_)) => ("indeterminate", failed(MAYBE_STORED, error)),
        Err(error @ PublishError::Refused(_)) => ("refused", failed(REFUSED, error)),
    };
    producer.metrics.records.with_label_values(&[topic, label]).inc();
    reply
}
