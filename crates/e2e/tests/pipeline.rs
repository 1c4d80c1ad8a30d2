//! The vote pipeline end to end over real servers: gRPC producer -> Tansu -> consumer -> Redis
//! and NX-27017, with redelivery, consumer-group and broker-outage faults.

use std::time::{Duration, Instant};

use e2e::{assigned_partitions, eventually, invalid_votes, metric, valid_votes, TestStack};

/// 1,000 valid and 100 invalid votes: exactly 1,000 counted and logged, the invalid ones nowhere,
/// each rejection naming its field.
#[tokio::test]
async fn grpc_votes_are_counted_and_logged_exactly_once() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    let consumer_port = stack.start_consumer("consumer", &[]).await;
    let client = stack.grpc_client().await;

    let accepted = stack.cast_all(valid_votes(1000)).await;
    assert_eq!(accepted.len(), 1000);

    for (vote, field) in invalid_votes(100) {
        let status = client.clone().cast(vote.clone()).await.expect_err("invalid vote refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{vote:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{vote:?} -> {}", status.message());
    }

    stack.wait_for_counts(1000, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 1000);
    assert_eq!(stack.logged().await, 1000);
    let bands = stack.counts(vote_store::keys::BANDS).await;
    assert_eq!(bands.values().sum::<u64>(), 1000);
    assert_eq!(bands["Malacates Trébol Shop"], 250);
    assert!(!bands.contains_key("Legión"), "an invalid vote was counted: {bands:?}");
    assert_eq!(stack.counts(vote_store::keys::PATHS).await["grpc"], 1000);
    assert_eq!(stack.counts(vote_store::keys::ALBUMS).await.values().sum::<u64>(), 1000);

    let logs = stack.logs().await;
    let one = logs.find_one(mongodb::bson::doc! { "_id": &accepted[0] }).await.unwrap().expect("log of an accepted vote");
    assert_eq!(one.get_str("path").unwrap(), "grpc");
    assert!(one.get_str("producer").unwrap().starts_with("grpc-producer@"));
    assert!(one.get_datetime("received_at").is_ok() && one.get_datetime("consumed_at").is_ok());
    assert_eq!(logs.count_documents(mongodb::bson::doc! { "name": "Legión" }).await.unwrap(), 0);

    assert_eq!(metric(consumer_port, "consumer_votes_counted_total").await, 1000.0);
    assert_eq!(metric(stack.config.grpc_metrics_port, "votes_received_total").await, 1100.0);
}

/// A consumer SIGKILLed after writing a batch but before committing it: the restarted consumer
/// reads the batch again, and the counts stay exact. (Both use a 45 s session timeout, Kafka's
/// default: Tansu 0.6 hands a dead member's partitions to a newcomer only when the newcomer joins
/// before the dead member's session expires; see docs/decisions.md.)
#[tokio::test]
async fn a_consumer_killed_before_its_commit_counts_nothing_twice() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    stack.cast_all(valid_votes(1000)).await;

    // One batch holds all 1,000 votes; the consumer writes them, then sleeps before committing.
    let session = ["--session-timeout-ms", "45000"];
    stack.start_consumer("doomed", &[&session[..], &["--batch-max", "5000", "--batch-linger-ms", "3000", "--pause-before-commit-ms", "600000"]].concat()).await;
    stack.wait_for_stores(1000, Duration::from_secs(60)).await;
    stack.supervisor.kill("doomed").unwrap();

    let port = stack.start_consumer("survivor", &session).await;
    stack.wait_for_counts(1000, Duration::from_secs(120)).await;
    assert!(metric(port, "consumer_messages_total").await >= 1000.0, "the restarted consumer read the uncommitted batch again");
    assert_eq!(metric(port, "consumer_votes_duplicate_total").await, 1000.0, "every redelivered vote was recognised");
    assert_eq!(metric(port, "consumer_votes_counted_total").await, 0.0);
    assert_eq!(stack.total().await, 1000);
    assert_eq!(stack.logged().await, 1000);
    assert_eq!(stack.counts(vote_store::keys::BANDS).await.values().sum::<u64>(), 1000);
}

/// A consumer SIGKILLed and replaced as its session (10 s) runs out, as a restarting pod or
/// `votectl up` may: Tansu 0.6 then leaves the replacement with no partitions, waiting on the dead
/// leader, while the votes pile up (before the fix: 500 votes uncounted after 90 s). The
/// replacement sees that no member moves those partitions, says so in `/healthz`, rejoins the
/// group and counts every vote once.
#[tokio::test]
async fn a_consumer_replaced_after_a_kill_takes_its_partitions_over() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    let stall = ["--stall-secs", "5"];
    stack.start_consumer("killed", &stall).await;
    stack.cast_all(valid_votes(500)).await;
    stack.wait_for_counts(500, Duration::from_secs(60)).await;
    stack.supervisor.kill("killed").unwrap();
    // The replacement joins as the dead member's session runs out: Tansu then leaves it waiting.
    tokio::time::sleep(Duration::from_secs(9)).await;

    let port = stack.start_consumer("replacement", &stall).await;
    stack.cast_all(valid_votes(500)).await;
    stack.wait_for_counts(1000, Duration::from_secs(90)).await;
    assert_eq!(stack.total().await, 1000);
    assert_eq!(stack.logged().await, 1000);
    assert!(metric(port, "consumer_votes_counted_total").await > 0.0, "the replacement counted the new votes");
}

/// Two consumers in one group share the partitions; together they count every vote once.
#[tokio::test]
async fn two_consumers_in_one_group_split_the_work() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    let first = stack.start_consumer("consumer-a", &[]).await;
    let second = stack.start_consumer("consumer-b", &[]).await;
    // Let the group settle so both own partitions before the votes arrive.
    eventually(Duration::from_secs(30), || async {
        let (a, b) = (assigned_partitions(first).await, assigned_partitions(second).await);
        a > 0 && b > 0 && a + b == stack.config.partitions as usize
    })
    .await
    .expect("both consumers own partitions");

    stack.cast_all(valid_votes(2000)).await;
    stack.wait_for_counts(2000, Duration::from_secs(60)).await;

    let (a, b) = (metric(first, "consumer_votes_counted_total").await, metric(second, "consumer_votes_counted_total").await);
    assert!(a > 0.0 && b > 0.0, "both consumers counted votes: a = {a}, b = {b}");
    assert_eq!(a + b, 2000.0);
    assert_eq!(stack.total().await, 2000);
    assert_eq!(stack.logged().await, 2000);
}

/// With the broker down a vote fails with UNAVAILABLE within the bounded wait; once the broker
/// is back, votes flow again (the producer starts a fresh session) and the consumer, which ran
/// through the outage, counts every acknowledged vote once.
#[tokio::test]
async fn broker_down_gives_unavailable_then_votes_flow_again() {
    let stack = TestStack::start().await;
    stack.start_producer(&["--publish-timeout-ms", "3000"]).await;
    stack.start_consumer("consumer", &[]).await;
    let mut client = stack.grpc_client().await;
    for vote in valid_votes(10) {
        client.cast(vote).await.expect("vote accepted while the broker is up");
    }

    stack.supervisor.stop("kafka", Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let status = client.cast(valid_votes(1).remove(0)).await.expect_err("no broker, no OK");
    let waited = started.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(waited < Duration::from_secs(15), "the wait is bounded, took {waited:?}");

    let kafka = stack.config.launch(vote_stack::Part::Kafka);
    stack.supervisor.spawn(&kafka).unwrap();
    vote_stack::stack::wait_ready(&stack.config, &stack.supervisor, vote_stack::Part::Kafka).await.unwrap();
    let mut accepted_after = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted_after < 10 {
        assert!(Instant::now() < deadline, "votes did not flow again after the broker came back");
        match client.cast(valid_votes(1).remove(0)).await {
            Ok(_) => accepted_after += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // 10 votes before and 10 after; the one refused during the outage was dropped by the
    // producer when its wait ran out, so it never reaches the broker later.
    stack.wait_for_counts(20, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 20);
    assert_eq!(stack.logged().await, 20);
}
