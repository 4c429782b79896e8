//! The Grape: its driver task, its HTTP and WebSocket API servers, and the handle that
//! starts and stops them.

mod driver;
mod hot;
mod http;
pub(crate) mod server;
mod too_large;
mod ws;

use std::future::Future;
use std::net::SocketAddr;

use grenache_core::api::{ApiConnection, ApiLimits};

use crate::config::Limits;
use crate::stop::Stop;
use driver::Command;
use hot::HotLookups;

/// What every API connection needs: the way to the driver and the bounds to keep.
#[derive(Debug)]
pub(crate) struct ApiContext {
    pub(crate) commands: async_channel::Sender<Command>,
    /// The copy of the core's lookup cache that hot lookups are answered from.
    pub(crate) hot: std::sync::Arc<HotLookups>,
    /// The core's body limit; the WebSocket message cap too.
    pub(crate) max_payload: usize,
    pub(crate) limits: Limits,
    /// The core's per-client limits, read only to skip asking the driver about clients
    /// they do not apply to (loopback, by default).
    pub(crate) api_limits: ApiLimits,
    pub(crate) stop: Stop,
}

/// A client's hold on one API connection: `None` when the limits do not count it.
type Slot = Option<ApiConnection>;

/// Runs `serve` (one connection from `peer`) while it holds one of its client's connection
/// slots; past the client's cap the connection is dropped before anything is read.
pub(crate) async fn in_slot(ctx: &ApiContext, peer: SocketAddr, serve: impl Future<Output = ()>) {
    let Ok(slot) = open_connection(ctx, peer).await else {
        return;
    };
    serve.await;
    close_connection(ctx, slot).await;
}

/// Asks the core whether `peer` may open one more API connection. `Err` when it may not
/// (or the driver has stopped): close the connection unread.
async fn open_connection(ctx: &ApiContext, peer: SocketAddr) -> Result<Slot, ()> {
    if !ctx.api_limits.apply_to(peer.ip()) {
        return Ok(None);
    }
    let (reply, answer) = async_channel::bounded(1);
    let asked = ctx.commands.send(Command::Connect {
        client: peer,
        reply,
    });
    if asked.await.is_err() {
        return Err(());
    }
    match answer.recv().await {
        Ok(Ok(conn)) => Ok(Some(conn)),
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "API connection closed unread");
            Err(())
        }
        Err(_) => Err(()),
    }
}

/// Gives a connection's slot back to its client.
async fn close_connection(ctx: &ApiContext, slot: Slot) {
    if let Some(conn) = slot
        && ctx
            .commands
            .send(Command::Disconnected(conn))
            .await
            .is_err()
    {
        tracing::trace!("driver stopped before the connection closed");
    }
}
