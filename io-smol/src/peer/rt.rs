//! Everything the peer module needs from smol, and nothing else: spawning, TCP (raw for
//! ZeroMQ), the hyper and WebSocket glue, a semaphore. The other files of `peer/` are the same in
//! `grenache-tokio`, so diffing the two crates shows only this file.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self, client::IntoClientRequest};
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use smol_hyper::rt::{FuturesIo, SmolTimer};

pub(crate) use smol::net::{TcpListener, TcpStream};

/// A WebSocket over one of this runtime's TCP streams.
pub(crate) type WsStream = WebSocketStream<TcpStream>;

/// A TCP stream as hyper reads and writes it.
pub(crate) type HyperIo = FuturesIo<TcpStream>;

/// Runs `fut` in the background, detached; it ends by itself.
pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    smol::spawn(fut).detach();
}

/// Runs `fut` to completion on this thread (for the shared modules' tests).
#[cfg(test)]
pub(crate) fn block_on<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(fut)
}

/// A background task that is cancelled when dropped, unless it has finished.
#[derive(Debug)]
pub(crate) struct Task(Option<smol::Task<()>>);

/// Runs `fut` in the background as a [`Task`].
pub(crate) fn spawn_task(fut: impl Future<Output = ()> + Send + 'static) -> Task {
    Task(Some(smol::spawn(fut)))
}

impl Task {
    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(smol::Task::is_finished)
    }

    /// Waits for the task to end.
    pub(crate) async fn join(&mut self) {
        if let Some(task) = self.0.take() {
            task.await;
        }
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
    FuturesIo::new(stream)
}

/// The timer hyper needs for its header-read timeout.
pub(crate) fn hyper_timer() -> SmolTimer {
    SmolTimer::new()
}

/// The server side of a WebSocket handshake.
pub(crate) async fn ws_accept(
    stream: TcpStream,
    config: WebSocketConfig,
) -> Result<WsStream, tungstenite::Error> {
    async_tungstenite::accept_async_with_config(stream, Some(config)).await
}

/// The client side of a WebSocket handshake on an open stream.
pub(crate) async fn ws_connect(
    request: impl IntoClientRequest + Unpin,
    stream: TcpStream,
    config: WebSocketConfig,
) -> Result<WsStream, tungstenite::Error> {
    let (ws, _response) =
        async_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// A counting semaphore shared by tasks.
#[derive(Debug, Clone)]
pub(crate) struct Limiter(Arc<smol::lock::Semaphore>);

/// One unit of a [`Limiter`], given back on drop.
#[derive(Debug)]
pub(crate) struct Permit(#[allow(dead_code)] smol::lock::SemaphoreGuardArc);

impl Limiter {
    /// A limiter of `n` units (at least one).
    pub(crate) fn new(n: usize) -> Self {
        Limiter(Arc::new(smol::lock::Semaphore::new(n.max(1))))
    }

    /// Waits for a unit.
    pub(crate) async fn acquire(&self) -> Permit {
        Permit(self.0.acquire_arc().await)
    }

    /// Whether nobody but this handle holds, or waits on, the limiter.
    pub(crate) fn is_unused(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}
