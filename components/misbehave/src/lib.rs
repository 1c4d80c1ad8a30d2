//! A component for the host's isolation tests: `/trap` panics (a wasm trap), `/loop` never
//! returns, `/alloc` grows its memory until the host's cap stops it, `/sleep` waits
//! [`SLEEP`] (like a slow broker) before it answers; anything else answers 200.

use rest_kit::bindings::exports::wasi::http::incoming_handler::Guest;
use rest_kit::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use rest_kit::http::{path, Reply, SendReply};

/// How long `/sleep` waits, in nanoseconds (1.5 s).
const SLEEP: u64 = 1_500_000_000;

struct Misbehave;

impl Guest for Misbehave {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        match path(&request).as_str() {
            "/trap" => panic!("trapping on purpose"),
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/sleep" => {
                rest_kit::bindings::wasi::clocks::monotonic_clock::subscribe_duration(SLEEP).block();
                Reply::json(200, &serde_json::json!({ "producer": "misbehave@0.1.0", "slept_ms": SLEEP / 1_000_000 })).send(response_out)
            }
            _ => Reply::json(200, &serde_json::json!({ "producer": "misbehave@0.1.0" })).send(response_out),
        }
    }
}

rest_kit::bindings::export_producer!(Misbehave);
