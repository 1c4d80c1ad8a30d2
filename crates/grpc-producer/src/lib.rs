//! The native gRPC producer: `votes.v1.VoteService` over tonic. Each vote is checked with the
//! shared [`vote_core`] rules and published with the shared [`vote_kafka::Publisher`]; the client
//! hears OK only after the broker acknowledged.
//!
//! - [`api`]: the `Cast` and `CastStream` handlers, their limits, and how errors map to gRPC
//!   status codes.
//! - [`deadline`]: a call's deadline from the client's `grpc-timeout` and the producer's limit.
//! - [`metrics`]: the Prometheus counters and latency histogram.
//! - [`server`]: wiring the service, gRPC health, reflection and `/metrics` together.

pub mod api;
pub mod deadline;
pub mod metrics;
pub mod server;
