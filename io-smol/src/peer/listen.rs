//! What the RPC server and the publisher share: binding, the accept loop, and the names
//! they announce.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_lite::FutureExt as _;

use super::client::PeerClient;
use super::error::{PeerError, ServerError};
use super::rt::{self, Limiter, Task, TcpListener, TcpStream};
use crate::stop::Stop;
use crate::time::{sleep, timeout};

/// Pause after a failed `accept` (typically out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Names announced on a schedule, at most, per server.
const MAX_ANNOUNCED: usize = 1024;

/// Binds `addr` and reads back the real address (the port, when 0 was asked for).
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = rt::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(ServerError::LocalAddr)?;
    Ok((listener, local))
}

/// Accepts connections until `stop`, at most `max_connections` open at once, then gives
/// the open ones `drain` to finish and cancels the rest.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    stop: Stop,
    drain: Duration,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Limiter::new(max_connections);
    let mut connections: Vec<Task> = Vec::new();
    loop {
        let accepted = async {
            let slot = slots.acquire().await;
            Some((rt::accept(&listener).await, slot))
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
                tracing::trace!(%peer, "peer connection accepted");
                connections.retain(|task| !task.is_finished());
                let connection = serve(stream);
                connections.push(rt::spawn_task(async move {
                    connection.await;
                    drop(slot);
                }));
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    let open = connections.len();
    let drained = timeout(drain, async {
        for connection in &mut connections {
            connection.join().await;
        }
    })
    .await;
    if drained.is_none() {
        tracing::debug!(open, "drain timed out; connections cancelled");
    }
}

/// The names a server announces, so stopping (or dropping) it stops announcing them.
#[derive(Debug, Default)]
pub(crate) struct Announced(Mutex<Vec<(PeerClient, String)>>);

impl Announced {
    /// Starts announcing `name` on `port` through `client`, returning the first round's
    /// outcome; the schedule is remembered either way (it retries after a failure).
    pub(crate) async fn add(
        &self,
        client: &PeerClient,
        name: &str,
        port: u16,
    ) -> Result<(), PeerError> {
        {
            let mut names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if names.len() >= MAX_ANNOUNCED {
                return Err(PeerError::Refused(
                    grenache_core::peer::CommandError::TooManyAnnounces,
                ));
            }
            names.push((client.clone(), name.to_owned()));
        }
        client.start_announcing(name, port).await
    }

    /// Stops every schedule and unannounces every name, waiting for each Grape's answer,
    /// so lookups stop finding the port before it closes. A failed unannounce is only
    /// logged: the peer then lives on until the Grapes' peer lifetime ends.
    pub(crate) async fn stop_all(&self, port: u16) {
        let names = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for (client, name) in names {
            if let Err(err) = client.unannounce(&name, port).await {
                tracing::warn!(name, port, %err, "unannounce failed; the peer expires later");
            }
        }
    }

    /// Stops every schedule and queues the unannounces without waiting (for `Drop`).
    pub(crate) fn stop_all_now(&self, port: u16) {
        let names = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for (client, name) in names {
            client.unannounce_now(&name, port);
        }
    }
}

/// Writes what a ZeroMQ connection has to say (nothing when empty); `false` if the socket
/// broke.
pub(crate) async fn write_zmq(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    match rt::write_all(stream, bytes).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%err, "ZeroMQ write failed");
            false
        }
    }
}
