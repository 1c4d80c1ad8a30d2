//! The sandbox's price per request, without a broker: each component given is loaded as the host
//! loads it and called with a vote the rules refuse (parsed and checked in the guest, nothing
//! published), one request after another, through each way in it offers: a fresh instance entered
//! by the one-call handler, a fresh instance entered through `wasi:http`, and (handler) one
//! instance reused for 128 requests. Then fresh instances again with the last N of them kept
//! alive, as the broker's wait keeps them under load. Prints microseconds of wall time per request
//! (one thread) and how much memory each ended instance had dirtied (what the pool resets).
//!
//! `cargo bench -p host --bench sandbox -- <component.wasm>...` (default: the release
//! `vote_rest.wasm`); `SANDBOX_BENCH_REQUESTS` sets the requests per measurement (20,000),
//! `SANDBOX_BENCH_ALIVE` the instances kept alive (`1,64`; empty: none),
//! `SANDBOX_BENCH_INSTANCES` the pool's size (256; 2 lets it run under `valgrind --tool=callgrind`,
//! which counts instructions whatever else the machine does), and
//! `VOTES_HOST_POOL_KEEP_RESIDENT_KIB` the host flag of that name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use host::registry::{Loaded, Registry};
use host::runtime::{Limits, Policy, Runtime};
use host::entry::Bound;
use host::serve::call_component;
use http_body_util::BodyExt;

/// A vote every producer refuses (rank 0 is out of range) after reading all of it.
const REFUSED_VOTE: &str = r#"{"name":"Alux Nahual","album":"Alux Nahual","year":"1987","rank":"0"}"#;

fn main() -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).map(PathBuf::from).collect();
    if files.is_empty() {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
        files.push(PathBuf::from(target).join("wasm32-wasip2/release/vote_rest.wasm"));
    }
    let requests: u32 = env_number("SANDBOX_BENCH_REQUESTS").unwrap_or(20_000);
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio.block_on(async {
        for file in &files {
            let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("reading {}: {e} (build it with `make components`)", file.display()))?;
            for (mode, wasi_http_only, reuse) in [("handler, fresh instance", false, 1), ("wasi:http, fresh instance", true, 1), ("handler, reuse 128", false, 128)] {
                let runtime = Arc::new(runtime(wasi_http_only)?);
                let loaded = match Registry::load(&runtime, bytes.clone(), ()).await {
                    Ok(loaded) => loaded,
                    Err(refused) => {
                        println!("{:<28} {mode:<26} not served: {refused}", name(file));
                        continue;
                    }
                };
                let policy = Policy { instance_reuse: reuse, ..Policy::check(&runtime.limits) };
                measure(&runtime, &policy, &loaded, requests / 10).await?;
                let took = measure(&runtime, &policy, &loaded, requests).await?;
                println!("{:<28} {mode:<26} {:>7.1} µs/request{}", name(file), took.as_secs_f64() * 1e6 / f64::from(requests), if reuse == 1 { dirtied(&runtime) } else { String::new() });
            }
            for alive in alive_counts() {
                let runtime = Arc::new(runtime(false)?);
                let Ok(loaded) = Registry::load(&runtime, bytes.clone(), ()).await else { continue };
                let policy = Policy::check(&runtime.limits);
                keep_alive(&runtime, &policy, &loaded, requests / 10, alive).await?;
                let took = keep_alive(&runtime, &policy, &loaded, requests, alive).await?;
                let mode = format!("handler, {alive} alive");
                println!("{:<28} {mode:<26} {:>7.1} µs/request", name(file), took.as_secs_f64() * 1e6 / f64::from(requests));
            }
        }
        Ok(())
    })
}

/// A runtime as the host's defaults make it, publishing to a broker nobody listens on.
fn runtime(wasi_http_only: bool) -> anyhow::Result<Runtime> {
    let kafka = vote_kafka::Publisher::new(&vote_kafka::PublisherSettings::new("127.0.0.1:1", "sandbox-bench"))?;
    let keep_resident_bytes = env_number::<usize>("VOTES_HOST_POOL_KEEP_RESIDENT_KIB").map_or(host::runtime::KEEP_RESIDENT_BYTES, |kib| kib * 1024);
    // A small pool (`SANDBOX_BENCH_INSTANCES=2`) fits the address space valgrind can map.
    let max_instances = env_number("SANDBOX_BENCH_INSTANCES").unwrap_or(256);
    let limits = Limits { memory_bytes: 64 << 20, request_timeout: Duration::from_secs(10), max_instances, keep_resident_bytes };
    Ok(Runtime::new(limits, vote_rabbit::Brokers::kafka(kafka), wasmtime::ProfilingStrategy::None)?.wasi_http_only(wasi_http_only))
}

/// Sends `requests` refused votes one after another; each must come back a 400.
async fn measure(runtime: &Runtime, policy: &Policy, loaded: &Loaded, requests: u32) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for _ in 0..requests {
        let request = refused_vote()?;
        let response = call_component(runtime, policy, &loaded.entry, Some(&loaded.idle), request, None, ()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let status = response.status();
        response.into_body().collect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(status == 400, "the refused vote got {status}");
    }
    Ok(started.elapsed())
}

/// What an instance's memory reset found dirtied, per unused slot: the pages written while it
/// served, reset in place when it ended.
fn dirtied(runtime: &Runtime) -> String {
    let Some(pool) = runtime.engine.pooling_allocator_metrics() else { return String::new() };
    let slots = pool.unused_warm_memories().max(1) as usize;
    format!(" ({} KiB dirtied per instance)", pool.unused_memory_bytes_resident() / slots / 1024)
}

/// How many instances the "alive" runs keep: `SANDBOX_BENCH_ALIVE`, comma-separated (1,64).
fn alive_counts() -> Vec<usize> {
    let list = std::env::var("SANDBOX_BENCH_ALIVE").unwrap_or_else(|_| "1,64".into());
    list.split(',').filter_map(|n| n.trim().parse().ok()).filter(|&n| n > 0).collect()
}

/// As under load, where each instance lives until the broker acknowledges its vote: a fresh
/// instance per request, the last `alive` of them kept until a newer one replaces the oldest.
async fn keep_alive(runtime: &Runtime, policy: &Policy, loaded: &Loaded, requests: u32, alive: usize) -> anyhow::Result<Duration> {
    let mut stores = std::collections::VecDeque::with_capacity(alive);
    let started = Instant::now();
    for _ in 0..requests {
        let request = refused_vote()?;
        if stores.len() == alive {
            stores.pop_front();
        }
        let mut store = runtime.new_store(policy);
        let Bound::Handler(handler) = loaded.entry.instantiate(&mut store).await? else { anyhow::bail!("no handler export") };
        let reply = handler.call_handle(&mut store, &host::entry::request(&request)).await?;
        anyhow::ensure!(reply.status == 400, "the refused vote got {}", reply.status);
        stores.push_back(store);
    }
    Ok(started.elapsed())
}

/// A `POST /votes` of [`REFUSED_VOTE`].
fn refused_vote() -> anyhow::Result<hyper::Request<Bytes>> {
    Ok(hyper::Request::post("http://localhost/votes").header("content-type", "application/json").body(Bytes::from_static(REFUSED_VOTE.as_bytes()))?)
}

/// The number in environment variable `name`, if it is set to one.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|n| n.trim().parse().ok())
}

fn name(file: &std::path::Path) -> String {
    file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
