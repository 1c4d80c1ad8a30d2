//! [`serve_http`]: HTTP/1.1 and HTTP/2 cleartext on one port for a hyper or axum service, over
//! [`Guarded`] connections. A request and its response body count as work in progress on their
//! connection; a connection refused at the bound gets a fast `503` with `Retry-After`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::io::{ConnectionInfo, Guarded};
use super::table::{Admission, RequestGuard};
use super::{accept, Listener};
use crate::Shutdown;

/// What `Retry-After` says to a refused client, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// How many refused connections may be answered at once; beyond that they are closed at once.
pub const MAX_REFUSALS_IN_PROGRESS: usize = 64;
/// How long answering a refused connection may take (write the 503, read what the client sent).
pub const REFUSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`serve_http`] needs besides the listener and the service.
pub struct ServeHttp {
    pub listener: Listener,
    pub shutdown: Shutdown,
    /// Counted once per connection refused at the bound (for example a service's shed counter).
    pub on_refused: Option<IntCounter>,
    /// HTTP/1.1 header read timeout; the handshake timeout when `None`.
    pub header_read_timeout: Option<std::time::Duration>,
}

/// A response body that keeps its request counted as in progress until it has been sent (or
/// dropped): a long response (server-sent events) keeps its connection from looking idle.
pub struct Tracked<B> {
    body: B,
    _guard: Option<RequestGuard>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this._guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Wraps `service` so every request counts as work on its connection until its response body ends.
#[derive(Clone)]
struct TrackedService<S> {
    inner: S,
    info: ConnectionInfo,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for TrackedService<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = self.info.begin_request();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked { body, _guard: Some(guard) }))
        })
    }
}

/// Serves `service` on every connection of `settings.listener` until shutdown, then stops
/// accepting at once (the listening socket is closed), closes idle connections and waits up to
/// the drain timeout for requests in progress.
pub async fn serve_http<S, B>(settings: ServeHttp, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let ServeHttp { listener, mut shutdown, on_refused, header_read_timeout } = settings;
    let Listener { tcp, table } = listener;
    let limits = table.limits.clone();
    let graceful = GracefulShutdown::new();
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout.unwrap_or(limits.handshake_timeout))
        .keep_alive(true);
    http.http2().timer(TokioTimer::new()).max_concurrent_streams(limits.max_h2_streams);
    let http = Arc::new(http);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS));
    loop {
        let Some(stream) = accept(&tcp, &table, &mut shutdown).await else { break };
        let slot = match table.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                if let Some(counter) = &on_refused {
                    counter.inc();
                }
                refuse(&refusals, stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let guarded = Guarded::new(stream, slot.clone(), table.clone());
        tokio::spawn(table.clone().watch(slot));
        let service = TrackedService { inner: service.clone(), info: guarded.info().clone() };
        let connection = http.serve_connection(TokioIo::new(guarded), service).into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(tcp);
    tracing::info!(timeout = ?limits.drain_timeout, "stopped accepting; draining requests in flight");
    table.close_idle();
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(limits.drain_timeout) => tracing::warn!("gave up waiting for requests in flight"),
    }
}

/// The JSON error a client turned away at the connection bound reads.
pub fn refused_body() -> String {
    serde_json::json!({ "error": format!("the server is overloaded (too many open connections); retry after {RETRY_AFTER_SECONDS} s"), "field": null }).to_string()
}

/// Answers a connection over the bound with a fixed `503` and closes it, without letting it hold
/// anything for longer than [`REFUSAL_TIMEOUT`]; with too many refusals under way already, the
/// connection is simply closed.
fn refuse(refusals: &Arc<Semaphore>, stream: TcpStream) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        drop(stream);
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer_refused(stream)).await;
        drop(permit);
    });
}

/// Writes the `503`, says no more will be written, and reads what the client sent until it
/// closes, so the close does not reset the connection before the client has read the answer.
async fn answer_refused(mut stream: TcpStream) {
    let body = refused_body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_SECONDS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}
