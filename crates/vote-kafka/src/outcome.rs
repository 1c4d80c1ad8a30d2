//! What a failed publish proves: librdkafka's persistence status of the message and its error
//! code, sorted into a [`PublishError`].
//!
//! The status says whether the broker may hold the message; the code only says what went wrong
//! last. During a broker kill a message fails with `_PURGE_QUEUE`, `_PURGE_INFLIGHT`,
//! `_TRANSPORT`, `_MSG_TIMED_OUT`, `_TIMED_OUT_QUEUE` and more: none of them is a refusal, so the
//! class comes from the status, and only a code on [`PERMANENT`] makes a message that was
//! provably not written `refused` (the client is told a retry will not help).

use rdkafka::bindings::{rd_kafka_message_status, rd_kafka_msg_status_t};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::BorrowedMessage;

use crate::PublishError;

/// Whether the broker may have written a message, as librdkafka tracks it
/// (`rd_kafka_message_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Never sent, or the broker answered with an error: the message is not in the log.
    NotPersisted,
    /// Sent, and no answer came back (a lost connection, a timeout): it may be in the log.
    PossiblyPersisted,
    /// The broker acknowledged it.
    Persisted,
}

impl Persistence {
    /// The status librdkafka keeps for `message` (a delivery report's message).
    pub fn of(message: &BorrowedMessage<'_>) -> Self {
        // SAFETY: the pointer is the live message of the delivery report `message` borrows;
        // rd_kafka_message_status only reads it.
        match unsafe { rd_kafka_message_status(message.ptr()) } {
            rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED => Persistence::NotPersisted,
            rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED => Persistence::PossiblyPersisted,
            rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_PERSISTED => Persistence::Persisted,
        }
    }
}

/// The codes that make a message that was not written `refused`: the same message would be
/// refused again by the same cluster (too large, malformed, not allowed, against a policy).
/// Everything else that left a message unwritten (a broker down, a leader moving, a purge on a
/// client replaced, a full or timed-out queue) may work on a retry.
pub const PERMANENT: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::MessageBatchTooLarge,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::InvalidTimestamp,
    RDKafkaErrorCode::InvalidTopic,
    RDKafkaErrorCode::InvalidRequiredAcks,
    RDKafkaErrorCode::UnsupportedForMessageFormat,
    RDKafkaErrorCode::PolicyViolation,
    RDKafkaErrorCode::TopicAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
    RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
    RDKafkaErrorCode::SaslAuthenticationFailed,
    RDKafkaErrorCode::BadMessage,
];

/// Sorts a failed publish: a full local queue is overload; a message the broker may hold is
/// indeterminate (retry under the same idempotency key); one provably not written is refused
/// for a [`PERMANENT`] code and unavailable otherwise.
pub fn classify(code: Option<RDKafkaErrorCode>, persistence: Persistence, text: String) -> PublishError {
    match (persistence, code) {
        (_, Some(RDKafkaErrorCode::QueueFull)) => PublishError::Overloaded(text),
        // A report that says persisted but carries an error is not one to trust either way.
        (Persistence::PossiblyPersisted | Persistence::Persisted, _) => PublishError::Indeterminate(text),
        (Persistence::NotPersisted, Some(code)) if PERMANENT.contains(&code) => PublishError::Refused(text),
        (Persistence::NotPersisted, _) => PublishError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RDKafkaErrorCode as Code;

    fn class(code: Code, persistence: Persistence) -> &'static str {
        match classify(Some(code), persistence, String::new()) {
            PublishError::Unavailable(_) => "unavailable",
            PublishError::Overloaded(_) => "overloaded",
            PublishError::Indeterminate(_) => "indeterminate",
            PublishError::Refused(_) => "refused",
        }
    }

    /// What a broker kill, a restart and a leader change produce: never `refused`.
    const TRANSIENT: &[Code] = &[
        Code::PurgeQueue,
        Code::PurgeInflight,
        Code::BrokerTransportFailure,
        Code::AllBrokersDown,
        Code::MessageTimedOut,
        Code::TimedOutQueue,
        Code::RequestTimedOut,
        Code::OperationTimedOut,
        Code::NetworkException,
        Code::Fail,
        Code::Retry,
        Code::BrokerDestroy,
        Code::Fatal,
        Code::LeaderNotAvailable,
        Code::NotLeaderForPartition,
        Code::NotEnoughReplicas,
        Code::NotEnoughReplicasAfterAppend,
        Code::UnknownTopicOrPartition,
        Code::UnknownProducerId,
        Code::OutOfOrderSequenceNumber,
        Code::InvalidProducerEpoch,
        Code::CoordinatorNotAvailable,
        Code::InvalidMessage,
    ];

    #[test]
    fn not_written_for_a_transient_reason_is_unavailable() {
        for &code in TRANSIENT {
            assert_eq!(class(code, Persistence::NotPersisted), "unavailable", "{code:?}");
        }
    }

    #[test]
    fn maybe_written_is_indeterminate_whatever_the_code() {
        for &code in TRANSIENT.iter().chain(PERMANENT) {
            assert_eq!(class(code, Persistence::PossiblyPersisted), "indeterminate", "{code:?}");
            assert_eq!(class(code, Persistence::Persisted), "indeterminate", "{code:?}");
        }
        assert!(matches!(classify(None, Persistence::PossiblyPersisted, String::new()), PublishError::Indeterminate(_)));
    }

    #[test]
    fn only_a_permanent_code_on_an_unwritten_message_is_refused() {
        for &code in PERMANENT {
            assert_eq!(class(code, Persistence::NotPersisted), "refused", "{code:?}");
        }
        assert!(PERMANENT.iter().all(|code| !TRANSIENT.contains(code)));
        assert!(matches!(classify(None, Persistence::NotPersisted, String::new()), PublishError::Unavailable(_)));
    }

    #[test]
    fn a_full_queue_is_overload() {
        assert_eq!(class(Code::QueueFull, Persistence::NotPersisted), "overloaded");
    }
}
