//! MongoDB vote logs: `votes.logs`, one document per vote id, with time and band indexes.

use std::time::Duration;

use mongodb::bson::{doc, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, InsertManyOptions};
use mongodb::{Client, Collection, IndexModel};
use vote_core::proto::VoteEvent;

/// The database of the vote logs.
pub const DATABASE: &str = "votes";
/// The collection of the vote logs.
pub const COLLECTION: &str = "logs";
/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// How long the driver looks for a server before an operation fails (and is retried by us).
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// Writes batches of votes to `votes.logs`; the driver pools connections and reconnects.
#[derive(Clone)]
pub struct Logs {
    collection: Collection<Document>,
}

/// What one [`Logs::insert`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Documents inserted now (the others were there already, or are in `rejected`).
    pub inserted: u64,
    /// Documents the server refused for a reason other than a duplicate key: (index into the
    /// batch, reason). Retrying them will not help.
    pub rejected: Vec<(usize, String)>,
}

/// Where a vote was read: its Kafka topic, partition and offset (kept in its log, so a recount
/// can rebuild the applied offsets along with the counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The log document of one vote.
pub fn log_document(event: &VoteEvent, origin: &Origin, consumed_at: DateTime) -> Document {
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
        "topic": &origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
    }
}

impl Logs {
    /// Connects and makes sure the indexes exist.
    pub async fn connect(url: &str) -> mongodb::error::Result<Self> {
        let client = client(url).await?;
        let collection = client.database(DATABASE).collection::<Document>(COLLECTION);
        let logs = Self { collection };
        logs.ensure_indexes().await?;
        Ok(logs)
    }

    /// The client the logs are written through (its connection pool can serve other collections).
    pub fn client(&self) -> &Client {
        self.collection.client()
    }

    async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let by_time = index(doc! { "received_at": -1 }, "received_at_desc");
        let by_band = index(doc! { "name": 1, "received_at": -1 }, "name_received_at");
        self.collection.create_indexes([by_time, by_band, by_offset()]).await?;
        Ok(())
    }

    /// Whether the server answers a `ping` now.
    pub async fn ping(&self) -> bool {
        self.collection.client().database("admin").run_command(doc! { "ping": 1 }).await.is_ok()
    }

    /// Inserts the batch; documents whose `_id` is already there (a redelivery) are skipped.
    /// An `Err` (server unreachable, write concern not met, ...) is worth retrying: the insert
    /// is idempotent.
    pub async fn insert<'a>(&self, votes: impl IntoIterator<Item = (&'a VoteEvent, Origin)>) -> mongodb::error::Result<Inserted> {
        let consumed_at = DateTime::now();
        insert_documents(&self.collection, votes.into_iter().map(|(event, origin)| log_document(event, &origin, consumed_at)).collect()).await
    }
}

/// A client for `url` that gives up looking for a server after [`SERVER_SELECTION_TIMEOUT`].
pub async fn client(url: &str) -> mongodb::error::Result<Client> {
    let mut options = ClientOptions::parse(url).await?;
    options.server_selection_timeout.get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(SERVER_SELECTION_TIMEOUT);
    Client::with_options(options)
}

/// Inserts `documents` unordered; those whose `_id` is already there (a redelivery) are skipped,
/// those refused for another reason are returned in [`Inserted::rejected`]. An `Err` is worth
/// retrying: the insert is idempotent.
pub async fn insert_documents(collection: &Collection<Document>, documents: Vec<Document>) -> mongodb::error::Result<Inserted> {
    if documents.is_empty() {
        return Ok(Inserted::default());
    }
    let total = documents.len();
    let options = InsertManyOptions::builder().ordered(false).build();
    match collection.insert_many(documents).with_options(options).await {
        Ok(result) => Ok(Inserted { inserted: result.inserted_ids.len() as u64, rejected: Vec::new() }),
        Err(error) => match *error.kind {
            ErrorKind::InsertMany(ref failure) if failure.write_concern_error.is_none() => {
                let errors = failure.write_errors.as_deref().unwrap_or_default();
                let rejected: Vec<(usize, String)> = errors
                    .iter()
                    .filter(|e| e.code != DUPLICATE_KEY)
                    .map(|e| (e.index, format!("mongodb error {}: {}", e.code, e.message)))
                    .collect();
                Ok(Inserted { inserted: (total - errors.len()) as u64, rejected })
            }
            ErrorKind::Write(WriteFailure::WriteError(ref e)) if e.code == DUPLICATE_KEY => Ok(Inserted::default()),
            ErrorKind::Write(WriteFailure::WriteError(ref e)) if total == 1 => {
                Ok(Inserted { inserted: 0, rejected: vec![(0, format!("mongodb error {}: {}", e.code, e.message))] })
            }
            _ => Err(error),
        },
    }
}

/// An index on `keys` named `name`.
pub(crate) fn index(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_owned()).build()).build()
}

/// The index on where a log's record was read ([`Origin`]), which a recount walks.
pub(crate) fn by_offset() -> IndexModel {
    index(doc! { "topic": 1, "partition": 1, "offset": 1 }, "topic_partition_offset")
}
