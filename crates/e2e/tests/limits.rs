//! The producers' limits and honest answers, over real servers: the gRPC concurrency limit
//! (RESOURCE_EXHAUSTED at once with no queue; with one, calls wait in a bounded queue first), the CastStream cap and deadline, reflection v1 and v1alpha, a
//! full publish queue answered as overload, an unacknowledged publish answered "may not have been
//! stored" with the idempotency key echoed, and configurations whose deadlines could not hold a
//! publish refused at start-up.

use std::time::{Duration, Instant};

use e2e::{component, eventually, valid_votes, vote_json, TestStack};
use futures::stream::{self, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use vote_core::proto::Vote;
use vote_grpc::VoteServiceClient;

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("idempotency-key", key.parse().expect("ASCII metadata"));
    request
}

/// A stream held open by the test: votes go in through the sender, and the call holds its slot
/// until the sender is dropped.
fn open_stream() -> (tokio::sync::mpsc::Sender<Vote>, ReceiverStream<Vote>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    (sender, ReceiverStream::new(receiver))
}

type HeldStream = tokio::task::JoinHandle<Result<tonic::Response<vote_core::proto::CastSummary>, tonic::Status>>;

/// Opens a `CastStream` that sends `vote` and stays open (holding its call slot) until the
/// returned sender is dropped; the handle gives the call's answer.
async fn hold_stream(client: &VoteServiceClient<Channel>, vote: Vote) -> (tokio::sync::mpsc::Sender<Vote>, HeldStream) {
    let (sender, stream) = open_stream();
    sender.send(vote).await.unwrap();
    let mut client = client.clone();
    (sender, tokio::spawn(async move { client.cast_stream(stream).await }))
}

#[tokio::test]
async fn grpc_limits_calls_streams_and_speaks_both_reflection_versions() {
    let stack = TestStack::start().await;
    stack
        .start_producer(&["--max-concurrent-calls", "1", "--max-queued-calls", "0", "--stream-max-votes", "5", "--publish-timeout-ms", "2000"])
        .await;
    stack.start_consumer("consumer", &[]).await;
    let client = stack.grpc_client().await;

    // One open stream takes the only slot: a Cast is refused at once with RESOURCE_EXHAUSTED.
    let (sender, votes) = open_stream();
    sender.send(valid_votes(1)[0].clone()).await.unwrap();
    let held = tokio::spawn({
        let mut client = client.clone();
        async move { client.cast_stream(votes).await }
    });
    // Once the stream's first vote is counted, its handler holds the slot.
    eventually(Duration::from_secs(30), || async { stack.total().await >= 1 }).await.expect("the stream's first vote is counted");
    assert!(!held.is_finished(), "the held stream ended early: {:?}", held.await);
    let started = Instant::now();
    let status = client.clone().cast(valid_votes(2)[1].clone()).await.expect_err("the only slot is held");
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit of 1 calls"), "{}", status.message());
    assert!(took < Duration::from_secs(1), "refused at once, took {took:?}");
    drop(sender);
    let summary = held.await.unwrap().expect("the held stream ends well").into_inner();
    assert_eq!((summary.accepted, summary.rejected), (1, 0));

    // The slot is free again once the stream answered.
    let mut grpc = client.clone();
    grpc.cast(valid_votes(1)[0].clone()).await.expect("a call succeeds once the slot is free");

    // A stream over the cap: the first 5 are processed, the rest not read, the call says so.
    let status = grpc.cast_stream(stream::iter(valid_votes(8))).await.expect_err("over the cap");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}", status.message());
    assert!(status.message().starts_with("stream: a stream takes at most 5 votes"), "{}", status.message());
    assert!(status.message().contains("5 votes were accepted"), "{}", status.message());

    // A stream that stays open past its deadline (here the client's, sent as grpc-timeout) ends
    // with DEADLINE_EXCEEDED from the producer, saying what was counted.
    let (sender, votes) = open_stream();
    sender.send(valid_votes(1)[0].clone()).await.unwrap();
    let mut request = tonic::Request::new(votes);
    request.set_timeout(Duration::from_secs(4));
    let started = Instant::now();
    let status = grpc.cast_stream(request).await.expect_err("past the deadline");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert!(status.message().contains("1 votes were accepted"), "{}", status.message());
    drop(sender);

    // Reflection answers in both protocol versions.
    assert!(list_services_v1alpha(&stack).await.iter().any(|s| s == "votes.v1.VoteService"));
    assert!(list_services_v1(&stack).await.iter().any(|s| s == "votes.v1.VoteService"));

    // 1 (held stream) + 1 (after) + 5 (capped stream) + 1 (deadline stream).
    let expected = 8;
    stack.wait_for_counts(expected, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, expected);
    assert_eq!(stack.logged().await, expected);
}

/// Over the call limit a call waits in the bounded call queue: served when a slot frees up,
/// `RESOURCE_EXHAUSTED` at once when the queue is full, and after the queue wait when no slot
/// frees up; the queue's length and waits are metrics.
#[tokio::test]
async fn grpc_calls_over_the_limit_wait_in_a_bounded_queue_before_resource_exhausted() {
    let stack = TestStack::start().await;
    let flags = ["--max-concurrent-calls", "1", "--max-queued-calls", "1", "--call-queue-wait-ms", "2000", "--publish-timeout-ms", "2000"];
    stack.start_producer(&flags).await;
    stack.start_consumer("consumer", &[]).await;
    let client = stack.grpc_client().await;
    let metrics = stack.config.grpc_metrics_port;
    let votes = valid_votes(4);

    // An open stream holds the only slot once its first vote is counted.
    let (sender, held) = hold_stream(&client, votes[0].clone()).await;
    eventually(Duration::from_secs(30), || async { stack.total().await >= 1 }).await.expect("the held stream's vote is counted");

    // The next call waits in the queue; one more finds the queue full and is refused at once.
    let queued = tokio::spawn({
        let mut client = client.clone();
        let vote = votes[1].clone();
        async move {
            let started = Instant::now();
            (client.cast(vote).await, started.elapsed())
        }
    });
    eventually(Duration::from_secs(10), || async { e2e::metric(metrics, "grpc_calls_queued").await >= 1.0 }).await.expect("a call waits in the queue");
    let started = Instant::now();
    let status = client.clone().cast(votes[2].clone()).await.expect_err("the queue of 1 is full");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("1 more wait"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once, took {:?}", started.elapsed());

    // The held stream ends: the queued call gets its slot and is served.
    drop(sender);
    held.await.unwrap().expect("the held stream ends well");
    let (served, waited) = queued.await.unwrap();
    served.expect("the queued call is served once the slot is free");
    assert!(waited < Duration::from_secs(2), "served within the queue wait, took {waited:?}");

    // A slot that never frees up: the queued call is refused after the queue wait.
    let (sender, held) = hold_stream(&client, votes[3].clone()).await;
    eventually(Duration::from_secs(30), || async { stack.total().await >= 3 }).await.expect("the second held stream's vote is counted");
    let started = Instant::now();
    let status = client.clone().cast(votes[2].clone()).await.expect_err("no slot frees up");
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "refused after the 2 s queue wait, took {took:?}");
    drop(sender);
    held.await.unwrap().expect("the second held stream ends well");
    assert!(e2e::metric(metrics, "grpc_call_queue_wait_seconds_count").await >= 3.0, "every queued call's wait is recorded");

    // Held, queued-then-served, held again: 3 votes; the refused ones stored nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.total().await, 3);
}

/// `list_services_v1alpha` and `list_services_v1`: the services a reflection client of that
/// protocol version lists (the generated clients are distinct types, one per version).
macro_rules! list_services {
    ($name:ident, $version:ident) => {
        async fn $name(stack: &TestStack) -> Vec<String> {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            let channel = tonic::transport::Channel::from_shared(stack.config.grpc_url()).unwrap().connect().await.unwrap();
            let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
            let reply = ServerReflectionClient::new(channel).server_reflection_info(stream::iter([request])).await;
            let mut replies = reply.expect(concat!(stringify!($version), " reflection is served")).into_inner();
            match replies.next().await.unwrap().unwrap().message_response {
                Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
                other => panic!("unexpected {} reply {other:?}", stringify!($version)),
            }
        }
    };
}

list_services!(list_services_v1alpha, v1alpha);
list_services!(list_services_v1, v1);

/// With the broker gone and a publish queue of one message, concurrent votes over both producers
/// get what is true: the others are refused at once as overload; the one queued times out, and
/// says what librdkafka knows of it: "not stored" when it never left the client, "may not have
/// been stored" (key echoed) when it may have reached the broker. Nothing gets a 500 or a 502.
#[tokio::test]
async fn a_full_queue_is_overload_and_an_unacknowledged_vote_may_be_stored() {
    let stack = TestStack::start().await;
    let flags = ["--publish-timeout-ms", "2000", "--publish-queue-max-messages", "1"];
    stack.start_host(&component("vote_rest"), &flags).await;
    stack.start_producer(&flags).await;
    let http = reqwest::Client::new();
    assert_eq!(stack.post_vote(&http, &vote_json(&valid_votes(1)[0])).await.0, 202);
    stack.supervisor.stop("kafka", Duration::from_secs(10)).unwrap();

    let url = format!("{}/votes", stack.config.host_url());
    let replies: Vec<(u16, Option<String>, Option<String>, serde_json::Value)> = stream::iter(0..8)
        .map(|i| {
            let (http, url) = (&http, &url);
            async move {
                let response = http.post(url).header("idempotency-key", format!("full-queue-{i}")).json(&vote_json(&valid_votes(1)[0])).send().await.unwrap();
                let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
                let (retry_after, key) = (header("retry-after"), header("idempotency-key"));
                (response.status().as_u16(), retry_after, key, response.json().await.unwrap_or_default())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let (mut overloaded, mut timed_out) = (0, 0);
    for (status, retry_after, key, reply) in &replies {
        assert_eq!((*status, retry_after.as_deref()), (503, Some("1")), "{reply}");
        let error = reply["error"].as_str().unwrap();
        if error.starts_with("overloaded: the vote was not stored") {
            overloaded += 1;
        } else if error.starts_with("the vote may not have been stored; retry with the same idempotency-key") {
            timed_out += 1;
            assert_eq!(key.as_deref(), reply["idempotency_key"].as_str(), "{reply}");
            assert!(key.as_deref().is_some_and(|k| k.starts_with("full-queue-")), "{reply}");
        } else if error.starts_with("the vote was not stored, try again") {
            timed_out += 1;
        } else {
            panic!("unexpected 503: {reply}");
        }
    }
    assert!(overloaded >= 1 && timed_out >= 1, "{replies:?}");

    // The gRPC producer: the same, as RESOURCE_EXHAUSTED and UNAVAILABLE.
    let client = stack.grpc_client().await;
    let statuses: Vec<tonic::Status> = stream::iter(0..8)
        .map(|i| {
            let mut client = client.clone();
            async move { client.cast(keyed(valid_votes(1)[0].clone(), &format!("grpc-full-{i}"))).await.expect_err("no broker") }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let codes: Vec<tonic::Code> = statuses.iter().map(|s| s.code()).collect();
    assert!(codes.contains(&tonic::Code::ResourceExhausted), "{statuses:?}");
    let unacknowledged = statuses.iter().find(|s| s.code() == tonic::Code::Unavailable).unwrap_or_else(|| panic!("{statuses:?}"));
    let message = unacknowledged.message();
    if message.starts_with("the vote may not have been stored; retry with the same idempotency-key") {
        assert!(unacknowledged.metadata().get("idempotency-key").is_some_and(|k| k.to_str().unwrap().starts_with("grpc-full-")));
    } else {
        assert!(message.starts_with("the vote was not stored, try again"), "{message}");
    }
    assert!(codes.iter().all(|c| matches!(c, tonic::Code::ResourceExhausted | tonic::Code::Unavailable)), "{statuses:?}");
}

/// A publish timeout that the caller's deadline could not hold is refused at start-up, naming
/// both settings.
#[test]
fn deadlines_shorter_than_a_publish_are_refused_at_start_up() {
    let bin = |name: &str| std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join(name);
    let grpc = std::process::Command::new(bin("grpc-producer"))
        .args(["--publish-timeout-ms", "5000", "--call-timeout-ms", "5000", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&grpc.stderr);
    assert!(!grpc.status.success() && stderr.contains("call timeout") && stderr.contains("publish timeout"), "{stderr}");
    let host = std::process::Command::new(bin("votes-host"))
        .args(["--component", "/nonexistent.wasm", "--publish-timeout-ms", "5000", "--request-timeout-ms", "5000", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&host.stderr);
    assert!(!host.status.success() && stderr.contains("request timeout") && stderr.contains("publish timeout"), "{stderr}");
}
