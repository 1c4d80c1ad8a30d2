//! `votectl recount`: rebuilds the Redis counters from the MongoDB vote logs through the
//! consumer's own count script (vote-store), with the Kafka offsets the logs carry.
//!
//! 1. One atomic script marks the counters as being rebuilt (`{votes}:recounting`, refreshed
//!    while the recount runs, so the consumer waits; `{votes}:recount_incomplete` until the end)
//!    and deletes the aggregates, the idempotency markers, the applied offsets and the epoch.
//! 2. Every log document is fed in (topic, partition, offset) order to
//!    [`vote_store::Counters::count`] in recount mode: the applied offsets come back as the
//!    highest offset logged per partition. Documents logged before logs carried offsets go in
//!    as a private pseudo-partition whose applied field is removed at the end.
//! 3. The flags are removed; the consumer goes on. A batch it counted just before the reset and
//!    logged after the recount read that partition starts past the rebuilt applied offset: the
//!    consumer sees the gap and re-reads it from Kafka.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;
use serde::Serialize;
use vote_core::proto::VoteEvent;
use vote_stack::StackConfig;
use vote_store::counters::{Counters, Event, Span, DEFAULT_SEEN_TTL};
use vote_store::{keys, votes};

use crate::cli::RecountArgs;

/// How long the recounting flag lives unless refreshed: a recount that died frees the consumer
/// within this long (and leaves `{votes}:recount_incomplete` behind).
const FLAG_SECONDS: u64 = 60;

/// Sets the recounting flags (KEYS 1, 2) and deletes the other KEYS and every key matching
/// ARGV[1] (the idempotency markers) in one atomic step; returns how many markers went. Blocks
/// Redis for about a second per million markers: acceptable for a repair command, and what
/// makes the reset a single instant.
const RESET_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[2], ARGV[3])
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
for i = 3, #KEYS do redis.call('UNLINK', KEYS[i]) end
return markers
"#;

/// What a recount did.
#[derive(Debug, Serialize)]
pub struct RecountReport {
    /// Idempotency markers deleted by the reset.
    pub markers_deleted: u64,
    /// Log documents fed to the count.
    pub documents_read: u64,
    /// Votes counted.
    pub counted: u64,
    /// Documents skipped: a repeated offset or idempotency key.
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

/// Where a log document was read from Kafka, if it says (logs written before they carried it
/// do not).
fn origin_of(document: &Document) -> Option<(String, i32, i64)> {
    let topic = document.get_str("topic").ok()?.to_owned();
    let partition = match document.get("partition")? {
        Bson::Int32(n) => *n,
        Bson::Int64(n) => i32::try_from(*n).ok()?,
        _ => return None,
    };
    let offset = match document.get("offset")? {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        _ => return None,
    };
    Some((topic, partition, offset))
}

/// Feeds log documents to the count, one script call per run of one topic.
struct Feeder {
    counters: Counters,
    redis: redis::aio::MultiplexedConnection,
    aggregates: Vec<vote_store::counters::Aggregate>,
    /// `recount-legacy-<reset ms>`: the pseudo-topic of logs without offsets, whose applied
    /// field is removed at the end.
    legacy_topic: String,
    next_legacy_position: i64,
    report: RecountReport,
}

impl Feeder {
    async fn feed(&mut self, documents: &[Document]) -> anyhow::Result<()> {
        let _: () = redis::cmd("SET").arg(keys::RECOUNTING).arg("1").arg("EX").arg(FLAG_SECONDS).query_async(&mut self.redis).await?;
        let mut run: Option<String> = None;
        let mut events: Vec<Event> = Vec::new();
        for document in documents {
            let Some(vote) = event_from_log(document) else {
                self.report.malformed += 1;
                continue;
            };
            let (topic, partition, offset) = origin_of(document).unwrap_or_else(|| {
                self.next_legacy_position += 1;
                (self.legacy_topic.clone(), 0, self.next_legacy_position - 1)
            });
            if run.as_deref() != Some(topic.as_str()) {
                if let Some(previous) = run.take() {
                    self.count(&previous, std::mem::take(&mut events)).await?;
                }
                run = Some(topic);
            }
            events.push(votes::event(partition, offset, &vote));
        }
        if let Some(topic) = run {
            self.count(&topic, events).await?;
        }
        self.report.documents_read += documents.len() as u64;
        Ok(())
    }

    async fn count(&mut self, topic: &str, events: Vec<Event>) -> anyhow::Result<()> {
        let mut spans: Vec<Span> = Vec::new();
        for event in &events {
            match spans.iter_mut().find(|span| span.partition == event.partition) {
                Some(span) => span.last = span.last.max(event.offset),
                // The record's key is not logged: the consumer treats an unknown fingerprint as
                // a redelivery it cannot disprove.
                None => spans.push(Span::new(event.partition, event.offset, event.offset, "-".to_owned())),
            }
        }
        let counted = self.counters.count(topic, &self.aggregates, &spans, &events, true).await.context("counting logged votes")?;
        self.report.counted += counted.counted;
        self.report.already_counted += counted.skipped;
        Ok(())
    }

    /// Feeds every document, in (topic, partition, offset) order, in batches.
    async fn feed_all(&mut self, logs: &Collection<Document>, batch_size: usize, progress: &ProgressBar) -> anyhow::Result<()> {
        let order = doc! { "topic": 1, "partition": 1, "offset": 1, "received_at": 1 };
        let mut cursor = logs.find(doc! {}).sort(order).batch_size(batch_size as u32).await?;
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
    let aggregates = votes::aggregates(args.name_cap);
    let counters = Counters::connect(&redis_url, DEFAULT_SEEN_TTL, &aggregates).await.with_context(|| format!("connecting to Redis at {redis_url}"))?;
    let mut redis = crate::results::connect(&redis_url).await?;
    let mut options = mongodb::options::ClientOptions::parse(&mongo_url).await.with_context(|| format!("MongoDB URL {mongo_url}"))?;
    options.server_selection_timeout = Some(Duration::from_secs(5));
    let logs = mongodb::Client::with_options(options)?.database(vote_store::logs::DATABASE).collection::<Document>(vote_store::logs::COLLECTION);
    let expected = logs.count_documents(doc! {}).await.with_context(|| format!("counting the logs in MongoDB at {mongo_url}"))?;

    let reset_ms = vote_core::now_ms();
    let reset_script = redis::Script::new(RESET_SCRIPT);
    let mut reset = reset_script.prepare_invoke();
    reset.key(keys::RECOUNTING).key(keys::RECOUNT_INCOMPLETE).key(keys::APPLIED).key(keys::APPLIED_IDS).key(keys::EPOCH);
    for aggregate in &aggregates {
        reset.key(&aggregate.key).key(keys::overflow(&aggregate.key));
    }
    reset.arg(format!("{}*", keys::SEEN_PREFIX)).arg(FLAG_SECONDS).arg(reset_ms);
    let markers_deleted: u64 = reset.invoke_async(&mut redis).await.context("resetting the counters")?;
    if !args.json {
        println!("reset the counters and {markers_deleted} idempotency markers; counting {expected} logged votes (the consumer waits)");
    }

    let report = RecountReport { markers_deleted, documents_read: 0, counted: 0, already_counted: 0, malformed: 0, total_after: 0, logs_after: 0, seconds: 0.0 };
    let legacy_topic = format!("recount-legacy-{reset_ms}");
    let mut feeder = Feeder { counters, redis: redis.clone(), aggregates, legacy_topic, next_legacy_position: 0, report };
    let batch_size = args.batch.clamp(1, 5000);
    let progress = progress_bar(expected, "logs", args.json);
    feeder.feed_all(&logs, batch_size, &progress).await?;
    progress.finish();

    let _: () = redis::pipe()
        .cmd("HDEL").arg(keys::APPLIED).arg(keys::applied_field(&feeder.legacy_topic, 0)).ignore()
        .cmd("HDEL").arg(keys::APPLIED_IDS).arg(keys::applied_field(&feeder.legacy_topic, 0)).ignore()
        .cmd("SET").arg(keys::EPOCH).arg(reset_ms).ignore()
        .cmd("DEL").arg(keys::RECOUNT_INCOMPLETE).arg(keys::RECOUNTING).ignore()
        .query_async(&mut redis)
        .await?;
    let mut report = feeder.report;
    let total: Option<u64> = redis::cmd("GET").arg(keys::TOTAL).query_async(&mut redis).await?;
    report.total_after = total.unwrap_or(0);
    report.logs_after = logs.count_documents(doc! {}).await?;
    report.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "recounted {} logs in {:.1} s: {} counted, {} repeated; total {} for {} logs",
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
        let origin = vote_store::logs::Origin { topic: "votes".into(), partition: 2, offset: 41 };
        let document = vote_store::logs::log_document(&event, &origin, mongodb::bson::DateTime::now());
        assert_eq!(event_from_log(&document), Some(event));
        assert_eq!(origin_of(&document), Some(("votes".to_owned(), 2, 41)));
        assert_eq!(origin_of(&doc! { "_id": "x" }), None);
        assert_eq!(event_from_log(&doc! { "_id": "x" }), None);
    }
}
