//! The `consumer` binary: flags and environment to [`consumer::Settings`], then the batch loop.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

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
    /// The consumer group; replicas in one group share the partitions.
    #[arg(long, env = "VOTES_CONSUMER_GROUP", default_value = vote_kafka::CONSUMER_GROUP)]
    group: String,
    /// Redis URL for the live counters.
    #[arg(long, env = "VOTES_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// MongoDB URL for the vote logs.
    #[arg(long, env = "VOTES_MONGO_URL", default_value = "mongodb://127.0.0.1:27017")]
    mongo_url: String,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = "VOTES_CONSUMER_METRICS_ADDR", default_value = "0.0.0.0:9101")]
    metrics_addr: SocketAddr,
    /// The most messages in one batch.
    #[arg(long, env = "VOTES_CONSUMER_BATCH_MAX", default_value_t = 500)]
    batch_max: usize,
    /// How long a batch waits for more messages after its first, in milliseconds.
    #[arg(long, env = "VOTES_CONSUMER_BATCH_LINGER_MS", default_value_t = 20)]
    batch_linger_ms: u64,
    /// How long vote ids are remembered for deduplication, in seconds.
    #[arg(long, env = "VOTES_CONSUMER_SEEN_TTL_SECS", default_value_t = consumer::counters::DEFAULT_SEEN_TTL.as_secs())]
    seen_ttl_secs: u64,
    /// Fault-test hook: milliseconds to sleep between the writes and the commit.
    #[arg(long, hide = true, default_value_t = 0)]
    pause_before_commit_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let args = Args::parse();
    let shutdown = vote_service::Shutdown::on_signals();
    let metrics = consumer::metrics::Metrics::new();
    let bound = vote_service::spawn_http(args.metrics_addr, vote_service::metrics_router(metrics.registry.clone()), shutdown.clone()).await?;
    tracing::info!(%bound, "metrics on http://{bound}/metrics");
    let settings = consumer::Settings {
        brokers: args.brokers,
        topic: args.topic,
        group: args.group,
        redis_url: args.redis_url,
        mongo_url: args.mongo_url,
        batch_max: args.batch_max.max(1),
        batch_linger: Duration::from_millis(args.batch_linger_ms),
        seen_ttl: Duration::from_secs(args.seen_ttl_secs),
        pause_before_commit: Duration::from_millis(args.pause_before_commit_ms),
    };
    consumer::run(settings, metrics, shutdown).await
}
