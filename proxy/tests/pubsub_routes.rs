//! The proxy's PUB/SUB routes on loopback: our WebSocket publisher, the proxy, our
//! ZeroMQ subscriber.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures_lite::FutureExt as _;
use grenache_proxy::{Proxy, RelayStats, Settings};
use grenache_smol::peer::{
    PeerClient, PeerConfig, PubSubTransport, Publisher, PublisherConfig, Subscription, WsMessage,
};
use grenache_smol::{GrapeServer, ServerConfig, Smol};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PATIENCE: Duration = Duration::from_secs(10);

async fn grape() -> GrapeServer {
    let mut config = ServerConfig::new([34; 32]);
    config.bind = LOCALHOST;
    config.dht_port = 0;
    config.api_port = 0;
    GrapeServer::start(config).await.expect("start a Grape")
}

fn client(grape: &GrapeServer, transport: PubSubTransport) -> PeerClient {
    let config =
        PeerConfig::new(format!("http://{}", grape.local_api_addr())).pubsub_transport(transport);
    PeerClient::new(config).expect("client")
}

async fn publisher(client: &PeerClient, channel: &str) -> Publisher {
    let config = PublisherConfig::new()
        .transport(PubSubTransport::Ws)
        .listen_on(LOCALHOST, 0);
    Publisher::start(client, channel, config)
        .await
        .expect("publisher")
}

/// Publishes `text` every 20 ms until a message reaches `sub`; that message, or `None`.
async fn first_through(
    publisher: &Publisher,
    sub: &mut Subscription,
    text: &str,
) -> Option<WsMessage> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let _ = publisher.publish_text(text);
        let got = async { sub.next_message().await }
            .or(async {
                smol::Timer::after(Duration::from_millis(20)).await;
                None
            })
            .await;
        if got.is_some() {
            return got;
        }
    }
    None
}

/// Waits until the proxy's only relay's counters pass `check`.
async fn relay_until(proxy: &Proxy<Smol>, check: impl Fn(RelayStats) -> bool) -> RelayStats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = proxy.relays()[0].2;
        if check(stats) || Instant::now() > deadline {
            return stats;
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_zmq_subscriber_gets_a_ws_publisher_through_the_proxy_while_it_listens() {
    smol::block_on(async {
        // Arrange
        let grape = grape().await;
        let ws = client(&grape, PubSubTransport::Ws);
        let first = publisher(&ws, "ticks_ws").await;
        let settings = Settings {
            grape: format!("http://{}", grape.local_api_addr()),
            bind: LOCALHOST,
            lookup_cache: Duration::from_millis(100),
            pubsub: vec!["ticks@zmq=ticks_ws@ws".parse().expect("route")],
            ..Settings::default()
        };
        let proxy = Proxy::<Smol>::start(&settings).await.expect("proxy");
        let idle = proxy.relays()[0].2;
        let zmq = client(&grape, PubSubTransport::Zmq);
        let mut sub = zmq.subscribe("ticks").await.expect("subscribe");

        // Act: a message through; the publisher goes and another comes; the listener goes.
        let got = first_through(&first, &mut sub, "one").await;
        first.stop().await;
        let second = publisher(&ws, "ticks_ws").await;
        let again = first_through(&second, &mut sub, "two").await;
        drop(sub);
        let after = relay_until(&proxy, |s| s.unsubscribed == 1).await;

        // Assert
        assert_eq!(
            idle.subscribed, 0,
            "nobody listened yet, so no subscription"
        );
        assert_eq!(got, Some(WsMessage::Text("one".into())));
        assert_eq!(again, Some(WsMessage::Text("two".into())));
        assert_eq!((after.subscribed, after.unsubscribed), (1, 1));
        assert!(after.relayed >= 2);
        proxy.stop().await;
        second.stop().await;
        grape.shutdown().await;
    });
}
