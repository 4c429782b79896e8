//! The one seam between the adapter and an async runtime.
//!
//! Everything in this crate is written once against [`Runtime`]; `grenache-smol` and
//! `grenache-tokio` each implement it for a zero-sized marker type and name the adapter's
//! types after it (`type GrapeServer = grenache_io::GrapeServer<Smol>`). The trait is what
//! the adapter cannot get from a runtime-neutral crate: spawning, the clock and timers, and
//! sockets. Channels, semaphores and `race` come from async-channel, async-lock and
//! futures-lite, which work on any executor.
//!
//! Its functions are associated functions, not methods: a runtime is ambient (smol's
//! global executor, tokio's current runtime), so there is no value to carry around, and
//! the marker type costs nothing at run time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub use socket2::SockRef;

/// What the adapter needs from an async runtime; see the module docs.
///
/// Sockets come in already bound and non-blocking (`std::net` types), so binding, socket
/// options and error reporting are written once, here, and a runtime only wraps them.
pub trait Runtime: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// A connected TCP stream.
    type TcpStream: Send + Sync + Unpin + 'static;
    /// A listening TCP socket.
    type TcpListener: Send + Sync + 'static;
    /// A bound UDP socket.
    type UdpSocket: Send + Sync + 'static;
    /// A TCP stream as hyper reads and writes it: the runtime's own glue, so no layer
    /// between zero-fills hyper's buffers.
    type HyperIo: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static;
    /// A TCP stream as async-tungstenite reads and writes it (futures-io).
    type WsIo: futures_io::AsyncRead + futures_io::AsyncWrite + Send + Sync + Unpin + 'static;
    /// hyper's timer (for its header-read timeout).
    type HyperTimer: hyper::rt::Timer + Send + Sync + 'static;
    /// A spawned task. Dropping it cancels the task; awaiting it waits for its end (a
    /// panic in the task is logged, not passed on).
    type Task: Future<Output = ()> + Send + Unpin + 'static;

    /// The runtime's clock, for the core's `now` and for deadlines.
    fn now() -> Instant;

    /// Waits until `at`.
    fn sleep_until(at: Instant) -> impl Future<Output = ()> + Send;

    /// Runs `fut` in the background as a [`Task`](Self::Task).
    fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Self::Task;

    /// Runs `fut` in the background, detached; it ends by itself.
    fn spawn_detached(fut: impl Future<Output = ()> + Send + 'static);

    /// Lets the runtime look at its sockets before polling the calling task again, without
    /// going to sleep ([`crate::busy_poll`]): tokio's `yield_now` defers the wake-up
    /// until its I/O driver has been polled; on smol, whose reactor runs beside the
    /// executor, a plain yield does.
    fn yield_now() -> impl Future<Output = ()> + Send;

    /// Whether `task` has ended.
    fn is_finished(task: &Self::Task) -> bool;

    /// Opens a TCP connection, resolving `host` if it is a name.
    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;

    /// Takes over a bound, non-blocking listener.
    ///
    /// # Errors
    /// When the runtime cannot register the socket.
    fn listener(listener: std::net::TcpListener) -> io::Result<Self::TcpListener>;

    /// Accepts one connection.
    fn accept(
        listener: &Self::TcpListener,
    ) -> impl Future<Output = io::Result<(Self::TcpStream, SocketAddr)>> + Send;

    /// Turns Nagle's algorithm off: Grenache frames are small and latency-bound.
    ///
    /// # Errors
    /// When the OS refuses.
    fn set_nodelay(stream: &Self::TcpStream) -> io::Result<()>;

    /// Reads what the stream has, at most `buf.len()` bytes; `Ok(0)` at its end.
    /// Cancel-safe: a read that loses a race has taken nothing.
    fn read(
        stream: &mut Self::TcpStream,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Writes all of `bytes`.
    fn write_all(
        stream: &mut Self::TcpStream,
        bytes: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Wraps a stream for hyper.
    fn hyper_io(stream: Self::TcpStream) -> Self::HyperIo;

    /// Wraps a stream for async-tungstenite.
    fn ws_io(stream: Self::TcpStream) -> Self::WsIo;

    /// A timer for hyper.
    fn hyper_timer() -> Self::HyperTimer;

    /// Takes over a bound, non-blocking UDP socket.
    ///
    /// # Errors
    /// When the runtime cannot register the socket.
    fn udp(socket: std::net::UdpSocket) -> io::Result<Self::UdpSocket>;

    /// Waits until `socket` is ready for `interest`. Readiness is a hint: the next
    /// [`udp_try_io`](Self::udp_try_io) may still find nothing to do.
    fn udp_ready(
        socket: &Self::UdpSocket,
        interest: Interest,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Runs `op`, one non-blocking call on the socket itself (a batched read or send, say),
    /// and tells the runtime when it would block, so that the next
    /// [`udp_ready`](Self::udp_ready) waits for the OS to report readiness again. The
    /// system calls are then written once, in this crate, for both runtimes.
    ///
    /// # Errors
    /// What `op` returns; `WouldBlock` when the socket has nothing (or no room) now.
    fn udp_try_io<T>(
        socket: &Self::UdpSocket,
        interest: Interest,
        op: impl FnOnce(SockRef<'_>) -> io::Result<T>,
    ) -> io::Result<T>;
}

/// Which way a UDP socket is to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// A datagram may be waiting.
    Read,
    /// There may be room for a datagram.
    Write,
}
