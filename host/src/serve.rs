//! The HTTP side: the guarded listener ([`vote_service::listen`]) accepts connections within their
//! bounds, each request's body is read within its timeout and the body memory budget, the route
//! table of the [`crate::app`] picks its component, and the request runs in a fresh instance of
//! that component's serving version within the component's own share of places and queue;
//! `/healthz`, `/readyz` and `/metrics` are answered by the host itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use vote_service::listen::{Listener, ServeHttp};
use vote_service::Shutdown;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::app::{Application, Hosted};
use crate::entry::{Bound, Entry};
use crate::metrics::Metrics;
use crate::reuse::{IdleInstances, Warm};
use crate::runtime::{HostState, Policy, Runtime};
use crate::shed::{Gate, Shed};

/// The response header naming the component version that served the request.
pub const VERSION_HEADER: &str = "x-component-version";

/// How much longer than the request timeout a component may hold its instance while it waits
/// (on the broker, on a slow reader of its reply) rather than runs: running code is stopped at
/// the request timeout by the epoch deadline, waiting code at this much later by the clock.
pub const WAIT_GRACE: Duration = Duration::from_secs(1);

/// Why a component produced no response.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("the component could not be instantiated: {0:#}")]
    Instantiate(wasmtime::Error),
    #[error("the host is overloaded (no free instance); retry after {retry} s", retry = crate::shed::RETRY_AFTER_SECONDS)]
    NoInstance,
    #[error("the component failed: {0}")]
    Failed(String),
    #[error("the component did not answer within {0:?}: a vote may or may not have been stored; retry with the same idempotency-key")]
    TimedOut(Duration),
}

/// How a component's task ended.
enum Ended {
    Returned(wasmtime::Result<()>),
    TimedOut,
}

/// What happens once a component's call ended, however it ended: the instance goes back to the
/// idle instances (only when it returned without a trap and may serve again) or to the pool, then
/// the place it held (`hold`) is given up, then the execute time and any failure are recorded.
struct AfterCall<H> {
    idle: Option<Arc<IdleInstances>>,
    served: u32,
    max_requests: u32,
    instantiated: Instant,
    metrics: Option<(prometheus::Histogram, prometheus::IntCounter)>,
    hold: H,
}

impl<H> AfterCall<H> {
    fn done(self, store: Store<HostState>, instance: Bound, returned: bool, failed: bool) {
        match (returned, self.idle) {
            (true, Some(idle)) => idle.give_back(Warm { store, instance, served: self.served + 1 }, self.max_requests),
            _ => drop(store),
        }
        drop(self.hold);
        if let Some((execute, failures)) = &self.metrics {
            execute.observe(self.instantiated.elapsed().as_secs_f64());
            if failed {
                failures.inc();
            }
        }
    }
}

/// Runs `request` (its body read whole) through a fresh instance of `entry`, or through an idle
/// instance of `idle` when the component's policy reuses instances. Through the one-call
/// handler the reply comes back whole as the call's result; through `wasi:http` the response head
/// comes back as soon as the component sets it and the body streams while the component keeps
/// running. The instance (and `hold`, for example a place among the requests in flight) is
/// released when the component ends, or at the latest [`WAIT_GRACE`] after the request timeout;
/// a reused instance goes back to `idle` only when its request returned without a trap.
pub async fn call_component(
    runtime: &Runtime,
    policy: &Policy,
    entry: &Entry,
    idle: Option<&Arc<IdleInstances>>,
    request: Request<Bytes>,
    timings: Option<(&Metrics, &str)>,
    hold: impl Send + 'static,
) -> Result<Response<HyperOutgoingBody>, ComponentError> {
    let started = Instant::now();
    let bound = policy.request_timeout + WAIT_GRACE;
    let idle = idle.filter(|_| policy.instance_reuse > 1).cloned();
    let warm = idle.as_ref().and_then(|idle| idle.take());
    let reused = warm.is_some();
    let (mut store, instance, served) = match warm {
        Some(mut warm) => {
            runtime.renew_store(&mut warm.store, policy);
            (warm.store, warm.instance, warm.served)
        }
        None => {
            let mut store = runtime.new_store(policy);
            let instance = entry.instantiate(&mut store).await.map_err(|error| {
                if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
                    ComponentError::NoInstance
                } else {
                    ComponentError::Instantiate(error)
                }
            })?;
            (store, instance, 0)
        }
    };
    let instantiated = Instant::now();
    let labels = timings.map(|(m, v)| (m, [&*policy.component, v]));
    if let Some((metrics, labels)) = labels {
        let how = if reused { "reused" } else { "fresh" };
        metrics.instances.with_label_values(&[labels[0], how]).inc();
        if !reused {
            metrics.instantiate_seconds.with_label_values(&labels).observe((instantiated - started).as_secs_f64());
        }
    }
    let metrics = labels.map(|(m, labels)| (m.execute_seconds.with_label_values(&labels), m.component_failures.with_label_values(&labels)));
    let after = AfterCall { idle, served, max_requests: policy.instance_reuse, instantiated, metrics, hold };
    match instance {
        Bound::Handler(handler) => {
            let crossing = crate::entry::request(&request);
            drop(request);
            // In a task of its own like a `wasi:http` call, so a client that goes away does not
            // stop a component halfway through publishing.
            let task = tokio::spawn(async move {
                let handled = tokio::time::timeout(bound, handler.call_handle(&mut store, &crossing)).await;
                drop(crossing);
                let returned = matches!(handled, Ok(Ok(_)));
                let reply = match handled {
                    Ok(Ok(reply)) => crate::entry::response(reply).map_err(ComponentError::Failed),
                    Ok(Err(error)) => Err(ComponentError::Failed(describe_trap(&error))),
                    Err(_) => Err(ComponentError::TimedOut(bound)),
                };
                after.done(store, Bound::Handler(handler), returned, reply.is_err());
                reply
            });
            task.await.unwrap_or_else(|join| Err(ComponentError::Failed(format!("its task ended: {join}"))))
        }
        Bound::Proxy(proxy) => call_wasi_http(store, proxy, request.map(Full::new), bound, after).await,
    }
}

/// The `wasi:http` call: the component runs in a task of its own, so its body can stream after
/// the response head went out.
async fn call_wasi_http(mut store: Store<HostState>, proxy: Proxy, request: Request<Full<Bytes>>, bound: Duration, after: AfterCall<impl Send + 'static>) -> Result<Response<HyperOutgoingBody>, ComponentError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, request).map_err(ComponentError::Instantiate)?;
    let outparam = store.data_mut().http().new_response_outparam(sender).map_err(ComponentError::Instantiate)?;
    let task = tokio::spawn(async move {
        let handled = tokio::time::timeout(bound, proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, outparam)).await;
        let ended = match handled {
            Ok(result) => Ended::Returned(result),
            Err(_) => Ended::TimedOut,
        };
        let returned = matches!(ended, Ended::Returned(Ok(())));
        after.done(store, Bound::Proxy(proxy), returned, !returned);
        ended
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(ComponentError::Failed(format!("it answered with error code {code:?}"))),
        // The component returned, trapped or ran out of time without setting a response.
        Err(_) => match task.await {
            Ok(Ended::Returned(Ok(()))) => Err(ComponentError::Failed("it returned without a response".into())),
            Ok(Ended::Returned(Err(error))) => Err(ComponentError::Failed(describe_trap(&error))),
            Ok(Ended::TimedOut) => Err(ComponentError::TimedOut(bound)),
            Err(join) => Err(ComponentError::Failed(format!("its task ended: {join}"))),
        },
    }
}

/// A one-line reason for a trap: deadline, memory cap, or the trap's own message.
fn describe_trap(error: &wasmtime::Error) -> String {
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => "it ran past the request deadline and was stopped".into(),
            other => format!("it trapped: {other}"),
        };
    }
    let text = format!("{error:#}");
    if text.contains("unreachable") || text.contains("memory allocation") {
        format!("it trapped (for example on a panic or running out of its memory cap): {}", text.lines().next().unwrap_or(""))
    } else {
        text.lines().next().unwrap_or("").to_owned()
    }
}

/// A response body sent whole (`content-length` from its size), in the type every response of
/// the host has.
pub fn whole_body(bytes: impl Into<Bytes>) -> HyperOutgoingBody {
    Full::new(bytes.into()).map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} }).boxed_unsync()
}

/// A JSON body in the same shape components use for errors.
pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response<HyperOutgoingBody> {
    let body = whole_body(value.to_string());
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A `503` with `Retry-After` and a JSON body.
fn unavailable(value: serde_json::Value) -> Response<HyperOutgoingBody> {
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, value);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(crate::shed::RETRY_AFTER_SECONDS));
    response
}

/// A `503` for a shed request: the JSON error and `Retry-After`.
pub fn overloaded(shed: Shed) -> Response<HyperOutgoingBody> {
    unavailable(crate::shed::overloaded_body(shed))
}

/// An error about the request body; the connection is closed after it, since the rest of the
/// body was not read.
fn body_error(status: StatusCode, reason: String) -> Response<HyperOutgoingBody> {
    let mut response = json_response(status, serde_json::json!({ "error": reason, "field": "body" }));
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Everything a request needs.
pub struct Server {
    pub runtime: Arc<Runtime>,
    pub app: Arc<Application>,
    pub metrics: Metrics,
    pub gate: Gate,
    /// The native baseline answering instead of the component (`--native`).
    pub native: Option<crate::native::NativeRest>,
    /// Fires when the host starts draining: readiness turns `503` at once.
    pub shutdown: Shutdown,
}

impl Server {
    /// Answers one request: host endpoints first, everything else through the component.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Result<Response<HyperOutgoingBody>, std::convert::Infallible> {
        let started = Instant::now();
        match request.uri().path() {
            "/healthz" => return Ok(self.health()),
            "/readyz" => return Ok(self.readiness()),
            "/metrics" => {
                let saturation = self.gate.saturation();
                self.metrics.in_flight.set(saturation.in_flight as i64);
                self.metrics.queued.set(self.gate.queued() as i64);
                self.app.record_load();
                let body = whole_body(vote_service::render_metrics(&self.metrics.registry));
                return Ok(Response::new(body));
            }
            _ => {}
        }
        let app = self.app.current();
        let Some(hosted) = app.route(request.uri().path()).cloned() else {
            let path: String = request.uri().path().chars().take(128).collect();
            return Ok(json_response(StatusCode::NOT_FOUND, serde_json::json!({ "error": format!("no component serves {path}"), "field": "path" })));
        };
        drop(app);
        let component = hosted.registry.current();
        let version = match self.native {
            Some(_) => crate::native::PRODUCER,
            None => component.version.as_str(),
        };
        let mut response = match self.read_body(request).await {
            Err(refused) => refused,
            Ok((request, body_memory)) => match self.admit(&hosted).await {
                None => overloaded(Shed::InFlight),
                Some(place) if self.native.is_some() => {
                    let native = self.native.as_ref().expect("checked");
                    let response = native.handle(request, started).await;
                    drop((place, body_memory));
                    response
                }
                Some(place) => match call_component(&self.runtime, &hosted.policy, &component.entry, Some(&component.idle), request, Some((&self.metrics, version)), (place, body_memory)).await {
                    Ok(response) => response,
                    Err(ComponentError::NoInstance) => {
                        self.metrics.shed.with_label_values(&["instances"]).inc();
                        overloaded(Shed::InFlight)
                    }
                    Err(error @ ComponentError::TimedOut(_)) => {
                        tracing::warn!(component = %hosted.id, version, %error, "component timed out");
                        unavailable(serde_json::json!({ "error": error.to_string(), "field": null }))
                    }
                    Err(error) => {
                        tracing::warn!(component = %hosted.id, version, %error, "component failed");
                        json_response(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({ "error": error.to_string(), "field": "component" }))
                    }
                },
            },
        };
        if let Ok(value) = HeaderValue::from_str(version) {
            response.headers_mut().insert(VERSION_HEADER, value);
        }
        let class = format!("{}xx", response.status().as_u16() / 100);
        self.metrics.requests.with_label_values(&[class.as_str(), &hosted.id, version]).inc();
        if hosted.counts_votes() {
            self.metrics.record_vote_response(response.status().as_u16());
        }
        self.metrics.request_seconds.with_label_values(&[&hosted.id, version]).observe(started.elapsed().as_secs_f64());
        Ok(response)
    }

    /// A place in `hosted`, waiting in its bounded queue if all its places are taken, then in
    /// the host's bound (which the components' shares fit in); records the wait and counts a
    /// refusal. `None`: the request gets the fast `503`.
    async fn admit(&self, hosted: &Hosted) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let (place, waited) = hosted.admission.enter().await;
        if !waited.is_zero() {
            self.metrics.queue_wait_seconds.observe(waited.as_secs_f64());
        }
        let Some(place) = place else {
            self.gate.shed_now();
            self.metrics.component_shed.with_label_values(&[&hosted.id]).inc();
            self.metrics.shed.with_label_values(&[Shed::InFlight.label()]).inc();
            return None;
        };
        let Some(host_place) = self.gate.try_in_flight() else {
            self.metrics.shed.with_label_values(&[Shed::InFlight.label()]).inc();
            return None;
        };
        Some((place, host_place))
    }

    /// Checks the request's authority, then reads the whole body, within the body timeout, the
    /// size cap and the memory budget shared by every request, before a component instance is
    /// taken: a client that stalls mid-body holds a connection, never an instance. Returns the
    /// request with its body and the body's share of the memory budget, held until it is served.
    async fn read_body(&self, request: Request<Incoming>) -> Result<(Request<Bytes>, Option<OwnedSemaphorePermit>), Response<HyperOutgoingBody>> {
        check_authority(&request)?;
        let limits = &self.gate.limits;
        let too_large = || body_error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {} bytes", limits.max_body_bytes));
        if request.body().size_hint().lower() > limits.max_body_bytes as u64 {
            return Err(too_large());
        }
        let (head, mut body) = request.into_parts();
        let deadline = tokio::time::Instant::now() + limits.body_read_timeout;
        let mut buffer = BytesMut::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                Ok(Some(Err(error))) => return Err(body_error(StatusCode::BAD_REQUEST, format!("reading the request body failed: {error}"))),
                Err(_) => {
                    self.metrics.timeouts.with_label_values(&["body"]).inc();
                    return Err(body_error(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {} ms", limits.body_read_timeout.as_millis())));
                }
            };
            let Ok(data) = frame.into_data() else { continue };
            if buffer.len() + data.len() > limits.max_body_bytes {
                return Err(too_large());
            }
            if data.is_empty() {
                continue;
            }
            let Some(permit) = self.gate.try_body_bytes(data.len()) else {
                self.metrics.shed.with_label_values(&[Shed::BodyMemory.label()]).inc();
                let mut response = overloaded(Shed::BodyMemory);
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                return Err(response);
            };
            match held.as_mut() {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            buffer.extend_from_slice(&data);
        }
        Ok((Request::from_parts(head, buffer.freeze()), held))
    }

    /// Liveness: always `200` while the process serves; says whether the host is saturated.
    fn health(&self) -> Response<HyperOutgoingBody> {
        let saturation = self.gate.saturation();
        let status = if saturation.saturated { "saturated" } else { "ok" };
        json_response(StatusCode::OK, serde_json::json!({ "status": status, "limits": saturation }))
    }

    /// Readiness: `503` with `Retry-After` while a bound is full or clients were turned away in
    /// the last second, so a load balancer sends new clients elsewhere; `200` otherwise.
    fn readiness(&self) -> Response<HyperOutgoingBody> {
        let saturation = self.gate.saturation();
        let version = match self.native {
            Some(_) => crate::native::PRODUCER.to_owned(),
            None => {
                let app = self.app.current();
                app.component(None).map(|hosted| hosted.registry.current().version.clone()).unwrap_or_default()
            }
        };
        if self.shutdown.requested() {
            return unavailable(serde_json::json!({ "status": "draining", "version": version, "limits": saturation }));
        }
        if saturation.saturated {
            return unavailable(serde_json::json!({ "status": "saturated", "version": version, "limits": saturation }));
        }
        json_response(StatusCode::OK, serde_json::json!({ "status": "ready", "version": version, "limits": saturation }))
    }
}

/// A `400` unless the request names a host that is plain ASCII: the `Host` header over
/// HTTP/1.1, the `:authority` over HTTP/2. Components read it as the request's authority.
fn check_authority<B>(request: &Request<B>) -> Result<(), Response<HyperOutgoingBody>> {
    let bad = |reason: &str| {
        let mut response = json_response(StatusCode::BAD_REQUEST, serde_json::json!({ "error": reason, "field": "host" }));
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        Err(response)
    };
    if request.uri().authority().is_some() {
        return Ok(());
    }
    match request.headers().get(HOST) {
        None => bad("the request has no Host header"),
        Some(value) => match value.to_str() {
            Ok(text) if !text.is_empty() && text.parse::<hyper::http::uri::Authority>().is_ok() => Ok(()),
            _ => bad("the Host header must be a host name or address in ASCII, with an optional port"),
        },
    }
}

/// Serves the host's requests on `listener` until `shutdown` fires, then stops accepting at once
/// and waits up to the drain timeout for the requests in flight.
pub async fn serve(listener: Listener, server: Arc<Server>, shutdown: Shutdown) {
    let header_read_timeout = Some(server.gate.limits.header_read_timeout);
    let on_refused = Some(server.metrics.shed.with_label_values(&[Shed::Connections.label()]));
    let handler = server.clone();
    let service = hyper::service::service_fn(move |request| handler.clone().handle(request));
    vote_service::listen::serve_http(ServeHttp { listener, shutdown, on_refused, header_read_timeout }, service).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&[u8]>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, HeaderValue::from_bytes(host).unwrap());
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_request_must_name_an_ascii_host() {
        assert!(check_authority(&request("/votes", Some(b"127.0.0.1:8080"))).is_ok());
        assert!(check_authority(&request("http://example.org/votes", None)).is_ok(), "HTTP/2 :authority");
        for host in [None, Some(&b""[..]), Some(&b"b\xc3\xa9la.example"[..]), Some(&b"a b"[..])] {
            let response = check_authority(&request("/votes", host)).unwrap_err();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{host:?}");
        }
    }
}
