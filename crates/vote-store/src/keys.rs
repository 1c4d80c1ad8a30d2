//! The Redis key names of the live counters: the contract with the dashboards, the results page
//! and `votectl`. Every key is under the `{votes}` hash tag, so one script can touch them all on
//! Redis Cluster.

/// Sorted set band -> count (a leaderboard: top bands with `ZRANGE ... REV`), at most
/// [`crate::votes::DEFAULT_NAME_CAP`] bands; votes for bands beyond it go to [`overflow`].
pub const BANDS: &str = "{votes}:bands";
/// Sorted set album field ([`crate::encode_album_field`]) -> count, capped like [`BANDS`].
pub const ALBUMS: &str = "{votes}:albums";
/// Sorted set path (`wasm`, `grpc`, ...) -> count, capped at [`crate::votes::PATH_CAP`].
pub const PATHS: &str = "{votes}:paths";
/// Counter of all votes.
pub const TOTAL: &str = "{votes}:total";
/// List of the latest votes, newest first, as JSON.
pub const RECENT: &str = "{votes}:recent";
/// Hash `<topic>:<partition>` -> the last Kafka offset handled from that partition.
pub const APPLIED: &str = "{votes}:applied";
/// Hash `<topic>:<partition>` -> the fingerprint of the record at the applied offset (its key,
/// in hex): tells a redelivery from a topic that was recreated or reset.
pub const APPLIED_IDS: &str = "{votes}:applied_ids";
/// Set when counting first started in this Redis (or a recount rebuilt it): without it, empty
/// applied offsets mean the counters were lost, not that nothing was counted yet.
pub const EPOCH: &str = "{votes}:epoch";
/// Set while `votectl recount` rebuilds the counters: the consumer waits.
pub const RECOUNTING: &str = "{votes}:recounting";
/// Set when a recount starts and removed when it finishes: a recount that did not finish left
/// the counters incomplete.
pub const RECOUNT_INCOMPLETE: &str = "{votes}:recount_incomplete";
/// Prefix of the per-vote-id marker that makes a client's retry under one idempotency key count
/// once (only votes sent with a key have one).
pub const SEEN_PREFIX: &str = "{votes}:seen:";
/// How many votes [`RECENT`] keeps.
pub const RECENT_LEN: usize = 100;

/// The dedupe marker of one vote id.
pub fn seen(vote_id: &str) -> String {
    format!("{SEEN_PREFIX}{vote_id}")
}

/// The counter of the votes an aggregate could not name because it holds its cap of members.
pub fn overflow(aggregate: &str) -> String {
    format!("{aggregate}:overflow")
}

/// The [`APPLIED`] field of one partition.
pub fn applied_field(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
}
