//! The consumer's two stores against real servers: counting and logging are idempotent per vote id.

use std::time::Duration;

use consumer::counters::{Counters, RECENT_LEN};
use consumer::logs::Logs;
use e2e::TestStack;
use vote_core::{new_event, validate, Path, VoteInput};
use vote_stack::Part;

fn events(count: usize) -> Vec<vote_core::proto::VoteEvent> {
    e2e::valid_votes(count)
        .iter()
        .map(|vote| new_event(validate(&VoteInput::from(vote)).unwrap(), Path::Grpc, "test@0", 1_700_000_000_000, None))
        .collect()
}

#[tokio::test]
async fn redis_counts_each_vote_id_once() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let counters = Counters::connect(&stack.config.redis_url(), Duration::from_secs(60)).await.unwrap();
    let batch = events(300);
    assert_eq!(counters.count(&batch).await.unwrap(), 300);
    // The same batch again (a redelivery), and an overlapping one.
    assert_eq!(counters.count(&batch).await.unwrap(), 0);
    let mut overlapping = batch[200..].to_vec();
    overlapping.extend(events(50));
    assert_eq!(counters.count(&overlapping).await.unwrap(), 50);

    assert_eq!(stack.total().await, 350);
    assert_eq!(stack.hash("votes:bands").await.values().sum::<u64>(), 350);
    assert_eq!(stack.hash("votes:paths").await["grpc"], 350);
    let albums = stack.hash("votes:albums").await;
    assert!(albums.contains_key("Malacates Trébol Shop|Niño"), "{albums:?}");
    let recent: Vec<String> = redis::cmd("LRANGE").arg("votes:recent").arg(0).arg(-1).query_async(&mut stack.redis().await).await.unwrap();
    assert_eq!(recent.len(), RECENT_LEN);
    let newest: serde_json::Value = serde_json::from_str(&recent[0]).unwrap();
    assert_eq!(newest["vote_id"], overlapping.last().unwrap().vote_id.as_str());
}

#[tokio::test]
async fn mongo_logs_each_vote_id_once() {
    let stack = TestStack::start_parts(&[Part::Mongo]).await;
    let logs = Logs::connect(&stack.config.mongo_url()).await.unwrap();
    let batch = events(200);
    assert_eq!(logs.insert(&batch).await.unwrap(), 200);
    assert_eq!(logs.insert(&batch).await.unwrap(), 0, "a redelivered batch inserts nothing and is not an error");
    let mut overlapping = batch[150..].to_vec();
    overlapping.extend(events(25));
    assert_eq!(logs.insert(&overlapping).await.unwrap(), 25);
    assert_eq!(stack.logged().await, 225);

    let collection = stack.logs().await;
    let doc = collection.find_one(mongodb::bson::doc! { "_id": &batch[0].vote_id }).await.unwrap().unwrap();
    assert_eq!(doc.get_str("name").unwrap(), batch[0].name);
    assert_eq!(doc.get_datetime("received_at").unwrap().timestamp_millis(), 1_700_000_000_000);
    let by_band = collection.count_documents(mongodb::bson::doc! { "name": "Alux Nahual" }).await.unwrap();
    assert!(by_band > 0);
}
