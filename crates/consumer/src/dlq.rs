//! Dead letters: messages the consumer cannot count, published to `votes.dlq` as a JSON envelope before their offset is committed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Serialize;
use vote_core::EventError;

/// Why a message went to the dead-letter topic (the `reason` label and envelope field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The payload is missing or not a protobuf `VoteEvent`.
    Undecodable,
    /// A `VoteEvent` of a schema version this consumer does not read.
    SchemaVersion,
    /// A `VoteEvent` that breaks the schema (for example a vote id that is not a UUID).
    InvalidEvent,
    /// Redis refused to count this vote (its counter field is not a number).
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
}

/// The payload of a dead-letter record (JSON). Kafka record headers are avoided on purpose
/// (Tansu stalls on them, see docs/decisions.md), so everything travels in the payload.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub reason: Reason,
    /// The error in words.
    pub error: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The original key, base64 (standard alphabet, padded); absent when the record had none.
    pub key_base64: Option<String>,
    /// The original payload, base64; absent when the record had none.
    pub payload_base64: Option<String>,
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
            error,
            topic: topic.to_owned(),
            partition,
            offset,
            key_base64: key.map(|k| BASE64.encode(k)),
            payload_base64: payload.map(|p| BASE64.encode(p)),
            group: group.to_owned(),
            failed_at_ms: vote_core::now_ms(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_carries_the_original_record() {
        let envelope = Envelope::new(Reason::Undecodable, "bad".into(), "votes", 3, 42, Some(b"k"), Some(&[0xff, 0x00]), "vote-counter");
        let json: serde_json::Value = serde_json::from_slice(&envelope.to_json()).unwrap();
        assert_eq!(json["reason"], "undecodable");
        assert_eq!((json["partition"].as_i64(), json["offset"].as_i64()), (Some(3), Some(42)));
        assert_eq!(json["key_base64"], "aw==");
        assert_eq!(json["payload_base64"], "/wA=");
        assert_eq!(json["topic"], "votes");
    }
}
