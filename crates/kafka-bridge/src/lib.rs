//! A Kafka Bridge for one box: the produce endpoint of the Strimzi Kafka Bridge HTTP API
//! (`POST /topics/{topic}` with `application/vnd.kafka.binary.v2+json`) over the shared
//! `vote_kafka::Publisher` (idempotent, `acks=all`), so the Spin flavour of the REST producer
//! runs on one machine; in Kubernetes the Strimzi `KafkaBridge` takes its place.
//!
//! - [`records`]: the Bridge's JSON shapes, as its OpenAPI document defines them.
//! - [`auth`]: the bearer token every produce request carries.
//! - [`produce`]: the produce handler: allowed topics, the request's caps (records, record size;
//!   413 with nothing published), one outcome per record.
//! - [`metrics`]: Prometheus counters and the publish latency.
//! - [`server`]: the router (`/topics/{topic}`, `/healthy`, `/ready`, `/healthz`, `/metrics`, `/`)
//!   and the serving loop (loopback by default).

pub mod auth;
pub mod metrics;
pub mod produce;
pub mod records;
pub mod server;
