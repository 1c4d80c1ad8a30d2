//! `votectl bench`: the gRPC producer and the wasm REST producer measured in alternating rounds
//! with the same votes and concurrency, each run starting with the consumer caught up, plus the
//! host's own per-request cost from its metrics and a check that every accepted vote was counted.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use redis::aio::MultiplexedConnection;
use vote_stack::StackConfig;

use crate::cast::{cast, CastReport};
use crate::cli::{BenchArgs, ProducerPath};
use crate::dataset;
use crate::results;

/// How long a run may wait for the consumer to count the votes already accepted.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// One round: both producers, in the order they ran.
#[derive(Debug, Serialize)]
struct Round {
    grpc: CastReport,
    rest: CastReport,
    /// REST throughput as a share of gRPC's in this round.
    rest_vs_grpc: f64,
}

/// The comparison `bench` prints.
#[derive(Debug, Serialize)]
struct BenchReport {
    rounds: Vec<Round>,
    /// Medians over the rounds.
    grpc_votes_per_second: f64,
    rest_votes_per_second: f64,
    /// The median round's REST throughput as a share of gRPC's.
    rest_vs_grpc: f64,
    /// Mean per-request instantiate and execute time inside the host, in ms.
    host_instantiate_ms: Option<f64>,
    host_execute_ms: Option<f64>,
    /// Votes accepted by both producers during the bench (warm-up included) and how far the
    /// consumer's total moved: equal when nothing was lost or counted twice.
    accepted: u64,
    counted: u64,
}

/// `sum / count` of a Prometheus histogram (all label sets together).
fn histogram_mean(metrics: &str, name: &str) -> Option<f64> {
    let total = |suffix: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(&format!("{name}_{suffix}")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = total("count");
    (count > 0.0).then(|| total("sum") / count)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Waits until the consumer's total reaches `expected`, so the next run does not share the CPU
/// with a backlog left by the previous one. Returns the total it saw.
async fn settle(redis: &mut MultiplexedConnection, expected: u64, show: bool) -> anyhow::Result<u64> {
    let spinner = if show { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    let started = Instant::now();
    loop {
        let total = results::total(redis).await?;
        if total >= expected {
            spinner.finish_and_clear();
            return Ok(total);
        }
        anyhow::ensure!(
            started.elapsed() < SETTLE_TIMEOUT,
            "the consumer counted {total} of {expected} votes within {}s (is it running? `votectl status`)",
            SETTLE_TIMEOUT.as_secs()
        );
        spinner.set_message(format!("waiting for the consumer: {} votes still to count", expected - total));
        spinner.tick();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(config: &StackConfig, args: BenchArgs) -> anyhow::Result<()> {
    let votes = dataset::load(None)?;
    let show = !args.json;
    let mut redis = results::connect(&config.redis_url()).await?;
    let start_total = results::total(&mut redis).await?;
    let mut accepted = 0;
    // A short warm-up for both, so connection set-up is not measured.
    for path in [ProducerPath::Grpc, ProducerPath::Rest] {
        accepted += cast(config, path, &votes, 500, args.concurrency, false).await?.accepted;
    }
    let round_count = args.rounds.max(1);
    let mut rounds = Vec::with_capacity(round_count);
    for round in 0..round_count {
        // Alternate which producer goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 0 { [ProducerPath::Grpc, ProducerPath::Rest] } else { [ProducerPath::Rest, ProducerPath::Grpc] };
        let (mut grpc, mut rest) = (None, None);
        for path in order {
            settle(&mut redis, start_total + accepted, show).await?;
            let report = cast(config, path, &votes, args.count, args.concurrency, show).await?;
            accepted += report.accepted;
            match path {
                ProducerPath::Grpc => grpc = Some(report),
                ProducerPath::Rest => rest = Some(report),
            }
        }
        let (grpc, rest) = (grpc.expect("ran gRPC"), rest.expect("ran REST"));
        let done = Round { rest_vs_grpc: rest.votes_per_second / grpc.votes_per_second, grpc, rest };
        if show {
            println!(
                "round {}: grpc {:.0} votes/s, rest {:.0} votes/s, rest/grpc {:.0}%",
                round + 1,
                done.grpc.votes_per_second,
                done.rest.votes_per_second,
                100.0 * done.rest_vs_grpc
            );
        }
        rounds.push(done);
    }
    let counted = settle(&mut redis, start_total + accepted, show).await? - start_total;
    let after = reqwest::get(format!("{}/metrics", config.host_url())).await?.text().await?;
    let report = BenchReport {
        grpc_votes_per_second: median(rounds.iter().map(|r| r.grpc.votes_per_second).collect()),
        rest_votes_per_second: median(rounds.iter().map(|r| r.rest.votes_per_second).collect()),
        rest_vs_grpc: median(rounds.iter().map(|r| r.rest_vs_grpc).collect()),
        host_instantiate_ms: histogram_mean(&after, "host_instantiate_seconds").map(|s| s * 1000.0),
        host_execute_ms: histogram_mean(&after, "host_execute_seconds").map(|s| s * 1000.0),
        accepted,
        counted,
        rounds,
    };
    print(&report, args.json)?;
    let failed: u64 = report.rounds.iter().map(|r| r.grpc.failed + r.rest.failed).sum();
    anyhow::ensure!(failed == 0, "{failed} votes failed");
    Ok(())
}

fn print(report: &BenchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!("\n{:<6} {:>6} {:>10} {:>10} {:>10} {:>8}", "path", "round", "votes/s", "p50 ms", "p99 ms", "failed");
    for (i, round) in report.rounds.iter().enumerate() {
        for r in [&round.grpc, &round.rest] {
            println!("{:<6} {:>6} {:>10.0} {:>10.2} {:>10.2} {:>8}", r.path, i + 1, r.votes_per_second, r.latency_p50_ms, r.latency_p99_ms, r.failed);
        }
    }
    println!(
        "median: grpc {:.0} votes/s, rest {:.0} votes/s; rest/grpc throughput {:.0}% (median round)",
        report.grpc_votes_per_second,
        report.rest_votes_per_second,
        report.rest_vs_grpc * 100.0
    );
    if let (Some(i), Some(e)) = (report.host_instantiate_ms, report.host_execute_ms) {
        println!("host per request (mean since start): instantiate {i:.3} ms, execute {e:.3} ms");
    }
    let verdict = if report.counted == report.accepted { "all counted once" } else { "MISMATCH: other traffic, or votes lost or counted twice" };
    println!("accepted {} votes, the consumer counted {}: {verdict}", report.accepted, report.counted);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_round() {
        assert_eq!(median(vec![0.86, 0.83, 0.87]), 0.86);
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn histogram_mean_sums_every_label_set() {
        let metrics = "host_execute_seconds_sum{version=\"a\"} 3\nhost_execute_seconds_count{version=\"a\"} 2\nhost_execute_seconds_sum{version=\"b\"} 1\nhost_execute_seconds_count{version=\"b\"} 2\n";
        assert_eq!(histogram_mean(metrics, "host_execute_seconds"), Some(1.0));
        assert_eq!(histogram_mean(metrics, "host_instantiate_seconds"), None);
    }
}
