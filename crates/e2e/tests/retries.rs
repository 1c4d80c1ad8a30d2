//! Client retries with an idempotency key, over both producers: a vote sent again under the same
//! key gets the same vote id and is counted once; a bad key is refused by name and publishes
//! nothing.

use std::time::Duration;

use e2e::{valid_votes, vote_json, TestStack};
use futures::stream;
use vote_core::proto::Vote;

/// `POST path` with an optional idempotency key; returns the status and the JSON reply.
async fn post(stack: &TestStack, http: &reqwest::Client, path: &str, key: Option<&str>, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut request = http.post(format!("{}{path}", stack.config.host_url())).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("POST reaches the host");
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

fn keyed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("idempotency-key", key.parse().expect("ASCII metadata"));
    request
}

#[tokio::test]
async fn a_retried_vote_with_the_same_key_is_counted_once() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    stack.start_host(&e2e::component("vote_rest"), &[]).await;
    stack.start_consumer("consumer", &[]).await;
    let http = reqwest::Client::new();
    let votes: Vec<Vote> = valid_votes(4);
    let one = vote_json(&votes[0]);

    // REST, one vote sent three times under one key: one id.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, reply) = post(&stack, &http, "/votes", Some("rest-retry-1"), &one).await;
        assert_eq!(status, 202, "{reply}");
        ids.push(reply["vote_id"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");

    // A batch of three sent twice under one key: the same three ids, each item its own.
    let batch = serde_json::Value::Array(votes[..3].iter().map(vote_json).collect());
    let batch_ids = |reply: &serde_json::Value| -> Vec<String> {
        reply["results"].as_array().unwrap().iter().map(|item| item["vote_id"].as_str().unwrap().to_owned()).collect()
    };
    let (first_status, first) = post(&stack, &http, "/votes/batch", Some("rest-batch-1"), &batch).await;
    let (second_status, second) = post(&stack, &http, "/votes/batch", Some("rest-batch-1"), &batch).await;
    assert_eq!((first_status, second_status), (200, 200), "{first} {second}");
    assert_eq!(batch_ids(&first), batch_ids(&second));
    assert_eq!(batch_ids(&first).iter().collect::<std::collections::HashSet<_>>().len(), 3);
    // The same batch retried as a subset, reordered: each vote keeps its id (before, item 0 of
    // the retry took the id of the first batch's item 0 and was dropped as its duplicate).
    let subset = serde_json::Value::Array(vec![vote_json(&votes[2]), vote_json(&votes[1])]);
    let (status, retried) = post(&stack, &http, "/votes/batch", Some("rest-batch-1"), &subset).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(batch_ids(&retried), [batch_ids(&first)[2].clone(), batch_ids(&first)[1].clone()]);
    // A key reused for another vote names another vote: counted, not dropped as a retry.
    let (status, other) = post(&stack, &http, "/votes", Some("rest-retry-1"), &vote_json(&votes[3])).await;
    assert_eq!(status, 202, "{other}");
    assert_ne!(other["vote_id"].as_str(), Some(ids[0].as_str()), "another vote under a reused key got the first vote's id");

    // Bad keys are refused by name, and nothing is published.
    for bad in ["has space", &"k".repeat(129)] {
        let (status, reply) = post(&stack, &http, "/votes", Some(bad), &one).await;
        assert_eq!((status, reply["field"].as_str()), (400, Some("idempotency-key")), "{bad:?}: {reply}");
    }

    // gRPC, one vote cast three times under one key: one id.
    let mut client = stack.grpc_client().await;
    let mut grpc_ids = Vec::new();
    for _ in 0..3 {
        grpc_ids.push(client.cast(keyed(votes[1].clone(), "grpc-retry-1")).await.expect("accepted").into_inner().vote_id);
    }
    assert!(grpc_ids.iter().all(|id| id == &grpc_ids[0]), "{grpc_ids:?}");

    // A stream of two sent twice under one key: two votes, counted once each (the summary holds
    // counts, not ids: the final count below proves the second stream named the same two votes).
    for _ in 0..2 {
        let summary = client.cast_stream(keyed(stream::iter(votes[2..4].to_vec()), "grpc-stream-1")).await.expect("stream accepted").into_inner();
        assert_eq!((summary.accepted, summary.rejected), (2, 0));
    }

    // A key that looks like a batch item (`K#0`) is its own vote, not item 0 of the batch under K.
    let (status, lookalike) = post(&stack, &http, "/votes", Some("rest-batch-1#0"), &one).await;
    assert_eq!(status, 202, "{lookalike}");
    assert!(!batch_ids(&first).iter().any(|id| Some(id.as_str()) == lookalike["vote_id"].as_str()), "{lookalike}");

    let status = client.cast(keyed(votes[1].clone(), "bad key")).await.expect_err("bad key refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("idempotency-key:"), "{}", status.message());

    // The same key over both producers is the same vote.
    let (status, reply) = post(&stack, &http, "/votes", Some("both-paths-1"), &one).await;
    assert_eq!(status, 202);
    let over_grpc = client.cast(keyed(votes[0].clone(), "both-paths-1")).await.expect("accepted").into_inner().vote_id;
    assert_eq!(reply["vote_id"].as_str(), Some(over_grpc.as_str()));

    // Without a key every send is a new vote.
    for _ in 0..2 {
        assert_eq!(post(&stack, &http, "/votes", None, &one).await.0, 202);
    }

    // Unique votes: 1 (REST retries) + 3 (batch; its subset retry adds none) + 1 (another vote
    // under a reused key) + 1 (gRPC retries) + 2 (stream) + 1 (look-alike key) + 1 (both paths)
    // + 2 (no key) = 12.
    stack.wait_for_counts(12, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 12);
    assert_eq!(stack.logged().await, 12);
}
