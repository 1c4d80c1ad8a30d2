//! The application the host serves: its components, each with its own [`Policy`] (topics, memory
//! cap, request timeout), its share of the requests in flight with its own queue, and its own
//! [`Registry`] of versions; and the route table from paths to components. It comes from the
//! manifest (`spin.toml`, see `vote_platform::manifest`) or from one component file, and a reload
//! of the manifest replaces it whole: routes added or removed take effect at once, components
//! that stay keep the version they serve.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use vote_platform::manifest::{ComponentSettings, Manifest};
use vote_platform::route::{Pattern, Routes};

use crate::metrics::Metrics;
use crate::registry::{ComponentInfo, Registry};
use crate::runtime::{Policy, Runtime};
use crate::shed::Admission;

/// What a component gets when its manifest entry does not say.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Topics of a component given as one file (`--component`, `--allowed-topic`).
    pub topics: Vec<String>,
    pub memory_bytes: usize,
    pub request_timeout: Duration,
    /// The host's bound on requests in flight: the components' shares add up to at most this;
    /// components without a share of their own split what the others leave.
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub queue_wait: Duration,
    /// How many requests one instance serves when the manifest does not say (`--instance-reuse`,
    /// 1: a fresh instance per request).
    pub instance_reuse: u32,
    /// The instance pool's size: the components' shares plus the idle instances of those that
    /// reuse instances must fit below it.
    pub max_instances: usize,
    /// The broker's publish timeout: every component's request timeout must leave room for it.
    pub publish_timeout: Duration,
}

/// Where the application comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A manifest; relative component sources are resolved against its directory, or looked up
    /// by file name in `component_dir` when given (where `make components` put them).
    Manifest { path: PathBuf, component_dir: Option<PathBuf> },
    /// One component file serving every path.
    Single(PathBuf),
}

/// One component of the application.
pub struct Hosted {
    pub id: String,
    pub policy: Policy,
    pub registry: Arc<Registry>,
    /// Its share of the requests in flight, and its queue.
    pub admission: Admission,
    /// What the manifest said of it (to tell, on a reload, whether it changed).
    settings: ComponentSettings,
    share: usize,
}

impl Hosted {
    /// Whether it may publish band votes: its refused requests count as invalid votes.
    pub fn counts_votes(&self) -> bool {
        self.policy.topics.iter().any(|t| t == vote_core::TOPIC)
    }
}

/// The components and routes serving now.
pub struct App {
    pub routes: Routes<Arc<Hosted>>,
    pub components: BTreeMap<String, Arc<Hosted>>,
    /// The component admin calls and fleet orders without a component name mean: the one
    /// routed at `/...`, else the first.
    pub primary: String,
}

impl App {
    /// The component serving `path`, if a route matches.
    pub fn route(&self, path: &str) -> Option<&Arc<Hosted>> {
        self.routes.find(path)
    }

    /// The component named `id`, or the primary one for `None`.
    pub fn component(&self, id: Option<&str>) -> Option<&Arc<Hosted>> {
        self.components.get(id.unwrap_or(&self.primary))
    }
}

/// What `GET /app` shows of one component.
#[derive(Debug, Serialize)]
pub struct ComponentView {
    pub id: String,
    pub routes: Vec<String>,
    pub topics: Vec<String>,
    pub memory_mib: usize,
    pub request_timeout_ms: u64,
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub in_flight: usize,
    pub queued: usize,
    pub versions: Vec<ComponentInfo>,
}

/// Why an application could not be loaded; the one serving (if any) is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Manifest(#[from] vote_platform::ManifestError),
    #[error("component {id}: {reason}")]
    Component { id: String, reason: String },
    #[error("the manifest has no component and no route")]
    Empty,
    /// The host's publishers were made at start-up for one set of RabbitMQ topics.
    #[error("the manifest binds the topics {manifest:?} to rabbitmq, but this host was started with {host:?} there: moving a topic between brokers takes a restart (votectl down && votectl up)")]
    BrokersChanged { manifest: Vec<String>, host: Vec<String> },
}

/// The application, replaced whole on a reload.
pub struct Application {
    current: ArcSwap<App>,
    source: Source,
    runtime: Arc<Runtime>,
    metrics: Metrics,
    defaults: Defaults,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// What [`Application::reload`] changed.
#[derive(Debug, Default, Serialize)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub routes: Vec<String>,
}

/// One component to load: its id, its file and its settings.
struct Entry {
    id: String,
    source: PathBuf,
    settings: ComponentSettings,
}

impl Application {
    /// Loads every component of `source` (compiled in parallel) and its routes.
    pub async fn load(source: Source, runtime: Arc<Runtime>, metrics: Metrics, defaults: Defaults) -> Result<Self, AppError> {
        let app = build(&source, &runtime, &metrics, &defaults, None).await?;
        Ok(Self { current: ArcSwap::from_pointee(app), source, runtime, metrics, defaults, reloading: tokio::sync::Mutex::new(()) })
    }

    /// The application serving now; a request keeps the one it took.
    pub fn current(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// Re-reads the manifest and swaps in what it says: new components are loaded, removed ones
    /// stop taking requests (those running finish), the routes are replaced at once. A component
    /// that stays keeps its registry (the version it serves, deployed or not) and, when its
    /// settings did not change, its place bound and queue.
    pub async fn reload(&self) -> Result<Reloaded, AppError> {
        let _one = self.reloading.lock().await;
        let old = self.current();
        let new = build(&self.source, &self.runtime, &self.metrics, &self.defaults, Some(&old)).await?;
        let mut reloaded = Reloaded {
            added: new.components.keys().filter(|id| !old.components.contains_key(*id)).cloned().collect(),
            removed: old.components.keys().filter(|id| !new.components.contains_key(*id)).cloned().collect(),
            changed: new.components.iter().filter(|(id, hosted)| old.components.get(*id).is_some_and(|o| !Arc::ptr_eq(o, hosted))).map(|(id, _)| id.clone()).collect(),
            routes: Vec::new(),
        };
        reloaded.routes = new.routes.iter().map(|(pattern, hosted)| format!("{} -> {}", describe(pattern), hosted.id)).collect();
        for id in &reloaded.removed {
            let version = &old.components[id].registry.current().version;
            self.metrics.serving.with_label_values(&[id.as_str(), version.as_str()]).set(0);
        }
        self.current.store(Arc::new(new));
        tracing::info!(?reloaded, "application reloaded from the manifest");
        Ok(reloaded)
    }

    /// Every component, its routes, limits, load and versions.
    pub fn view(&self) -> Vec<ComponentView> {
        let app = self.current();
        app.components
            .values()
            .map(|hosted| ComponentView {
                id: hosted.id.clone(),
                routes: app.routes.iter().filter(|(_, h)| Arc::ptr_eq(h, hosted)).map(|(p, _)| describe(p)).collect(),
                topics: hosted.policy.topics.to_vec(),
                memory_mib: hosted.policy.memory_bytes / (1024 * 1024),
                request_timeout_ms: hosted.policy.request_timeout.as_millis() as u64,
                max_in_flight: hosted.share,
                max_queued: hosted.settings.max_queued.unwrap_or(self.defaults.max_queued),
                in_flight: hosted.admission.running(),
                queued: hosted.admission.queued(),
                versions: hosted.registry.list(),
            })
            .collect()
    }

    /// Sets the per-component load gauges (when `/metrics` is read).
    pub fn record_load(&self) {
        for hosted in self.current().components.values() {
            self.metrics.component_in_flight.with_label_values(&[hosted.id.as_str()]).set(hosted.admission.running() as i64);
            self.metrics.component_queued.with_label_values(&[hosted.id.as_str()]).set(hosted.admission.queued() as i64);
            self.metrics.instances_idle.with_label_values(&[hosted.id.as_str()]).set(hosted.registry.current().idle.len() as i64);
        }
    }
}

/// A route pattern as Spin writes it.
fn describe(pattern: &Pattern) -> String {
    match pattern {
        Pattern::Exact(path) => path.clone(),
        Pattern::Wildcard(prefix) => format!("{prefix}/..."),
    }
}

/// The id of a component given as one file: its file name in kebab case (`vote_rest.wasm` ->
/// `vote-rest`), or `default`.
fn single_id(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_ascii_lowercase().replace('_', "-");
    if vote_platform::names::check(&stem).is_none() {
        stem
    } else {
        "default".to_owned()
    }
}

/// Reads the source's components and routes; the manifest must bind to RabbitMQ the topics
/// `on_rabbit` the host publishes there.
fn entries(source: &Source, defaults: &Defaults, on_rabbit: &[String]) -> Result<(Vec<Entry>, Vec<(String, String)>), AppError> {
    match source {
        Source::Single(path) => {
            let id = single_id(path);
            let settings = ComponentSettings { topics: defaults.topics.clone(), ..ComponentSettings::default() };
            Ok((vec![Entry { id: id.clone(), source: path.clone(), settings }], vec![("/...".to_owned(), id)]))
        }
        Source::Manifest { path, component_dir } => {
            let manifest = Manifest::load(path)?;
            let mut manifest_rabbit = manifest.rabbitmq_topics();
            manifest_rabbit.sort();
            if manifest_rabbit != on_rabbit {
                return Err(AppError::BrokersChanged { manifest: manifest_rabbit, host: on_rabbit.to_vec() });
            }
            let entries = manifest
                .components
                .into_values()
                .map(|spec| {
                    let source = match (component_dir, spec.source.file_name()) {
                        (Some(dir), Some(name)) => dir.join(name),
                        _ => spec.source,
                    };
                    Entry { id: spec.id, source, settings: spec.settings }
                })
                .collect();
            Ok((entries, manifest.routes))
        }
    }
}

/// Each component's share of the requests in flight: its own, or an equal part of what the
/// others leave of the host's bound.
fn shares(entries: &[Entry], total: usize) -> Result<Vec<usize>, AppError> {
    let given: usize = entries.iter().filter_map(|e| e.settings.max_in_flight).sum();
    let unset = entries.iter().filter(|e| e.settings.max_in_flight.is_none()).count();
    let left = total.checked_sub(given).filter(|left| unset == 0 || *left >= unset).ok_or_else(|| AppError::Component {
        id: entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>().join(", "),
        reason: format!(
            "their max_in_flight shares add up to {given}, which leaves less than one place each for the {unset} without a share of the host's --max-in-flight {total}"
        ),
    })?;
    Ok(entries.iter().map(|e| e.settings.max_in_flight.unwrap_or(left / unset.max(1))).collect())
}

/// Builds the application of `source`, reusing from `old` what did not change.
async fn build(source: &Source, runtime: &Arc<Runtime>, metrics: &Metrics, defaults: &Defaults, old: Option<&App>) -> Result<App, AppError> {
    let (entries, routes) = entries(source, defaults, &runtime.brokers().rabbit_topics())?;
    if entries.is_empty() || routes.is_empty() {
        return Err(AppError::Empty);
    }
    let shares = shares(&entries, defaults.max_in_flight)?;
    check_idle_room(&entries, defaults)?;
    let loads = entries.iter().zip(&shares).map(|(entry, share)| host_one(entry, *share, runtime, metrics, defaults, old));
    let hosted = futures::future::try_join_all(loads).await?;
    let components: BTreeMap<String, Arc<Hosted>> = hosted.into_iter().map(|h| (h.id.clone(), h)).collect();
    let table = routes
        .iter()
        .map(|(route, id)| {
            let pattern = Pattern::parse(route).map_err(|e| AppError::Component { id: id.clone(), reason: e.to_string() })?;
            Ok((pattern, components[id].clone()))
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    let routes_table = Routes::new(table).map_err(|e| AppError::Component { id: String::new(), reason: e.to_string() })?;
    let primary = routes
        .iter()
        .find(|(route, _)| route == "/...")
        .map(|(_, id)| id.clone())
        .unwrap_or_else(|| components.keys().next().expect("at least one component").clone());
    Ok(App { routes: routes_table, components, primary })
}

/// Idle instances of components that reuse instances hold slots of the instance pool: with the
/// requests in flight (and one for a deploy's check) they must fit in it, or a request could find
/// no free slot.
fn check_idle_room(entries: &[Entry], defaults: &Defaults) -> Result<(), AppError> {
    let reusing: Vec<&Entry> = entries.iter().filter(|e| e.settings.instance_reuse.unwrap_or(defaults.instance_reuse) > 1).collect();
    let needed = defaults.max_in_flight + reusing.len() * crate::reuse::MAX_IDLE + 1;
    if reusing.is_empty() || needed <= defaults.max_instances {
        return Ok(());
    }
    Err(AppError::Component {
        id: reusing[0].id.clone(),
        reason: format!(
            "instance_reuse: {} components reusing instances keep up to {} idle instances each; with --max-in-flight {} that needs {needed} instances, more than --max-instances {}",
            reusing.len(),
            crate::reuse::MAX_IDLE,
            defaults.max_in_flight,
            defaults.max_instances
        ),
    })
}

/// One component ready to serve: the old one when nothing changed, else a new policy and bound
/// around its old registry, or a newly loaded registry.
async fn host_one(entry: &Entry, share: usize, runtime: &Arc<Runtime>, metrics: &Metrics, defaults: &Defaults, old: Option<&App>) -> Result<Arc<Hosted>, AppError> {
    let refuse = |reason: String| AppError::Component { id: entry.id.clone(), reason };
    let previous = old.and_then(|app| app.components.get(&entry.id));
    if let Some(previous) = previous.filter(|p| p.settings == entry.settings && p.share == share) {
        return Ok(previous.clone());
    }
    let settings = &entry.settings;
    let memory_bytes = settings.memory_mib.map_or(defaults.memory_bytes, |mib| mib * 1024 * 1024);
    if memory_bytes > runtime.limits.memory_bytes {
        return Err(refuse(format!("memory_mib {} is above the host's --memory-mib {}", memory_bytes >> 20, runtime.limits.memory_bytes >> 20)));
    }
    let request_timeout = settings.request_timeout_ms.map_or(defaults.request_timeout, Duration::from_millis);
    vote_kafka::check_caller_deadline(&format!("component {} request_timeout_ms", entry.id), request_timeout, defaults.publish_timeout).map_err(|e| refuse(e.to_string()))?;
    let registry = match previous {
        Some(previous) => previous.registry.clone(),
        None => {
            let bytes = tokio::fs::read(&entry.source).await.map_err(|e| refuse(format!("reading {}: {e}", entry.source.display())))?;
            let loaded = Registry::load(runtime, bytes, ()).await.map_err(|e| refuse(format!("loading {}: {e}", entry.source.display())))?;
            tracing::info!(component = %entry.id, version = %loaded.version, source = %entry.source.display(), "component loaded");
            Arc::new(Registry::new(&entry.id, Arc::new(loaded), metrics.clone()))
        }
    };
    let instance_reuse = settings.instance_reuse.unwrap_or(defaults.instance_reuse);
    let policy = Policy { component: Arc::from(entry.id.as_str()), topics: Arc::new(settings.topics.clone()), memory_bytes, request_timeout, instance_reuse };
    // Idle instances are kept only while the policy asks for reuse.
    let serving = registry.current();
    if instance_reuse > 1 {
        serving.idle.serve();
    } else {
        serving.idle.retire();
    }
    let admission = Admission::new(share, settings.max_queued.unwrap_or(defaults.max_queued), defaults.queue_wait.min(request_timeout / 2));
    Ok(Arc::new(Hosted { id: entry.id.clone(), policy, registry, admission, settings: settings.clone(), share }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, share: Option<usize>) -> Entry {
        Entry { id: id.into(), source: PathBuf::new(), settings: ComponentSettings { max_in_flight: share, ..ComponentSettings::default() } }
    }

    #[test]
    fn components_without_a_share_split_what_the_others_leave() {
        let entries = [entry("a", None), entry("b", Some(48)), entry("c", Some(48))];
        assert_eq!(shares(&entries, 192).unwrap(), vec![96, 48, 48]);
        let error = shares(&entries, 96).unwrap_err().to_string();
        assert!(error.contains("add up to 96"), "{error}");
        assert!(shares(&[entry("a", Some(200))], 192).is_err());
    }

    #[test]
    fn idle_instances_of_reusing_components_must_fit_in_the_pool() {
        let defaults = Defaults {
            topics: Vec::new(),
            memory_bytes: 1 << 20,
            request_timeout: Duration::from_secs(1),
            max_in_flight: 192,
            max_queued: 0,
            queue_wait: Duration::ZERO,
            instance_reuse: 1,
            max_instances: 256,
            publish_timeout: Duration::from_millis(100),
        };
        let reusing = |id: &str| Entry { id: id.into(), source: PathBuf::new(), settings: ComponentSettings { instance_reuse: Some(128), ..ComponentSettings::default() } };
        assert!(check_idle_room(&[entry("a", None), reusing("b")], &defaults).is_ok(), "192 + 16 + 1 fit in 256");
        let four = [reusing("a"), reusing("b"), reusing("c"), reusing("d")];
        let error = check_idle_room(&four, &defaults).unwrap_err().to_string();
        assert!(error.contains("instance_reuse") && error.contains("--max-instances 256"), "{error}");
        let everyone = Defaults { instance_reuse: 8, ..defaults };
        assert!(check_idle_room(&[entry("a", None), entry("b", None), entry("c", None), entry("d", None)], &everyone).is_err(), "--instance-reuse counts for components that do not say");
    }

    #[test]
    fn a_single_component_is_named_after_its_file() {
        assert_eq!(single_id(Path::new("/x/vote_rest.wasm")), "vote-rest");
        assert_eq!(single_id(Path::new("/x/9.wasm")), "default");
    }
}
