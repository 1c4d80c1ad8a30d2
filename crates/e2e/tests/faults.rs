//! The consumer under faults, over real servers: stores SIGKILLed and restarted under load on
//! both producer paths, poison records, a full replay. Every test
//! ends with counted = logged = accepted and prints the recovery time it measured.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use e2e::{component, eventually, health, metric, valid_votes, Load, TestStack};
use rdkafka::producer::{FutureProducer, FutureRecord};
use vote_stack::Part;

/// How long `/healthz` tolerates a stall in these tests (`--stall-secs`).
const STALL_SECS: &str = "2";

/// A backing store SIGKILLed and restarted under load over both paths: `/healthz` turns 503
/// while it is down, the consumer resumes by itself within 10 s of the store answering again,
/// and counted = logged = accepted.
async fn store_killed_under_load(part: Part) {
    let stack = Arc::new(TestStack::start().await);
    stack.start_producer(&[]).await;
    stack.start_host(&component("vote_rest"), &[]).await;
    let port = stack.start_consumer("consumer", &["--stall-secs", STALL_SECS]).await;
    let load = Load::start(&stack, true).await;
    eventually(Duration::from_secs(30), || async { stack.total().await >= 200 }).await.expect("votes flow before the fault");

    stack.kill(part);
    let killed = Instant::now();
    eventually(Duration::from_secs(20), || async { health(port).await.0 == 503 })
        .await
        .unwrap_or_else(|_| panic!("/healthz stayed healthy with {} down", part.name()));
    let reason = health(port).await.1;
    println!("{} down: /healthz answered 503 after {:?}: {reason}", part.name(), killed.elapsed());

    let commits = metric(port, "consumer_commits_total").await;
    stack.restart(part).await;
    let back = Instant::now();
    eventually(Duration::from_secs(10), || async { metric(port, "consumer_commits_total").await > commits })
        .await
        .unwrap_or_else(|_| panic!("the consumer did not resume within 10 s of {} coming back", part.name()));
    println!("RECOVERY {}: consumer resumed {:?} after the restarted server answered", part.name(), back.elapsed());

    let (accepted, refused) = load.stop().await;
    assert_eq!(refused, 0, "a store fault must not refuse votes at the producers");
    stack.wait_for_counts(accepted, Duration::from_secs(40)).await;
    assert_eq!(stack.total().await, accepted);
    assert_eq!(stack.logged().await, accepted);
    let paths = stack.counts(vote_store::keys::PATHS).await;
    assert!(paths["grpc"] > 0 && paths["wasm"] > 0, "{paths:?}");
    eventually(Duration::from_secs(10), || async { health(port).await.0 == 200 }).await.expect("/healthz healthy again");
    println!("{} fault: {accepted} accepted, counted and logged once each", part.name());
}

#[tokio::test]
async fn redis_killed_under_load_the_consumer_heals() {
    store_killed_under_load(Part::Redis).await;
}

#[tokio::test]
async fn mongodb_killed_under_load_the_consumer_heals() {
    store_killed_under_load(Part::Mongo).await;
}

/// Bytes that are no protobuf `VoteEvent` (a field number 0 is never valid).
fn random_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut bytes = vec![0x00];
    for _ in 0..40 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        bytes.push((state >> 33) as u8);
    }
    bytes
}

/// Records no producer would write, sent straight to `votes`: each lands in `votes.dlq` with its
/// reason, original partition, offset and payload; the partitions keep flowing; counts stay exact.
#[tokio::test]
async fn poison_records_go_to_the_dead_letter_topic() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    let port = stack.start_consumer("consumer", &[]).await;
    stack.cast_all(valid_votes(100)).await;

    let producer: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", stack.config.brokers()).create().unwrap();
    let mut unknown_version = vote_core::new_event(
        vote_core::validate(&vote_core::VoteInput::from(&valid_votes(1)[0])).unwrap(),
        vote_core::Path::Grpc,
        "poison@0",
        vote_core::now_ms(),
        None,
    );
    unknown_version.schema_version = 99;
    let mut poison: Vec<(Vec<u8>, &str)> = (0..10).map(|i| (random_bytes(i), "undecodable")).collect();
    poison.extend((0..5).map(|_| (vote_core::encode_event(&unknown_version), "schema_version")));
    let mut expected: HashMap<(i32, i64), (&str, Vec<u8>)> = HashMap::new();
    for (i, (payload, reason)) in poison.into_iter().enumerate() {
        let record = FutureRecord::to(vote_core::TOPIC).key("poison").payload(&payload).partition(i as i32 % stack.config.partitions);
        let delivery = producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("poison written");
        expected.insert((delivery.partition, delivery.offset), (reason, payload));
    }
    stack.cast_all(valid_votes(100)).await;

    stack.wait_for_counts(200, Duration::from_secs(40)).await;
    assert_eq!(stack.total().await, 200, "the poison counted nothing and the valid votes after it flowed");
    assert_eq!(stack.logged().await, 200);
    assert_eq!(metric(port, "consumer_dlq_messages_total").await, 15.0);

    let found: HashMap<(i32, i64), serde_json::Value> = stack
        .dead_letters(expected.len())
        .into_iter()
        .map(|envelope| ((envelope["partition"].as_i64().unwrap() as i32, envelope["offset"].as_i64().unwrap()), envelope))
        .collect();
    assert_eq!(found.len(), expected.len(), "dead letters found: {found:?}");
    for (position, (reason, payload)) in &expected {
        let envelope = &found[position];
        assert_eq!(envelope["reason"], *reason, "{envelope}");
        assert_eq!(envelope["topic"], vote_core::TOPIC);
        assert!(envelope["error"].as_str().is_some_and(|e| !e.is_empty()), "{envelope}");
        let original = base64::engine::general_purpose::STANDARD.decode(envelope["payload"]["base64"].as_str().unwrap()).unwrap();
        assert_eq!(&original, payload, "the original payload travels in the envelope");
    }
}

/// The whole topic read again from the earliest offset by a new consumer group, into the same
/// Redis (votes without idempotency keys leave no markers): the consumer checks the applied
/// offsets' records against the log, finds them the same, and the applied offsets keep every
/// count as it was.
#[tokio::test]
async fn a_full_replay_after_the_markers_expired_changes_no_count() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    stack.start_consumer("first", &[]).await;
    stack.cast_all(valid_votes(500)).await;
    stack.wait_for_counts(500, Duration::from_secs(40)).await;
    stack.supervisor.stop("first", Duration::from_secs(10)).unwrap();
    let bands = stack.counts(vote_store::keys::BANDS).await;

    let mut redis = stack.redis().await;
    let markers: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", vote_store::keys::SEEN_PREFIX)).query_async(&mut redis).await.unwrap();
    assert!(markers.is_empty(), "votes without an idempotency key left markers: {}", markers.len());

    let started = Instant::now();
    let port = stack.start_consumer("replay", &["--group", "replay-from-earliest"]).await;
    stack.wait_for_group("replay-from-earliest", 500, Duration::from_secs(40)).await;
    println!("replay of 500 votes by a new group took {:?}", started.elapsed());
    assert!(metric(port, "consumer_messages_total").await >= 500.0, "the new group read the whole topic");
    assert_eq!(metric(port, "consumer_votes_counted_total").await, 0.0);
    assert!(metric(port, "consumer_votes_duplicate_total").await >= 500.0);
    assert_eq!(stack.total().await, 500);
    assert_eq!(stack.logged().await, 500);
    assert_eq!(stack.counts(vote_store::keys::BANDS).await, bands);
    assert_eq!(metric(port, "consumer_resyncs_total").await, 0.0, "a redelivery is not a reset");
}
