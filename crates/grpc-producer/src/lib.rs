//! The native gRPC producer: `votes.v1.VoteService` over tonic. Each vote is checked with the
//! shared [`vote_core`] rules and published with the shared [`vote_kafka::Publisher`]; the client
//! hears OK only after the broker acknowledged.
//!
//! - [`api`]: the `Cast` and `CastStream` handlers and how errors map to gRPC status codes.
//! - [`metrics`]: the Prometheus counters and latency histogram.
//! - [`server`]: wiring the service, gRPC health, reflection and `/metrics` together.

pub mod api;
pub mod metrics;
pub mod server;
