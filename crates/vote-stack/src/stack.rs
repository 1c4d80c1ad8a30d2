//! `up`, `down` and `status` over all parts of the local stack.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::{Part, StackConfig};
use crate::probe;
use crate::process::Supervisor;

/// How long a started part may take to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a part gets to stop after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

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
        Part::Consumer => format!("{}/metrics", config.consumer_http_url()),
        Part::GrpcProducer => config.grpc_url(),
        Part::Host => format!("{}/votes", config.host_url()),
    }
}

/// Starts the parts that are not running, waits until each answers, and creates the topic.
/// A backing server that already answers on its port is reused when `reuse_running` is set.
pub async fn up(config: &StackConfig, supervisor: &Supervisor, parts: &[Part]) -> anyhow::Result<Vec<PartStatus>> {
    let mut report = Vec::new();
    for &part in parts {
        let ours = supervisor.running(part.name());
        let answering = probe::part(config, part).await.is_ok();
        let state = match (ours, answering) {
            (Some(_), true) => "running",
            (None, true) if config.reuse_running && Part::SERVERS.contains(&part) => "reused",
            (None, true) => bail!(
                "{} port {} is taken by a process this stack did not start; stop it or choose another port",
                part.name(),
                config.port(part)
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
                }
                supervisor
                    .spawn(&config.launch(part))
                    .with_context(|| config.install_hint(part))?;
                wait_ready(config, supervisor, part).await?;
                "started"
            }
        };
        if part == Part::Kafka {
            vote_kafka::ensure_topic(&config.brokers(), vote_core::TOPIC, config.partitions)
                .await
                .context("creating the votes topic")?;
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

/// Writes a random admin token for the host unless one exists (only the owner may read it).
fn ensure_admin_token(config: &StackConfig) -> anyhow::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let path = config.admin_token_path();
    if path.is_file() {
        return Ok(());
    }
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(path.parent().expect("run dir"))?;
    std::fs::write(&path, token)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// What the host says it serves (`/readyz`), for `status`.
async fn serving_version(config: &StackConfig) -> Option<String> {
    let body: serde_json::Value = reqwest::get(format!("{}/readyz", config.host_url())).await.ok()?.json().await.ok()?;
    body["version"].as_str().map(|v| format!("serving {v}"))
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
                supervisor.log_tail(part.name(), 20)
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
                Ok(()) if part == Part::Host => serving_version(config).await.unwrap_or_default(),
                Ok(()) => String::new(),
            },
        });
    }
    report
}
