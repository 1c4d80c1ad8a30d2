//! A component for the host's isolation tests, answering alike through both exports: `/trap`
//! panics (a wasm trap), `/loop` never returns, `/alloc` grows its memory until the host's cap
//! stops it, `/sleep` waits [`SLEEP`] (like a slow broker) before it answers, `/bad-header`
//! answers with a `transfer-encoding` field a component may not set, `/big` answers with a body of
//! [`BIG`] bytes and more; `/publish?topic=NAME` (or
//! `/publish/NAME`) publishes a tiny message to that topic (the host's topic grants refuse what
//! it may not publish to: `403` naming `topic`); anything else answers 200 with how many
//! requests this instance has served (1 unless the host reuses instances).

use std::sync::atomic::{AtomicU32, Ordering};

use rest_kit::bindings::votes::platform::publisher::{self, Message, PublishError};
use rest_kit::http::{Received, Reply};

/// Requests this instance has served, this one included.
static SERVED: AtomicU32 = AtomicU32::new(0);

/// How long `/sleep` waits, in nanoseconds (1.5 s).
const SLEEP: u64 = 1_500_000_000;

/// How large `/big`'s padding is: over the one-call handler's reply bound (1 MiB).
const BIG: usize = 2 * 1024 * 1024;

struct Misbehave;

fn answer(request: &impl Received) -> Reply {
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(topic) = publish_topic(&request.target()) {
        return publish(&topic);
    }
    match request.path().as_str() {
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
            Reply::json(200, &serde_json::json!({ "producer": "misbehave@0.1.0", "slept_ms": SLEEP / 1_000_000 }))
        }
        "/bad-header" => Reply::json(200, &serde_json::json!({ "producer": "misbehave@0.1.0" })).with_header("transfer-encoding", "chunked"),
        "/big" => Reply::json(200, &serde_json::json!({ "padding": "x".repeat(BIG) })),
        _ => Reply::json(200, &serde_json::json!({ "producer": "misbehave@0.1.0", "served_by_this_instance": served })),
    }
}

/// The topic a `/publish` request names, if it is one.
fn publish_topic(target: &str) -> Option<String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(topic) = path.strip_prefix("/publish/") {
        return Some(topic.to_owned());
    }
    (path == "/publish").then(|| query.split('&').find_map(|pair| pair.strip_prefix("topic=")).unwrap_or("").to_owned())
}

/// Publishes one tiny message to `topic`: `200` with the ack, `403` naming `topic` when the
/// publisher refuses it, `503` for any other failure.
fn publish(topic: &str) -> Reply {
    let message = Message { topic: topic.to_owned(), key: b"misbehave".to_vec(), payload: b"{}".to_vec(), headers: Vec::new() };
    match publisher::publish(&message) {
        Ok(ack) => Reply::json(200, &serde_json::json!({ "topic": topic, "partition": ack.partition, "offset": ack.offset })),
        Err(PublishError::Refused(reason)) => Reply::error(403, "topic", &reason),
        Err(PublishError::Unavailable(reason) | PublishError::Overloaded(reason) | PublishError::Indeterminate(reason)) => {
            Reply::error(503, "broker", &reason)
        }
    }
}

rest_kit::export_component!(Misbehave, |request| answer(request));
