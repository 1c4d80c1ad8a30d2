//! Signed deploys on a host: the deploy public key from its flags, the start-up flags of a fleet
//! host, and the `host_deploy_refusals_total{source,refusal}` counter.

use std::path::PathBuf;
use std::time::Duration;

use deploy_signing::{PublicKey, Refusal};
use prometheus::{IntCounterVec, Opts, Registry};

/// Default: how long a fleet host waits at start for Kafka and the fleet topic.
pub const DEFAULT_FLEET_START_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The flags of a fleet host's deploy key and start-up.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetKeyArgs {
    /// A file holding the fleet's deploy public key (base64, as `votectl component keygen` writes
    /// it to KEY.pub); a host following a fleet topic applies only deploys signed by its private half.
    #[arg(long, env = "VOTES_DEPLOY_PUBLIC_KEY_FILE", conflicts_with = "deploy_public_key")]
    pub deploy_public_key_file: Option<PathBuf>,
    /// The fleet's deploy public key itself (base64).
    #[arg(long, env = "VOTES_DEPLOY_PUBLIC_KEY")]
    pub deploy_public_key: Option<String>,
    /// How long a fleet host waits at start for Kafka and the fleet topic, in ms, retrying and
    /// logging progress, before it gives up.
    #[arg(long, env = "VOTES_HOST_FLEET_START_TIMEOUT_MS", default_value_t = DEFAULT_FLEET_START_TIMEOUT.as_millis() as u64)]
    pub fleet_start_timeout_ms: u64,
}

/// Why a host refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a host that follows a fleet topic needs the fleet's deploy public key (--deploy-public-key-file or --deploy-public-key, env VOTES_DEPLOY_PUBLIC_KEY_FILE / VOTES_DEPLOY_PUBLIC_KEY); make a key pair with `votectl component keygen`")]
    NoKey,
    #[error("the deploy public key is unusable")]
    Key(#[from] deploy_signing::KeyError),
}

impl FleetKeyArgs {
    /// The deploy public key, if one was given; an empty or malformed one is an error.
    pub fn key(&self) -> Result<Option<PublicKey>, StartError> {
        if let Some(path) = &self.deploy_public_key_file {
            return Ok(Some(PublicKey::read(path)?));
        }
        match &self.deploy_public_key {
            Some(text) => Ok(Some(PublicKey::parse(text, "--deploy-public-key (VOTES_DEPLOY_PUBLIC_KEY)")?)),
            None => Ok(None),
        }
    }

    /// The key a fleet host must have.
    pub fn required_key(&self) -> Result<PublicKey, StartError> {
        self.key()?.ok_or(StartError::NoKey)
    }

    pub fn fleet_start_timeout(&self) -> Duration {
        Duration::from_millis(self.fleet_start_timeout_ms)
    }
}

/// Where a refused order came from (the `source` label).
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A record read on the fleet topic.
    Topic,
    /// A request to this host's admin API.
    Admin,
}

impl Source {
    const ALL: [Source; 2] = [Source::Topic, Source::Admin];

    fn label(self) -> &'static str {
        match self {
            Source::Topic => "topic",
            Source::Admin => "admin",
        }
    }
}

/// `host_deploy_refusals_total{source,refusal}`.
#[derive(Clone)]
pub struct Refusals(IntCounterVec);

impl Refusals {
    /// The counter, registered in the host's metrics registry with every label pair at zero.
    pub fn register(registry: &Registry) -> Self {
        let counter = IntCounterVec::new(
            Opts::new("host_deploy_refusals_total", "Deploy and rollback orders refused, by where they came from (topic, admin) and why"),
            &["source", "refusal"],
        )
        .expect("valid metric");
        registry.register(Box::new(counter.clone())).expect("host_deploy_refusals_total registers once");
        for source in Source::ALL {
            for refusal in Refusal::LABELS {
                counter.with_label_values(&[source.label(), refusal]).reset();
            }
        }
        Self(counter)
    }

    /// Counts and logs one refusal.
    pub fn count(&self, source: Source, refusal: &Refusal) {
        self.0.with_label_values(&[source.label(), refusal.label()]).inc();
        tracing::warn!(source = source.label(), refusal = refusal.label(), reason = %refusal, "deploy order refused");
    }
}
