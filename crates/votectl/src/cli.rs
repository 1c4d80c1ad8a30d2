//! The commands and flags of `votectl`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vote_stack::config::{self as defaults, StackConfig};

#[derive(Parser, Debug)]
#[command(version, about = "Run the votes platform locally, cast votes and read the results")]
pub struct Cli {
    #[command(flatten)]
    pub stack: StackArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the local stack (Kafka, Redis, MongoDB, consumer, gRPC producer, wasm host, results page) and print where it is.
    Up,
    /// Stop everything `up` started.
    Down,
    /// Show each part's address and health.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send votes to a producer.
    Cast(CastArgs),
    /// Print the live counts from Redis: the band votes, or with --workload a workload of the
    /// manifest.
    Results(ResultsArgs),
    /// Rebuild the Redis counters from the MongoDB vote logs (after Redis lost data, say); safe
    /// while votes keep arriving: every logged vote ends up counted exactly once.
    Recount(RecountArgs),
    /// Manage the wasm host's components (hot-swap; with a fleet topic, every host of the fleet).
    Component(ComponentArgs),
    /// Measure the producers (wasm REST, native REST, gRPC) in rotating rounds, optionally a
    /// concurrency sweep and open loop, with CPU per vote and an exactly-once check.
    Bench(BenchArgs),
    /// Measure the broker a workload's topic is bound to (Kafka or RabbitMQ): its events published
    /// straight through the host's publishers, closed loop per concurrency and open loop at
    /// fractions of capacity, publish-to-visible latency, the broker's CPU and memory per event.
    BenchBroker(BrokerBenchArgs),
}

#[derive(Args, Debug)]
pub struct BrokerBenchArgs {
    /// The manifest workload whose topic is published to (its events from data/<workload>.json).
    #[arg(long, default_value = "weather")]
    pub workload: String,
    /// Events per closed-loop step.
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// The closed-loop steps: publishes in flight.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 64, 256])]
    pub concurrency: Vec<usize>,
    /// The open-loop runs, as shares of the best closed-loop throughput.
    #[arg(long, value_delimiter = ',', default_values_t = [0.25, 0.5, 0.75])]
    pub open_loop_fractions: Vec<f64>,
    /// How long each open-loop run sends, in seconds.
    #[arg(long, default_value_t = 10)]
    pub open_loop_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ComponentCommand {
    /// Compile, check and swap in a component; requests in flight finish on the old one.
    Deploy {
        /// The component (.wasm built for wasm32-wasip2, world votes:platform/producer).
        file: PathBuf,
    },
    /// Show the serving component and the previous one.
    List,
    /// Swap the previous component back in.
    Rollback,
    /// The fleet's deploys and rollbacks, oldest first (hosts that follow a fleet topic).
    History,
    /// Every component of the application: routes, topics, limits, load and versions.
    App,
    /// Make the host re-read its manifest: routes and components added or removed take effect
    /// without a restart.
    Reload,
    /// Make a fleet deploy key pair: the private key (mode 0600) and KEY.pub for the hosts
    /// (--deploy-public-key-file, or its text in VOTES_DEPLOY_PUBLIC_KEY).
    Keygen {
        /// Where to write the private key (never overwritten) [default: <state>/run/deploy-key].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// How `votectl component` reaches the admin API (`--host-admin-port` sets the port, for example
/// of a `kubectl port-forward`).
#[derive(Args, Debug)]
pub struct ComponentArgs {
    /// The admin API's bearer token [default: the one `votectl up` wrote to <state>/run/admin-token].
    #[arg(long, env = "VOTES_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (the host reads the same variable).
    #[arg(long, env = "VOTES_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The fleet's deploy key that signs deploys and rollbacks [default: <state>/run/deploy-key,
    /// which `votectl up` writes, when it exists; without a key, deploys are unsigned and only a
    /// host with no fleet topic takes them].
    #[arg(long, env = "VOTES_DEPLOY_KEY_FILE")]
    pub deploy_key_file: Option<PathBuf>,
    /// The component to deploy, list or roll back (its id in the manifest, e.g. weather-rest)
    /// [default: the primary one, routed at `/...`].
    #[arg(long, global = true)]
    pub component: Option<String>,
    #[command(subcommand)]
    pub command: ComponentCommand,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Votes per producer per round.
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// Requests in flight at once (connections for REST).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Rounds of every path; the order rotates and medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The paths to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ProducerPath::ALL)]
    pub paths: Vec<ProducerPath>,
    /// Also measure throughput at each of these concurrencies (comma-separated, e.g. 1,8,64,256),
    /// `--sweep-count` votes per path and step.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<usize>,
    /// Votes per path at each sweep step.
    #[arg(long, default_value_t = 5_000)]
    pub sweep_count: u64,
    /// Also run each path open loop (votes sent on a fixed schedule, whatever the answers) at this
    /// share of its measured throughput, e.g. 0.5; latency is measured from each vote's scheduled
    /// send time (no coordinated omission).
    #[arg(long)]
    pub open_loop_fraction: Option<f64>,
    /// Open loop at this fixed rate (votes/s) on every path instead of a share of its throughput.
    #[arg(long)]
    pub open_loop_rate: Option<f64>,
    /// How long each open-loop run lasts, in seconds.
    #[arg(long, default_value_t = 10)]
    pub open_loop_secs: u64,
    /// The most votes in flight in an open-loop run (the rest wait, their wait counted).
    #[arg(long, default_value_t = 1024)]
    pub open_loop_max_in_flight: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A workload of the manifest (`weather`, `ballots`, ...) instead of the band votes.
    #[arg(long)]
    pub workload: Option<String>,
}

#[derive(Args, Debug)]
pub struct RecountArgs {
    /// Redis URL of the counters [default: the local stack's Redis].
    #[arg(long)]
    pub redis_url: Option<String>,
    /// MongoDB URL of the vote logs [default: the local stack's MongoDB].
    #[arg(long)]
    pub mongo_url: Option<String>,
    /// Log documents counted per Redis script call.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// The most distinct band (and album) names the leaderboards hold (the consumer's --name-cap).
    #[arg(long, env = "VOTES_NAME_CAP", default_value_t = vote_store::votes::DEFAULT_NAME_CAP)]
    pub name_cap: u64,
    /// Print the report as JSON (no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Which producer to send votes through.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerPath {
    /// The native tonic gRPC producer.
    Grpc,
    /// The REST producer component in the wasm host.
    Rest,
    /// The host's native REST baseline (`votes-host --native`): the same server without the sandbox.
    Native,
    /// The REST producer component in a second wasm host that reuses each instance for up to 128
    /// requests (`--instance-reuse 128`): `bench` starts that host for the run, beside the
    /// stack's, so the two are measured side by side.
    RestReuse,
    /// The REST producer component in a second wasm host that serves it through `wasi:http`
    /// (`--wasi-http-only`) instead of its one-call handler: `bench` starts that host for the
    /// run, so the two entries are measured side by side.
    RestWasiHttp,
    /// The REST producer component in the wasm host, over HTTP/2 cleartext (h2c): every request
    /// a stream of one multiplexed connection, as gRPC's calls are.
    RestH2,
}

impl ProducerPath {
    /// Every path, in the order reports list them.
    pub const ALL: [ProducerPath; 3] = [ProducerPath::Rest, ProducerPath::Native, ProducerPath::Grpc];

    /// The path's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProducerPath::Grpc => "grpc",
            ProducerPath::Rest => "rest",
            ProducerPath::Native => "native",
            ProducerPath::RestH2 => "rest-h2",
            ProducerPath::RestReuse => "rest-reuse",
            ProducerPath::RestWasiHttp => "rest-wasi-http",
        }
    }
}

#[derive(Args, Debug)]
pub struct CastArgs {
    /// The producer to send through.
    #[arg(long, value_enum, default_value = "grpc")]
    pub path: ProducerPath,
    /// How many votes to send (the data set is cycled through).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// A traffic file in the seeds' format (a JSON array of {name, album, year, rank}); the
    /// shipped data set of Guatemalan bands when absent.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// How many votes are in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the local stack lives; every value has an env variable and a documented default.
#[derive(Args, Debug)]
pub struct StackArgs {
    /// State directory for logs, pid files and data [default: <repo>/.votes].
    #[arg(long, global = true, env = "VOTES_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address every local part binds to and is reached at.
    #[arg(long, global = true, env = "VOTES_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Kafka (Tansu) port.
    #[arg(long, global = true, env = "VOTES_KAFKA_PORT", default_value_t = defaults::DEFAULT_KAFKA_PORT)]
    pub kafka_port: u16,
    /// Redis port.
    #[arg(long, global = true, env = "VOTES_REDIS_PORT", default_value_t = defaults::DEFAULT_REDIS_PORT)]
    pub redis_port: u16,
    /// MongoDB (NX-27017) port.
    #[arg(long, global = true, env = "VOTES_MONGO_PORT", default_value_t = defaults::DEFAULT_MONGO_PORT)]
    pub mongo_port: u16,
    /// gRPC producer port.
    #[arg(long, global = true, env = "VOTES_GRPC_PORT", default_value_t = defaults::DEFAULT_GRPC_PORT)]
    pub grpc_port: u16,
    /// gRPC producer metrics port.
    #[arg(long, global = true, env = "VOTES_GRPC_METRICS_PORT", default_value_t = defaults::DEFAULT_GRPC_METRICS_PORT)]
    pub grpc_metrics_port: u16,
    /// Consumer metrics port.
    #[arg(long, global = true, env = "VOTES_CONSUMER_METRICS_PORT", default_value_t = defaults::DEFAULT_CONSUMER_METRICS_PORT)]
    pub consumer_metrics_port: u16,
    /// The tansu binary [default: tansu on PATH or in ~/.cargo/bin].
    #[arg(long, global = true, env = "VOTES_TANSU_BIN")]
    pub tansu_bin: Option<PathBuf>,
    /// The redis-server binary [default: redis-server on PATH].
    #[arg(long, global = true, env = "VOTES_REDIS_BIN")]
    pub redis_bin: Option<PathBuf>,
    /// The nx-27017 binary [default: <repo>/.venv/bin/nx-27017].
    #[arg(long, global = true, env = "VOTES_NX_BIN")]
    pub nx_bin: Option<PathBuf>,
    /// wasm host HTTP port.
    #[arg(long, global = true, env = "VOTES_HOST_PORT", default_value_t = defaults::DEFAULT_HOST_PORT)]
    pub host_port: u16,
    /// wasm host admin API port (loopback).
    #[arg(long, global = true, env = "VOTES_HOST_ADMIN_PORT", default_value_t = defaults::DEFAULT_HOST_ADMIN_PORT)]
    pub host_admin_port: u16,
    /// Native REST baseline port (`votes-host --native`).
    #[arg(long, global = true, env = "VOTES_NATIVE_PORT", default_value_t = defaults::DEFAULT_NATIVE_PORT)]
    pub native_port: u16,
    /// The port of the instance-reusing wasm host `votectl bench` starts for `--paths rest-reuse`.
    #[arg(long, global = true, env = "VOTES_REUSE_PORT", default_value_t = defaults::DEFAULT_REUSE_PORT)]
    pub reuse_port: u16,
    /// The port of the `wasi:http`-only wasm host `votectl bench` starts for `--paths rest-wasi-http`.
    #[arg(long, global = true, env = "VOTES_WASI_HTTP_PORT", default_value_t = defaults::DEFAULT_WASI_HTTP_PORT)]
    pub wasi_http_port: u16,
    /// Results web app port.
    #[arg(long, global = true, env = "VOTES_RESULTS_PORT", default_value_t = defaults::DEFAULT_RESULTS_PORT)]
    pub results_port: u16,
    /// Prometheus port (UI and query API).
    #[arg(long, global = true, env = "VOTES_PROMETHEUS_PORT", default_value_t = defaults::DEFAULT_PROMETHEUS_PORT)]
    pub prometheus_port: u16,
    /// The prometheus binary [default: prometheus on PATH].
    #[arg(long, global = true, env = "VOTES_PROMETHEUS_BIN")]
    pub prometheus_bin: Option<PathBuf>,
    /// The RabbitMQ node's stream port (started only when the manifest binds a topic to RabbitMQ).
    #[arg(long, global = true, env = "VOTES_RABBITMQ_PORT", default_value_t = defaults::DEFAULT_RABBITMQ_PORT)]
    pub rabbitmq_port: u16,
    /// The RabbitMQ node's Erlang distribution port (loopback).
    #[arg(long, global = true, env = "VOTES_RABBITMQ_DIST_PORT", default_value_t = defaults::DEFAULT_RABBITMQ_DIST_PORT)]
    pub rabbitmq_dist_port: u16,
    /// The rabbitmq-server start script [default: /usr/lib/rabbitmq/bin/rabbitmq-server, or on PATH].
    #[arg(long, global = true, env = "VOTES_RABBITMQ_BIN")]
    pub rabbitmq_bin: Option<PathBuf>,
    /// The component the host serves first [default: <target>/wasm32-wasip2/release/vote_rest.wasm].
    #[arg(long, global = true, env = "VOTES_HOST_COMPONENT")]
    pub component: Option<PathBuf>,
    /// Fail instead of reusing a Kafka, Redis or MongoDB that already answers on its port.
    #[arg(long, global = true)]
    pub no_reuse: bool,
    /// Serve only the band votes' component on every path, without the application manifest
    /// (spin.toml): the one-component host, for comparing what the platform costs.
    #[arg(long, global = true, conflicts_with = "manifest")]
    pub no_manifest: bool,
    /// The application manifest the stack serves and counts (a workload moved to RabbitMQ, say)
    /// [default: <repo>/spin.toml].
    #[arg(long, global = true, env = "VOTES_MANIFEST")]
    pub manifest: Option<PathBuf>,
}

impl StackArgs {
    pub fn to_config(&self) -> StackConfig {
        let mut config = StackConfig::local_defaults();
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        config.host = self.host.clone();
        config.kafka_port = self.kafka_port;
        config.redis_port = self.redis_port;
        config.mongo_port = self.mongo_port;
        config.grpc_port = self.grpc_port;
        config.grpc_metrics_port = self.grpc_metrics_port;
        config.consumer_metrics_port = self.consumer_metrics_port;
        if let Some(bin) = &self.tansu_bin {
            config.tansu_bin = bin.clone();
        }
        if let Some(bin) = &self.redis_bin {
            config.redis_bin = bin.clone();
        }
        if let Some(bin) = &self.nx_bin {
            config.nx_bin = bin.clone();
        }
        config.host_port = self.host_port;
        config.host_admin_port = self.host_admin_port;
        if let Some(manifest) = &self.manifest {
            config.manifest = Some(manifest.clone());
        }
        if self.no_manifest {
            config.manifest = None;
        }
        config.native_port = self.native_port;
        config.reuse_port = self.reuse_port;
        config.wasi_http_port = self.wasi_http_port;
        config.results_port = self.results_port;
        config.prometheus_port = self.prometheus_port;
        if let Some(bin) = &self.prometheus_bin {
            config.prometheus_bin = bin.clone();
        }
        config.rabbitmq_port = self.rabbitmq_port;
        config.rabbitmq_dist_port = self.rabbitmq_dist_port;
        if let Some(bin) = &self.rabbitmq_bin {
            config.rabbitmq_bin = bin.clone();
        }
        if let Some(component) = &self.component {
            config.component = component.clone();
        }
        config.reuse_running = !self.no_reuse;
        config
    }
}
