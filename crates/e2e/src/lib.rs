//! The end-to-end test harness: a private stack (Tansu, Redis, NX-27017) on free ports in a
//! temporary directory, the project's real binaries started as processes, and helpers to read
//! what landed in Redis and MongoDB. Everything it starts dies with it.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vote_core::proto::Vote;
use vote_grpc::VoteServiceClient;
use vote_stack::process::Launch;
use vote_stack::{Part, StackConfig, Supervisor};

/// A port nothing listens on right now, never the same one twice in this process.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port").local_addr().unwrap().port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
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
    _dir: tempfile::TempDir,
}

impl TestStack {
    /// Starts Tansu, Redis and NX-27017 on free ports and creates the votes topic.
    pub async fn start() -> Self {
        Self::start_parts(&Part::SERVERS).await
    }

    /// Starts only the given servers on free ports.
    pub async fn start_parts(parts: &[Part]) -> Self {
        let mut dir = tempfile::Builder::new().prefix("votes-e2e-").tempdir().expect("temp dir");
        if std::env::var_os("VOTES_KEEP_TEST_STATE").is_some() {
            dir.disable_cleanup(true);
            eprintln!("test state kept in {}", dir.path().display());
        }
        let mut config = StackConfig::local_defaults();
        config.state_dir = dir.path().to_owned();
        config.bin_dir = bin_dir();
        config.reuse_running = false;
        config.kafka_port = free_port();
        config.redis_port = free_port();
        config.mongo_port = free_port();
        config.grpc_port = free_port();
        config.grpc_metrics_port = free_port();
        config.consumer_metrics_port = free_port();
        config.host_port = free_port();
        config.host_admin_port = free_port();
        let supervisor = Supervisor::attached(&config.state_dir);
        if let Err(error) = vote_stack::up(&config, &supervisor, parts).await {
            panic!("the test stack did not start: {error:#}");
        }
        Self { config, supervisor, _dir: dir }
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
        port
    }

    /// Starts the wasm host serving `component` with extra flags; waits until it is ready.
    pub async fn start_host(&self, component: &std::path::Path, extra_args: &[&str]) {
        let mut config = self.config.clone();
        config.component = component.to_owned();
        let token = config.admin_token_path();
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        std::fs::write(&token, ADMIN_TOKEN).unwrap();
        let launch = config.launch(Part::Host).args(extra_args);
        self.supervisor.spawn(&launch).expect("starting votes-host");
        vote_stack::stack::wait_ready(&config, &self.supervisor, Part::Host).await.expect("votes-host ready");
    }

    /// `POST /votes` with a JSON body; returns the status, the version header and the JSON reply.
    pub async fn post_vote(&self, http: &reqwest::Client, body: &serde_json::Value) -> (u16, String, serde_json::Value) {
        let response = http.post(format!("{}/votes", self.config.host_url())).json(body).send().await.expect("POST /votes");
        let status = response.status().as_u16();
        let version = response.headers().get("x-component-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (status, version, response.json().await.unwrap_or_default())
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

    /// `votes:total`, 0 when absent.
    pub async fn total(&self) -> u64 {
        let total: Option<u64> = redis::cmd("GET").arg("votes:total").query_async(&mut self.redis().await).await.unwrap();
        total.unwrap_or(0)
    }

    /// A hash of the Redis contract, field -> count.
    pub async fn hash(&self, key: &str) -> HashMap<String, u64> {
        redis::cmd("HGETALL").arg(key).query_async(&mut self.redis().await).await.unwrap()
    }

    pub async fn logs(&self) -> mongodb::Collection<mongodb::bson::Document> {
        let client = mongodb::Client::with_uri_str(self.config.mongo_url()).await.expect("mongo client");
        client.database("votes").collection("logs")
    }

    /// Documents in `votes.logs`.
    pub async fn logged(&self) -> u64 {
        self.logs().await.count_documents(mongodb::bson::doc! {}).await.expect("count votes.logs")
    }

    /// Waits until both stores hold `expected` votes, then a little longer to catch overshoot.
    pub async fn wait_for_counts(&self, expected: u64, timeout: Duration) {
        let reached = eventually(timeout, || async { self.total().await >= expected && self.logged().await >= expected }).await;
        if reached.is_err() {
            panic!(
                "after {timeout:?}: votes:total = {}, votes.logs = {}, expected {expected}",
                self.total().await,
                self.logged().await
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
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
