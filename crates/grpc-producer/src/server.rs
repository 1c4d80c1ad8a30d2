//! Wires the VoteService, gRPC health and reflection (v1 and v1alpha) onto one tonic server, and `/metrics` onto
//! a small HTTP server beside it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use vote_grpc::VoteServiceServer;
use vote_kafka::{Publisher, PublisherSettings};
use vote_service::listen::{Listener, ListenLimits, ListenMetrics, TrackRequestsLayer};
use vote_service::Shutdown;

use crate::api::{Limits, VoteApi};
use crate::metrics::Metrics;

/// How often an HTTP/2 ping checks that a client with calls in progress is still there, and how
/// long its answer may take.
pub const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(10));

/// Where the producer listens and which broker it publishes to.
#[derive(Debug, Clone)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub publisher: PublisherSettings,
    pub limits: Limits,
    /// The gRPC listener's bounds: connections, first request, idle, HTTP/2 streams.
    pub listen: ListenLimits,
}

/// Serves until `shutdown` fires, then drains in-flight calls and flushes the producer.
/// Refuses limits under which a publish could outlive the call waiting for it.
pub async fn serve(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let timeout = settings.publisher.timeout;
    vote_kafka::check_caller_deadline("call timeout (--call-timeout-ms)", settings.limits.call_timeout, timeout)?;
    vote_kafka::check_caller_deadline("stream timeout (--stream-timeout-ms)", settings.limits.stream_timeout, timeout)?;
    let metrics = Metrics::new();
    let publisher = Publisher::new(&settings.publisher).context("creating the Kafka producer")?;
    let api = VoteApi::new(publisher.clone(), metrics.clone(), settings.limits);

    let metrics_bound = vote_service::spawn_http(settings.metrics_addr, vote_service::metrics_router(metrics.registry.clone()), shutdown.clone()).await?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<VoteServiceServer<VoteApi>>().await;
    // Reflection in both protocol versions: v1, and v1alpha for clients that speak only it
    // (Python's grpcio-reflection, older GUI clients).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(vote_grpc::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("building the reflection service")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("building the v1alpha reflection service")?;

    let listen_metrics = ListenMetrics::register(&metrics.registry, "grpc");
    let max_streams = settings.listen.max_h2_streams;
    let listener = Listener::bind(settings.grpc_addr, settings.listen, listen_metrics).await?;
    let grpc_bound = listener.local_addr()?;
    tracing::info!(grpc = %grpc_bound, metrics = %metrics_bound, brokers = %settings.publisher.brokers, "grpc-producer serving");

    let mut stop = shutdown.clone();
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(max_streams))
        .http2_keepalive_interval(Some(KEEPALIVE.0))
        .http2_keepalive_timeout(Some(KEEPALIVE.1))
        .layer(TrackRequestsLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(VoteServiceServer::new(api))
        .serve_with_incoming_shutdown(vote_service::listen::incoming(listener, shutdown.clone()), async move { stop.wait().await })
        .await
        .context("gRPC server failed")?;
    publisher.flush(settings.publisher.timeout);
    tracing::info!("grpc-producer stopped");
    Ok(())
}
