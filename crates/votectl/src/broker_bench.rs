//! `votectl bench-broker`: one workload's events published straight to the broker the manifest
//! binds its topic to (Kafka, or a RabbitMQ stream), through the publishers the host uses (answer
//! only after the broker's acknowledgement). Closed loop at each concurrency, open loop at
//! fractions of the measured capacity (latency from the scheduled send: no coordinated
//! omission), the consumer's publish-to-visible latency, the CPU and memory of the broker's
//! processes per event, and a check that every acknowledged event was counted once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use vote_platform::event::{Data, Envelope};
use vote_platform::{Manifest, WorkloadSpec};
use vote_rabbit::{Brokers, RabbitSettings, StreamPublisher};
use vote_stack::{Part, StackConfig, Supervisor};

use crate::cli::BrokerBenchArgs;
use crate::open_loop::{self, Latency};
use crate::{bench, procstat};

/// The most open-loop publishes waiting for their acknowledgement at once.
const MAX_IN_FLIGHT: usize = 4096;

/// How long the consumer may take to count what was acknowledged.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

/// One closed-loop step.
#[derive(Debug, Serialize)]
struct Step {
    concurrency: usize,
    events_per_second: f64,
    /// From the publish call to the broker's acknowledgement.
    latency: Latency,
    failed: u64,
    first_failure: Option<String>,
    /// CPU of the broker's processes per acknowledged event, µs.
    broker_cpu_us_per_event: f64,
}

/// One open-loop run.
#[derive(Debug, Serialize)]
struct OpenStep {
    /// The share of the capacity asked for, and the rate.
    fraction: f64,
    target_rate: f64,
    achieved_rate: f64,
    sent: u64,
    failed: u64,
    /// From the scheduled send to the acknowledgement.
    latency: Latency,
    /// From the event's arrival to its count returned by Redis (the consumer's
    /// `consumer_workload_visible_seconds`), ms.
    visible_p50_ms: Option<f64>,
    visible_p99_ms: Option<f64>,
    broker_cpu_us_per_event: f64,
}

/// What `bench-broker` prints.
#[derive(Debug, Serialize)]
struct Report {
    workload: String,
    broker: &'static str,
    topic: String,
    closed_loop: Vec<Step>,
    /// The best closed-loop throughput, events/s: the open loop's fractions are of it.
    capacity: f64,
    open_loop: Vec<OpenStep>,
    /// Resident memory of the broker's processes at the end, and its peak (`VmHWM`), MiB.
    broker_rss_mib: f64,
    broker_peak_rss_mib: f64,
    acknowledged: u64,
    counted: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// The workload's sample events (`data/<workload>.json`, a JSON array of field maps).
fn samples(spec: &WorkloadSpec) -> anyhow::Result<Vec<Data>> {
    let path = vote_stack::config::repo_root().join("data").join(format!("{}.json", spec.name));
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e} (bench-broker sends the workload's sample events)", path.display()))?;
    let samples: Vec<Data> = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(!samples.is_empty(), "{} holds no event", path.display());
    Ok(samples)
}

/// Publishes event `i` (a sample, stamped now) to the workload's topic.
async fn publish(brokers: &Brokers, spec: &WorkloadSpec, samples: &[Data], i: u64) -> Result<(), String> {
    let envelope = Envelope::new(&spec.name, "votectl-bench", vote_core::now_ms(), None, samples[i as usize % samples.len()].clone());
    brokers.publish(&spec.topic, envelope.id.as_bytes(), &envelope.encode(), &[]).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The processes of the broker the topic lives on.
struct BrokerProcess {
    name: &'static str,
    group: BTreeMap<&'static str, u32>,
}

impl BrokerProcess {
    fn cpu_seconds(&self) -> f64 {
        procstat::cpu_seconds(&self.group).get(self.name).copied().unwrap_or(0.0)
    }
}

struct Run<'a> {
    brokers: Brokers,
    spec: &'a WorkloadSpec,
    samples: Arc<Vec<Data>>,
    redis: MultiplexedConnection,
    start_total: u64,
    acknowledged: u64,
    process: BrokerProcess,
}

impl Run<'_> {
    async fn total(&mut self) -> anyhow::Result<u64> {
        let total: Option<u64> = redis::cmd("GET").arg(self.spec.total_key()).query_async(&mut self.redis).await?;
        Ok(total.unwrap_or(0))
    }

    /// Waits until the consumer counted every event acknowledged so far.
    async fn settle(&mut self) -> anyhow::Result<u64> {
        let started = Instant::now();
        let expected = self.start_total + self.acknowledged;
        loop {
            let total = self.total().await?;
            if total >= expected {
                return Ok(total);
            }
            anyhow::ensure!(
                started.elapsed() < SETTLE_TIMEOUT,
                "the consumer counted {} of {} {} events within {}s (is it running with the manifest? `votectl status`)",
                total - self.start_total,
                self.acknowledged,
                self.spec.name,
                SETTLE_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `count` events from `concurrency` publishers, each waiting for its acknowledgement.
    async fn closed_loop(&mut self, count: u64, concurrency: usize) -> anyhow::Result<Step> {
        self.settle().await?;
        let cpu_before = self.process.cpu_seconds();
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (brokers, spec, samples, next) = (self.brokers.clone(), self.spec.clone(), self.samples.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let (mut latencies, mut failed, mut first) = (histogram(), 0u64, None);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return (latencies, failed, first);
                    }
                    let sent = Instant::now();
                    match publish(&brokers, &spec, &samples, i).await {
                        Ok(()) => latencies.saturating_record(sent.elapsed().as_micros() as u64),
                        Err(error) => {
                            failed += 1;
                            first.get_or_insert(error);
                        }
                    }
                }
            }));
        }
        let (mut latencies, mut failed, mut first_failure) = (histogram(), 0, None);
        for task in tasks {
            let (h, f, first) = task.await?;
            latencies.add(&h).expect("same bounds");
            failed += f;
            if first_failure.is_none() {
                first_failure = first;
            }
        }
        let elapsed = started.elapsed().as_secs_f64().max(1e-6);
        let acknowledged = latencies.len();
        self.acknowledged += acknowledged;
        self.settle().await?;
        let cpu = self.process.cpu_seconds() - cpu_before;
        Ok(Step {
            concurrency,
            events_per_second: acknowledged as f64 / elapsed,
            latency: Latency::of(&latencies),
            failed,
            first_failure,
            broker_cpu_us_per_event: cpu * 1e6 / acknowledged.max(1) as f64,
        })
    }

    /// `rate` events/s for `duration`, on a schedule, at most `max_in_flight` at once.
    async fn open_loop(&mut self, fraction: f64, rate: f64, duration: Duration, consumer_url: &str) -> anyhow::Result<OpenStep> {
        self.settle().await?;
        let before = scrape(consumer_url).await;
        let cpu_before = self.process.cpu_seconds();
        let (sends, sending) = open_loop::schedule(rate, duration, MAX_IN_FLIGHT, |i| {
            let (brokers, spec, samples) = (self.brokers.clone(), self.spec.clone(), self.samples.clone());
            async move { publish(&brokers, &spec, &samples, i).await.is_ok() }
        })
        .await?;
        let (total, sending) = (sends.len() as u64, sending.as_secs_f64().max(1e-6));
        let (mut latencies, mut failed) = (histogram(), 0);
        for sent in sends {
            latencies.saturating_record(sent.from_schedule.as_micros() as u64);
            if sent.outcome {
                self.acknowledged += 1;
            } else {
                failed += 1;
            }
        }
        self.settle().await?;
        let cpu = self.process.cpu_seconds() - cpu_before;
        let after = scrape(consumer_url).await;
        let visible = |q| bench::quantile_between(&before, &after, "consumer_workload_visible_seconds", q).map(|s| s * 1000.0);
        Ok(OpenStep {
            fraction,
            target_rate: rate,
            achieved_rate: total as f64 / sending,
            sent: total,
            failed,
            latency: Latency::of(&latencies),
            visible_p50_ms: visible(0.5),
            visible_p99_ms: visible(0.99),
            broker_cpu_us_per_event: cpu * 1e6 / (total - failed).max(1) as f64,
        })
    }
}

async fn scrape(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Resident memory of every process of a group now, and the peak of its largest, MiB.
fn rss_mib(pgid: u32) -> (f64, f64) {
    let (mut now, mut peak) = (0.0, 0.0f64);
    let Ok(entries) = std::fs::read_dir("/proc") else { return (0.0, 0.0) };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let in_group = stat.rfind(')').and_then(|at| stat[at + 2..].split_whitespace().nth(2)?.parse::<u32>().ok()) == Some(pgid);
        if !in_group {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let kib = |field: &str| status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0);
        now += kib("VmRSS:") / 1024.0;
        peak = peak.max(kib("VmHWM:") / 1024.0);
    }
    (now, peak)
}

pub async fn run(config: &StackConfig, args: BrokerBenchArgs) -> anyhow::Result<()> {
    let manifest_path = config.manifest.as_ref().ok_or_else(|| anyhow::anyhow!("bench-broker needs the stack's manifest (--manifest or VOTES_MANIFEST)"))?;
    let manifest = Manifest::load(manifest_path)?;
    let spec = manifest.workloads.get(&args.workload).cloned().ok_or_else(|| anyhow::anyhow!("the manifest has no workload {:?}", args.workload))?;
    anyhow::ensure!(spec.format == vote_platform::workload::Format::Json, "workload {} is not a JSON workload", spec.name);
    let broker = spec.broker.label();
    let part = if spec.broker == vote_platform::workload::Broker::Rabbitmq { Part::Rabbitmq } else { Part::Kafka };
    let pgid = Supervisor::detached(&config.state_dir).running(part.name()).ok_or_else(|| anyhow::anyhow!("{} is not running under this stack (`votectl up`)", part.name()))?;
    let mut kafka_settings = vote_kafka::PublisherSettings::new(config.brokers(), "votectl-bench-broker");
    kafka_settings.queue_max_messages = Some(1_000_000);
    let kafka = vote_kafka::Publisher::new(&kafka_settings)?;
    let brokers = match spec.broker {
        vote_platform::workload::Broker::Kafka => Brokers::kafka(kafka),
        vote_platform::workload::Broker::Rabbitmq => Brokers::with_rabbit(kafka, StreamPublisher::new(RabbitSettings::parse(&config.rabbitmq_address())?), [spec.topic.clone()]),
    };
    let mut redis = crate::results::connect(&config.redis_url()).await?;
    let start_total: Option<u64> = redis::cmd("GET").arg(spec.total_key()).query_async(&mut redis).await?;
    let mut run = Run {
        brokers,
        spec: &spec,
        samples: Arc::new(samples(&spec)?),
        redis,
        start_total: start_total.unwrap_or(0),
        acknowledged: 0,
        process: BrokerProcess { name: part.name(), group: BTreeMap::from([(part.name(), pgid)]) },
    };
    let show = !args.json;
    // Warm-up: connections and producers made before anything is measured.
    run.closed_loop(200.min(args.count), 8).await?;
    let mut closed_loop = Vec::new();
    for &concurrency in &args.concurrency {
        let step = run.closed_loop(args.count, concurrency).await?;
        if show {
            println!(
                "{broker} closed loop at {concurrency}: {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, {} failed, broker {:.0} µs CPU/event",
                step.events_per_second, step.latency.p50_ms, step.latency.p99_ms, step.failed, step.broker_cpu_us_per_event
            );
        }
        closed_loop.push(step);
    }
    let capacity = closed_loop.iter().map(|s| s.events_per_second).fold(0.0, f64::max);
    let consumer_url = format!("{}/metrics", config.consumer_http_url());
    let mut open_loop = Vec::new();
    for &fraction in &args.open_loop_fractions {
        let rate = (capacity * fraction).max(1.0);
        let step = run.open_loop(fraction, rate, Duration::from_secs(args.open_loop_secs), &consumer_url).await?;
        if show {
            println!(
                "{broker} open loop at {:.0}% ({rate:.0}/s): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; visible p50 {:?} ms",
                fraction * 100.0,
                step.latency.p50_ms,
                step.latency.p90_ms,
                step.latency.p99_ms,
                step.latency.p99_9_ms,
                step.visible_p50_ms
            );
        }
        open_loop.push(step);
    }
    let counted = run.settle().await? - run.start_total;
    let (broker_rss_mib, broker_peak_rss_mib) = rss_mib(pgid);
    let failed: u64 = closed_loop.iter().map(|s| s.failed).sum::<u64>() + open_loop.iter().map(|s| s.failed).sum::<u64>();
    let report = Report { workload: spec.name.clone(), broker, topic: spec.topic.clone(), closed_loop, capacity, open_loop, broker_rss_mib, broker_peak_rss_mib, acknowledged: run.acknowledged, counted };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{broker}: capacity {capacity:.0} events/s; broker RSS {broker_rss_mib:.0} MiB (peak {broker_peak_rss_mib:.0}); {} acknowledged, {} counted", report.acknowledged, report.counted);
    }
    anyhow::ensure!(failed == 0, "{failed} publishes failed");
    anyhow::ensure!(
        report.counted == report.acknowledged,
        "count mismatch: the broker acknowledged {} events but the consumer's total moved by {} (other traffic on the stack, or events lost or counted twice)",
        report.acknowledged,
        report.counted
    );
    Ok(())
}
