//! The votes host: a wasmtime server that runs producer components.
//!
//! The components own the HTTP handling and their rules; the host owns the sockets, the Kafka
//! producer and each component's lifecycle. The [`app`] is what it serves: from a manifest
//! (`spin.toml`), routes to components, each with its topics, memory cap, request timeout,
//! share of the requests in flight and versions; or one component on every path. A request
//! travels:
//!
//! 1. [`serve`]: hyper accepts it within the bounds of [`shed`] (connections, header and body
//!    timeouts, requests in flight; a fast `503` with `Retry-After` when full), reads its body,
//!    routes it to its component, takes a place in that component's share, takes the serving
//!    version from its [`registry`], and runs it in a fresh `Store` (pooling allocator, the
//!    component's memory cap and deadline) from [`runtime`], entered as [`entry`] says: in one
//!    call through the component's `votes:platform/handler` export, or through `wasi:http`.
//! 2. The component calls the `votes:platform/publisher` import, implemented in [`publisher`]
//!    with the same idempotent, acks=all Kafka settings as the gRPC producer.
//! 3. The reply streams back with the serving version in `x-component-version`; [`metrics`]
//!    records the instantiate and execute times.
//!
//! With `--native`, [`native`] answers the same endpoints with native code over the same
//! `vote_core::rest` rules, HTTP server, limits and publisher: the baseline that prices the sandbox.
//!
//! [`admin`] serves the loopback admin API (bearer token) that deploys, lists and rolls back
//! components; a new one is compiled and checked off the request path, then swapped in
//! atomically while requests in flight finish on the version they started with. With a fleet
//! topic, [`fleet`] carries deploys and rollbacks to every host through Kafka, signed by the fleet's
//! deploy key and checked by [`deploy_auth`] on every host.

pub mod admin;
pub mod app;
pub mod deploy_auth;
pub mod entry;
pub mod fleet;
pub mod metrics;
pub mod native;
pub mod publisher;
pub mod registry;
pub mod reuse;
pub mod runtime;
pub mod serve;
pub mod shed;
