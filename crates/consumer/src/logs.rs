//! MongoDB vote logs: `votes.logs`, one document per vote id, with time and band indexes.

use mongodb::bson::{doc, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, InsertManyOptions};
use mongodb::{Client, Collection, IndexModel};
use vote_core::proto::VoteEvent;

/// The database of the vote logs.
pub const DATABASE: &str = "votes";
/// The collection of the vote logs.
pub const COLLECTION: &str = "logs";
/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Writes batches of votes to `votes.logs`.
#[derive(Clone)]
pub struct Logs {
    collection: Collection<Document>,
}

/// The log document of one vote.
pub fn log_document(event: &VoteEvent, consumed_at: DateTime) -> Document {
    doc! {
        "_id": &event.vote_id,
        "name": &event.name,
        "album": &event.album,
        "year": event.year,
        "rank": i64::from(event.rank),
        "path": &event.path,
        "producer": &event.producer,
        "received_at": DateTime::from_millis(event.received_at_ms),
        "consumed_at": consumed_at,
    }
}

impl Logs {
    /// Connects and makes sure the indexes exist.
    pub async fn connect(url: &str) -> mongodb::error::Result<Self> {
        let client = Client::with_uri_str(url).await?;
        let collection = client.database(DATABASE).collection::<Document>(COLLECTION);
        let logs = Self { collection };
        logs.ensure_indexes().await?;
        Ok(logs)
    }

    async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let by_time = IndexModel::builder()
            .keys(doc! { "received_at": -1 })
            .options(IndexOptions::builder().name("received_at_desc".to_owned()).build())
            .build();
        let by_band = IndexModel::builder()
            .keys(doc! { "name": 1, "received_at": -1 })
            .options(IndexOptions::builder().name("name_received_at".to_owned()).build())
            .build();
        self.collection.create_indexes([by_time, by_band]).await?;
        Ok(())
    }

    /// Inserts the batch; documents whose `_id` is already there (a redelivery) are skipped.
    /// Returns how many documents were new.
    pub async fn insert(&self, events: &[VoteEvent]) -> mongodb::error::Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let consumed_at = DateTime::now();
        let documents: Vec<Document> = events.iter().map(|e| log_document(e, consumed_at)).collect();
        let options = InsertManyOptions::builder().ordered(false).build();
        match self.collection.insert_many(documents).with_options(options).await {
            Ok(result) => Ok(result.inserted_ids.len() as u64),
            Err(error) => match *error.kind {
                ErrorKind::InsertMany(ref failure)
                    if failure.write_concern_error.is_none()
                        && failure.write_errors.as_ref().is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY)) =>
                {
                    let duplicates = failure.write_errors.as_ref().map_or(0, Vec::len);
                    Ok((events.len() - duplicates) as u64)
                }
                ErrorKind::Write(WriteFailure::WriteError(ref e)) if e.code == DUPLICATE_KEY => Ok(0),
                _ => Err(error),
            },
        }
    }
}
