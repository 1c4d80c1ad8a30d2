//! The `votes-host` binary: flags to a [`host::runtime::Runtime`], the first component, the HTTP
//! server and the admin API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use host::metrics::Metrics;
use host::registry::Registry;
use host::runtime::{Limits, Runtime};
use host::serve::Server;
use vote_kafka::{Publisher, PublisherSettings};

/// Serves HTTP through a producer component (votes:platform/producer) and publishes to Kafka.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The component to serve first (a .wasm built for wasm32-wasip2).
    #[arg(long, env = "VOTES_HOST_COMPONENT")]
    component: PathBuf,
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
    /// How long to wait for the broker's acknowledgement, in ms.
    #[arg(long, env = "VOTES_PUBLISH_TIMEOUT_MS", default_value_t = vote_kafka::DEFAULT_PUBLISH_TIMEOUT.as_millis() as u64)]
    publish_timeout_ms: u64,
    /// Topics components may publish to.
    #[arg(long = "allowed-topic", env = "VOTES_HOST_ALLOWED_TOPICS", value_delimiter = ',', default_value = "votes")]
    allowed_topics: Vec<String>,
    /// The most linear memory one instance may use, in MiB.
    #[arg(long, env = "VOTES_HOST_MEMORY_MIB", default_value_t = 64)]
    memory_mib: usize,
    /// How long one request may run, in ms (keep it above the publish timeout).
    #[arg(long, env = "VOTES_HOST_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// How many instances may run at once.
    #[arg(long, env = "VOTES_HOST_MAX_INSTANCES", default_value_t = 256)]
    max_instances: u32,
}

fn admin_token(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(token) = &args.admin_token {
        return Ok(Some(token.clone()));
    }
    match &args.admin_token_file {
        Some(path) => Ok(Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned())),
        None => Ok(None),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let args = Args::parse();
    let shutdown = vote_service::Shutdown::on_signals();
    let mut settings = PublisherSettings::new(args.brokers.clone(), "votes-host");
    settings.timeout = Duration::from_millis(args.publish_timeout_ms);
    let publisher = Publisher::new(&settings).context("creating the Kafka producer")?;
    let limits = Limits {
        memory_bytes: args.memory_mib * 1024 * 1024,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_instances: args.max_instances,
    };
    let runtime = Arc::new(Runtime::new(limits, publisher.clone(), args.allowed_topics.clone())?);
    let bytes = std::fs::read(&args.component).with_context(|| format!("reading {}", args.component.display()))?;
    let first = Registry::load(&runtime, bytes).await.with_context(|| format!("loading {}", args.component.display()))?;
    tracing::info!(version = %first.version, "component loaded");
    let metrics = Metrics::new();
    let registry = Arc::new(Registry::new(first, metrics.clone()));

    if let Some(token) = admin_token(&args)? {
        let router = host::admin::router(runtime.clone(), registry.clone(), metrics.clone(), token);
        let bound = vote_service::spawn_http(args.admin_addr, router, shutdown.clone()).await?;
        tracing::info!(%bound, "admin API on http://{bound}/components");
    } else {
        tracing::warn!("no admin token: the admin API is off");
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, brokers = %args.brokers, "votes-host serving");
    let server = Arc::new(Server { runtime, registry, metrics });
    host::serve::serve(listener, server, shutdown).await;
    publisher.flush(settings.timeout);
    tracing::info!("votes-host stopped");
    Ok(())
}
