//! The HTTP side: hyper accepts requests and runs each one in a fresh instance of the current
//! component; `/healthz`, `/readyz` and `/metrics` are answered by the host itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use vote_service::Shutdown;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::runtime::{HostState, Runtime};

/// The response header naming the component version that served the request.
pub const VERSION_HEADER: &str = "x-component-version";
/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a component produced no response.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("the component could not be instantiated: {0:#}")]
    Instantiate(wasmtime::Error),
    #[error("the component failed: {0}")]
    Failed(String),
}

/// Runs `request` through a fresh instance of `pre`. Returns the response head as soon as the
/// component sets it; the body streams while the component keeps running.
pub async fn call_component<B>(
    runtime: &Runtime,
    pre: &ProxyPre<HostState>,
    request: Request<B>,
    timings: Option<(&Metrics, &str)>,
) -> Result<Response<HyperOutgoingBody>, ComponentError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let started = Instant::now();
    let mut store = runtime.new_store();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, request).map_err(ComponentError::Instantiate)?;
    let outparam = store.data_mut().http().new_response_outparam(sender).map_err(ComponentError::Instantiate)?;
    let proxy = pre.instantiate_async(&mut store).await.map_err(ComponentError::Instantiate)?;
    let instantiated = Instant::now();
    if let Some((metrics, version)) = timings {
        metrics.instantiate_seconds.with_label_values(&[version]).observe((instantiated - started).as_secs_f64());
    }
    let execute_metric = timings.map(|(m, v)| (m.execute_seconds.with_label_values(&[v]), m.component_failures.with_label_values(&[v])));
    let task = tokio::spawn(async move {
        let result = proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, outparam).await;
        if let Some((execute, failures)) = &execute_metric {
            execute.observe(instantiated.elapsed().as_secs_f64());
            if result.is_err() {
                failures.inc();
            }
        }
        result
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(ComponentError::Failed(format!("it answered with error code {code:?}"))),
        // The component returned or trapped without setting a response.
        Err(_) => match task.await {
            Ok(Ok(())) => Err(ComponentError::Failed("it returned without a response".into())),
            Ok(Err(error)) => Err(ComponentError::Failed(describe_trap(&error))),
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

/// A JSON body in the same shape components use for errors.
pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(value.to_string())).map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} }).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Everything a request needs.
pub struct Server {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
}

impl Server {
    /// Answers one request: host endpoints first, everything else through the component.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Result<Response<HyperOutgoingBody>, std::convert::Infallible> {
        let started = Instant::now();
        match request.uri().path() {
            "/healthz" => return Ok(json_response(StatusCode::OK, serde_json::json!({ "status": "ok" }))),
            "/readyz" => {
                let current = self.registry.current();
                return Ok(json_response(StatusCode::OK, serde_json::json!({ "status": "ready", "version": current.version })));
            }
            "/metrics" => {
                let body = Full::new(Bytes::from(vote_service::render_metrics(&self.metrics.registry))).map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} }).boxed_unsync();
                return Ok(Response::new(body));
            }
            _ => {}
        }
        let component = self.registry.current();
        let version = component.version.as_str();
        let request = request.map(|body| body.map_err(wasmtime_wasi_http::p2::hyper_request_error).map_err(wasmtime_wasi_http::Error::from));
        let mut response = match call_component(&self.runtime, &component.pre, request, Some((&self.metrics, version))).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(version, %error, "component failed");
                json_response(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({ "error": error.to_string(), "field": "component" }))
            }
        };
        if let Ok(value) = HeaderValue::from_str(version) {
            response.headers_mut().insert(VERSION_HEADER, value);
        }
        let class = format!("{}xx", response.status().as_u16() / 100);
        self.metrics.requests.with_label_values(&[class.as_str(), version]).inc();
        self.metrics.request_seconds.with_label_values(&[version]).observe(started.elapsed().as_secs_f64());
        Ok(response)
    }
}

/// Accepts connections until `shutdown` fires, then waits up to [`DRAIN_TIMEOUT`] for the
/// requests in flight to finish.
pub async fn serve(listener: tokio::net::TcpListener, server: Arc<Server>, mut shutdown: Shutdown) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let service = hyper::service::service_fn(move |request| server.clone().handle(request));
        let connection = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    tracing::info!("draining requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("gave up waiting for requests in flight"),
    }
}
