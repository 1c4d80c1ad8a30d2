//! The listener guards for a tonic server: [`incoming`] yields [`Guarded`] connections for
//! `serve_with_incoming_shutdown`, and [`TrackRequestsLayer`] counts each call as work on its
//! connection, so an HTTP/2 connection that only pings or sits idle is closed like any other.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tower::{Layer, Service};

use super::io::{ConnectionInfo, Guarded};
use super::table::Admission;
use super::{accept, Listener};
use crate::Shutdown;

/// Accepts connections on `listener` within its table's bounds until shutdown (then the listening
/// socket is closed at once and idle connections are closed); a connection refused at the bound is
/// closed (a gRPC client reconnects elsewhere or later).
pub fn incoming(listener: Listener, mut shutdown: Shutdown) -> impl Stream<Item = std::io::Result<Guarded>> {
    let (sender, receiver) = mpsc::channel(64);
    let Listener { tcp, table } = listener;
    tokio::spawn(async move {
        loop {
            let Some(stream) = accept(&tcp, &table, &mut shutdown).await else { break };
            let Admission::Admitted(slot) = table.admit() else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(table.clone().watch(slot.clone()));
            if sender.send(Ok(Guarded::new(stream, slot, table.clone()))).await.is_err() {
                break;
            }
        }
        drop(tcp);
        table.close_idle();
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Counts every request as work in progress on its connection (see [`incoming`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackRequests { inner }
    }
}

/// The service [`TrackRequestsLayer`] makes.
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for TrackRequests<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request.extensions().get::<ConnectionInfo>().map(ConnectionInfo::begin_request);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(guard);
            response
        })
    }
}
