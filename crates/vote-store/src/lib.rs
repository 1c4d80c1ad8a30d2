//! The vote stores: the Redis live counters and the MongoDB vote logs, in one place for every reader and writer.
//!
//! - [`keys`]: the Redis key names, all under the `{votes}` hash tag so scripts run on Redis Cluster.
//! - [`album`]: the `{votes}:albums` field, `band|album` with `\` and `|` escaped, and its decoding.
//! - [`counters`]: [`Counters`], the idempotent counting script.
//! - [`logs`]: [`Logs`], the `votes.logs` collection, one document per vote id.

pub mod album;
pub mod counters;
pub mod keys;
pub mod logs;

pub use album::{decode_album_field, encode_album_field};
pub use counters::Counters;
pub use logs::Logs;
