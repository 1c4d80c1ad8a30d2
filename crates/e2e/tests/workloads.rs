//! The manifest's workloads end to end over real servers: weather reports and ballots published
//! as JSON envelopes to their topics, counted by the consumer (`--manifest spin.toml`) into each
//! workload's aggregates exactly once across a crash before the commit and retries under one key,
//! logged once in their own collections, the bad ones dead-lettered with their reasons; band
//! votes keep counting beside them.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{eventually, metric, valid_votes, TestStack};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use vote_kafka::{Publisher, PublisherSettings};
use vote_platform::event::{Data, Envelope, Value};
use vote_platform::workload::join_member;
use vote_platform::{Manifest, WorkloadSpec};

const MUNICIPALITIES: [&str; 4] = ["mixco", "guatemala", "amatitlan", "chinautla"];
const CONDITIONS: [&str; 4] = ["sunny", "cloudy", "rainy", "foggy"];
const DEPARTMENTS: [&str; 5] = ["Guatemala", "Sololá", "Petén", "Quetzaltenango", "Escuintla"];
const BALLOTS: [&str; 4] = ["presidente", "diputados", "alcalde", "parlacen"];
// A party with `|` in its name: members of several fields escape it.
const PARTIES: [&str; 6] = ["VAMOS", "UNE", "Semilla", "Valor|Unionista", "Cabal", "VIVA"];

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

/// Weather report `i`: municipality, condition, temperature (some below zero) and humidity.
fn report(i: usize) -> Data {
    Data::from([
        ("municipality".into(), text(MUNICIPALITIES[i % 4])),
        ("weather".into(), text(CONDITIONS[(i / 4) % 4])),
        ("temperature".into(), Value::Integer((i % 23) as i64 - 5)),
        ("humidity".into(), Value::Integer(30 + (i % 60) as i64)),
    ])
}

/// Ballot `j`.
fn ballot(j: usize) -> Data {
    Data::from([
        ("departamento".into(), text(DEPARTMENTS[j % 5])),
        ("municipio".into(), Value::Text(format!("municipio {}", j % 7))),
        ("sede".into(), Value::Text(format!("Escuela {}", j % 9))),
        ("papeleta".into(), text(BALLOTS[j % 4])),
        ("partido".into(), text(PARTIES[j % 6])),
    ])
}

fn field<'a>(data: &'a Data, name: &str) -> &'a str {
    match &data[name] {
        Value::Text(text) => text,
        other => panic!("{name} is {other:?}"),
    }
}

fn integer(data: &Data, name: &str) -> i64 {
    match &data[name] {
        Value::Integer(n) => *n,
        other => panic!("{name} is {other:?}"),
    }
}

/// `member -> count` of the values `key_of` gives for each of `data`.
fn tally<'a>(data: impl Iterator<Item = &'a Data>, key_of: impl Fn(&Data) -> Option<String>) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for data in data {
        if let Some(key) = key_of(data) {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// A sorted set of sums (which may be negative), member -> score.
async fn scores(stack: &TestStack, key: &str) -> HashMap<String, i64> {
    let members: Vec<(String, f64)> = redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut stack.redis().await).await.unwrap();
    members.into_iter().map(|(member, score)| (member, score as i64)).collect()
}

async fn get(stack: &TestStack, key: &str) -> u64 {
    let value: Option<u64> = redis::cmd("GET").arg(key).query_async(&mut stack.redis().await).await.unwrap();
    value.unwrap_or(0)
}

async fn collection(stack: &TestStack, spec: &WorkloadSpec) -> mongodb::Collection<Document> {
    let client = mongodb::Client::with_uri_str(stack.config.mongo_url()).await.unwrap();
    client.database("votes").collection(&spec.collection())
}

async fn logged(stack: &TestStack, spec: &WorkloadSpec) -> u64 {
    collection(stack, spec).await.count_documents(doc! {}).await.unwrap()
}

/// Publishes each payload to `topic` under `key` (the event id, as a component does).
async fn publish(publisher: &Publisher, topic: &str, records: &[(String, Vec<u8>)]) {
    for (key, payload) in records {
        publisher.publish(topic, key.as_bytes(), payload, &[]).await.unwrap_or_else(|e| panic!("publishing to {topic}: {e}"));
    }
}

fn record(envelope: &Envelope) -> (String, Vec<u8>) {
    (envelope.id.clone(), envelope.encode())
}

#[tokio::test]
async fn workload_events_are_counted_and_logged_exactly_once_beside_the_votes() {
    let stack = TestStack::start().await;
    let brokers = stack.config.brokers();
    for topic in ["weather", "ballots"] {
        vote_kafka::ensure_topic(&brokers, topic, stack.config.partitions).await.unwrap();
    }
    let manifest_path = vote_stack::config::repo_root().join("spin.toml");
    let manifest = Manifest::load(&manifest_path).unwrap();
    let (weather, ballots) = (manifest.workloads["weather"].clone(), manifest.workloads["ballots"].clone());
    let publisher = Publisher::new(&PublisherSettings::new(&brokers, "e2e-workloads")).unwrap();
    let manifest_arg = manifest_path.display().to_string();
    let session = ["--manifest", &manifest_arg, "--session-timeout-ms", "45000"];

    // 150 reports counted and logged by a consumer that dies before it commits them.
    let reports: Vec<Envelope> = (0..250).map(|i| Envelope::new("weather", "weather-rest@0.1.0", vote_core::now_ms(), None, report(i))).collect();
    publish(&publisher, "weather", &reports[..150].iter().map(record).collect::<Vec<_>>()).await;
    let doomed = ["--batch-max", "5000", "--batch-linger-ms", "3000", "--pause-before-commit-ms", "600000"];
    stack.start_consumer("doomed", &[&session[..], &doomed].concat()).await;
    eventually(Duration::from_secs(60), || async { get(&stack, &weather.total_key()).await >= 150 && logged(&stack, &weather).await >= 150 })
        .await
        .expect("the first consumer counted and logged the first reports");
    stack.supervisor.kill("doomed").unwrap();

    // The survivor reads them again; meanwhile the rest arrives, with retries under one key,
    // ballots, votes and records that cannot be counted.
    let port = stack.start_consumer("survivor", &session).await;
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, envelope) in reports.iter().enumerate().skip(150) {
        let envelope = if i % 5 == 0 {
            let keyed = Envelope::new("weather", "weather-rest@0.1.0", vote_core::now_ms(), Some(&format!("retry-{i}")), envelope.data.clone());
            // A retry: the same event (same key and fields) accepted again, at another offset.
            let again = Envelope { received_at_ms: keyed.received_at_ms + 5, ..keyed.clone() };
            records.push(record(&again));
            keyed
        } else {
            envelope.clone()
        };
        records.push(record(&envelope));
    }
    let mut wrong_workload = Envelope::new("ballots", "ballot-rest@0.1.0", vote_core::now_ms(), None, ballot(0));
    wrong_workload.producer = "intruder".into();
    let mut missing = Envelope::new("weather", "weather-rest@0.1.0", vote_core::now_ms(), None, report(1));
    missing.data.remove("temperature");
    let mut future = Envelope::new("weather", "weather-rest@0.1.0", vote_core::now_ms(), None, report(2));
    future.schema = 2;
    records.extend([("garbage".to_owned(), b"not an envelope".to_vec()), record(&wrong_workload), record(&missing), record(&future)]);
    publish(&publisher, "weather", &records).await;

    let ballot_events: Vec<Envelope> = (0..120)
        .map(|j| Envelope::new("ballots", "ballot-rest@0.1.0", vote_core::now_ms(), (j % 24 == 0).then(|| format!("ballot-{j}")).as_deref(), ballot(j)))
        .collect();
    let mut ballot_records: Vec<(String, Vec<u8>)> = ballot_events.iter().map(record).collect();
    ballot_records.extend(ballot_events.iter().filter(|e| e.is_keyed()).map(record));
    let mut no_party = Envelope::new("ballots", "ballot-rest@0.1.0", vote_core::now_ms(), None, ballot(3));
    no_party.data.remove("partido");
    ballot_records.push(record(&no_party));
    publish(&publisher, "ballots", &ballot_records).await;
    stack.start_producer(&[]).await;
    stack.cast_all(valid_votes(30)).await;

    let group = vote_kafka::CONSUMER_GROUP;
    let settled = eventually(Duration::from_secs(120), || async {
        let mut caught_up = get(&stack, &weather.total_key()).await >= 250 && get(&stack, &ballots.total_key()).await >= 120 && stack.total().await >= 30;
        for topic in [vote_core::TOPIC, "weather", "ballots"] {
            caught_up = caught_up && stack.group_lag_on(group, topic).await == Some(0);
        }
        caught_up
    })
    .await;
    if settled.is_err() {
        panic!(
            "after 120 s: weather {}, ballots {}, votes {}:\n{}",
            get(&stack, &weather.total_key()).await,
            get(&stack, &ballots.total_key()).await,
            stack.total().await,
            stack.supervisor.log_tail("survivor", 30)
        );
    }

    // Weather: every report once, by municipality, condition and both; the means exact.
    let report_data: Vec<&Data> = reports.iter().map(|e| &e.data).collect();
    assert_eq!(get(&stack, &weather.total_key()).await, 250);
    let by_municipality = tally(report_data.iter().copied(), |d| Some(field(d, "municipality").to_owned()));
    assert_eq!(stack.counts(&weather.count_key("municipality")).await, by_municipality);
    assert_eq!(stack.counts(&weather.count_key("weather")).await, tally(report_data.iter().copied(), |d| Some(field(d, "weather").to_owned())));
    let pairs = tally(report_data.iter().copied(), |d| Some(join_member(&[field(d, "municipality"), field(d, "weather")])));
    assert_eq!(stack.counts(&weather.count_key("municipality_weather")).await, pairs);
    for mean in ["temperature", "humidity"] {
        let mut sums: HashMap<String, i64> = HashMap::new();
        for data in &report_data {
            *sums.entry(field(data, "municipality").to_owned()).or_insert(0) += integer(data, mean);
        }
        assert_eq!(scores(&stack, &weather.sum_key(mean)).await, sums, "sum of {mean}");
        assert_eq!(stack.counts(&weather.samples_key(mean)).await, by_municipality, "samples of {mean}");
    }
    let recent: Vec<String> = redis::cmd("LRANGE").arg(weather.recent_key()).arg(0).arg(-1).query_async(&mut stack.redis().await).await.unwrap();
    assert_eq!(recent.len(), weather.recent as usize);
    assert!(recent.iter().all(|entry| Envelope::decode(entry.as_bytes()).is_ok_and(|e| e.workload == "weather")), "{recent:?}");

    // Ballots: the filter, the multi-field members with `|` escaped, the keyed retries once.
    let ballot_data: Vec<&Data> = ballot_events.iter().map(|e| &e.data).collect();
    assert_eq!(get(&stack, &ballots.total_key()).await, 120);
    let presidential = tally(ballot_data.iter().copied(), |d| (field(d, "papeleta") == "presidente").then(|| field(d, "departamento").to_owned()));
    assert_eq!(stack.counts(&ballots.count_key("presidential_by_department")).await, presidential);
    let party = tally(ballot_data.iter().copied(), |d| Some(join_member(&[field(d, "departamento"), field(d, "partido")])));
    assert_eq!(stack.counts(&ballots.count_key("party_by_department")).await, party);
    assert!(party.keys().any(|member| member.contains("Valor\\|Unionista")));
    assert_eq!(stack.counts(&ballots.count_key("polling_place")).await, tally(ballot_data.iter().copied(), |d| Some(field(d, "sede").to_owned())));
    assert_eq!(stack.counts(&ballots.count_key("papeleta")).await.values().sum::<u64>(), 120);
    assert_eq!(stack.total().await, 30, "the band votes count beside the workloads");

    // One log per event, in the workload's own collection, with its fields and origin.
    assert_eq!(logged(&stack, &weather).await, 250);
    assert_eq!(logged(&stack, &ballots).await, 120);
    assert_eq!(stack.logged().await, 30);
    let keyed = ballot_events.iter().find(|e| e.is_keyed()).unwrap();
    let document = collection(&stack, &ballots).await.find_one(doc! { "_id": &keyed.id }).await.unwrap().expect("the keyed ballot's log");
    assert_eq!(document.get_str("workload").unwrap(), "ballots");
    assert_eq!(document.get_document("data").unwrap().get_str("departamento").unwrap(), field(&keyed.data, "departamento"));
    assert_eq!(document.get_str("topic").unwrap(), "ballots");
    assert!(document.get_datetime("received_at").is_ok() && document.get_datetime("consumed_at").is_ok());
    // Indexes by the fields they cover (the server may name them, and keep their directions, its own way).
    let indexes: Vec<Vec<String>> =
        collection(&stack, &weather).await.list_indexes().await.unwrap().map_ok(|index| index.keys.keys().cloned().collect()).try_collect().await.unwrap();
    for fields in [&["received_at"][..], &["topic", "partition", "offset"], &["data.municipality", "received_at"], &["data.weather", "received_at"]] {
        assert!(indexes.iter().any(|index| index == fields), "no index on {fields:?} in {indexes:?}");
    }
    let mixco = collection(&stack, &weather).await.count_documents(doc! { "data.municipality": "mixco" }).await.unwrap();
    assert_eq!(mixco, by_municipality["mixco"]);

    // The records that cannot be counted, each with its reason.
    let dead = stack.dead_letters(5);
    let mut found: Vec<(String, String, String)> = dead
        .iter()
        .map(|envelope| (envelope["topic"].as_str().unwrap().to_owned(), envelope["reason"].as_str().unwrap().to_owned(), envelope["error"].as_str().unwrap().to_owned()))
        .collect();
    found.sort();
    assert_eq!(found.len(), 5, "{found:?}");
    let expect = |(topic, reason, error): &(String, String, String), t: &str, r: &str, says: &str| {
        assert!(topic == t && reason == r && error.contains(says), "expected {t} {r} {says:?}, got {topic} {reason} {error:?}");
    };
    expect(&found[0], "ballots", "invalid_event", "\"partido\"");
    let weather_dead: Vec<_> = found[1..].to_vec();
    assert!(weather_dead.iter().all(|(topic, _, _)| topic == "weather"), "{weather_dead:?}");
    let reason_of = |says: &str| weather_dead.iter().find(|(_, _, error)| error.contains(says)).unwrap_or_else(|| panic!("no dead letter saying {says:?}: {weather_dead:?}")).1.clone();
    assert_eq!(reason_of("\"temperature\""), "invalid_event");
    assert_eq!(reason_of("workload \"ballots\""), "invalid_event");
    assert_eq!(reason_of("schema 2"), "schema_version");
    assert_eq!(weather_dead.iter().filter(|(_, reason, _)| reason == "undecodable").count(), 1);

    // The survivor read the first reports again and recognised them, and each retry once.
    let retries = (150..250).filter(|i| i % 5 == 0).count() + ballot_events.iter().filter(|e| e.is_keyed()).count();
    assert_eq!(metric(port, "consumer_workload_events_duplicate_total").await, (150 + retries) as f64);
    assert_eq!(metric(port, "consumer_workload_events_counted_total").await, 220.0);
    assert_eq!(metric(port, "consumer_workload_events_invalid_total").await, 5.0);
    assert_eq!(metric(port, "consumer_workload_logs_inserted_total").await, 220.0);
    assert_eq!(metric(port, "consumer_votes_counted_total").await, 30.0);
    let page = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(page.contains("consumer_workload_events_counted_total{workload=\"ballots\"} 120"), "{page}");
}

/// Without `--manifest` the consumer reads the votes topic only: a workload's topic is left alone.
#[tokio::test]
async fn without_a_manifest_the_workload_topics_are_not_read() {
    let stack = TestStack::start().await;
    vote_kafka::ensure_topic(&stack.config.brokers(), "weather", stack.config.partitions).await.unwrap();
    let publisher = Publisher::new(&PublisherSettings::new(stack.config.brokers(), "e2e-workloads")).unwrap();
    let envelope = Envelope::new("weather", "weather-rest@0.1.0", vote_core::now_ms(), None, report(0));
    publish(&publisher, "weather", &[record(&envelope)]).await;
    let port = stack.start_consumer("consumer", &[]).await;
    stack.start_producer(&[]).await;
    stack.cast_all(valid_votes(10)).await;
    stack.wait_for_counts(10, Duration::from_secs(60)).await;
    assert_eq!(metric(port, "consumer_messages_total").await, 10.0);
    assert_eq!(stack.group_lag_on(vote_kafka::CONSUMER_GROUP, "weather").await, Some(1), "nothing of the weather topic was committed");
    let weather = Manifest::load(&vote_stack::config::repo_root().join("spin.toml")).unwrap().workloads["weather"].clone();
    assert_eq!(get(&stack, &weather.total_key()).await, 0);
}
