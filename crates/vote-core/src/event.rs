//! The Kafka event: building a `VoteEvent` from a valid vote, and its wire encoding.

use prost::Message;
use uuid::{NoContext, Timestamp, Uuid};

use crate::proto::VoteEvent;
use crate::rules::ValidVote;

/// The Kafka topic every producer publishes votes to.
pub const TOPIC: &str = "votes";
/// The version of the `VoteEvent` schema this crate writes; readers refuse other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// How a vote reached Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The REST producer, a WebAssembly component in the wasmtime host.
    Wasm,
    /// The native tonic gRPC producer.
    Grpc,
    /// The host's native REST baseline (`votes-host --native`): the component's rules without
    /// the sandbox, for measuring what the sandbox costs.
    Native,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Wasm => "wasm",
            Path::Grpc => "grpc",
            Path::Native => "native",
        }
    }
}

/// Why a payload could not be read as a vote event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("payload is not a VoteEvent: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("unsupported VoteEvent schema version {0} (this build reads {SCHEMA_VERSION})")]
    Version(u32),
    #[error("vote id {0:?} is not a UUID")]
    VoteId(String),
}

/// Builds the event for a valid vote. Its id is `vote_id` when the client's idempotency key gave
/// one, else a fresh UUIDv7 whose time is `received_at_ms`, so one clock reading stamps both (a
/// wasm producer pays a host call per reading).
pub fn new_event(vote: ValidVote, path: Path, producer: &str, received_at_ms: i64, vote_id: Option<String>) -> VoteEvent {
    VoteEvent {
        schema_version: SCHEMA_VERSION,
        vote_id: vote_id.unwrap_or_else(|| vote_id_at(received_at_ms).to_string()),
        name: vote.name,
        album: vote.album,
        year: vote.year,
        rank: vote.rank,
        path: path.as_str().to_owned(),
        producer: producer.to_owned(),
        received_at_ms,
    }
}

/// Encodes an event for the Kafka payload (protobuf binary).
pub fn encode_event(event: &VoteEvent) -> Vec<u8> {
    event.encode_to_vec()
}

/// Decodes a Kafka payload, checking the schema version and the vote id.
pub fn decode_event(payload: &[u8]) -> Result<VoteEvent, EventError> {
    let event = VoteEvent::decode(payload)?;
    if event.schema_version != SCHEMA_VERSION {
        return Err(EventError::Version(event.schema_version));
    }
    if Uuid::parse_str(&event.vote_id).is_err() {
        return Err(EventError::VoteId(event.vote_id));
    }
    Ok(event)
}

/// A UUIDv7 for `received_at_ms` with 74 random bits (no per-process counter: a wasm producer
/// runs each request in a fresh instance, where a counter would only cost a random seed).
fn vote_id_at(received_at_ms: i64) -> Uuid {
    let ms = received_at_ms.max(0) as u64;
    Uuid::new_v7(Timestamp::from_unix(NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000))
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Scalar, VoteInput};
    use crate::rules::validate;
    use proptest::prelude::*;

    fn vote() -> ValidVote {
        ValidVote { name: "Bohemia Suburbana".into(), album: "Maria".into(), year: 1995, rank: 1 }
    }

    #[test]
    fn ids_are_uuid_v7_and_unique() {
        let a = new_event(vote(), Path::Grpc, "grpc-producer@0.1.0", 1, None);
        let b = new_event(vote(), Path::Grpc, "grpc-producer@0.1.0", 1, None);
        assert_ne!(a.vote_id, b.vote_id);
        assert_eq!(Uuid::parse_str(&a.vote_id).unwrap().get_version_num(), 7);
    }

    #[test]
    fn the_id_carries_the_received_time() {
        let event = new_event(vote(), Path::Wasm, "vote-rest@0.1.0", 1_764_000_123_456, None);
        let (seconds, nanos) = Uuid::parse_str(&event.vote_id).unwrap().get_timestamp().unwrap().to_unix();
        assert_eq!(seconds * 1000 + u64::from(nanos) / 1_000_000, 1_764_000_123_456);
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let mut event = new_event(vote(), Path::Wasm, "vote-rest@0.1.0", 1, None);
        event.schema_version = 2;
        assert!(matches!(decode_event(&encode_event(&event)), Err(EventError::Version(2))));
        assert!(decode_event(b"\xff\xff\xff").is_err());
        event.schema_version = SCHEMA_VERSION;
        event.vote_id = "nope".into();
        assert!(matches!(decode_event(&encode_event(&event)), Err(EventError::VoteId(_))));
    }

    fn any_scalar() -> impl Strategy<Value = Option<Scalar>> {
        prop_oneof![
            Just(None),
            any::<String>().prop_map(|s| Some(Scalar::Text(s))),
            "[ \t]{0,2}[+-]?[0-9]{1,5}[ \t]{0,2}".prop_map(|s| Some(Scalar::Text(s))),
            any::<i64>().prop_map(|n| Some(Scalar::Number(n.into()))),
            (1900i64..2030).prop_map(|n| Some(Scalar::Number(n.into()))),
            (1i64..1001).prop_map(|n| Some(Scalar::Number(n.into()))),
        ]
    }

    proptest! {
        /// Whatever the rules accept encodes and decodes back to the same event.
        #[test]
        fn accepted_votes_round_trip(name in any_scalar(), album in any_scalar(), year in any_scalar(), rank in any_scalar(), at in any::<i64>()) {
            let input = VoteInput { name, album, year, rank };
            if let Ok(valid) = validate(&input) {
                prop_assert!(!valid.name.is_empty() && valid.name.len() <= crate::MAX_TEXT_BYTES);
                let event = new_event(valid, Path::Grpc, "grpc-producer@0.1.0", at, None);
                let decoded = decode_event(&encode_event(&event)).unwrap();
                prop_assert_eq!(decoded, event);
            }
        }

        /// Normalising is idempotent: a normalised vote validates to itself.
        #[test]
        fn normalising_is_stable(name in "\\PC{1,40}", album in "\\PC{1,40}") {
            let input = VoteInput::from_strings(&name, &album, "2000", "1");
            if let Ok(valid) = validate(&input) {
                let again = validate(&VoteInput::from_strings(&valid.name, &valid.album, "2000", "1")).unwrap();
                prop_assert_eq!(again, valid);
            }
        }
    }
}
