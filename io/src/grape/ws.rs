//! The old WebSocket API: each text message is a request, answered on the same connection
//! by the core's reply, which carries the request's id. Many may be in flight at once.
//! A watch is answered many times until it is unwatched or the connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use grenache_core::api::WsConn;

use super::driver::Command;
use super::{ApiContext, in_slot};
use crate::runtime::Runtime;
use crate::tls::MaybeTls;
use crate::ws_server::{self, Taken, WsLimits};

/// Names each connection for the core, whose watches end with it.
static NEXT_CONN: AtomicU64 = AtomicU64::new(0);

/// Serves one WebSocket connection from `peer` (closed unread when the client already holds
/// its cap of connections): reads messages while fewer than
/// `limits.ws_max_in_flight` await their reply, and writes replies as they come. A message
/// larger than the core's body limit ends the connection. A watch counts as in flight from
/// its message until the core ends it.
pub(crate) async fn serve_connection<R: Runtime>(
    stream: R::TcpStream,
    peer: SocketAddr,
    ctx: Arc<ApiContext>,
) {
    in_slot(&ctx, peer, serve_websocket::<R>(stream, peer, &ctx)).await;
}

/// The connection once it holds a slot.
async fn serve_websocket<R: Runtime>(stream: R::TcpStream, peer: SocketAddr, ctx: &ApiContext) {
    let limits = WsLimits {
        max_message: ctx.max_payload,
        max_in_flight: ctx.limits.ws_max_in_flight.max(1),
        handshake_timeout: ctx.limits.ws_handshake_timeout,
        idle_timeout: ctx.limits.ws_idle_timeout,
        drain_timeout: ctx.limits.drain_timeout,
    };
    let Some(ws) = ws_server::accept::<R>(
        MaybeTls::Plain(R::ws_io(stream)),
        limits.max_message,
        limits.handshake_timeout,
    )
    .await
    else {
        return;
    };
    let conn = WsConn(NEXT_CONN.fetch_add(1, Ordering::Relaxed));
    // At most `max_in_flight` requests are out, and each gets one answer, except watches,
    // whose pushes the driver drops rather than block when this queue is full.
    let (out_tx, out_rx) = async_channel::bounded(limits.max_in_flight * 2);
    let take = |text: Vec<u8>| {
        let command = Command::Ws {
            conn,
            client: peer,
            text,
            reply: out_tx.clone(),
        };
        async {
            match ctx.commands.send(command).await {
                Ok(()) => Taken::Dispatched,
                Err(_) => Taken::Gone, // the driver has stopped
            }
        }
    };
    ws_server::serve::<R, _, _>(ws, &limits, &ctx.stop, &out_rx, take).await;
    if ctx.commands.send(Command::WsClosed(conn)).await.is_err() {
        tracing::trace!("driver stopped before the connection closed");
    }
}
