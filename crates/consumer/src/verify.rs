//! Tells a redelivery from a recreated or reset topic: reads the record at a partition's applied
//! offset and compares its fingerprint with the one Redis kept when it counted that offset.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use vote_store::counters::fingerprint;

/// What the log holds at a partition's applied offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The record Redis counted is still there: a redelivery, skipped by the applied offsets.
    Same,
    /// The record expired from the log (or Redis kept no fingerprint): nothing says otherwise.
    Unknown,
    /// Another record, or none, is at that offset: the topic was recreated or reset.
    Reset(String),
}

/// Reads partition `partition` of `topic` at `applied` and compares its key's fingerprint with
/// `expected`. Blocking (run it on a blocking thread).
pub fn check(brokers: &str, topic: &str, partition: i32, applied: i64, expected: Option<&str>, timeout: Duration) -> Result<Verdict, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "votes-applied-offset-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("log_level", "3")
        .create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
    if applied >= high {
        return Ok(Verdict::Reset(format!("the applied offset {applied} is past the end of the log ({high})")));
    }
    let Some(expected) = expected else { return Ok(Verdict::Unknown) };
    if applied < low {
        return Ok(Verdict::Unknown);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(applied))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match consumer.poll(left) {
            Some(Ok(message)) if message.offset() == applied => {
                let found = fingerprint(message.key());
                return Ok(if found == expected {
                    Verdict::Same
                } else {
                    Verdict::Reset(format!("the record at offset {applied} is not the one counted there (key {found}, counted {expected})"))
                });
            }
            // Compaction or a transaction marker left no record at that offset.
            Some(Ok(message)) if message.offset() > applied => return Ok(Verdict::Unknown),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error),
            None => break,
        }
    }
    Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::RequestTimedOut))
}
