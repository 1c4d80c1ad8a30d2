//! The smallest useful HTTP component: it imports nothing beyond `wasi:http`, so both our host
//! and `wasmtime serve` can run it, and the benchmark compares the hosts, not the guests.

use rest_kit::bindings::exports::wasi::http::incoming_handler::Guest;
use rest_kit::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use rest_kit::http::{Reply, SendReply};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        Reply::json(200, &serde_json::json!({ "hello": "Guatemala" })).send(response_out);
    }
}

rest_kit::bindings::export_producer!(Hello);
