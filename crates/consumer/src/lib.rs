//! The vote consumer: reads group `vote-counter` from topic `votes` in batches, counts each vote
//! once in Redis, logs it once in MongoDB, and commits the batch's offsets only after both writes
//! succeeded.
//!
//! - [`counters`]: the Redis contract (`votes:bands`, `votes:albums`, `votes:paths`,
//!   `votes:total`, `votes:recent`), written by one Lua script that skips vote ids it has seen.
//! - [`logs`]: the MongoDB `votes.logs` collection, keyed by vote id, duplicates ignored.
//! - [`pipeline`]: the batch loop from Kafka to both stores and back to the offset commit.
//! - [`metrics`]: the Prometheus counters the loop keeps.
//!
//! A crash anywhere before the commit means the batch is read again; both writes are idempotent
//! per vote id, so nothing is counted twice and nothing is lost.

pub mod counters;
pub mod logs;
pub mod metrics;
pub mod pipeline;

pub use pipeline::{run, Settings};
