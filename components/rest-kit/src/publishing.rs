//! The publisher import's outcomes in vote-core's terms, for the replies vote-core builds.

use vote_core::rest::{Ack, PublishError};

use crate::bindings::votes::platform::publisher;

/// One publish's outcome as `vote_core::rest` takes it.
pub fn outcome(result: Result<publisher::Ack, publisher::PublishError>) -> Result<Ack, PublishError> {
    match result {
        Ok(ack) => Ok(Ack { partition: ack.partition, offset: ack.offset }),
        Err(publisher::PublishError::Refused(reason)) => Err(PublishError::Refused(reason)),
        Err(publisher::PublishError::Overloaded(reason)) => Err(PublishError::Overloaded(reason)),
        Err(publisher::PublishError::Unavailable(reason)) => Err(PublishError::Unavailable(reason)),
        Err(publisher::PublishError::Indeterminate(reason)) => Err(PublishError::Indeterminate(reason)),
    }
}
