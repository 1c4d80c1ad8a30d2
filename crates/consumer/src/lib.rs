//! The vote consumer: reads group `vote-counter` from topic `votes` (and, given the manifest,
//! each JSON workload's topic) in batches, counts each vote or event once in Redis, logs it once
//! in MongoDB, and commits the batch's offsets only after both writes succeeded and every message
//! it could not process is in the dead-letter topic.
//!
//! - [`pipeline`]: the batch loop from Kafka to both stores (`vote-store`) and back to the offset
//!   commit; temporary store failures are waited out with the partitions paused.
//! - [`dlq`]: the dead-letter envelope and its reasons.
//! - [`health`]: `/livez` and `/readyz`: not ready while starting, blocked, stalled with lag or
//!   cut off from a store; notices about durability, rewinds and resets.
//! - [`monitor`]: the lag per partition and the store probes, refreshed every few seconds.
//! - [`metrics`]: the Prometheus metrics.
//! - [`routes`]: the topics read and what their records are: votes, or a workload's envelopes
//!   counted by its spec from the manifest.
//! - [`rebalance`]: the Kafka context that logs partition assignments.
//! - [`stream`]: a workload's topic bound to RabbitMQ, read from its stream with the same
//!   guarantees (its position stored on the node after both writes).
//! - [`verify`]: tells a redelivery from a recreated topic by the record at the applied offset.
//!
//! A crash anywhere before the commit means the batch is read again; both writes are idempotent
//! (per offset and per vote id), so nothing is counted twice and nothing is lost.

pub mod dlq;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod pipeline;
pub mod rebalance;
pub mod routes;
pub mod stream;
pub mod verify;

pub use pipeline::{run, Settings};
