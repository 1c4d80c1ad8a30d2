//! The application manifest: Spin's `spin.toml` (version 2) read by the votes host, the consumer,
//! the results app and `votectl`. Spin reads the same file and ignores our `tool` tables:
//!
//! ```toml
//! [[trigger.http]]
//! route = "/tweets/..."
//! component = "weather-rest"
//!
//! [component.weather-rest]
//! source = "target/wasm32-wasip2/release/weather_rest.wasm"
//!
//! [component.weather-rest.tool.votes]
//! topics = ["weather"]        # the only topics it may publish to
//! memory_mib = 16             # its instances' memory cap
//! request_timeout_ms = 8000   # how long one of its requests may run
//! max_in_flight = 32          # its share of the requests running at once
//! max_queued = 256            # how many of its requests may wait for a place
//! instance_reuse = 128        # opt-in: one instance serves up to 128 requests in turn
//!
//! [application.tool.votes.workloads.weather]
//! title = "Weather tweets"
//! topic = "weather"
//! count = [{ name = "municipality", by = ["municipality"] }]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::route::{Pattern, Routes};
use crate::workload::WorkloadSpec;

/// The largest manifest read.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// The most components one application has.
pub const MAX_COMPONENTS: usize = 32;
/// The most workloads one application has.
pub const MAX_WORKLOADS: usize = 16;
/// The most topics one component may be granted.
pub const MAX_TOPICS: usize = 8;
/// The longest topic name.
pub const MAX_TOPIC_BYTES: usize = 64;
/// The most requests one instance may serve when a component reuses instances.
pub const MAX_INSTANCE_REUSE: u32 = 10_000;

/// Our settings for one component (`[component.<id>.tool.votes]`); unset limits take the host's
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    /// The topics the component may publish to; any other publish is `refused`.
    #[serde(default)]
    pub topics: Vec<String>,
    pub memory_mib: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub max_queued: Option<usize>,
    /// How many requests one instance may serve, one after another (1: a fresh instance per
    /// request, the default). Reuse is faster and weakens isolation: a request can see what an
    /// earlier one left in memory; an instance that trapped is never reused.
    pub instance_reuse: Option<u32>,
}

/// One component of the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    pub id: String,
    /// The component's file, resolved against the manifest's directory.
    pub source: PathBuf,
    pub settings: ComponentSettings,
}

/// A parsed, checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    /// The directory relative sources are resolved against.
    pub base: PathBuf,
    /// Route patterns as written, and the component each one serves.
    pub routes: Vec<(String, String)>,
    pub components: BTreeMap<String, ComponentSpec>,
    pub workloads: BTreeMap<String, WorkloadSpec>,
}

/// Why a manifest was refused: every problem found, each naming its table and field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading the manifest {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("the manifest is {0} bytes, more than {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
    #[error("the manifest is not valid TOML: {0}")]
    Toml(String),
    #[error("the manifest has problems: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: Option<i64>,
    application: RawApplication,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    tool: RawTools,
}

#[derive(Deserialize, Default)]
struct RawTools {
    #[serde(default)]
    votes: Option<RawAppSettings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAppSettings {
    #[serde(default)]
    workloads: BTreeMap<String, WorkloadSpec>,
}

#[derive(Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: toml::Value,
    component: toml::Value,
}

#[derive(Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    tool: RawComponentTools,
}

#[derive(Deserialize, Default)]
struct RawComponentTools {
    #[serde(default)]
    votes: Option<ComponentSettings>,
}

/// `None` if `topic` is a plain Kafka topic name of at most [`MAX_TOPIC_BYTES`], else why not.
pub fn check_topic(topic: &str) -> Option<String> {
    let plain = topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES || !plain || topic == "." || topic == ".." {
        return Some(format!("topic {:?} must be 1 to {MAX_TOPIC_BYTES} bytes of a-z, A-Z, 0-9, '.', '_' and '-'", topic.chars().take(80).collect::<String>()));
    }
    None
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let size = std::fs::metadata(path).map_err(|error| ManifestError::Read { path: path.to_owned(), error })?.len();
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(ManifestError::TooLarge(size as usize));
        }
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read { path: path.to_owned(), error })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::parse(&text, &base)
    }

    /// Parses and checks a manifest's text; relative sources are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(text.len()));
        }
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Toml(e.to_string()))?;
        let mut problems = Vec::new();
        if raw.spin_manifest_version != Some(2) {
            problems.push("spin_manifest_version: must be 2".to_owned());
        }
        if raw.component.len() > MAX_COMPONENTS {
            problems.push(format!("component: at most {MAX_COMPONENTS} components"));
        }
        let mut components = BTreeMap::new();
        for (id, component) in raw.component {
            let at = |what: &str| format!("component.{id}.{what}");
            if let Some(reason) = crate::names::check(&id) {
                problems.push(format!("component: id {reason}"));
                continue;
            }
            let source = match component.source.as_str() {
                Some(path) => base.join(path),
                None => {
                    problems.push(format!("{}: must be a local file path (the votes host loads no URL or registry source)", at("source")));
                    continue;
                }
            };
            let settings = component.tool.votes.unwrap_or_default();
            if settings.topics.len() > MAX_TOPICS {
                problems.push(format!("{}: at most {MAX_TOPICS} topics", at("tool.votes.topics")));
            }
            for topic in &settings.topics {
                if let Some(reason) = check_topic(topic) {
                    problems.push(format!("{}: {reason}", at("tool.votes.topics")));
                }
            }
            let zero = [settings.memory_mib.map(|v| v as u64), settings.request_timeout_ms, settings.max_in_flight.map(|v| v as u64)];
            if zero.iter().any(|v| *v == Some(0)) {
                problems.push(format!("{}: memory_mib, request_timeout_ms and max_in_flight must be above 0", at("tool.votes")));
            }
            if let Some(reuse) = settings.instance_reuse.filter(|r| !(1..=MAX_INSTANCE_REUSE).contains(r)) {
                problems.push(format!("{}: {reuse} is not between 1 (a fresh instance per request) and {MAX_INSTANCE_REUSE}", at("tool.votes.instance_reuse")));
            }
            components.insert(id.clone(), ComponentSpec { id, source, settings });
        }
        let mut routes = Vec::new();
        for trigger in raw.trigger.http {
            let (Some(route), Some(component)) = (trigger.route.as_str(), trigger.component.as_str()) else {
                problems.push("trigger.http: route must be a path and component a component id (private routes and inline components are not served by the votes host)".to_owned());
                continue;
            };
            if !components.contains_key(component) {
                problems.push(format!("trigger.http: route {route:?} names component {component:?}, which the manifest does not declare"));
            }
            routes.push((route.to_owned(), component.to_owned()));
        }
        if let Err(error) = Routes::new(routes.iter().map(|(route, id)| Pattern::parse(route).map(|p| (p, id.clone()))).collect::<Result<Vec<_>, _>>().unwrap_or_else(|e| {
            problems.push(format!("trigger.http: {e}"));
            Vec::new()
        })) {
            problems.push(format!("trigger.http: {error}"));
        }
        let mut workloads = raw.application.tool.votes.map(|v| v.workloads).unwrap_or_default();
        if workloads.len() > MAX_WORKLOADS {
            problems.push(format!("application.tool.votes.workloads: at most {MAX_WORKLOADS} workloads"));
        }
        let mut topics = BTreeMap::new();
        for (name, spec) in workloads.iter_mut() {
            spec.name = name.clone();
            problems.extend(spec.check());
            if let Some(other) = topics.insert(spec.topic.clone(), name.clone()) {
                problems.push(format!("workloads.{name}.topic: {:?} is already the topic of workload {other:?}", spec.topic));
            }
        }
        if !problems.is_empty() {
            return Err(ManifestError::Invalid(problems));
        }
        Ok(Self { name: raw.application.name, base: base.to_owned(), routes, components, workloads })
    }

    /// The route table: patterns to component ids.
    pub fn route_table(&self) -> Routes<String> {
        Routes::new(self.routes.iter().map(|(route, id)| (Pattern::parse(route).expect("checked at parse"), id.clone())).collect()).expect("checked at parse")
    }

    /// The topics the manifest binds to RabbitMQ (streams), sorted.
    pub fn rabbitmq_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> =
            self.workloads.values().filter(|w| w.broker == crate::workload::Broker::Rabbitmq).map(|w| w.topic.clone()).collect();
        topics.sort();
        topics
    }

    /// The workload counted from `topic`.
    pub fn workload_of_topic(&self, topic: &str) -> Option<&WorkloadSpec> {
        self.workloads.values().find(|w| w.topic == topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
        spin_manifest_version = 2
        [application]
        name = "votes"
        [application.tool.votes.workloads.weather]
        title = "Weather tweets"
        topic = "weather"
        count = [{ name = "municipality", by = ["municipality"] }]
        mean = [{ name = "temperature", field = "temperature", by = ["municipality"] }]
        [[trigger.http]]
        route = "/..."
        component = "vote-rest"
        [[trigger.http]]
        route = "/tweets/..."
        component = "weather-rest"
        [component.vote-rest]
        source = "target/vote_rest.wasm"
        allowed_outbound_hosts = ["http://127.0.0.1:8085"]
        [component.vote-rest.tool.votes]
        topics = ["votes"]
        [component.weather-rest]
        source = "target/weather_rest.wasm"
        [component.weather-rest.tool.votes]
        topics = ["weather"]
        memory_mib = 16
        max_in_flight = 8
    "#;

    #[test]
    fn a_manifest_gives_routes_components_and_workloads() {
        let manifest = Manifest::parse(APP, Path::new("/app")).unwrap();
        assert_eq!(manifest.components["weather-rest"].source, Path::new("/app/target/weather_rest.wasm"));
        assert_eq!(manifest.components["weather-rest"].settings.max_in_flight, Some(8));
        assert_eq!(manifest.route_table().find("/tweets"), Some(&"weather-rest".to_owned()));
        assert_eq!(manifest.route_table().find("/votes/batch"), Some(&"vote-rest".to_owned()));
        assert_eq!(manifest.workload_of_topic("weather").unwrap().name, "weather");
        assert!(manifest.rabbitmq_topics().is_empty());
        let on_rabbit = Manifest::parse(&APP.replace("topic = \"weather\"", "topic = \"weather\"\nbroker = \"rabbitmq\""), Path::new("/app")).unwrap();
        assert_eq!(on_rabbit.rabbitmq_topics(), ["weather"]);
    }

    #[test]
    fn instance_reuse_is_opt_in_and_bounded() {
        let manifest = Manifest::parse(APP, Path::new("/app")).unwrap();
        assert_eq!(manifest.components["weather-rest"].settings.instance_reuse, None, "off unless asked for");
        let reusing = Manifest::parse(&APP.replace("max_in_flight = 8", "max_in_flight = 8\ninstance_reuse = 128"), Path::new("/app")).unwrap();
        assert_eq!(reusing.components["weather-rest"].settings.instance_reuse, Some(128));
        for bad in ["0", "10001"] {
            let text = APP.replace("max_in_flight = 8", &format!("max_in_flight = 8\ninstance_reuse = {bad}"));
            let error = Manifest::parse(&text, Path::new("/app")).unwrap_err().to_string();
            assert!(error.contains("component.weather-rest.tool.votes.instance_reuse") && error.contains(bad), "{error}");
        }
    }

    #[test]
    fn every_problem_is_named() {
        let bad = APP
            .replace("topics = [\"weather\"]", "topics = [\"we ather\"]\nmax_queud = 3")
            .replace("component = \"weather-rest\"", "component = \"nobody\"");
        let error = Manifest::parse(&bad, Path::new("/")).unwrap_err().to_string();
        assert!(error.contains("max_queud"), "{error}");
        let bad = APP.replace("component = \"weather-rest\"", "component = \"nobody\"").replace("topic = \"weather\"", "topic = \"we ather\"");
        let error = Manifest::parse(&bad, Path::new("/")).unwrap_err().to_string();
        assert!(error.contains("\"nobody\"") && error.contains("workloads.weather.topic"), "{error}");
        let votes_on_rabbit = format!("{APP}\n[application.tool.votes.workloads.votes]\ntitle = \"Votes\"\ntopic = \"votes\"\nformat = \"vote-event\"\nbroker = \"rabbitmq\"\n");
        let error = Manifest::parse(&votes_on_rabbit, Path::new("/")).unwrap_err().to_string();
        assert!(error.contains("workloads.votes.broker"), "{error}");
        let twice = APP.replace("route = \"/tweets/...\"", "route = \"/...\"");
        assert!(Manifest::parse(&twice, Path::new("/")).unwrap_err().to_string().contains("twice"));
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn the_shipped_manifest_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spin.toml");
        let manifest = Manifest::load(&path).unwrap();
        assert_eq!(manifest.workloads.len(), 3);
        assert_eq!(manifest.route_table().find("/tweets"), Some(&"weather-rest".to_owned()));
        assert_eq!(manifest.components["weather-rest"].settings.topics, ["weather"]);
    }
}
