//! `votectl results`: the live counts, read from the Redis keys the consumer keeps (the top of
//! each leaderboard, bounded however many names exist): the band votes, or with `--workload` one
//! workload of the manifest, read as the results page reads it.

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use vote_platform::workload::Format;
use vote_platform::Manifest;
use vote_stack::StackConfig;
use vote_store::leaderboard;
use vote_store::workload_view::{self, WorkloadView};

use crate::cli::ResultsArgs;

/// The counters of the Redis contract, and the number of logs in MongoDB.
#[derive(Debug, Serialize)]
pub struct Results {
    pub total: u64,
    /// Documents in `votes.logs` (None when MongoDB did not answer).
    pub logged: Option<u64>,
    /// The [`TOP`] bands, albums and paths with the most votes, most first.
    pub bands: Vec<(String, u64)>,
    pub albums: Vec<(String, u64)>,
    pub paths: Vec<(String, u64)>,
    /// Distinct band names counted, and votes for bands beyond the leaderboard's cap.
    pub band_names: u64,
    pub bands_overflow: u64,
}

/// How many members of each leaderboard are read.
pub const TOP: usize = 1000;

/// A connection to the Redis that holds the counters.
pub async fn connect(redis_url: &str) -> anyhow::Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(vote_store::counters::REDIS_CONNECT_TIMEOUT))
        .set_response_timeout(Some(vote_store::counters::REDIS_REPLY_TIMEOUT));
    redis::Client::open(redis_url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to Redis at {redis_url} (is the stack up? `votectl up`)"))
}

/// `{votes}:total`, the number of votes counted so far.
pub async fn total(connection: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let total: Option<u64> = redis::cmd("GET").arg(vote_store::keys::TOTAL).query_async(connection).await?;
    Ok(total.unwrap_or(0))
}

/// Reads the counters (the same keys Grafana reads).
pub async fn read(redis_url: &str) -> anyhow::Result<Results> {
    let mut connection = connect(redis_url).await?;
    let total: Option<u64> = redis::cmd("GET").arg(vote_store::keys::TOTAL).query_async(&mut connection).await?;
    let bands = leaderboard::top(&mut connection, vote_store::keys::BANDS, TOP).await?;
    let albums = leaderboard::top(&mut connection, vote_store::keys::ALBUMS, TOP).await?;
    let paths = leaderboard::top(&mut connection, vote_store::keys::PATHS, TOP).await?;
    Ok(Results {
        total: total.unwrap_or(0),
        logged: None,
        band_names: bands.size,
        bands_overflow: bands.overflow,
        bands: bands.members,
        albums: albums.members,
        paths: paths.members,
    })
}

/// Counts the documents in `votes.logs`.
async fn count_logs(mongo_url: &str) -> anyhow::Result<u64> {
    let mut options = mongodb::options::ClientOptions::parse(mongo_url).await?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(3));
    let client = mongodb::Client::with_options(options)?;
    Ok(client.database("votes").collection::<mongodb::bson::Document>("logs").estimated_document_count().await?)
}

/// A JSON object of counts, keeping the sorted order.
fn object(entries: &[(String, u64)]) -> serde_json::Map<String, serde_json::Value> {
    entries.iter().map(|(key, count)| (key.clone(), (*count).into())).collect()
}

pub async fn run(config: &StackConfig, args: ResultsArgs) -> anyhow::Result<()> {
    let Some(name) = &args.workload else {
        return run_votes(config, args.json).await;
    };
    let path = config.manifest.clone().unwrap_or_else(|| vote_stack::config::repo_root().join("spin.toml"));
    let manifest = Manifest::load(&path).with_context(|| format!("reading the manifest {} (--manifest)", path.display()))?;
    let Some(spec) = manifest.workloads.get(name) else {
        let known: Vec<&str> = manifest.workloads.keys().map(String::as_str).collect();
        anyhow::bail!("no workload {name:?} in {} (known: {})", path.display(), known.join(", "));
    };
    if spec.format == Format::VoteEvent {
        return run_votes(config, args.json).await;
    }
    let mut connection = connect(&config.redis_url()).await?;
    let view = workload_view::read(&mut connection, spec).await.with_context(|| format!("reading workload {name:?} from Redis"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", workload_text(&view));
    }
    Ok(())
}

/// A member's values as one label.
fn label(values: &[String]) -> String {
    values.join(" / ")
}

/// A workload's view as text: the total, each count with shares, each mean, the latest events.
fn workload_text(view: &WorkloadView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{} ({}): {} events", view.title, view.workload, view.total);
    for count in &view.counts {
        let overflow = if count.overflow > 0 { format!(", {} events beyond the cap of members", count.overflow) } else { String::new() };
        let _ = writeln!(out, "\n{} ({} of {} members{overflow}):", count.title, count.members.len(), count.size);
        for member in &count.members {
            let share = member.share.map(|s| format!("  {s:>5.1}%")).unwrap_or_default();
            let _ = writeln!(out, "  {:>8}{share}  {}", member.count, label(&member.values));
        }
    }
    for mean in &view.means {
        let _ = writeln!(out, "\n{}:", mean.title);
        for member in &mean.members {
            let _ = writeln!(out, "  {:>8.1}  {}  ({} events)", member.mean, label(&member.values), member.samples);
        }
    }
    let _ = writeln!(out, "\nlatest events: {}", view.recent.len());
    out
}

/// `votectl results` without `--workload`: the band votes, as before workloads existed.
async fn run_votes(config: &StackConfig, json: bool) -> anyhow::Result<()> {
    let mut results = read(&config.redis_url()).await?;
    match count_logs(&config.mongo_url()).await {
        Ok(logged) => results.logged = Some(logged),
        Err(error) => eprintln!("MongoDB at {} did not answer: {error:#}", config.mongo_url()),
    }
    if json {
        let object = serde_json::json!({
            "total": results.total,
            "logged": results.logged,
            "bands": object(&results.bands),
            "albums": object(&results.albums),
            "paths": object(&results.paths),
            "band_names": results.band_names,
            "bands_overflow": results.bands_overflow,
        });
        println!("{}", serde_json::to_string_pretty(&object)?);
        return Ok(());
    }
    println!("total votes: {}", results.total);
    if let Some(logged) = results.logged {
        println!("logged in MongoDB: {logged}");
    }
    println!("\nby band ({} names{}):", results.band_names, if results.bands_overflow > 0 { format!(", {} votes beyond the cap of names", results.bands_overflow) } else { String::new() });
    for (band, count) in &results.bands {
        println!("  {count:>8}  {band}");
    }
    println!("\nby path:");
    for (path, count) in &results.paths {
        println!("  {count:>8}  {path}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vote_store::workload_view::{CountView, MeanView, MemberCount, MemberMean};

    #[test]
    fn a_workload_reads_as_counts_with_shares_and_means() {
        let view = WorkloadView {
            workload: "weather".into(),
            title: "Weather tweets".into(),
            total: 3,
            counts: vec![CountView {
                name: "mw".into(),
                title: "Conditions per municipality".into(),
                by: vec!["municipality".into(), "weather".into()],
                share: true,
                members: vec![MemberCount { values: vec!["mixco".into(), "sunny".into()], count: 2, share: Some(66.7) }],
                size: 2,
                overflow: 1,
            }],
            means: vec![MeanView {
                name: "t".into(),
                title: "Mean temperature".into(),
                field: "temperature".into(),
                by: vec!["municipality".into()],
                members: vec![MemberMean { values: vec!["mixco".into()], mean: 21.5, samples: 2 }],
                size: 1,
                overflow: 0,
            }],
            recent: vec![],
            read_at_ms: 0,
        };
        let text = workload_text(&view);
        assert!(text.starts_with("Weather tweets (weather): 3 events\n"), "{text}");
        assert!(text.contains("Conditions per municipality (1 of 2 members, 1 events beyond the cap of members):\n         2   66.7%  mixco / sunny\n"), "{text}");
        assert!(text.contains("Mean temperature:\n      21.5  mixco  (2 events)\n"), "{text}");
    }
}
