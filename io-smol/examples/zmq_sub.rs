//! Prints every message published on the `pub_zmq_test` channel over ZeroMQ (see the
//! `zmq_pub` example).
//!
//! `cargo run -p grenache-smol --example zmq_sub [GRAPE_URL]`; stop it with Ctrl-C.
#![allow(clippy::print_stdout)]

use grenache_smol::peer::{PeerClient, PeerConfig, PubSubTransport, SubEvent, WsMessage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let grape = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:30001".into());

    smol::block_on(async {
        // Subscriptions have their own transport setting; RPC stays as it is.
        let config = PeerConfig::new(grape).pubsub_transport(PubSubTransport::Zmq);
        let client = PeerClient::new(config)?;
        let mut sub = client.subscribe("pub_zmq_test").await?;
        while let Some(event) = sub.next_event().await {
            match event {
                SubEvent::Subscribed(publisher) => println!("connected to {publisher}"),
                SubEvent::Message(WsMessage::Text(text)) => println!("{text}"),
                SubEvent::Message(WsMessage::Binary(bytes)) => println!("{} bytes", bytes.len()),
                SubEvent::Disconnected { error, .. } => println!("disconnected: {error}"),
                _ => {}
            }
        }
        Ok(())
    })
}
