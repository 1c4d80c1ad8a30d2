//! RabbitMQ streams as a broker of the platform. A topic the manifest binds to RabbitMQ is a
//! stream of the same name: an append-only log with offsets, read like one Kafka partition, so
//! the consumer keeps the same exactly-once effect (applied offsets in Redis, the position stored
//! after both writes). See `docs/decisions.md` for why streams rather than quorum queues.

pub mod args;
pub mod brokers;
pub mod publisher;
pub mod reader;
pub mod settings;

pub use args::RabbitArgs;
pub use brokers::Brokers;
pub use publisher::StreamPublisher;
pub use reader::{At, Record, StreamReader};
pub use settings::{RabbitSettings, SettingsError};
