//! The Kafka Bridge's JSON for `POST /topics/{topic}` with `application/vnd.kafka.binary.v2+json`:
//! the record list sent (key, value and headers base64) and the reply, one offset or one error per
//! record, every one checked.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use crate::exports::votes::platform::publisher::{Ack, Message};
use crate::Failure;

/// The content type of a record list with binary (base64) keys and values.
pub const RECORDS_CONTENT_TYPE: &str = "application/vnd.kafka.binary.v2+json";
/// The content type of the bridge's replies.
pub const REPLY_CONTENT_TYPE: &str = "application/vnd.kafka.v2+json";

/// Kafka's rule for topic names, checked here so a name never has to be escaped in the path.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
        return Err(format!("{topic:?} is not a Kafka topic name"));
    }
    Ok(())
}

/// The request body: `{"records":[{"key","value","headers"}]}`, bytes in base64.
pub fn record_list(batch: &[&Message]) -> Vec<u8> {
    let records: Vec<Value> = batch
        .iter()
        .map(|message| {
            let mut record = json!({ "key": BASE64.encode(&message.key), "value": BASE64.encode(&message.payload) });
            if !message.headers.is_empty() {
                let headers: Vec<Value> =
                    message.headers.iter().map(|h| json!({ "key": h.key, "value": BASE64.encode(&h.value) })).collect();
                record["headers"] = headers.into();
            }
            record
        })
        .collect();
    json!({ "records": records }).to_string().into_bytes()
}

/// The outcome of each of `count` records from the bridge's answer.
pub fn outcomes(status: u16, body: &[u8], count: usize) -> Vec<Result<Ack, Failure>> {
    let reply: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let failure = request_failure(status, reply.as_ref());
        return (0..count).map(|_| Err(failure.clone())).collect();
    }
    let offsets = reply.as_ref().and_then(|r| r.get("offsets")).and_then(Value::as_array);
    match offsets {
        Some(offsets) if offsets.len() == count => offsets.iter().map(record_outcome).collect(),
        Some(offsets) => {
            let failure = Failure::Indeterminate(format!("the bridge answered {} offsets for {count} records", offsets.len()));
            (0..count).map(|_| Err(failure.clone())).collect()
        }
        None => {
            let failure = Failure::Indeterminate(format!("the bridge's answer has no offsets: {}", String::from_utf8_lossy(body)));
            (0..count).map(|_| Err(failure.clone())).collect()
        }
    }
}

/// One entry of `offsets`: `{"partition","offset"}` or `{"error_code","message"}`. Only 503
/// says the record was not written; any other 5xx (a delivery timeout is a 500 on Strimzi's
/// bridge) leaves its fate unknown.
fn record_outcome(entry: &Value) -> Result<Ack, Failure> {
    if let Some(code) = entry.get("error_code").and_then(Value::as_i64) {
        let message = entry.get("message").and_then(Value::as_str).unwrap_or("no message");
        let reason = format!("the bridge answered {code} for the record: {message}");
        return Err(match code {
            503 => Failure::NotStored(reason),
            429 => Failure::Overloaded(reason),
            400..=499 => Failure::Refused(reason),
            _ => Failure::Indeterminate(reason),
        });
    }
    let partition = entry.get("partition").and_then(Value::as_i64).and_then(|p| i32::try_from(p).ok());
    let offset = entry.get("offset").and_then(Value::as_i64);
    match (partition, offset) {
        (Some(partition), Some(offset)) => Ok(Ack { partition, offset }),
        _ => Err(Failure::Indeterminate(format!("the bridge's entry for the record is neither an offset nor an error: {entry}"))),
    }
}

/// What a whole-request error status means for every record in it.
fn request_failure(status: u16, reply: Option<&Value>) -> Failure {
    let message = reply.and_then(|r| r.get("message")).and_then(Value::as_str).unwrap_or("no message");
    let reason = format!("the bridge answered HTTP {status}: {message}");
    match status {
        429 => Failure::Overloaded(reason),
        408 | 504 => Failure::Indeterminate(reason),
        400..=499 => Failure::Refused(reason),
        500..=599 => Failure::NotStored(reason),
        _ => Failure::Indeterminate(reason),
    }
}
