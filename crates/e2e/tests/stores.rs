//! The two stores against real servers: counting is exact per offset and per vote id, logging
//! per vote id, and a damaged or evicting Redis is refused instead of half-counted.

use std::time::Duration;

use e2e::TestStack;
use vote_core::proto::VoteEvent;
use vote_core::{new_event, validate, Path, VoteInput};
use vote_stack::Part;
use vote_store::counters::{CountError, Delivery};
use vote_store::keys::{self, RECENT_LEN};
use vote_store::{Counters, Logs};

const TOPIC: &str = "votes";

fn events(count: usize) -> Vec<VoteEvent> {
    e2e::valid_votes(count)
        .iter()
        .map(|vote| new_event(validate(&VoteInput::from(vote)).unwrap(), Path::Grpc, "test@0", 1_700_000_000_000, None))
        .collect()
}

/// The events as read from partition 0 starting at `first_offset`.
fn delivered(events: &[VoteEvent], first_offset: i64) -> Vec<Delivery> {
    events.iter().enumerate().map(|(i, event)| Delivery { partition: 0, offset: first_offset + i as i64, event: event.clone() }).collect()
}

async fn counters(stack: &TestStack) -> Counters {
    Counters::connect(&stack.config.redis_url(), Duration::from_secs(60)).await.unwrap()
}

async fn redis_cmd<T: redis::FromRedisValue>(stack: &TestStack, cmd: &mut redis::Cmd) -> T {
    cmd.query_async(&mut stack.redis().await).await.unwrap()
}

#[tokio::test]
async fn redis_counts_each_offset_and_vote_id_once() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    let batch = events(300);
    assert_eq!(counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap().counted, 300);
    // The same batch again (a redelivery), and an overlapping one.
    assert_eq!(counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap().counted, 0);
    let mut overlapping = batch[200..].to_vec();
    overlapping.extend(events(50));
    assert_eq!(counters.count(TOPIC, &delivered(&overlapping, 200)).await.unwrap().counted, 50);
    // A client retry under one idempotency key: the same vote id at a later offset.
    let retried = counters.count(TOPIC, &delivered(&batch[..10], 1000)).await.unwrap();
    assert_eq!((retried.counted, retried.skipped), (0, 10));

    assert_eq!(stack.total().await, 350);
    assert_eq!(stack.hash(keys::BANDS).await.values().sum::<u64>(), 350);
    assert_eq!(stack.hash(keys::PATHS).await["grpc"], 350);
    assert_eq!(stack.hash(keys::APPLIED).await["votes:0"], 1009);
    let albums = stack.hash(keys::ALBUMS).await;
    assert!(albums.contains_key("Malacates Trébol Shop|Niño"), "{albums:?}");
    let recent: Vec<String> = redis_cmd(&stack, redis::cmd("LRANGE").arg(keys::RECENT).arg(0).arg(-1)).await;
    assert_eq!(recent.len(), RECENT_LEN);
    let newest: serde_json::Value = serde_json::from_str(&recent[0]).unwrap();
    assert_eq!(newest["vote_id"], overlapping.last().unwrap().vote_id.as_str());
}

/// A replay from offset 0 after the seen markers are gone (expired) counts nothing again: the
/// applied offsets alone keep the counts exact.
#[tokio::test]
async fn a_replay_after_the_seen_markers_expired_counts_nothing() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    let batch = events(200);
    counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap();
    let markers: Vec<String> = redis_cmd(&stack, redis::cmd("KEYS").arg(format!("{}*", keys::SEEN_PREFIX))).await;
    assert_eq!(markers.len(), 200);
    let _: u64 = redis_cmd(&stack, redis::cmd("DEL").arg(&markers)).await;

    let replay = counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap();
    assert_eq!((replay.counted, replay.skipped), (0, 200));
    assert_eq!(stack.total().await, 200);
}

/// Names with the separator and the escape character land in distinct, decodable fields.
#[tokio::test]
async fn album_fields_with_separators_do_not_collide() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    let mut batch = events(2);
    (batch[0].name, batch[0].album) = ("a|b".into(), "c".into());
    (batch[1].name, batch[1].album) = ("a".into(), "b|c\\".into());
    counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap();
    let mut decoded: Vec<(String, String)> =
        stack.hash(keys::ALBUMS).await.keys().map(|field| vote_store::decode_album_field(field).unwrap()).collect();
    decoded.sort();
    assert_eq!(decoded, [("a".to_owned(), "b|c\\".to_owned()), ("a|b".to_owned(), "c".to_owned())]);
}

/// A counter key of the wrong type fails the whole batch before any write: no vote is marked
/// seen without being counted. A field that one vote would increment but is not a number names
/// that vote, and the rest of the batch counts once it is left out.
#[tokio::test]
async fn a_damaged_counter_fails_the_batch_without_a_partial_count() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = counters(&stack).await;
    let batch = events(8);
    let _: () = redis_cmd(&stack, redis::cmd("SET").arg(keys::RECENT).arg("not a list")).await;
    let error = counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap_err();
    assert!(matches!(error, CountError::Store(ref reason) if reason.contains(keys::RECENT)), "{error}");
    let seen: Vec<String> = redis_cmd(&stack, redis::cmd("KEYS").arg(format!("{}*", keys::SEEN_PREFIX))).await;
    assert!(seen.is_empty(), "votes were marked seen by a failed script: {seen:?}");
    assert_eq!(stack.total().await, 0);
    assert!(stack.hash(keys::APPLIED).await.is_empty());
    let _: () = redis_cmd(&stack, redis::cmd("DEL").arg(keys::RECENT)).await;

    let _: () = redis_cmd(&stack, redis::cmd("HSET").arg(keys::BANDS).arg(&batch[5].name).arg("many")).await;
    let error = counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap_err();
    assert!(matches!(error, CountError::Vote { index: 1, .. }), "{error}");
    assert_eq!(stack.total().await, 0, "nothing of the failed batch was counted");
    let _: () = redis_cmd(&stack, redis::cmd("HDEL").arg(keys::BANDS).arg(&batch[5].name)).await;
    assert_eq!(counters.count(TOPIC, &delivered(&batch, 0)).await.unwrap().counted, 8);
}

/// A Redis that may evict keys is refused at connect, naming the setting.
#[tokio::test]
async fn an_evicting_redis_is_refused() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let _: () = redis_cmd(&stack, redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru")).await;
    let error = Counters::connect(&stack.config.redis_url(), Duration::from_secs(60)).await.err().expect("refused");
    assert!(error.to_string().contains("maxmemory-policy") && error.to_string().contains("allkeys-lru"), "{error}");
}

#[tokio::test]
async fn mongo_logs_each_vote_id_once() {
    let stack = TestStack::start_parts(&[Part::Mongo]).await;
    let logs = Logs::connect(&stack.config.mongo_url()).await.unwrap();
    let batch = events(200);
    assert_eq!(logs.insert(&batch).await.unwrap().inserted, 200);
    assert_eq!(logs.insert(&batch).await.unwrap().inserted, 0, "a redelivered batch inserts nothing and is not an error");
    let mut overlapping = batch[150..].to_vec();
    overlapping.extend(events(25));
    let again = logs.insert(&overlapping).await.unwrap();
    assert_eq!((again.inserted, again.rejected.len()), (25, 0));
    assert_eq!(stack.logged().await, 225);

    let collection = stack.logs().await;
    let doc = collection.find_one(mongodb::bson::doc! { "_id": &batch[0].vote_id }).await.unwrap().unwrap();
    assert_eq!(doc.get_str("name").unwrap(), batch[0].name);
    assert_eq!(doc.get_datetime("received_at").unwrap().timestamp_millis(), 1_700_000_000_000);
    let by_band = collection.count_documents(mongodb::bson::doc! { "name": "Alux Nahual" }).await.unwrap();
    assert!(by_band > 0);
}
