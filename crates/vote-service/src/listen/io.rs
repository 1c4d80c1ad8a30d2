//! [`Guarded`]: an accepted socket that belongs to a [`ConnectionTable`] slot. Once its watchdog
//! (or eviction, or a drain) closes the slot, reads see the end of the stream and writes fail, so
//! whichever server holds the socket lets the connection go.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::table::{ConnectionTable, RequestGuard, Slot};

/// An accepted connection, counted in its listener's table until it is dropped.
pub struct Guarded {
    stream: TcpStream,
    info: ConnectionInfo,
}

/// What a request knows about its connection (a tonic request's extension).
#[derive(Clone)]
pub struct ConnectionInfo {
    pub remote: Option<SocketAddr>,
    pub(crate) slot: Arc<Slot>,
    pub(crate) table: Arc<ConnectionTable>,
}

impl ConnectionInfo {
    /// Marks a request as running on this connection until the guard is dropped.
    pub fn begin_request(&self) -> RequestGuard {
        self.slot.begin_request(&self.table)
    }
}

impl Guarded {
    pub(crate) fn new(stream: TcpStream, slot: Arc<Slot>, table: Arc<ConnectionTable>) -> Self {
        let remote = stream.peer_addr().ok();
        Self { stream, info: ConnectionInfo { remote, slot, table } }
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    fn closed_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, "the server closed this connection (idle, handshake timeout, evicted or draining)")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.info.table.remove(&self.info.slot);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.info.slot.read_waker.register(cx.waker());
        if this.info.slot.is_closed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.info.slot.write_waker.register(cx.waker());
        if this.info.slot.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.info.slot.write_waker.register(cx.waker());
        if this.info.slot.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}
