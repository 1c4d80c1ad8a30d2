//! Signed fleet deploys and a fleet host's start-up: records written straight to the fleet topic
//! (unsigned, signed by another key, replayed, out of order) are refused by every host and
//! counted; the admin API refuses unsigned orders and a signer's clock 6 minutes off; a fleet
//! host started before Kafka waits for it and then serves; a host refuses to start without its
//! deploy key or with an empty admin token.

use std::time::{Duration, Instant};

use deploy_signing::{Action, Order, SecretKey, SignedOrder};
use e2e::fleet::{signed_admin, FLEET_TOPIC};
use e2e::{binary, component, eventually, TestStack, ADMIN_TOKEN};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::Digest;
use vote_stack::{Part, StackConfig};

const VOTE_REST: &str = "vote-rest@0.1.0";
const CONTEST: &str = "vote-rest-contest@0.1.0";

/// The version a host serves, from its `/readyz`.
async fn serving(host: &StackConfig) -> String {
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", host.host_url())).await.unwrap().json().await.unwrap();
    ready["version"].as_str().unwrap_or_default().to_owned()
}

/// `host_deploy_refusals_total{source,refusal}` of a host.
async fn refusals(host: &StackConfig, source: &str, refusal: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", host.host_url())).await.unwrap().text().await.unwrap();
    let (source, refusal) = (format!(r#"source="{source}""#), format!(r#"refusal="{refusal}""#));
    text.lines()
        .filter(|line| line.starts_with("host_deploy_refusals_total{") && line.contains(&source) && line.contains(&refusal))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Writes one record to the fleet topic with a plain Kafka client, as anyone who can reach the
/// broker could.
async fn write(producer: &FutureProducer, key: &str, payload: &[u8]) {
    producer.send(FutureRecord::to(FLEET_TOPIC).key(key).payload(payload).partition(0), Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("written");
}

/// An event record as a host would publish it.
fn event(signed: &SignedOrder) -> (String, Vec<u8>) {
    let mut json = serde_json::to_value(signed).unwrap();
    json["origin"] = "intruder".into();
    (format!("event/{}/intruder/{}", signed.order.at_unix_ms, signed.order.nonce), serde_json::to_vec(&json).unwrap())
}

/// Waits until every host counted `count` refusals of `refusal` read on the topic.
async fn wait_refused(hosts: &[StackConfig], refusal: &str, count: u64) {
    for host in hosts {
        let counted = eventually(Duration::from_secs(20), || async { refusals(host, "topic", refusal).await >= count }).await;
        assert!(counted.is_ok(), "the host on port {} counted {} {refusal} refusals, not {count}", host.host_port, refusals(host, "topic", refusal).await);
    }
}

/// Two fleet hosts; an intruder with a Kafka client writes the contest component's pieces and
/// deploy events straight to the fleet topic: unsigned, signed by its own key, a replay of a
/// real signed deploy, and a real key's order older than the last applied one. Every host keeps
/// serving what the signed history says and counts each refusal; the admin API refuses an
/// unsigned deploy and a signer's clock 6 minutes behind with 403, and takes a signed one.
#[tokio::test(flavor = "multi_thread")]
async fn records_written_straight_to_the_fleet_topic_are_refused_by_every_host() {
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    let hosts = vec![stack.start_fleet_host("host-a").await, stack.start_fleet_host("host-b").await];
    let producer: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", stack.config.brokers()).create().unwrap();
    let contest = std::fs::read(component("vote_rest_contest")).unwrap();
    let http = reqwest::Client::new();
    // The intruder writes the contest component's pieces as a host would, then events naming
    // their digest.
    let digest = format!("sha256:{}", sha2::Sha256::digest(&contest).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let pieces: Vec<&[u8]> = contest.chunks(512 * 1024).collect(); // host::fleet::CHUNK_BYTES
    for (index, piece) in pieces.iter().enumerate() {
        write(&producer, &format!("chunk/{digest}/{index}/{}", pieces.len()), piece).await;
    }
    let deploy = Action::Deploy { digest, version: CONTEST.into(), size: contest.len() };

    let unsigned = SignedOrder { order: Order::new(deploy.clone()).unwrap(), signature: String::new() };
    let foreign = Order::new(deploy.clone()).unwrap().sign(&SecretKey::generate().unwrap());
    for (refusal, order) in [("unsigned", &unsigned), ("bad_signature", &foreign)] {
        let (key, payload) = event(order);
        write(&producer, &key, &payload).await;
        for host in &hosts {
            let settled = eventually(Duration::from_secs(20), || async { refusals(host, "topic", refusal).await >= 1 || serving(host).await != VOTE_REST }).await;
            assert_eq!(serving(host).await, VOTE_REST, "a deploy record ({refusal}) written straight to the topic changed what the host on port {} serves", host.host_port);
            assert!(settled.is_ok(), "the host on port {} did not count the {refusal} record", host.host_port);
        }
    }

    let admin = signed_admin(&hosts[0]);
    let raw = http.post(format!("{}/components", hosts[0].host_admin_url())).bearer_auth(ADMIN_TOKEN).body(contest.clone()).send().await.unwrap();
    assert_eq!(raw.status().as_u16(), 403, "an unsigned deploy to the admin API: {:?}", raw.text().await);
    let real_key = AdminKey::of(&hosts[0]);
    let mut skewed = Order::new(Action::Rollback).unwrap();
    skewed.at_unix_ms -= 6 * 60 * 1000;
    let skewed = http
        .post(format!("{}/components/rollback", hosts[0].host_admin_url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&skewed.sign(&real_key.0))
        .send()
        .await
        .unwrap();
    assert_eq!(skewed.status().as_u16(), 403, "a rollback signed on a clock 6 minutes behind: {:?}", skewed.text().await);
    assert_eq!(refusals(&hosts[0], "admin", "unsigned").await, 1);
    assert_eq!(refusals(&hosts[0], "admin", "clock_skew").await, 1);

    let (status, deployed) = admin.deploy(contest.clone()).await.unwrap();
    assert_eq!((status.as_u16(), deployed["version"].as_str()), (201, Some(CONTEST)), "{deployed}");
    for host in &hosts {
        eventually(Duration::from_secs(10), || async { serving(host).await == CONTEST }).await.expect("the signed deploy reaches every host");
    }
    let (status, _) = admin.rollback().await.unwrap();
    assert_eq!(status.as_u16(), 200);
    for host in &hosts {
        eventually(Duration::from_secs(10), || async { serving(host).await == VOTE_REST }).await.expect("the signed rollback reaches every host");
    }

    let history: serde_json::Value = http.get(format!("{}/components/history", hosts[1].host_admin_url())).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    let signed_deploy: SignedOrder = serde_json::from_value(history[0].clone()).expect("the history holds the signed deploy");
    let (key, payload) = event(&signed_deploy);
    write(&producer, &format!("{key}/again"), &payload).await;
    wait_refused(&hosts, "replayed", 1).await;
    let mut stale = Order::new(deploy).unwrap();
    stale.at_unix_ms = signed_deploy.order.at_unix_ms - 1;
    let (key, payload) = event(&stale.sign(&real_key.0));
    write(&producer, &key, &payload).await;
    wait_refused(&hosts, "stale", 1).await;
    for host in &hosts {
        assert_eq!(serving(host).await, VOTE_REST, "a replayed or out-of-order deploy changed nothing");
    }
    let history = history.as_array().unwrap();
    assert_eq!(history.iter().map(|e| e["action"].as_str().unwrap()).collect::<Vec<_>>(), ["deploy", "rollback"], "only signed orders are in the history: {history:?}");
}

/// The stack's deploy key (the private half the test signs with).
struct AdminKey(SecretKey);

impl AdminKey {
    fn of(host: &StackConfig) -> Self {
        Self(SecretKey::read(&host.deploy_key_path()).unwrap())
    }
}

/// A fleet host started while Kafka is down keeps trying (past the 10 s the host used to give
/// up after), then replays the topic and serves once Kafka is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_host_started_before_kafka_waits_and_then_serves() {
    let stack = TestStack::start_parts(&[]).await;
    let host = stack.spawn_fleet_host("early-host", &[]);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(stack.supervisor.running("early-host").is_some(), "the host gave up while Kafka was down:\n{}", stack.supervisor.log_tail("early-host", 30));
    assert!(vote_stack::probe::http_ok(&format!("{}/readyz", host.host_url())).await.is_err(), "ready before it could follow the fleet topic");
    stack.restart(Part::Kafka).await;
    stack.wait_host_ready("early-host", &host, Duration::from_secs(60)).await;
    assert_eq!(serving(&host).await, VOTE_REST);
    assert!(stack.supervisor.log_tail("early-host", 200).contains("waiting for Kafka and the fleet topic"), "the wait is logged");
    eprintln!("ready {:?} after start, Kafka started after 15 s", started.elapsed());
}

/// `votes-host` refuses to start, saying why: a fleet host without the deploy public key, one
/// with an empty key file, and any host with an empty admin token file.
#[test]
fn a_host_refuses_to_start_without_its_key_or_with_an_empty_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--fleet-topic", FLEET_TOPIC], "needs the fleet's deploy public key"),
        (&["--fleet-topic", FLEET_TOPIC, "--deploy-public-key-file", empty.as_str()], "is empty"),
        (&["--admin-token-file", empty.as_str()], "admin token"),
    ];
    for (args, expected) in cases {
        let started = Instant::now();
        let output = std::process::Command::new(binary("votes-host"))
            .args(["--component", "/nonexistent/vote_rest.wasm", "--listen", "127.0.0.1:0", "--brokers", "127.0.0.1:1"])
            .args(args)
            .env_remove("VOTES_ADMIN_TOKEN")
            .env_remove("VOTES_ADMIN_TOKEN_FILE")
            .env_remove("VOTES_DEPLOY_PUBLIC_KEY")
            .env_remove("VOTES_DEPLOY_PUBLIC_KEY_FILE")
            .output()
            .expect("running votes-host");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "votes-host {args:?} started");
        assert!(stderr.contains(expected) && !stderr.contains("nonexistent"), "votes-host {args:?} must say {expected:?} before anything else: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(5), "at once, not after trying Kafka");
    }
}
