//! The stack's Prometheus: the scrape configuration `up` writes before starting it, and how many
//! of its targets answer, for `status`.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::StackConfig;

/// How often every service is scraped (and rules evaluated).
pub const SCRAPE_INTERVAL: &str = "1s";
/// How long samples are kept under the state directory.
pub const RETENTION: &str = "7d";

/// The configuration: one job per service of [`StackConfig::metrics_targets`].
pub fn config_text(config: &StackConfig) -> String {
    let mut text = format!(
        "# Written by `votectl up`: every service of the local stack, scraped every {SCRAPE_INTERVAL}.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n"
    );
    for (job, target) in config.metrics_targets() {
        text.push_str(&format!("  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"));
    }
    text
}

/// Writes [`config_text`] to [`StackConfig::prometheus_config_path`].
pub fn write_config(config: &StackConfig) -> anyhow::Result<()> {
    let path = config.prometheus_config_path();
    std::fs::create_dir_all(path.parent().expect("run dir"))?;
    std::fs::write(&path, config_text(config)).with_context(|| format!("writing {}", path.display()))
}

/// How many scrape targets are up, of how many (`/api/v1/targets`).
pub async fn targets_up(prometheus_url: &str) -> anyhow::Result<(usize, usize)> {
    let body: serde_json::Value = reqwest::get(format!("{prometheus_url}/api/v1/targets?state=active")).await?.error_for_status()?.json().await?;
    let targets = body["data"]["activeTargets"].as_array().context("no activeTargets in the answer")?;
    Ok((targets.iter().filter(|t| t["health"] == "up").count(), targets.len()))
}

/// Waits until Prometheus has scraped every target of the configuration once (it applies a new
/// configuration's targets a few seconds after start), so votes sent right after `up` show.
pub async fn wait_for_targets(config: &StackConfig, timeout: Duration) -> anyhow::Result<()> {
    let expected = config.metrics_targets().len();
    let started = Instant::now();
    loop {
        match targets_up(&config.prometheus_url()).await {
            Ok((up, _)) if up >= expected => return Ok(()),
            _ if started.elapsed() > timeout => anyhow::bail!("Prometheus did not scrape its {expected} targets within {timeout:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_with_metrics_is_a_job() {
        let mut config = StackConfig::local_defaults();
        config.host_port = 18080;
        config.grpc_metrics_port = 19102;
        config.consumer_metrics_port = 19101;
        let text = config_text(&config);
        for expected in ["job_name: wasm-host", "127.0.0.1:18080", "job_name: grpc-producer", "127.0.0.1:19102", "job_name: consumer", "127.0.0.1:19101"] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(text.contains("scrape_interval: 1s"));
    }
}
