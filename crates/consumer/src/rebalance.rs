//! The consumer's Kafka context: logs every partition assignment and revocation of the group.

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::ClientContext;

/// The consumer type of the loop.
pub type VoteConsumer = StreamConsumer<GroupLog>;

/// Logs rebalances, so a stall or a takeover can be read from the log.
pub struct GroupLog;

impl ClientContext for GroupLog {}

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|element| element.partition()).collect()
}

impl ConsumerContext for GroupLog {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => tracing::info!(partitions = ?partitions(list), "partitions assigned"),
            Rebalance::Revoke(list) => tracing::info!(partitions = ?partitions(list), "partitions revoked"),
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}
