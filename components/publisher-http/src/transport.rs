//! One HTTP request to the bridge through `wasi:http/outgoing-handler`, with its failures sorted
//! into "never sent" (retry), "refused" and "sent, but no usable answer" (indeterminate).

use crate::records::{RECORDS_CONTENT_TYPE, REPLY_CONTENT_TYPE};
use crate::settings::Settings;
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions};
use crate::wasi::io::streams::StreamError;
use crate::Failure;

/// The largest answer read from the bridge (an offset per record is a few dozen bytes).
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Bytes written to the request body at a time.
const WRITE_CHUNK: usize = 4096;

/// The bridge's answer.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `POST {base}{path}` with a record list; returns the status and body, or why there is none.
pub fn post(settings: &Settings, path: &str, body: &[u8]) -> Result<Reply, Failure> {
    let mut fields = vec![
        ("content-type".to_owned(), RECORDS_CONTENT_TYPE.as_bytes().to_vec()),
        ("accept".to_owned(), REPLY_CONTENT_TYPE.as_bytes().to_vec()),
        ("content-length".to_owned(), body.len().to_string().into_bytes()),
    ];
    if let Some(token) = &settings.token {
        fields.push(("authorization".to_owned(), format!("Bearer {token}").into_bytes()));
    }
    let headers = Fields::from_list(&fields)
    .map_err(|error| Failure::Refused(format!("invalid request headers: {error:?}")))?;
    let request = OutgoingRequest::new(headers);
    let target = format!("{}{path}", settings.base_path);
    let bad_target = |what: &str| Failure::Refused(format!("the bridge address gives an invalid {what}"));
    request.set_method(&Method::Post).map_err(|()| bad_target("method"))?;
    request.set_scheme(Some(&settings.scheme)).map_err(|()| bad_target("scheme"))?;
    request.set_authority(Some(&settings.authority)).map_err(|()| bad_target("host"))?;
    request.set_path_with_query(Some(&target)).map_err(|()| bad_target("path"))?;
    let outgoing_body = request.body().map_err(|()| Failure::Refused("the request body was taken twice".into()))?;

    let options = RequestOptions::new();
    // A runtime that does not support a timeout keeps its own; the request still goes out.
    let _ = options.set_connect_timeout(Some(settings.connect_timeout_ms * 1_000_000));
    let _ = options.set_first_byte_timeout(Some(settings.answer_timeout_ms * 1_000_000));
    let _ = options.set_between_bytes_timeout(Some(settings.answer_timeout_ms * 1_000_000));

    let pending = outgoing_handler::handle(request, Some(options)).map_err(|code| classify(&code))?;
    // If the connection failed, writing fails too; the response future then says why.
    if let Ok(stream) = outgoing_body.write() {
        for chunk in body.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing_body, None);

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(classify(&code)),
        Some(Err(())) | None => return Err(Failure::Indeterminate("the runtime lost the bridge's answer".into())),
    };
    let status = response.status();
    let incoming = response.consume().map_err(|()| Failure::Indeterminate("the answer's body was taken twice".into()))?;
    let body = read_all(&incoming).map_err(|reason| Failure::Indeterminate(format!("reading the bridge's answer (HTTP {status}): {reason}")));
    drop(incoming);
    Ok(Reply { status, body: body? })
}

/// Reads a response body to its end, within [`MAX_REPLY_BYTES`].
fn read_all(incoming: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = incoming.stream().map_err(|()| "the body stream was taken twice".to_owned())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if bytes.len() + chunk.len() > MAX_REPLY_BYTES => return Err(format!("more than {MAX_REPLY_BYTES} bytes")),
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(error)) => return Err(error.to_debug_string()),
        }
    }
}

/// Sorts a transport error: nothing reached the bridge (retry), the runtime forbids the request
/// (refused: a configuration error), or the request may have reached it (indeterminate).
fn classify(code: &ErrorCode) -> Failure {
    let reason = format!("{code:?}");
    match code {
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => Failure::NotStored(format!("the Kafka Bridge is unreachable: {reason}")),
        ErrorCode::HttpRequestDenied
        | ErrorCode::HttpRequestMethodInvalid
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestUriTooLong
        | ErrorCode::ConfigurationError => {
            Failure::Refused(format!("the runtime refused the request to the Kafka Bridge (is its host in allowed_outbound_hosts?): {reason}"))
        }
        _ => Failure::Indeterminate(format!("the request to the Kafka Bridge failed after it was sent: {reason}")),
    }
}
