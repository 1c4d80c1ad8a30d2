//! Dead letters: messages the consumer cannot count (from any topic it reads), published to
//! `votes.dlq` as a JSON envelope of bounded size before their offset is committed. A large
//! record is kept by reference (its topic, partition and offset, size and SHA-256, and its first
//! bytes), so a dead letter always fits under any broker's message size.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use vote_core::EventError;

/// The largest key or payload copied whole into an envelope; beyond it only its first
/// [`HEAD_BYTES`] are, with its size and digest.
pub const MAX_INLINE_BYTES: usize = 64 * 1024;
/// How much of a record too large to copy whole an envelope keeps.
pub const HEAD_BYTES: usize = 4 * 1024;
/// The longest error text an envelope carries.
pub const MAX_ERROR_CHARS: usize = 1024;

/// Why a message went to the dead-letter topic (the `reason` label and envelope field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The payload is missing or not a protobuf `VoteEvent` (on a workload's topic: not a JSON
    /// event envelope, or larger than one may be).
    Undecodable,
    /// A `VoteEvent` (or an envelope) of a schema version this consumer does not read.
    SchemaVersion,
    /// A `VoteEvent` that breaks the schema (for example a vote id that is not a UUID); an
    /// envelope with a bad id or field, for another workload than its topic's, or missing a
    /// field its workload counts.
    InvalidEvent,
    /// Redis refused to count this vote (a counter it would increment is not a number).
    RedisRejected,
    /// MongoDB refused this vote's document for a reason other than a duplicate key.
    MongodbRejected,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::SchemaVersion => "schema_version",
            Reason::InvalidEvent => "invalid_event",
            Reason::RedisRejected => "redis_rejected",
            Reason::MongodbRejected => "mongodb_rejected",
        }
    }

    /// The reason a payload failed to decode.
    pub fn of_event_error(error: &EventError) -> Self {
        match error {
            EventError::Version(_) => Reason::SchemaVersion,
            EventError::VoteId(_) => Reason::InvalidEvent,
            _ => Reason::Undecodable,
        }
    }

    /// The reason a workload's payload failed to decode.
    pub fn of_envelope_error(error: &vote_platform::event::EventError) -> Self {
        use vote_platform::event::EventError;
        match error {
            EventError::TooLarge(_) | EventError::Decode(_) => Reason::Undecodable,
            EventError::Schema(_) => Reason::SchemaVersion,
            EventError::Id(_) | EventError::Field { .. } => Reason::InvalidEvent,
        }
    }
}

/// A record's key or payload as an envelope carries it: whole when small, else its head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bytes {
    /// Standard padded base64 of the bytes kept (all of them unless `truncated`).
    pub base64: String,
    /// The record's size in bytes.
    pub size: usize,
    /// Whether only the first [`HEAD_BYTES`] are kept.
    pub truncated: bool,
    /// Hex SHA-256 of the whole value (present when truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Bytes {
    fn of(value: &[u8], keep_whole: bool) -> Self {
        if keep_whole && value.len() <= MAX_INLINE_BYTES {
            return Self { base64: BASE64.encode(value), size: value.len(), truncated: false, sha256: None };
        }
        let head = &value[..value.len().min(HEAD_BYTES)];
        let digest = Sha256::digest(value).iter().map(|b| format!("{b:02x}")).collect();
        Self { base64: BASE64.encode(head), size: value.len(), truncated: true, sha256: Some(digest) }
    }
}

/// The payload of a dead-letter record (JSON). Kafka record headers are avoided on purpose
/// (Tansu stalls on them, see docs/decisions.md), so everything travels in the payload.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub reason: Reason,
    /// The error in words (at most [`MAX_ERROR_CHARS`]).
    pub error: String,
    /// Where the original record is: it stays there until the topic's retention removes it.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The original key and payload; absent when the record had none.
    pub key: Option<Bytes>,
    pub payload: Option<Bytes>,
    /// The consumer group that gave up on the record.
    pub group: String,
    /// When it gave up, milliseconds since the Unix epoch.
    pub failed_at_ms: i64,
}

impl Envelope {
    #[allow(clippy::too_many_arguments)]
    pub fn new(reason: Reason, error: String, topic: &str, partition: i32, offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>, group: &str) -> Self {
        Self {
            reason,
            error: error.chars().take(MAX_ERROR_CHARS).collect(),
            topic: topic.to_owned(),
            partition,
            offset,
            key: key.map(|k| Bytes::of(k, true)),
            payload: payload.map(|p| Bytes::of(p, true)),
            group: group.to_owned(),
            failed_at_ms: vote_core::now_ms(),
        }
    }

    /// The same envelope keeping only the heads of the key and payload: what is sent when the
    /// broker refused the full one.
    pub fn reduced(&self) -> Self {
        let head = |bytes: &Option<Bytes>| {
            bytes.as_ref().map(|b| if b.truncated { b.clone() } else { Bytes::of(&BASE64.decode(&b.base64).unwrap_or_default(), false) })
        };
        Self { key: head(&self.key), payload: head(&self.payload), ..self.clone() }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serialises")
    }
}

/// The longest key a dead letter keeps as its own key; a longer one is replaced by its SHA-256.
const MAX_DEAD_LETTER_KEY: usize = 1024;

/// The key a dead letter is published under: the record's own, or its SHA-256 if it is long.
pub fn key_of(key: Option<&[u8]>) -> Vec<u8> {
    match key {
        Some(key) if key.len() > MAX_DEAD_LETTER_KEY => format!("sha256:{:x}", Sha256::digest(key)).into_bytes(),
        Some(key) => key.to_vec(),
        None => Vec::new(),
    }
}

/// A message for the dead-letter topic: its key there and its envelope.
pub type DeadLetter = (Vec<u8>, Envelope);

/// Publishes `pending` to `topic` once and waits for every acknowledgement. One the broker
/// refuses is kept reduced (heads only) to be sent again at once; refused even reduced, it is
/// logged and given up, so a record never blocks its partition. Returns what is still to send
/// and whether to send it again at once (else after a wait: the broker is away).
pub async fn publish_round(publisher: &vote_kafka::Publisher, topic: &str, pending: Vec<DeadLetter>, metrics: &crate::metrics::Metrics) -> (Vec<DeadLetter>, bool) {
    let sends = pending.iter().map(|(key, envelope)| {
        let payload = envelope.to_json();
        async move { publisher.publish(topic, key, &payload, &[]).await }
    });
    let results = futures::future::join_all(sends).await;
    let mut failed = Vec::new();
    let mut retry_now = false;
    for ((key, envelope), result) in pending.into_iter().zip(results) {
        match result {
            Ok(ack) => {
                metrics.dlq.with_label_values(&[envelope.reason.label()]).inc();
                tracing::info!(topic = %envelope.topic, partition = envelope.partition, offset = envelope.offset, dlq_partition = ack.partition, dlq_offset = ack.offset, "dead letter stored");
            }
            Err(vote_kafka::PublishError::Refused(error)) => {
                let reduced = envelope.reduced();
                if reduced.to_json().len() < envelope.to_json().len() {
                    tracing::warn!(%error, partition = envelope.partition, offset = envelope.offset, "dead letter refused; sending it reduced");
                    failed.push((key, reduced));
                    retry_now = true;
                } else {
                    metrics.dlq_lost.inc();
                    tracing::error!(%error, partition = envelope.partition, offset = envelope.offset, reason = envelope.reason.label(),
                        "the dead-letter topic refused the record even reduced; giving it up so the partition goes on");
                }
            }
            Err(error) => {
                tracing::warn!(%error, partition = envelope.partition, offset = envelope.offset, "dead letter not stored, retrying");
                failed.push((key, envelope));
            }
        }
    }
    (failed, retry_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_key_is_replaced_by_its_digest_in_the_dead_letter() {
        assert_eq!(key_of(Some(b"k")), b"k");
        let long = key_of(Some(&[7u8; 100_000]));
        assert!(long.len() < 80 && long.starts_with(b"sha256:"));
    }

    #[test]
    fn the_envelope_carries_a_small_record_whole() {
        let envelope = Envelope::new(Reason::Undecodable, "bad".into(), "votes", 3, 42, Some(b"k"), Some(&[0xff, 0x00]), "vote-counter");
        let json: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert_eq!(json["reason"], "undecodable");
        assert_eq!((json["partition"].as_i64(), json["offset"].as_i64()), (Some(3), Some(42)));
        assert_eq!(json["key"]["base64"], "aw==");
        assert_eq!(json["payload"]["base64"], "/wA=");
        assert_eq!(json["payload"]["truncated"], false);
        assert_eq!(json["topic"], "votes");
    }

    #[test]
    fn a_large_record_is_kept_by_reference_in_a_small_envelope() {
        let payload = vec![b'x'; 1_000_000];
        let envelope = Envelope::new(Reason::Undecodable, "e".repeat(5000), "votes", 0, 7, Some(&[1u8; 200_000]), Some(&payload), "g");
        let json = envelope.to_json();
        assert!(json.len() < 16 * 1024, "envelope of {} bytes", json.len());
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["payload"]["size"], 1_000_000);
        assert_eq!(value["payload"]["truncated"], true);
        assert_eq!(value["payload"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(value["error"].as_str().unwrap().len(), MAX_ERROR_CHARS);
    }

    #[test]
    fn a_reduced_envelope_keeps_only_heads() {
        let payload = vec![b'y'; 50_000];
        let reduced = Envelope::new(Reason::Undecodable, "e".into(), "votes", 0, 7, None, Some(&payload), "g").reduced();
        let bytes = reduced.payload.unwrap();
        assert!(bytes.truncated && bytes.size == 50_000 && BASE64.decode(&bytes.base64).unwrap().len() == HEAD_BYTES);
    }
}
