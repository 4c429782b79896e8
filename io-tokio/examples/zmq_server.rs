//! An RPC service over ZeroMQ: answers `{ "hello": name }` with a greeting, as
//! `rpc_zmq_test` (the `rpc_server_tokio` example over a ROUTER socket instead of HTTP;
//! the frames are in docs/zeromq-wire.md).
//!
//! Start a Grape first (`cargo run -p grenache-grape -- --dp 20001 --aph 30001 --bn ''`),
//! then: `cargo run -p grenache-tokio --example zmq_server_tokio [GRAPE_URL]`.
//! Stop it with Ctrl-C; the Grape forgets it two minutes later.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use grenache_tokio::peer::{PeerClient, PeerConfig, RpcServer, RpcServerConfig, RpcTransport};
use serde_json::{Value, json};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let grape = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:30001".into());

    let client = PeerClient::new(PeerConfig::new(grape))?;
    let handler = |_key: String, payload: Value| async move {
        match payload.get("hello").and_then(Value::as_str) {
            Some(name) => Ok(json!(format!("hello, {name}!"))),
            None => Err("ERR_BAD_REQUEST: expected {\"hello\": name}".to_string()),
        }
    };
    // The one line that differs from an HTTP server: the transport.
    let config = RpcServerConfig::new(RpcTransport::Zmq);
    let server = RpcServer::start(&client, "rpc_zmq_test", config, handler).await?;
    println!("rpc_zmq_test served over ZeroMQ on port {}", server.port());
    // What the server refused: unreadable requests, peers that broke ZMTP.
    let mut seen = server.stats();
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let stats = server.stats();
        if stats != seen {
            println!("{stats:?}");
            seen = stats;
        }
    }
}
