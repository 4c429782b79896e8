//! `grenache-proxy`: serves Grenache services on one transport and calls them on another.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use grenache_io::{Runtime, RuntimeKind, Signalled};
use grenache_proxy::config::busy_poll_window;
use grenache_proxy::{FanOut, Proxy, Route, Settings};
use grenache_smol::Smol;
use grenache_tokio::Tokio;

/// Every request through the proxy allocates and frees many small buffers; with glibc's
/// malloc that was 17% of its CPU, and mimalloc cut its CPU per request by about a tenth.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "\
Examples:
  # A Node grenache-nodejs-ws client calls `echo` on our ZeroMQ server `echo_zmq`:
  grenache-proxy --grape http://127.0.0.1:30001 --rpc 'echo@ws=echo_zmq@zmq'

  # The same on a fixed port, plus a route that asks every `worker` peer at once:
  grenache-proxy --rpc 'echo@ws:8080=echo_zmq@zmq' --rpc-map 'workers@http=worker@ws'

  # Republish what a Node ws publisher sends on `ticks_ws` to ZeroMQ subscribers of `ticks`:
  grenache-proxy --pubsub 'ticks@zmq=ticks_ws@ws'

  # Plain HTTP for curl and browsers: POST /rpc/NAME with a JSON body calls NAME:
  grenache-proxy --gateway 8088 --rpc 'echo@ws=echo_zmq@zmq'
  curl -d '{\"x\":1}' 'http://127.0.0.1:8088/rpc/echo_zmq?via=zmq'
  curl -N http://127.0.0.1:8088/sub/ticks_ws      # a service's publications as events
  curl http://127.0.0.1:8088/metrics              # the proxy's counters (Prometheus)

  # Routes from a file (flags add to it and win over its settings):
  grenache-proxy --config proxy.toml

proxy.toml:
  grape = \"http://127.0.0.1:30001\"
  bind = \"0.0.0.0\"
  timeout_ms = 10000          # a call's timeout, unless its route sets one
  lookup_cache_ms = 2000      # how long a lookup of a TARGET is reused
  threads = 1                 # tokio worker threads (default 1: least CPU per request)
  client_shards = 1           # driver tasks per outgoing client (default: one per thread)
  connections_per_peer = 64   # HTTP connections to one TARGET peer at once (default 64)
  busy_poll_us = 0            # poll this long after each wake-up instead of sleeping (0: off)
  gateway = 8088              # the plain HTTP gateway's port
  gateway_max_body = 1048576  # bytes; a longer body gets 413
  gateway_max_connections = 1024
  gateway_cors = \"https://app.example.com\"   # or \"*\": browsers on it may call the gateway
  gateway_keep_alive_ms = 15000   # a quiet event stream gets a comment line this often

  [[rpc]]
  route = \"echo@ws:8080=echo_zmq@zmq\"

  [[rpc]]
  route = \"workers@http=worker@ws\"
  map = true                  # ask every `worker` peer; reply with all their results
  timeout_ms = 2000

  [[pubsub]]
  route = \"ticks@zmq=ticks_ws@ws\"

A route NAME@FROM[:PORT]=TARGET@TO serves and announces NAME over FROM (http, ws or zmq)
and calls TARGET, found through the Grape, over TO. TARGET's errors come back unchanged;
the proxy's own start with ERR_PROXY. RUST_LOG sets the log level (default info).";

/// Serves Grenache services on one transport and calls them on another.
#[derive(Debug, Parser)]
#[command(name = "grenache-proxy", version, after_help = EXAMPLES)]
struct Cli {
    /// The Grape's HTTP API [default: http://127.0.0.1:30001]
    #[arg(long, value_name = "URL")]
    grape: Option<String>,
    /// An RPC route: one TARGET peer per request, round robin.
    #[arg(long = "rpc", value_name = "NAME@FROM[:PORT]=TARGET@TO")]
    rpc: Vec<Route>,
    /// An RPC route that asks every TARGET peer (map) and replies with their results.
    #[arg(long = "rpc-map", value_name = "NAME@FROM[:PORT]=TARGET@TO")]
    rpc_map: Vec<Route>,
    /// A PUB/SUB route (ws or zmq): subscribe to TARGET, publish as NAME while anyone listens.
    #[arg(long = "pubsub", value_name = "NAME@FROM[:PORT]=TARGET@TO")]
    pubsub: Vec<Route>,
    /// Serve the plain HTTP gateway on this port: `POST /rpc/NAME` with a JSON body.
    #[arg(long, value_name = "PORT")]
    gateway: Option<u16>,
    /// The gateway refuses a longer request body (413) [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    gateway_max_body: Option<usize>,
    /// The gateway's open connections at most [default: 1024]
    #[arg(long, value_name = "N")]
    gateway_max_connections: Option<usize>,
    /// Let browsers on this origin call the gateway (CORS): `*` or scheme://host[:port]
    #[arg(long, value_name = "ORIGIN")]
    gateway_cors: Option<grenache_io::CorsOrigin>,
    /// A TOML file of settings and routes (see below).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address the routes listen on [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    bind: Option<IpAddr>,
    /// A call's timeout in milliseconds, unless its route sets one [default: 10000]
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// How long a lookup of a TARGET is reused, in milliseconds [default: 2000]
    #[arg(long, value_name = "MS")]
    lookup_cache_ms: Option<u64>,
    /// Driver tasks of each outgoing client, so calls spread over that many cores
    /// [default: one per thread]
    #[arg(long, value_name = "N")]
    client_shards: Option<usize>,
    /// HTTP connections of each outgoing client to one TARGET peer at once; more calls
    /// wait for one [default: 64]
    #[arg(long, value_name = "N")]
    connections_per_peer: Option<usize>,
    /// Each connection keeps its thread polling this many microseconds after a wake-up
    /// instead of sleeping: lower latency at few calls in flight, on cores the proxy does
    /// not share, for up to that much CPU per wake-up [default: 0, off]
    #[arg(long, value_name = "US")]
    busy_poll_us: Option<u64>,
    /// The async runtime to run on: smol or tokio (the default, as the Grape's: its reactor
    /// serves an HTTP request in fewer system calls).
    #[arg(long, value_name = "RUNTIME", default_value_t = RuntimeKind::Tokio)]
    runtime: RuntimeKind,
    /// Tokio worker threads (at most the cores the process may use). One thread costs up to
    /// half the CPU per request of two; give more when the proxy's traffic needs more than a
    /// core [default: 1]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

impl Cli {
    /// The settings: flags over the file over the defaults; routes from both.
    fn settings(self) -> Result<Settings, String> {
        let mut settings = Settings::default();
        if let Some(grape) = self.grape {
            settings.grape = grape;
        }
        if let Some(bind) = self.bind {
            settings.bind = bind;
        }
        if let Some(ms) = self.timeout_ms {
            settings.timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.lookup_cache_ms {
            settings.lookup_cache = Duration::from_millis(ms);
        }
        if let Some(n) = self.threads {
            settings.threads = n.max(1);
        }
        settings.client_shards = self.client_shards.map(|n| n.max(1));
        settings.connections_per_peer = self.connections_per_peer.map(|n| n.max(1));
        settings.busy_poll = self.busy_poll_us.and_then(busy_poll_window);
        settings.rpc = self.rpc;
        settings
            .rpc
            .extend(self.rpc_map.into_iter().map(|mut route| {
                route.fan_out = FanOut::Map;
                route
            }));
        settings.pubsub = self.pubsub;
        settings.gateway = self.gateway;
        let limits = &mut settings.gateway_limits;
        if let Some(n) = self.gateway_max_body {
            limits.max_body = n;
        }
        if let Some(n) = self.gateway_max_connections {
            limits.max_connections = n;
        }
        limits.cors = self.gateway_cors;
        if let Some(path) = self.config {
            settings = settings.read_file(&path).map_err(|e| e.to_string())?;
        }
        if settings.rpc.is_empty() && settings.pubsub.is_empty() && settings.gateway.is_none() {
            return Err(
                "no routes: give --rpc, --rpc-map, --pubsub, --gateway or --config (see --help)"
                    .into(),
            );
        }
        Ok(settings)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    grenache_io::init_logging();
    let runtime = cli.runtime;
    let result = cli.settings().and_then(|settings| match runtime {
        RuntimeKind::Smol => {
            grenache_smol::run_until_signal(|signal| serve::<Smol>(settings, signal))
        }
        RuntimeKind::Tokio if settings.threads <= 1 => {
            grenache_tokio::run_on_one_thread_until_signal(|signal| {
                serve::<Tokio>(settings, signal)
            })
        }
        RuntimeKind::Tokio => {
            let threads = settings.threads;
            grenache_tokio::run_until_signal(threads, |signal| serve::<Tokio>(settings, signal))
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the routes until `signal`, then unannounces them and stops.
async fn serve<R: Runtime>(settings: Settings, signal: Signalled) -> Result<(), String> {
    let proxy = Proxy::<R>::start(&settings)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        grape = settings.grape,
        routes = settings.rpc.len(),
        "proxy started"
    );
    let signal = signal.await;
    tracing::info!(signal, "stopping");
    proxy.stop().await;
    Ok(())
}
