//! Where each part of the local stack listens, where its files go, and how it is launched.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::process::Launch;

/// The local Redis' `maxmemory`: the counters of a few million keyed votes within their
/// idempotency TTL fit many times over (docs/decisions.md has the sizing).
pub const REDIS_MAX_MEMORY: &str = "512mb";

/// Kafka (Tansu) port of the local stack.
pub const DEFAULT_KAFKA_PORT: u16 = 9092;
/// Redis port of the local stack.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// MongoDB (NX-27017) port of the local stack.
pub const DEFAULT_MONGO_PORT: u16 = 27017;
/// gRPC producer port.
pub const DEFAULT_GRPC_PORT: u16 = 50051;
/// gRPC producer `/metrics` port.
pub const DEFAULT_GRPC_METRICS_PORT: u16 = 9102;
/// Consumer `/metrics` port.
pub const DEFAULT_CONSUMER_METRICS_PORT: u16 = 9101;
/// wasm host HTTP port (`POST /votes`).
pub const DEFAULT_HOST_PORT: u16 = 8080;
/// wasm host admin API port (loopback).
pub const DEFAULT_HOST_ADMIN_PORT: u16 = 8081;
/// The native REST baseline's HTTP port (`votes-host --native`, `POST /votes`).
pub const DEFAULT_NATIVE_PORT: u16 = 8082;
/// The port of the wasm host `votectl bench` starts for its `rest-reuse` path (instance reuse on).
pub const DEFAULT_REUSE_PORT: u16 = 8083;
/// The port of the wasm host `votectl bench` starts for its `rest-wasi-http` path (every request
/// through `wasi:http`, not the one-call handler).
pub const DEFAULT_WASI_HTTP_PORT: u16 = 8084;
/// Results web app port (the page, its JSON API, `/healthz`, `/metrics`).
pub const DEFAULT_RESULTS_PORT: u16 = 8088;
/// Prometheus port (its UI and `/api/v1/query`).
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9090;
/// The local RabbitMQ node's stream port (the `rabbitmq_stream` plugin's default).
pub const DEFAULT_RABBITMQ_PORT: u16 = 5552;
/// The local RabbitMQ node's Erlang distribution port (loopback only; the machine's own node, if
/// any, keeps its 25672).
pub const DEFAULT_RABBITMQ_DIST_PORT: u16 = 25552;

/// The parts of the stack, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Kafka,
    Redis,
    Mongo,
    /// A RabbitMQ node with the stream plugin, started only when the manifest binds a topic to it.
    Rabbitmq,
    Consumer,
    GrpcProducer,
    /// The wasmtime host running the REST producer component.
    Host,
    /// The same host answering natively (`--native`): the baseline that prices the sandbox.
    NativeHost,
    /// The results web app (live page and log search).
    Results,
    /// Prometheus, scraping every service of the stack.
    Prometheus,
}

impl Part {
    pub const ALL: [Part; 10] =
        [Part::Kafka, Part::Redis, Part::Mongo, Part::Rabbitmq, Part::Consumer, Part::GrpcProducer, Part::Host, Part::NativeHost, Part::Results, Part::Prometheus];
    /// The backing servers (reused when one already answers).
    pub const SERVERS: [Part; 3] = [Part::Kafka, Part::Redis, Part::Mongo];

    /// Whether a part is a backing server (reused when one answers on its port).
    pub fn is_server(self) -> bool {
        Self::SERVERS.contains(&self) || self == Part::Rabbitmq
    }

    /// The part's name in logs, pid files and `votectl status`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Kafka => "kafka",
            Part::Redis => "redis",
            Part::Mongo => "mongodb",
            Part::Rabbitmq => "rabbitmq",
            Part::Consumer => "consumer",
            Part::GrpcProducer => "grpc-producer",
            Part::Host => "wasm-host",
            Part::NativeHost => "native-host",
            Part::Results => "results",
            Part::Prometheus => "prometheus",
        }
    }
}

/// Everything the stack needs to know; every field has a documented default.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Where logs (`logs/`), pid files (`run/`) and data (`data/`) go.
    pub state_dir: PathBuf,
    /// The address every part binds to and is reached at.
    pub host: String,
    pub kafka_port: u16,
    pub redis_port: u16,
    pub mongo_port: u16,
    pub grpc_port: u16,
    pub grpc_metrics_port: u16,
    pub consumer_metrics_port: u16,
    pub host_port: u16,
    pub host_admin_port: u16,
    pub native_port: u16,
    /// The bench's instance-reusing wasm host ([`StackConfig::reuse_host_launch`]).
    pub reuse_port: u16,
    /// The bench's `wasi:http`-only wasm host ([`StackConfig::wasi_http_host_launch`]).
    pub wasi_http_port: u16,
    pub results_port: u16,
    pub prometheus_port: u16,
    /// The RabbitMQ node's stream port, and its Erlang distribution port.
    pub rabbitmq_port: u16,
    pub rabbitmq_dist_port: u16,
    /// The component the host serves when there is no manifest (and the native baseline's).
    pub component: PathBuf,
    /// The application manifest (`spin.toml`): the host serves its components (found by file
    /// name next to `component`), the consumer counts its workloads, the results app shows them.
    pub manifest: Option<PathBuf>,
    /// Partitions of the votes topic.
    pub partitions: i32,
    /// The `tansu` binary (built with the `libsql` feature for SQLite storage).
    pub tansu_bin: PathBuf,
    /// The `redis-server` binary.
    pub redis_bin: PathBuf,
    /// The `nx-27017` binary from the project's Python venv.
    pub nx_bin: PathBuf,
    /// The `prometheus` binary (Debian package `prometheus`).
    pub prometheus_bin: PathBuf,
    /// The `rabbitmq-server` start script (Debian package `rabbitmq-server`; its
    /// `/usr/lib/rabbitmq/bin` one, which runs as the calling user).
    pub rabbitmq_bin: PathBuf,
    /// Where the project's own binaries (`consumer`, `grpc-producer`) are.
    pub bin_dir: PathBuf,
    /// Reuse a server that already answers on a port instead of failing (never in tests).
    pub reuse_running: bool,
}

/// The repository root this crate was built in (for the venv and the default data).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// The REST component as `make build` leaves it: `<target>/wasm32-wasip2/release/vote_rest.wasm`,
/// next to the `<target>/<profile>` directory of the binaries.
pub fn default_component(bin_dir: &Path) -> PathBuf {
    bin_dir.parent().unwrap_or(bin_dir).join("wasm32-wasip2/release/vote_rest.wasm")
}

/// Finds `name` on `PATH`, then in `~/.cargo/bin`; falls back to the bare name.
pub fn find_program(name: &str) -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin").join(name));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

impl StackConfig {
    /// The local defaults: standard ports on 127.0.0.1, state in `<repo>/.votes`, binaries next
    /// to the running executable.
    pub fn local_defaults() -> Self {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Self {
            state_dir: repo_root().join(".votes"),
            host: "127.0.0.1".to_owned(),
            kafka_port: DEFAULT_KAFKA_PORT,
            redis_port: DEFAULT_REDIS_PORT,
            mongo_port: DEFAULT_MONGO_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            grpc_metrics_port: DEFAULT_GRPC_METRICS_PORT,
            consumer_metrics_port: DEFAULT_CONSUMER_METRICS_PORT,
            host_port: DEFAULT_HOST_PORT,
            host_admin_port: DEFAULT_HOST_ADMIN_PORT,
            native_port: DEFAULT_NATIVE_PORT,
            reuse_port: DEFAULT_REUSE_PORT,
            wasi_http_port: DEFAULT_WASI_HTTP_PORT,
            results_port: DEFAULT_RESULTS_PORT,
            prometheus_port: DEFAULT_PROMETHEUS_PORT,
            rabbitmq_port: DEFAULT_RABBITMQ_PORT,
            rabbitmq_dist_port: DEFAULT_RABBITMQ_DIST_PORT,
            component: default_component(&bin_dir),
            manifest: Some(repo_root().join("spin.toml")).filter(|path| path.is_file()),
            partitions: vote_kafka::DEFAULT_PARTITIONS,
            tansu_bin: find_program("tansu"),
            redis_bin: find_program("redis-server"),
            nx_bin: repo_root().join(".venv/bin/nx-27017"),
            prometheus_bin: find_program("prometheus"),
            rabbitmq_bin: Some(PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server"))
                .filter(|path| path.is_file())
                .unwrap_or_else(|| find_program("rabbitmq-server")),
            bin_dir,
            reuse_running: true,
        }
    }

    /// `launch` told where the manifest is, when there is one.
    fn with_manifest(&self, launch: Launch) -> Launch {
        match &self.manifest {
            Some(manifest) => self.with_rabbitmq(launch.env("VOTES_MANIFEST", manifest.display().to_string())),
            None => launch,
        }
    }

    /// `launch` told where RabbitMQ is, when the manifest binds a topic to it.
    fn with_rabbitmq(&self, launch: Launch) -> Launch {
        if self.rabbitmq_topics().map(|topics| topics.is_empty()).unwrap_or(true) {
            return launch;
        }
        launch.env("VOTES_RABBITMQ", self.rabbitmq_address())
    }

    /// The host's application: the manifest's components, found by file name where `make
    /// components` put them (next to `component`), or `component` alone.
    fn with_application(&self, launch: Launch) -> Launch {
        match &self.manifest {
            Some(manifest) => {
                let dir = self.component.parent().map(|d| d.display().to_string()).unwrap_or_default();
                self.with_rabbitmq(launch.env("VOTES_MANIFEST", manifest.display().to_string()).env("VOTES_HOST_COMPONENT_DIR", dir))
            }
            None => launch.env("VOTES_HOST_COMPONENT", self.component.display().to_string()),
        }
    }

    /// The topics of the manifest's JSON workloads (created with the votes topic), or none.
    pub fn workload_topics(&self) -> anyhow::Result<Vec<String>> {
        let Some(path) = &self.manifest else { return Ok(Vec::new()) };
        let manifest = vote_platform::Manifest::load(path).with_context(|| format!("reading the manifest {}", path.display()))?;
        Ok(manifest
            .workloads
            .values()
            .filter(|w| w.format == vote_platform::workload::Format::Json && w.broker == vote_platform::workload::Broker::Kafka)
            .map(|w| w.topic.clone())
            .collect())
    }

    /// The topics the manifest binds to RabbitMQ (streams created when RabbitMQ starts), or none.
    pub fn rabbitmq_topics(&self) -> anyhow::Result<Vec<String>> {
        let Some(path) = &self.manifest else { return Ok(Vec::new()) };
        let manifest = vote_platform::Manifest::load(path).with_context(|| format!("reading the manifest {}", path.display()))?;
        Ok(manifest.rabbitmq_topics())
    }

    /// `host:port` of the RabbitMQ node's stream listener.
    pub fn rabbitmq_address(&self) -> String {
        format!("{}:{}", self.host, self.rabbitmq_port)
    }

    /// The RabbitMQ node's configuration file (without `.conf`, as `RABBITMQ_CONFIG_FILE` wants
    /// it) and its enabled-plugins file, written by `up`.
    pub fn rabbitmq_config_base(&self) -> PathBuf {
        self.state_dir.join("run").join("rabbitmq")
    }

    /// The Erlang name of this stack's RabbitMQ node (what `rabbitmqctl -n` takes).
    pub fn rabbitmq_node_name(&self) -> String {
        format!("votes-{}@localhost", self.rabbitmq_port)
    }

    /// Writes the RabbitMQ node's configuration: only the stream listener (no AMQP listener, so
    /// the machine's own node keeps 5672), on this stack's address.
    pub fn write_rabbitmq_config(&self) -> anyhow::Result<()> {
        let base = self.rabbitmq_config_base();
        std::fs::create_dir_all(base.parent().expect("run dir"))?;
        let conf = format!(
            // Clients are sent to the advertised address for each stream: this one, not the
            // machine's host name (which may not resolve to the loopback the listener is on).
            "listeners.tcp = none\nstream.listeners.tcp.1 = {host}:{port}\nstream.advertised_host = {host}\nstream.advertised_port = {port}\nloopback_users = none\n",
            host = self.host,
            port = self.rabbitmq_port
        );
        std::fs::write(base.with_extension("conf"), conf)?;
        std::fs::write(base.with_extension("plugins"), "[rabbitmq_stream].\n")?;
        let data = self.data_dir(Part::Rabbitmq);
        std::fs::create_dir_all(data.join("mnesia"))?;
        std::fs::create_dir_all(data.join("log"))?;
        Ok(())
    }

    pub fn brokers(&self) -> String {
        format!("{}:{}", self.host, self.kafka_port)
    }
    pub fn redis_url(&self) -> String {
        format!("redis://{}:{}", self.host, self.redis_port)
    }
    pub fn mongo_url(&self) -> String {
        format!("mongodb://{}:{}/?directConnection=true", self.host, self.mongo_port)
    }
    /// `http://host:port` of one of the stack's servers, without a path.
    fn http_url(&self, port: u16) -> String {
        format!("http://{}:{}", self.host, port)
    }
    pub fn grpc_url(&self) -> String {
        self.http_url(self.grpc_port)
    }
    /// The gRPC producer's side HTTP server (`/metrics`, `/healthz`), without a path.
    pub fn grpc_http_url(&self) -> String {
        self.http_url(self.grpc_metrics_port)
    }
    /// The consumer's HTTP server (`/metrics`, `/healthz`), without a path.
    pub fn consumer_http_url(&self) -> String {
        self.http_url(self.consumer_metrics_port)
    }
    pub fn host_url(&self) -> String {
        self.http_url(self.host_port)
    }
    /// The native REST baseline, without a path.
    pub fn native_url(&self) -> String {
        self.http_url(self.native_port)
    }
    /// The bench's instance-reusing wasm host, without a path.
    pub fn reuse_url(&self) -> String {
        self.http_url(self.reuse_port)
    }

    /// The bench's `wasi:http`-only wasm host, without a path.
    pub fn wasi_http_url(&self) -> String {
        self.http_url(self.wasi_http_port)
    }

    /// A second wasm host serving the stack's default component with each instance serving up to
    /// `instance_reuse` requests, on the reuse port; no admin API. `votectl bench` starts it for
    /// its `rest-reuse` path, beside the stack's host, so both are measured in one run.
    pub fn reuse_host_launch(&self, instance_reuse: u32) -> Launch {
        self.side_host_launch("reuse-host", self.reuse_port).env("VOTES_HOST_INSTANCE_REUSE", instance_reuse.to_string())
    }

    /// A second wasm host serving the stack's default component through `wasi:http` only
    /// (`--wasi-http-only`), on its own port; no admin API. `votectl bench` starts it for its
    /// `rest-wasi-http` path, so the one-call handler and `wasi:http` are measured in one run.
    pub fn wasi_http_host_launch(&self) -> Launch {
        self.side_host_launch("wasi-http-host", self.wasi_http_port).env("VOTES_HOST_WASI_HTTP_ONLY", "true")
    }

    fn side_host_launch(&self, name: &'static str, port: u16) -> Launch {
        Launch::new(name, self.bin_dir.join("votes-host"))
            .env("VOTES_KAFKA_BROKERS", self.brokers())
            .env("VOTES_HOST_COMPONENT", self.component.display().to_string())
            .env("VOTES_HOST_ADDR", format!("{}:{}", self.host, port))
            .env("VOTES_HOST_DRAIN_TIMEOUT_MS", crate::stack::HOST_DRAIN.as_millis().to_string())
    }
    /// The results page (and its `/api/...`, `/healthz`, `/metrics`), without a path.
    pub fn results_url(&self) -> String {
        self.http_url(self.results_port)
    }
    pub fn host_admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.host_admin_port)
    }
    /// Prometheus (UI and HTTP API), without a path.
    pub fn prometheus_url(&self) -> String {
        self.http_url(self.prometheus_port)
    }
    /// Every service of the stack that serves Prometheus text on `/metrics`: (job, `host:port`).
    pub fn metrics_targets(&self) -> Vec<(&'static str, String)> {
        [(Part::Host, self.host_port), (Part::GrpcProducer, self.grpc_metrics_port), (Part::Consumer, self.consumer_metrics_port)]
            .into_iter()
            .map(|(part, port)| (part.name(), format!("{}:{port}", self.host)))
            .collect()
    }
    /// The Prometheus configuration `up` writes (scraping [`Self::metrics_targets`]).
    pub fn prometheus_config_path(&self) -> PathBuf {
        self.state_dir.join("run").join("prometheus.yml")
    }
    /// The file holding the admin API's bearer token (written by `up`).
    pub fn admin_token_path(&self) -> PathBuf {
        self.state_dir.join("run").join("admin-token")
    }
    /// The fleet's deploy key (written by `up` with its `.pub` beside it).
    pub fn deploy_key_path(&self) -> PathBuf {
        self.state_dir.join("run").join("deploy-key")
    }
    /// Where a part keeps its data.
    pub fn data_dir(&self, part: Part) -> PathBuf {
        self.state_dir.join("data").join(part.name())
    }

    /// The port a part is reached on.
    pub fn port(&self, part: Part) -> u16 {
        match part {
            Part::Kafka => self.kafka_port,
            Part::Redis => self.redis_port,
            Part::Mongo => self.mongo_port,
            Part::Rabbitmq => self.rabbitmq_port,
            Part::Consumer => self.consumer_metrics_port,
            Part::GrpcProducer => self.grpc_port,
            Part::Host => self.host_port,
            Part::NativeHost => self.native_port,
            Part::Results => self.results_port,
            Part::Prometheus => self.prometheus_port,
        }
    }

    /// How a part is started as a child process.
    pub fn launch(&self, part: Part) -> Launch {
        let data = self.data_dir(part);
        let host = &self.host;
        match part {
            Part::Kafka => {
                let url = format!("tcp://{host}:{}", self.kafka_port);
                Launch::new(part.name(), &self.tansu_bin)
                    .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                    // Tansu reads the SQLite path relative to its working directory, the data dir.
                    .args(["--storage-engine", "sqlite://tansu.db"])
                    .env("RUST_LOG", "warn")
                    .data_dir(data)
            }
            // Counters must never be evicted (the consumer refuses a Redis that could), and a
            // Redis reachable beyond loopback without a password keeps protected mode on, so only
            // local clients get in.
            Part::Redis => Launch::new(part.name(), &self.redis_bin)
                .args(["--bind", host, "--port", &self.redis_port.to_string(), "--dir", &data.display().to_string()])
                .args(["--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"])
                // A bound Redis refuses writes at (the consumer then waits, saying so in its
                // health) instead of growing until the kernel kills it.
                .args(["--maxmemory", REDIS_MAX_MEMORY])
                // Every acknowledged count is on disk before the consumer commits past it.
                .args(["--appendfsync", "always"])
                .args(["--protected-mode", if is_loopback(host) { "no" } else { "yes" }])
                .data_dir(data),
            Part::Mongo => Launch::new(part.name(), &self.nx_bin)
                .args(["--host", host, "--port", &self.mongo_port.to_string(), "--data-dir", &data.display().to_string()])
                .args(["--log-file", &self.state_dir.join("logs/mongodb-server.log").display().to_string()])
                .args(["--pid-file", &data.join("nx-27017.pid").display().to_string()])
                .data_dir(data),
            // Its own node name, ports, data and plugins, so a machine's own RabbitMQ is untouched.
            Part::Rabbitmq => Launch::new(part.name(), &self.rabbitmq_bin)
                .env("RABBITMQ_NODENAME", self.rabbitmq_node_name())
                .env("RABBITMQ_NODE_IP_ADDRESS", host.clone())
                .env("RABBITMQ_DIST_PORT", self.rabbitmq_dist_port.to_string())
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_MNESIA_BASE", data.join("mnesia").display().to_string())
                .env("RABBITMQ_LOG_BASE", data.join("log").display().to_string())
                .env("RABBITMQ_PLUGINS_EXPAND_DIR", data.join("plugins").display().to_string())
                .env("RABBITMQ_PID_FILE", data.join("rabbitmq.pid").display().to_string())
                .env("RABBITMQ_CONFIG_FILE", self.rabbitmq_config_base().display().to_string())
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.rabbitmq_config_base().with_extension("plugins").display().to_string())
                .data_dir(data),
            Part::Consumer => self
                .with_manifest(Launch::new(part.name(), self.bin_dir.join("consumer")))
                .env("VOTES_KAFKA_BROKERS", self.brokers())
                .env("VOTES_REDIS_URL", self.redis_url())
                .env("VOTES_MONGO_URL", self.mongo_url())
                .env("VOTES_CONSUMER_METRICS_ADDR", format!("{host}:{}", self.consumer_metrics_port)),
            Part::GrpcProducer => Launch::new(part.name(), self.bin_dir.join("grpc-producer"))
                .env("VOTES_KAFKA_BROKERS", self.brokers())
                .env("VOTES_GRPC_ADDR", format!("{host}:{}", self.grpc_port))
                .env("VOTES_GRPC_METRICS_ADDR", format!("{host}:{}", self.grpc_metrics_port)),
            Part::Host => self
                .with_application(Launch::new(part.name(), self.bin_dir.join("votes-host")))
                .env("VOTES_KAFKA_BROKERS", self.brokers())
                .env("VOTES_HOST_ADDR", format!("{host}:{}", self.host_port))
                .env("VOTES_HOST_ADMIN_ADDR", format!("127.0.0.1:{}", self.host_admin_port))
                .env("VOTES_ADMIN_TOKEN_FILE", self.admin_token_path().display().to_string())
                .env("VOTES_DEPLOY_PUBLIC_KEY_FILE", deploy_signing::keys::public_path(&self.deploy_key_path()).display().to_string())
                .env("VOTES_HOST_DRAIN_TIMEOUT_MS", crate::stack::HOST_DRAIN.as_millis().to_string()),
            // The same binary and component, answering natively; no admin API.
            Part::NativeHost => Launch::new(part.name(), self.bin_dir.join("votes-host"))
                .args(["--native"])
                .env("VOTES_KAFKA_BROKERS", self.brokers())
                .env("VOTES_HOST_COMPONENT", self.component.display().to_string())
                .env("VOTES_HOST_ADDR", format!("{host}:{}", self.native_port))
                .env("VOTES_HOST_DRAIN_TIMEOUT_MS", crate::stack::HOST_DRAIN.as_millis().to_string()),
            Part::Results => self
                .with_manifest(Launch::new(part.name(), self.bin_dir.join("results")))
                .env("VOTES_REDIS_URL", self.redis_url())
                .env("VOTES_MONGO_URL", self.mongo_url())
                .env("VOTES_RESULTS_ADDR", format!("{host}:{}", self.results_port)),
            Part::Prometheus => Launch::new(part.name(), &self.prometheus_bin)
                .args([
                    format!("--config.file={}", self.prometheus_config_path().display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    format!("--web.listen-address={host}:{}", self.prometheus_port),
                    format!("--storage.tsdb.retention.time={}", crate::prometheus::RETENTION),
                ])
                .data_dir(data),
        }
    }

    /// What to tell a user whose part cannot be started because its program is missing.
    pub fn install_hint(&self, part: Part) -> &'static str {
        match part {
            Part::Kafka => "install Tansu with `make setup` (cargo install tansu --features libsql --locked) or set VOTES_TANSU_BIN",
            Part::Redis => "install Redis with `make setup` (apt-get install redis-server) or set VOTES_REDIS_BIN",
            Part::Mongo => "create the Python venv with `make setup` (.venv with pip install nx-27017) or set VOTES_NX_BIN",
            Part::Rabbitmq => "install RabbitMQ with `make setup` (apt-get install rabbitmq-server) or set VOTES_RABBITMQ_BIN",
            Part::Consumer | Part::GrpcProducer | Part::Results => "build the project with `make build`",
            Part::Host | Part::NativeHost => "build the host and the components with `make build` (the component is built for wasm32-wasip2)",
            Part::Prometheus => "install Prometheus with `make setup` (apt-get install prometheus) or set VOTES_PROMETHEUS_BIN",
        }
    }
}

/// Whether `host` (an address or a name) is the loopback interface only.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod redis_launch_tests {
    use super::*;

    fn redis_args(host: &str) -> Vec<String> {
        let config = StackConfig { host: host.to_owned(), ..StackConfig::local_defaults() };
        config.launch(Part::Redis).args
    }

    fn value_of(args: &[String], flag: &str) -> String {
        let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} missing in {args:?}"));
        args[at + 1].clone()
    }

    #[test]
    fn redis_keeps_protected_mode_unless_on_loopback_and_never_evicts() {
        for (host, protected) in [("127.0.0.1", "no"), ("::1", "no"), ("localhost", "no"), ("0.0.0.0", "yes"), ("10.1.2.3", "yes")] {
            let args = redis_args(host);
            assert_eq!(value_of(&args, "--protected-mode"), protected, "{host}");
            assert_eq!(value_of(&args, "--maxmemory-policy"), "noeviction", "{host}");
        }
    }
}
