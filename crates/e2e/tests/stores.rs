//! The two stores against real servers: counting is exact per offset and per idempotency key,
//! logging per vote id; a damaged, full or evicting Redis is refused instead of half-counted; a
//! batch that does not follow what Redis applied (lost writes, a recreated topic) is refused
//! with what the consumer needs to re-read or resynchronise; leaderboards stay bounded.

use std::time::Duration;

use e2e::TestStack;
use vote_core::proto::VoteEvent;
use vote_core::{new_event, validate, Path, VoteInput};
use vote_stack::Part;
use vote_store::counters::{fingerprint, Counted, CountError, Span};
use vote_store::keys::{self, RECENT_LEN};
use vote_store::{votes, Counters, Logs};

const TOPIC: &str = "votes";

fn events(count: usize) -> Vec<VoteEvent> {
    e2e::valid_votes(count)
        .iter()
        .map(|vote| new_event(validate(&VoteInput::from(vote)).unwrap(), Path::Grpc, "test@0", 1_700_000_000_000, None))
        .collect()
}

/// Votes sent with idempotency keys `key-0`, `key-1`, ... (their ids are UUIDv5 of the key).
fn keyed_events(count: usize) -> Vec<VoteEvent> {
    let mut batch = events(count);
    for (i, event) in batch.iter_mut().enumerate() {
        event.vote_id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("key-{i}").as_bytes()).to_string();
    }
    batch
}

/// The span of `events` read from partition 0 from `first_offset` (record keys are vote ids).
fn span(events: &[VoteEvent], first_offset: i64) -> Span {
    let last = events.last().map(|e| e.vote_id.as_bytes());
    Span::new(0, first_offset, first_offset + events.len() as i64 - 1, fingerprint(last))
}

/// Counts `events` as read from partition 0 from `first_offset`, with `verified` as the applied
/// offset the consumer found still in the log.
async fn count_verified(counters: &Counters, events: &[VoteEvent], first_offset: i64, verified: Option<i64>) -> Result<Counted, CountError> {
    let mut span = span(events, first_offset);
    span.verified = verified;
    let batch: Vec<_> = events.iter().enumerate().map(|(i, e)| votes::event(0, first_offset + i as i64, e)).collect();
    counters.count(TOPIC, &votes::aggregates(votes::DEFAULT_NAME_CAP), &[span], &batch, false).await
}

async fn count(counters: &Counters, events: &[VoteEvent], first_offset: i64) -> Result<Counted, CountError> {
    count_verified(counters, events, first_offset, None).await
}

async fn counters(stack: &TestStack) -> Counters {
    Counters::connect(&stack.config.redis_url(), Duration::from_secs(60), &votes::aggregates(votes::DEFAULT_NAME_CAP)).await.unwrap()
}

async fn redis_cmd<T: redis::FromRedisValue>(stack: &TestStack, cmd: &mut redis::Cmd) -> T {
    cmd.query_async(&mut stack.redis().await).await.unwrap()
}

async fn used_memory(stack: &TestStack) -> i64 {
    let info: String = redis_cmd(stack, redis::cmd("INFO").arg("memory")).await;
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse::<i64>().unwrap()
}

async fn hash(stack: &TestStack, key: &str) -> std::collections::HashMap<String, String> {
    redis_cmd(stack, redis::cmd("HGETALL").arg(key)).await
}

#[tokio::test]
async fn redis_counts_each_offset_and_idempotency_key_once() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    let batch = keyed_events(300);
    assert_eq!(count(&counters, &batch, 0).await.unwrap().counted, 300);
    // The same batch again (a redelivery): refused until the caller checked the log, then skipped.
    let replay = count(&counters, &batch, 0).await.unwrap_err();
    assert!(matches!(&replay, CountError::Replay(r) if r[0].applied == 299 && r[0].fingerprint.as_deref() == Some(&*fingerprint(Some(batch[299].vote_id.as_bytes())))), "{replay}");
    assert_eq!(count_verified(&counters, &batch, 0, Some(299)).await.unwrap().counted, 0);
    let mut overlapping = batch[200..].to_vec();
    overlapping.extend(events(50));
    assert_eq!(count_verified(&counters, &overlapping, 200, Some(299)).await.unwrap().counted, 50);
    // A client retry under one idempotency key: the same vote id at later offsets.
    let retried = count(&counters, &batch[..10], 350).await.unwrap();
    assert_eq!((retried.counted, retried.skipped), (0, 10));

    assert_eq!(stack.total().await, 350);
    assert_eq!(stack.counts(keys::BANDS).await.values().sum::<u64>(), 350);
    assert_eq!(stack.counts(keys::PATHS).await["grpc"], 350);
    assert_eq!(hash(&stack, keys::APPLIED).await["votes:0"], "359");
    let albums = stack.counts(keys::ALBUMS).await;
    assert!(albums.contains_key("Malacates Trébol Shop|Niño"), "{albums:?}");
    let recent: Vec<String> = redis_cmd(&stack, redis::cmd("LRANGE").arg(keys::RECENT).arg(0).arg(-1)).await;
    assert_eq!(recent.len(), RECENT_LEN);
    let newest: serde_json::Value = serde_json::from_str(&recent[0]).unwrap();
    assert_eq!(newest["vote_id"], overlapping.last().unwrap().vote_id.as_str(), "the skipped retries pushed nothing");
}

/// Item 5 of the hardening issue: votes sent without an idempotency key leave no marker (the
/// applied offsets make replays exact), so Redis' memory does not grow with the votes; keyed
/// ones keep a marker for the TTL. Prints the figures behind the votes-per-GiB sizing.
#[tokio::test]
async fn unkeyed_votes_leave_no_marker_and_memory_stays_flat() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    count(&counters, &events(1000), 0).await.unwrap();
    let before = used_memory(&stack).await;
    for round in 1..=20 {
        count(&counters, &events(1000), round * 1000).await.unwrap();
    }
    let unkeyed_growth = used_memory(&stack).await - before;
    let markers: Vec<String> = redis_cmd(&stack, redis::cmd("KEYS").arg(format!("{}*", keys::SEEN_PREFIX))).await;
    assert!(markers.is_empty(), "{} markers for votes without an idempotency key", markers.len());
    assert_eq!(stack.total().await, 21_000);

    let before = used_memory(&stack).await;
    count(&counters, &keyed_events(10_000), 21_000).await.unwrap();
    let per_marker = (used_memory(&stack).await - before) / 10_000;
    println!("20,000 unkeyed votes grew used_memory by {unkeyed_growth} bytes; a keyed vote's marker takes about {per_marker} bytes (1 GiB holds {} markers)", (1i64 << 30) / per_marker.max(1));
    assert!(unkeyed_growth < 256 * 1024, "20,000 unkeyed votes grew Redis by {unkeyed_growth} bytes");
}

/// A batch that starts past what Redis applied (Redis lost writes after the offsets were
/// committed) is refused naming the applied offset; without an epoch (a Redis that lost
/// everything) the applied offset is -1; a floor (records expired from the log) lets it through.
#[tokio::test]
async fn a_batch_past_the_applied_offset_is_a_gap_and_writes_nothing() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    let gap = count(&counters, &events(10), 500).await.unwrap_err();
    assert!(matches!(&gap, CountError::Gap(b) if b[0].partition == 0 && b[0].applied == -1), "{gap}");
    count(&counters, &events(100), 0).await.unwrap();
    let gap = count(&counters, &events(10), 150).await.unwrap_err();
    assert!(matches!(&gap, CountError::Gap(b) if b[0].applied == 99), "{gap}");
    assert_eq!(stack.total().await, 100, "nothing of a refused batch is written");
    let mut floored = span(&events(10), 150);
    floored.floor = 150;
    let batch: Vec<_> = events(10).iter().enumerate().map(|(i, e)| votes::event(0, 150 + i as i64, e)).collect();
    counters.count(TOPIC, &votes::aggregates(votes::DEFAULT_NAME_CAP), &[floored], &batch, false).await.unwrap();
    assert_eq!(stack.total().await, 110);
}

/// Item 3: a replay whose applied record is not the one counted (a recreated topic) is
/// resynchronised: the applied offset is forgotten and the new records count.
#[tokio::test]
async fn a_recreated_topic_is_resynchronised_not_skipped() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    count(&counters, &events(50), 0).await.unwrap();
    let fresh = events(20);
    let CountError::Replay(replayed) = count(&counters, &fresh, 0).await.unwrap_err() else { panic!("a replay") };
    assert_ne!(replayed[0].fingerprint.as_deref(), Some(&*fingerprint(Some(fresh[0].vote_id.as_bytes()))));
    assert!(counters.resync(TOPIC, 0, replayed[0].applied).await.unwrap());
    assert_eq!(count(&counters, &fresh, 0).await.unwrap().counted, 20);
    assert_eq!(stack.total().await, 70);
}

/// Item 6: a leaderboard holds at most its cap of names; votes for more names count in the
/// total and the overflow counter, and reading the top stays bounded.
#[tokio::test]
async fn a_million_names_cannot_grow_a_leaderboard_past_its_cap() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let aggregates = votes::aggregates(100);
    let counters = Counters::connect(&stack.config.redis_url(), Duration::from_secs(60), &aggregates).await.unwrap();
    let mut offset = 0;
    for _ in 0..5 {
        let mut batch = events(1000);
        for (i, event) in batch.iter_mut().enumerate() {
            event.name = format!("band {}", offset + i as i64);
        }
        let span = span(&batch, offset);
        let counted: Vec<_> = batch.iter().enumerate().map(|(i, e)| votes::event(0, offset + i as i64, e)).collect();
        counters.count(TOPIC, &aggregates, &[span], &counted, false).await.unwrap();
        offset += 1000;
    }
    let top = vote_store::leaderboard::top(&mut stack.redis().await, keys::BANDS, 10).await.unwrap();
    assert_eq!((top.size, top.overflow, top.members.len()), (100, 4900, 10));
    assert_eq!(stack.total().await, 5000);
}

/// Item 9: counter values a Lua script reads as numbers but Redis cannot increment fail the
/// batch before any write; a member score that is not a count names its vote.
#[tokio::test]
async fn a_damaged_counter_fails_the_batch_without_a_partial_count() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    let batch = keyed_events(8);
    for bad in ["1.0", "1e3", "+5", "inf", " 7"] {
        let _: () = redis_cmd(&stack, redis::cmd("SET").arg(keys::TOTAL).arg(bad)).await;
        let error = count(&counters, &batch, 0).await.unwrap_err();
        assert!(matches!(error, CountError::Store(ref reason) if reason.contains(keys::TOTAL)), "{bad}: {error}");
        assert!(stack.counts(keys::BANDS).await.is_empty(), "{bad}: a band was counted by a failed batch");
    }
    let _: () = redis_cmd(&stack, redis::cmd("DEL").arg(keys::TOTAL)).await;
    let _: () = redis_cmd(&stack, redis::cmd("SET").arg(keys::RECENT).arg("not a list")).await;
    let error = count(&counters, &batch, 0).await.unwrap_err();
    assert!(matches!(error, CountError::Store(ref reason) if reason.contains(keys::RECENT)), "{error}");
    let seen: Vec<String> = redis_cmd(&stack, redis::cmd("KEYS").arg(format!("{}*", keys::SEEN_PREFIX))).await;
    assert!(seen.is_empty(), "votes were marked seen by a failed script: {seen:?}");
    assert_eq!(stack.total().await, 0);
    assert!(hash(&stack, keys::APPLIED).await.is_empty());
    let _: () = redis_cmd(&stack, redis::cmd("DEL").arg(keys::RECENT)).await;

    let _: () = redis_cmd(&stack, redis::cmd("ZADD").arg(keys::BANDS).arg("1.5").arg(&batch[5].name)).await;
    let error = count(&counters, &batch, 0).await.unwrap_err();
    assert!(matches!(error, CountError::Event { index: 1, .. }), "{error}");
    assert_eq!(stack.total().await, 0, "nothing of the failed batch was counted");
    let _: () = redis_cmd(&stack, redis::cmd("ZREM").arg(keys::BANDS).arg(&batch[5].name)).await;
    assert_eq!(count(&counters, &batch, 0).await.unwrap().counted, 8);
}

/// Item 5: a Redis at its maxmemory (noeviction) refuses the batch as full, not as an outage,
/// and counts again once it has room; a recount in progress makes the consumer wait.
#[tokio::test]
async fn a_full_redis_and_a_recount_refuse_the_batch_with_their_reason() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    count(&counters, &events(10), 0).await.unwrap();
    let _: () = redis_cmd(&stack, redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1")).await;
    let error = count(&counters, &keyed_events(10), 10).await.unwrap_err();
    let _: () = redis_cmd(&stack, redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0")).await;
    assert!(matches!(error, CountError::Full(_)), "{error}");
    let _: () = redis_cmd(&stack, redis::cmd("SET").arg(keys::RECOUNTING).arg("1")).await;
    assert!(matches!(count(&counters, &events(10), 10).await.unwrap_err(), CountError::Recounting));
    let _: () = redis_cmd(&stack, redis::cmd("DEL").arg(keys::RECOUNTING)).await;
    assert_eq!(count(&counters, &keyed_events(10), 10).await.unwrap().counted, 10);
}

/// Counters kept as hashes by earlier versions become leaderboards with the same counts.
#[tokio::test]
async fn counters_kept_as_hashes_are_migrated_at_connect() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let _: () = redis_cmd(&stack, redis::cmd("HSET").arg(keys::BANDS).arg("Alux Nahual").arg(7).arg("Viernes Verde").arg(2)).await;
    let _counters = counters(&stack).await;
    let bands = stack.counts(keys::BANDS).await;
    assert_eq!((bands["Alux Nahual"], bands["Viernes Verde"]), (7, 2));
}

/// A Redis that may evict keys is refused at connect, naming the setting.
#[tokio::test]
async fn an_evicting_redis_is_refused() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let _: () = redis_cmd(&stack, redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru")).await;
    let error = Counters::connect(&stack.config.redis_url(), Duration::from_secs(60), &[]).await.err().expect("refused");
    assert!(error.to_string().contains("maxmemory-policy") && error.to_string().contains("allkeys-lru"), "{error}");
}

#[tokio::test]
async fn mongo_logs_each_vote_id_once() {
    let stack = TestStack::start_parts(&[Part::Mongo]).await;
    let logs = Logs::connect(&stack.config.mongo_url()).await.unwrap();
    let batch = events(200);
    fn logged(batch: &[VoteEvent], first: usize) -> Vec<(&VoteEvent, vote_store::logs::Origin)> {
        batch.iter().enumerate().map(|(i, e)| (e, vote_store::logs::Origin { topic: TOPIC.into(), partition: 0, offset: (first + i) as i64 })).collect()
    }
    assert_eq!(logs.insert(logged(&batch, 0)).await.unwrap().inserted, 200);
    assert_eq!(logs.insert(logged(&batch, 0)).await.unwrap().inserted, 0, "a redelivered batch inserts nothing and is not an error");
    let mut overlapping = batch[150..].to_vec();
    overlapping.extend(events(25));
    let again = logs.insert(logged(&overlapping, 150)).await.unwrap();
    assert_eq!((again.inserted, again.rejected.len()), (25, 0));
    assert_eq!(stack.logged().await, 225);

    let collection = stack.logs().await;
    let doc = collection.find_one(mongodb::bson::doc! { "_id": &batch[0].vote_id }).await.unwrap().unwrap();
    assert_eq!(doc.get_str("name").unwrap(), batch[0].name);
    assert_eq!(doc.get_datetime("received_at").unwrap().timestamp_millis(), 1_700_000_000_000);
    let integer = |field: &str| mongodb::bson::from_bson::<i64>(doc.get(field).unwrap().clone()).unwrap();
    assert_eq!((doc.get_str("topic").unwrap(), integer("partition"), integer("offset")), (TOPIC, 0, 0));
    let by_band = collection.count_documents(mongodb::bson::doc! { "name": "Alux Nahual" }).await.unwrap();
    assert!(by_band > 0);
}
