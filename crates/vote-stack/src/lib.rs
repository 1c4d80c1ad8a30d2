//! The local stack on embedded defaults: every part a real server on its real protocol, started
//! as a child process under one state directory, or reused when one already answers.
//!
//! - [`config`]: ports, paths and the documented defaults, and how each part is launched.
//! - [`process`]: spawning detached children with log and pid files, stopping them.
//! - [`probe`]: readiness checks that speak each part's protocol.
//! - [`prometheus`]: the scrape configuration of the stack's Prometheus and its targets' health.
//! - [`stack`]: `up`, `down` and `status` over all parts, used by `votectl` and by the tests.
//! - [`admin`]: the wasm host's admin API client (signed fleet deploys).

pub mod admin;
pub mod config;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod stack;

pub use config::{Part, StackConfig};
pub use process::{Launch, Supervisor};
pub use stack::{down, status, up, PartStatus};
