//! The public handle: start a Grape, read its addresses, shut it down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use grenache_core::api::{Grape, Listeners};
use grenache_core::dht::NodeId;

use super::driver::{Counters, Driver};
use super::{ApiContext, http, ws};
use crate::config::ServerConfig;
use crate::error::{Listener, StartError};
use crate::listen::{AcceptLimits, accept_loop};
use crate::runtime::Runtime;
use crate::state::StateSaver;
use crate::stop::{StopTrigger, stop_pair};
use crate::task::Task;
use crate::udp::DhtSocket;

/// A running Grape: DHT node, HTTP API and (optionally) WebSocket API.
///
/// Dropping it cancels every task at once; [`shutdown`](Self::shutdown) stops it cleanly.
#[derive(Debug)]
pub struct GrapeServer<R: Runtime> {
    dht_addr: SocketAddr,
    api_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    node_id: NodeId,
    counters: Arc<Counters>,
    stop_listeners: StopTrigger,
    stop_driver: StopTrigger,
    listeners: Vec<Task<R>>,
    driver: Task<R>,
    /// Tests only: the way to the driver, to hold it ([`GrapeServer::hold_driver`]).
    #[cfg(feature = "testkit")]
    commands: async_channel::Sender<super::driver::Command>,
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

impl<R: Runtime> GrapeServer<R> {
    /// Binds the DHT socket and the API listeners, then starts serving on the runtime (for
    /// tokio: call it from inside one); a non-empty [`ServerConfig::bootstrap`] or
    /// [`ServerConfig::known_nodes`] starts joining the DHT at once.
    ///
    /// # Errors
    /// [`StartError::Bind`] names the socket that could not be bound (a port in use, say);
    /// `?` turns it into an `io::Error` where that is wanted.
    pub async fn start(config: ServerConfig) -> Result<Self, StartError> {
        let (socket, dht_addr) = bind_udp::<R>(
            SocketAddr::new(config.bind, config.dht_port),
            config.udp_batching,
        )?;
        let (api, api_addr) =
            bind_tcp::<R>(Listener::Api, SocketAddr::new(config.bind, config.api_port))?;
        let ws = config
            .ws_port
            .map(|port| bind_tcp::<R>(Listener::Ws, SocketAddr::new(config.bind, port)))
            .transpose()?;
        let ws_addr = ws.as_ref().map(|(_, addr)| *addr);

        let now = R::now();
        let api_limits = config.grape.api_limits.clone();
        let mut grape = Grape::new(config.grape, config.seed, now);
        grape.set_listeners(Listeners {
            dht: Some(dht_addr),
            api: Some(api_addr),
            ws: ws_addr,
        });
        let node_id = grape.node().id();
        let max_payload = grape.max_payload();
        grape.join(now, &config.bootstrap, &config.known_nodes);

        let counters = Arc::new(Counters::default());
        let (commands_tx, commands_rx) = async_channel::bounded(config.limits.command_queue.max(1));
        let (stop_driver, driver_stop) = stop_pair();
        let (stop_listeners, listener_stop) = stop_pair();
        let driver = Driver::<R>::new(
            grape,
            socket,
            commands_rx,
            driver_stop,
            Arc::clone(&counters),
            &config.limits,
            StateSaver::new(config.state_file, now),
        );
        let hot = driver.hot_lookups();
        let driver = Task::spawn(driver.run());

        #[cfg(feature = "testkit")]
        let commands = commands_tx.clone();
        let ctx = Arc::new(ApiContext {
            commands: commands_tx,
            hot,
            max_payload,
            limits: config.limits,
            api_limits,
            stop: listener_stop,
        });
        let accept = AcceptLimits {
            max_connections: ctx.limits.max_connections,
            drain: ctx.limits.drain_timeout,
            busy_poll: None,
        };
        let serve_http = {
            let ctx = Arc::clone(&ctx);
            move |stream, peer| http::serve_connection::<R>(stream, peer, Arc::clone(&ctx))
        };
        let mut listeners = vec![Task::spawn(accept_loop::<R, _, _>(
            api,
            Listener::Api,
            accept.clone(),
            ctx.stop.clone(),
            serve_http,
        ))];
        if let Some((listener, _)) = ws {
            let stop = ctx.stop.clone();
            let serve_ws =
                move |stream, peer| ws::serve_connection::<R>(stream, peer, Arc::clone(&ctx));
            listeners.push(Task::spawn(accept_loop::<R, _, _>(
                listener,
                Listener::Ws,
                accept,
                stop,
                serve_ws,
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
            #[cfg(feature = "testkit")]
            commands,
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

    /// Tests only: stops the driver (the core's task) until the returned sender is dropped,
    /// so a test can tell what is served without it.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub async fn hold_driver(&self) -> async_channel::Sender<()> {
        let (release, until) = async_channel::bounded(1);
        let (held, is_held) = async_channel::bounded(1);
        let asked = self
            .commands
            .send(super::driver::Command::Hold { held, until })
            .await;
        assert!(asked.is_ok(), "the driver runs");
        assert!(is_held.recv().await.is_ok(), "the driver holds");
        release
    }

    /// Stops cleanly: stops accepting, lets open connections finish their requests (up to
    /// [`Limits::drain_timeout`](crate::Limits::drain_timeout)), then stops the DHT node and
    /// closes its socket.
    pub async fn shutdown(mut self) {
        self.stop_listeners.fire();
        for listener in &mut self.listeners {
            listener.join().await;
        }
        // Only now: draining connections still need the driver to answer them.
        self.stop_driver.fire();
        self.driver.join().await;
    }
}

/// Binds the DHT socket (with the buffer sizes of [`crate::udp`]) and reads back its address.
fn bind_udp<R: Runtime>(
    addr: SocketAddr,
    batching: bool,
) -> Result<(DhtSocket<R>, SocketAddr), StartError> {
    let bind_failed = |source| StartError::Bind {
        listener: Listener::Dht,
        addr,
        source,
    };
    let socket = crate::udp::bind_dht(addr).map_err(bind_failed)?;
    let local = local_addr(Listener::Dht, socket.local_addr())?;
    Ok((
        DhtSocket::new(socket, batching).map_err(bind_failed)?,
        local,
    ))
}

/// Binds an API listener and reads back its address.
fn bind_tcp<R: Runtime>(
    listener: Listener,
    addr: SocketAddr,
) -> Result<(R::TcpListener, SocketAddr), StartError> {
    let bind_failed = |source| StartError::Bind {
        listener,
        addr,
        source,
    };
    let std_listener = crate::net::bind_std(addr).map_err(bind_failed)?;
    let local = local_addr(listener, std_listener.local_addr())?;
    Ok((R::listener(std_listener).map_err(bind_failed)?, local))
}

fn local_addr(
    listener: Listener,
    addr: std::io::Result<SocketAddr>,
) -> Result<SocketAddr, StartError> {
    addr.map_err(|source| StartError::LocalAddr { listener, source })
}
