//! The broker SIGKILLed and restarted under load on both paths, with clients that do what the
//! producers tell them: every vote carries its own idempotency key and is retried under that key
//! until it is acknowledged. Every acknowledged vote is counted and logged once, none twice, even
//! those whose first attempt reached the broker without an acknowledgement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{valid_votes, vote_json, TestStack};
use futures::stream::{self, StreamExt};
use vote_core::proto::Vote;
use vote_stack::Part;

/// Votes sent over each path.
const VOTES_PER_PATH: usize = 1_500;
/// Requests in flight on each path.
const IN_FLIGHT: usize = 16;
/// How long one vote may keep being retried before the test gives up on it.
const RETRY_BUDGET: Duration = Duration::from_secs(90);

/// What the load saw: acknowledged votes and refused attempts (retried under the same key).
#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    retried: AtomicU64,
    last_refusal_ms: AtomicU64,
}

impl Tally {
    /// An attempt refused at `start.elapsed()`, to be retried under the same key.
    fn refused(&self, start: Instant) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        self.last_refusal_ms.fetch_max(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Sends one vote over REST under `key` until it is accepted; 503 is retried, anything else fails.
async fn rest_until_accepted(stack: &TestStack, http: &reqwest::Client, key: String, vote: &Vote, tally: &Tally, start: Instant) {
    let deadline = Instant::now() + RETRY_BUDGET;
    loop {
        let sent = http
            .post(format!("{}/votes", stack.config.host_url()))
            .header("idempotency-key", &key)
            .json(&vote_json(vote))
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        match sent.map(|r| r.status().as_u16()) {
            Ok(202) => break,
            Ok(503) | Err(_) => {
                tally.refused(start);
            }
            Ok(other) => panic!("REST vote {key} got {other}, expected 202 or 503"),
        }
        assert!(Instant::now() < deadline, "REST vote {key} was never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tally.acknowledged.fetch_add(1, Ordering::Relaxed);
}

/// Sends one vote over gRPC under `key` until it is accepted; UNAVAILABLE and RESOURCE_EXHAUSTED
/// are retried, anything else fails.
async fn grpc_until_accepted(stack: &TestStack, key: String, vote: &Vote, tally: &Tally, start: Instant) {
    let deadline = Instant::now() + RETRY_BUDGET;
    let mut client = stack.grpc_client().await;
    loop {
        let mut request = tonic::Request::new(vote.clone());
        request.metadata_mut().insert("idempotency-key", key.parse().expect("ASCII key"));
        request.set_timeout(Duration::from_secs(20));
        match client.cast(request).await {
            Ok(_) => break,
            Err(status) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::DeadlineExceeded) => {
                tally.refused(start);
            }
            Err(status) => panic!("gRPC vote {key} got {status:?}"),
        }
        assert!(Instant::now() < deadline, "gRPC vote {key} was never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tally.acknowledged.fetch_add(1, Ordering::Relaxed);
}

#[tokio::test]
async fn broker_killed_under_load_counts_every_acknowledged_vote_once() {
    let stack = TestStack::start().await;
    stack.start_producer(&["--publish-timeout-ms", "3000"]).await;
    stack.start_host(&e2e::component("vote_rest"), &["--publish-timeout-ms", "3000"]).await;
    stack.start_consumer("consumer", &[]).await;
    let http = reqwest::Client::new();
    let tally = Arc::new(Tally::default());
    let start = Instant::now();

    let votes = valid_votes(VOTES_PER_PATH);
    let rest_load = stream::iter(votes.iter().enumerate())
        .for_each_concurrent(IN_FLIGHT, |(i, vote)| rest_until_accepted(&stack, &http, format!("broker-fault-rest-{i}"), vote, &tally, start));
    let grpc_load = stream::iter(votes.iter().enumerate())
        .for_each_concurrent(IN_FLIGHT, |(i, vote)| grpc_until_accepted(&stack, format!("broker-fault-grpc-{i}"), vote, &tally, start));

    // The fault: once a third of the votes are in, SIGKILL the broker, and start it again on the
    // same port and data after longer than the publish timeout, so that votes in flight fail.
    let fault = async {
        e2e::eventually(Duration::from_secs(120), || async { tally.acknowledged.load(Ordering::Relaxed) >= (VOTES_PER_PATH as u64 * 2) / 3 })
            .await
            .expect("a third of the votes accepted before the fault");
        stack.supervisor.kill(Part::Kafka.name()).expect("SIGKILL the broker");
        let killed_at = start.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        stack.supervisor.spawn(&stack.config.launch(Part::Kafka)).expect("restart the broker");
        vote_stack::stack::wait_ready(&stack.config, &stack.supervisor, Part::Kafka).await.expect("broker ready again");
        killed_at
    };
    let (_, _, killed_at) = tokio::join!(rest_load, grpc_load, fault);

    let accepted = tally.acknowledged.load(Ordering::Relaxed);
    assert_eq!(accepted, VOTES_PER_PATH as u64 * 2, "every vote was eventually acknowledged");
    let retried = tally.retried.load(Ordering::Relaxed);
    assert!(retried > 0, "the fault was felt: some attempts were refused and retried");
    let recovered_after = Duration::from_millis(tally.last_refusal_ms.load(Ordering::Relaxed)).saturating_sub(killed_at);
    eprintln!("broker killed at {killed_at:?}; {retried} attempts refused and retried; the last refusal {recovered_after:?} after the kill");

    stack.wait_for_counts(accepted, Duration::from_secs(120)).await;
    assert_eq!(stack.total().await, accepted, "counted once each, none twice");
    assert_eq!(stack.logged().await, accepted, "logged once each, none twice");
}
