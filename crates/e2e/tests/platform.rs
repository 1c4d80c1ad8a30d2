//! The host as a platform: several components from one manifest, each confined to its own topics,
//! memory cap, request timeout and share of the requests in flight; routes changed by a manifest
//! reload on a running host; deploys and rollbacks of one component leaving the others alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{component, TestStack};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A manifest in `dir` routing to the built components by file name (the host is given their
/// directory), with `body` appended.
fn write_manifest(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("spin.toml");
    let text = format!("spin_manifest_version = 2\n[application]\nname = \"platform-test\"\n{body}");
    std::fs::write(&path, text).unwrap();
    path
}

/// Votes on `/...`, granted only the votes topic; misbehave on its own routes with a small share,
/// memory cap and timeout, granted only `weather`.
const TWO_COMPONENTS: &str = r#"
[[trigger.http]]
route = "/..."
component = "vote-rest"
[[trigger.http]]
route = "/trap"
component = "misbehave"
[[trigger.http]]
route = "/alloc"
component = "misbehave"
[[trigger.http]]
route = "/loop"
component = "misbehave"
[[trigger.http]]
route = "/publish"
component = "misbehave"

[component.vote-rest]
source = "vote_rest.wasm"
[component.vote-rest.tool.votes]
topics = ["votes"]

[component.misbehave]
source = "misbehave.wasm"
[component.misbehave.tool.votes]
topics = ["weather"]
memory_mib = 8
request_timeout_ms = 2500
max_in_flight = 4
max_queued = 4
"#;

/// The sum of the high watermarks of `topic`'s partitions: how many records it ever held.
fn records_on(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = vote_kafka::consumer_config(brokers, "platform-test-watermarks").create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap().1).sum()
}

/// Starts a stack with Kafka (votes and weather topics) and a host on `manifest`.
async fn start(manifest_body: &str) -> (TestStack, tempfile::TempDir, PathBuf) {
    let stack = TestStack::start_parts(&[vote_stack::Part::Kafka]).await;
    vote_kafka::ensure_topic(&stack.config.brokers(), "weather", 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), manifest_body);
    let components = component("vote_rest").parent().unwrap().display().to_string();
    stack
        .start_app_host(&manifest, &["--component-dir", &components, "--request-timeout-ms", "3000", "--publish-timeout-ms", "1000", "--memory-mib", "64"])
        .await;
    (stack, dir, manifest)
}

fn vote() -> serde_json::Value {
    serde_json::json!({ "name": "Bohemia Suburbana", "album": "Maria", "year": 1995, "rank": 1 })
}

/// A publish to a topic the component was not granted is `refused` and nothing reaches the
/// broker; the granted topic works; each refusal is counted for its component.
#[tokio::test]
async fn a_component_publishes_only_to_the_topics_it_was_granted() {
    let (stack, _dir, _) = start(TWO_COMPONENTS).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();
    let brokers = stack.config.brokers();
    let votes_before = records_on(&brokers, vote_core::TOPIC);
    for topic in ["votes", "votes.dlq", "elsewhere"] {
        let response = http.get(format!("{host}/publish?topic={topic}")).send().await.unwrap();
        let status = response.status().as_u16();
        let reply: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 403, "{topic}: {reply}");
        assert_eq!(reply["field"], "topic", "{reply}");
        assert!(reply["error"].as_str().unwrap().contains("may only publish to [\"weather\"]"), "{reply}");
    }
    assert_eq!(records_on(&brokers, vote_core::TOPIC), votes_before, "a refused publish reached the broker");
    let response = http.get(format!("{host}/publish?topic=weather")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{}", response.text().await.unwrap());
    assert_eq!(records_on(&brokers, "weather"), 1);
    // The vote component still publishes votes.
    let (status, version, reply) = stack.post_vote(&http, &vote()).await;
    assert_eq!((status, version.as_str()), (202, "vote-rest@0.1.0"), "{reply}");
    let metrics = reqwest::get(format!("{host}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("host_publish_refused_total{component=\"misbehave\"} 3"), "{metrics}");
    assert!(metrics.contains("host_publish_refused_total{component=\"vote-rest\"} 0"), "{metrics}");
}

/// A component that traps, exhausts its 8 MiB or loops past its 2.5 s on every request fails only
/// its own routes; past its share of 4 places and 4 queued it gets fast 503s. Votes keep being
/// accepted meanwhile, every one of them.
#[tokio::test]
async fn a_misbehaving_component_fails_only_its_own_routes() {
    let (stack, _dir, _) = start(TWO_COMPONENTS).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();

    // Votes alone first, for the latency they see without a neighbour.
    let alone = cast_votes(&http, &host, 200, 8).await;

    let abuse = {
        let (http, host) = (http.clone(), host.clone());
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<(String, u16), u32>::new();
            let deadline = Instant::now() + Duration::from_secs(6);
            let mut rounds = Vec::new();
            for worker in 0..24 {
                let (http, host) = (http.clone(), host.clone());
                rounds.push(tokio::spawn(async move {
                    let path = ["/trap", "/alloc", "/loop"][worker % 3];
                    let mut seen = Vec::new();
                    while Instant::now() < deadline {
                        let status = http.get(format!("{host}{path}")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                        seen.push((path.to_owned(), status));
                    }
                    seen
                }));
            }
            for round in rounds {
                for seen in round.await.unwrap() {
                    *statuses.entry(seen).or_default() += 1;
                }
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let beside = cast_votes(&http, &host, 200, 8).await;
    let statuses = abuse.await.unwrap();
    eprintln!("misbehave answers: {statuses:?}");
    eprintln!("votes alone: p50 {:?} max {:?}; beside a saturated neighbour: p50 {:?} max {:?}", alone.0, alone.1, beside.0, beside.1);
    for ((path, status), count) in &statuses {
        assert!(matches!(status, 500 | 503), "{path} answered {status} ({count} times)");
    }
    assert!(statuses.keys().any(|(_, s)| *s == 503), "past its share and queue the component is shed: {statuses:?}");
    assert!(statuses.keys().any(|(p, s)| p == "/alloc" && *s == 500), "its memory cap stops it: {statuses:?}");
    let metrics = reqwest::get(format!("{host}/metrics")).await.unwrap().text().await.unwrap();
    let shed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("host_component_shed_total{component=\"misbehave\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(shed > 0.0, "{metrics}");
    assert!(metrics.contains("host_component_shed_total{component=\"vote-rest\"} 0"), "{metrics}");
}

/// Casts `count` votes over `concurrency` connections; every one must be accepted. Returns the
/// median and the largest latency.
async fn cast_votes(http: &reqwest::Client, host: &str, count: usize, concurrency: usize) -> (Duration, Duration) {
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, host) = (http.clone(), host.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for _ in 0..count / concurrency {
                let started = Instant::now();
                let response = http.post(format!("{host}/votes")).json(&vote()).send().await.expect("POST /votes");
                let status = response.status().as_u16();
                assert_eq!(status, 202, "a vote failed beside a misbehaving component: {}", response.text().await.unwrap_or_default());
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    all.sort();
    (all[all.len() / 2], *all.last().unwrap())
}

/// A new manifest adds a route and removes another on the running host: after the reload the old
/// path is 404, the new one is served by its component, and the component that stayed keeps the
/// version it was deployed to. A broken manifest is refused and changes nothing.
#[tokio::test]
async fn a_manifest_reload_adds_and_removes_routes_without_a_restart() {
    let first = r#"
[[trigger.http]]
route = "/..."
component = "vote-rest"
[[trigger.http]]
route = "/hello/..."
component = "hello"
[component.vote-rest]
source = "vote_rest.wasm"
[component.vote-rest.tool.votes]
topics = ["votes"]
[component.hello]
source = "hello.wasm"
"#;
    let (stack, dir, manifest) = start(first).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();
    let served_by = |path: &'static str| {
        let (http, host) = (http.clone(), host.clone());
        async move {
            let response = http.get(format!("{host}{path}")).send().await.unwrap();
            let version = response.headers().get("x-component-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            (response.status().as_u16(), version)
        }
    };
    let (status, version) = served_by("/hello/there").await;
    assert_eq!(status, 200);
    assert!(!version.is_empty() && !version.starts_with("vote-rest"), "served by the hello component: {version}");

    // Deploy another build of the vote component, then reload a manifest that moves the routes.
    let contest = std::fs::read(component("vote_rest_contest")).unwrap();
    let deployed = stack.admin(&http, reqwest::Method::POST, "/components?component=vote-rest").body(contest).send().await.unwrap();
    assert_eq!(deployed.status().as_u16(), 201, "{}", deployed.text().await.unwrap());
    let second = first.replace("route = \"/hello/...\"\ncomponent = \"hello\"", "route = \"/misc/...\"\ncomponent = \"misbehave\"").replace(
        "[component.hello]\nsource = \"hello.wasm\"",
        "[component.misbehave]\nsource = \"misbehave.wasm\"",
    );
    write_manifest(dir.path(), &second);
    let reloaded = stack.admin(&http, reqwest::Method::POST, "/app/reload").send().await.unwrap();
    assert_eq!(reloaded.status().as_u16(), 200);
    let reloaded: serde_json::Value = reloaded.json().await.unwrap();
    assert_eq!((reloaded["added"].clone(), reloaded["removed"].clone()), (serde_json::json!(["misbehave"]), serde_json::json!(["hello"])), "{reloaded}");

    // The removed route's paths fall to the catch-all: the vote component, still on the version
    // deployed before the reload, which serves no such path.
    let (status, version) = served_by("/hello/there").await;
    assert_eq!(status, 404);
    assert!(version.starts_with("vote-rest-contest"), "{version}");
    let (status, version) = served_by("/misc/fine").await;
    assert_eq!((status, version.as_str()), (200, "misbehave@0.1.0"));

    // A manifest adding a component whose file is missing is refused as a whole: the route it
    // would also move stays where it was.
    let broken = format!("{}\n[component.ghost]\nsource = \"missing.wasm\"\n", second.replace("route = \"/misc/...\"\ncomponent = \"misbehave\"", "route = \"/misc/...\"\ncomponent = \"ghost\""));
    write_manifest(dir.path(), &broken);
    let refused = stack.admin(&http, reqwest::Method::POST, "/app/reload").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let (status, version) = served_by("/misc/fine").await;
    assert_eq!((status, version.as_str()), (200, "misbehave@0.1.0"), "the refused manifest changed nothing");
    assert!(manifest.is_file());

    // A manifest that moves a topic to RabbitMQ is refused by a reload: the host's publishers were
    // made at start-up, so moving a topic between brokers takes a restart.
    let moved = format!(
        "{second}\n[application.tool.votes.workloads.weather]\ntitle = \"Weather\"\ntopic = \"weather\"\nbroker = \"rabbitmq\"\ncount = [{{ name = \"town\", title = \"Towns\", by = [\"municipality\"] }}]\n"
    );
    write_manifest(dir.path(), &moved);
    let refused = stack.admin(&http, reqwest::Method::POST, "/app/reload").send().await.unwrap();
    let status = refused.status().as_u16();
    let body = refused.text().await.unwrap();
    assert!(status == 422 && body.contains("rabbitmq") && body.contains("restart"), "{status}: {body}");
    let (status, version) = served_by("/misc/fine").await;
    assert_eq!((status, version.as_str()), (200, "misbehave@0.1.0"), "the refused manifest changed nothing");
}

/// Instance reuse is opt-in per component: misbehave (`instance_reuse = 4`) serves requests one
/// after another from the same instance, at most 4 each, and an instance whose request trapped or
/// ran out of time is dropped, never serving the next request; vote-rest, which did not ask,
/// gets a fresh instance for every request.
#[tokio::test]
async fn a_reused_instance_serves_in_turn_and_one_that_trapped_never_serves_again() {
    let manifest = TWO_COMPONENTS.replace("route = \"/publish\"", "route = \"/count\"").replace("max_queued = 4\n", "max_queued = 4\ninstance_reuse = 4\n");
    let (stack, _dir, _) = start(&manifest).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();
    let port = stack.config.host_port;
    let metric = async |name: &str| e2e::metric(port, name).await as u64;
    // The client has its answer a moment before the instance is back among the idle ones: wait
    // for it, so the next request finds it.
    let idle = async |expected: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = metric("host_instances_idle{component=\"misbehave\"}").await;
            if now == expected {
                return;
            }
            assert!(Instant::now() < deadline, "{now} idle misbehave instances, expected {expected}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let count = async || -> u64 {
        let response = http.get(format!("{host}/count")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let reply: serde_json::Value = response.json().await.unwrap();
        reply["served_by_this_instance"].as_u64().expect("misbehave says how many requests its instance served")
    };
    // One instance, reused for its 4 requests (then dropped), then a fresh one.
    let mut served = Vec::new();
    for expected_idle in [1, 1, 1, 0, 1] {
        served.push(count().await);
        idle(expected_idle).await;
    }
    assert_eq!(served, [1, 2, 3, 4, 1], "requests served by each instance in turn");
    assert_eq!(count().await, 2);
    idle(1).await;
    // The idle instance runs /trap and traps: it is dropped, and the next request starts afresh.
    let trapped = http.get(format!("{host}/trap")).send().await.unwrap();
    assert_eq!(trapped.status().as_u16(), 500, "{}", trapped.text().await.unwrap());
    idle(0).await;
    assert_eq!(count().await, 1, "a fresh instance after the trap");
    idle(1).await;
    // So is one stopped at its deadline (2.5 s here).
    let looped = http.get(format!("{host}/loop")).send().await.unwrap();
    assert_eq!(looped.status().as_u16(), 500, "{}", looped.text().await.unwrap());
    idle(0).await;
    assert_eq!(count().await, 1, "a fresh instance after the deadline");

    for _ in 0..3 {
        let (status, _, reply) = stack.post_vote(&http, &vote()).await;
        assert_eq!(status, 202, "{reply}");
    }
    let instances = async |component: &str, how: &str| metric(&format!("host_instances_total{{component=\"{component}\",how=\"{how}\"}}")).await;
    // Fresh: the first instance, the one after its 4th request, after the trap, after the deadline.
    assert_eq!((instances("misbehave", "fresh").await, instances("misbehave", "reused").await), (4, 6));
    assert_eq!((instances("vote-rest", "fresh").await, instances("vote-rest", "reused").await), (3, 0), "vote-rest did not ask for reuse");
    assert_eq!(metric("host_instances_idle{component=\"vote-rest\"}").await, 0);
}
