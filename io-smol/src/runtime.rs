//! [`Runtime`] for smol: its global executor, async-io's reactor and timers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use grenache_io::Runtime;
use smol::net::{TcpListener, TcpStream, UdpSocket};
use smol_hyper::rt::{FuturesIo, SmolTimer};

/// The smol runtime: tasks on smol's global executor (so a program needs no executor of
/// its own: `smol::block_on` is enough).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Smol;

impl Runtime for Smol {
    type TcpStream = TcpStream;
    type TcpListener = TcpListener;
    type UdpSocket = UdpSocket;
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

    fn udp(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        UdpSocket::try_from(socket)
    }

    async fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        socket.recv_from(buf).await
    }

    fn try_recv_from(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> Option<io::Result<(usize, SocketAddr)>> {
        // `poll_once` is ready at the first poll, so `block_on` never blocks here.
        smol::future::block_on(smol::future::poll_once(socket.recv_from(buf)))
    }

    async fn send_to(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        socket.send_to(bytes, to).await
    }
}
