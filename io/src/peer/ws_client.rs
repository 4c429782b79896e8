//! One WebSocket connection the core asked for ([`Io::WsConnect`]): to a Grape's
//! WebSocket API, a peer's RPC socket or a publisher. It reports open, every message and
//! the close, and writes what the driver queues.
//!
//! [`Io::WsConnect`]: grenache_core::peer::Io::WsConnect

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::{FutureExt as _, StreamExt as _};
use grenache_core::peer::{ConnId, Protocol, WsMessage};
use hyper::Uri;

use super::driver::IoEvent;
use super::first_bytes::Recording;
use crate::net::{connect, ws_connect};
use crate::read_burst::ReadBurst;
use crate::runtime::Runtime;
use crate::time::timeout;
use crate::tls::{MaybeTls, TlsClient};
use crate::ws_batch::write_batch;

/// Time given to the closing handshake when the driver drops a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a connection needs besides its id, URL and queues.
#[derive(Clone, Debug)]
pub(crate) struct WsSettings {
    /// TCP connect plus handshakes (TLS, WebSocket).
    pub(crate) connect_timeout: Duration,
    /// Longest message accepted; a longer one ends the connection.
    pub(crate) max_message_len: usize,
    /// For `wss://` URLs; without it they are refused.
    pub(crate) tls: Option<Arc<TlsClient>>,
}

/// How a connection ended.
enum Ended {
    /// The driver dropped it (or is gone): no report.
    ByDriver,
    /// The peer closed it, or it broke: report it.
    Lost,
}

/// What woke the connection.
enum Wake {
    Incoming(Option<Result<Message, WsError>>),
    Outgoing(Option<WsMessage>),
}

/// Opens the connection and serves it until it ends; reports `WsClosed` unless the driver
/// ended it (or `WsWrongTransport` when the server speaks another protocol).
pub(crate) async fn run<R: Runtime>(
    conn: ConnId,
    url: String,
    outgoing: async_channel::Receiver<WsMessage>,
    io: async_channel::Sender<IoEvent>,
    settings: WsSettings,
) {
    let ws = match timeout::<R, _>(settings.connect_timeout, open::<R>(&url, &settings)).await {
        Some(Ok(ws)) => Ok(ws),
        Some(Err(Failed::WrongTransport(met))) => {
            tracing::debug!(%conn, url, %met, "WebSocket dial met another protocol");
            Err(Some(met))
        }
        Some(Err(Failed::Other(err))) => {
            tracing::debug!(%conn, url, %err, "WebSocket connect failed");
            Err(None)
        }
        None => {
            tracing::debug!(%conn, url, "WebSocket connect timed out");
            Err(None)
        }
    };
    let ended = match ws {
        Ok(ws) if io.send(IoEvent::WsOpen(conn)).await.is_ok() => {
            serve::<R>(conn, ws, pin!(outgoing), &io).await
        }
        Ok(_) => Ended::ByDriver,
        Err(Some(met)) => {
            let _ = io.send(IoEvent::WsWrongTransport(conn, met)).await;
            Ended::ByDriver
        }
        Err(None) => Ended::Lost,
    };
    if matches!(ended, Ended::Lost) {
        let _ = io.send(IoEvent::WsClosed(conn)).await;
    }
}

/// A WebSocket whose first bytes (after TLS, if any) are kept (see [`open`]).
type ClientWs<R> = WebSocketStream<Recording<MaybeTls<R>>>;

/// Why a dial failed.
enum Failed {
    /// The server answered in another protocol: an HTTP answer without the upgrade, or
    /// what [`Protocol::sniff`] recognises.
    WrongTransport(Protocol),
    /// Anything else (refused, reset, bad URL, TLS, a broken handshake).
    Other(String),
}

/// Connects (with TLS for `wss://`) and upgrades, keeping the first bytes the server
/// sends so that an answer that is not HTTP can be named.
async fn open<R: Runtime>(url: &str, settings: &WsSettings) -> Result<ClientWs<R>, Failed> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Failed::Other(format!("ERR_URL_INVALID: {e}")))?;
    let tls = match (uri.scheme_str(), &settings.tls) {
        (Some("ws"), _) => None,
        (Some("wss"), Some(tls)) => Some(tls),
        (Some("wss"), None) => return Err(Failed::Other(format!("ERR_TLS_NOT_CONFIGURED: {url}"))),
        _ => {
            return Err(Failed::Other(format!(
                "only ws:// and wss:// are supported, got {url}"
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| Failed::Other("ERR_URL_INVALID: no host".into()))?;
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let stream = connect::<R>(host, port)
        .await
        .map_err(|e| Failed::Other(format!("connect {host}:{port}: {e}")))?;
    let stream = match tls {
        None => MaybeTls::Plain(R::ws_io(stream)),
        Some(tls) => {
            let stream = tls
                .connect::<R>(host, stream)
                .await
                .map_err(|failure| Failed::Other(format!("{failure}: {host}:{port}")))?;
            MaybeTls::Tls(Box::new(stream))
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_message_len))
        .max_frame_size(Some(settings.max_message_len));
    let (stream, first) = Recording::new(stream);
    match ws_connect(url, stream, config).await {
        Ok(ws) => Ok(ws),
        // A complete HTTP answer, but not 101: a plain HTTP server.
        Err(WsError::Http(_)) => Err(Failed::WrongTransport(Protocol::Http)),
        Err(err) => {
            // A server that refuses our certificate says so after our TLS handshake (TLS 1.3).
            if let Some(tls) = tls {
                tls.count_end(&err);
            }
            Err(match first.protocol() {
                Some(met) if met != Protocol::Http => Failed::WrongTransport(met),
                _ => Failed::Other(err.to_string()),
            })
        }
    }
}

async fn serve<R: Runtime>(
    conn: ConnId,
    mut ws: ClientWs<R>,
    // Polled as a stream, which keeps its listener while a read wakes the loop.
    mut outgoing: Pin<&mut async_channel::Receiver<WsMessage>>,
    io: &async_channel::Sender<IoEvent>,
) -> Ended {
    let mut burst = ReadBurst::new(ReadBurst::CLIENT);
    loop {
        let wake = async { Wake::Incoming(ws.next().await) }
            .race(async { Wake::Outgoing(outgoing.next().await) })
            .await;
        let msg = match wake {
            Wake::Incoming(Some(Ok(Message::Text(text)))) => WsMessage::Text(text.as_str().into()),
            Wake::Incoming(Some(Ok(Message::Binary(bytes)))) => WsMessage::Binary(bytes.into()),
            // tungstenite answers pings (and close frames) itself.
            Wake::Incoming(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {
                continue;
            }
            Wake::Incoming(Some(Ok(Message::Close(_))) | None) => return Ended::Lost,
            Wake::Incoming(Some(Err(err))) => {
                tracing::debug!(%conn, %err, "WebSocket read failed");
                return Ended::Lost;
            }
            Wake::Outgoing(Some(msg)) => {
                burst.wrote();
                if !write_queued(conn, &mut ws, msg, outgoing.as_mut()).await {
                    return Ended::Lost;
                }
                continue;
            }
            Wake::Outgoing(None) => {
                if let Some(Err(err)) = timeout::<R, _>(CLOSE_TIMEOUT, ws.close(None)).await {
                    tracing::trace!(%conn, %err, "WebSocket close failed");
                }
                return Ended::ByDriver;
            }
        };
        if io.send(IoEvent::WsMessage(conn, msg)).await.is_err() {
            return Ended::ByDriver;
        }
        let queued = burst.after_one::<R, _>(|| outgoing.try_recv().ok()).await;
        if let Some(msg) = queued
            && !write_queued(conn, &mut ws, msg, outgoing.as_mut()).await
        {
            return Ended::Lost;
        }
    }
}

/// Writes `first` and every message already queued behind it, in one write; `false` (logged)
/// if the connection broke.
async fn write_queued<S>(
    conn: ConnId,
    ws: &mut WebSocketStream<S>,
    first: WsMessage,
    outgoing: Pin<&mut async_channel::Receiver<WsMessage>>,
) -> bool
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    let next = || outgoing.try_recv().ok().map(to_message);
    match write_batch(ws, to_message(first), next).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%conn, %err, "WebSocket write failed");
            false
        }
    }
}

/// The tungstenite message for a core message.
pub(crate) fn to_message(msg: WsMessage) -> Message {
    match msg {
        WsMessage::Text(text) => Message::text(text),
        WsMessage::Binary(bytes) => Message::binary(bytes),
    }
}
