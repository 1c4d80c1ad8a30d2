//! A test component that exports the one-call `votes:platform/handler` and nothing else: it says
//! who it is at `/.well-known/component` and echoes the method, target and body of any other
//! request.

wit_bindgen::generate!({
    inline: "package test:handler-only; world handler-only { export votes:platform/handler@0.1.0; }",
    path: "../../wit",
    generate_all,
});

use exports::votes::platform::handler::{Guest, Request, Response};

struct HandlerOnly;

impl Guest for HandlerOnly {
    fn handle(request: Request) -> Response {
        let json = |body: String| Response { status: 200, headers: vec![("content-type".into(), b"application/json".to_vec())], body: body.into_bytes() };
        if request.path_with_query == "/.well-known/component" {
            return json(format!(r#"{{"producer":"{}@{}"}}"#, env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")));
        }
        let body = String::from_utf8_lossy(&request.body);
        json(format!(r#"{{"method":{:?},"target":{:?},"body":{:?}}}"#, request.method, request.path_with_query, body))
    }
}

export!(HandlerOnly);
