//! Fleet-wide hot-swap: every host follows one compacted Kafka topic of deploys and rollbacks, so
//! a deploy sent to any host's admin API reaches every replica, and a replica that starts later
//! replays the topic and serves the current version from its first request.
//!
//! The topic has one partition, so every host reads the same records in the same order:
//! - `chunk/<digest>/<index>/<count>`: a piece of a component's bytes, at most [`CHUNK_BYTES`]
//!   (under any broker's default message size); compaction keeps one copy per digest and piece.
//! - `event/<unix ms>/<origin>/<nonce>`: an [`Event`] (JSON), a deploy naming a digest or a
//!   rollback. Every event key is new, so compaction keeps them all: the fleet's audit trail.
//!
//! Each host folds the events into the same [`Plan`] (serving, previous) and swaps its
//! [`Registry`] to match. A component is compiled once per host, as soon as its pieces arrive, so
//! the fleet compiles while the host that took the deploy checks it. A host started with no
//! fleet topic is not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, OnceCell};

use crate::registry::{DeployError, Loaded, Registry};
use crate::runtime::Runtime;

/// The largest piece of a component in one record.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// How long a deploy or rollback waits until this host has applied it.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up may take to replay the topic.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the broker may take to answer a metadata or watermark request.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// What an event asks of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Serve the component with this digest; the serving one becomes the rollback target.
    Deploy { digest: String, version: String, size: usize },
    /// Swap the previous component back in.
    Rollback,
}

/// One record of the fleet's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    #[serde(flatten)]
    pub action: Action,
    pub at_unix_ms: u64,
    /// The host whose admin API took the request.
    pub origin: String,
}

/// An event as this host read it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub offset: i64,
    /// False for a rollback with nothing to roll back to.
    pub applied: bool,
    #[serde(flatten)]
    pub event: Event,
}

/// Which component a slot of the plan names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The component the host was started with (the same image everywhere in a fleet).
    Initial,
    Digest(String),
}

/// What the fleet serves and rolls back to, folded from the events in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub serving: Slot,
    pub previous: Option<Slot>,
}

impl Default for Plan {
    fn default() -> Self {
        Self { serving: Slot::Initial, previous: None }
    }
}

impl Plan {
    /// Applies one event, as [`Registry::deploy`] and [`Registry::rollback`] do on one host.
    /// Returns false when the event changes nothing (a rollback with no previous component).
    pub fn apply(&mut self, action: &Action) -> bool {
        match action {
            Action::Deploy { digest, .. } => {
                let replaced = std::mem::replace(&mut self.serving, Slot::Digest(digest.clone()));
                self.previous = Some(replaced);
                true
            }
            Action::Rollback => match self.previous.take() {
                Some(back) => {
                    let replaced = std::mem::replace(&mut self.serving, back);
                    self.previous = Some(replaced);
                    true
                }
                None => false,
            },
        }
    }
}

/// Why the fleet topic could not be followed or written.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the fleet topic {0:?} does not exist: create it (one partition, cleanup.policy=compact) or pass --fleet-create-topic")]
    MissingTopic(String),
    #[error("setting up the fleet topic or its clients: {0}")]
    Setup(String),
    #[error(transparent)]
    Refused(#[from] DeployError),
    #[error("publishing to the fleet topic: {0}")]
    Publish(#[from] vote_kafka::PublishError),
    #[error("replaying the fleet topic took longer than {0:?}")]
    ReplayTimeout(Duration),
    #[error("published at offset {0}, but this host had not applied it after {APPLY_TIMEOUT:?}")]
    NotApplied(i64),
}

/// Where the fleet topic is and who this host is.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub brokers: String,
    pub topic: String,
    /// Create the topic (compacted, one partition, replication 1) when it is missing.
    pub create_topic: bool,
    /// This host's name in the events it publishes.
    pub origin: String,
}

/// What the follower and the admin API share.
struct Shared {
    history: Mutex<Vec<Entry>>,
    /// Compiled components by digest: each is compiled once per host, from the moment its bytes
    /// are complete (while the host that took the deploy is still checking it).
    compiled: Mutex<HashMap<String, Arc<OnceCell<Arc<Loaded>>>>>,
    /// The offset of the next record to read: everything before it is applied.
    next_offset: watch::Sender<i64>,
}

impl Shared {
    fn cell(&self, digest: &str) -> Arc<OnceCell<Arc<Loaded>>> {
        self.compiled.lock().expect("fleet lock").entry(digest.to_owned()).or_default().clone()
    }
}

/// Compiles and checks `bytes` into `cell` unless it holds them already (or another task is at it).
async fn compile(runtime: &Arc<Runtime>, cell: &OnceCell<Arc<Loaded>>, digest: &str, bytes: Vec<u8>) -> Result<Arc<Loaded>, DeployError> {
    let loaded = cell
        .get_or_try_init(|| async {
            let loaded = Registry::load(runtime, bytes, ()).await?;
            if loaded.digest != digest {
                return Err(DeployError::Check(format!("its bytes hash to {}, not {digest}", loaded.digest)));
            }
            Ok(Arc::new(loaded))
        })
        .await?;
    Ok(loaded.clone())
}

/// The admin API's handle on the fleet topic.
pub struct Fleet {
    settings: FleetSettings,
    publisher: vote_kafka::Publisher,
    shared: Arc<Shared>,
}

impl Fleet {
    /// Replays the topic, makes `registry` serve what the fleet serves, then keeps following the
    /// topic in the background. Returns once this host has caught up.
    pub async fn start(settings: FleetSettings, runtime: Arc<Runtime>, registry: Arc<Registry>) -> Result<Self, FleetError> {
        ensure_topic(&settings).await?;
        let mut publisher_settings = vote_kafka::PublisherSettings::new(settings.brokers.clone(), "votes-host-fleet");
        publisher_settings.timeout = BROKER_TIMEOUT;
        let publisher = vote_kafka::Publisher::new(&publisher_settings).map_err(|e| FleetError::Setup(e.to_string()))?;
        let shared = Arc::new(Shared { history: Mutex::default(), compiled: Mutex::default(), next_offset: watch::Sender::new(0) });

        let mut consumer_config = vote_kafka::consumer_config(&settings.brokers, &format!("votes-host-fleet-{}", settings.origin));
        consumer_config.set("fetch.wait.max.ms", "100").set("enable.partition.eof", "false");
        let consumer: StreamConsumer = consumer_config.create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&settings.topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let (_, end) = tokio::task::block_in_place(|| consumer.fetch_watermarks(&settings.topic, 0, BROKER_TIMEOUT))?;

        let initial = registry.current();
        let mut follower = Follower { runtime, registry, initial, plan: Plan::default(), pieces: HashMap::new(), shared: shared.clone(), precompile: false };
        let started = Instant::now();
        let mut next = 0;
        while next < end {
            let message = tokio::time::timeout(REPLAY_TIMEOUT.saturating_sub(started.elapsed()), consumer.recv())
                .await
                .map_err(|_| FleetError::ReplayTimeout(REPLAY_TIMEOUT))??;
            follower.read(&message);
            next = message.offset() + 1;
        }
        follower.sync_registry().await;
        shared.next_offset.send_replace(next);
        tracing::info!(topic = %settings.topic, records = end, plan = ?follower.plan, after = ?started.elapsed(), "fleet topic replayed");
        follower.precompile = true;
        tokio::spawn(follower.follow(consumer));
        Ok(Self { settings, publisher, shared })
    }

    /// Publishes `bytes`, checks them here meanwhile (every host starts compiling them as soon as
    /// they arrive), then publishes the deploy event and waits until this host serves it. A
    /// component this host refuses gets no event, and its pieces are emptied on the topic.
    pub async fn deploy(&self, runtime: &Arc<Runtime>, bytes: Vec<u8>) -> Result<(), FleetError> {
        if bytes.is_empty() {
            return Err(DeployError::NotAComponent("the body is empty".into()).into());
        }
        let digest = crate::registry::digest(&bytes);
        let count = bytes.len().div_ceil(CHUNK_BYTES);
        let keys: Vec<String> = (0..count).map(|index| format!("chunk/{digest}/{index}/{count}")).collect();
        for (key, chunk) in keys.iter().zip(bytes.chunks(CHUNK_BYTES)) {
            self.publisher.publish(&self.settings.topic, key.as_bytes(), chunk, &[]).await?;
        }
        let loaded = match compile(runtime, &self.shared.cell(&digest), &digest, bytes).await {
            Ok(loaded) => loaded,
            Err(refused) => {
                for key in &keys {
                    self.publisher.publish(&self.settings.topic, key.as_bytes(), &[], &[]).await?;
                }
                return Err(refused.into());
            }
        };
        self.publish_event(Action::Deploy { digest, version: loaded.version.clone(), size: loaded.size }).await
    }

    /// Publishes a rollback event and waits until this host applied it.
    pub async fn rollback(&self) -> Result<(), FleetError> {
        self.publish_event(Action::Rollback).await
    }

    /// Every event read so far, oldest first.
    pub fn history(&self) -> Vec<Entry> {
        self.shared.history.lock().expect("fleet lock").clone()
    }

    async fn publish_event(&self, action: Action) -> Result<(), FleetError> {
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let event = Event { action, at_unix_ms: at.as_millis() as u64, origin: self.settings.origin.clone() };
        let key = format!("event/{}/{}/{}", event.at_unix_ms, event.origin, at.subsec_nanos());
        let payload = serde_json::to_vec(&event).expect("an event serializes");
        let ack = self.publisher.publish(&self.settings.topic, key.as_bytes(), &payload, &[]).await?;
        let mut next_offset = self.shared.next_offset.subscribe();
        tokio::time::timeout(APPLY_TIMEOUT, next_offset.wait_for(|next| *next > ack.offset))
            .await
            .map_err(|_| FleetError::NotApplied(ack.offset))?
            .map_err(|_| FleetError::NotApplied(ack.offset))?;
        Ok(())
    }
}

/// Creates the topic when asked to, or says it is missing.
async fn ensure_topic(settings: &FleetSettings) -> Result<(), FleetError> {
    let (brokers, topic) = (settings.brokers.clone(), settings.topic.clone());
    let partitions = tokio::task::spawn_blocking(move || vote_kafka::probe(&brokers, &topic, BROKER_TIMEOUT))
        .await
        .map_err(|e| FleetError::Setup(e.to_string()))?
        .map_err(|e| FleetError::Setup(e.to_string()))?;
    match (partitions, settings.create_topic) {
        (0, false) => Err(FleetError::MissingTopic(settings.topic.clone())),
        (0, true) => {
            vote_kafka::ensure_topic_with(&settings.brokers, &settings.topic, 1, &[("cleanup.policy", "compact")])
                .await
                .map_err(|e| FleetError::Setup(e.to_string()))?;
            tracing::info!(topic = %settings.topic, "fleet topic created");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads the topic and keeps the registry in step with the plan.
struct Follower {
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    initial: Arc<Loaded>,
    plan: Plan,
    /// Component pieces by digest, as they arrive.
    pieces: HashMap<String, Vec<Option<Vec<u8>>>>,
    shared: Arc<Shared>,
    /// Compile a component as soon as its pieces are complete (live, not while replaying).
    precompile: bool,
}

impl Follower {
    /// Follows the topic for as long as the process runs.
    async fn follow(mut self, consumer: StreamConsumer) {
        loop {
            match consumer.recv().await {
                Ok(message) => {
                    let (offset, changed) = (message.offset(), self.read(&message));
                    drop(message);
                    if changed {
                        self.sync_registry().await;
                    }
                    self.shared.next_offset.send_replace(offset + 1);
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the fleet topic; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Takes in one record; returns true when the plan changed.
    fn read(&mut self, message: &BorrowedMessage<'_>) -> bool {
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
        let payload = message.payload().unwrap_or_default();
        if let Some(piece) = key.strip_prefix("chunk/") {
            self.take_piece(piece, payload);
            return false;
        }
        if !key.starts_with("event/") {
            tracing::warn!(%key, offset = message.offset(), "ignoring a record of unknown kind on the fleet topic");
            return false;
        }
        let event: Event = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%key, %error, "ignoring an unreadable fleet event");
                return false;
            }
        };
        let applied = self.plan.apply(&event.action);
        tracing::info!(offset = message.offset(), action = ?event.action, origin = %event.origin, applied, "fleet event");
        self.shared.history.lock().expect("fleet lock").push(Entry { offset: message.offset(), applied, event });
        applied
    }

    /// Stores `<digest>/<index>/<count>`'s bytes.
    fn take_piece(&mut self, piece: &str, bytes: &[u8]) {
        let mut parts = piece.rsplitn(3, '/');
        let (count, index, digest) = (parts.next(), parts.next(), parts.next());
        let (Some(Ok(count)), Some(Ok(index)), Some(digest)) = (count.map(str::parse::<usize>), index.map(str::parse::<usize>), digest) else {
            tracing::warn!(piece, "ignoring a malformed component piece");
            return;
        };
        if index >= count || count > crate::admin::MAX_COMPONENT_BYTES / CHUNK_BYTES + 1 {
            tracing::warn!(piece, "ignoring a component piece out of range");
            return;
        }
        if bytes.is_empty() {
            // The host that took this deploy refused the component.
            self.pieces.remove(digest);
            return;
        }
        let pieces = self.pieces.entry(digest.to_owned()).or_insert_with(|| vec![None; count]);
        if pieces.len() != count {
            return;
        }
        pieces[index] = Some(bytes.to_vec());
        if let (true, Some(bytes)) = (self.precompile, self.bytes(digest)) {
            let (runtime, cell, digest) = (self.runtime.clone(), self.shared.cell(digest), digest.to_owned());
            tokio::spawn(async move {
                if let Err(error) = compile(&runtime, &cell, &digest, bytes).await {
                    tracing::debug!(%digest, %error, "a component on the fleet topic does not load here");
                }
            });
        }
    }

    /// A component's bytes once all its pieces arrived.
    fn bytes(&self, digest: &str) -> Option<Vec<u8>> {
        let pieces = self.pieces.get(digest)?.iter().map(Option::as_deref).collect::<Option<Vec<_>>>()?;
        Some(pieces.concat())
    }

    /// The compiled component a slot names, compiling it on first use.
    async fn resolve(&self, slot: &Slot) -> Option<Arc<Loaded>> {
        let digest = match slot {
            Slot::Initial => return Some(self.initial.clone()),
            Slot::Digest(digest) => digest,
        };
        let cell = self.shared.cell(digest);
        if let Some(loaded) = cell.get() {
            return Some(loaded.clone());
        }
        let Some(bytes) = self.bytes(digest) else {
            tracing::error!(%digest, "the fleet topic names a component whose bytes are missing");
            return None;
        };
        compile(&self.runtime, &cell, digest, bytes)
            .await
            .inspect_err(|error| tracing::error!(%digest, %error, "a fleet component failed to load on this host"))
            .ok()
    }

    /// Makes the registry serve what the plan says; keeps serving the old one if it cannot.
    async fn sync_registry(&self) {
        let Some(serving) = self.resolve(&self.plan.serving).await else {
            return;
        };
        let previous = match &self.plan.previous {
            Some(slot) => self.resolve(slot).await,
            None => None,
        };
        self.registry.set(serving, previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(digest: &str) -> Action {
        Action::Deploy { digest: digest.into(), version: format!("{digest}@1"), size: 1 }
    }

    #[test]
    fn deploys_and_rollbacks_fold_like_one_host() {
        let mut plan = Plan::default();
        assert!(!plan.apply(&Action::Rollback), "nothing to roll back to at first");
        assert!(plan.apply(&deploy("a")));
        assert_eq!(plan, Plan { serving: Slot::Digest("a".into()), previous: Some(Slot::Initial) });
        assert!(plan.apply(&Action::Rollback));
        assert_eq!(plan, Plan { serving: Slot::Initial, previous: Some(Slot::Digest("a".into())) });
        assert!(plan.apply(&Action::Rollback), "a second rollback swaps back, as on one host");
        assert_eq!(plan.serving, Slot::Digest("a".into()));
        assert!(plan.apply(&deploy("b")));
        assert_eq!(plan, Plan { serving: Slot::Digest("b".into()), previous: Some(Slot::Digest("a".into())) });
    }

    #[test]
    fn events_read_back_as_written() {
        let event = Event { action: deploy("sha256:ab"), at_unix_ms: 7, origin: "host-0".into() };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["action"], "deploy");
        assert_eq!(json["digest"], "sha256:ab");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.action, event.action);
        let rollback: Event = serde_json::from_str(r#"{"action":"rollback","at_unix_ms":1,"origin":"h"}"#).unwrap();
        assert_eq!(rollback.action, Action::Rollback);
    }
}
