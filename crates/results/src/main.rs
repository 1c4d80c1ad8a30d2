//! The `results` binary: flags and environment, the store connections, the poller and the routes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::Document;
use vote_service::config_check;

/// Serves the live results page and the vote log search.
#[derive(clap::Parser, Debug)]
#[command(version)]
struct Args {
    /// Where the page and the API are served.
    #[arg(long, env = "VOTES_RESULTS_ADDR", default_value = "0.0.0.0:8088")]
    addr: SocketAddr,
    /// Redis URL of the live counters.
    #[arg(long, env = "VOTES_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// MongoDB URL of the vote logs.
    #[arg(long, env = "VOTES_MONGO_URL", default_value = "mongodb://127.0.0.1:27017")]
    mongo_url: String,
    /// How often the shared poller reads `{votes}:total`, in milliseconds.
    #[arg(long, env = "VOTES_RESULTS_POLL_MS", default_value_t = results::live::DEFAULT_POLL_INTERVAL.as_millis() as u64)]
    poll_ms: u64,
    /// How many live event streams (`/api/events`, one per open page) may run at once; more get
    /// a fast 503 with Retry-After.
    #[arg(long, env = "VOTES_RESULTS_MAX_EVENT_STREAMS", default_value_t = results::app::DEFAULT_MAX_EVENT_STREAMS)]
    max_event_streams: usize,
    /// The application manifest (spin.toml) whose workloads the page and the API also show, each
    /// with its own live view and log search; without it, only the band contest.
    #[arg(long, env = "VOTES_MANIFEST")]
    manifest: Option<std::path::PathBuf>,
    /// The page's listener bounds.
    #[command(flatten)]
    connections: vote_service::listen::ListenArgs,
    /// Check the flags and environment, print the effective configuration and exit (touches no
    /// network and no file).
    #[arg(long)]
    check_config: bool,
}

impl Args {
    fn problems(&self) -> Vec<String> {
        [
            config_check::check_url("redis-url", &self.redis_url, config_check::REDIS_SCHEMES),
            config_check::check_url("mongo-url", &self.mongo_url, config_check::MONGO_SCHEMES),
            (self.poll_ms == 0).then(|| "poll-ms: must be at least 1".to_owned()),
            (self.max_event_streams == 0).then(|| "max-event-streams: must be at least 1".to_owned()),
        ]
        .into_iter()
        .flatten()
        .chain(self.connections.limits().problems())
        .collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let (args, matches) = config_check::parse::<Args>();
    config_check::finish::<Args>(args.check_config, &matches, args.problems())?;
    let mut shutdown = vote_service::Shutdown::on_signals();
    let metrics = results::metrics::Metrics::new();

    let redis_client = redis::Client::open(args.redis_url.as_str()).with_context(|| format!("Redis URL {}", args.redis_url))?;
    // Lazy: the page serves (live, not ready) while Redis is away, and reads once it answers.
    let redis_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(vote_store::counters::REDIS_CONNECT_TIMEOUT))
        .set_response_timeout(Some(vote_store::counters::REDIS_REPLY_TIMEOUT))
        .set_number_of_retries(1);
    let redis = redis::aio::ConnectionManager::new_lazy_with_config(redis_client, redis_config)
        .with_context(|| format!("Redis at {}", args.redis_url))?;
    let mut mongo_options = mongodb::options::ClientOptions::parse(&args.mongo_url)
        .await
        .with_context(|| format!("MongoDB URL {}", args.mongo_url))?;
    mongo_options.server_selection_timeout = Some(Duration::from_secs(5));
    let database = mongodb::Client::with_options(mongo_options)?.database("votes");
    let logs = database.collection::<Document>("logs");

    let interval = Duration::from_millis(args.poll_ms.max(10));
    let live = results::live::spawn(redis.clone(), interval, metrics.clone(), shutdown.clone());
    let workloads = match &args.manifest {
        Some(path) => {
            let manifest = vote_platform::Manifest::load(path).with_context(|| format!("manifest {}", path.display()))?;
            tracing::info!(workloads = ?manifest.workloads.keys().collect::<Vec<_>>(), "serving the manifest's workloads");
            Some(results::workloads::Workloads::start(manifest.workloads, &redis, &database, interval, &metrics, &shutdown))
        }
        None => None,
    };
    let metrics_registry = metrics.registry.clone();
    let sse_slots = std::sync::Arc::new(tokio::sync::Semaphore::new(args.max_event_streams));
    let state = results::app::AppState { redis, logs, live, metrics, shutdown: shutdown.clone(), sse_slots, workloads };
    let listen_metrics = vote_service::listen::ListenMetrics::register(&metrics_registry, "results");
    let listener = vote_service::listen::Listener::bind(args.addr, args.connections.limits(), listen_metrics).await?;
    let bound = vote_service::spawn_router(listener, results::app::router(state), shutdown.clone())?;
    tracing::info!(%bound, "results page on http://{bound}/");
    shutdown.wait().await;
    // Give the server a moment to end the event streams and finish in-flight requests.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
