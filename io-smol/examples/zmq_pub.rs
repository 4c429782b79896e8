//! Publishes the time on the `pub_zmq_test` channel every second, over a ZeroMQ PUB socket
//! (one frame per message).
//!
//! `cargo run -p grenache-smol --example zmq_pub [GRAPE_URL]`; stop it with Ctrl-C.
#![allow(clippy::print_stdout)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grenache_smol::peer::{PeerClient, PeerConfig, PubSubTransport, Publisher, PublisherConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let grape = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:30001".into());

    smol::block_on(async {
        let client = PeerClient::new(PeerConfig::new(grape))?;
        let config = PublisherConfig::new().transport(PubSubTransport::Zmq);
        let publisher = Publisher::start(&client, "pub_zmq_test", config).await?;
        println!("pub_zmq_test published on port {}", publisher.port());
        loop {
            let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let sent = publisher.publish_text(format!("the time is {secs}"))?;
            println!("sent to {sent} subscriber(s)");
            smol::Timer::after(Duration::from_secs(1)).await;
        }
    })
}
