//! [`Runtime`] for tokio: the current runtime's tasks, reactor and timers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_tungstenite::tokio::TokioAdapter;
use grenache_io::{Interest, Runtime, SockRef};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// The tokio runtime: tasks go to the runtime the caller is in, so start servers and
/// clients from inside one (`#[tokio::main]`, `Runtime::block_on`). Both the current-thread
/// and the multi-thread flavours work; the clock is tokio's, so tests with paused time
/// drive the core too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokio;

/// A tokio task that is cancelled when dropped, as smol's tasks are, so a dropped server
/// leaves nothing running.
#[derive(Debug)]
pub struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for Task {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            if let Err(err) = joined
                && err.is_panic()
            {
                tracing::error!(%err, "a task panicked");
            }
        })
    }
}

/// A tokio TCP stream as futures-io reads and writes it: async-tungstenite's adapter, plus
/// vectored writes. rustls queues each TLS record as a buffer of its own and hands them to
/// one `write_vectored`; the adapter alone has none, so every record cost a `send` (four
/// times the plain server's sends at 10 KB and 64 requests in flight).
#[derive(Debug)]
pub struct WsIo(TokioAdapter<TcpStream>);

impl futures_io::AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl futures_io::AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(Pin::new(self.0.get_mut()), cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl Runtime for Tokio {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    type UdpSocket = UdpSocket;
    type HyperIo = TokioIo<TcpStream>;
    type WsIo = WsIo;
    type HyperTimer = TokioTimer;
    type Task = Task;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(at.into())
    }

    /// # Panics
    /// Outside a tokio runtime.
    fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Task {
        Task(tokio::spawn(fut))
    }

    /// # Panics
    /// Outside a tokio runtime.
    fn spawn_detached(fut: impl Future<Output = ()> + Send + 'static) {
        drop(tokio::spawn(fut));
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        tokio::task::yield_now()
    }

    fn is_finished(task: &Task) -> bool {
        task.0.is_finished()
    }

    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect((host, port))
    }

    fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_std(listener)
    }

    fn accept(
        listener: &TcpListener,
    ) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        listener.accept()
    }

    fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)
    }

    async fn read(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        stream.read(buf).await
    }

    async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        stream.write_all(bytes).await
    }

    fn hyper_io(stream: TcpStream) -> Self::HyperIo {
        TokioIo::new(stream)
    }

    fn ws_io(stream: TcpStream) -> Self::WsIo {
        WsIo(TokioAdapter::new(stream))
    }

    fn hyper_timer() -> TokioTimer {
        TokioTimer::new()
    }

    fn udp(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        UdpSocket::from_std(socket)
    }

    async fn udp_ready(socket: &UdpSocket, interest: Interest) -> io::Result<()> {
        socket.ready(tokio_interest(interest)).await.map(drop)
    }

    fn udp_try_io<T>(
        socket: &UdpSocket,
        interest: Interest,
        op: impl FnOnce(SockRef<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        // `try_io` clears tokio's readiness when `op` would block, so `udp_ready` then waits.
        socket.try_io(tokio_interest(interest), || op(SockRef::from(socket)))
    }
}

fn tokio_interest(interest: Interest) -> tokio::io::Interest {
    match interest {
        Interest::Read => tokio::io::Interest::READABLE,
        Interest::Write => tokio::io::Interest::WRITABLE,
    }
}
