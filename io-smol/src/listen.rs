//! The accept loop both API listeners share, and what their connections need.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use smol::future::FutureExt as _;
use smol::lock::Semaphore;
use smol::net::{TcpListener, TcpStream};

use crate::config::Limits;
use crate::driver::Command;
use crate::error::Listener;
use crate::stop::Stop;
use crate::time::{sleep, timeout};

/// What every API connection needs: the way to the driver and the bounds to keep.
#[derive(Debug)]
pub(crate) struct ApiContext {
    pub(crate) commands: async_channel::Sender<Command>,
    /// The core's body limit; the WebSocket message cap too.
    pub(crate) max_payload: usize,
    pub(crate) limits: Limits,
    pub(crate) stop: Stop,
}

/// Pause after a failed `accept` (typically out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections until the stop signal, at most `limits.max_connections` open at once,
/// then gives the open ones `limits.drain_timeout` to finish and cancels the rest.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    which: Listener,
    ctx: Arc<ApiContext>,
    serve: F,
) where
    F: Fn(TcpStream, Arc<ApiContext>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let mut connections: Vec<smol::Task<()>> = Vec::new();
    loop {
        let accepted = async {
            let slot = slots.acquire_arc().await;
            Some((listener.accept().await, slot))
        }
        .or(async {
            ctx.stop.wait().await;
            None
        })
        .await;
        let Some((accepted, slot)) = accepted else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::trace!(%peer, %which, "connection accepted");
                connections.retain(|task| !task.is_finished());
                let connection = serve(stream, Arc::clone(&ctx));
                connections.push(smol::spawn(async move {
                    connection.await;
                    drop(slot);
                }));
            }
            Err(err) => {
                tracing::warn!(%err, %which, "accept failed");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let open = connections.len();
    // Dropping an unfinished smol task cancels it, so leaving this loop early cancels the rest.
    let drained = timeout(ctx.limits.drain_timeout, async {
        for connection in connections {
            connection.await;
        }
    })
    .await;
    if drained.is_none() {
        tracing::debug!(%which, open, "drain timed out; connections cancelled");
    }
}
