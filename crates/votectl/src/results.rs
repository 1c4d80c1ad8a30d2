//! `votectl results`: the live counts, read from the Redis keys the consumer keeps.

use std::collections::HashMap;

use anyhow::Context;
use serde::Serialize;
use vote_stack::StackConfig;

/// The counters of the Redis contract.
#[derive(Debug, Serialize)]
pub struct Results {
    pub total: u64,
    pub bands: Vec<(String, u64)>,
    pub albums: Vec<(String, u64)>,
    pub paths: Vec<(String, u64)>,
}

fn sorted(map: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    entries
}

/// Reads the counters (the same keys Grafana reads).
pub async fn read(redis_url: &str) -> anyhow::Result<Results> {
    let client = redis::Client::open(redis_url)?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {redis_url} (is the stack up? `votectl up`)"))?;
    let (total, bands, albums, paths): (Option<u64>, HashMap<String, u64>, HashMap<String, u64>, HashMap<String, u64>) = redis::pipe()
        .get("votes:total")
        .hgetall("votes:bands")
        .hgetall("votes:albums")
        .hgetall("votes:paths")
        .query_async(&mut connection)
        .await?;
    Ok(Results { total: total.unwrap_or(0), bands: sorted(bands), albums: sorted(albums), paths: sorted(paths) })
}

/// A JSON object of counts, keeping the sorted order.
fn object(entries: &[(String, u64)]) -> serde_json::Map<String, serde_json::Value> {
    entries.iter().map(|(key, count)| (key.clone(), (*count).into())).collect()
}

pub async fn run(config: &StackConfig, json: bool) -> anyhow::Result<()> {
    let results = read(&config.redis_url()).await?;
    if json {
        let object = serde_json::json!({
            "total": results.total,
            "bands": object(&results.bands),
            "albums": object(&results.albums),
            "paths": object(&results.paths),
        });
        println!("{}", serde_json::to_string_pretty(&object)?);
        return Ok(());
    }
    println!("total votes: {}", results.total);
    println!("\nby band:");
    for (band, count) in &results.bands {
        println!("  {count:>8}  {band}");
    }
    println!("\nby path:");
    for (path, count) in &results.paths {
        println!("  {count:>8}  {path}");
    }
    Ok(())
}
