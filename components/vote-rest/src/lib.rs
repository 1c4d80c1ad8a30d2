//! The REST vote producer: every vote that passes the shared rules is published.

use rest_kit::bindings::exports::wasi::http::incoming_handler::Guest;
use rest_kit::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use rest_kit::votes::{serve, Policy};

struct VoteRest;

impl Policy for VoteRest {
    fn producer(&self) -> &str {
        concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"))
    }
}

impl Guest for VoteRest {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        serve(request, response_out, &VoteRest);
    }
}

rest_kit::bindings::export_producer!(VoteRest);
