//! Client idempotency keys: a client that retries a vote with the same key and the same vote gets
//! the same vote id, so the consumer (which counts each vote id once) counts the vote once however
//! often it is sent. The id is bound to the vote's content too: a key reused for another vote, or
//! a batch retried as a subset or in another order, names each vote by what it is, so no vote is
//! taken for another and dropped.

use std::collections::HashMap;

use uuid::Uuid;

use crate::rules::{Field, ValidVote, VoteError};

/// The HTTP header and gRPC metadata key a client sends its idempotency key in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// The namespace of the ids of single votes derived from keys (UUIDv5), fixed so every producer
/// derives the same.
const VOTE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_4a8e_2b3c_4f50_9a71_c0e5_b2d8_9f43);
/// The namespace of the ids of batch and stream items: a namespace of their own, so that no key
/// sent for one vote names the same UUIDv5 as an item of a batch under another key. Within either
/// namespace the name is the key, a NUL (never in a key) and the vote's [`canonical`] content,
/// and for an item a NUL and its occurrence.
const ITEM_ID_NAMESPACE: Uuid = Uuid::from_u128(0x2f0c_9d4e_71a3_4b86_8e15_d6a0_43c7_b91e);

/// What a client hears when its vote may or may not have been stored (the broker did not
/// acknowledge in time), the same over every producer: with a key, retry under it; without one,
/// a retry may count the vote twice.
pub fn maybe_stored_advice(key_sent: bool) -> String {
    maybe_stored_advice_for("vote", key_sent)
}

/// [`maybe_stored_advice`] for what another producer publishes (`noun`: "event", ...).
pub fn maybe_stored_advice_for(noun: &str, key_sent: bool) -> String {
    if key_sent {
        format!("the {noun} may not have been stored; retry with the same idempotency-key")
    } else {
        format!("the {noun} may not have been stored; a retry may count it twice: send an idempotency-key with each {noun} and retry with the same one")
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

    /// The vote id for `vote` sent under this key; `item` tells apart equal votes of one batch or
    /// stream sent under one key (the how-many-th of its kind it is there, see [`Occurrences`]).
    pub fn vote_id(&self, vote: &ValidVote, item: Option<u64>) -> String {
        let body = canonical(vote);
        match item {
            None => Uuid::new_v5(&VOTE_ID_NAMESPACE, format!("{}\0{body}", self.0).as_bytes()),
            Some(occurrence) => Uuid::new_v5(&ITEM_ID_NAMESPACE, format!("{}\0{body}\0{occurrence}", self.0).as_bytes()),
        }
        .to_string()
    }

    /// This key for one vote (`item` None) or an item of a batch or stream.
    pub fn item(&self, item: Option<u64>) -> KeyedVote {
        KeyedVote { key: self.clone(), item }
    }
}

/// A vote sent under an idempotency key, before it is validated: its id is known once the vote is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedVote {
    key: IdempotencyKey,
    item: Option<u64>,
}

impl KeyedVote {
    pub fn vote_id(&self, vote: &ValidVote) -> String {
        self.key.vote_id(vote, self.item)
    }
}

/// A vote's content, unambiguous (lengths before the names): what its id is bound to.
fn canonical(vote: &ValidVote) -> String {
    format!("{}:{}{}:{}{}:{}", vote.name.len(), vote.name, vote.album.len(), vote.album, vote.year, vote.rank)
}

/// Counts equal votes within one batch or stream, so that the n-th equal vote gets its own id and
/// a retry (whole, a subset, or reordered) gives each vote the id it had.
#[derive(Debug, Default)]
pub struct Occurrences(HashMap<String, u64>);

impl Occurrences {
    /// How many equal votes came before `vote` (0 for the first), counting it.
    pub fn next(&mut self, vote: &ValidVote) -> u64 {
        let seen = self.0.entry(canonical(vote)).or_insert(0);
        *seen += 1;
        *seen - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(name: &str, rank: u32) -> ValidVote {
        ValidVote { name: name.to_owned(), album: "Conquista".to_owned(), year: 1986, rank }
    }

    #[test]
    fn the_same_key_and_vote_give_the_same_id_and_anything_else_another() {
        let key = IdempotencyKey::parse("0b7c1c52-8f1e-4a8b-9a39-5f2f3b0f7d11").unwrap();
        let alux = vote("Alux Nahual", 1);
        assert_eq!(key.vote_id(&alux, None), key.vote_id(&alux, None));
        assert_ne!(key.vote_id(&alux, None), IdempotencyKey::parse("another-key").unwrap().vote_id(&alux, None));
        assert_ne!(key.vote_id(&alux, None), key.vote_id(&vote("Alux Nahual", 2), None), "a key reused for another vote names another vote");
        assert_ne!(key.vote_id(&alux, Some(0)), key.vote_id(&alux, Some(1)));
        assert_ne!(key.vote_id(&alux, None), key.vote_id(&alux, Some(0)));
        assert_eq!(Uuid::parse_str(&key.vote_id(&alux, None)).unwrap().get_version_num(), 5);
    }

    #[test]
    fn a_batch_retried_as_a_subset_or_reordered_keeps_each_votes_id() {
        let key = IdempotencyKey::parse("K").unwrap();
        let ids = |votes: &[ValidVote]| {
            let mut occurrences = Occurrences::default();
            votes.iter().map(|v| key.vote_id(v, Some(occurrences.next(v)))).collect::<Vec<_>>()
        };
        let (a, b, c) = (vote("a", 1), vote("b", 1), vote("a", 1));
        let whole = ids(&[a.clone(), b.clone(), c.clone()]);
        assert_ne!(whole[0], whole[2], "two equal votes in one batch are two votes");
        assert_eq!(ids(&[b.clone()]), [whole[1].clone()], "a subset retry names the same vote");
        assert_eq!(ids(&[b, a]), [whole[1].clone(), whole[0].clone()]);
    }

    #[test]
    fn names_that_run_together_do_not_collide() {
        let key = IdempotencyKey::parse("K").unwrap();
        let one = ValidVote { name: "ab".into(), album: "c".into(), year: 1990, rank: 1 };
        let two = ValidVote { name: "a".into(), album: "bc".into(), year: 1990, rank: 1 };
        assert_ne!(key.vote_id(&one, None), key.vote_id(&two, None));
    }

    proptest::proptest! {
        /// No single-vote key collides with any item of any key.
        #[test]
        fn item_ids_never_equal_single_vote_ids(key in "[!-~]{1,20}", position in 0u64..1000) {
            let key = IdempotencyKey::parse(&key).unwrap();
            let lookalike = IdempotencyKey::parse(&format!("{}#{position}", key.0)).unwrap();
            let v = vote("Alux Nahual", 1);
            proptest::prop_assert_ne!(lookalike.vote_id(&v, None), key.vote_id(&v, Some(position)));
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
