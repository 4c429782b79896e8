//! What the RPC server and the publisher share: binding, the names they announce, and
//! ZeroMQ writes. (Their accept loop is the Grape's too: `crate::listen`.)

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use super::client::PeerClient;
use super::error::{PeerError, ServerError};
use crate::net::bind_std;
use crate::runtime::Runtime;

/// Names announced on a schedule, at most, per server.
const MAX_ANNOUNCED: usize = 1024;

/// Binds `addr` and reads back the real address (the port, when 0 was asked for).
pub(crate) fn bind<R: Runtime>(
    addr: SocketAddr,
) -> Result<(R::TcpListener, SocketAddr), ServerError> {
    let bind_failed = |source| ServerError::Bind { addr, source };
    let listener = bind_std(addr).map_err(bind_failed)?;
    let local = listener.local_addr().map_err(ServerError::LocalAddr)?;
    Ok((R::listener(listener).map_err(bind_failed)?, local))
}

/// The names a server announces, so stopping (or dropping) it stops announcing them.
#[derive(Debug)]
pub(crate) struct Announced<R: Runtime>(Mutex<Vec<(PeerClient<R>, String)>>);

impl<R: Runtime> Default for Announced<R> {
    fn default() -> Self {
        Announced(Mutex::new(Vec::new()))
    }
}

impl<R: Runtime> Announced<R> {
    /// Starts announcing `name` on `port` through `client`, returning the first round's
    /// outcome; the schedule is remembered either way (it retries after a failure).
    pub(crate) async fn add(
        &self,
        client: &PeerClient<R>,
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
pub(crate) async fn write_zmq<R: Runtime>(stream: &mut R::TcpStream, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    match R::write_all(stream, bytes).await {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%err, "ZeroMQ write failed");
            false
        }
    }
}
