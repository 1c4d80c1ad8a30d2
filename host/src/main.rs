//! The `votes-host` binary: flags to a [`host::runtime::Runtime`], the application (a manifest or
//! one component), the fleet topic it follows (if any), the HTTP server and the admin API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use host::fleet::{Fleet, FleetSettings};
use host::metrics::Metrics;
use host::app::{Application, Defaults, Source};
use host::runtime::{Limits, Runtime};
use host::serve::Server;
use host::shed::{self, Gate, ServeLimits};
use vote_kafka::{Publisher, PublisherSettings};
use vote_service::config_check;

/// Serves HTTP through producer components (votes:platform/producer) and publishes to Kafka.
#[derive(Parser, Debug)]
#[command(name = "votes-host", version)]
#[command(group(clap::ArgGroup::new("application").required(true).args(["component", "manifest"])))]
struct Args {
    /// One component to serve on every path (a .wasm built for wasm32-wasip2), publishing to
    /// --allowed-topic.
    #[arg(long, env = "VOTES_HOST_COMPONENT")]
    component: Option<PathBuf>,
    /// The application manifest (spin.toml): routes, components and each one's topics and
    /// limits. Reloaded on SIGHUP or `POST /app/reload` on the admin API.
    #[arg(long, env = "VOTES_MANIFEST", conflicts_with = "component")]
    manifest: Option<PathBuf>,
    /// Where the manifest's component files are, looked up by file name (for example
    /// `$CARGO_TARGET_DIR/wasm32-wasip2/release`); by default, their paths in the manifest,
    /// relative to its directory.
    #[arg(long, env = "VOTES_HOST_COMPONENT_DIR", requires = "manifest")]
    component_dir: Option<PathBuf>,
    /// Where HTTP requests are served.
    #[arg(long, env = "VOTES_HOST_ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Where the admin API listens (loopback by default).
    #[arg(long, env = "VOTES_HOST_ADMIN_ADDR", default_value = "127.0.0.1:8081")]
    admin_addr: SocketAddr,
    /// Bearer token of the admin API; without it (or --admin-token-file) the admin API is off.
    #[arg(long, env = "VOTES_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A file holding the admin token.
    #[arg(long, env = "VOTES_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Kafka bootstrap brokers.
    #[arg(long, env = "VOTES_KAFKA_BROKERS", default_value = vote_kafka::DEFAULT_BROKERS)]
    brokers: String,
    #[command(flatten)]
    rabbitmq: vote_rabbit::RabbitArgs,
    /// How long to wait for the broker's acknowledgement, in ms (the request timeout must exceed
    /// it by at least 1.2 s: checked at start-up).
    #[arg(long, env = "VOTES_PUBLISH_TIMEOUT_MS", default_value_t = vote_kafka::DEFAULT_PUBLISH_TIMEOUT.as_millis() as u64)]
    publish_timeout_ms: u64,
    /// The most messages queued for the broker; beyond it votes get 503 "overloaded" at once
    /// (librdkafka's queue.buffering.max.messages, default 100000).
    #[arg(long, env = "VOTES_PUBLISH_QUEUE_MAX_MESSAGES")]
    publish_queue_max_messages: Option<u32>,
    /// Topics the component given with --component may publish to (with --manifest, each
    /// component's `topics`).
    #[arg(long = "allowed-topic", env = "VOTES_HOST_ALLOWED_TOPICS", value_delimiter = ',', default_value = "votes")]
    allowed_topics: Vec<String>,
    /// The most linear memory one instance may use, in MiB (a component's `memory_mib` may set
    /// less).
    #[arg(long, env = "VOTES_HOST_MEMORY_MIB", default_value_t = 64)]
    memory_mib: usize,
    /// How long one request may run, in ms (keep it above the publish timeout).
    #[arg(long, env = "VOTES_HOST_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// How many instances may exist at once (the pooling allocator's size).
    #[arg(long, env = "VOTES_HOST_MAX_INSTANCES", default_value_t = 256)]
    max_instances: u32,
    /// How much of each instance slot's linear memory is reset in place when its instance ends,
    /// in KiB; the rest is returned to the OS. More is faster per request and keeps more of every
    /// slot ever used resident.
    #[arg(long, env = "VOTES_HOST_POOL_KEEP_RESIDENT_KIB", default_value_t = host::runtime::KEEP_RESIDENT_BYTES / 1024)]
    pool_keep_resident_kib: usize,
    /// Write /tmp/perf-<pid>.map as components are compiled, so `perf report` names the guests'
    /// functions (wasm[0]::function[N]) instead of showing bare addresses. For profiling only.
    #[arg(long, env = "VOTES_HOST_PERF_MAP", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    perf_map: bool,
    /// How many requests may run in components at once; more get a fast 503 with Retry-After.
    /// Must stay below --max-instances (a deploy's check needs an instance too). Components
    /// with a `max_in_flight` share take it; the others split what is left.
    #[arg(long, env = "VOTES_HOST_MAX_IN_FLIGHT", default_value_t = shed::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// How many requests may wait, in arrival order, for a place once --max-in-flight run; more
    /// get a fast 503 with Retry-After. 0: no queue.
    #[arg(long, env = "VOTES_HOST_MAX_QUEUED", default_value_t = shed::DEFAULT_MAX_QUEUED)]
    max_queued: usize,
    /// How long a queued request waits for its place before the 503, in ms (at most half of
    /// --request-timeout-ms).
    #[arg(long, env = "VOTES_HOST_QUEUE_WAIT_MS", default_value_t = shed::DEFAULT_QUEUE_WAIT.as_millis() as u64)]
    queue_wait_ms: u64,
    /// How many requests one instance of a component may serve, one after another, when its
    /// manifest entry sets no `instance_reuse`. 1 (the default): a fresh instance per request.
    /// Reuse is faster and weakens isolation (a request can see what an earlier one left in the
    /// instance's memory); an instance whose request trapped or timed out is never reused.
    #[arg(long, env = "VOTES_HOST_INSTANCE_REUSE", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=vote_platform::manifest::MAX_INSTANCE_REUSE as i64))]
    instance_reuse: u32,
    /// Serve every component through `wasi:http/incoming-handler`, even one that exports the
    /// one-call `votes:platform/handler` (which the host otherwise prefers: one call per request
    /// instead of some 25); to measure or test the `wasi:http` path.
    #[arg(long, env = "VOTES_HOST_WASI_HTTP_ONLY", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    wasi_http_only: bool,
    /// How many HTTP connections may be open at once; when full, the connection idle the longest
    /// (or that never sent a request) is closed to make room, and with none idle a new one gets
    /// 503 and is closed.
    #[arg(long, env = "VOTES_HOST_MAX_CONNECTIONS", default_value_t = shed::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// How long a client may take to send a request's headers, in ms; also how long a new
    /// connection may take to deliver its first request (a client that sends nothing, or only
    /// part of an HTTP/2 preface, is closed after it) and an idle HTTP/1.1 keep-alive stays open.
    #[arg(long, env = "VOTES_HOST_HEADER_READ_TIMEOUT_MS", default_value_t = shed::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
    header_read_timeout_ms: u64,
    /// How long a connection with no request in progress stays open, in ms (HTTP/2 included).
    #[arg(long, env = "VOTES_HOST_IDLE_TIMEOUT_MS", default_value_t = vote_service::listen::DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
    idle_timeout_ms: u64,
    /// How many HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "VOTES_HOST_MAX_H2_STREAMS", default_value_t = vote_service::listen::DEFAULT_MAX_H2_STREAMS)]
    max_h2_streams: u32,
    /// How many bytes of request bodies may be held in memory at once, over every connection and
    /// stream; a body read past it gets a fast 503.
    #[arg(long, env = "VOTES_HOST_MAX_BUFFERED_BODY_BYTES", default_value_t = shed::DEFAULT_MAX_BUFFERED_BODY_BYTES)]
    max_buffered_body_bytes: usize,
    /// How long a client may take to send a whole request body, in ms; after it the request
    /// gets 408 and the connection is closed.
    #[arg(long, env = "VOTES_HOST_BODY_READ_TIMEOUT_MS", default_value_t = shed::DEFAULT_BODY_READ_TIMEOUT.as_millis() as u64)]
    body_read_timeout_ms: u64,
    /// The largest request body the host reads, in bytes (413 beyond it).
    #[arg(long, env = "VOTES_HOST_MAX_BODY_BYTES", default_value_t = shed::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// How long shutdown waits for requests in flight, in ms (keep it below the 15 s that
    /// `votectl down` waits before SIGKILL).
    #[arg(long, env = "VOTES_HOST_DRAIN_TIMEOUT_MS", default_value_t = shed::DEFAULT_DRAIN_TIMEOUT.as_millis() as u64)]
    drain_timeout_ms: u64,
    /// How long a deploy may take to compile and check a component, in ms (503 after it).
    #[arg(long, env = "VOTES_HOST_DEPLOY_TIMEOUT_MS", default_value_t = host::admin::DEFAULT_DEPLOY_TIMEOUT.as_millis() as u64)]
    deploy_timeout_ms: u64,
    /// A compacted Kafka topic of component deploys that every host of a fleet follows (for
    /// example `votes.components`); without it, deploys change this host only.
    #[arg(long, env = "VOTES_HOST_FLEET_TOPIC")]
    fleet_topic: Option<String>,
    /// Create the fleet topic (one partition, compacted, replication 1) when it is missing.
    #[arg(long, env = "VOTES_HOST_FLEET_CREATE_TOPIC", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    fleet_create_topic: bool,
    /// Answer the REST endpoints with native code over the same rules, server, limits and
    /// publisher instead of the component (the baseline that prices the sandbox; votes go on path
    /// `native`). The component is still loaded but never called; no admin API, no fleet.
    #[arg(long, env = "VOTES_HOST_NATIVE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new(), conflicts_with = "fleet_topic")]
    native: bool,
    #[command(flatten)]
    fleet_keys: host::deploy_auth::FleetKeyArgs,
    /// Check the flags and environment, print the effective configuration and exit (touches no
    /// network and no file).
    #[arg(long)]
    check_config: bool,
}

impl Args {
    fn serve_limits(&self) -> anyhow::Result<ServeLimits> {
        anyhow::ensure!(
            self.max_in_flight > 0 && self.max_in_flight < self.max_instances as usize,
            "--max-in-flight ({}) must be at least 1 and below --max-instances ({})",
            self.max_in_flight,
            self.max_instances
        );
        anyhow::ensure!(self.max_connections > 0, "--max-connections must be at least 1");
        anyhow::ensure!(
            self.max_buffered_body_bytes >= self.max_body_bytes,
            "--max-buffered-body-bytes ({}) must hold at least one body of --max-body-bytes ({})",
            self.max_buffered_body_bytes,
            self.max_body_bytes
        );
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_body_bytes: self.max_body_bytes,
            max_buffered_body_bytes: self.max_buffered_body_bytes,
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            max_queued: self.max_queued,
            // A queued request still needs its request timeout to run: it waits at most half of it.
            queue_wait: Duration::from_millis(self.queue_wait_ms.min(self.request_timeout_ms / 2)),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_h2_streams: self.max_h2_streams,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
        };
        let problems = limits.listen_limits().problems();
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(limits)
    }

    fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = config_check::check_brokers(&self.brokers).into_iter().collect();
        problems.extend(self.allowed_topics.iter().filter_map(|topic| config_check::check_topic("allowed-topic", topic)));
        if let Some(fleet_topic) = &self.fleet_topic {
            problems.extend(config_check::check_topic("fleet-topic", fleet_topic));
            if self.allowed_topics.contains(fleet_topic) {
                problems.push(format!("fleet-topic: {fleet_topic:?} must not be a topic components may publish to (allowed-topic)"));
            }
        }
        if self.memory_mib == 0 || self.max_instances == 0 {
            problems.push("memory-mib and max-instances: must be above 0".into());
        }
        problems
    }
}

/// Reloads the manifest on every SIGHUP (a refused one leaves the application as it was).
fn spawn_reload_on_hangup(app: Arc<Application>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reload the manifest through the admin API");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(error) = app.reload().await {
                tracing::warn!(%error, "manifest reload refused; the application is unchanged");
            }
        }
    });
}

/// This host's name in the fleet's history: the machine's (the pod's) name and the process id.
fn origin() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", hostname.trim(), std::process::id())
}

/// Kafka for every topic, and RabbitMQ (at --rabbitmq) for the ones the manifest binds to it.
fn brokers(args: &Args, kafka: Publisher, timeout: Duration) -> anyhow::Result<vote_rabbit::Brokers> {
    let on_rabbit = match &args.manifest {
        Some(path) => vote_platform::Manifest::load(path).with_context(|| format!("--manifest {}", path.display()))?.rabbitmq_topics(),
        None => Vec::new(),
    };
    let Some(mut settings) = args.rabbitmq.settings(&on_rabbit)? else {
        return Ok(vote_rabbit::Brokers::kafka(kafka));
    };
    settings.timeout = timeout;
    tracing::info!(endpoint = %settings.endpoint(), topics = ?on_rabbit, "publishing these topics to rabbitmq streams");
    Ok(vote_rabbit::Brokers::with_rabbit(kafka, vote_rabbit::StreamPublisher::new(settings), on_rabbit))
}

fn admin_token(args: &Args) -> anyhow::Result<Option<String>> {
    let token = match (&args.admin_token, &args.admin_token_file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned(),
        (None, None) => return Ok(None),
    };
    anyhow::ensure!(!token.is_empty(), "the admin token (--admin-token, --admin-token-file or VOTES_ADMIN_TOKEN[_FILE]) is empty: anyone could call the admin API; write a random token to the file (`votectl up` does) or leave both unset to turn the admin API off");
    Ok(Some(token))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let (args, matches) = config_check::parse::<Args>();
    config_check::finish::<Args>(args.check_config, &matches, args.problems())?;
    let serve_limits = args.serve_limits()?;
    let token = if args.native { None } else { admin_token(&args)? };
    let deploy_key = args.fleet_topic.as_ref().map(|_| args.fleet_keys.required_key()).transpose()?;
    let shutdown = vote_service::Shutdown::on_signals();
    let mut settings = PublisherSettings::new(args.brokers.clone(), "votes-host");
    settings.timeout = Duration::from_millis(args.publish_timeout_ms);
    settings.queue_max_messages = args.publish_queue_max_messages;
    vote_kafka::check_caller_deadline("request timeout (--request-timeout-ms)", Duration::from_millis(args.request_timeout_ms), settings.timeout)?;
    let publisher = Publisher::new(&settings).context("creating the Kafka producer")?;
    let brokers = brokers(&args, publisher.clone(), settings.timeout)?;
    let limits = Limits {
        memory_bytes: args.memory_mib * 1024 * 1024,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_instances: args.max_instances,
        keep_resident_bytes: args.pool_keep_resident_kib * 1024,
    };
    // `--perf-map`: wasmtime writes /tmp/perf-<pid>.map as it compiles each component.
    let profiler = if args.perf_map { wasmtime::ProfilingStrategy::PerfMap } else { wasmtime::ProfilingStrategy::None };
    let metrics = if args.native { Metrics::for_path(vote_core::Path::Native.as_str()) } else { Metrics::new() };
    let runtime = Arc::new(Runtime::new(limits.clone(), brokers, profiler)?.count_votes(metrics.votes.clone(), metrics.publish_refused.clone()).wasi_http_only(args.wasi_http_only));
    let source = match (&args.manifest, &args.component) {
        (Some(path), _) => Source::Manifest { path: path.clone(), component_dir: args.component_dir.clone() },
        (None, Some(path)) => Source::Single(path.clone()),
        (None, None) => unreachable!("clap requires one of --component and --manifest"),
    };
    let defaults = Defaults {
        topics: args.allowed_topics.clone(),
        memory_bytes: limits.memory_bytes,
        request_timeout: limits.request_timeout,
        max_in_flight: serve_limits.max_in_flight,
        max_queued: serve_limits.max_queued,
        queue_wait: serve_limits.queue_wait,
        instance_reuse: args.instance_reuse,
        max_instances: args.max_instances as usize,
        publish_timeout: settings.timeout,
    };
    let app = Arc::new(Application::load(source.clone(), runtime.clone(), metrics.clone(), defaults).await.with_context(|| format!("loading the application from {source:?}"))?);
    for component in app.view() {
        tracing::info!(component = %component.id, version = %component.versions[0].version, routes = ?component.routes, topics = ?component.topics, max_in_flight = component.max_in_flight, "serving");
    }
    if matches!(source, Source::Manifest { .. }) {
        spawn_reload_on_hangup(app.clone());
    }
    let refusals = host::deploy_auth::Refusals::register(&metrics.registry);
    let fleet = match &args.fleet_topic {
        Some(topic) => {
            let settings = FleetSettings {
                brokers: args.brokers.clone(),
                topic: topic.clone(),
                create_topic: args.fleet_create_topic,
                origin: origin(),
                deploy_key: deploy_key.clone().expect("a fleet host has its deploy key"),
                start_timeout: args.fleet_keys.fleet_start_timeout(),
            };
            let fleet = Fleet::start(settings, runtime.clone(), app.clone(), refusals).await.context("following the fleet topic")?;
            tracing::info!(%topic, "following the fleet topic");
            Some(Arc::new(fleet))
        }
        None => None,
    };

    if let Some(token) = token {
        let router = host::admin::router(runtime.clone(), app.clone(), metrics.clone(), token, Duration::from_millis(args.deploy_timeout_ms), fleet);
        let bound = vote_service::spawn_http(args.admin_addr, router, shutdown.clone()).await?;
        tracing::info!(%bound, "admin API on http://{bound}/components");
    } else {
        tracing::warn!(native = args.native, "no admin token (or --native): the admin API is off");
    }

    let listener = vote_service::listen::Listener::bind(args.listen, serve_limits.listen_limits(), metrics.listen.clone()).await?;
    tracing::info!(addr = %listener.local_addr()?, brokers = %args.brokers, "votes-host serving");
    let native = args.native.then(|| host::native::NativeRest::new(publisher.clone(), metrics.votes.clone()));
    if native.is_some() {
        tracing::info!(producer = host::native::PRODUCER, "answering the REST endpoints natively (--native)");
    }
    let gate = Gate::new(serve_limits, listener.table());
    let server = Arc::new(Server { runtime, app, metrics, gate, native, shutdown: shutdown.clone() });
    host::serve::serve(listener, server, shutdown).await;
    publisher.flush(settings.timeout);
    tracing::info!("votes-host stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Switches set through the environment take the usual spellings of yes and no (`1`, `yes`,
    /// `on`, `true` and their opposites), not only `true` and `false`.
    #[test]
    fn switches_from_the_environment_take_1_and_0() {
        // nextest runs each test in a process of its own, so these reach no other test.
        std::env::set_var("VOTES_HOST_PERF_MAP", "1");
        std::env::set_var("VOTES_HOST_WASI_HTTP_ONLY", "yes");
        std::env::set_var("VOTES_HOST_FLEET_CREATE_TOPIC", "on");
        std::env::set_var("VOTES_HOST_NATIVE", "0");
        let args = Args::try_parse_from(["votes-host", "--component", "vote_rest.wasm"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(args.perf_map && args.wasi_http_only && args.fleet_create_topic && !args.native);
    }
}
