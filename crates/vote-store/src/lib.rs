//! The vote stores: the Redis live counters and the MongoDB vote logs, in one place for every reader and writer.
//!
//! - [`keys`]: the Redis key names, all under the `{votes}` hash tag so scripts run on Redis Cluster.
//! - [`album`]: the `{votes}:albums` member, `band|album` with `\` and `|` escaped, and its decoding.
//! - [`counters`]: [`Counters`], the idempotent counting script over bounded aggregates.
//! - [`votes`]: the votes workload's aggregates and what one vote writes to them.
//! - [`leaderboard`]: bounded reads of a leaderboard (its top members, size and overflow).
//! - [`logs`]: [`Logs`], the `votes.logs` collection, one document per vote id.
//! - [`workloads`]: the manifest's JSON workloads: their aggregates, what one event writes, and
//!   their event logs (`votes.events_<workload>`).
//! - [`workload_view`]: one manifest workload's live view (tops, shares, means, latest events),
//!   read in one round trip: what the results app and `votectl results --workload` show.

pub mod album;
pub mod counters;
pub mod keys;
pub mod leaderboard;
pub mod logs;
pub mod votes;
pub mod workloads;
pub mod workload_view;

pub use album::{decode_album_field, encode_album_field};
pub use counters::Counters;
pub use logs::Logs;
