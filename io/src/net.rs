//! Opening connections and listeners, and the WebSocket handshakes, written once over
//! [`Runtime`].

use std::net::SocketAddr;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self};

use crate::head::Replay;
use crate::runtime::Runtime;
use crate::tls::MaybeTls;

/// A WebSocket a server accepted over one of the runtime's TCP streams, in TLS or not; the
/// handshake head it read first ([`crate::head`]) is replayed to tungstenite.
pub(crate) type WsStream<R> = WebSocketStream<Replay<MaybeTls<R>>>;

/// Bytes tungstenite reads from the socket at a time. It zero-fills that much of its read
/// buffer before every read, so its 128 KiB default cost a 128 KiB `memset` per read: 16%
/// of our WebSocket server's time in a profile at 64 requests in flight. 8 KiB still takes
/// dozens of small pipelined requests in one read, and a larger message is read in more
/// than one (its buffer grows to the message's size either way).
const WS_READ_SIZE: usize = 8 * 1024;

/// Binds a non-blocking listener on `addr` (std sets `SO_REUSEADDR` on Unix, so a restarted
/// server gets its port back at once).
pub(crate) fn bind_std(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Opens a TCP connection to `host` (a name, an IPv4 address, or an IPv6 address with or
/// without brackets) with Nagle off: Grenache frames are small and latency-bound.
pub(crate) async fn connect<R: Runtime>(host: &str, port: u16) -> std::io::Result<R::TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = R::connect(host, port).await?;
    if let Err(err) = R::set_nodelay(&stream) {
        tracing::debug!(%err, "cannot set TCP_NODELAY");
    }
    Ok(stream)
}

/// The server side of a WebSocket handshake.
pub(crate) async fn ws_accept<R: Runtime>(
    stream: Replay<MaybeTls<R>>,
    config: WebSocketConfig,
) -> Result<WsStream<R>, tungstenite::Error> {
    let config = config.read_buffer_size(WS_READ_SIZE);
    async_tungstenite::accept_async_with_config(stream, Some(config)).await
}

/// The client side of a WebSocket handshake on an open stream (the runtime's, or one
/// wrapped to watch what it reads).
pub(crate) async fn ws_connect<S>(
    request: impl IntoClientRequest + Unpin,
    stream: S,
    config: WebSocketConfig,
) -> Result<WebSocketStream<S>, tungstenite::Error>
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    let config = config.read_buffer_size(WS_READ_SIZE);
    let (ws, _response) =
        async_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}
