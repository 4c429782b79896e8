//! [`Runtime`] for smol: its global executor, async-io's reactor and timers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use grenache_io::{Interest, Runtime, SockRef};
use smol::Async;
use smol::net::{TcpListener, TcpStream};
use smol_hyper::rt::{FuturesIo, SmolTimer};

/// The smol runtime: tasks on smol's global executor (so a program needs no executor of
/// its own: `smol::block_on` is enough).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Smol;

impl Runtime for Smol {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    /// The bare socket under async-io, not `smol::net::UdpSocket`: the adapter makes its
    /// own (batched) system calls on it and only asks smol when it is ready.
    type UdpSocket = Async<std::net::UdpSocket>;
    type HyperIo = FuturesIo<TcpStream>;
    type WsIo = TcpStream;
    type HyperTimer = SmolTimer;
    type Task = smol::Task<()>;

    fn now() -> Instant {
        Instant::now()
    }

    async fn sleep_until(at: Instant) {
        smol::Timer::at(at).await;
    }

    fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Self::Task {
        smol::spawn(fut)
    }

    fn spawn_detached(fut: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(fut).detach();
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        futures_lite::future::yield_now()
    }

    fn is_finished(task: &Self::Task) -> bool {
        task.is_finished()
    }

    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect((host, port))
    }

    fn listener(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::try_from(listener)
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
        FuturesIo::new(stream)
    }

    fn ws_io(stream: TcpStream) -> Self::WsIo {
        stream
    }

    fn hyper_timer() -> SmolTimer {
        SmolTimer::new()
    }

    fn udp(socket: std::net::UdpSocket) -> io::Result<Self::UdpSocket> {
        Async::new(socket)
    }

    async fn udp_ready(socket: &Self::UdpSocket, interest: Interest) -> io::Result<()> {
        match interest {
            Interest::Read => socket.readable().await,
            Interest::Write => socket.writable().await,
        }
    }

    fn udp_try_io<T>(
        socket: &Self::UdpSocket,
        _interest: Interest,
        op: impl FnOnce(SockRef<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        // async-io keeps no readiness of its own to clear: `readable`/`writable` ask the
        // OS afresh each time.
        op(SockRef::from(socket.get_ref()))
    }
}
