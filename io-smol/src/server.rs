//! The public handle: start a Grape, read its addresses, shut it down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use grenache_core::api::Grape;
use grenache_core::id::NodeId;
use smol::Task;
use smol::net::{TcpListener, UdpSocket};

use crate::config::ServerConfig;
use crate::driver::{Counters, Driver};
use crate::error::{Listener, StartError};
use crate::listen::{ApiContext, accept_loop};
use crate::state::StateSaver;
use crate::stop::{StopTrigger, stop_pair};
use crate::time::now;
use crate::{http, ws};

/// A running Grape: DHT node, HTTP API and (optionally) WebSocket API.
///
/// Dropping it cancels every task at once; [`shutdown`](Self::shutdown) stops it cleanly.
#[derive(Debug)]
pub struct GrapeServer {
    dht_addr: SocketAddr,
    api_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    node_id: NodeId,
    counters: Arc<Counters>,
    stop_listeners: StopTrigger,
    stop_driver: StopTrigger,
    listeners: Vec<Task<()>>,
    driver: Task<()>,
}

/// Counts of I/O trouble since start; none of it stops the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Datagrams the OS refused to send (logged, then dropped).
    pub send_errors: u64,
    /// Failed reads on the DHT socket (logged, then the loop goes on).
    pub recv_errors: u64,
    /// API requests refused because too many were waiting for the core.
    pub rejected: u64,
}

impl GrapeServer {
    /// Binds the DHT socket and the API listeners, then starts serving on smol's global
    /// executor; a non-empty [`ServerConfig::bootstrap`] or [`ServerConfig::known_nodes`]
    /// starts joining the DHT at once.
    ///
    /// # Errors
    /// [`StartError::Bind`] names the socket that could not be bound (a port in use, say);
    /// `?` turns it into an `io::Error` where that is wanted.
    pub async fn start(config: ServerConfig) -> Result<Self, StartError> {
        let socket = bind_udp(SocketAddr::new(config.bind, config.dht_port))?;
        let dht_addr = local_addr(Listener::Dht, socket.local_addr())?;
        let api = bind_tcp(Listener::Api, SocketAddr::new(config.bind, config.api_port)).await?;
        let api_addr = local_addr(Listener::Api, api.local_addr())?;
        let ws = match config.ws_port {
            Some(port) => {
                let listener = bind_tcp(Listener::Ws, SocketAddr::new(config.bind, port)).await?;
                let addr = local_addr(Listener::Ws, listener.local_addr())?;
                Some((listener, addr))
            }
            None => None,
        };
        let ws_addr = ws.as_ref().map(|(_, addr)| *addr);

        let now = now();
        let mut grape = Grape::new(config.grape, config.seed, now);
        let node_id = grape.node().id();
        let max_payload = grape.max_payload();
        grape.join(now, &config.bootstrap, &config.known_nodes);

        let counters = Arc::new(Counters::default());
        let (commands_tx, commands_rx) = async_channel::bounded(config.limits.command_queue.max(1));
        let (stop_driver, driver_stop) = stop_pair();
        let (stop_listeners, listener_stop) = stop_pair();
        let driver = Driver::new(
            grape,
            socket,
            commands_rx,
            driver_stop,
            Arc::clone(&counters),
            config.limits.max_pending(),
            StateSaver::new(config.state_file, now),
        );
        let driver = smol::spawn(driver.run());

        let ctx = Arc::new(ApiContext {
            commands: commands_tx,
            max_payload,
            limits: config.limits,
            stop: listener_stop,
        });
        let mut listeners = vec![smol::spawn(accept_loop(
            api,
            Listener::Api,
            Arc::clone(&ctx),
            http::serve_connection,
        ))];
        if let Some((listener, _)) = ws {
            listeners.push(smol::spawn(accept_loop(
                listener,
                Listener::Ws,
                ctx,
                ws::serve_connection,
            )));
        }
        Ok(Self {
            dht_addr,
            api_addr,
            ws_addr,
            node_id,
            counters,
            stop_listeners,
            stop_driver,
            listeners,
            driver,
        })
    }

    /// The DHT's UDP address (with the real port when 0 was asked for).
    #[must_use]
    pub fn local_dht_addr(&self) -> SocketAddr {
        self.dht_addr
    }

    /// The HTTP API's address (with the real port when 0 was asked for).
    #[must_use]
    pub fn local_api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The WebSocket API's address, if it was asked for.
    #[must_use]
    pub fn local_ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The DHT node's id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Counts of I/O trouble so far.
    #[must_use]
    pub fn io_stats(&self) -> IoStats {
        IoStats {
            send_errors: self.counters.send_errors.load(Ordering::Relaxed),
            recv_errors: self.counters.recv_errors.load(Ordering::Relaxed),
            rejected: self.counters.rejected.load(Ordering::Relaxed),
        }
    }

    /// Stops cleanly: stops accepting, lets open connections finish their requests (up to
    /// [`Limits::drain_timeout`](crate::Limits::drain_timeout)), then stops the DHT node and
    /// closes its socket.
    pub async fn shutdown(mut self) {
        self.stop_listeners.fire();
        for listener in std::mem::take(&mut self.listeners) {
            listener.await;
        }
        // Only now: draining connections still need the driver to answer them.
        self.stop_driver.fire();
        self.driver.await;
    }
}

fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, StartError> {
    crate::udp::bind_dht(addr)
        .and_then(UdpSocket::try_from)
        .map_err(|source| StartError::Bind {
            listener: Listener::Dht,
            addr,
            source,
        })
}

async fn bind_tcp(listener: Listener, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(
    listener: Listener,
    addr: std::io::Result<SocketAddr>,
) -> Result<SocketAddr, StartError> {
    addr.map_err(|source| StartError::LocalAddr { listener, source })
}
