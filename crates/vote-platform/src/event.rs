//! The JSON envelope a workload component publishes for each event (band votes keep their
//! protobuf `VoteEvent`): who made it, when, its id, and its fields. The consumer counts an
//! event once per id and logs it; what it counts comes from the workload's spec in the manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::{NoContext, Timestamp, Uuid};

/// The envelope version this crate writes and reads.
pub const SCHEMA: u32 = 1;
/// The largest encoded event the consumer reads.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// The most fields one event carries.
pub const MAX_FIELDS: usize = 32;
/// The longest text value.
pub const MAX_TEXT_BYTES: usize = 256;
/// The namespace of the ids derived from a client's idempotency key.
const KEYED_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a6e_7d1b_4b0e_9d0c_5a3e_1f27_b842);

/// One field value: text, an integer or a flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Integer(i64),
    Flag(bool),
    Text(String),
}

impl Value {
    /// The value as a member of an aggregate (text as is, numbers and flags in decimal form).
    pub fn as_member(&self) -> String {
        match self {
            Value::Integer(n) => n.to_string(),
            Value::Flag(b) => b.to_string(),
            Value::Text(text) => text.clone(),
        }
    }
}

/// An event's fields by name.
pub type Data = BTreeMap<String, Value>;

/// One event on a workload's topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// [`SCHEMA`].
    pub schema: u32,
    /// A UUID: v7 for an event sent without an idempotency key, v5 of the key and the fields
    /// with one (a retry names the same event).
    pub id: String,
    /// The workload's name (as in the manifest).
    pub workload: String,
    /// `name@version` of the component that accepted it.
    pub producer: String,
    pub received_at_ms: i64,
    pub data: Data,
}

/// Why a payload is not an event the consumer can count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is {0} bytes, more than {MAX_EVENT_BYTES}")]
    TooLarge(usize),
    #[error("the payload is not an event envelope: {0}")]
    Decode(String),
    #[error("unsupported event schema {0} (this build reads {SCHEMA})")]
    Schema(u32),
    #[error("event id {0:?} is not a UUID")]
    Id(String),
    #[error("field {field:?}: {reason}")]
    Field { field: String, reason: String },
}

impl Envelope {
    /// A new event for `data`, with the id [`event_id`] gives.
    pub fn new(workload: &str, producer: &str, received_at_ms: i64, key: Option<&str>, data: Data) -> Self {
        let id = event_id(received_at_ms, key, &data);
        Self { schema: SCHEMA, id, workload: workload.to_owned(), producer: producer.to_owned(), received_at_ms, data }
    }

    /// The Kafka payload.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always encodes")
    }

    /// Reads and checks a Kafka payload: size, schema, id, and every field's name and value.
    pub fn decode(payload: &[u8]) -> Result<Self, EventError> {
        if payload.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(payload.len()));
        }
        let event: Envelope = serde_json::from_slice(payload).map_err(|e| EventError::Decode(e.to_string()))?;
        if event.schema != SCHEMA {
            return Err(EventError::Schema(event.schema));
        }
        if Uuid::parse_str(&event.id).is_err() {
            return Err(EventError::Id(event.id.chars().take(64).collect()));
        }
        check_data(&event.data)?;
        Ok(event)
    }

    /// Whether the id came from a client's idempotency key (a retry may repeat it, so the
    /// counters keep a marker for it).
    pub fn is_keyed(&self) -> bool {
        Uuid::parse_str(&self.id).is_ok_and(|id| id.get_version_num() == 5)
    }
}

/// Checks field names ([`crate::names`]), the field count and text lengths.
pub fn check_data(data: &Data) -> Result<(), EventError> {
    if data.len() > MAX_FIELDS {
        return Err(EventError::Field { field: "data".into(), reason: format!("more than {MAX_FIELDS} fields") });
    }
    for (name, value) in data {
        if let Some(reason) = crate::names::check(name) {
            return Err(EventError::Field { field: name.chars().take(64).collect(), reason });
        }
        if let Value::Text(text) = value {
            if text.len() > MAX_TEXT_BYTES {
                return Err(EventError::Field { field: name.clone(), reason: format!("longer than {MAX_TEXT_BYTES} bytes") });
            }
        }
    }
    Ok(())
}

/// The event id: a UUIDv5 of the client's idempotency key and the fields when there is a key
/// (a retry of the same event names the same id; the key reused for other fields names
/// another), else a fresh UUIDv7 at `received_at_ms`.
pub fn event_id(received_at_ms: i64, key: Option<&str>, data: &Data) -> String {
    match key {
        Some(key) => {
            let canonical = serde_json::to_string(data).expect("fields always encode");
            Uuid::new_v5(&KEYED_NAMESPACE, format!("{key}\n{canonical}").as_bytes()).to_string()
        }
        None => {
            let ms = received_at_ms.max(0) as u64;
            Uuid::new_v7(Timestamp::from_unix(NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000)).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Data {
        Data::from([("municipality".into(), Value::Text("mixco".into())), ("temperature".into(), Value::Integer(-3))])
    }

    #[test]
    fn an_event_round_trips() {
        let event = Envelope::new("weather", "weather-rest@0.1.0", 1_764_000_000_000, None, data());
        let back = Envelope::decode(&event.encode()).unwrap();
        assert_eq!(back, event);
        assert!(!back.is_keyed());
    }

    #[test]
    fn a_key_names_the_same_event_for_the_same_fields_only() {
        let a = Envelope::new("weather", "p", 1, Some("k"), data());
        let b = Envelope::new("weather", "p", 2, Some("k"), data());
        assert_eq!(a.id, b.id);
        assert!(a.is_keyed());
        let mut other = data();
        other.insert("humidity".into(), Value::Integer(50));
        assert_ne!(Envelope::new("weather", "p", 1, Some("k"), other).id, a.id);
    }

    #[test]
    fn bad_payloads_name_their_problem() {
        assert!(matches!(Envelope::decode(b"{}"), Err(EventError::Decode(_))));
        assert!(matches!(Envelope::decode(&vec![b' '; MAX_EVENT_BYTES + 1]), Err(EventError::TooLarge(_))));
        let mut event = Envelope::new("weather", "p", 1, None, data());
        event.schema = 2;
        assert!(matches!(Envelope::decode(&event.encode()), Err(EventError::Schema(2))));
        event.schema = SCHEMA;
        event.id = "nope".into();
        assert!(matches!(Envelope::decode(&event.encode()), Err(EventError::Id(_))));
        let mut event = Envelope::new("weather", "p", 1, None, data());
        event.data.insert("Bad Name".into(), Value::Integer(1));
        assert!(matches!(Envelope::decode(&event.encode()), Err(EventError::Field { .. })));
        let nested = br#"{"schema":1,"id":"0191b2a0-0000-7000-8000-000000000000","workload":"w","producer":"p","received_at_ms":1,"data":{"a":{"b":1}}}"#;
        assert!(Envelope::decode(nested).is_err(), "only scalar values");
    }
}
