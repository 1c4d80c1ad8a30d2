//! The bridge's router and serving loop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use vote_kafka::{Publisher, PublisherSettings};
use vote_service::Shutdown;

use crate::auth::require_token;
use crate::metrics::Metrics;
use crate::produce::{produce, Producer};

/// The default address: loopback (anyone who reaches the bridge publishes to Kafka), port 8085,
/// next to the local stack's other ports (the Strimzi bridge's own default, 8080, is the wasm
/// host's locally).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8085";
/// The largest record list accepted, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Where the bridge listens, what it publishes to, and its limits.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub publisher: PublisherSettings,
    pub allowed_topics: Vec<String>,
    pub max_body_bytes: usize,
    /// The bearer token every produce request must carry.
    pub token: String,
}

/// The routes: the produce endpoint (bearer token), the Bridge's `/healthy`, `/ready` and `/`,
/// and the project's `/healthz` and `/metrics`.
pub fn router(producer: Producer, max_body_bytes: usize, token: String) -> Router {
    let registry = producer.metrics.registry.clone();
    Router::new()
        .route("/topics/{topic}", post(produce).route_layer(middleware::from_fn_with_state(Arc::new(token), require_token)))
        .route("/healthy", get(|| async { StatusCode::OK }))
        .route("/ready", get(ready))
        .route("/", get(|| async { Json(serde_json::json!({ "bridge_version": concat!("votes-kafka-bridge ", env!("CARGO_PKG_VERSION")) })) }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(producer)
        .merge(vote_service::metrics_router(registry))
}

/// `/ready`: 200 unless the last publish found the broker unavailable.
async fn ready(State(producer): State<Producer>) -> StatusCode {
    if producer.broker_reachable.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Serves until `shutdown` fires, then flushes the producer.
pub async fn serve(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let publisher = Publisher::new(&settings.publisher).context("creating the Kafka producer")?;
    let producer = Producer {
        publisher: publisher.clone(),
        allowed_topics: Arc::new(settings.allowed_topics.clone()),
        metrics: Metrics::new(),
        broker_reachable: Arc::new(AtomicBool::new(true)),
    };
    // Bounded like every listener of the project: connections, first-request and idle timeouts.
    let listen_metrics = vote_service::listen::ListenMetrics::register(&producer.metrics.registry, "bridge");
    let listener = vote_service::listen::Listener::bind(settings.addr, vote_service::listen::ListenLimits::default(), listen_metrics).await?;
    tracing::info!(addr = %listener.local_addr()?, brokers = %settings.publisher.brokers, topics = ?settings.allowed_topics, "kafka-bridge serving");
    vote_service::serve_router(listener, router(producer, settings.max_body_bytes, settings.token), shutdown).await;
    publisher.flush(settings.publisher.timeout);
    tracing::info!("kafka-bridge stopped");
    Ok(())
}
