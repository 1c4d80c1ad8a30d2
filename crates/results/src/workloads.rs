//! The manifest's workloads in the results app: what `/api/workloads` lists, one live poller per
//! workload counted by its spec, and each one's log collection. The band contest (a `vote-event`
//! workload) keeps its own snapshot, stream and search.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::Document;
use mongodb::{Collection, Database};
use redis::aio::ConnectionManager;
use serde_json::{json, Value};
use vote_platform::workload::Format;
use vote_platform::WorkloadSpec;
use vote_service::Shutdown;
use vote_store::workload_view::{self, WorkloadView};

use crate::live::{self, Live, Reader};
use crate::metrics::Metrics;

/// A workload counted by its spec: its live view and its logs.
#[derive(Clone)]
pub struct Counted {
    pub live: Live<WorkloadView>,
    pub events: Collection<Document>,
}

/// Every workload of the manifest.
#[derive(Clone)]
pub struct Workloads {
    specs: BTreeMap<String, WorkloadSpec>,
    counted: BTreeMap<String, Counted>,
}

/// A workload's format as the manifest spells it.
fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::VoteEvent => "vote-event",
    }
}

impl Workloads {
    /// Starts one poller per workload counted by its spec (the manifest bounds how many there are).
    pub fn start(specs: BTreeMap<String, WorkloadSpec>, redis: &ConnectionManager, database: &Database, interval: Duration, metrics: &Metrics, shutdown: &Shutdown) -> Self {
        let mut counted = BTreeMap::new();
        for spec in specs.values().filter(|spec| spec.format == Format::Json) {
            let reading = spec.clone();
            let read: Reader<WorkloadView> = Box::new(move |mut redis| {
                let spec = reading.clone();
                Box::pin(async move { workload_view::read(&mut redis, &spec).await })
            });
            let live = live::spawn_watching(redis.clone(), interval, spec.total_key(), read, metrics.clone(), shutdown.clone());
            counted.insert(spec.name.clone(), Counted { live, events: database.collection(&spec.collection()) });
        }
        Self { specs, counted }
    }

    /// The workload called `name`.
    pub fn spec(&self, name: &str) -> Option<&WorkloadSpec> {
        self.specs.get(name)
    }

    /// The live view and logs of `name`, if its spec counts it.
    pub fn counted(&self, name: &str) -> Option<&Counted> {
        self.counted.get(name)
    }

    /// The names of every workload, for a message.
    pub fn names(&self) -> Vec<&str> {
        self.specs.keys().map(String::as_str).collect()
    }

    /// `GET /api/workloads`: each workload with what its view shows and what its search takes.
    pub fn listing(&self) -> Value {
        let workloads: Vec<Value> = self
            .specs
            .values()
            .map(|spec| {
                let counts: Vec<Value> = spec
                    .count
                    .iter()
                    .map(|c| json!({ "name": c.name, "title": c.title.as_ref().unwrap_or(&c.name), "by": c.by, "where": c.filter, "share": c.share, "top": workload_view::top_of(c) }))
                    .collect();
                let means: Vec<Value> = spec.mean.iter().map(|m| json!({ "name": m.name, "title": m.title.as_ref().unwrap_or(&m.name), "field": m.field, "by": m.by })).collect();
                json!({
                    "name": spec.name,
                    "title": spec.title,
                    "topic": spec.topic,
                    "format": format_name(spec.format),
                    "recent": spec.recent,
                    "search": spec.search,
                    "counts": counts,
                    "means": means,
                })
            })
            .collect();
        json!({ "workloads": workloads })
    }
}
