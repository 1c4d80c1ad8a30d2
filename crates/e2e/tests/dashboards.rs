//! The dashboard contract: the Grafana dashboards of `grafana/` are valid and sound, every panel's
//! query answers with data from the real Prometheus and Redis of a stack that carried votes over
//! both paths (and workload events counted with the shipped specs' keys), the workload
//! dashboards' means and shares equal the results page's, and every metric of `docs/metrics.md`
//! is exported with its documented labels.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::exposition::{self, Sample};
use e2e::grafana::{self, Query};
use e2e::workloads::{self, ballot, weather};
use e2e::{component, invalid_votes, valid_votes, vote_json, TestStack};
use futures::stream::{self, StreamExt};
use vote_stack::Part;

/// Valid votes sent over each path.
const VOTES_PER_PATH: usize = 300;
/// Invalid votes sent over each path.
const INVALID_PER_PATH: usize = 5;
/// How long the queries may wait for Prometheus to scrape the traffic.
const SCRAPE_WAIT: Duration = Duration::from_secs(45);
/// A payload that is no protobuf `VoteEvent` (field 15, wire type 7 does not exist).
const POISON: &[u8] = b"\x7f not a vote event";

/// A private stack with every service and Prometheus, after valid and invalid votes over both
/// producers and one message that is no vote, once both stores hold every valid vote and the
/// consumer dead-lettered the other one.
async fn stack_after_traffic() -> TestStack {
    let stack = TestStack::start().await;
    let mut config = stack.config.clone();
    config.component = component("vote_rest");
    // The services as `make up` runs them: the whole application of the shipped manifest.
    config.manifest = Some(vote_stack::config::repo_root().join("spin.toml"));
    for topic in config.workload_topics().unwrap() {
        vote_kafka::ensure_topic(&config.brokers(), &topic, config.partitions).await.unwrap();
    }
    if let Err(error) = vote_stack::up(&config, &stack.supervisor, &[Part::Consumer, Part::GrpcProducer, Part::Host, Part::Prometheus]).await {
        panic!("the services and Prometheus did not start: {error:#}");
    }

    stack.cast_all(valid_votes(VOTES_PER_PATH)).await;
    let mut client = stack.grpc_client().await;
    for (vote, field) in invalid_votes(INVALID_PER_PATH) {
        let status = client.cast(vote).await.expect_err(field);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
    }

    let http = reqwest::Client::new();
    let statuses: Vec<u16> = stream::iter(valid_votes(VOTES_PER_PATH))
        .map(|vote| {
            let http = http.clone();
            let stack = &stack;
            async move { stack.post_vote(&http, &vote_json(&vote)).await.0 }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 202), "REST votes refused: {statuses:?}");
    for (vote, field) in invalid_votes(INVALID_PER_PATH) {
        let (status, _, body) = stack.post_vote(&http, &vote_json(&vote)).await;
        assert_eq!(status, 400, "{field}: {body}");
    }

    // One message that is no vote event: the consumer dead-letters it.
    let settings = vote_kafka::PublisherSettings::new(stack.config.brokers(), "e2e-dashboards");
    let publisher = vote_kafka::Publisher::new(&settings).expect("a Kafka publisher");
    publisher.publish(vote_core::TOPIC, b"not-a-vote", POISON, &[]).await.expect("the poison message is acknowledged");

    stack.wait_for_counts(2 * VOTES_PER_PATH as u64, Duration::from_secs(60)).await;
    let dlq_url = format!("{}/metrics", stack.config.consumer_http_url());
    let dead_lettered = e2e::eventually(Duration::from_secs(30), || async {
        exposition::scrape(&dlq_url).await.iter().any(|s| s.name == "consumer_dlq_messages_total" && s.value == 1.0)
    });
    assert!(dead_lettered.await.is_ok(), "the poison message was not dead-lettered");
    stack
}

#[test]
fn the_dashboards_are_valid_grafana_json_on_provisioned_data_sources() {
    let sources = grafana::provisioned_datasources();
    let plugins: BTreeSet<&str> = sources.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(plugins, BTreeSet::from(["prometheus", "redis-datasource"]), "{sources:?}");
    for source in &sources {
        assert!(source.url.starts_with("${") && source.url.ends_with('}'), "{} takes its URL from the environment: {}", source.uid, source.url);
    }

    let dashboards = grafana::dashboards();
    let names: Vec<String> = dashboards.iter().map(|d| d.name()).collect();
    assert_eq!(names, ["ballots.json", "producers.json", "votes.json", "weather.json"]);
    let problems: Vec<String> = dashboards.iter().flat_map(|d| d.structural_problems(&sources)).collect();
    assert!(problems.is_empty(), "structural problems:\n{}", problems.join("\n"));
    let uids: BTreeSet<&str> = dashboards.iter().map(|d| d.json["uid"].as_str().unwrap()).collect();
    assert_eq!(uids.len(), dashboards.len(), "dashboard uids are unique");

    match grafana::dashboard_schema() {
        Some(schema) => {
            let problems: Vec<String> = dashboards.iter().flat_map(|d| grafana::schema_problems(&schema, d)).collect();
            assert!(problems.is_empty(), "against {}:\n{}", grafana::SCHEMA_PATH, problems.join("\n"));
            let mut broken = dashboards[0].clone();
            broken.json["panels"][1]["gridPos"]["w"] = 30.into();
            broken.json["refreshEvery"] = "5s".into();
            assert_eq!(grafana::schema_problems(&schema, &broken).len(), 2, "the schema check catches a broken dashboard");
        }
        None => eprintln!(
            "SKIPPED only the JSON schema check: {} is missing (it sits beside the repository in the project's shared/); every other check ran",
            grafana::SCHEMA_PATH
        ),
    }
}

/// Runs `expr` until Prometheus answers it with at least one finite sample, or the deadline.
/// A query Prometheus cannot parse fails at once.
async fn query_until_data(http: &reqwest::Client, prometheus: &str, expr: &str, deadline: Instant) -> Result<usize, String> {
    loop {
        let answer: serde_json::Value = http
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("Prometheus did not answer: {e}"))?
            .json()
            .await
            .map_err(|e| format!("Prometheus answered something else than JSON: {e}"))?;
        if answer["status"] != "success" {
            return Err(format!("Prometheus refused the query: {} {}", answer["errorType"], answer["error"]));
        }
        let results = answer["data"]["result"].as_array().cloned().unwrap_or_default();
        let finite = results.iter().filter(|r| r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(f64::is_finite)).count();
        if finite > 0 {
            return Ok(finite);
        }
        if Instant::now() > deadline {
            return Err(format!("no data after waiting for scrapes: {}", answer["data"]));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a Redis reply holds data: not nil, not an empty list or hash.
fn has_data(value: &redis::Value) -> bool {
    match value {
        redis::Value::Nil => false,
        redis::Value::Array(items) | redis::Value::Set(items) => !items.is_empty(),
        redis::Value::Map(pairs) => !pairs.is_empty(),
        _ => true,
    }
}

/// Keeps one vote a path arriving every 200 ms until aborted, so every rate window the panels
/// ask Prometheus about holds traffic, as on a live dashboard.
async fn trickle(stack: &TestStack) -> tokio::task::JoinHandle<()> {
    let mut client = stack.grpc_client().await;
    let (http, votes_url) = (reqwest::Client::new(), format!("{}/votes", stack.config.host_url()));
    tokio::spawn(async move {
        for vote in valid_votes(20).into_iter().cycle() {
            let _ = client.cast(vote.clone()).await;
            let _ = http.post(&votes_url).json(&vote_json(&vote)).send().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Counts weather reports and ballots into Redis with the shipped specs' keys and writes (as the
/// consumer does), one mean of them negative and ending in .x5, a party name with a `|`.
async fn count_workloads(redis: &mut redis::aio::MultiplexedConnection) {
    let spec = workloads::spec("weather");
    let reports = [
        ("guatemala", "cloudy", -1, 65),
        ("guatemala", "foggy", -2, 70),
        ("guatemala", "cloudy", -2, 90),
        ("guatemala", "rainy", -2, 85),
        ("mixco", "sunny", 20, 60),
        ("mixco", "sunny", 22, 71),
        ("mixco", "rainy", 23, 80),
        ("amatitlan", "sunny", 30, 40),
    ];
    let events = workloads::envelopes(&spec, 0, reports.iter().map(|(m, w, t, h)| weather(m, w, *t, *h)).collect());
    workloads::count(redis, &spec, &events).await;
    let spec = workloads::spec("ballots");
    let ballots = [
        ("EORM 1", "Guatemala", "Guatemala", "presidente", "UNE"),
        ("EORM 1", "Guatemala", "Guatemala", "presidente", "A|B"),
        ("EORM 2", "Mixco", "Guatemala", "presidente", "UNE"),
        ("Escuela Central", "Sololá", "Sololá", "presidente", "Semilla"),
        ("Escuela Central", "Sololá", "Sololá", "diputados", "UNE"),
        ("Instituto Quetzal", "Quetzaltenango", "Quetzaltenango", "presidente", "Semilla"),
        ("Escuela Petén", "Flores", "Petén", "alcalde", "VAMOS"),
    ];
    let events = workloads::envelopes(&spec, 0, ballots.iter().map(|(s, m, d, p, v)| ballot(s, m, d, p, v)).collect());
    workloads::count(redis, &spec, &events).await;
}

#[tokio::test]
async fn every_panel_query_returns_data_from_the_real_prometheus_and_redis() {
    let stack = stack_after_traffic().await;
    let trickle = trickle(&stack).await;
    let sources = grafana::provisioned_datasources();
    let prometheus = stack.config.prometheus_url();
    let http = reqwest::Client::new();
    let mut redis = stack.redis().await;
    count_workloads(&mut redis).await;
    let deadline = Instant::now() + SCRAPE_WAIT;
    let (mut promql, mut redis_queries, mut failures) = (0, 0, Vec::new());
    for dashboard in grafana::dashboards() {
        for panel_query in dashboard.queries(&sources) {
            let place = &panel_query.place;
            match &panel_query.query {
                Query::PromQl(expr) => {
                    promql += 1;
                    if expr.contains("vector(") || expr.contains("absent(") {
                        failures.push(format!("{place}: {expr} would answer without any metric being written"));
                        continue;
                    }
                    let concrete = grafana::concrete_promql(expr);
                    if let Err(why) = query_until_data(&http, &prometheus, &concrete, deadline).await {
                        failures.push(format!("{place}: {concrete}: {why}"));
                    }
                }
                Query::Redis(target) => {
                    redis_queries += 1;
                    let words = match grafana::redis_command(target) {
                        Ok(words) => words,
                        Err(why) => {
                            failures.push(format!("{place}: {why}"));
                            continue;
                        }
                    };
                    let reply: Result<redis::Value, _> = redis::cmd(&words[0]).arg(&words[1..]).query_async(&mut redis).await;
                    match reply {
                        Ok(value) if has_data(&value) => {}
                        Ok(value) => failures.push(format!("{place}: {} returned no data ({value:?}): nobody writes it", words.join(" "))),
                        Err(error) => failures.push(format!("{place}: {} failed: {error}", words.join(" "))),
                    }
                }
            }
        }
    }
    trickle.abort();
    assert!(failures.is_empty(), "{} of {} panel queries returned no data:\n{}", failures.len(), promql + redis_queries, failures.join("\n"));
    assert!(promql >= 15 && redis_queries >= 5, "only {promql} PromQL and {redis_queries} Redis queries were found");

    // The same checks refuse a panel on a metric or a key nobody writes.
    let unwritten = query_until_data(&http, &prometheus, "sum(rate(votes_nobody_writes_total[1m]))", Instant::now()).await;
    assert!(unwritten.is_err(), "{unwritten:?}");
    let words = grafana::redis_command(&serde_json::json!({ "command": "hgetall", "keyName": "{votes}:nobody" })).unwrap();
    let reply: redis::Value = redis::cmd(&words[0]).arg(&words[1..]).query_async(&mut redis).await.unwrap();
    assert!(!has_data(&reply), "{reply:?}");
}

/// The rows a workload dashboard's read-only script returns (one JSON object each).
fn script_rows(place: &str, reply: redis::Value) -> Vec<serde_json::Value> {
    let rows: Vec<String> = redis::from_redis_value(reply).unwrap_or_else(|e| panic!("{place}: not a list of rows: {e}"));
    rows.iter().map(|row| serde_json::from_str(row).unwrap_or_else(|e| panic!("{place}: {row}: {e}"))).collect()
}

/// A view's members as `(values, number, number)` rows, sorted, for comparing.
fn sorted<T: PartialOrd>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rows
}

#[tokio::test]
async fn the_workload_dashboards_read_the_shipped_keys_and_show_the_means_and_shares_of_the_results_page() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let mut redis = stack.redis().await;
    count_workloads(&mut redis).await;
    let sources = grafana::provisioned_datasources();
    let mut views = BTreeMap::new();
    for name in ["weather", "ballots"] {
        let spec = workloads::spec(name);
        let view = vote_store::workload_view::read(&mut redis, &spec).await.unwrap();
        views.insert(format!("{name}.json"), (spec, view));
    }
    let (mut queries, mut scripts) = (0, 0);
    for dashboard in grafana::dashboards().into_iter().filter(|d| views.contains_key(&d.name())) {
        let (spec, view) = &views[&dashboard.name()];
        let keys: Vec<String> = spec.aggregates().into_iter().map(|a| a.key).collect();
        for panel_query in dashboard.queries(&sources) {
            let place = &panel_query.place;
            let Query::Redis(target) = &panel_query.query else { panic!("{place}: the workload dashboards read Redis only") };
            let words = grafana::redis_command(target).unwrap_or_else(|why| panic!("{place}: {why}"));
            assert!(words.iter().any(|word| keys.contains(word)), "{place}: {words:?} reads none of the keys of workload {}", spec.name);
            let reply: redis::Value = redis::cmd(&words[0]).arg(&words[1..]).query_async(&mut redis).await.unwrap_or_else(|e| panic!("{place}: {words:?}: {e}"));
            assert!(has_data(&reply), "{place}: {words:?} returned no data ({reply:?})");
            queries += 1;
            if words[0] != "EVAL_RO" {
                continue;
            }
            scripts += 1;
            let rows = script_rows(place, reply);
            if let Some(mean) = spec.mean.iter().find(|m| spec.samples_key(&m.name) == words[3]) {
                // EVAL_RO <script> 2 <samples> <sums> <by>: {<by>, mean, reports} per member.
                assert_eq!(words[4], spec.sum_key(&mean.name), "{place}");
                let from_dashboard = sorted(rows.iter().map(|r| (r[&words[5]].as_str().unwrap().to_owned(), r["mean"].as_f64().unwrap(), r["reports"].as_u64().unwrap())).collect());
                let page = view.means.iter().find(|m| m.name == mean.name).unwrap();
                let from_page = sorted(page.members.iter().map(|m| (m.values[0].clone(), m.mean, m.samples)).collect());
                assert_eq!(from_dashboard, from_page, "{place}: the dashboard's means are the results page's");
            } else {
                // EVAL_RO <script> 1 <count key> <group field> <value field>: {.., ballots, share}.
                let count = spec.count.iter().find(|c| spec.count_key(&c.name) == words[3]).unwrap_or_else(|| panic!("{place}: {words:?}"));
                let from_dashboard = sorted(
                    rows.iter()
                        .map(|r| (vec![r[&words[4]].as_str().unwrap().to_owned(), r[&words[5]].as_str().unwrap().to_owned()], r["ballots"].as_u64().unwrap(), r["share"].as_f64().unwrap()))
                        .collect(),
                );
                let page = view.counts.iter().find(|c| c.name == count.name).unwrap();
                let from_page = sorted(page.members.iter().map(|m| (m.values.clone(), m.count, m.share.unwrap())).collect());
                assert_eq!(from_dashboard, from_page, "{place}: the dashboard's shares are the results page's");
            }
        }
    }
    assert!(queries >= 13 && scripts == 3, "{queries} Redis queries, {scripts} scripts");
    let guatemala = &views["weather.json"].1.means[0].members[0];
    assert_eq!((guatemala.values[0].as_str(), guatemala.mean), ("guatemala", -1.8), "-7 / 4 rounds away from zero on both sides");
}

/// One row of the metrics table of `docs/metrics.md`.
#[derive(Debug)]
struct Documented {
    name: String,
    kind: String,
    labels: BTreeSet<String>,
    exported_by: Vec<String>,
}

/// The words in backticks of one table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The metrics table and the label values table of `docs/metrics.md`.
fn documented() -> (Vec<Documented>, BTreeMap<String, BTreeSet<String>>) {
    let path = vote_stack::config::repo_root().join("docs/metrics.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut metrics, mut values) = (Vec::new(), BTreeMap::new());
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        match cells.len() {
            5 => metrics.push(Documented {
                name: ticked(cells[0]).remove(0),
                kind: cells[1].to_owned(),
                labels: ticked(cells[2]).into_iter().collect(),
                exported_by: cells[3].split(',').map(|s| s.trim().to_owned()).collect(),
            }),
            2 => {
                values.insert(ticked(cells[0]).remove(0), ticked(cells[1]).into_iter().collect());
            }
            _ => panic!("{}: unexpected table row {line:?}", path.display()),
        }
    }
    (metrics, values)
}

/// The series of one documented metric among `samples`, with the label names each must carry.
fn series_of<'a>(metric: &Documented, samples: &'a [Sample]) -> Vec<(&'a Sample, BTreeSet<String>)> {
    let with_le = || metric.labels.iter().cloned().chain(["le".to_owned()]).collect();
    samples
        .iter()
        .filter_map(|s| match metric.kind.as_str() {
            "histogram" if s.name == format!("{}_bucket", metric.name) => Some((s, with_le())),
            "histogram" if s.name == format!("{}_sum", metric.name) || s.name == format!("{}_count", metric.name) => Some((s, metric.labels.clone())),
            _ if s.name == metric.name => Some((s, metric.labels.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn each_metric_is_exported_with_the_documented_labels_after_traffic_on_both_paths() {
    let stack = stack_after_traffic().await;
    let (metrics, label_values) = documented();
    assert!(metrics.len() >= 20, "docs/metrics.md lists {} metrics", metrics.len());
    let config = &stack.config;
    let mut pages: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for (part, url) in [
        (Part::Host, config.host_url()),
        (Part::GrpcProducer, config.grpc_http_url()),
        (Part::Consumer, config.consumer_http_url()),
    ] {
        pages.insert(part.name(), exposition::scrape(&format!("{url}/metrics")).await);
    }

    let mut problems = Vec::new();
    for metric in &metrics {
        for exporter in &metric.exported_by {
            let Some(samples) = pages.get(exporter.as_str()) else {
                problems.push(format!("{}: exported by unknown service {exporter:?}", metric.name));
                continue;
            };
            let series = series_of(metric, samples);
            if series.is_empty() {
                problems.push(format!("{}: {exporter} does not export it", metric.name));
            }
            for (sample, expected) in series {
                let labels: BTreeSet<String> = sample.labels.keys().cloned().collect();
                if labels != expected {
                    problems.push(format!("{}: {exporter} exports labels {labels:?}, documented {expected:?}", sample.name));
                }
                for (label, value) in &sample.labels {
                    if label_values.get(label).is_some_and(|allowed| !allowed.contains(value)) {
                        problems.push(format!("{}: {exporter} exports {label}={value:?}, not a documented value", sample.name));
                    }
                }
            }
        }
    }
    for (exporter, samples) in &pages {
        for sample in samples {
            if !metrics.iter().any(|m| m.exported_by.iter().any(|e| e == exporter) && !series_of(m, std::slice::from_ref(sample)).is_empty()) {
                problems.push(format!("{}: {exporter} exports it but docs/metrics.md does not list it there", sample.name));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "metrics against docs/metrics.md:\n{}", problems.join("\n"));

    // The traffic shows on both paths, each producer under its own path label.
    let value = |exporter: &str, name: &str, labels: &[(&str, &str)]| -> f64 {
        pages[exporter]
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .sum()
    };
    for (exporter, path) in [("wasm-host", "wasm"), ("grpc-producer", "grpc")] {
        let accepted = value(exporter, "votes_received_total", &[("path", path), ("outcome", "accepted")]);
        let invalid = value(exporter, "votes_received_total", &[("path", path), ("outcome", "invalid")]);
        let ingested = value(exporter, "vote_ingest_seconds_count", &[("path", path)]);
        assert_eq!((accepted, invalid, ingested), (VOTES_PER_PATH as f64, INVALID_PER_PATH as f64, VOTES_PER_PATH as f64), "{exporter} path {path}");
        let other_path = pages[exporter].iter().find(|s| s.labels.get("path").is_some_and(|p| p != path));
        assert!(other_path.is_none(), "{exporter} exports another path: {other_path:?}");
    }
    assert!(value("consumer", "vote_visible_seconds_count", &[]) >= (2 * VOTES_PER_PATH) as f64);
    assert_eq!(value("consumer", "consumer_dlq_messages_total", &[("reason", "undecodable")]), 1.0);
    assert!(pages["consumer"].iter().any(|s| s.name == "consumer_lag_messages" && s.labels.contains_key("partition")), "no lag per partition");
    for store in ["redis", "mongodb"] {
        assert!(value("consumer", "consumer_store_write_seconds_count", &[("store", store)]) > 0.0, "no {store} write timed");
    }
}
