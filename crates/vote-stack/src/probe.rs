//! Readiness probes that speak each part's own protocol.

use std::time::Duration;

use anyhow::Context;

use crate::config::{Part, StackConfig};

/// How long one probe attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Kafka: the broker answers a metadata request.
pub async fn kafka(brokers: &str) -> anyhow::Result<()> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || vote_kafka::probe(&brokers, vote_core::TOPIC, ATTEMPT_TIMEOUT))
        .await?
        .context("no answer to a Kafka metadata request")?;
    Ok(())
}

/// Redis: `PING` answers `PONG`.
pub async fn redis(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut connection = tokio::time::timeout(ATTEMPT_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .context("timed out")??;
    let pong: String = redis::cmd("PING").query_async(&mut connection).await?;
    anyhow::ensure!(pong == "PONG", "unexpected PING reply {pong:?}");
    Ok(())
}

/// MongoDB: the `ping` command succeeds.
pub async fn mongo(url: &str) -> anyhow::Result<()> {
    let mut options = mongodb::options::ClientOptions::parse(url).await?;
    options.server_selection_timeout = Some(ATTEMPT_TIMEOUT);
    options.connect_timeout = Some(ATTEMPT_TIMEOUT);
    let client = mongodb::Client::with_options(options)?;
    client.database("admin").run_command(mongodb::bson::doc! { "ping": 1 }).await?;
    Ok(())
}

/// RabbitMQ: the stream listener takes a login.
pub async fn rabbitmq(address: &str) -> anyhow::Result<()> {
    let settings = vote_rabbit::RabbitSettings::parse(address)?;
    let environment = tokio::time::timeout(ATTEMPT_TIMEOUT, settings.connect()).await.context("timed out")??;
    drop(environment);
    Ok(())
}

/// An HTTP service: `GET url` answers 2xx.
pub async fn http_ok(url: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new().get(url).timeout(ATTEMPT_TIMEOUT).send().await?;
    let status = response.status();
    if !status.is_success() {
        // A health endpoint says why in its body (the consumer: "unhealthy: ...").
        let reason = response.text().await.unwrap_or_default();
        anyhow::bail!("{url} answered {status}: {}", reason.trim());
    }
    Ok(())
}

/// Whatever the part speaks.
pub async fn part(config: &StackConfig, part: Part) -> anyhow::Result<()> {
    match part {
        Part::Kafka => kafka(&config.brokers()).await,
        Part::Redis => redis(&config.redis_url()).await,
        Part::Mongo => mongo(&config.mongo_url()).await,
        Part::Rabbitmq => rabbitmq(&config.rabbitmq_address()).await,
        Part::Consumer => http_ok(&format!("{}/healthz", config.consumer_http_url())).await,
        Part::Host => http_ok(&format!("{}/readyz", config.host_url())).await,
        Part::NativeHost => http_ok(&format!("{}/readyz", config.native_url())).await,
        Part::Results => http_ok(&format!("{}/healthz", config.results_url())).await,
        Part::Prometheus => http_ok(&format!("{}/-/ready", config.prometheus_url())).await,
        Part::GrpcProducer => {
            http_ok(&format!("{}/healthz", config.grpc_http_url())).await?;
            tokio::net::TcpStream::connect((config.host.as_str(), config.grpc_port)).await?;
            Ok(())
        }
    }
}
