//! `votectl recount` (the real binary) over a real stack: the counters rebuilt from the MongoDB
//! logs (the consumer waits meanwhile) while votes keep arriving equal the logs exactly, and a
//! replay of the whole topic afterwards counts nothing twice.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{eventually, valid_votes, TestStack};
use futures::TryStreamExt;
use vote_store::keys;

/// Counts per band and per path in `votes.logs`.
async fn logged_counts(stack: &TestStack) -> (HashMap<String, u64>, HashMap<String, u64>) {
    let documents: Vec<mongodb::bson::Document> = stack.logs().await.find(mongodb::bson::doc! {}).await.unwrap().try_collect().await.unwrap();
    let (mut bands, mut paths) = (HashMap::new(), HashMap::new());
    for document in &documents {
        *bands.entry(document.get_str("name").unwrap().to_owned()).or_insert(0) += 1;
        *paths.entry(document.get_str("path").unwrap().to_owned()).or_insert(0) += 1;
    }
    (bands, paths)
}

async fn assert_counts_equal_logs(stack: &TestStack, expected: u64) {
    assert_eq!(stack.logged().await, expected);
    assert_eq!(stack.total().await, expected);
    let (bands, paths) = logged_counts(stack).await;
    assert_eq!(stack.counts(keys::BANDS).await, bands);
    assert_eq!(stack.counts(keys::PATHS).await, paths);
    assert_eq!(stack.counts(keys::ALBUMS).await.values().sum::<u64>(), expected);
}

#[tokio::test]
async fn recount_while_votes_arrive_equals_the_logs_and_a_replay_counts_nothing_twice() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    stack.start_consumer("consumer", &[]).await;
    stack.cast_all(valid_votes(1000)).await;
    stack.wait_for_counts(1000, Duration::from_secs(60)).await;

    // Redis loses the counters (the applied offsets stay, stale).
    let _: () = redis::cmd("DEL")
        .arg(keys::BANDS)
        .arg(keys::ALBUMS)
        .arg(keys::PATHS)
        .arg(keys::TOTAL)
        .arg(keys::RECENT)
        .query_async(&mut stack.redis().await)
        .await
        .unwrap();
    assert_eq!(stack.total().await, 0);

    // 500 more votes arrive in waves while the recount runs.
    let arriving = async {
        for _ in 0..10 {
            stack.cast_all(valid_votes(50)).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let recount = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::process::Command::new(e2e::binary("votectl"))
            .args(["recount", "--json", "--batch", "100"])
            .args(["--redis-url", &stack.config.redis_url(), "--mongo-url", &stack.config.mongo_url()])
            .output()
            .await
            .expect("running votectl recount")
    };
    let ((), output) = tokio::join!(arriving, recount);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "votectl recount failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the recount's JSON report");
    println!("recount report: {report}");
    assert!(report["documents_read"].as_u64().unwrap() >= 1000, "{report}");
    assert_eq!(report["malformed"].as_u64(), Some(0), "{report}");
    let applied: HashMap<String, String> = redis::cmd("HGETALL").arg(keys::APPLIED).query_async(&mut stack.redis().await).await.unwrap();
    assert!(applied.keys().all(|field| field.starts_with("votes:")), "the recount rebuilt the applied offsets from the logs: {applied:?}");

    stack.wait_for_counts(1500, Duration::from_secs(60)).await;
    assert_counts_equal_logs(&stack, 1500).await;

    // A replay of the whole topic by a consumer of a new group: every vote is redelivered.
    let replay = stack.start_consumer("replay", &["--group", "replay-after-recount"]).await;
    eventually(Duration::from_secs(60), || async { e2e::metric(replay, "consumer_messages_total").await >= 1500.0 })
        .await
        .expect("the replaying consumer reads every vote again");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_counts_equal_logs(&stack, 1500).await;
}
