//! The producer context that hands each delivery report back to the publish waiting for it,
//! with what librdkafka knows of the message ([`Persistence`]), which the futures-based producer
//! of `rdkafka` drops.

use rdkafka::client::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::oneshot;

use crate::outcome::Persistence;
use crate::Ack;

/// Why the broker did not acknowledge a message, as the delivery report says it.
#[derive(Debug)]
pub struct Failure {
    /// librdkafka's error code, when the error has one.
    pub code: Option<RDKafkaErrorCode>,
    pub persistence: Persistence,
    pub text: String,
}

/// One delivery report.
pub type Delivered = Result<Ack, Failure>;

/// Sends every delivery report to the channel its message was queued with.
pub struct ReportingContext;

impl ClientContext for ReportingContext {}

impl ProducerContext for ReportingContext {
    type DeliveryOpaque = Box<oneshot::Sender<Delivered>>;

    fn delivery(&self, report: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let delivered = match report {
            Ok(message) => Ok(Ack { partition: message.partition(), offset: message.offset() }),
            Err((error, message)) => {
                Err(Failure { code: error.rdkafka_error_code(), persistence: Persistence::of(message), text: error.to_string() })
            }
        };
        // The publish may have stopped waiting (its bound passed): nobody to tell.
        let _ = waiting.send(delivered);
    }
}
