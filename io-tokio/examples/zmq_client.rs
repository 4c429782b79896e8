//! Calls the service of the `zmq_server_tokio` example (`rpc_zmq_test` over ZeroMQ) twice:
//! once with a name, printing the greeting, and once without, printing the service's error.
//!
//! `cargo run -p grenache-tokio --example zmq_client_tokio [NAME] [GRAPE_URL]`
#![allow(clippy::print_stdout)]

use std::time::Duration;

use grenache_tokio::peer::{PeerClient, PeerConfig, RequestOptions, RpcTransport};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "world".into());
    let grape = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:30001".into());

    // The one line that differs from an HTTP client: the transport.
    let config = PeerConfig::new(grape).transport(RpcTransport::Zmq);
    let client = PeerClient::new(config)?;
    let opts = RequestOptions::default()
        .timeout(Duration::from_secs(10))
        .attempts(3);
    let reply = client
        .request("rpc_zmq_test", json!({ "hello": name }), opts.clone())
        .await?;
    println!("{reply}");
    // The service's Err(message) arrives as the same error as over HTTP.
    match client.request("rpc_zmq_test", json!({}), opts).await {
        Ok(reply) => println!("unexpected: {reply}"),
        Err(err) => println!("error: {err}"),
    }
    Ok(())
}
