//! `up`, `down` and `status` over all parts of the local stack.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::{Part, StackConfig};
use crate::probe;
use crate::process::Supervisor;

/// How long a started part may take to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a part gets to stop after SIGTERM before SIGKILL: longer than the host's drain of
/// requests in flight plus its producer flush (the publish timeout, 5 s), so a stop never cuts a
/// vote between the broker's ack and the client's answer.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long the host drains requests in flight when stopped: well inside [`STOP_GRACE`], so it
/// finishes (and flushes its producer) before `down` would kill it.
pub const HOST_DRAIN: Duration = Duration::from_secs(10);
const _: () = assert!(HOST_DRAIN.as_secs() + 5 + 3 <= STOP_GRACE.as_secs(), "the host's drain and flush must end well before SIGKILL");

/// What `up` did with a part, or what `status` found.
#[derive(Debug, Clone, Serialize)]
pub struct PartStatus {
    pub part: &'static str,
    pub address: String,
    /// `started`, `reused`, `running`, `external`, `stopped` or `down`.
    pub state: String,
    pub pid: Option<u32>,
    pub healthy: bool,
    pub detail: String,
}

fn address(config: &StackConfig, part: Part) -> String {
    match part {
        Part::Kafka => config.brokers(),
        Part::Redis => config.redis_url(),
        Part::Mongo => config.mongo_url(),
        Part::Rabbitmq => config.rabbitmq_address(),
        Part::Consumer => format!("{}/metrics", config.consumer_http_url()),
        Part::GrpcProducer => config.grpc_url(),
        Part::Host => format!("{}/votes", config.host_url()),
        Part::NativeHost => format!("{}/votes", config.native_url()),
        Part::Results => format!("{}/", config.results_url()),
        Part::Prometheus => config.prometheus_url(),
    }
}

/// Starts the parts that are not running, waits until each answers, and creates the topic.
/// A backing server that already answers on its port is reused when `reuse_running` is set.
pub async fn up(config: &StackConfig, supervisor: &Supervisor, parts: &[Part]) -> anyhow::Result<Vec<PartStatus>> {
    let mut report = Vec::new();
    for &part in parts {
        if part == Part::Rabbitmq && config.rabbitmq_topics()?.is_empty() {
            continue;
        }
        let ours = supervisor.running(part.name());
        let answering = probe::part(config, part).await.is_ok();
        let state = match (ours, answering) {
            (Some(_), true) => "running",
            (None, true) if config.reuse_running && part.is_server() => "reused",
            (None, true) => bail!(
                "{} port {} is taken by a process this stack did not start; stop it or choose another port{}",
                part.name(),
                config.port(part),
                if part == Part::Prometheus {
                    " (a system Prometheus? `systemctl disable --now prometheus`, or set VOTES_PROMETHEUS_PORT)"
                } else {
                    ""
                }
            ),
            (Some(_), false) => bail!(
                "{} is running (pid file in {}) but does not answer; see {}",
                part.name(),
                config.state_dir.display(),
                supervisor.log_path(part.name()).display()
            ),
            (None, false) => {
                if part == Part::Host {
                    ensure_admin_token(config)?;
                    ensure_deploy_key(config)?;
                }
                if part == Part::Prometheus {
                    crate::prometheus::write_config(config)?;
                }
                if part == Part::Rabbitmq {
                    config.write_rabbitmq_config()?;
                }
                supervisor
                    .spawn(&config.launch(part))
                    .with_context(|| config.install_hint(part))?;
                wait_ready(config, supervisor, part).await?;
                if part == Part::Prometheus {
                    crate::prometheus::wait_for_targets(config, READY_TIMEOUT).await?;
                }
                "started"
            }
        };
        if part == Part::Kafka {
            vote_kafka::ensure_topic(&config.brokers(), vote_core::TOPIC, config.partitions)
                .await
                .context("creating the votes topic")?;
            vote_kafka::ensure_topic(&config.brokers(), vote_kafka::DLQ_TOPIC, config.partitions)
                .await
                .context("creating the dead-letter topic")?;
            for topic in config.workload_topics()? {
                vote_kafka::ensure_topic(&config.brokers(), &topic, config.partitions)
                    .await
                    .with_context(|| format!("creating the workload topic {topic}"))?;
            }
        }
        if part == Part::Rabbitmq {
            let settings = vote_rabbit::RabbitSettings::parse(&config.rabbitmq_address())?;
            for topic in config.rabbitmq_topics()? {
                vote_rabbit::publisher::ensure_stream(&settings, &topic)
                    .await
                    .with_context(|| format!("creating the rabbitmq stream {topic}"))?;
            }
        }
        report.push(PartStatus {
            part: part.name(),
            address: address(config, part),
            state: state.to_owned(),
            pid: supervisor.running(part.name()),
            healthy: true,
            detail: String::new(),
        });
    }
    Ok(report)
}

/// Writes a random admin token for the host unless one exists. The file is created with mode
/// 0600, so it is never readable by others, not even for a moment.
fn ensure_admin_token(config: &StackConfig) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = config.admin_token_path();
    if path.is_file() {
        return Ok(());
    }
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(path.parent().expect("run dir"))?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(token.as_bytes())?;
    Ok(())
}

/// Writes the fleet's deploy key pair unless the key exists: the host gets the public half,
/// `votectl component deploy` signs with the private one (mode 0600).
pub fn ensure_deploy_key(config: &StackConfig) -> anyhow::Result<()> {
    let path = config.deploy_key_path();
    if path.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().expect("run dir"))?;
    deploy_signing::SecretKey::generate()?.write(&path)?;
    tracing::info!(key = %path.display(), "deploy key created");
    Ok(())
}

/// What the host says it serves (`/readyz`), for `status`.
async fn serving_version(url: &str) -> Option<String> {
    let body: serde_json::Value = reqwest::get(format!("{url}/readyz")).await.ok()?.json().await.ok()?;
    body["version"].as_str().map(|v| format!("serving {v}"))
}

/// How many of its targets Prometheus scrapes successfully, for `status`.
async fn scrape_health(config: &StackConfig) -> String {
    match crate::prometheus::targets_up(&config.prometheus_url()).await {
        Ok((up, all)) => format!("{up} of {all} scrape targets up"),
        Err(error) => format!("targets unknown: {error:#}"),
    }
}

/// Waits until a just-started part answers; fails early, with its log, if it exits.
pub async fn wait_ready(config: &StackConfig, supervisor: &Supervisor, part: Part) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let attempt = probe::part(config, part).await;
        if attempt.is_ok() {
            tracing::info!(part = part.name(), after = ?started.elapsed(), "ready");
            return Ok(());
        }
        if supervisor.running(part.name()).is_none() {
            bail!(
                "{} exited during start-up; last lines of {}:\n{}",
                part.name(),
                supervisor.log_path(part.name()).display(),
                supervisor.log_tail(part.name(), 60)
            );
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{} did not answer within {READY_TIMEOUT:?}: {:#}", part.name(), attempt.unwrap_err());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops what this state directory started, producers first so nothing is left half-sent.
pub fn down(supervisor: &Supervisor) -> anyhow::Result<Vec<(&'static str, bool)>> {
    let mut stopped = Vec::new();
    for part in Part::ALL.iter().rev() {
        stopped.push((part.name(), supervisor.stop(part.name(), STOP_GRACE)?));
    }
    Ok(stopped)
}

/// Probes every part and says whether this stack runs it.
pub async fn status(config: &StackConfig, supervisor: &Supervisor) -> Vec<PartStatus> {
    let mut report = Vec::new();
    for part in Part::ALL {
        let pid = supervisor.running(part.name());
        if part == Part::Rabbitmq && pid.is_none() && config.rabbitmq_topics().map(|t| t.is_empty()).unwrap_or(true) {
            continue;
        }
        let probe = probe::part(config, part).await;
        let state = match (pid, probe.is_ok()) {
            (Some(_), _) => "running",
            (None, true) => "external",
            (None, false) => "down",
        };
        report.push(PartStatus {
            part: part.name(),
            address: address(config, part),
            state: state.to_owned(),
            pid,
            healthy: probe.is_ok(),
            detail: match probe {
                Err(error) => format!("{error:#}"),
                Ok(()) if part == Part::Host => serving_version(&config.host_url()).await.unwrap_or_default(),
                Ok(()) if part == Part::NativeHost => serving_version(&config.native_url()).await.unwrap_or_default(),
                Ok(()) if part == Part::Prometheus => scrape_health(config).await,
                Ok(()) => String::new(),
            },
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_admin_token_is_created_readable_by_its_owner_only() {
        let mut config = StackConfig::local_defaults();
        config.state_dir = std::env::temp_dir().join(format!("votes-token-test-{}", std::process::id()));
        ensure_admin_token(&config).unwrap();
        let path = config.admin_token_path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let token = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&config.state_dir).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(token.len(), 48);
    }

    #[test]
    fn the_deploy_key_is_created_once_with_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StackConfig::local_defaults();
        config.state_dir = dir.path().to_owned();
        ensure_deploy_key(&config).unwrap();
        let key = deploy_signing::SecretKey::read(&config.deploy_key_path()).unwrap();
        ensure_deploy_key(&config).unwrap();
        let public = deploy_signing::PublicKey::read(&deploy_signing::keys::public_path(&config.deploy_key_path())).unwrap();
        assert_eq!(public, key.public(), "a second `up` keeps the key");
        assert_eq!(std::fs::metadata(config.deploy_key_path()).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
