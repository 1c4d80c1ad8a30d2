//! Reads one RabbitMQ stream from an offset, and stores on the node how far a named reader got
//! (the consumer stores it only after a batch is counted and logged).

use futures::StreamExt;
use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::{OffsetSpecification, ResponseCode};
use rabbitmq_stream_client::{Consumer, Environment};

use crate::settings::RabbitSettings;

/// Why reading a stream failed: the node is away, or the stream is missing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("rabbitmq at {endpoint}: {error}")]
    Node { endpoint: String, error: String },
    #[error("rabbitmq has no stream {0}")]
    NoStream(String),
}

/// One record as read: its offset in the stream, the key it was published under and its body.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// What a stream holds at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// A record, with its key.
    Record(Option<Vec<u8>>),
    /// Nothing any more: the stream starts after it.
    Expired,
    /// Nothing yet: the stream ends before it.
    End,
}

/// A named reader of one stream.
pub struct StreamReader {
    settings: RabbitSettings,
    stream: String,
    name: String,
    open: Option<(Environment, Consumer)>,
}

impl StreamReader {
    /// A reader of `stream` whose position is stored on the node under `name`; not connected yet.
    pub fn new(settings: RabbitSettings, stream: &str, name: &str) -> Self {
        Self { settings, stream: stream.to_owned(), name: name.to_owned(), open: None }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn node_error(&self, error: impl std::fmt::Display) -> ReadError {
        ReadError::Node { endpoint: self.settings.endpoint(), error: error.to_string() }
    }

    /// (Re)subscribes from offset `from`, or from the first record still in the stream; any
    /// earlier subscription is closed first.
    pub async fn open(&mut self, from: Option<i64>) -> Result<(), ReadError> {
        self.subscribe(from, true).await
    }

    /// Like [`StreamReader::open`], without the name: for a look that stores nothing.
    async fn open_unnamed(&mut self, from: Option<i64>) -> Result<(), ReadError> {
        self.subscribe(from, false).await
    }

    async fn subscribe(&mut self, from: Option<i64>, named: bool) -> Result<(), ReadError> {
        self.close().await;
        let environment = tokio::time::timeout(self.settings.timeout, self.settings.connect())
            .await
            .map_err(|_| self.node_error(format!("no answer within {:?}", self.settings.timeout)))?
            .map_err(|e| self.node_error(e))?;
        let offset = match from {
            Some(from) if from > 0 => OffsetSpecification::Offset(from as u64),
            _ => OffsetSpecification::First,
        };
        let mut builder = environment.consumer();
        if named {
            builder = builder.name(&self.name);
        }
        let consumer = builder.offset(offset).build(&self.stream).await.map_err(|error| {
            if error.to_string().contains("StreamDoesNotExist") {
                ReadError::NoStream(self.stream.clone())
            } else {
                self.node_error(error)
            }
        })?;
        self.open = Some((environment, consumer));
        Ok(())
    }

    /// The next offset to read as stored on the node by [`StreamReader::store`], `None` if this
    /// reader never stored one.
    pub async fn stored(&self) -> Result<Option<i64>, ReadError> {
        let client = tokio::time::timeout(self.settings.timeout, self.settings.client())
            .await
            .map_err(|_| self.node_error(format!("no answer within {:?}", self.settings.timeout)))?
            .map_err(|e| self.node_error(e))?;
        let queried = client.query_offset(self.name.clone(), &self.stream).await;
        let _ = client.close().await;
        match queried {
            Ok(last) => Ok(Some(last as i64 + 1)),
            Err(ClientError::RequestError(ResponseCode::OffsetNotFound)) => Ok(None),
            Err(ClientError::RequestError(ResponseCode::StreamDoesNotExist)) => Err(ReadError::NoStream(self.stream.clone())),
            Err(error) => Err(self.node_error(error)),
        }
    }

    /// What the stream holds at `offset`; used to tell a redelivery from a recreated stream.
    pub async fn key_at(&self, offset: i64) -> Result<At, ReadError> {
        let mut probe = StreamReader::new(self.settings.clone(), &self.stream, &format!("{}-probe", self.name));
        probe.open_unnamed(Some(offset.max(0))).await?;
        let found = match tokio::time::timeout(self.settings.timeout, probe.next()).await {
            Ok(Some(Ok(record))) if record.offset == offset => At::Record(record.key),
            Ok(Some(Ok(_))) => At::Expired,
            Err(_) | Ok(None) => At::End,
            Ok(Some(Err(error))) => {
                probe.close().await;
                return Err(error);
            }
        };
        probe.close().await;
        Ok(found)
    }

    /// Stores that every record before `next` is done with.
    pub async fn store(&self, next: i64) -> Result<(), ReadError> {
        let Some((_, consumer)) = &self.open else { return Err(self.node_error("not subscribed")) };
        if next <= 0 {
            return Ok(());
        }
        consumer.store_offset(next as u64 - 1).await.map_err(|e| self.node_error(e))
    }

    /// The next record; `None` if not subscribed or the subscription ended (the node went away):
    /// [`StreamReader::open`] again.
    pub async fn next(&mut self) -> Option<Result<Record, ReadError>> {
        let (_, consumer) = self.open.as_mut()?;
        match consumer.next().await {
            Some(Ok(delivery)) => {
                let message = delivery.message();
                let key = message.properties().and_then(|p| p.message_id.as_ref()).map(|id| {
                    let bytes: Result<&Vec<u8>, _> = id.try_into();
                    let text: Result<&String, _> = id.try_into();
                    match (bytes, text) {
                        (Ok(bytes), _) => bytes.clone(),
                        (_, Ok(text)) => text.as_bytes().to_vec(),
                        _ => format!("{id:?}").into_bytes(),
                    }
                });
                Some(Ok(Record { offset: delivery.offset() as i64, key, payload: message.data().map(<[u8]>::to_vec) }))
            }
            Some(Err(error)) => Some(Err(self.node_error(error))),
            None => {
                self.open = None;
                None
            }
        }
    }

    /// Closes the subscription, if any.
    pub async fn close(&mut self) {
        if let Some((_environment, consumer)) = self.open.take() {
            let _ = consumer.handle().close().await;
        }
    }
}
