//! The `grpc-producer` binary: flags and environment to [`grpc_producer::server::Settings`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vote_kafka::PublisherSettings;

/// Serves votes.v1.VoteService and publishes each valid vote to Kafka.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where the gRPC server listens.
    #[arg(long, env = "VOTES_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = "VOTES_GRPC_METRICS_ADDR", default_value = "0.0.0.0:9102")]
    metrics_addr: SocketAddr,
    /// Kafka bootstrap brokers.
    #[arg(long, env = "VOTES_KAFKA_BROKERS", default_value = vote_kafka::DEFAULT_BROKERS)]
    brokers: String,
    /// How long to wait for the broker's acknowledgement before answering UNAVAILABLE, in ms.
    #[arg(long, env = "VOTES_PUBLISH_TIMEOUT_MS", default_value_t = vote_kafka::DEFAULT_PUBLISH_TIMEOUT.as_millis() as u64)]
    publish_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let args = Args::parse();
    let mut publisher = PublisherSettings::new(args.brokers, "grpc-producer");
    publisher.timeout = Duration::from_millis(args.publish_timeout_ms);
    let settings = grpc_producer::server::Settings { grpc_addr: args.listen, metrics_addr: args.metrics_addr, publisher };
    grpc_producer::server::serve(settings, vote_service::Shutdown::on_signals()).await
}
