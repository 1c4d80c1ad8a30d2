//! The `kafka-bridge` binary: flags and environment to [`kafka_bridge::server::Settings`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use kafka_bridge::server::{Settings, DEFAULT_ADDR, DEFAULT_MAX_BODY_BYTES};
use vote_kafka::PublisherSettings;

/// Serves the Kafka Bridge produce endpoint (POST /topics/{topic}) over an idempotent,
/// acks=all Kafka producer.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where the bridge listens (produce endpoint, /healthy, /ready, /healthz, /metrics).
    #[arg(long, env = "VOTES_BRIDGE_ADDR", default_value = DEFAULT_ADDR)]
    listen: SocketAddr,
    /// Kafka bootstrap brokers.
    #[arg(long, env = "VOTES_KAFKA_BROKERS", default_value = vote_kafka::DEFAULT_BROKERS)]
    brokers: String,
    /// The topics records may be sent to (comma-separated); a record for any other topic gets
    /// a per-record 404 error, as the Bridge answers for a topic it does not know.
    #[arg(long = "allowed-topic", env = "VOTES_BRIDGE_ALLOWED_TOPICS", value_delimiter = ',', default_value = "votes")]
    allowed_topics: Vec<String>,
    /// How long to wait for the broker's acknowledgement of a record before answering its error, in ms.
    #[arg(long, env = "VOTES_PUBLISH_TIMEOUT_MS", default_value_t = vote_kafka::DEFAULT_PUBLISH_TIMEOUT.as_millis() as u64)]
    publish_timeout_ms: u64,
    /// The largest record list accepted, in bytes (larger ones get 413).
    #[arg(long, env = "VOTES_BRIDGE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// The bearer token produce requests must carry (required, or --token-file).
    #[arg(long, env = "VOTES_KAFKA_BRIDGE_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, env = "VOTES_KAFKA_BRIDGE_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let args = Args::parse();
    let token = kafka_bridge::auth::load_token(args.token.as_deref(), args.token_file.as_deref())?;
    let mut publisher = PublisherSettings::new(args.brokers, "kafka-bridge");
    publisher.timeout = Duration::from_millis(args.publish_timeout_ms);
    let settings = Settings { addr: args.listen, publisher, allowed_topics: args.allowed_topics, max_body_bytes: args.max_body_bytes, token };
    kafka_bridge::server::serve(settings, vote_service::Shutdown::on_signals()).await
}
