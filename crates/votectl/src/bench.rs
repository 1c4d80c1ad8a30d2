//! `votectl bench`: the gRPC producer and the wasm REST producer measured one after the other
//! with the same votes and concurrency, plus the host's own per-request cost from its metrics.

use serde::Serialize;
use vote_stack::StackConfig;

use crate::cast::{cast, CastReport};
use crate::cli::{BenchArgs, ProducerPath};
use crate::dataset;

/// The comparison `bench` prints.
#[derive(Debug, Serialize)]
struct BenchReport {
    grpc: CastReport,
    rest: CastReport,
    /// REST throughput as a share of gRPC's.
    rest_vs_grpc: f64,
    /// Mean per-request instantiate and execute time inside the host, in ms.
    host_instantiate_ms: Option<f64>,
    host_execute_ms: Option<f64>,
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

pub async fn run(config: &StackConfig, args: BenchArgs) -> anyhow::Result<()> {
    let votes = dataset::load(None)?;
    // A short warm-up for both, so connection set-up is not measured.
    cast(config, ProducerPath::Grpc, &votes, 500, args.concurrency, false).await?;
    cast(config, ProducerPath::Rest, &votes, 500, args.concurrency, false).await?;
    let grpc = cast(config, ProducerPath::Grpc, &votes, args.count, args.concurrency, !args.json).await?;
    let rest = cast(config, ProducerPath::Rest, &votes, args.count, args.concurrency, !args.json).await?;
    let after = reqwest::get(format!("{}/metrics", config.host_url())).await?.text().await?;
    let report = BenchReport {
        rest_vs_grpc: rest.votes_per_second / grpc.votes_per_second,
        host_instantiate_ms: histogram_mean(&after, "host_instantiate_seconds").map(|s| s * 1000.0),
        host_execute_ms: histogram_mean(&after, "host_execute_seconds").map(|s| s * 1000.0),
        grpc,
        rest,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{:<6} {:>10} {:>10} {:>10} {:>8}", "path", "votes/s", "p50 ms", "p99 ms", "failed");
        for r in [&report.grpc, &report.rest] {
            println!("{:<6} {:>10.0} {:>10.2} {:>10.2} {:>8}", r.path, r.votes_per_second, r.latency_p50_ms, r.latency_p99_ms, r.failed);
        }
        println!("rest/grpc throughput: {:.0}%", report.rest_vs_grpc * 100.0);
        if let (Some(i), Some(e)) = (report.host_instantiate_ms, report.host_execute_ms) {
            println!("host per request (mean since start): instantiate {i:.3} ms, execute {e:.3} ms");
        }
    }
    anyhow::ensure!(report.grpc.failed == 0 && report.rest.failed == 0, "some votes failed");
    Ok(())
}
