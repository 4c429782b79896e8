//! `grape`: a Grenache discovery node (DHT plus Grape HTTP API), a drop-in for the Node.js
//! `grape` command. See `grape --help` for the flags.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use grenache_core::dht::NodeId;

use grenache_io::RuntimeKind;

use crate::cli::{Args, is_built_in};
use crate::settings::Settings;

mod cli;
mod run;
#[cfg(feature = "smol")]
mod run_smol;
#[cfg(feature = "tokio")]
mod run_tokio;
mod settings;

#[cfg(not(any(feature = "smol", feature = "tokio")))]
compile_error!("grenache-grape needs the `smol` or the `tokio` feature (or both)");

/// How long a clean shutdown may take after SIGINT or SIGTERM before the process exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(900);

fn main() -> ExitCode {
    let args = Args::parse();
    grenache_io::init_logging();
    if !is_built_in(args.runtime) {
        let other = args.runtime.other();
        eprintln!(
            "grape: --runtime {0}: this build has no {0} runtime (built without the `{0}` Cargo feature); use --runtime {1}",
            args.runtime.name(),
            other.name()
        );
        return ExitCode::from(2);
    }
    let result = Settings::from_args(&args).and_then(|settings| run(args.runtime, settings));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("grape: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the Grape on the chosen runtime until SIGINT or SIGTERM.
fn run(runtime: RuntimeKind, settings: Settings) -> Result<(), String> {
    match runtime {
        #[cfg(feature = "smol")]
        RuntimeKind::Smol => run_smol::run(settings),
        #[cfg(feature = "tokio")]
        RuntimeKind::Tokio => run_tokio::run(settings),
        // Checked in `main`; kept so a one-runtime build still compiles.
        #[allow(unreachable_patterns)]
        other => Err(format!("no {} runtime in this build", other.name())),
    }
}

/// The one line that says the Grape is up and where.
fn log_started(dht: SocketAddr, api: SocketAddr, ws: Option<SocketAddr>, node_id: NodeId) {
    let ws = ws.map_or_else(|| "off".to_owned(), |addr| format!("ws://{addr}"));
    tracing::info!(
        "grape started: DHT udp://{dht}, API http://{api}, WebSocket API {ws}, node id {node_id}"
    );
}

/// A one-line reason why a socket could not be bound, naming the flag that sets its port.
fn bind_failure(flag: &str, what: &str, addr: SocketAddr, source: &io::Error) -> String {
    if source.kind() == io::ErrorKind::AddrInUse {
        format!(
            "port {} ({what}, set with {flag}) is already in use on {}",
            addr.port(),
            addr.ip()
        )
    } else {
        format!("cannot listen on {addr} ({what}, set with {flag}): {source}")
    }
}
