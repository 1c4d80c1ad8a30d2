//! The results web app: the live counts from Redis pushed to every open page, and a search over
//! the MongoDB vote logs, as a page and as a JSON API.
//!
//! - [`snapshot`]: the counters of the Redis contract, read in one round trip.
//! - [`live`]: one poller of `{votes}:total` per process (and one per workload's total) that
//!   publishes a new snapshot when it changed; every page's server-sent event stream watches one.
//! - [`search`]: query parameters checked into a MongoDB filter, one bounded page with a cursor.
//! - [`app`]: the routes: the page, `/api/results`, `/api/logs`, `/api/events`, `/healthz`,
//!   `/metrics`.
//! - [`metrics`]: the service's own Prometheus metrics.
//! - [`workloads`]: with a manifest (`--manifest`), its workloads: one live view poller each.
//! - [`workload_search`]: a workload's log search over the fields its spec makes searchable.
//!
//! Key names, the album-field decoding and the workload views come from `vote-store`, like every
//! other reader.

pub mod app;
pub mod live;
pub mod metrics;
pub mod search;
pub mod snapshot;
pub mod workload_search;
pub mod workloads;
