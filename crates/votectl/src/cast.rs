//! `votectl cast`: sends votes to a producer with bounded concurrency, showing progress, and
//! reports throughput and latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use vote_core::proto::Vote;
use vote_grpc::VoteServiceClient;
use vote_stack::StackConfig;

use crate::cli::{CastArgs, ProducerPath};
use crate::dataset;

/// How many concurrent calls share one HTTP/2 connection.
const CALLS_PER_CONNECTION: usize = 16;

/// What a cast run did.
#[derive(Debug, Serialize)]
pub struct CastReport {
    pub path: &'static str,
    pub sent: u64,
    pub accepted: u64,
    /// Refused by the producer's rules (INVALID_ARGUMENT / 4xx), by field.
    pub rejected: BTreeMap<String, u64>,
    /// Calls that failed for another reason (unavailable broker, transport).
    pub failed: u64,
    pub first_failure: Option<String>,
    pub seconds: f64,
    pub votes_per_second: f64,
    /// Accepted votes per second (below `votes_per_second` when some were refused or shed).
    pub accepted_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

pub(crate) enum Outcome {
    Accepted,
    Rejected(String),
    Failed(String),
}

/// The base URL of the producer behind `path` (its HTTP port: `/votes`, `/metrics`).
pub(crate) fn producer_url(config: &StackConfig, path: ProducerPath) -> String {
    match path {
        ProducerPath::Grpc => config.grpc_http_url(),
        ProducerPath::Native => config.native_url(),
        ProducerPath::RestReuse => config.reuse_url(),
        ProducerPath::RestWasiHttp => config.wasi_http_url(),
        ProducerPath::Rest | ProducerPath::RestH2 => config.host_url(),
    }
}

/// Where votes go: a pool of gRPC channels or an HTTP client for the wasm host.
pub(crate) enum Sender {
    Grpc(Vec<VoteServiceClient<Channel>>),
    Rest { client: reqwest::Client, url: String },
}

impl Sender {
    pub(crate) async fn connect(config: &StackConfig, path: ProducerPath, concurrency: usize) -> anyhow::Result<Self> {
        Ok(match path {
            ProducerPath::Grpc => Sender::Grpc(grpc_clients(&config.grpc_url(), concurrency.div_ceil(CALLS_PER_CONNECTION)).await?),
            ProducerPath::RestH2 => Sender::Rest {
                client: reqwest::Client::builder().http2_prior_knowledge().tcp_nodelay(true).build()?,
                url: format!("{}/votes", producer_url(config, path)),
            },
            ProducerPath::Rest | ProducerPath::Native | ProducerPath::RestReuse | ProducerPath::RestWasiHttp => Sender::Rest {
                client: reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?,
                url: format!("{}/votes", producer_url(config, path)),
            },
        })
    }

    pub(crate) async fn send(&self, i: u64, vote: Vote) -> Outcome {
        match self {
            Sender::Grpc(clients) => {
                let mut client = clients[i as usize % clients.len()].clone();
                match client.cast(vote).await {
                    Ok(_) => Outcome::Accepted,
                    Err(status) if status.code() == tonic::Code::InvalidArgument => Outcome::Rejected(field_of(status.message())),
                    Err(status) => Outcome::Failed(format!("{:?}: {}", status.code(), status.message())),
                }
            }
            Sender::Rest { client, url } => {
                let body = serde_json::json!({ "name": vote.name, "album": vote.album, "year": vote.year, "rank": vote.rank });
                match client.post(url).json(&body).send().await {
                    Ok(response) if response.status().as_u16() == 202 => Outcome::Accepted,
                    Ok(response) if response.status().is_client_error() => {
                        let reply: serde_json::Value = response.json().await.unwrap_or_default();
                        Outcome::Rejected(reply["field"].as_str().unwrap_or("unknown").to_owned())
                    }
                    Ok(response) => Outcome::Failed(format!("HTTP {}: {}", response.status(), response.text().await.unwrap_or_default())),
                    Err(error) => Outcome::Failed(format!("{error} (is the stack up? `votectl up`)")),
                }
            }
        }
    }
}

/// Sends `count` votes (cycling through `votes`) with `concurrency` in flight.
pub async fn cast(config: &StackConfig, path: ProducerPath, votes: &[Vote], count: u64, concurrency: usize, show_progress: bool) -> anyhow::Result<CastReport> {
    let concurrency = concurrency.max(1);
    let sender = Sender::connect(config, path, concurrency).await?;
    let progress = if show_progress { ProgressBar::new(count) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} votes ({per_sec}, eta {eta})")
            .expect("valid template"),
    );

    let started = Instant::now();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut report = CastReport {
        path: path.name(),
        sent: 0,
        accepted: 0,
        rejected: BTreeMap::new(),
        failed: 0,
        first_failure: None,
        seconds: 0.0,
        votes_per_second: 0.0,
        accepted_per_second: 0.0,
        latency_p50_ms: 0.0,
        latency_p99_ms: 0.0,
        latency_max_ms: 0.0,
    };
    let sender = &sender;
    let mut outcomes = stream::iter(0..count)
        .map(|i| {
            let vote = votes[i as usize % votes.len()].clone();
            async move {
                let sent = Instant::now();
                let outcome = sender.send(i, vote).await;
                (sent.elapsed(), outcome)
            }
        })
        .buffer_unordered(concurrency);
    while let Some((latency, outcome)) = outcomes.next().await {
        report.sent += 1;
        latencies.saturating_record(latency.as_micros() as u64);
        match outcome {
            Outcome::Accepted => report.accepted += 1,
            Outcome::Rejected(field) => *report.rejected.entry(field).or_default() += 1,
            Outcome::Failed(message) => {
                report.failed += 1;
                report.first_failure.get_or_insert(message);
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    report.seconds = elapsed.as_secs_f64();
    report.votes_per_second = report.sent as f64 / report.seconds;
    report.accepted_per_second = report.accepted as f64 / report.seconds;
    report.latency_p50_ms = latencies.value_at_quantile(0.50) as f64 / 1000.0;
    report.latency_p99_ms = latencies.value_at_quantile(0.99) as f64 / 1000.0;
    report.latency_max_ms = latencies.max() as f64 / 1000.0;
    Ok(report)
}

pub async fn run(config: &StackConfig, args: CastArgs) -> anyhow::Result<()> {
    let votes = dataset::load(args.file.as_deref())?;
    let report = cast(config, args.path, &votes, args.count, args.concurrency, !args.json).await?;
    print(&report, args.json)?;
    anyhow::ensure!(report.failed == 0, "{} votes failed: {}", report.failed, report.first_failure.unwrap_or_default());
    Ok(())
}

/// The field named in a rule's message (`"name: must not be empty"` -> `name`).
fn field_of(message: &str) -> String {
    message.split(':').next().unwrap_or("unknown").trim().to_owned()
}

async fn grpc_clients(url: &str, connections: usize) -> anyhow::Result<Vec<VoteServiceClient<Channel>>> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to the gRPC producer at {url} (is the stack up? `votectl up`)"))?;
        clients.push(VoteServiceClient::new(channel));
    }
    Ok(clients)
}

fn print(report: &CastReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "{} votes over {} in {:.2}s: {} accepted, {} rejected, {} failed",
        report.sent,
        report.path,
        report.seconds,
        report.accepted,
        report.rejected.values().sum::<u64>(),
        report.failed
    );
    println!(
        "throughput {:.0} votes/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.votes_per_second, report.latency_p50_ms, report.latency_p99_ms, report.latency_max_ms
    );
    for (field, count) in &report.rejected {
        println!("  rejected for {field}: {count}");
    }
    if let Some(failure) = &report.first_failure {
        println!("  first failure: {failure}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_is_the_part_before_the_colon() {
        assert_eq!(super::field_of("year: 1800 is not a plausible year"), "year");
    }
}
