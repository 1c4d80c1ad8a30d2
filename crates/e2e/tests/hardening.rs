//! The consumer's promises under hostile records and real operations, over real servers: a
//! poison record near the broker's size limit, a broker wiped while Redis survives, a Redis
//! rolled back behind the committed offsets, and stores that are not there at start.

use std::time::{Duration, Instant};

use base64::Engine;
use e2e::{eventually, metric, valid_votes, TestStack};
use rdkafka::producer::{FutureProducer, FutureRecord};
use vote_stack::Part;

/// Item 1 of the hardening issue: a non-vote record of 950 KB (under the broker's limit, so any
/// Kafka client can write it) goes to the dead-letter topic as a bounded envelope (its head,
/// size and SHA-256) and the votes behind it are counted. Before, its envelope (base64 of the
/// whole payload) was over `message.max.bytes`, was refused forever, and counting stopped.
#[tokio::test]
async fn a_large_poison_record_is_dead_lettered_and_counting_goes_on() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    let port = stack.start_consumer("consumer", &[]).await;
    stack.cast_all(valid_votes(50)).await;

    let producer: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", stack.config.brokers()).create().unwrap();
    let payload: Vec<u8> = std::iter::once(0u8).chain((0..950_000u32).map(|i| (i % 251) as u8)).collect();
    let record = FutureRecord::to(vote_core::TOPIC).key("poison-large").payload(&payload).partition(0);
    let delivery = producer.send(record, Duration::from_secs(20)).await.map_err(|(e, _)| e).expect("a 950 KB record is accepted by the broker");
    let sent = Instant::now();
    stack.cast_all(valid_votes(100)).await;

    stack.wait_for_counts(150, Duration::from_secs(60)).await;
    println!("RECOVERY poison: 1 record of {} bytes; the 100 votes behind it counted {:?} after it was written", payload.len(), sent.elapsed());
    assert_eq!(stack.total().await, 150);
    assert_eq!(metric(port, "consumer_dlq_messages_total").await, 1.0);
    let envelopes = stack.dead_letters(1);
    let envelope = envelopes.iter().find(|e| e["offset"].as_i64() == Some(delivery.offset)).expect("the dead letter of the large record");
    let size = serde_json::to_vec(envelope).unwrap().len();
    println!("dead letter of {size} bytes for a record of {} bytes", payload.len());
    assert!(size < 16 * 1024, "an envelope of {size} bytes");
    assert_eq!(envelope["payload"]["size"], payload.len());
    assert_eq!(envelope["payload"]["truncated"], true);
    let head = base64::engine::general_purpose::STANDARD.decode(envelope["payload"]["base64"].as_str().unwrap()).unwrap();
    assert_eq!(&payload[..head.len()], &head[..], "the envelope keeps the record's first bytes");
    use sha2::Digest;
    assert_eq!(envelope["payload"]["sha256"], format!("{:x}", sha2::Sha256::digest(&payload)));
}

/// Item 3: the broker's data wiped (topics recreated, offsets from 0 again) while Redis keeps
/// its applied offsets. Before, every new vote sat at an offset Redis had applied and was
/// skipped in silence; now the consumer finds the applied offset past the new log's end,
/// resynchronises the partition, says so in its health and counts the new votes.
#[tokio::test]
async fn a_wiped_broker_with_a_surviving_redis_counts_new_votes() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    stack.start_consumer("before", &[]).await;
    stack.cast_all(valid_votes(300)).await;
    stack.wait_for_counts(300, Duration::from_secs(40)).await;
    stack.supervisor.stop("before", Duration::from_secs(10)).unwrap();
    stack.supervisor.stop("grpc-producer", Duration::from_secs(10)).unwrap();

    stack.kill(Part::Kafka);
    std::fs::remove_dir_all(stack.config.data_dir(Part::Kafka)).expect("wiping the broker's data");
    std::fs::create_dir_all(stack.config.data_dir(Part::Kafka)).unwrap();
    stack.restart(Part::Kafka).await;
    for (topic, partitions) in [(vote_core::TOPIC, stack.config.partitions), (vote_kafka::DLQ_TOPIC, stack.config.partitions)] {
        vote_kafka::ensure_topic(&stack.config.brokers(), topic, partitions).await.expect("recreating the topics");
    }
    stack.start_producer(&[]).await;
    let port = stack.start_consumer("after", &[]).await;
    stack.cast_all(valid_votes(40)).await;

    stack.wait_for_counts(340, Duration::from_secs(40)).await;
    assert_eq!(stack.total().await, 340);
    assert!(metric(port, "consumer_resyncs_total").await >= 1.0);
    let (_, health) = e2e::health(port).await;
    assert!(health.contains("recreated or reset"), "the health says the topic was reset: {health}");
}

/// Item 4: Redis restored from an older copy of its append-only file (as a crash of a Redis
/// that fsyncs every second, or a restored backup, leaves it) after the consumer committed past
/// it. Before, the votes in between were never counted; now the next batch starts past the
/// applied offsets, the consumer re-reads from there and every vote counts once.
#[tokio::test]
async fn a_redis_rolled_back_behind_the_commits_is_refilled_from_kafka() {
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    stack.start_consumer("first", &[]).await;
    stack.cast_all(valid_votes(300)).await;
    stack.wait_for_counts(300, Duration::from_secs(40)).await;
    stack.supervisor.stop("first", Duration::from_secs(10)).unwrap();

    let redis_dir = stack.config.data_dir(Part::Redis);
    let backup = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        for entry in walk(from) {
            let target = to.join(entry.strip_prefix(from).unwrap());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &target).unwrap();
        }
    };
    copy(&redis_dir, backup.path());

    let port = stack.start_consumer("second", &[]).await;
    stack.cast_all(valid_votes(200)).await;
    stack.wait_for_counts(500, Duration::from_secs(40)).await;

    stack.kill(Part::Redis);
    std::fs::remove_dir_all(&redis_dir).unwrap();
    copy(backup.path(), &redis_dir);
    stack.restart(Part::Redis).await;
    assert_eq!(stack.total().await, 300, "Redis came back with the older counts");
    let restored = Instant::now();

    // No new vote is needed to show the gap: an idle consumer compares the group's commits with
    // Redis' applied offsets and re-reads what Redis lost.
    stack.wait_for_counts(500, Duration::from_secs(60)).await;
    println!("RECOVERY rollback: 200 votes Redis lost were re-read and counted {:?} after it came back", restored.elapsed());
    stack.cast_all(valid_votes(20)).await;
    stack.wait_for_counts(520, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 520);
    assert!(metric(port, "consumer_rewinds_total").await >= 1.0);
    assert_eq!(stack.counts(vote_store::keys::PATHS).await["grpc"], 520);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The consumer starts without its stores: live (`/livez` 200) but not ready (`/readyz` 503
/// naming Redis) until Redis answers, then ready. Before, it exited at start, so a liveness
/// probe restarted it in a loop during a store outage.
#[tokio::test]
async fn the_consumer_starts_without_redis_and_is_live_but_not_ready() {
    let stack = TestStack::start_parts(&[Part::Kafka, Part::Mongo]).await;
    let port = e2e::free_port();
    let mut launch = stack.config.launch(Part::Consumer);
    launch.env.push(("VOTES_CONSUMER_METRICS_ADDR".into(), format!("127.0.0.1:{port}")));
    stack.supervisor.spawn(&launch).expect("starting consumer");
    let get = |path: &'static str| async move {
        match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    };
    eventually(Duration::from_secs(20), || async { get("/livez").await.0 == 200 })
        .await
        .unwrap_or_else(|_| panic!("the consumer is not live without Redis:\n{}", stack.supervisor.log_tail("consumer", 20)));
    let waiting = eventually(Duration::from_secs(10), || async { get("/readyz").await.1.contains("redis") }).await;
    let (status, body) = get("/readyz").await;
    assert!(waiting.is_ok(), "readiness names what it waits for: {body}");
    assert_eq!(status, 503, "{body}");

    stack.restart(Part::Redis).await;
    eventually(Duration::from_secs(30), || async { get("/readyz").await.0 == 200 })
        .await
        .expect("ready once Redis answered");
    assert_eq!(get("/livez").await.0, 200);
}

/// The results app starts without Redis too: live, not ready, until Redis answers. Before, it
/// exited at start when Redis was away.
#[tokio::test]
async fn the_results_app_starts_without_redis_and_is_live_but_not_ready() {
    let stack = TestStack::start_parts(&[Part::Mongo]).await;
    stack.supervisor.spawn(&stack.config.launch(Part::Results)).expect("starting results");
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", stack.config.results_port);
    let status = |path: &'static str| {
        let url = url(path);
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    eventually(Duration::from_secs(20), || async { status("/livez").await == 200 })
        .await
        .unwrap_or_else(|_| panic!("results is not live without Redis:\n{}", stack.supervisor.log_tail("results", 20)));
    assert_eq!(status("/readyz").await, 503, "not ready without Redis");
    stack.restart(Part::Redis).await;
    eventually(Duration::from_secs(30), || async { status("/readyz").await == 200 }).await.expect("ready once Redis answered");
}
