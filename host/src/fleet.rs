//! Fleet-wide hot-swap: every host follows one compacted Kafka topic of deploys and rollbacks, so
//! a deploy sent to any host's admin API reaches every replica, and a replica that starts later
//! replays the topic and serves the current version from its first request.
//!
//! The topic has one partition, so every host reads the same records in the same order:
//! - `chunk/<digest>/<index>/<count>`: a piece of a component's bytes, at most [`CHUNK_BYTES`]
//!   (under any broker's default message size); compaction keeps one copy per digest and piece.
//! - `event/<unix ms>/<origin>/<nonce>`: an [`Event`] (JSON), a deploy naming a digest or a
//!   rollback, signed by the fleet's deploy key ([`deploy_signing`]). Every event key is new, so
//!   compaction keeps them all: the fleet's audit trail.
//!
//! Each host folds the events it admits (signed by the key it holds, nonce never seen, not older
//! than the last one applied; anything else is counted in `host_deploy_refusals_total` and
//! skipped) into the same [`Plan`] (serving, previous) per component of the application (an
//! order names its component; one without is for the primary component) and swaps that
//! component's [`Registry`] to match; the other components are not touched. A
//! deploy is two steps on the admin API: the bytes are staged (published in pieces and checked),
//! then a signed order names their digest. A component is compiled once per host, as soon as its pieces arrive, so
//! the fleet compiles while the host that took the deploy checks it. A host started with no
//! fleet topic is not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, OnceCell};

use deploy_signing::{Guard, PublicKey, Refusal, SignedOrder};

use crate::app::Application;
use crate::deploy_auth::{Refusals, Source};
use crate::registry::{DeployError, Loaded, Registry};
use crate::runtime::Runtime;

pub use deploy_signing::Action;

/// The largest piece of a component in one record.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// How long a deploy or rollback waits until this host has applied it.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up may take to replay the topic.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the broker may take to answer a metadata or watermark request.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How many refused events the admin API can still ask about (the newest).
const KEPT_REFUSALS: usize = 1024;
/// The pause between two attempts to reach Kafka and the fleet topic at start.
const START_RETRY: Duration = Duration::from_secs(2);

/// One record of the fleet's history: a signed order and the host that published it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    #[serde(flatten)]
    pub signed: SignedOrder,
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
    #[error("{0}")]
    Unauthorized(Refusal),
    #[error("component {0} is not staged on this host: POST its bytes to /components/stage first (votectl component deploy does both)")]
    NotStaged(String),
    #[error("the order names {ordered} but the staged component is {staged}")]
    Mismatch { ordered: String, staged: String },
    #[error("Kafka or the fleet topic was not there within {after:?}: {last}")]
    StartTimeout { after: Duration, last: Box<FleetError> },
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
    /// The fleet's deploy public key: only orders it verifies are applied.
    pub deploy_key: PublicKey,
    /// How long start-up retries reaching Kafka and the fleet topic.
    pub start_timeout: Duration,
}

/// What the follower and the admin API share.
struct Shared {
    history: Mutex<Vec<Entry>>,
    /// Compiled components by digest: each is compiled once per host, from the moment its bytes
    /// are complete (while the host that took the deploy is still checking it).
    compiled: Mutex<HashMap<String, Arc<OnceCell<Arc<Loaded>>>>>,
    /// The offset of the next record to read: everything before it is applied.
    next_offset: watch::Sender<i64>,
    /// Events this host refused, by offset (so the admin API can say why).
    refused: Mutex<HashMap<i64, Refusal>>,
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
    refusals: Refusals,
}

impl Fleet {
    /// Replays the topic, makes `registry` serve what the fleet serves, then keeps following the
    /// topic in the background. Returns once this host has caught up.
    pub async fn start(settings: FleetSettings, runtime: Arc<Runtime>, app: Arc<Application>, refusals: Refusals) -> Result<Self, FleetError> {
        let (consumer, end) = connect_until(&settings).await?;
        let mut publisher_settings = vote_kafka::PublisherSettings::new(settings.brokers.clone(), "votes-host-fleet");
        publisher_settings.timeout = BROKER_TIMEOUT;
        let publisher = vote_kafka::Publisher::new(&publisher_settings).map_err(|e| FleetError::Setup(e.to_string()))?;
        let shared = Arc::new(Shared { history: Mutex::default(), compiled: Mutex::default(), next_offset: watch::Sender::new(0), refused: Mutex::default() });

        let guard = Guard::new(settings.deploy_key.clone());
        let mut follower = Follower {
            runtime,
            app,
            plans: HashMap::new(),
            pieces: HashMap::new(),
            shared: shared.clone(),
            precompile: false,
            guard,
            refusals: refusals.clone(),
        };
        let started = Instant::now();
        let mut next = 0;
        while next < end {
            let message = tokio::time::timeout(REPLAY_TIMEOUT.saturating_sub(started.elapsed()), consumer.recv())
                .await
                .map_err(|_| FleetError::ReplayTimeout(REPLAY_TIMEOUT))??;
            follower.read(&message);
            next = message.offset() + 1;
        }
        let components: Vec<String> = follower.plans.keys().cloned().collect();
        for component in components {
            follower.sync_registry(&component).await;
        }
        shared.next_offset.send_replace(next);
        tracing::info!(topic = %settings.topic, records = end, plans = ?follower.plans, after = ?started.elapsed(), "fleet topic replayed");
        follower.precompile = true;
        tokio::spawn(follower.follow(consumer));
        Ok(Self { settings, publisher, shared, refusals })
    }

    /// Publishes `bytes` and checks them here meanwhile (every host starts compiling them as soon
    /// as they arrive); a signed deploy order naming their digest then makes the fleet serve them
    /// ([`Fleet::order`]). A component this host refuses has its pieces emptied on the topic.
    pub async fn stage(&self, runtime: &Arc<Runtime>, bytes: Vec<u8>) -> Result<Arc<Loaded>, FleetError> {
        if bytes.is_empty() {
            return Err(DeployError::NotAComponent("the body is empty".into()).into());
        }
        let digest = crate::registry::digest(&bytes);
        let count = bytes.len().div_ceil(CHUNK_BYTES);
        let keys: Vec<String> = (0..count).map(|index| format!("chunk/{digest}/{index}/{count}")).collect();
        for (key, chunk) in keys.iter().zip(bytes.chunks(CHUNK_BYTES)) {
            self.publisher.publish(&self.settings.topic, key.as_bytes(), chunk, &[]).await?;
        }
        match compile(runtime, &self.shared.cell(&digest), &digest, bytes).await {
            Ok(loaded) => Ok(loaded),
            Err(refused) => {
                for key in &keys {
                    self.publisher.publish(&self.settings.topic, key.as_bytes(), &[], &[]).await?;
                }
                Err(refused.into())
            }
        }
    }

    /// Checks a signed order (signature, the signer's clock, and for a deploy that this host
    /// staged the very component it names), publishes it and waits until this host applied it.
    pub async fn order(&self, signed: SignedOrder) -> Result<(), FleetError> {
        self.authorize(&signed)?;
        if let Action::Deploy { digest, version, size } = &signed.order.action {
            let staged = self.shared.compiled.lock().expect("fleet lock").get(digest).and_then(|cell| cell.get().cloned());
            let staged = staged.ok_or_else(|| FleetError::NotStaged(digest.clone()))?;
            if (&staged.version, staged.size) != (version, *size) {
                return Err(FleetError::Mismatch { ordered: format!("{version} ({size} bytes)"), staged: format!("{} ({} bytes)", staged.version, staged.size) });
            }
        }
        self.publish_event(signed).await
    }

    /// The admin side's checks of an order: the fleet's key signed it, on a clock within 5 minutes
    /// of this host's.
    pub fn authorize(&self, signed: &SignedOrder) -> Result<(), FleetError> {
        let checked = Guard::new(self.settings.deploy_key.clone()).verify(signed).and_then(|()| deploy_signing::guard::check_clock(signed));
        checked.map_err(|refusal| self.refuse(refusal))
    }

    /// Counts a refused order taken by the admin API and says why.
    pub fn refuse(&self, refusal: Refusal) -> FleetError {
        self.refusals.count(Source::Admin, &refusal);
        FleetError::Unauthorized(refusal)
    }

    /// Every event read so far, oldest first.
    pub fn history(&self) -> Vec<Entry> {
        self.shared.history.lock().expect("fleet lock").clone()
    }

    async fn publish_event(&self, signed: SignedOrder) -> Result<(), FleetError> {
        let event = Event { signed, origin: self.settings.origin.clone() };
        let key = format!("event/{}/{}/{}", event.signed.order.at_unix_ms, event.origin, event.signed.order.nonce);
        let payload = serde_json::to_vec(&event).expect("an event serializes");
        let ack = self.publisher.publish(&self.settings.topic, key.as_bytes(), &payload, &[]).await?;
        let mut next_offset = self.shared.next_offset.subscribe();
        tokio::time::timeout(APPLY_TIMEOUT, next_offset.wait_for(|next| *next > ack.offset))
            .await
            .map_err(|_| FleetError::NotApplied(ack.offset))?
            .map_err(|_| FleetError::NotApplied(ack.offset))?;
        match self.shared.refused.lock().expect("fleet lock").remove(&ack.offset) {
            Some(refusal) => Err(FleetError::Unauthorized(refusal)),
            None => Ok(()),
        }
    }
}

/// Reaches Kafka and the fleet topic, retrying until the start timeout (Kafka and its topics may
/// come up after the hosts, as under Strimzi), logging each failed attempt.
async fn connect_until(settings: &FleetSettings) -> Result<(StreamConsumer, i64), FleetError> {
    let started = Instant::now();
    let mut attempt = 1u32;
    loop {
        match connect(settings).await {
            Ok(connected) => return Ok(connected),
            Err(error) if started.elapsed() + START_RETRY < settings.start_timeout => {
                tracing::warn!(%error, attempt, waited = ?started.elapsed(), timeout = ?settings.start_timeout, "waiting for Kafka and the fleet topic");
            }
            Err(error) => return Err(FleetError::StartTimeout { after: started.elapsed(), last: Box::new(error) }),
        }
        attempt += 1;
        tokio::time::sleep(START_RETRY).await;
    }
}

/// One attempt: the topic exists (or is created), a consumer is assigned to it from the start,
/// and the end offset to replay up to is known.
async fn connect(settings: &FleetSettings) -> Result<(StreamConsumer, i64), FleetError> {
    ensure_topic(settings).await?;
    let mut consumer_config = vote_kafka::consumer_config(&settings.brokers, &format!("votes-host-fleet-{}", settings.origin));
    consumer_config.set("fetch.wait.max.ms", "100").set("enable.partition.eof", "false");
    let consumer: StreamConsumer = consumer_config.create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&settings.topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let (_, end) = tokio::task::block_in_place(|| consumer.fetch_watermarks(&settings.topic, 0, BROKER_TIMEOUT))?;
    Ok((consumer, end))
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

/// Reads the topic and keeps each component's registry in step with its plan.
struct Follower {
    runtime: Arc<Runtime>,
    app: Arc<Application>,
    /// The plan of each component orders named, by id.
    plans: HashMap<String, Plan>,
    /// Component pieces by digest, as they arrive.
    pieces: HashMap<String, Vec<Option<Vec<u8>>>>,
    shared: Arc<Shared>,
    /// Compile a component as soon as its pieces are complete (live, not while replaying).
    precompile: bool,
    /// What this host admitted so far: only signed, fresh orders are applied.
    guard: Guard,
    refusals: Refusals,
}

impl Follower {
    /// Follows the topic for as long as the process runs.
    async fn follow(mut self, consumer: StreamConsumer) {
        loop {
            match consumer.recv().await {
                Ok(message) => {
                    let (offset, changed) = (message.offset(), self.read(&message));
                    drop(message);
                    if let Some(component) = changed {
                        self.sync_registry(&component).await;
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

    /// Takes in one record; returns the component whose plan changed.
    fn read(&mut self, message: &BorrowedMessage<'_>) -> Option<String> {
        let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
        let payload = message.payload().unwrap_or_default();
        if let Some(piece) = key.strip_prefix("chunk/") {
            self.take_piece(piece, payload);
            return None;
        }
        if !key.starts_with("event/") {
            tracing::warn!(%key, offset = message.offset(), "ignoring a record of unknown kind on the fleet topic");
            return None;
        }
        let admitted = serde_json::from_slice::<Event>(payload)
            .map_err(|error| Refusal::Malformed(error.to_string()))
            .and_then(|event| self.guard.admit(&event.signed).map(|()| event));
        let event = match admitted {
            Ok(event) => event,
            Err(refusal) => {
                tracing::warn!(%key, offset = message.offset(), "skipping a fleet event");
                self.refusals.count(Source::Topic, &refusal);
                let mut refused = self.shared.refused.lock().expect("fleet lock");
                refused.insert(message.offset(), refusal);
                if refused.len() > KEPT_REFUSALS {
                    // Only a deploy being answered right now reads these: keep the newest.
                    refused.retain(|offset, _| *offset > message.offset() - KEPT_REFUSALS as i64);
                }
                return None;
            }
        };
        let component = event.signed.order.component.clone().unwrap_or_else(|| self.app.current().primary.clone());
        let applied = self.plans.entry(component.clone()).or_default().apply(&event.signed.order.action);
        tracing::info!(offset = message.offset(), %component, action = ?event.signed.order.action, origin = %event.origin, applied, "fleet event");
        self.shared.history.lock().expect("fleet lock").push(Entry { offset: message.offset(), applied, event });
        applied.then_some(component)
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

    /// The compiled component a slot of `registry`'s plan names, compiling it on first use.
    async fn resolve(&self, registry: &Registry, slot: &Slot) -> Option<Arc<Loaded>> {
        let digest = match slot {
            Slot::Initial => return Some(registry.initial.clone()),
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

    /// Makes `component`'s registry serve what its plan says; keeps serving the old one if it
    /// cannot. A component the application does not have (an order for one a later manifest
    /// adds) waits in its plan.
    async fn sync_registry(&self, component: &str) {
        let (Some(plan), Some(hosted)) = (self.plans.get(component), self.app.current().components.get(component).cloned()) else {
            tracing::warn!(%component, "a fleet order names a component this host does not serve; kept for when it does");
            return;
        };
        let registry = &hosted.registry;
        let Some(serving) = self.resolve(registry, &plan.serving).await else {
            return;
        };
        let previous = match &plan.previous {
            Some(slot) => self.resolve(registry, slot).await,
            None => None,
        };
        registry.set(serving, previous);
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
        let key = deploy_signing::SecretKey::generate().unwrap();
        let signed = deploy_signing::Order::new(deploy("sha256:ab")).unwrap().sign(&key);
        let event = Event { signed, origin: "host-0".into() };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!((json["action"].as_str(), json["digest"].as_str(), json["origin"].as_str()), (Some("deploy"), Some("sha256:ab"), Some("host-0")));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.signed, event.signed);
        assert!(back.signed.signed_by(&key.public()));
        let unsigned: Event = serde_json::from_str(r#"{"action":"rollback","at_unix_ms":1,"nonce":"n","origin":"h"}"#).unwrap();
        assert_eq!((unsigned.signed.order.action, unsigned.signed.signature.as_str()), (Action::Rollback, ""));
    }
}
