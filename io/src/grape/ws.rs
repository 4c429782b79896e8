//! The WebSocket API: each message goes to the core, each reply comes back on the same socket,
//! many in flight at once, in whatever order the core answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::protocol::frame::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use futures_lite::StreamExt as _;
use futures_lite::future::{self, FutureExt as _};
use grenache_core::api::{Reply, WsConn};

use super::ApiContext;
use super::driver::{Command, WsOut};
use crate::net::{WsStream, ws_accept};
use crate::runtime::Runtime;
use crate::time::{sleep_until, timeout};

/// Names each connection for the core, whose watches end with it.
static NEXT_CONN: AtomicU64 = AtomicU64::new(0);

/// What woke a connection.
enum Event {
    Incoming(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Out(WsOut),
    Stop,
    Timeout,
}

/// Serves one WebSocket connection: reads messages while fewer than
/// `limits.ws_max_in_flight` await their reply, and writes replies as they come. A message
/// larger than the core's body limit ends the connection.
pub(crate) async fn serve_connection<R: Runtime>(stream: R::TcpStream, ctx: Arc<ApiContext>) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(ctx.max_payload))
        .max_frame_size(Some(ctx.max_payload));
    let handshake = ws_accept::<R>(stream, config);
    let mut ws = match timeout::<R, _>(ctx.limits.ws_handshake_timeout, handshake).await {
        Some(Ok(ws)) => ws,
        Some(Err(err)) => {
            tracing::debug!(%err, "WebSocket handshake failed");
            return;
        }
        None => {
            tracing::debug!("WebSocket handshake timed out");
            return;
        }
    };
    let conn = WsConn(NEXT_CONN.fetch_add(1, Ordering::Relaxed));
    let code = serve_messages::<R>(&mut ws, conn, &ctx).await;
    if ctx.commands.send(Command::WsClosed(conn)).await.is_err() {
        tracing::trace!("driver stopped before the connection closed");
    }
    close::<R>(&mut ws, code, &ctx).await;
}

/// The connection's loop; returns how to close it. A watch counts as in flight from its
/// message until the core ends it.
async fn serve_messages<R: Runtime>(
    ws: &mut WsStream<R>,
    conn: WsConn,
    ctx: &ApiContext,
) -> CloseCode {
    let max_in_flight = ctx.limits.ws_max_in_flight.max(1);
    // At most `max_in_flight` requests are out, and each gets one `WsOut`, except watches,
    // which get one per change: the slack absorbs a burst of those.
    let (out_tx, out_rx) = async_channel::bounded(max_in_flight * 2);
    let mut in_flight = 0usize;
    let mut reading = true;
    let mut last_active = R::now();
    let mut drain_until = last_active;
    while reading || in_flight > 0 {
        // Idle means reading with nothing in flight; once reading stops, only the drain is left.
        let deadline = match (reading, in_flight) {
            (false, _) => Some(drain_until),
            (true, 0) => Some(last_active + ctx.limits.ws_idle_timeout),
            (true, _) => None,
        };
        let event = {
            let incoming = async {
                if reading && in_flight < max_in_flight {
                    Event::Incoming(ws.next().await)
                } else {
                    future::pending().await
                }
            };
            let out = async {
                match out_rx.recv().await {
                    Ok(out) => Event::Out(out),
                    // Unreachable while `out_tx` lives in this function.
                    Err(_) => future::pending().await,
                }
            };
            let stop = async {
                if reading {
                    ctx.stop.wait().await;
                    Event::Stop
                } else {
                    future::pending().await
                }
            };
            let timer = async {
                sleep_until::<R>(deadline).await;
                Event::Timeout
            };
            incoming.race(out).race(stop).race(timer).await
        };
        match event {
            Event::Incoming(Some(Ok(message))) => {
                let text = match message {
                    Message::Text(text) => Vec::from(text.as_bytes()),
                    Message::Binary(bytes) => Vec::from(bytes),
                    // tungstenite answers pings itself; pongs and raw frames carry no request.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(_) => {
                        reading = false;
                        drain_until = R::now() + ctx.limits.drain_timeout;
                        continue;
                    }
                };
                let command = Command::Ws {
                    conn,
                    text,
                    reply: out_tx.clone(),
                };
                if ctx.commands.send(command).await.is_err() {
                    break; // the driver has stopped
                }
                in_flight += 1;
                last_active = R::now();
            }
            Event::Incoming(None) => {
                reading = false;
                drain_until = R::now() + ctx.limits.drain_timeout;
            }
            Event::Incoming(Some(Err(err))) => {
                tracing::debug!(%err, "WebSocket read failed");
                break;
            }
            Event::Out(WsOut::Ended) => in_flight = in_flight.saturating_sub(1),
            Event::Out(WsOut::Reply(reply)) => {
                if !reply.more {
                    in_flight = in_flight.saturating_sub(1);
                }
                if let Err(err) = ws.send(reply_message(reply)).await {
                    tracing::debug!(%err, "WebSocket write failed");
                    break;
                }
                last_active = R::now();
            }
            Event::Out(WsOut::Overloaded) => return CloseCode::Again,
            Event::Stop => {
                reading = false;
                drain_until = R::now() + ctx.limits.drain_timeout;
            }
            Event::Timeout => break,
        }
    }
    CloseCode::Normal
}

/// Sends the core's reply as a text message (binary if the core ever sends non-UTF-8).
fn reply_message(reply: Reply) -> Message {
    match String::from_utf8(reply.body) {
        Ok(text) => Message::text(text),
        Err(err) => Message::binary(err.into_bytes()),
    }
}

/// Starts the closing handshake, giving a stuck client no more than the drain timeout.
async fn close<R: Runtime>(ws: &mut WsStream<R>, code: CloseCode, ctx: &ApiContext) {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    if let Some(Err(err)) = timeout::<R, _>(ctx.limits.drain_timeout, ws.close(Some(frame))).await {
        tracing::trace!(%err, "WebSocket close failed");
    }
}
