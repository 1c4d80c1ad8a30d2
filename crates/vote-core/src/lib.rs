//! The vote rules shared by every producer, native or WebAssembly.
//!
//! A vote travels through this crate in three steps:
//! 1. [`input`]: read what the voter sent (JSON in the seeds' shape, or the gRPC `Vote` message)
//!    into a [`VoteInput`], keeping each field's raw form.
//! 2. [`rules`]: validate and normalise it into a [`ValidVote`], or name the field that is wrong.
//! 3. [`event`]: build the versioned [`proto::VoteEvent`] with a fresh UUIDv7, or the id a
//!    client's [`idempotency`] key derives, and encode it for Kafka; the consumer decodes it with
//!    the same code.
//!
//! [`rest`] holds the REST endpoints' rules (routing, checks, replies) that the wasm component
//! and the host's native baseline share.
//!
//! The crate has no I/O and builds for `wasm32-wasip2`, so the REST component and the native gRPC
//! producer apply exactly the same rules.

pub mod event;
pub mod idempotency;
pub mod input;
pub mod rest;
pub mod rules;
pub mod unicode;

/// The message types generated from `proto/votes.proto` (package `votes.v1`).
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/votes.v1.rs"));
}

pub use event::{decode_event, encode_event, new_event, now_ms, EventError, Path, SCHEMA_VERSION, TOPIC};
pub use idempotency::{maybe_stored_advice, maybe_stored_advice_for, IdempotencyKey, KeyedVote, Occurrences, IDEMPOTENCY_KEY_HEADER};
pub use input::{parse_json_object, parse_json_vote, parse_json_votes, scalar, Scalar, VoteInput};
pub use rules::{integer_value, text_value, validate, Field, ValidVote, VoteError, MAX_RANK, MAX_TEXT_BYTES, MIN_YEAR};
