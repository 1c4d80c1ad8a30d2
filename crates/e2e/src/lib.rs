//! The end-to-end test harness: a private stack (Tansu, Redis, NX-27017) on free ports in a
//! temporary directory, the project's real binaries started as processes, and helpers to read
//! what landed in Redis and MongoDB. Everything it starts dies with it.
//!
//! - [`browser`]: the browser tests' scripts, driven line by line.
//! - [`grafana`]: the dashboards and data sources of `grafana/`, and their checks.
//! - [`exposition`]: the Prometheus text format of `/metrics` pages.
//! - [`fleet`]: hosts that follow the fleet topic, and signed deploys to them.
//! - [`workloads`]: the manifest's workloads, and their events written straight into the stores.

pub mod browser;
pub mod exposition;
pub mod fleet;
pub mod grafana;
pub mod workloads;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vote_core::proto::Vote;
use vote_grpc::VoteServiceClient;
use vote_stack::process::Launch;
use vote_stack::{Part, StackConfig, Supervisor};

pub mod spin;

/// A port nothing listens on right now, never the same one twice in this process. Taken below
/// Linux's ephemeral range (32768-60999): a port the kernel hands out for bind(0) or for an
/// outgoing connection (a Kafka client's, say) could be taken again before the server that was
/// given it binds it. Where to start is spread by process id, so that test processes running side
/// by side seldom try the same ports.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    static NEXT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);
    let mut next = NEXT.lock().unwrap();
    let mut offset = next.unwrap_or_else(|| (std::process::id() as u64 * 7919 % COUNT as u64) as u16);
    for _ in 0..COUNT {
        let port = FIRST + offset;
        offset = (offset + 1) % COUNT;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some(offset);
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT)
}

/// The directory holding the project's binaries (`target/<profile>`), next to the test's `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").to_path_buf();
    for name in ["consumer", "grpc-producer", "votes-host"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build the binaries first with `cargo build --workspace --bins` (`make test` does)",
            dir.join(name).display()
        );
    }
    dir
}

/// One of the project's binaries (`votectl`, `results`, ...), built next to the test.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is missing: build the binaries first with `cargo build --workspace --bins` (`make test` does)", path.display());
    path
}

/// A program of the project's Python venv (`.venv/bin/NAME`, made by `make setup`); panics with
/// the command that installs it when it is missing.
pub fn venv_program(name: &str) -> PathBuf {
    let path = vote_stack::config::repo_root().join(".venv/bin").join(name);
    assert!(path.is_file(), "{} is missing: run `make setup` (bash scripts/setup.sh), which creates .venv with it", path.display());
    path
}

/// Where tests leave files for a person to look at (screenshots): `<target>/e2e-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let dir = bin_dir().parent().expect("the target directory").join("e2e-artifacts");
    std::fs::create_dir_all(&dir).expect("creating the e2e artifacts directory");
    dir
}

/// The admin token the tests give the host.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// A component built by `make components` (`<target>/wasm32-wasip2/release/NAME.wasm`).
pub fn component(name: &str) -> PathBuf {
    let path = vote_stack::config::default_component(&bin_dir()).with_file_name(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: build the components first with `make components` (`make test` does)", path.display());
    path
}

/// A vote as the REST producer takes it, from a gRPC-shaped vote.
pub fn vote_json(vote: &Vote) -> serde_json::Value {
    serde_json::json!({ "name": vote.name, "album": vote.album, "year": vote.year, "rank": vote.rank })
}

/// A private stack for one test.
pub struct TestStack {
    pub config: StackConfig,
    pub supervisor: Supervisor,
    /// The consumers started by [`TestStack::start_consumer`]: name and metrics port.
    consumers: std::sync::Mutex<Vec<(String, u16)>>,
    _dir: tempfile::TempDir,
}

impl TestStack {
    /// Starts Tansu, Redis and NX-27017 on free ports and creates the votes topic.
    pub async fn start() -> Self {
        Self::start_parts(&Part::SERVERS).await
    }

    /// Starts only the given servers on free ports.
    pub async fn start_parts(parts: &[Part]) -> Self {
        Self::start_with(parts, |_| {}).await
    }

    /// Starts the given servers on free ports, after `configure` changed the stack's settings
    /// (a manifest, say: then every process started is given it, and RabbitMQ's address when it
    /// binds a topic there).
    pub async fn start_with(parts: &[Part], configure: impl FnOnce(&mut StackConfig)) -> Self {
        let mut dir = tempfile::Builder::new().prefix("votes-e2e-").tempdir().expect("temp dir");
        if std::env::var_os("VOTES_KEEP_TEST_STATE").is_some() {
            dir.disable_cleanup(true);
            eprintln!("test state kept in {}", dir.path().display());
        }
        let mut config = StackConfig::local_defaults();
        config.state_dir = dir.path().to_owned();
        config.bin_dir = bin_dir();
        config.reuse_running = false;
        // Tests name what each process serves and counts; `start_app_host` gives a manifest.
        config.manifest = None;
        config.kafka_port = free_port();
        config.redis_port = free_port();
        config.mongo_port = free_port();
        config.grpc_port = free_port();
        config.grpc_metrics_port = free_port();
        config.consumer_metrics_port = free_port();
        config.host_port = free_port();
        config.host_admin_port = free_port();
        config.native_port = free_port();
        config.reuse_port = free_port();
        config.wasi_http_port = free_port();
        config.results_port = free_port();
        config.prometheus_port = free_port();
        config.rabbitmq_port = free_port();
        config.rabbitmq_dist_port = free_port();
        configure(&mut config);
        let supervisor = Supervisor::attached(&config.state_dir);
        if let Err(error) = vote_stack::up(&config, &supervisor, parts).await {
            panic!("the test stack did not start: {error:#}");
        }
        Self { config, supervisor, consumers: std::sync::Mutex::default(), _dir: dir }
    }

    /// Starts the gRPC producer with the stack's settings and extra flags; waits until it serves.
    pub async fn start_producer(&self, extra_args: &[&str]) {
        let launch = self.config.launch(Part::GrpcProducer).args(extra_args);
        self.supervisor.spawn(&launch).expect("starting grpc-producer");
        vote_stack::stack::wait_ready(&self.config, &self.supervisor, Part::GrpcProducer).await.expect("grpc-producer ready");
    }

    /// Starts a consumer named `name` with its own metrics port and extra flags; returns the
    /// port of its `/metrics`.
    pub async fn start_consumer(&self, name: &str, extra_args: &[&str]) -> u16 {
        let port = free_port();
        let mut launch: Launch = self.config.launch(Part::Consumer).args(extra_args);
        launch.name = name.to_owned();
        launch.env.push(("VOTES_CONSUMER_METRICS_ADDR".into(), format!("127.0.0.1:{port}")));
        self.supervisor.spawn(&launch).expect("starting consumer");
        let url = format!("http://127.0.0.1:{port}/healthz");
        eventually(Duration::from_secs(30), || async { vote_stack::probe::http_ok(&url).await.is_ok() })
            .await
            .unwrap_or_else(|_| panic!("consumer {name} did not serve /healthz:\n{}", self.supervisor.log_tail(name, 20)));
        self.consumers.lock().unwrap().push((name.to_owned(), port));
        port
    }

    /// SIGKILLs a server of the stack (a crash: no shutdown, no flush).
    pub fn kill(&self, part: Part) {
        self.supervisor.kill(part.name()).unwrap_or_else(|e| panic!("killing {}: {e:#}", part.name()));
    }

    /// Starts a server of the stack again on its port and data directory; waits until it answers.
    pub async fn restart(&self, part: Part) {
        self.supervisor.spawn(&self.config.launch(part)).unwrap_or_else(|e| panic!("restarting {}: {e:#}", part.name()));
        vote_stack::stack::wait_ready(&self.config, &self.supervisor, part)
            .await
            .unwrap_or_else(|e| panic!("{} did not come back: {e:#}", part.name()));
    }

    /// Runs `rabbitmqctl` against this stack's own RabbitMQ node; panics with its output if it fails.
    pub fn rabbitmqctl(&self, args: &[&str]) -> String {
        let ctl = self.config.rabbitmq_bin.with_file_name("rabbitmqctl");
        let out = std::process::Command::new(&ctl)
            .args(["-n", &self.config.rabbitmq_node_name()])
            .args(args)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .output()
            .unwrap_or_else(|e| panic!("running {} (Debian's rabbitmq-server package; `make setup` installs it): {e}", ctl.display()));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "rabbitmqctl {args:?}: {text}");
        text
    }

    /// Writes the admin token, starts the host of `config` with extra flags, waits until ready.
    async fn spawn_host(&self, config: &StackConfig, extra_args: &[&str]) {
        let token = config.admin_token_path();
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        std::fs::write(&token, ADMIN_TOKEN).unwrap();
        let launch = config.launch(Part::Host).args(extra_args);
        self.supervisor.spawn(&launch).expect("starting votes-host");
        vote_stack::stack::wait_ready(config, &self.supervisor, Part::Host).await.expect("votes-host ready");
    }

    /// Starts the wasm host serving `component` with extra flags; waits until it is ready.
    pub async fn start_host(&self, component: &std::path::Path, extra_args: &[&str]) {
        let mut config = self.config.clone();
        config.component = component.to_owned();
        self.spawn_host(&config, extra_args).await;
    }

    /// Starts the wasm host serving the application of `manifest` (its components looked up by
    /// file name among those `make components` built) with extra flags; waits until it is ready.
    pub async fn start_app_host(&self, manifest: &std::path::Path, extra_args: &[&str]) {
        let mut config = self.config.clone();
        config.component = component("vote_rest");
        config.manifest = Some(manifest.to_owned());
        self.spawn_host(&config, extra_args).await;
    }

    /// Starts the host's native REST baseline (`votes-host --native`) on the stack's native
    /// port with extra flags; waits until it is ready.
    pub async fn start_native_host(&self, extra_args: &[&str]) {
        let mut config = self.config.clone();
        config.component = component("vote_rest");
        let launch = config.launch(Part::NativeHost).args(extra_args);
        self.supervisor.spawn(&launch).expect("starting votes-host --native");
        vote_stack::stack::wait_ready(&config, &self.supervisor, Part::NativeHost).await.expect("votes-host --native ready");
    }

    /// Starts the results web app with the stack's settings and extra flags; waits until its
    /// `/healthz` answers (Redis and MongoDB reachable, live poller reading).
    pub async fn start_results(&self, extra_args: &[&str]) {
        let launch = self.config.launch(Part::Results).args(extra_args);
        self.supervisor.spawn(&launch).expect("starting results (build it with `cargo build --workspace --bins`)");
        vote_stack::stack::wait_ready(&self.config, &self.supervisor, Part::Results).await.expect("results ready");
    }

    /// `POST /votes` with a JSON body; returns the status, the version header and the JSON reply.
    pub async fn post_vote(&self, http: &reqwest::Client, body: &serde_json::Value) -> (u16, String, serde_json::Value) {
        let response = http.post(format!("{}/votes", self.config.host_url())).json(body).send().await.expect("POST /votes");
        let status = response.status().as_u16();
        let version = response.headers().get("x-component-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (status, version, response.json().await.unwrap_or_default())
    }

    /// The flags that point `votectl` at this stack (state directory and every port).
    pub fn votectl_args(&self) -> Vec<String> {
        let c = &self.config;
        let mut args = vec!["--state-dir".to_owned(), c.state_dir.display().to_string()];
        for (flag, port) in [
            ("--kafka-port", c.kafka_port),
            ("--redis-port", c.redis_port),
            ("--mongo-port", c.mongo_port),
            ("--grpc-port", c.grpc_port),
            ("--grpc-metrics-port", c.grpc_metrics_port),
            ("--consumer-metrics-port", c.consumer_metrics_port),
            ("--host-port", c.host_port),
            ("--host-admin-port", c.host_admin_port),
            ("--native-port", c.native_port),
            ("--reuse-port", c.reuse_port),
            ("--wasi-http-port", c.wasi_http_port),
            ("--results-port", c.results_port),
            ("--prometheus-port", c.prometheus_port),
        ] {
            args.push(flag.to_owned());
            args.push(port.to_string());
        }
        args
    }

    /// An admin API request with the test token.
    pub fn admin(&self, http: &reqwest::Client, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http.request(method, format!("{}{path}", self.config.host_admin_url())).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn grpc_client(&self) -> VoteServiceClient<Channel> {
        VoteServiceClient::connect(self.config.grpc_url()).await.expect("connecting to grpc-producer")
    }

    /// Casts every vote over gRPC, 32 at a time; returns the vote ids. Panics on a refusal.
    pub async fn cast_all(&self, votes: Vec<Vote>) -> Vec<String> {
        use futures::stream::{self, StreamExt};
        let client = self.grpc_client().await;
        stream::iter(votes)
            .map(|vote| {
                let mut client = client.clone();
                async move { client.cast(vote).await.expect("valid vote accepted").into_inner().vote_id }
            })
            .buffer_unordered(32)
            .collect()
            .await
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.config.redis_url()).unwrap().get_multiplexed_async_connection().await.expect("redis connection")
    }

    /// `{votes}:total`, 0 when absent.
    pub async fn total(&self) -> u64 {
        let total: Option<u64> = redis::cmd("GET").arg(vote_store::keys::TOTAL).query_async(&mut self.redis().await).await.unwrap();
        total.unwrap_or(0)
    }

    /// A leaderboard of the Redis contract (a sorted set), member -> count, all of it.
    pub async fn counts(&self, key: &str) -> HashMap<String, u64> {
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut self.redis().await).await.unwrap();
        members.into_iter().map(|(member, score)| (member, score as u64)).collect()
    }

    /// Counts and logs `events` the way the consumer does, as read from partition 0 of `votes`
    /// from `first_offset` (which must follow the offsets stored before).
    pub async fn store_votes(&self, events: &[vote_core::proto::VoteEvent], first_offset: i64) {
        use vote_store::{counters, logs, votes};
        let aggregates = votes::aggregates(votes::DEFAULT_NAME_CAP);
        let counters = counters::Counters::connect(&self.config.redis_url(), Duration::from_secs(600), &aggregates).await.unwrap();
        let offset = |i: usize| first_offset + i as i64;
        let batch: Vec<_> = events.iter().enumerate().map(|(i, e)| votes::event(0, offset(i), e)).collect();
        let last = counters::fingerprint(events.last().map(|e| e.vote_id.as_bytes()));
        let span = counters::Span::new(0, first_offset, offset(events.len().saturating_sub(1)), last);
        counters.count(vote_core::TOPIC, &aggregates, &[span], &batch, false).await.unwrap();
        let origin = |i: usize| logs::Origin { topic: vote_core::TOPIC.to_owned(), partition: 0, offset: offset(i) };
        let logs = logs::Logs::connect(&self.config.mongo_url()).await.unwrap();
        logs.insert(events.iter().enumerate().map(|(i, e)| (e, origin(i)))).await.unwrap();
    }

    /// The envelopes in `votes.dlq`, read from the start by a group of its own, until `count`
    /// arrived or 30 s passed. Blocking.
    pub fn dead_letters(&self, count: usize) -> Vec<serde_json::Value> {
        self.records(vote_kafka::DLQ_TOPIC, count)
            .iter()
            .map(|record| serde_json::from_slice(&record.payload).expect("a JSON envelope"))
            .collect()
    }

    /// The records of `topic`, read from the start by a group of its own, until `count` arrived
    /// or 30 s passed. Blocking.
    pub fn records(&self, topic: &str, count: usize) -> Vec<Record> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Message;
        let reader: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.config.brokers())
            .set("group.id", format!("{topic}-reader-{}", vote_core::now_ms()))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        reader.subscribe(&[topic]).unwrap();
        let mut found = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while found.len() < count && Instant::now() < deadline {
            if let Some(Ok(message)) = reader.poll(Duration::from_millis(500)) {
                found.push(Record {
                    key: message.key().unwrap_or_default().to_vec(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    partition: message.partition(),
                    offset: message.offset(),
                });
            }
        }
        found
    }

    /// How many records `topic` ever held: its partitions' high watermarks, summed. Blocking.
    pub fn published(&self, topic: &str) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let timeout = Duration::from_secs(5);
        let client: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", self.config.brokers()).create().unwrap();
        let metadata = client.fetch_metadata(Some(topic), timeout).expect("topic metadata");
        let partitions = metadata.topics().iter().find(|t| t.name() == topic).map(|t| t.partitions().len()).unwrap_or(0);
        assert!(partitions > 0, "topic {topic} has no partitions");
        (0..partitions as i32).map(|partition| client.fetch_watermarks(topic, partition, timeout).expect("watermarks").1).sum()
    }

    pub async fn logs(&self) -> mongodb::Collection<mongodb::bson::Document> {
        let client = mongodb::Client::with_uri_str(self.config.mongo_url()).await.expect("mongo client");
        client.database("votes").collection("logs")
    }

    /// Documents in `votes.logs`.
    pub async fn logged(&self) -> u64 {
        self.logs().await.count_documents(mongodb::bson::doc! {}).await.expect("count votes.logs")
    }

    /// Waits until both stores hold `expected` votes (without checking what is still on its way).
    pub async fn wait_for_stores(&self, expected: u64, timeout: Duration) {
        let reached = eventually(timeout, || async { self.total().await >= expected && self.logged().await >= expected }).await;
        if reached.is_err() {
            panic!("after {timeout:?}: {} = {}, votes.logs = {}, expected {expected}", vote_store::keys::TOTAL, self.total().await, self.logged().await);
        }
    }

    /// Waits until both stores hold `expected` votes AND the default consumer group has committed
    /// every message of the topic, so nothing more can still arrive (an overshoot would show).
    pub async fn wait_for_counts(&self, expected: u64, timeout: Duration) {
        self.wait_for_group(vote_kafka::CONSUMER_GROUP, expected, timeout).await;
    }

    /// [`TestStack::wait_for_counts`] for the consumer group `group`.
    pub async fn wait_for_group(&self, group: &str, expected: u64, timeout: Duration) {
        let caught_up = eventually(timeout, || async {
            self.total().await >= expected && self.logged().await >= expected && self.group_lag(group).await == Some(0)
        })
        .await;
        if caught_up.is_err() {
            panic!(
                "after {timeout:?}: {} = {}, votes.logs = {}, expected {expected}; group {group} lag {:?}",
                vote_store::keys::TOTAL,
                self.total().await,
                self.logged().await,
                self.group_lag(group).await
            );
        }
    }

    /// Messages of the votes topic that `group` has not committed yet (None if the broker does
    /// not answer): the high watermark minus the committed offset, over all partitions.
    pub async fn group_lag(&self, group: &str) -> Option<i64> {
        self.group_lag_on(group, vote_core::TOPIC).await
    }

    /// [`TestStack::group_lag`] on `topic` (which has the stack's number of partitions).
    pub async fn group_lag_on(&self, group: &str, topic: &str) -> Option<i64> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let (brokers, group, partitions, topic) = (self.config.brokers(), group.to_owned(), self.config.partitions, topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let consumer: BaseConsumer =
                rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", &group).set("enable.auto.commit", "false").create().ok()?;
            let mut assignment = rdkafka::TopicPartitionList::new();
            for partition in 0..partitions {
                assignment.add_partition(&topic, partition);
            }
            let committed = consumer.committed_offsets(assignment, timeout).ok()?;
            let mut lag = 0;
            for element in committed.elements() {
                let (low, high) = consumer.fetch_watermarks(&topic, element.partition(), timeout).ok()?;
                lag += high - element.offset().to_raw().filter(|offset| *offset >= 0).unwrap_or(low);
            }
            Some(lag)
        })
        .await
        .unwrap()
    }

    /// The metrics port of a consumer started by [`TestStack::start_consumer`].
    pub fn consumer_port(&self, name: &str) -> u16 {
        self.consumers.lock().unwrap().iter().find(|(n, _)| n == name).map(|(_, port)| *port).expect("a consumer of this name")
    }
}

/// One record read from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
}

/// The status and body of a consumer's `/healthz`.
pub async fn health(port: u16) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.expect("GET /healthz");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// How many partitions a consumer owns (the series of its `consumer_lag_messages` gauge).
pub async fn assigned_partitions(port: u16) -> usize {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    text.lines().filter(|line| line.starts_with("consumer_lag_messages{")).count()
}

/// A counter's value from a Prometheus text page (summing its labelled series).
pub async fn metric(port: u16, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("GET /metrics").text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `count` valid votes cycling through the shipped bands, with year and rank as strings.
pub fn valid_votes(count: usize) -> Vec<Vote> {
    const BANDS: [(&str, &str, &str); 4] = [
        ("Alux Nahual", "Conquista", "1986"),
        ("Bohemia Suburbana", "Eructo del alma", "1996"),
        ("Malacates Trébol Shop", "Niño", "2008"),
        ("Viernes Verde", "Viernes Verde", "2003"),
    ];
    (0..count)
        .map(|i| {
            let (name, album, year) = BANDS[i % BANDS.len()];
            Vote { name: name.into(), album: album.into(), year: year.into(), rank: ((i % 5) + 1).to_string() }
        })
        .collect()
}

/// `count` invalid votes, each with the field that is wrong.
pub fn invalid_votes(count: usize) -> Vec<(Vote, &'static str)> {
    let ok = || Vote { name: "Legión".into(), album: "Legión".into(), year: "1989".into(), rank: "1".into() };
    let cases: Vec<(Vote, &'static str)> = vec![
        (Vote { name: "".into(), ..ok() }, "name"),
        (Vote { name: "   ".into(), ..ok() }, "name"),
        (Vote { name: "x".repeat(129), ..ok() }, "name"),
        (Vote { album: "".into(), ..ok() }, "album"),
        (Vote { album: "a\u{0}b".into(), ..ok() }, "album"),
        (Vote { year: "1492".into(), ..ok() }, "year"),
        (Vote { year: "dos mil".into(), ..ok() }, "year"),
        (Vote { year: "".into(), ..ok() }, "year"),
        (Vote { rank: "0".into(), ..ok() }, "rank"),
        (Vote { rank: "1.5".into(), ..ok() }, "rank"),
    ];
    (0..count).map(|i| cases[i % cases.len()].clone()).collect()
}

/// A steady, bounded load of valid votes over the gRPC producer and, optionally, the wasm host,
/// until [`Load::stop`]; counts the accepted and the refused votes.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(u64, u64)>>,
}

impl Load {
    /// Workers per path; each sends one vote every [`Load::PERIOD`] (about 80 votes/s per path).
    const WORKERS: usize = 2;
    const PERIOD: Duration = Duration::from_millis(25);
    /// A worker gives up after this long even if nobody stops it.
    const LIMIT: Duration = Duration::from_secs(45);

    /// Starts the load; the host must be running when `rest` is set.
    pub async fn start(stack: &std::sync::Arc<TestStack>, rest: bool) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let grpc = stack.grpc_client().await;
        let http = reqwest::Client::new();
        let mut workers = Vec::new();
        for worker in 0..Self::WORKERS * if rest { 2 } else { 1 } {
            let (stack, stop, grpc, http) = (stack.clone(), stop.clone(), grpc.clone(), http.clone());
            workers.push(tokio::spawn(async move {
                let (mut accepted, mut refused) = (0, 0);
                let started = Instant::now();
                let mut ticker = tokio::time::interval(Self::PERIOD);
                let votes = valid_votes(20);
                for vote in votes.iter().cycle().skip(worker).cloned() {
                    ticker.tick().await;
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Self::LIMIT {
                        break;
                    }
                    let ok = if worker % 2 == 1 && rest {
                        stack.post_vote(&http, &vote_json(&vote)).await.0 == 202
                    } else {
                        grpc.clone().cast(vote).await.is_ok()
                    };
                    if ok {
                        accepted += 1;
                    } else {
                        refused += 1;
                    }
                }
                (accepted, refused)
            }));
        }
        Self { stop, workers }
    }

    /// Stops the load; returns (accepted, refused) votes.
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut totals = (0, 0);
        for worker in self.workers {
            let (accepted, refused) = worker.await.expect("load worker");
            totals = (totals.0 + accepted, totals.1 + refused);
        }
        totals
    }
}

/// Raises this test process's soft limit on open files to its hard limit (tests that hold a
/// thousand connections need more than the usual 1,024); returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("reading RLIMIT_NOFILE");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raising RLIMIT_NOFILE to its hard limit");
    }
    hard.max(soft)
}

/// One field of `/proc/<pid>/status` (`name` without its colon), trimmed.
fn proc_status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/<pid>/status");
    status.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(|value| value.trim().to_owned()))
}

/// Whether the kernel may give a process transparent huge pages (`THP_enabled` in
/// `/proc/<pid>/status`).
pub fn thp_enabled(pid: u32) -> bool {
    proc_status_field(pid, "THP_enabled").expect("THP_enabled in /proc/<pid>/status (Linux 5.0 or later)") != "0"
}

/// A process's resident memory in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_field(pid, "VmRSS").and_then(|value| value.trim_end_matches("kB").trim().parse().ok()).expect("VmRSS in /proc/<pid>/status")
}
