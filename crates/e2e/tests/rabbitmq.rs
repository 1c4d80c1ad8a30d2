//! A workload's topic on RabbitMQ end to end, over real servers: the shipped manifest with the
//! weather workload bound to RabbitMQ (`broker = "rabbitmq"`), the stack's own RabbitMQ node
//! (stream plugin, its own ports and data), the wasm host publishing `POST /tweets` to the stream
//! with confirms and the consumer reading it. Every report the host confirmed with 202 is counted
//! and logged exactly once across a SIGKILL of the node under load (answered meanwhile with a
//! fast 503 and Retry-After) and a SIGKILL of the consumer; band votes stay on Kafka beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{eventually, TestStack};
use mongodb::bson::doc;
use vote_platform::Manifest;
use vote_stack::config::Part;

/// How many weather reports the test sends.
const REPORTS: usize = 600;
/// Clients posting at once.
const CLIENTS: usize = 8;

/// The shipped manifest with the weather workload on RabbitMQ, written into `dir`.
fn rabbit_manifest(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(vote_stack::config::repo_root().join("spin.toml")).unwrap();
    let bound = shipped.replacen("topic = \"weather\"\n", "topic = \"weather\"\nbroker = \"rabbitmq\"\n", 1);
    assert_ne!(bound, shipped, "spin.toml names the weather topic as the test expects");
    let path = dir.join("spin.toml");
    std::fs::write(&path, bound).unwrap();
    assert_eq!(Manifest::load(&path).unwrap().rabbitmq_topics(), vec!["weather".to_owned()]);
    path
}

/// A stack with its own RabbitMQ node, a consumer and the host serving `manifest_path` (the
/// weather workload on RabbitMQ); returns it with the URL of `POST /tweets`.
async fn start_weather_on_rabbitmq(manifest_path: &Path) -> (TestStack, String) {
    let configured = manifest_path.to_path_buf();
    let stack = TestStack::start_with(&[Part::Kafka, Part::Redis, Part::Mongo, Part::Rabbitmq], move |config| config.manifest = Some(configured)).await;
    stack.start_consumer("consumer", &[]).await;
    stack.start_app_host(manifest_path, &[]).await;
    let url = format!("{}/tweets", stack.config.host_url());
    (stack, url)
}

fn reports() -> Vec<serde_json::Value> {
    let path = vote_stack::config::repo_root().join("data").join("weather.json");
    let sample: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (0..REPORTS).map(|i| sample[i % sample.len()].clone()).collect()
}

/// What posting one report until it was accepted saw.
#[derive(Default)]
struct Posted {
    /// Answers other than 202, by status.
    refusals: HashMap<u16, u64>,
    /// Whether every 503 carried Retry-After, and the slowest one.
    retry_after_missing: u64,
    slowest_refusal: Duration,
}

/// Posts `report` under its own Idempotency-Key until it gets 202 (the client's retry, which the
/// consumer deduplicates by the key), at most for a minute.
async fn post_until_accepted(http: &reqwest::Client, url: &str, report: &serde_json::Value, key: &str, posted: &mut Posted) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let started = Instant::now();
        match http.post(url).header("idempotency-key", key).json(report).send().await {
            Ok(response) if response.status().as_u16() == 202 => return,
            Ok(response) => {
                let status = response.status().as_u16();
                *posted.refusals.entry(status).or_default() += 1;
                posted.slowest_refusal = posted.slowest_refusal.max(started.elapsed());
                if status == 503 && response.headers().get("retry-after").is_none() {
                    posted.retry_after_missing += 1;
                }
                assert!(status == 503, "report {key}: {status} {}", response.text().await.unwrap_or_default());
            }
            Err(error) => panic!("report {key}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("report {key} was not accepted within a minute");
}

impl Posted {
    fn merge(&mut self, other: Posted) {
        for (status, n) in other.refusals {
            *self.refusals.entry(status).or_default() += n;
        }
        self.retry_after_missing += other.retry_after_missing;
        self.slowest_refusal = self.slowest_refusal.max(other.slowest_refusal);
    }
}

/// Posts reports `range` from [`CLIENTS`] clients at once, each until accepted.
async fn post_range(http: &reqwest::Client, url: &str, reports: &[serde_json::Value], range: std::ops::Range<usize>, posted: &mut Posted) {
    use futures::StreamExt;
    let mut sends = futures::stream::iter(range.map(|i| async move {
        let mut mine = Posted::default();
        post_until_accepted(http, url, &reports[i], &format!("report-{i}"), &mut mine).await;
        mine
    }))
    .buffer_unordered(CLIENTS);
    while let Some(mine) = sends.next().await {
        posted.merge(mine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weather_on_rabbitmq_counts_every_confirmed_report_once_across_node_and_consumer_kills() {
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = rabbit_manifest(dir.path());
    let weather = Manifest::load(&manifest_path).unwrap().workloads["weather"].clone();
    let (stack, url) = start_weather_on_rabbitmq(&manifest_path).await;
    let http = reqwest::Client::new();
    let reports = reports();

    // A third before the node dies, a third while it is down, the rest after it is back.
    let mut posted = Posted::default();
    post_range(&http, &url, &reports, 0..REPORTS / 3, &mut posted).await;
    assert!(posted.refusals.is_empty(), "with the node up every report is accepted at once: {:?}", posted.refusals);
    // Killed with reports in flight.
    let under_load = {
        let (http, url, reports) = (http.clone(), url.clone(), reports.clone());
        tokio::spawn(async move {
            let mut posted = Posted::default();
            post_range(&http, &url, &reports, REPORTS / 3..REPORTS / 2, &mut posted).await;
            posted
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.kill(Part::Rabbitmq);
    let down = http.post(&url).header("idempotency-key", "probe").json(&reports[0]).send().await.unwrap();
    assert_eq!(down.status().as_u16(), 503, "with the node down: {}", down.text().await.unwrap());
    assert!(down.headers().get("retry-after").is_some(), "a 503 says when to retry");
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        stack.restart(Part::Rabbitmq).await;
        stack
    });
    post_range(&http, &url, &reports, REPORTS / 2..2 * (REPORTS / 3), &mut posted).await;
    let stack = restart.await.unwrap();
    posted.merge(under_load.await.unwrap());
    assert!(posted.refusals.get(&503).copied().unwrap_or(0) > 0, "the reports sent while the node was down were refused first: {:?}", posted.refusals.keys());
    assert_eq!(posted.retry_after_missing, 0, "every 503 carries Retry-After");
    eprintln!("while the node was down: {:?} refusals, the slowest in {:?}", posted.refusals, posted.slowest_refusal);

    // The consumer dies mid-way through the rest and a new one takes over from the stored position.
    post_range(&http, &url, &reports, 2 * (REPORTS / 3)..5 * (REPORTS / 6), &mut posted).await;
    stack.supervisor.kill("consumer").unwrap();
    post_range(&http, &url, &reports, 5 * (REPORTS / 6)..REPORTS, &mut posted).await;
    // One report sent twice under its key: counted once.
    post_until_accepted(&http, &url, &reports[0], "report-0", &mut posted).await;
    let consumer_port_again = stack.start_consumer("consumer-again", &[]).await;

    let mut redis = stack.redis().await;
    let total_key = weather.total_key();
    let counted = eventually(Duration::from_secs(60), || {
        let (mut redis, key) = (redis.clone(), total_key.clone());
        async move { redis::cmd("GET").arg(&key).query_async::<Option<u64>>(&mut redis).await.unwrap().unwrap_or(0) >= REPORTS as u64 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total: u64 = redis::cmd("GET").arg(&total_key).query_async::<Option<u64>>(&mut redis).await.unwrap().unwrap_or(0);
    assert!(counted.is_ok() && total == REPORTS as u64, "{REPORTS} reports accepted, {total} counted; consumer log:\n{}", stack.supervisor.log_tail("consumer-again", 30));

    // Per municipality, exactly what was accepted.
    let mut expected: HashMap<String, i64> = HashMap::new();
    for report in &reports {
        *expected.entry(report["municipality"].as_str().unwrap().to_lowercase()).or_default() += 1;
    }
    let key = weather.count_key("municipality");
    let members: Vec<(String, f64)> = redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut redis).await.unwrap();
    let counted: HashMap<String, i64> = members.into_iter().map(|(m, s)| (m, s as i64)).collect();
    assert_eq!(counted, expected, "reports per municipality");

    // Logged once each, with where it was read: the stream, partition 0.
    let client = mongodb::Client::with_uri_str(stack.config.mongo_url()).await.unwrap();
    let logs = client.database("votes").collection::<mongodb::bson::Document>(&weather.collection());
    assert_eq!(logs.count_documents(doc! {}).await.unwrap(), REPORTS as u64, "one log document per report");
    assert_eq!(logs.count_documents(doc! { "topic": "weather", "partition": 0 }).await.unwrap(), REPORTS as u64, "logged as read from the stream");

    // The consumers read the weather from the stream only, and stored their position there.
    let samples = e2e::exposition::scrape(&format!("http://127.0.0.1:{consumer_port_again}/metrics")).await;
    let read = |broker: &str| -> f64 {
        samples.iter().filter(|s| s.name == "consumer_records_read_total" && s.labels.get("broker").map(String::as_str) == Some(broker) && s.labels.get("topic").map(String::as_str) == Some("weather")).map(|s| s.value).sum()
    };
    assert!(read("rabbitmq") > 0.0 && read("kafka") == 0.0, "weather read from rabbitmq only: {} from rabbitmq, {} from kafka", read("rabbitmq"), read("kafka"));
    let settings = vote_rabbit::RabbitSettings::parse(&stack.config.rabbitmq_address()).unwrap();
    let stored = vote_rabbit::StreamReader::new(settings, "weather", vote_kafka::CONSUMER_GROUP).stored().await.unwrap();
    assert!(stored.is_some_and(|next| next >= REPORTS as i64), "the position stored on the node covers every report: {stored:?}");
}

/// RabbitMQ blocks publishers while a resource alarm is set. A disk alarm (its memory alarm does
/// not stop stream publishers on 3.10, measured) is raised on the stack's own node under load: the
/// host never hangs and never answers 5xx other than 503 with Retry-After; once its blocked
/// connection times out, new publishes are refused at once as overload. When the alarm clears,
/// every report is accepted on retry under its key and counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_alarm_is_answered_as_overload_and_nothing_is_counted_twice() {
    const SENT: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = rabbit_manifest(dir.path());
    let weather = Manifest::load(&manifest_path).unwrap().workloads["weather"].clone();
    let (stack, url) = start_weather_on_rabbitmq(&manifest_path).await;
    let http = reqwest::Client::new();
    let reports = reports();
    let mut posted = Posted::default();
    post_range(&http, &url, &reports, 0..20, &mut posted).await;
    assert!(posted.refusals.is_empty(), "before the alarm every report is accepted: {:?}", posted.refusals);

    // A free-disk limit no disk meets: the node raises its disk alarm and blocks publishers.
    stack.rabbitmqctl(&["set_disk_free_limit", "1000000000000000"]);
    let (mut fast_overload, mut slowest, mut statuses) = (None, Duration::ZERO, HashMap::<u16, u64>::new());
    let mut next = 20;
    let deadline = Instant::now() + Duration::from_secs(60);
    while fast_overload.is_none() && next < SENT && Instant::now() < deadline {
        let started = Instant::now();
        let response = http.post(&url).header("idempotency-key", format!("report-{next}")).json(&reports[next]).send().await.unwrap();
        let (status, took) = (response.status().as_u16(), started.elapsed());
        let retry_after = response.headers().get("retry-after").is_some();
        let body = response.text().await.unwrap();
        assert!(status == 202 || status == 503, "report-{next} under the alarm: {status} {body}");
        assert!(status == 202 || retry_after, "a 503 says when to retry: {body}");
        assert!(took < vote_kafka::DEFAULT_PUBLISH_TIMEOUT + Duration::from_secs(3), "report-{next} took {took:?}: the host must not hang on a blocked node");
        *statuses.entry(status).or_default() += 1;
        slowest = slowest.max(took);
        if status == 503 && body.contains("overloaded") && took < Duration::from_secs(1) {
            fast_overload = Some(body);
        }
        next += 1;
        // Paced, so the node has time to notice its disk (it checks every few seconds).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("under the disk alarm: {statuses:?} for {} reports, the slowest in {slowest:?}", next - 20);
    let fast_overload = fast_overload.unwrap_or_else(|| panic!("no fast 503 naming overload under the alarm: {statuses:?}\nhost log:\n{}", stack.supervisor.log_tail("wasm-host", 20)));
    assert!(fast_overload.contains("resource alarm"), "the overload names its cause: {fast_overload}");

    // The alarm clears: every report sent (those refused, and any a blocked connection may still
    // have stored) is retried under its key until accepted, and counted once.
    stack.rabbitmqctl(&["set_disk_free_limit", "50MB"]);
    post_range(&http, &url, &reports, 20..next, &mut posted).await;
    let redis = stack.redis().await;
    let total_key = weather.total_key();
    let total = |mut redis: redis::aio::MultiplexedConnection, key: String| async move { redis::cmd("GET").arg(&key).query_async::<Option<u64>>(&mut redis).await.unwrap().unwrap_or(0) };
    let counted = eventually(Duration::from_secs(60), || {
        let (redis, key) = (redis.clone(), total_key.clone());
        async move { total(redis, key).await >= next as u64 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counted_now = total(redis.clone(), total_key.clone()).await;
    assert!(counted.is_ok() && counted_now == next as u64, "{next} reports accepted, {counted_now} counted; consumer log:\n{}", stack.supervisor.log_tail("consumer", 30));
}
