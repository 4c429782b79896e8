//! The accept loop every server here shares (the Grape's API listeners, the RPC server,
//! the publisher): it bounds, serves and drains connections.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::FutureExt as _;

use crate::busy_poll;
use crate::runtime::Runtime;
use crate::stop::Stop;
use crate::task::{Limiter, Task};
use crate::time::{sleep, timeout};

/// Pause after a failed `accept` (typically out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections a listener serves at once, and how it winds down.
#[derive(Debug, Clone)]
pub(crate) struct AcceptLimits {
    /// Open connections at most; past it, new ones wait in the OS backlog.
    pub(crate) max_connections: usize,
    /// How long open connections get to finish after `stop` before they are cancelled.
    pub(crate) drain: Duration,
    /// Each connection's busy-poll window ([`crate::busy_poll`]); `None`: off.
    pub(crate) busy_poll: Option<Duration>,
}

/// Accepts connections until `stop`, serving each (with Nagle off) in a task of its own,
/// then gives the open ones `limits.drain` to finish and cancels the rest. `serve` gets
/// the client's address too, for servers that limit what one client may hold.
pub(crate) async fn accept_loop<R, F, Fut>(
    listener: R::TcpListener,
    which: impl Display,
    limits: AcceptLimits,
    stop: Stop,
    serve: F,
) where
    R: Runtime,
    F: Fn(R::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Limiter::new(limits.max_connections);
    let mut connections: Vec<Task<R>> = Vec::new();
    loop {
        let accepted = async {
            let slot = slots.acquire().await;
            Some((R::accept(&listener).await, slot))
        }
        .or(async {
            stop.wait().await;
            None
        })
        .await;
        let Some((accepted, slot)) = accepted else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::trace!(%peer, %which, "connection accepted");
                if let Err(err) = R::set_nodelay(&stream) {
                    tracing::debug!(%err, "cannot set TCP_NODELAY");
                }
                connections.retain(|task| !task.is_finished());
                let connection = serve(stream, peer);
                let connection = async move {
                    connection.await;
                    drop(slot);
                };
                connections.push(busy_poll::spawn::<R>(limits.busy_poll, connection));
            }
            Err(err) => {
                tracing::warn!(%err, %which, "accept failed");
                sleep::<R>(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let open = connections.len();
    let drained = timeout::<R, _>(limits.drain, async {
        for connection in &mut connections {
            connection.join().await;
        }
    })
    .await;
    // Dropping the unfinished tasks cancels them.
    if drained.is_none() {
        tracing::debug!(%which, open, "drain timed out; connections cancelled");
    }
}
