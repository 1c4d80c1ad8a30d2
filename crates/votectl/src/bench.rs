//! `votectl bench`: the producers (wasm REST, native REST, gRPC) measured in rotating rounds with
//! the same votes and concurrency, each run starting with the consumer caught up; optionally a
//! concurrency sweep and an open-loop run per path; the CPU each process of the stack spends per
//! vote, the producers' peak memory, the host's per-request cost, the consumer's vote-to-visible
//! latency, and a check that every accepted vote was counted exactly once (exit 1 otherwise).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use vote_core::proto::Vote;
use vote_stack::StackConfig;

use crate::cast::{cast, CastReport};
use crate::cli::{BenchArgs, ProducerPath};
use crate::open_loop::{self, OpenLoopReport};
use crate::procstat::{self, PeakRss};
use crate::{dataset, results};

/// How long a run may wait for the consumer to count the votes already accepted.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How many requests each instance of the `rest-reuse` host serves (what `wasmtime serve` and
/// Spin allow a reused instance).
const REUSE_REQUESTS: u32 = 128;

/// The ratios reported per round, when both paths ran.
const RATIOS: [(&str, &str); 7] = [
    ("rest", "native"),
    ("rest", "grpc"),
    ("native", "grpc"),
    ("rest-reuse", "native"),
    ("rest-reuse", "rest"),
    ("rest-wasi-http", "native"),
    ("rest", "rest-wasi-http"),
];

/// A wasm host started beside the stack's for one path of the bench (instance reuse on, or
/// `wasi:http` only), and stopped when the bench ends (or with votectl, if it dies).
struct SideHost {
    supervisor: vote_stack::Supervisor,
    name: &'static str,
}

impl SideHost {
    /// The side host `path` needs, if it needs one: started, ready, and its pid.
    async fn start(config: &StackConfig, path: ProducerPath) -> anyhow::Result<Option<(Self, u32)>> {
        let (name, launch) = match path {
            ProducerPath::RestReuse => (procstat::REUSE_HOST, config.reuse_host_launch(REUSE_REQUESTS)),
            ProducerPath::RestWasiHttp => (procstat::WASI_HTTP_HOST, config.wasi_http_host_launch()),
            _ => return Ok(None),
        };
        let supervisor = vote_stack::Supervisor::attached(&config.state_dir);
        let pid = supervisor.spawn(&launch)?;
        let host = Self { supervisor, name };
        let ready = format!("{}/readyz", crate::cast::producer_url(config, path));
        let started = Instant::now();
        while vote_stack::probe::http_ok(&ready).await.is_err() {
            if host.supervisor.running(name).is_none() || started.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("the {} host did not become ready on {ready}:\n{}", path.name(), host.supervisor.log_tail(name, 20));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Some((host, pid)))
    }
}

impl Drop for SideHost {
    fn drop(&mut self) {
        if let Err(error) = self.supervisor.stop(self.name, Duration::from_secs(5)) {
            tracing::warn!(%error, host = self.name, "stopping a side host");
        }
    }
}

/// One path's runs at the main concurrency, and what they cost.
#[derive(Debug, Serialize)]
struct PathRuns {
    path: &'static str,
    runs: Vec<CastReport>,
    /// The median run's throughput.
    votes_per_second: f64,
    /// CPU per accepted vote of each process of the stack over this path's runs, in µs (each
    /// run's window ends when the consumer has counted its votes).
    cpu_us_per_vote: BTreeMap<&'static str, f64>,
}

/// One step of the concurrency sweep. Above a producer's bound on requests in flight (the
/// host's `--max-in-flight`, 192 by default) the excess is shed with a fast 503: counted in
/// `failed`, not in `votes_per_second`.
#[derive(Debug, Serialize)]
struct SweepStep {
    path: &'static str,
    concurrency: usize,
    /// Accepted votes per second.
    votes_per_second: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    failed: u64,
    first_failure: Option<String>,
}

/// One open-loop run and the consumer's vote-to-visible latency during it.
#[derive(Debug, Serialize)]
struct OpenLoop {
    #[serde(flatten)]
    run: OpenLoopReport,
    /// Received at the producer to counted in Redis (the consumer's `vote_visible_seconds`), ms.
    visible_p50_ms: Option<f64>,
    visible_p99_ms: Option<f64>,
    /// Received at the producer to the broker's acknowledgement (the producer's
    /// `vote_ingest_seconds`), ms: the share of the client's latency spent inside the producer.
    ingest_p50_ms: Option<f64>,
    ingest_p99_ms: Option<f64>,
}

/// The comparison `bench` prints.
#[derive(Debug, Serialize)]
struct BenchReport {
    concurrency: usize,
    count: u64,
    rounds: usize,
    paths: Vec<PathRuns>,
    /// Throughput ratios of the median rounds (e.g. `rest/native`, `rest/grpc`).
    ratios: BTreeMap<String, f64>,
    sweep: Vec<SweepStep>,
    open_loop: Vec<OpenLoop>,
    /// Mean per-request instantiate and execute time inside the wasm host, in ms.
    host_instantiate_ms: Option<f64>,
    host_execute_ms: Option<f64>,
    /// Peak resident memory of the producers since they started (`VmHWM`), MiB.
    peak_rss_mib: PeakRss,
    /// Votes accepted by the producers during the bench (warm-up included) and how far the
    /// consumer's total moved: equal when nothing was lost or counted twice.
    accepted: u64,
    counted: u64,
}

/// The lines of a Prometheus histogram's buckets, `le` -> cumulative count, all label sets summed.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
    for line in metrics.lines().filter(|line| line.starts_with(&prefix)) {
        let Some(le) = line.split("le=\"").nth(1).and_then(|rest| rest.split('"').next()) else { continue };
        if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *by_le.entry(le.to_owned()).or_default() += value;
        }
    }
    let mut points: Vec<(f64, f64)> = by_le.into_iter().map(|(le, n)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) }, n)).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// The `q` quantile of the observations a histogram gained between two scrapes, in the unit of
/// its buckets, interpolated within the bucket (as Prometheus' `histogram_quantile`).
/// The text of a `/metrics` page, or nothing when it cannot be read.
async fn metrics_page(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

pub(crate) fn quantile_between(before: &str, after: &str, name: &str, q: f64) -> Option<f64> {
    let old: BTreeMap<u64, f64> = buckets(before, name).into_iter().map(|(le, n)| (le.to_bits(), n)).collect();
    let delta: Vec<(f64, f64)> = buckets(after, name).into_iter().map(|(le, n)| (le, n - old.get(&le.to_bits()).copied().unwrap_or(0.0))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let share = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    None
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The state of one bench: where the stack is, what was accepted so far, and the processes to
/// watch.
struct Bench<'a> {
    config: &'a StackConfig,
    votes: Vec<Vote>,
    redis: MultiplexedConnection,
    start_total: u64,
    accepted: u64,
    groups: BTreeMap<&'static str, u32>,
    show: bool,
}

impl Bench<'_> {
    /// Waits for the consumer to count everything accepted so far.
    async fn settle(&mut self) -> anyhow::Result<u64> {
        settle(&mut self.redis, self.start_total + self.accepted, self.show).await
    }

    /// One closed-loop run, with the CPU each process used until its votes were counted.
    async fn measured_cast(&mut self, path: ProducerPath, count: u64, concurrency: usize) -> anyhow::Result<(CastReport, BTreeMap<&'static str, f64>)> {
        self.settle().await?;
        let before = procstat::cpu_seconds(&self.groups);
        let report = cast(self.config, path, &self.votes, count, concurrency, self.show).await?;
        self.accepted += report.accepted;
        self.settle().await?;
        let after = procstat::cpu_seconds(&self.groups);
        let used = after.iter().map(|(name, s)| (*name, s - before.get(name).copied().unwrap_or(0.0))).collect();
        Ok((report, used))
    }

    async fn consumer_metrics(&self) -> String {
        metrics_page(&format!("{}/metrics", self.config.consumer_http_url())).await
    }

    /// The `/metrics` page of the producer behind `path`.
    async fn producer_metrics(&self, path: ProducerPath) -> String {
        metrics_page(&format!("{}/metrics", crate::cast::producer_url(self.config, path))).await
    }
}

pub async fn run(config: &StackConfig, args: BenchArgs) -> anyhow::Result<()> {
    let mut paths = args.paths.clone();
    paths.dedup();
    anyhow::ensure!(!paths.is_empty(), "--paths names no path");
    let mut redis = results::connect(&config.redis_url()).await?;
    let start_total = results::total(&mut redis).await?;
    let mut bench = Bench { config, votes: dataset::load(None)?, redis, start_total, accepted: 0, groups: procstat::groups(config), show: !args.json };
    let mut _side_hosts = Vec::new();
    for &path in &paths {
        if let Some((host, pid)) = SideHost::start(config, path).await? {
            bench.groups.insert(host.name, pid);
            _side_hosts.push(host);
        }
    }
    // A short warm-up for each path, so connection set-up is not measured.
    for &path in &paths {
        bench.accepted += cast(config, path, &bench.votes, 500, args.concurrency, false).await?.accepted;
    }

    let rounds = args.rounds.max(1);
    let mut runs: BTreeMap<&'static str, Vec<(CastReport, BTreeMap<&'static str, f64>)>> = BTreeMap::new();
    let mut round_ratios: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        // Rotate which path goes first, so none always runs on a warmer machine.
        let mut order = paths.clone();
        order.rotate_left(round % paths.len());
        let mut rates = BTreeMap::new();
        for path in order {
            let (report, cpu) = bench.measured_cast(path, args.count, args.concurrency).await?;
            rates.insert(path.name(), report.votes_per_second);
            runs.entry(path.name()).or_default().push((report, cpu));
        }
        for (a, b) in RATIOS {
            if let (Some(x), Some(y)) = (rates.get(a), rates.get(b)) {
                round_ratios.entry(format!("{a}/{b}")).or_default().push(x / y);
            }
        }
        if bench.show {
            let line: Vec<String> = rates.iter().map(|(p, r)| format!("{p} {r:.0} votes/s")).collect();
            println!("round {}: {}", round + 1, line.join(", "));
        }
    }
    let path_runs: Vec<PathRuns> = paths
        .iter()
        .map(|path| {
            let done = runs.remove(path.name()).unwrap_or_default();
            let votes: u64 = done.iter().map(|(r, _)| r.accepted).sum();
            let mut cpu: BTreeMap<&'static str, f64> = BTreeMap::new();
            for (_, used) in &done {
                for (name, seconds) in used {
                    *cpu.entry(name).or_default() += seconds;
                }
            }
            let cpu_us_per_vote = procstat::per_vote_us(&BTreeMap::new(), &cpu, votes);
            let (runs, _): (Vec<CastReport>, Vec<_>) = done.into_iter().unzip();
            PathRuns { path: path.name(), votes_per_second: median(runs.iter().map(|r| r.votes_per_second).collect()), runs, cpu_us_per_vote }
        })
        .collect();

    let mut sweep = Vec::new();
    for &concurrency in &args.sweep {
        for &path in &paths {
            let (report, _) = bench.measured_cast(path, args.sweep_count, concurrency).await?;
            if bench.show {
                println!(
                    "sweep: {} at {concurrency}: {:.0} votes/s accepted, p99 {:.2} ms, {} failed",
                    path.name(),
                    report.accepted_per_second,
                    report.latency_p99_ms,
                    report.failed
                );
            }
            sweep.push(SweepStep {
                path: path.name(),
                concurrency,
                votes_per_second: report.accepted_per_second,
                latency_p50_ms: report.latency_p50_ms,
                latency_p99_ms: report.latency_p99_ms,
                failed: report.failed,
                first_failure: report.first_failure,
            });
        }
    }

    let mut open_loop = Vec::new();
    if args.open_loop_rate.is_some() || args.open_loop_fraction.is_some() {
        for (&path, runs) in paths.iter().zip(&path_runs) {
            let rate = args.open_loop_rate.unwrap_or_else(|| runs.votes_per_second * args.open_loop_fraction.unwrap_or(0.5));
            bench.settle().await?;
            let before = bench.consumer_metrics().await;
            let producer_before = bench.producer_metrics(path).await;
            let run = open_loop::run(config, path, &bench.votes, rate, Duration::from_secs(args.open_loop_secs), args.open_loop_max_in_flight).await?;
            bench.accepted += run.accepted;
            let producer_after = bench.producer_metrics(path).await;
            bench.settle().await?;
            let after = bench.consumer_metrics().await;
            let visible = |q| quantile_between(&before, &after, "vote_visible_seconds", q).map(|s| s * 1000.0);
            let ingest = |q| quantile_between(&producer_before, &producer_after, "vote_ingest_seconds", q).map(|s| s * 1000.0);
            if bench.show {
                println!(
                    "open loop: {} at {:.0} votes/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; receipt to broker ack in the producer p50 {}, p99 {}",
                    path.name(),
                    run.achieved_rate,
                    run.latency.p50_ms,
                    run.latency.p99_ms,
                    run.latency.p99_9_ms,
                    run.latency.max_ms,
                    ingest(0.5).map_or("-".into(), |ms| format!("{ms:.2} ms")),
                    ingest(0.99).map_or("-".into(), |ms| format!("{ms:.2} ms")),
                );
            }
            open_loop.push(OpenLoop { visible_p50_ms: visible(0.5), visible_p99_ms: visible(0.99), ingest_p50_ms: ingest(0.5), ingest_p99_ms: ingest(0.99), run });
        }
    }

    let counted = bench.settle().await? - start_total;
    let host_metrics = metrics_page(&format!("{}/metrics", config.host_url())).await;
    let report = BenchReport {
        concurrency: args.concurrency,
        count: args.count,
        rounds,
        ratios: round_ratios.into_iter().map(|(k, v)| (k, median(v))).collect(),
        paths: path_runs,
        sweep,
        open_loop,
        host_instantiate_ms: histogram_mean(&host_metrics, "host_instantiate_seconds").map(|s| s * 1000.0),
        host_execute_ms: histogram_mean(&host_metrics, "host_execute_seconds").map(|s| s * 1000.0),
        peak_rss_mib: procstat::peak_rss(&bench.groups),
        accepted: bench.accepted,
        counted,
    };
    print(&report, args.json)?;
    // The sweep's failures are reported, not fatal: above a producer's bound it sheds by design.
    let failed: u64 = report.paths.iter().flat_map(|p| &p.runs).map(|r| r.failed).sum::<u64>() + report.open_loop.iter().map(|o| o.run.failed).sum::<u64>();
    anyhow::ensure!(failed == 0, "{failed} votes failed in the rounds or the open-loop runs");
    anyhow::ensure!(
        report.counted == report.accepted,
        "count mismatch: the producers accepted {} votes but the consumer's total moved by {} (other traffic on the stack, or votes lost or counted twice)",
        report.accepted,
        report.counted
    );
    Ok(())
}

fn print(report: &BenchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!("\n{:<7} {:>6} {:>10} {:>10} {:>10} {:>8}", "path", "run", "votes/s", "p50 ms", "p99 ms", "failed");
    for path in &report.paths {
        for (i, r) in path.runs.iter().enumerate() {
            println!("{:<7} {:>6} {:>10.0} {:>10.2} {:>10.2} {:>8}", r.path, i + 1, r.votes_per_second, r.latency_p50_ms, r.latency_p99_ms, r.failed);
        }
    }
    let medians: Vec<String> = report.paths.iter().map(|p| format!("{} {:.0}", p.path, p.votes_per_second)).collect();
    println!("median votes/s at {} in flight: {}", report.concurrency, medians.join(", "));
    let ratios: Vec<String> = report.ratios.iter().map(|(k, v)| format!("{k} {:.0}%", v * 100.0)).collect();
    println!("throughput ratios (median round): {}", ratios.join(", "));
    for path in &report.paths {
        let cpu: Vec<String> = path.cpu_us_per_vote.iter().map(|(name, us)| format!("{name} {us:.0}")).collect();
        println!("CPU µs per vote over {}: {}", path.path, cpu.join(", "));
    }
    if let (Some(i), Some(e)) = (report.host_instantiate_ms, report.host_execute_ms) {
        println!("wasm host per request (mean since start): instantiate {i:.3} ms, execute {e:.3} ms");
    }
    let rss: Vec<String> = report.peak_rss_mib.0.iter().map(|(name, mib)| format!("{name} {mib:.0} MiB")).collect();
    if !rss.is_empty() {
        println!("peak RSS: {}", rss.join(", "));
    }
    for run in &report.open_loop {
        println!(
            "open loop {} at {:.0}/s: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms; vote-to-visible p99 {}",
            run.run.path,
            run.run.achieved_rate,
            run.run.latency.p50_ms,
            run.run.latency.p90_ms,
            run.run.latency.p99_ms,
            run.run.latency.p99_9_ms,
            run.run.latency.max_ms,
            run.visible_p99_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "unknown".into())
        );
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

    #[test]
    fn quantiles_come_from_the_buckets_gained_between_scrapes() {
        let before = "v_bucket{le=\"0.1\"} 10\nv_bucket{le=\"0.2\"} 10\nv_bucket{le=\"+Inf\"} 10\n";
        let after = "v_bucket{le=\"0.1\"} 60\nv_bucket{le=\"0.2\"} 110\nv_bucket{le=\"+Inf\"} 110\n";
        // 50 new observations at or below 0.1 and 50 in (0.1, 0.2]: the median is at 0.1.
        assert!((quantile_between(before, after, "v", 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile_between(before, after, "v", 0.99).unwrap() - 0.198).abs() < 1e-9);
        assert_eq!(quantile_between(after, after, "v", 0.5), None);
    }
}
