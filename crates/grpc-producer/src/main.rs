//! The `grpc-producer` binary: flags and environment to [`grpc_producer::server::Settings`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use grpc_producer::api::Limits;
use vote_kafka::PublisherSettings;
use vote_service::config_check;

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
    /// How long to wait for the broker's acknowledgement before answering UNAVAILABLE, in ms
    /// (the call and stream timeouts must exceed it by at least 1.2 s: checked at start-up).
    #[arg(long, env = "VOTES_PUBLISH_TIMEOUT_MS", default_value_t = vote_kafka::DEFAULT_PUBLISH_TIMEOUT.as_millis() as u64)]
    publish_timeout_ms: u64,
    /// The most messages queued for the broker; beyond it votes get RESOURCE_EXHAUSTED at once
    /// (librdkafka's queue.buffering.max.messages, default 100000).
    #[arg(long, env = "VOTES_PUBLISH_QUEUE_MAX_MESSAGES")]
    publish_queue_max_messages: Option<u32>,
    /// Calls (Cast or CastStream) served at once; one more waits in the call queue.
    #[arg(long, env = "VOTES_GRPC_MAX_CONCURRENT_CALLS", default_value_t = Limits::default().max_concurrent_calls)]
    max_concurrent_calls: usize,
    /// Calls that may wait for a slot; one more gets RESOURCE_EXHAUSTED at once (0: no queue).
    #[arg(long, env = "VOTES_GRPC_MAX_QUEUED_CALLS", default_value_t = Limits::default().max_queued_calls)]
    max_queued_calls: usize,
    /// How long a call waits for a slot, in ms, before RESOURCE_EXHAUSTED (at most half the call
    /// timeout is used).
    #[arg(long, env = "VOTES_GRPC_CALL_QUEUE_WAIT_MS", default_value_t = Limits::default().call_queue_wait.as_millis() as u64)]
    call_queue_wait_ms: u64,
    /// The longest a Cast runs, in ms (a client's shorter grpc-timeout wins).
    #[arg(long, env = "VOTES_GRPC_CALL_TIMEOUT_MS", default_value_t = Limits::default().call_timeout.as_millis() as u64)]
    call_timeout_ms: u64,
    /// The most votes one CastStream takes; past it the stream ends with INVALID_ARGUMENT.
    #[arg(long, env = "VOTES_GRPC_STREAM_MAX_VOTES", default_value_t = Limits::default().stream_max_votes)]
    stream_max_votes: u64,
    /// The longest a CastStream runs, in ms (a client's shorter grpc-timeout wins).
    #[arg(long, env = "VOTES_GRPC_STREAM_TIMEOUT_MS", default_value_t = Limits::default().stream_timeout.as_millis() as u64)]
    stream_timeout_ms: u64,
    /// The gRPC listener's bounds.
    #[command(flatten)]
    connections: vote_service::listen::ListenArgs,
    /// Check the flags and environment, print the effective configuration and exit (touches no
    /// network and no file).
    #[arg(long)]
    check_config: bool,
}

impl Args {
    fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = config_check::check_brokers(&self.brokers).into_iter().collect();
        if self.publish_timeout_ms == 0 {
            problems.push("publish-timeout-ms: must be above 0".into());
        }
        problems.extend(self.connections.limits().problems());
        problems
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vote_service::init_logging();
    let (args, matches) = config_check::parse::<Args>();
    config_check::finish::<Args>(args.check_config, &matches, args.problems())?;
    let mut publisher = PublisherSettings::new(args.brokers, "grpc-producer");
    publisher.timeout = Duration::from_millis(args.publish_timeout_ms);
    publisher.queue_max_messages = args.publish_queue_max_messages;
    let limits = Limits {
        max_concurrent_calls: args.max_concurrent_calls,
        max_queued_calls: args.max_queued_calls,
        call_queue_wait: Duration::from_millis(args.call_queue_wait_ms.min(args.call_timeout_ms / 2)),
        call_timeout: Duration::from_millis(args.call_timeout_ms),
        stream_max_votes: args.stream_max_votes,
        stream_timeout: Duration::from_millis(args.stream_timeout_ms),
    };
    let listen = args.connections.limits();
    let settings = grpc_producer::server::Settings { grpc_addr: args.listen, metrics_addr: args.metrics_addr, publisher, limits, listen };
    grpc_producer::server::serve(settings, vote_service::Shutdown::on_signals()).await
}
