//! The `consumer` binary: flags and environment to [`consumer::Settings`], then the batch loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::routing::get;
use clap::Parser;
use anyhow::Context;
use consumer::health::Health;
use vote_platform::workload::Format;
use vote_platform::{Manifest, WorkloadSpec};
use vote_service::config_check;

/// Reads votes from Kafka and keeps the Redis counters and the MongoDB logs, once per vote.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Kafka bootstrap brokers.
    #[arg(long, env = "VOTES_KAFKA_BROKERS", default_value = vote_kafka::DEFAULT_BROKERS)]
    brokers: String,
    /// The topic to read.
    #[arg(long, env = "VOTES_TOPIC", default_value = vote_core::TOPIC)]
    topic: String,
    /// The dead-letter topic: messages that cannot be counted go there (a JSON envelope with the
    /// reason and the original record) before their offset is committed.
    #[arg(long, env = "VOTES_DLQ_TOPIC", default_value = vote_kafka::DLQ_TOPIC)]
    dlq_topic: String,
    /// The consumer group; replicas in one group share the partitions.
    #[arg(long, env = "VOTES_CONSUMER_GROUP", default_value = vote_kafka::CONSUMER_GROUP)]
    group: String,
    /// Redis URL for the live counters (its maxmemory-policy must be `noeviction`).
    #[arg(long, env = "VOTES_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// MongoDB URL for the vote logs.
    #[arg(long, env = "VOTES_MONGO_URL", default_value = "mongodb://127.0.0.1:27017")]
    mongo_url: String,
    /// Where `/metrics`, `/livez` (the process serves), `/readyz` (it counts; also `/healthz`) are served.
    #[arg(long, env = "VOTES_CONSUMER_METRICS_ADDR", default_value = "0.0.0.0:9101")]
    metrics_addr: SocketAddr,
    /// The most messages in one batch.
    #[arg(long, env = "VOTES_CONSUMER_BATCH_MAX", default_value_t = 500)]
    batch_max: usize,
    /// How long a batch waits for more messages after its first, in milliseconds.
    #[arg(long, env = "VOTES_CONSUMER_BATCH_LINGER_MS", default_value_t = 20)]
    batch_linger_ms: u64,
    /// The longest the broker may hold a fetch that finds nothing new, in milliseconds
    /// (librdkafka's fetch.wait.max.ms, whose own default is 500): a bound on how late a vote is
    /// seen, paid for with more fetch requests while idle.
    #[arg(long, env = "VOTES_CONSUMER_FETCH_WAIT_MS", default_value_t = 20)]
    fetch_wait_ms: u64,
    /// How long vote ids are remembered for deduplication of client retries, in seconds.
    #[arg(long, env = "VOTES_CONSUMER_SEEN_TTL_SECS", default_value_t = vote_store::counters::DEFAULT_SEEN_TTL.as_secs())]
    seen_ttl_secs: u64,
    /// The most distinct band (and album) names the leaderboards hold; votes for names beyond it
    /// are counted in the total and the leaderboard's overflow.
    #[arg(long, env = "VOTES_NAME_CAP", default_value_t = vote_store::votes::DEFAULT_NAME_CAP)]
    name_cap: u64,
    /// `/healthz` answers 503 after this many seconds with lag but no batch written, or with a
    /// store unreachable.
    #[arg(long, env = "VOTES_CONSUMER_STALL_SECS", default_value_t = 30)]
    stall_secs: u64,
    /// How long the group coordinator waits for a heartbeat before it drops this member and hands
    /// its partitions to the others, in milliseconds.
    #[arg(long, env = "VOTES_CONSUMER_SESSION_TIMEOUT_MS", default_value_t = vote_kafka::SESSION_TIMEOUT.as_millis() as u64)]
    session_timeout_ms: u64,
    /// The application manifest (`spin.toml`): each JSON workload it declares has its topic read
    /// too, its events counted by the workload's spec and logged in `votes.events_<workload>`.
    /// Without it only the votes topic is read.
    #[arg(long, env = "VOTES_MANIFEST")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    rabbitmq: vote_rabbit::RabbitArgs,
    /// Fault-test hook: milliseconds to sleep between the writes and the commit.
    #[arg(long, hide = true, default_value_t = 0)]
    pause_before_commit_ms: u64,
    /// Check the flags and environment, print the effective configuration and exit (touches no
    /// network and no file).
    #[arg(long)]
    check_config: bool,
}

impl Args {
    fn problems(&self) -> Vec<String> {
        [
            config_check::check_brokers(&self.brokers),
            config_check::check_topic("topic", &self.topic),
            config_check::check_url("redis-url", &self.redis_url, config_check::REDIS_SCHEMES),
            config_check::check_url("mongo-url", &self.mongo_url, config_check::MONGO_SCHEMES),
            (self.group.trim().is_empty()).then(|| "group: must not be empty".to_owned()),
            (self.batch_max == 0).then(|| "batch-max: must be at least 1".to_owned()),
            (self.name_cap == 0).then(|| "name-cap: must be at least 1".to_owned()),
            // librdkafka's own bounds for session.timeout.ms.
            (!(1_000..=3_600_000).contains(&self.session_timeout_ms)).then(|| "session-timeout-ms: must be between 1000 and 3600000".to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The JSON workloads of the manifest at `path`; a workload on the votes or the dead-letter
/// topic, or vote events on another topic than `topic`, is refused.
fn workloads(path: &Path, topic: &str, dlq_topic: &str) -> anyhow::Result<Vec<WorkloadSpec>> {
    let manifest = Manifest::load(path).with_context(|| format!("--manifest {}", path.display()))?;
    let mut workloads = Vec::new();
    for spec in manifest.workloads.into_values() {
        match spec.format {
            Format::VoteEvent => anyhow::ensure!(
                spec.topic == topic,
                "--manifest {}: workload {} has vote events on topic {:?}, but the consumer reads votes from {topic:?} (--topic)",
                path.display(),
                spec.name,
                spec.topic
            ),
            Format::Json => {
                anyhow::ensure!(
                    spec.topic != topic && spec.topic != dlq_topic,
                    "--manifest {}: workload {} cannot use topic {:?}: it is the votes or the dead-letter topic",
                    path.display(),
                    spec.name,
                    spec.topic
                );
                workloads.push(spec);
            }
        }
    }
    Ok(workloads)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let (args, matches) = config_check::parse::<Args>();
    config_check::finish::<Args>(args.check_config, &matches, args.problems())?;
    let workloads = match &args.manifest {
        Some(path) => workloads(path, &args.topic, &args.dlq_topic)?,
        None => Vec::new(),
    };
    let on_rabbit: Vec<String> = workloads.iter().filter(|w| w.broker == vote_platform::workload::Broker::Rabbitmq).map(|w| w.topic.clone()).collect();
    let rabbitmq = args.rabbitmq.settings(&on_rabbit)?;
    let shutdown = vote_service::Shutdown::on_signals();
    let metrics = consumer::metrics::Metrics::new();
    let health = Health::new(Duration::from_secs(args.stall_secs.max(1)));
    let registry = metrics.registry.clone();
    let answer = health.clone();
    let router = axum::Router::new()
        .route("/metrics", get(move || std::future::ready(vote_service::render_metrics(&registry))))
        .route("/livez", get(|| std::future::ready("alive")))
        .route("/readyz", get({
            let answer = answer.clone();
            move || std::future::ready(answer.answer())
        }))
        .route("/healthz", get(move || std::future::ready(answer.answer())));
    let bound = vote_service::spawn_http(args.metrics_addr, router, shutdown.clone()).await?;
    tracing::info!(%bound, "metrics on http://{bound}/metrics, readiness on http://{bound}/readyz");
    let settings = consumer::Settings {
        brokers: args.brokers,
        topic: args.topic,
        dlq_topic: args.dlq_topic,
        group: args.group,
        redis_url: args.redis_url,
        mongo_url: args.mongo_url,
        batch_max: args.batch_max.max(1),
        batch_linger: Duration::from_millis(args.batch_linger_ms),
        fetch_wait: Duration::from_millis(args.fetch_wait_ms),
        seen_ttl: Duration::from_secs(args.seen_ttl_secs),
        name_cap: args.name_cap,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        pause_before_commit: Duration::from_millis(args.pause_before_commit_ms),
        rabbitmq,
        workloads,
    };
    consumer::run(settings, metrics, health, shutdown).await
}
