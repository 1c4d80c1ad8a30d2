//! The votes workload in Redis: its aggregates (band, album and path leaderboards, the total and
//! the latest votes) and what one vote writes to them.

use uuid::Uuid;
use vote_core::proto::VoteEvent;

use crate::album::encode_album_field;
use crate::counters::{Aggregate, Event, Kind, Op};
use crate::keys;

/// The most paths (`wasm`, `grpc`, ...) the path leaderboard names.
pub const PATH_CAP: u64 = 64;
/// The most bands (and albums) the leaderboards name by default; votes for names beyond it are
/// counted in the total and in the leaderboard's overflow counter.
pub const DEFAULT_NAME_CAP: u64 = crate::counters::DEFAULT_RANK_CAP;

/// The index of each aggregate in [`aggregates`].
const BANDS: usize = 0;
const ALBUMS: usize = 1;
const PATHS: usize = 2;
const TOTAL: usize = 3;
const RECENT: usize = 4;

/// The aggregates of the votes workload, with `name_cap` distinct bands and albums at most.
pub fn aggregates(name_cap: u64) -> Vec<Aggregate> {
    let aggregate = |key: &str, kind| Aggregate { key: key.to_owned(), kind };
    vec![
        aggregate(keys::BANDS, Kind::Rank { cap: name_cap }),
        aggregate(keys::ALBUMS, Kind::Rank { cap: name_cap }),
        aggregate(keys::PATHS, Kind::Rank { cap: PATH_CAP }),
        aggregate(keys::TOTAL, Kind::Add),
        aggregate(keys::RECENT, Kind::List { len: keys::RECENT_LEN as u64 }),
    ]
}

/// The idempotency marker of a vote sent with a key (its id is then a UUIDv5 of the key); a
/// vote without one has a fresh UUIDv7 that no retry can repeat, and needs no marker.
pub fn marker(event: &VoteEvent) -> Option<String> {
    let id = Uuid::parse_str(&event.vote_id).ok()?;
    (id.get_version_num() == 5).then(|| keys::seen(&event.vote_id))
}

/// What counting one vote writes.
pub fn ops(event: &VoteEvent) -> Vec<Op> {
    let op = |aggregate, member: String| Op { aggregate, member, amount: 1 };
    vec![
        op(BANDS, event.name.clone()),
        op(ALBUMS, encode_album_field(&event.name, &event.album)),
        op(PATHS, event.path.clone()),
        op(TOTAL, String::new()),
        op(RECENT, recent_entry(event)),
    ]
}

/// One vote read from `partition` at `offset`, as the counters count it.
pub fn event(partition: i32, offset: i64, vote: &VoteEvent) -> Event {
    Event { partition, offset, marker: marker(vote), ops: ops(vote) }
}

/// The JSON kept in `{votes}:recent` for one vote.
pub fn recent_entry(event: &VoteEvent) -> String {
    serde_json::json!({
        "vote_id": event.vote_id,
        "name": event.name,
        "album": event.album,
        "year": event.year,
        "rank": event.rank,
        "path": event.path,
        "received_at_ms": event.received_at_ms,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(id: String) -> VoteEvent {
        VoteEvent { vote_id: id, name: "Alux Nahual".into(), album: "Conquista".into(), path: "wasm".into(), ..VoteEvent::default() }
    }

    #[test]
    fn only_votes_sent_with_a_key_have_a_marker() {
        let keyed = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"key").to_string();
        assert_eq!(marker(&vote(keyed.clone())), Some(keys::seen(&keyed)));
        assert_eq!(marker(&vote(Uuid::now_v7().to_string())), None);
    }

    #[test]
    fn a_vote_writes_each_aggregate_once() {
        let ops = ops(&vote(Uuid::now_v7().to_string()));
        let aggregates = aggregates(10);
        assert_eq!(ops.len(), aggregates.len());
        assert_eq!(ops[ALBUMS].member, "Alux Nahual|Conquista");
        assert!(ops.iter().enumerate().all(|(i, op)| op.aggregate == i));
    }
}
