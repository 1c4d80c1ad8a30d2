//! CPU time and peak memory of the local stack's processes, read from `/proc`, for `bench`.

use std::collections::BTreeMap;

use serde::Serialize;
use vote_stack::{Part, StackConfig, Supervisor};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The parts whose CPU time `bench` attributes to the votes.
pub const MEASURED: [Part; 7] = [Part::GrpcProducer, Part::Host, Part::NativeHost, Part::Kafka, Part::Consumer, Part::Mongo, Part::Redis];

/// The name of the instance-reusing wasm host `bench` starts for its `rest-reuse` path.
pub const REUSE_HOST: &str = "reuse-host";

/// The name of the `wasi:http`-only wasm host `bench` starts for its `rest-wasi-http` path.
pub const WASI_HTTP_HOST: &str = "wasi-http-host";

/// The producers whose peak memory `bench` reports (the side hosts when they run).
pub const PRODUCERS: [&str; 5] = ["wasm-host", "native-host", "grpc-producer", REUSE_HOST, WASI_HTTP_HOST];

/// The process groups of the parts this stack started (each child leads its own group), by name.
pub fn groups(config: &StackConfig) -> BTreeMap<&'static str, u32> {
    let supervisor = Supervisor::detached(&config.state_dir);
    MEASURED.iter().filter_map(|part| Some((part.name(), supervisor.running(part.name())?))).collect()
}

/// One `/proc/<pid>/stat` line: (process group, utime + stime in ticks).
fn stat_of(text: &str) -> Option<(u32, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): pgrp is field 5, utime 14, stime 15.
    let pgrp = fields.get(2)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((pgrp, utime + stime))
}

/// CPU seconds used so far by every process of each group (a part's children included).
pub fn cpu_seconds(groups: &BTreeMap<&'static str, u32>) -> BTreeMap<&'static str, f64> {
    let mut ticks: BTreeMap<u32, u64> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((pgrp, used)) = std::fs::read_to_string(entry.path().join("stat")).ok().as_deref().and_then(stat_of) {
                *ticks.entry(pgrp).or_default() += used;
            }
        }
    }
    groups.iter().map(|(name, pgid)| (*name, ticks.get(pgid).copied().unwrap_or(0) as f64 / TICKS_PER_SECOND)).collect()
}

/// CPU per vote of each part between two readings, in microseconds.
pub fn per_vote_us(before: &BTreeMap<&'static str, f64>, after: &BTreeMap<&'static str, f64>, votes: u64) -> BTreeMap<&'static str, f64> {
    after
        .iter()
        .map(|(name, seconds)| (*name, (seconds - before.get(name).copied().unwrap_or(0.0)) * 1e6 / votes.max(1) as f64))
        .collect()
}

/// Peak resident memory (`VmHWM`) of each running producer, in MiB.
#[derive(Debug, Serialize, Default)]
pub struct PeakRss(pub BTreeMap<&'static str, f64>);

pub fn peak_rss(groups: &BTreeMap<&'static str, u32>) -> PeakRss {
    let mut peaks = BTreeMap::new();
    for name in PRODUCERS {
        let Some(pid) = groups.get(name) else { continue };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kib) = kib {
            peaks.insert(name, kib / 1024.0);
        }
    }
    PeakRss(peaks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "4242 (votes host) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 123 0 0";
        assert_eq!(stat_of(line), Some((4240, 300)));
    }

    #[test]
    fn this_process_uses_some_cpu() {
        let me = std::process::id();
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (pgrp, _) = stat_of(&text).unwrap();
        let mut spin = 0u64;
        for i in 0..20_000_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        assert!(spin > 0);
        let groups = BTreeMap::from([("me", pgrp)]);
        assert!(cpu_seconds(&groups)["me"] > 0.0, "pid {me}");
    }
}
