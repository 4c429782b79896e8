//! Everything the peer module needs from tokio, and nothing else: spawning, TCP (raw for
//! ZeroMQ), the hyper and WebSocket glue, a semaphore. The other files of `peer/` are the same in
//! `grenache-smol`, so diffing the two crates shows only this file.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self, client::IntoClientRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub(crate) use tokio::net::{TcpListener, TcpStream};

/// A WebSocket over one of this runtime's TCP streams.
pub(crate) type WsStream = WebSocketStream<TokioAdapter<TcpStream>>;

/// A TCP stream as hyper reads and writes it.
pub(crate) type HyperIo = TokioIo<TcpStream>;

/// Runs `fut` in the background, detached; it ends by itself.
///
/// # Panics
/// Outside a tokio runtime.
pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    drop(tokio::spawn(fut));
}

/// Runs `fut` to completion on a runtime of its own (for the shared modules' tests).
#[cfg(test)]
pub(crate) fn block_on<T>(fut: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for a test")
        .block_on(fut)
}

/// A background task that is cancelled when dropped, unless it has finished.
#[derive(Debug)]
pub(crate) struct Task(tokio::task::JoinHandle<()>);

/// Runs `fut` in the background as a [`Task`].
pub(crate) fn spawn_task(fut: impl Future<Output = ()> + Send + 'static) -> Task {
    Task(tokio::spawn(fut))
}

impl Task {
    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for the task to end.
    pub(crate) async fn join(&mut self) {
        if let Err(err) = (&mut self.0).await
            && err.is_panic()
        {
            tracing::error!(%err, "a peer task panicked");
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens a TCP connection (resolving `host` if it is a name), with Nagle off: Grenache
/// frames are small and latency-bound.
pub(crate) async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "cannot set TCP_NODELAY");
    }
    Ok(stream)
}

/// Reads what the stream has, at most `buf.len()` bytes; `Ok(0)` at its end.
/// Cancel-safe: a read that loses a race has taken nothing.
pub(crate) async fn read(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    stream.read(buf).await
}

/// Writes all of `bytes`.
pub(crate) async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await
}

/// Binds a TCP listener.
pub(crate) async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts one connection, with Nagle off.
pub(crate) async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (stream, peer) = listener.accept().await?;
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "cannot set TCP_NODELAY");
    }
    Ok((stream, peer))
}

/// Wraps a stream for hyper.
pub(crate) fn hyper_io(stream: TcpStream) -> HyperIo {
    TokioIo::new(stream)
}

/// The timer hyper needs for its header-read timeout.
pub(crate) fn hyper_timer() -> TokioTimer {
    TokioTimer::new()
}

/// The server side of a WebSocket handshake.
pub(crate) async fn ws_accept(
    stream: TcpStream,
    config: WebSocketConfig,
) -> Result<WsStream, tungstenite::Error> {
    async_tungstenite::tokio::accept_async_with_config(stream, Some(config)).await
}

/// The client side of a WebSocket handshake on an open stream.
pub(crate) async fn ws_connect(
    request: impl IntoClientRequest + Unpin,
    stream: TcpStream,
    config: WebSocketConfig,
) -> Result<WsStream, tungstenite::Error> {
    let (ws, _response) =
        async_tungstenite::tokio::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// A counting semaphore shared by tasks.
#[derive(Debug, Clone)]
pub(crate) struct Limiter(Arc<tokio::sync::Semaphore>);

/// One unit of a [`Limiter`], given back on drop.
#[derive(Debug)]
pub(crate) struct Permit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Limiter {
    /// A limiter of `n` units (at least one; tokio's maximum at most).
    pub(crate) fn new(n: usize) -> Self {
        let n = n.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Limiter(Arc::new(tokio::sync::Semaphore::new(n)))
    }

    /// Waits for a unit.
    pub(crate) async fn acquire(&self) -> Permit {
        // The semaphore is never closed, so acquiring only waits.
        match Arc::clone(&self.0).acquire_owned().await {
            Ok(permit) => Permit(permit),
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether nobody but this handle holds, or waits on, the limiter.
    pub(crate) fn is_unused(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}
