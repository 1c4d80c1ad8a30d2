//! HTTP plumbing over both exports (`wasi:http` and the one-call `handler`): reading a request
//! and a bounded body, and sending a reply.

use std::borrow::Cow;

use crate::bindings::exports::votes::platform::handler;
use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;

pub use vote_core::rest::{Reply, RequestHead};

/// Sending a [`Reply`] through `wasi:http`.
pub trait SendReply {
    /// Sends the reply through the response outparam.
    fn send(self, out: ResponseOutparam);
}

impl SendReply for Reply {
    /// A body the stream can take at once is written and finished before the response is
    /// handed over, so the host sends head and body together; a larger one streams after the head.
    fn send(self, out: ResponseOutparam) {
        let mut fields: Vec<(String, Vec<u8>)> = vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("content-length".into(), self.body.len().to_string().into_bytes()),
        ];
        fields.extend(self.headers.into_iter().map(|(k, v)| (k, v.into_bytes())));
        let headers = Fields::from_list(&fields).expect("valid response headers");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(self.status).expect("valid status code");
        let body = response.body().expect("response body taken once");
        let stream = body.write().expect("body stream taken once");
        let fits_at_once = stream.check_write().is_ok_and(|room| room >= self.body.len() as u64);
        if fits_at_once && stream.write(&self.body).is_ok() {
            drop(stream);
            let _ = OutgoingBody::finish(body, None);
            ResponseOutparam::set(out, Ok(response));
            return;
        }
        ResponseOutparam::set(out, Ok(response));
        for chunk in self.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away; nothing more to do.
                return;
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

/// What a producer reads of a request, whichever export it came through: `wasi:http` (read
/// lazily, so a refused head never reads the body) or the one-call `handler` (body already read).
pub trait Received {
    /// The method as text (`POST`).
    fn method(&self) -> String;
    /// The path with its query string.
    fn target(&self) -> String;
    /// The path without the query string.
    fn path(&self) -> String {
        self.target().split('?').next().unwrap_or("").to_owned()
    }
    /// The request headers a producer uses: body type and length, the client's idempotency key.
    fn head(&self) -> RequestHead;
    /// The whole body, refusing more than `limit` bytes with `413`: read from the stream
    /// through `wasi:http`, borrowed from the request through the handler.
    fn body(&self, head: &RequestHead, limit: usize) -> Result<Cow<'_, [u8]>, Reply>;
}

impl Received for IncomingRequest {
    fn method(&self) -> String {
        match IncomingRequest::method(self) {
            Method::Get => "GET".into(),
            Method::Head => "HEAD".into(),
            Method::Post => "POST".into(),
            Method::Put => "PUT".into(),
            Method::Delete => "DELETE".into(),
            Method::Connect => "CONNECT".into(),
            Method::Options => "OPTIONS".into(),
            Method::Trace => "TRACE".into(),
            Method::Patch => "PATCH".into(),
            Method::Other(other) => other,
        }
    }

    fn target(&self) -> String {
        self.path_with_query().unwrap_or_default()
    }

    /// Read through one `headers()` handle: every call into the host costs, per request.
    fn head(&self) -> RequestHead {
        let headers = self.headers();
        head_from(|name| headers.get(name).into_iter().next())
    }

    /// A body with a declared length is done once that many bytes arrived, without another read
    /// to learn it ended.
    fn body(&self, headers: &RequestHead, limit: usize) -> Result<Cow<'_, [u8]>, Reply> {
        let too_large = || vote_core::rest::too_large(limit);
        if headers.content_length.is_some_and(|length| length > limit) {
            return Err(too_large());
        }
        let body = self.consume().map_err(|()| Reply::error(400, "body", "the body was already read"))?;
        let stream = body.stream().map_err(|()| Reply::error(400, "body", "the body cannot be read"))?;
        let mut bytes = Vec::with_capacity(headers.content_length.unwrap_or(0));
        while headers.content_length != Some(bytes.len()) {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return Err(Reply::error(400, "body", "the body could not be read to its end")),
            }
        }
        Ok(Cow::Owned(bytes))
    }
}

impl Received for handler::Request {
    fn method(&self) -> String {
        self.method.clone()
    }

    fn target(&self) -> String {
        self.path_with_query.clone()
    }

    fn head(&self) -> RequestHead {
        head_from(|name| self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.clone()))
    }

    fn body(&self, _head: &RequestHead, limit: usize) -> Result<Cow<'_, [u8]>, Reply> {
        if self.body.len() > limit {
            return Err(vote_core::rest::too_large(limit));
        }
        Ok(Cow::Borrowed(&self.body))
    }
}

/// The head from a lookup of a header's first value by (lower-case) name.
fn head_from(first: impl Fn(&str) -> Option<Vec<u8>>) -> RequestHead {
    let text = |name: &str| first(name).map(|v| String::from_utf8_lossy(&v).into_owned());
    RequestHead {
        content_type: text("content-type"),
        content_length: text("content-length").and_then(|v| v.trim().parse().ok()),
        idempotency_key: text(vote_core::IDEMPOTENCY_KEY_HEADER),
    }
}

impl From<Reply> for handler::Response {
    /// The reply as the one-call handler returns it (the host adds `content-length`).
    fn from(reply: Reply) -> Self {
        let mut headers = vec![("content-type".to_owned(), b"application/json".to_vec())];
        headers.extend(reply.headers.into_iter().map(|(k, v)| (k, v.into_bytes())));
        handler::Response { status: reply.status, headers, body: reply.body }
    }
}
