//! The background monitor: every few seconds, the lag per assigned partition and whether each store answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::Offset;
use vote_store::{Counters, Logs};

use crate::health::{Health, Store};
use crate::metrics::Metrics;
use crate::rebalance::VoteConsumer;

/// How often the lag and the stores are checked.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long one broker request of the lag refresh may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Refreshes `consumer_lag_messages` (the votes topic), `consumer_workload_lag_messages` (each
/// topic of `workloads`: topic -> workload) and the health until the process ends.
pub fn spawn(consumer: Arc<VoteConsumer>, counters: Counters, logs: Logs, health: Health, metrics: Metrics, workloads: HashMap<String, String>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let (redis, mongo) = tokio::join!(
                tokio::time::timeout(INTERVAL, counters.ping()),
                tokio::time::timeout(INTERVAL, logs.ping())
            );
            health.store_reachable(Store::Redis, redis.unwrap_or(false));
            health.store_reachable(Store::MongoDb, mongo.unwrap_or(false));
            let consumer = consumer.clone();
            match tokio::task::spawn_blocking(move || lag_per_partition(&consumer)).await {
                Ok(Ok(lags)) => {
                    metrics.lag.reset();
                    metrics.workload_lag.reset();
                    for (topic, partition, lag) in &lags {
                        match workloads.get(topic) {
                            Some(workload) => metrics.workload_lag.with_label_values(&[workload, &partition.to_string()]).set(*lag),
                            None => metrics.lag.with_label_values(&[&partition.to_string()]).set(*lag),
                        }
                    }
                    health.set_lag(lags.iter().map(|(_, _, lag)| lag).sum());
                }
                Ok(Err(error)) => tracing::debug!(%error, "lag refresh failed"),
                Err(error) => tracing::warn!(%error, "lag refresh task failed"),
            }
        }
    });
}

/// For each assigned partition (topic, partition), the high watermark minus the group's
/// committed offset (the low watermark when nothing was committed yet).
fn lag_per_partition(consumer: &VoteConsumer) -> Result<Vec<(String, i32, i64)>, rdkafka::error::KafkaError> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(assignment, BROKER_TIMEOUT)?;
    let mut lags = Vec::new();
    for element in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(element.topic(), element.partition(), BROKER_TIMEOUT)?;
        let position = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        lags.push((element.topic().to_owned(), element.partition(), (high - position).max(0)));
    }
    Ok(lags)
}
