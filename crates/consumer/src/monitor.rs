//! The background monitor: every few seconds, the lag per assigned partition, whether each store
//! answers, and whether partitions of the group sit unconsumed (then this member rejoins).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        let mut orphans = Orphans::default();
        loop {
            ticker.tick().await;
            let (redis, mongo) = tokio::join!(
                tokio::time::timeout(INTERVAL, counters.ping()),
                tokio::time::timeout(INTERVAL, logs.ping())
            );
            let (redis, mongo) = (redis.unwrap_or(false), mongo.unwrap_or(false));
            health.store_reachable(Store::Redis, redis);
            health.store_reachable(Store::MongoDb, mongo);
            let watched = consumer.clone();
            if let Ok(Ok(unowned)) = tokio::task::spawn_blocking(move || unowned_partitions(&watched)).await {
                orphans.observe(unowned);
                health.set_orphaned(orphans.stalled());
                // Only a member that could write itself takes the partitions over.
                if redis && mongo && orphans.stalled().is_some_and(|(_, since)| since.elapsed() >= health.stall_after()) {
                    tracing::warn!(lag = orphans.lag(), "partitions of the group have sat unconsumed: rejoining the group");
                    health.notice(format!("{} messages sat on partitions no member consumed: rejoined the group", orphans.lag()));
                    if let Err(error) = rejoin(&consumer) {
                        tracing::warn!(%error, "could not rejoin the group");
                    }
                    orphans = Orphans::default();
                }
            }
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
    let lags = behind(consumer, consumer.assignment()?)?;
    Ok(lags.into_iter().map(|((topic, partition), (_, lag))| (topic, partition, lag)).collect())
}

/// For each partition of `partitions`: the group's committed offset (the low watermark when
/// nothing was committed yet) and the messages behind it.
fn behind(consumer: &VoteConsumer, partitions: rdkafka::TopicPartitionList) -> Result<Vec<((String, i32), (i64, i64))>, rdkafka::error::KafkaError> {
    if partitions.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = consumer.committed_offsets(partitions, BROKER_TIMEOUT)?;
    let mut lags = Vec::new();
    for element in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(element.topic(), element.partition(), BROKER_TIMEOUT)?;
        let position = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        lags.push(((element.topic().to_owned(), element.partition()), (position, (high - position).max(0))));
    }
    Ok(lags)
}

/// The group's partitions this member does not own: what the group committed there and the
/// messages behind it.
#[derive(Debug, Default)]
struct Orphans {
    /// (topic, partition) -> (committed offset, lag), from the last look.
    last: HashMap<(String, i32), (i64, i64)>,
    /// Since when there has been lag there and no committed offset moved.
    still_since: Option<Instant>,
}

impl Orphans {
    /// Takes a new look: any committed offset that moved means some member consumes them.
    fn observe(&mut self, now: HashMap<(String, i32), (i64, i64)>) {
        let behind = now.values().any(|(_, lag)| *lag > 0);
        let moved = now.iter().any(|(key, (committed, _))| self.last.get(key).is_none_or(|(before, _)| before != committed));
        self.still_since = match (behind, moved, self.still_since) {
            (false, _, _) => None,
            (true, true, _) | (true, false, None) => Some(Instant::now()),
            (true, false, Some(since)) => Some(since),
        };
        self.last = now;
    }

    fn lag(&self) -> i64 {
        self.last.values().map(|(_, lag)| lag).sum()
    }

    /// The lag, and since when nothing moved, while there is some.
    fn stalled(&self) -> Option<(i64, Instant)> {
        self.still_since.map(|since| (self.lag(), since))
    }
}

/// Every partition of the subscribed topics that is not assigned to this member, with what
/// [`behind`] says of it.
fn unowned_partitions(consumer: &VoteConsumer) -> Result<HashMap<(String, i32), (i64, i64)>, rdkafka::error::KafkaError> {
    let owned = consumer.assignment()?;
    let mut unowned = rdkafka::TopicPartitionList::new();
    for topic in consumer.subscription()?.elements() {
        let metadata = consumer.fetch_metadata(Some(topic.topic()), BROKER_TIMEOUT)?;
        for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
            if owned.find_partition(topic.topic(), partition.id()).is_none() {
                unowned.add_partition(topic.topic(), partition.id());
            }
        }
    }
    Ok(behind(consumer, unowned)?.into_iter().collect())
}

/// Leaves the group and joins it again as a new member: Tansu 0.6 does not hand a dead member's
/// partitions to the members left (docs/decisions.md), but a member that joins anew gets them.
fn rejoin(consumer: &VoteConsumer) -> Result<(), rdkafka::error::KafkaError> {
    let topics: Vec<String> = consumer.subscription()?.elements().iter().map(|element| element.topic().to_owned()).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.unsubscribe();
    consumer.subscribe(&topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(parts: &[(i32, i64, i64)]) -> HashMap<(String, i32), (i64, i64)> {
        parts.iter().map(|&(partition, committed, lag)| (("votes".to_owned(), partition), (committed, lag))).collect()
    }

    #[test]
    fn unowned_partitions_count_as_stalled_only_while_behind_and_unmoved() {
        let mut orphans = Orphans::default();
        orphans.observe(look(&[(0, 10, 0), (1, 20, 0)]));
        assert_eq!(orphans.stalled(), None, "nothing behind");
        orphans.observe(look(&[(0, 10, 5), (1, 20, 0)]));
        let (lag, since) = orphans.stalled().expect("behind");
        assert_eq!(lag, 5);
        orphans.observe(look(&[(0, 10, 7), (1, 20, 0)]));
        assert_eq!(orphans.stalled(), Some((7, since)), "no committed offset moved: the standstill goes on");
        std::thread::sleep(Duration::from_millis(2));
        orphans.observe(look(&[(0, 12, 5), (1, 20, 0)]));
        assert!(orphans.stalled().unwrap().1 > since, "a member committed: the standstill starts again");
        orphans.observe(HashMap::new());
        assert_eq!(orphans.stalled(), None, "this member owns every partition");
    }
}
