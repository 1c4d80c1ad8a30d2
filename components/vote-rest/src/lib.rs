//! The REST vote producer: every vote that passes the shared rules is published.

use rest_kit::votes::Policy;

struct VoteRest;

impl Policy for VoteRest {
    fn producer(&self) -> &str {
        concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"))
    }
}

rest_kit::export_votes!(VoteRest);
