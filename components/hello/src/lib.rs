//! The smallest useful HTTP component: it exports only `wasi:http` and imports nothing beyond it,
//! so both our host and `wasmtime serve` can run it, and the benchmark compares the hosts, not the
//! guests. It also keeps the host's `wasi:http` path tested beside the one-call handler.

wit_bindgen::generate!({
    path: "../../wit",
    world: "votes:platform/http-component",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

const HELLO: &[u8] = br#"{"hello":"Guatemala"}"#;

struct Hello;

impl Guest for Hello {
    /// Writes and finishes the body before handing the response over, so the host sends head and
    /// body together (a body it could not write is dropped unfinished: the host fails the reply).
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let length = HELLO.len().to_string().into_bytes();
        let headers = Fields::from_list(&[("content-type".into(), b"application/json".to_vec()), ("content-length".into(), length)]).expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("response body taken once");
        let stream = body.write().expect("body stream taken once");
        // The stream's first write takes a few KiB at once; nothing reads it before the response
        // is handed over, so a blocking write here could wait forever.
        let written = stream.check_write().is_ok_and(|room| room >= HELLO.len() as u64) && stream.write(HELLO).is_ok();
        drop(stream);
        if written {
            let _ = OutgoingBody::finish(body, None);
        }
        ResponseOutparam::set(response_out, Ok(response));
    }
}

export!(Hello);
