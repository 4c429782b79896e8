//! An RPC service: answers `{ "hello": name }` with a greeting, as `rpc_test` over HTTP or
//! as `rpc_ws_test` over WebSocket (one name per transport: a client only speaks one).
//!
//! Start a Grape first (`cargo run -p grenache-grape -- --dp 20001 --aph 30001 --bn ''`),
//! then: `cargo run -p grenache-smol --example rpc_server [http|ws] [GRAPE_URL]`.
//! Stop it with Ctrl-C: it unannounces itself, so lookups stop listing it at once.
#![allow(clippy::print_stdout)]

use async_signal::{Signal, Signals};
use grenache_smol::peer::{PeerClient, PeerConfig, RpcServer, RpcServerConfig, RpcTransport};
use serde_json::{Value, json};
use smol::stream::StreamExt as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let mut args = std::env::args().skip(1);
    let (transport, service) = match args.next().as_deref() {
        Some("ws") => (RpcTransport::Ws, "rpc_ws_test"),
        _ => (RpcTransport::Http, "rpc_test"),
    };
    let grape = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:30001".into());

    smol::block_on(async {
        let client = PeerClient::new(PeerConfig::new(grape))?;
        let handler = |_key: String, payload: Value| async move {
            match payload.get("hello").and_then(Value::as_str) {
                Some(name) => Ok(json!(format!("hello, {name}!"))),
                None => Err("ERR_BAD_REQUEST: expected {\"hello\": name}".to_string()),
            }
        };
        let config = RpcServerConfig::new(transport);
        let server = RpcServer::start(&client, service, config, handler).await?;
        println!(
            "{service} served over {transport:?} on port {}",
            server.port()
        );
        // Registered before we wait, so a Ctrl-C now is not lost to the default handler.
        let mut signals = Signals::new([Signal::Int, Signal::Term])?;
        signals.next().await;
        // Unannounces, then closes the port.
        server.stop().await;
        Ok(())
    })
}
