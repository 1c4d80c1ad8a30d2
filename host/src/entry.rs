//! A component's way in: the one-call `votes:platform/handler` export when it has one (the whole
//! request crosses into the sandbox in one call and the reply comes back as its result), else
//! `wasi:http/incoming-handler` (resources, streams and some 25 host calls per request). Both run
//! in the same fresh instance per request, under the same memory cap and deadline. A component
//! may export either or both.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use hyper::{Request, Response, StatusCode};
use wasmtime::component::{Instance, InstancePre};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyIndices};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::publisher::exports::votes::platform::handler;
use crate::runtime::HostState;

/// The largest reply body the one-call handler may return; a larger one is a component failure
/// (a component with larger replies streams them through `wasi:http`).
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The most header fields a reply of the one-call handler may carry.
pub const MAX_REPLY_FIELDS: usize = 64;

/// How a loaded component is entered: through the one-call handler when it exports one and the
/// host uses it, else through `wasi:http`. A component must export at least one of the two.
pub struct Entry {
    pre: InstancePre<HostState>,
    way_in: WayIn,
}

/// The export requests enter a component by, found once at load.
enum WayIn {
    Handler(handler::GuestIndices),
    Proxy(ProxyIndices),
}

/// An instance's entry point, bound to its store.
pub enum Bound {
    Handler(handler::Guest),
    Proxy(Proxy),
}

impl Entry {
    /// The entry of `pre`: its one-call handler if it exports one (unless `wasi_http_only`), else
    /// its `wasi:http` export; an error naming both when it has neither it may be entered by.
    pub fn new(pre: InstancePre<HostState>, wasi_http_only: bool) -> wasmtime::Result<Self> {
        let handler = if wasi_http_only { None } else { handler::GuestIndices::new(&pre).ok() };
        let way_in = match handler {
            Some(indices) => WayIn::Handler(indices),
            None => match ProxyIndices::new(&pre) {
                Ok(indices) => WayIn::Proxy(indices),
                Err(error) if wasi_http_only => return Err(error.context("the host serves every component through wasi:http (--wasi-http-only)")),
                Err(error) => return Err(error.context("it exports neither votes:platform/handler nor wasi:http/incoming-handler")),
            },
        };
        Ok(Self { pre, way_in })
    }

    /// A fresh instance in `store`, bound to the way requests enter it. A handler export of the
    /// wrong type fails here (and so at load, when the host asks the component who it is).
    pub async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Bound> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        self.bind(store, &instance)
    }

    fn bind(&self, store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Bound> {
        match &self.way_in {
            WayIn::Handler(indices) => Ok(Bound::Handler(indices.load(&mut *store, instance)?)),
            WayIn::Proxy(indices) => Ok(Bound::Proxy(indices.load(&mut *store, instance)?)),
        }
    }
}

/// The request as the one-call handler takes it.
pub fn request(request: &Request<Bytes>) -> handler::Request {
    let headers = request.headers().iter().map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec())).collect();
    let target = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    handler::Request { method: request.method().as_str().to_owned(), path_with_query: target.to_owned(), headers, body: request.body().to_vec() }
}

/// The handler's reply as hyper sends it, `content-length` set from the body; a reply no client
/// should get (a status outside 100 to 599, a malformed or forbidden field, too many fields, a
/// body over [`MAX_REPLY_BYTES`]) is refused with the reason, as a component failure.
pub fn response(reply: handler::Response) -> Result<Response<HyperOutgoingBody>, String> {
    let status = StatusCode::from_u16(reply.status).ok().filter(|s| s.as_u16() <= 599).ok_or_else(|| format!("it answered with status {}, not 100 to 599", reply.status))?;
    if reply.body.len() > MAX_REPLY_BYTES {
        return Err(format!("its reply body of {} bytes is over the {MAX_REPLY_BYTES} bytes the one-call handler may return", reply.body.len()));
    }
    if reply.headers.len() > MAX_REPLY_FIELDS {
        return Err(format!("its reply has {} header fields, over {MAX_REPLY_FIELDS}", reply.headers.len()));
    }
    let body = crate::serve::whole_body(reply.body);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    for (name, value) in reply.headers {
        let shown: String = name.chars().take(64).collect();
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("its reply has a malformed header name {shown:?}"))?;
        // The fields `wasi:http` forbids a component to set: the host owns the connection and
        // the framing.
        if wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(&name) {
            return Err(format!("its reply sets {name}, which the host owns"));
        }
        if name == CONTENT_LENGTH {
            continue;
        }
        let value = HeaderValue::from_bytes(&value).map_err(|_| format!("its reply has a malformed value for {name}"))?;
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &[u8])], body: usize) -> handler::Response {
        handler::Response { status, headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect(), body: vec![b'x'; body] }
    }

    #[test]
    fn a_reply_is_sent_with_its_fields_and_the_body_length() {
        let response = response(reply(202, &[("content-type", b"application/json"), ("content-length", b"999"), ("retry-after", b"1")], 5)).unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["retry-after"], "1");
        assert!(response.headers().get(CONTENT_LENGTH).is_none(), "hyper sets it from the body, not the component");
        assert_eq!(hyper::body::Body::size_hint(response.body()).exact(), Some(5));
    }

    #[test]
    fn a_reply_no_client_should_get_is_refused_with_the_reason() {
        let refused = |r: handler::Response| response(r).err().expect("refused");
        assert!(refused(reply(600, &[], 0)).contains("status 600"));
        assert!(refused(reply(42, &[], 0)).contains("status 42"));
        assert!(refused(reply(200, &[("transfer-encoding", b"chunked")], 0)).contains("transfer-encoding"));
        assert!(refused(reply(200, &[("Connection", b"close")], 0)).contains("connection"));
        assert!(refused(reply(200, &[("bad name", b"x")], 0)).contains("malformed header name"));
        assert!(refused(reply(200, &[("x-a", b"line\nbreak")], 0)).contains("malformed value for x-a"));
        assert!(refused(reply(200, &[], MAX_REPLY_BYTES + 1)).contains("bytes"));
        let many: Vec<(String, &[u8])> = (0..=MAX_REPLY_FIELDS).map(|i| (format!("x-{i}"), &b"v"[..])).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert!(refused(reply(200, &many, 0)).contains("header fields"));
        assert!(response(reply(200, &[], MAX_REPLY_BYTES)).is_ok(), "the bound itself is allowed");
    }

    #[test]
    fn a_request_crosses_whole() {
        let request = Request::post("http://localhost/votes?x=1").header("idempotency-key", "k-1").body(Bytes::from_static(b"{}")).unwrap();
        let crossed = super::request(&request);
        assert_eq!((crossed.method.as_str(), crossed.path_with_query.as_str(), crossed.body.as_slice()), ("POST", "/votes?x=1", &b"{}"[..]));
        assert_eq!(crossed.headers, vec![("idempotency-key".to_owned(), b"k-1".to_vec())]);
    }
}
