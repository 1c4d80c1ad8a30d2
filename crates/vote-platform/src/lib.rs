//! The platform's contracts beside `wit/` and `proto/`:
//!
//! - [`manifest`]: the application manifest, Spin's own `spin.toml` with our settings under
//!   `[component.<id>.tool.votes]` (topic grants and limits per component) and
//!   `[application.tool.votes.workloads.<name>]` (what the consumer counts per topic).
//! - [`route`]: Spin's HTTP route patterns and the most-specific-match rule.
//! - [`event`]: the JSON envelope every workload component publishes (band votes keep their
//!   protobuf `VoteEvent`).
//! - [`names`]: the bounded names (components, workloads, aggregates, fields) every key and
//!   label is built from.

pub mod event;
#[cfg(feature = "manifest")]
pub mod manifest;
pub mod names;
pub mod route;
#[cfg(feature = "manifest")]
pub mod workload;

#[cfg(feature = "manifest")]
pub use manifest::{ComponentSpec, Manifest, ManifestError};
#[cfg(feature = "manifest")]
pub use workload::{CountSpec, MeanSpec, WorkloadSpec};
