//! Client idempotency keys: a client that retries a vote with the same key gets the same vote id,
//! so the consumer (which counts each vote id once) counts the vote once however often it is sent.

use uuid::Uuid;

use crate::rules::{Field, VoteError};

/// The HTTP header and gRPC metadata key a client sends its idempotency key in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// The namespace of the ids of single votes derived from keys (UUIDv5), fixed so every producer
/// derives the same.
const VOTE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_4a8e_2b3c_4f50_9a71_c0e5_b2d8_9f43);
/// The namespace of the ids of batch and stream items: a namespace of their own, so that no key
/// sent for one vote (say `K#0`) names the same UUIDv5 as an item of a batch under another (item
/// 0 under `K`). Within it the name `KEY#POSITION` is unambiguous: the position is the digits
/// after the last `#`.
const ITEM_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2f0c_9d4e_71a3_4b86_8e15_d6a0_43c7_b91e);

/// What a client hears when its vote may or may not have been stored (the broker did not
/// acknowledge in time), the same over every producer: with a key, retry under it; without one,
/// a retry may count the vote twice.
pub fn maybe_stored_advice(key_sent: bool) -> &'static str {
    if key_sent {
        "the vote may not have been stored; retry with the same idempotency-key"
    } else {
        "the vote may not have been stored; a retry may count it twice: send an idempotency-key with each vote and retry with the same one"
    }
}

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

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The vote id for this key; `item` tells apart the votes of one batch or stream sent under
    /// one key (their positions).
    pub fn vote_id(&self, item: Option<u64>) -> String {
        match item {
            None => Uuid::new_v5(&VOTE_ID_NAMESPACE, self.0.as_bytes()),
            Some(position) => Uuid::new_v5(&ITEM_ID_NAMESPACE, format!("{}#{position}", self.0).as_bytes()),
        }
        .to_string()
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
    fn a_key_that_looks_like_an_item_is_not_that_item() {
        let batch = IdempotencyKey::parse("K").unwrap();
        for position in [0u64, 1, 10] {
            let lookalike = IdempotencyKey::parse(&format!("K#{position}")).unwrap();
            assert_ne!(lookalike.vote_id(None), batch.vote_id(Some(position)));
        }
        // Item 0 under `K#1` is neither item 1 under `K` nor the single vote under `K#1#0`.
        let nested = IdempotencyKey::parse("K#1").unwrap();
        assert_ne!(nested.vote_id(Some(0)), batch.vote_id(Some(1)));
        assert_ne!(nested.vote_id(Some(0)), IdempotencyKey::parse("K#1#0").unwrap().vote_id(None));
    }

    #[test]
    fn single_vote_ids_are_the_ones_issued_before() {
        // Ids of single votes did not change with the item namespace: a retry across the upgrade
        // still names the same vote.
        let key = IdempotencyKey::parse("0b7c1c52-8f1e-4a8b-9a39-5f2f3b0f7d11").unwrap();
        assert_eq!(key.vote_id(None), Uuid::new_v5(&VOTE_ID_NAMESPACE, key.0.as_bytes()).to_string());
    }

    proptest::proptest! {
        /// No single-vote key collides with any item of any key.
        #[test]
        fn item_ids_never_equal_single_vote_ids(key in "[!-~]{1,20}", position in 0u64..1000) {
            let key = IdempotencyKey::parse(&key).unwrap();
            let lookalike = IdempotencyKey::parse(&format!("{}#{position}", key.0)).unwrap();
            proptest::prop_assert_ne!(lookalike.vote_id(None), key.vote_id(Some(position)));
        }
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
