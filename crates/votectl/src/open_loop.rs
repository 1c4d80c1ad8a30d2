//! Open-loop load for `bench`: votes sent on a fixed schedule whatever the answers, latency
//! measured from each vote's scheduled send time, so a stall shows in the percentiles instead of
//! silently slowing the sender (no coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use vote_core::proto::Vote;
use vote_stack::StackConfig;

use crate::cast::{Outcome, Sender};
use crate::cli::ProducerPath;

/// Latency percentiles of an open-loop run, in ms.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Self { p50_ms: ms(0.50), p90_ms: ms(0.90), p99_ms: ms(0.99), p99_9_ms: ms(0.999), max_ms: histogram.max() as f64 / 1000.0 }
    }
}

/// What one open-loop run did.
#[derive(Debug, Serialize)]
pub struct OpenLoopReport {
    pub path: &'static str,
    /// The rate asked for and the rate the schedule achieved, votes/s.
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub sent: u64,
    pub accepted: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    /// From the scheduled send time to the answer (corrected for coordinated omission).
    pub latency: Latency,
    /// From the actual send to the answer (what a closed-loop client would report).
    pub service_latency: Latency,
    /// The whole corrected distribution: (latency in ms, cumulative share) at each bucket, for plots.
    pub distribution: Vec<(f64, f64)>,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// The corrected distribution as (ms, cumulative share) points, about a hundred of them.
fn distribution(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    histogram
        .iter_quantiles(2)
        .map(|step| (step.value_iterated_to() as f64 / 1000.0, step.quantile_iterated_to()))
        .collect()
}

/// What one scheduled send did: from its scheduled time and from its actual send to the answer.
pub struct Sent<T> {
    pub from_schedule: Duration,
    pub from_send: Duration,
    pub outcome: T,
}

/// Calls `send(i)` for `rate` sends/s over `duration` on a fixed schedule, at most
/// `max_in_flight` at once (a full window delays the next send, and that wait counts: latency
/// runs from the scheduled time). Returns every send's timings and outcome, and how long sending
/// took.
pub async fn schedule<T, F, Fut>(rate: f64, duration: Duration, max_in_flight: usize, send: F) -> anyhow::Result<(Vec<Sent<T>>, Duration)>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    anyhow::ensure!(rate > 0.0, "the open-loop rate must be above 0");
    let places = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let total = (rate * duration.as_secs_f64()).ceil().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let place = places.clone().acquire_owned().await.expect("semaphore open");
        let sending = send(i);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = sending.await;
            drop(place);
            let done = Instant::now();
            Sent { from_schedule: done - scheduled, from_send: done - sent, outcome }
        }));
    }
    let sending = started.elapsed();
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await?);
    }
    Ok((done, sending))
}

/// Sends `rate` votes/s for `duration` over `path`, at most `max_in_flight` at once.
pub async fn run(config: &StackConfig, path: ProducerPath, votes: &[Vote], rate: f64, duration: Duration, max_in_flight: usize) -> anyhow::Result<OpenLoopReport> {
    let sender = Arc::new(Sender::connect(config, path, max_in_flight.min(256)).await?);
    let (sends, sending) = schedule(rate, duration, max_in_flight, |i| {
        let (sender, vote) = (sender.clone(), votes[i as usize % votes.len()].clone());
        async move { sender.send(i, vote).await }
    })
    .await?;
    let total = sends.len() as u64;
    let (mut corrected, mut service) = (histogram(), histogram());
    let mut report = OpenLoopReport {
        path: path.name(),
        target_rate: rate,
        achieved_rate: total as f64 / sending.as_secs_f64().max(1e-6),
        sent: total,
        accepted: 0,
        failed: 0,
        first_failure: None,
        latency: Latency::of(&corrected),
        service_latency: Latency::of(&service),
        distribution: Vec::new(),
    };
    for Sent { from_schedule, from_send, outcome } in sends {
        corrected.saturating_record(from_schedule.as_micros() as u64);
        service.saturating_record(from_send.as_micros() as u64);
        match outcome {
            Outcome::Accepted => report.accepted += 1,
            Outcome::Rejected(field) => {
                report.failed += 1;
                report.first_failure.get_or_insert(format!("rejected for {field}"));
            }
            Outcome::Failed(message) => {
                report.failed += 1;
                report.first_failure.get_or_insert(message);
            }
        }
    }
    report.latency = Latency::of(&corrected);
    report.service_latency = Latency::of(&service);
    report.distribution = distribution(&corrected);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let latency = Latency::of(&h);
        assert!((latency.p50_ms - 500.0).abs() < 1.0, "{latency:?}");
        assert!((latency.p99_ms - 990.0).abs() < 1.0, "{latency:?}");
        assert!(latency.max_ms >= 999.0);
        let points = distribution(&h);
        assert!(points.len() > 10 && points.last().unwrap().1 > 0.99, "{points:?}");
    }
}
