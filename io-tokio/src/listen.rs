//! The accept loop both API listeners share, and what their connections need.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::config::Limits;
use crate::driver::Command;
use crate::error::Listener;
use crate::stop::Stop;
use crate::time::{sleep, timeout};

/// What every API connection needs: the way to the driver and the bounds to keep.
#[derive(Debug)]
pub(crate) struct ApiContext {
    pub(crate) commands: mpsc::Sender<Command>,
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
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = async {
                // The semaphore is never closed, so acquiring only waits.
                let slot = Arc::clone(&slots).acquire_owned().await.ok();
                (listener.accept().await, slot)
            } => Some(accepted),
            () = ctx.stop.wait() => None,
        };
        let Some((accepted, slot)) = accepted else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::trace!(%peer, %which, "connection accepted");
                while connections.try_join_next().is_some() {}
                let connection = serve(stream, Arc::clone(&ctx));
                connections.spawn(async move {
                    connection.await;
                    drop(slot);
                });
            }
            Err(err) => {
                tracing::warn!(%err, %which, "accept failed");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let open = connections.len();
    let drained = timeout(ctx.limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_none() {
        tracing::debug!(%which, open, "drain timed out; connections cancelled");
        connections.shutdown().await;
    }
}
