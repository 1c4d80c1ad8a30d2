//! The Redis key names of the live counters: the contract with the dashboards and `votectl`.

/// Hash band -> count.
pub const BANDS: &str = "{votes}:bands";
/// Hash album field ([`crate::encode_album_field`]) -> count.
pub const ALBUMS: &str = "{votes}:albums";
/// Hash path (`wasm`, `grpc`) -> count.
pub const PATHS: &str = "{votes}:paths";
/// Counter of all votes.
pub const TOTAL: &str = "{votes}:total";
/// List of the latest votes, newest first, as JSON.
pub const RECENT: &str = "{votes}:recent";
/// Hash `<topic>:<partition>` -> the last Kafka offset counted from that partition.
pub const APPLIED: &str = "{votes}:applied";
/// Prefix of the per-vote-id marker that makes counting idempotent across offsets.
pub const SEEN_PREFIX: &str = "{votes}:seen:";
/// How many votes [`RECENT`] keeps.
pub const RECENT_LEN: usize = 100;

/// The dedupe marker of one vote id.
pub fn seen(vote_id: &str) -> String {
    format!("{SEEN_PREFIX}{vote_id}")
}

/// The [`APPLIED`] field of one partition.
pub fn applied_field(topic: &str, partition: i32) -> String {
    format!("{topic}:{partition}")
}
