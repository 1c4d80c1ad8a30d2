//! `votectl recount`: rebuilds the Redis counters from the MongoDB vote logs while votes keep
//! arriving, through the consumer's own idempotent count (vote-store), so that every logged vote
//! ends up counted exactly once by whoever reaches it first.
//!
//! 1. One atomic script deletes the counters, every `{votes}:seen:*` marker and the applied
//!    offsets; the instant it runs is the reset time.
//! 2. Every log document is fed, oldest first, to [`vote_store::Counters::count`]. Log documents
//!    carry no Kafka offsets, so they go in as a private pseudo-partition with increasing
//!    positions: the offset rule never skips one and only the id marker decides. A vote the
//!    consumer counted after the reset already has its marker and is skipped; one the recount
//!    counts first gets its marker and the consumer skips it later (or a redelivery, any time).
//! 3. After a short settle, the documents consumed since the reset (less a margin) are fed
//!    again: a batch the consumer counted just before the reset but logged just after it is
//!    caught there.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::Collection;
use serde::Serialize;
use vote_core::proto::VoteEvent;
use vote_stack::StackConfig;
use vote_store::counters::{Counters, Delivery, DEFAULT_SEEN_TTL};
use vote_store::keys;

use crate::cli::RecountArgs;

/// Deletes the counters (KEYS 1..6) and every key matching ARGV[1] (the seen markers) in one
/// atomic step; returns how many markers went. Blocks Redis for about a second per million
/// markers: acceptable for a repair command, and what makes the reset a single instant.
const RESET_SCRIPT: &str = r#"
local markers = 0
local cursor = '0'
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    redis.call('UNLINK', key)
    markers = markers + 1
  end
until cursor == '0'
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return markers
"#;

/// What a recount did.
#[derive(Debug, Serialize)]
pub struct RecountReport {
    /// Seen markers deleted by the reset.
    pub markers_deleted: u64,
    /// Log documents fed to the count, both passes.
    pub documents_read: u64,
    /// Votes the recount counted itself.
    pub counted: u64,
    /// Votes the consumer had already counted since the reset (or read twice by the passes).
    pub already_counted: u64,
    /// Documents that were not vote logs (skipped).
    pub malformed: u64,
    /// `{votes}:total` and the number of log documents at the end.
    pub total_after: u64,
    pub logs_after: u64,
    pub seconds: f64,
}

/// The vote a log document records: the inverse of `vote_store::logs::log_document`.
pub fn event_from_log(document: &Document) -> Option<VoteEvent> {
    let integer = |key: &str| match document.get(key)? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    };
    Some(VoteEvent {
        schema_version: vote_core::SCHEMA_VERSION,
        vote_id: document.get_str("_id").ok()?.to_owned(),
        name: document.get_str("name").ok()?.to_owned(),
        album: document.get_str("album").ok()?.to_owned(),
        year: i32::try_from(integer("year")?).ok()?,
        rank: u32::try_from(integer("rank")?).ok()?,
        path: document.get_str("path").ok()?.to_owned(),
        producer: document.get_str("producer").unwrap_or_default().to_owned(),
        received_at_ms: document.get_datetime("received_at").ok()?.timestamp_millis(),
    })
}

/// Feeds log documents to the consumer's count as one pseudo-partition.
struct Feeder {
    counters: Counters,
    /// `recount-<reset ms>`: its `{votes}:applied` field is removed at the end.
    topic: String,
    next_position: i64,
    report: RecountReport,
}

impl Feeder {
    async fn feed(&mut self, documents: &[Document]) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(documents.len());
        for document in documents {
            match event_from_log(document) {
                Some(event) => {
                    batch.push(Delivery { partition: 0, offset: self.next_position, event });
                    self.next_position += 1;
                }
                None => self.report.malformed += 1,
            }
        }
        let counted = self.counters.count(&self.topic, &batch).await.context("counting logged votes")?;
        self.report.documents_read += documents.len() as u64;
        self.report.counted += counted.counted;
        self.report.already_counted += counted.skipped;
        Ok(())
    }

    /// Feeds every document matching `filter`, oldest first, in batches.
    async fn feed_all(&mut self, logs: &Collection<Document>, filter: Document, batch_size: usize, progress: &ProgressBar) -> anyhow::Result<()> {
        let mut cursor = logs.find(filter).sort(doc! { "received_at": 1 }).batch_size(batch_size as u32).await?;
        let mut batch = Vec::with_capacity(batch_size);
        while let Some(document) = cursor.try_next().await? {
            batch.push(document);
            if batch.len() == batch_size {
                self.feed(&batch).await?;
                progress.inc(batch.len() as u64);
                batch.clear();
            }
        }
        self.feed(&batch).await?;
        progress.inc(batch.len() as u64);
        Ok(())
    }
}

fn progress_bar(length: u64, message: &'static str, json: bool) -> ProgressBar {
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(length) };
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{elapsed_precise}] {bar:40} {pos}/{len} logs ({per_sec}, eta {eta})").expect("valid template"),
    );
    bar.set_message(message);
    bar
}

pub async fn run(config: &StackConfig, args: RecountArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let redis_url = args.redis_url.clone().unwrap_or_else(|| config.redis_url());
    let mongo_url = args.mongo_url.clone().unwrap_or_else(|| config.mongo_url());
    let counters = Counters::connect(&redis_url, DEFAULT_SEEN_TTL).await.with_context(|| format!("connecting to Redis at {redis_url}"))?;
    let mut redis = crate::results::connect(&redis_url).await?;
    let mut options = mongodb::options::ClientOptions::parse(&mongo_url).await.with_context(|| format!("MongoDB URL {mongo_url}"))?;
    options.server_selection_timeout = Some(Duration::from_secs(5));
    let logs = mongodb::Client::with_options(options)?.database(vote_store::logs::DATABASE).collection::<Document>(vote_store::logs::COLLECTION);
    let expected = logs.count_documents(doc! {}).await.with_context(|| format!("counting the logs in MongoDB at {mongo_url}"))?;

    let reset_ms = vote_core::now_ms();
    let markers_deleted: u64 = redis::Script::new(RESET_SCRIPT)
        .key(keys::BANDS)
        .key(keys::ALBUMS)
        .key(keys::PATHS)
        .key(keys::TOTAL)
        .key(keys::RECENT)
        .key(keys::APPLIED)
        .arg(format!("{}*", keys::SEEN_PREFIX))
        .invoke_async(&mut redis)
        .await
        .context("resetting the counters")?;
    if !args.json {
        println!("reset the counters and {markers_deleted} seen markers; counting {expected} logged votes");
    }

    let report = RecountReport { markers_deleted, documents_read: 0, counted: 0, already_counted: 0, malformed: 0, total_after: 0, logs_after: 0, seconds: 0.0 };
    let topic = format!("recount-{reset_ms}");
    let mut feeder = Feeder { counters, topic, next_position: 0, report };
    let batch_size = args.batch.clamp(1, 5000);

    let progress = progress_bar(expected, "all logs", args.json);
    feeder.feed_all(&logs, doc! {}, batch_size, &progress).await?;
    progress.finish();

    // Batches the consumer counted just before the reset and logged just after it.
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let since = DateTime::from_millis(reset_ms - args.margin_secs as i64 * 1000);
    let late_filter = doc! { "consumed_at": { "$gte": since } };
    let late = logs.count_documents(late_filter.clone()).await?;
    let progress = progress_bar(late, "since reset", args.json);
    feeder.feed_all(&logs, late_filter, batch_size, &progress).await?;
    progress.finish();

    let _: () = redis::cmd("HDEL").arg(keys::APPLIED).arg(keys::applied_field(&feeder.topic, 0)).query_async(&mut redis).await?;
    let mut report = feeder.report;
    let total: Option<u64> = redis::cmd("GET").arg(keys::TOTAL).query_async(&mut redis).await?;
    report.total_after = total.unwrap_or(0);
    report.logs_after = logs.count_documents(doc! {}).await?;
    report.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "recounted {} logs in {:.1} s: {} counted now, {} already counted by the consumer; total {} for {} logs",
            report.documents_read, report.seconds, report.counted, report.already_counted, report.total_after, report.logs_after
        );
        if report.malformed > 0 {
            println!("skipped {} documents that are not vote logs", report.malformed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_document_reads_back_as_its_vote() {
        let event = VoteEvent {
            schema_version: vote_core::SCHEMA_VERSION,
            vote_id: "0193-id".into(),
            name: "Alux Nahual".into(),
            album: "Conquista".into(),
            year: 1986,
            rank: 3,
            path: "wasm".into(),
            producer: "vote-rest@0.1.0".into(),
            received_at_ms: 1_700_000_000_123,
        };
        let document = vote_store::logs::log_document(&event, DateTime::now());
        assert_eq!(event_from_log(&document), Some(event));
        assert_eq!(event_from_log(&doc! { "_id": "x" }), None);
    }
}
