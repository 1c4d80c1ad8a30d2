//! Client idempotency keys: a client that retries a vote with the same key gets the same vote id,
//! so the consumer (which counts each vote id once) counts the vote once however often it is sent.

use uuid::Uuid;

use crate::rules::{Field, VoteError};

/// The HTTP header and gRPC metadata key a client sends its idempotency key in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// The namespace of vote ids derived from keys (UUIDv5), fixed so every producer derives the same.
const VOTE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_4a8e_2b3c_4f50_9a71_c0e5_b2d8_9f43);

/// A checked idempotency key: 1 to 128 visible ASCII characters (a UUID per vote is a good key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, VoteError> {
        let invalid = |reason: &str| VoteError::new(Field::IdempotencyKey, reason);
        if raw.is_empty() {
            return Err(invalid("must not be empty when sent"));
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(invalid(&format!("must be at most {MAX_KEY_BYTES} bytes, got {}", raw.len())));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("must be visible ASCII characters only (no spaces or control characters)"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The vote id for this key; `item` tells apart the votes of one batch or stream sent under
    /// one key (their positions).
    pub fn vote_id(&self, item: Option<u64>) -> String {
        let name = match item {
            None => self.0.clone(),
            Some(position) => format!("{}#{position}", self.0),
        };
        Uuid::new_v5(&VOTE_ID_NAMESPACE, name.as_bytes()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gives_the_same_id_and_other_keys_other_ids() {
        let key = IdempotencyKey::parse("0b7c1c52-8f1e-4a8b-9a39-5f2f3b0f7d11").unwrap();
        assert_eq!(key.vote_id(None), key.vote_id(None));
        assert_ne!(key.vote_id(None), IdempotencyKey::parse("another-key").unwrap().vote_id(None));
        assert_ne!(key.vote_id(Some(0)), key.vote_id(Some(1)));
        assert_ne!(key.vote_id(None), key.vote_id(Some(0)));
        assert!(Uuid::parse_str(&key.vote_id(None)).is_ok());
    }

    #[test]
    fn bad_keys_name_the_field() {
        for raw in ["", "has space", "tab\there", "ñ", &"k".repeat(MAX_KEY_BYTES + 1)] {
            let error = IdempotencyKey::parse(raw).unwrap_err();
            assert_eq!(error.field, Field::IdempotencyKey, "{raw:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_BYTES)).is_ok());
    }
}
