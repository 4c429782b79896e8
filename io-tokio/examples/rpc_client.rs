//! Calls the service of the `rpc_server_tokio` example once (`rpc_test` over HTTP, `rpc_ws_test`
//! over WebSocket) and prints the reply.
//!
//! `cargo run -p grenache-tokio --example rpc_client_tokio [http|ws] [NAME] [GRAPE_URL]`
#![allow(clippy::print_stdout)]

use std::time::Duration;

use grenache_tokio::peer::{PeerClient, PeerConfig, RequestOptions, RpcTransport};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let mut args = std::env::args().skip(1);
    let (transport, service) = match args.next().as_deref() {
        Some("ws") => (RpcTransport::Ws, "rpc_ws_test"),
        _ => (RpcTransport::Http, "rpc_test"),
    };
    let name = args.next().unwrap_or_else(|| "world".into());
    let grape = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:30001".into());

    let client = PeerClient::new(PeerConfig::new(grape).transport(transport))?;
    // Up to three tries, each to the next peer: a server that went away without waiting
    // for the Grape to forget it costs one try, not the call.
    let opts = RequestOptions::default()
        .timeout(Duration::from_secs(10))
        .attempts(3);
    let reply = client
        .request(service, json!({ "hello": name }), opts)
        .await?;
    println!("{reply}");
    Ok(())
}
