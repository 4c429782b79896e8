//! CURVE on our ZeroMQ RPC server and publisher, end to end over loopback, with our own
//! clients: the handshake, the client key the handler sees, the allow-list, and each
//! mismatch failing typed at once on the side that sees it.
//! And heartbeats both ways: a server dropping a silent client, a client giving up on a
//! silent server.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use grenache_core::peer::{PubSubTransport, RequestOptions, RpcError, RpcTransport, WsMessage};
use serde_json::{Value, json};

use super::local_config;
use crate::peer::{
    CurveClientConfig, CurveFailure, CurveKeyPair, CurveServerConfig, PeerClient, PeerConfig,
    PeerError, Publisher, PublisherConfig, RequestContext, RpcServer, RpcServerConfig,
    Subscription,
};
use crate::time::{sleep, timeout};
use crate::{GrapeServer, Runtime};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Far longer than a failure takes: a client that waited would end in `ERR_TIMEOUT`.
const PATIENCE: Duration = Duration::from_secs(30);

/// Answers with the caller's CURVE key.
async fn whoami(_key: String, _payload: Value, context: RequestContext) -> Result<Value, String> {
    Ok(json!(context.curve_client.map(|k| k.to_z85())))
}

fn client<R: Runtime>(grape: &GrapeServer<R>, curve: Option<CurveClientConfig>) -> PeerClient<R> {
    let mut config = PeerConfig::new(format!("http://{}", grape.local_api_addr()))
        .transport(RpcTransport::Zmq)
        .pubsub_transport(PubSubTransport::Zmq);
    if let Some(curve) = curve {
        config = config.curve(curve);
    }
    PeerClient::new(config).expect("client")
}

/// Publishes `text` every 100 ms until `sub` hears a message, for 10 s at most (a
/// subscriber only hears what is published after its handshake).
async fn publish_until_heard<R: Runtime>(
    publisher: &Publisher<R>,
    sub: &mut Subscription,
    text: &str,
) -> Option<WsMessage> {
    timeout::<R, _>(Duration::from_secs(10), async {
        loop {
            publisher.publish_text(text).expect("publish");
            if let Some(Some(msg)) =
                timeout::<R, _>(Duration::from_millis(100), sub.next_message()).await
            {
                break msg;
            }
        }
    })
    .await
}

/// See the test of this name in each runtime's crate.
pub async fn curve_rpc_and_pubsub_with_allow_list_and_typed_mismatches<R: Runtime>() {
    // Arrange: a CURVE ROUTER that lets in only alice, a CURVE publisher, a Grape.
    let server_keys = CurveKeyPair::from_secret([1; 32]);
    let alice = CurveKeyPair::from_secret([2; 32]);
    let mallory = CurveKeyPair::from_secret([3; 32]);
    let server_curve = CurveServerConfig::new(server_keys.clone()).allow([alice.public()]);
    let grape = GrapeServer::<R>::start(local_config(40))
        .await
        .expect("grape");
    let rpc_config = RpcServerConfig::new(RpcTransport::Zmq)
        .listen_on(LOCALHOST, 0)
        .curve(server_curve);
    let rpc = RpcServer::<R>::listen_with_context(rpc_config, whoami)
        .await
        .expect("listen");
    let publisher = Publisher::<R>::listen(
        PublisherConfig::new()
            .transport(PubSubTransport::Zmq)
            .listen_on(LOCALHOST, 0)
            .curve(CurveServerConfig::new(server_keys.clone())),
    )
    .await
    .expect("publisher");
    let alice_client = client::<R>(
        &grape,
        Some(CurveClientConfig::new(alice.clone(), server_keys.public())),
    );
    rpc.announce(&alice_client, "curve_rpc")
        .await
        .expect("announce");
    publisher
        .announce(&alice_client, "curve_pub")
        .await
        .expect("announce");
    let opts = RequestOptions::default().timeout(PATIENCE);

    // Act
    let as_alice = alice_client
        .request("curve_rpc", json!(1), opts.clone())
        .await;
    let as_mallory = client::<R>(
        &grape,
        Some(CurveClientConfig::new(mallory, server_keys.public())),
    )
    .request("curve_rpc", json!(2), opts.clone())
    .await;
    let wrong_key = client::<R>(
        &grape,
        Some(CurveClientConfig::new(alice.clone(), alice.public())),
    )
    .request("curve_rpc", json!(3), opts.clone())
    .await;
    let plain = client::<R>(&grape, None)
        .request("curve_rpc", json!(4), opts.clone())
        .await;
    let mut sub = alice_client
        .subscribe("curve_pub")
        .await
        .expect("subscribe");
    let message = publish_until_heard(&publisher, &mut sub, "sealed").await;

    // Assert
    assert_eq!(as_alice, Ok(json!(alice.public().to_z85())));
    for (who, result) in [
        ("mallory", as_mallory),
        ("wrong server key", wrong_key),
        ("NULL client", plain),
    ] {
        match result {
            Err(PeerError::Rpc(RpcError::Security(_))) => {}
            other => panic!("{who}: {other:?}"),
        }
    }
    assert_eq!(message, Some(WsMessage::Text("sealed".into())));
    let mut stats = rpc.stats().curve;
    for _ in 0..100 {
        if stats.failed_total() >= 3 {
            break;
        }
        sleep::<R>(Duration::from_millis(50)).await;
        stats = rpc.stats().curve;
    }
    assert_eq!(stats.failed(CurveFailure::NotAllowed), 1, "{stats:?}");
    assert_eq!(stats.failed(CurveFailure::WrongServerKey), 1, "{stats:?}");
    assert_eq!(stats.failed(CurveFailure::Mismatch), 1, "{stats:?}");
    assert!(stats.established >= 1, "{stats:?}");
    assert!(publisher.curve_stats().established >= 1);
    // The server still serves alice after the refusals.
    let again = alice_client.request("curve_rpc", json!(5), opts).await;
    assert_eq!(again, Ok(json!(alice.public().to_z85())));
    drop(sub);
    rpc.stop().await;
    publisher.stop().await;
    grape.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn one_curve_client_trusts_a_key_per_service<R: Runtime>() {
    // Arrange: two CURVE ROUTERs of two keys ("north", "south") and a CURVE publisher
    // with south's key; one client with north's key by default and south's for its
    // service and channel; and a client with north's key only.
    let north = CurveKeyPair::from_secret([11; 32]);
    let south = CurveKeyPair::from_secret([12; 32]);
    let me = CurveKeyPair::from_secret([13; 32]);
    let grape = GrapeServer::<R>::start(local_config(41))
        .await
        .expect("grape");
    let mut servers = Vec::new();
    for keys in [&north, &south] {
        let config = RpcServerConfig::new(RpcTransport::Zmq)
            .listen_on(LOCALHOST, 0)
            .curve(CurveServerConfig::new(keys.clone()));
        let server = RpcServer::<R>::listen_with_context(config, whoami)
            .await
            .expect("listen");
        servers.push(server);
    }
    let publisher = Publisher::<R>::listen(
        PublisherConfig::new()
            .transport(PubSubTransport::Zmq)
            .listen_on(LOCALHOST, 0)
            .curve(CurveServerConfig::new(south.clone())),
    )
    .await
    .expect("publisher");
    let keyring = CurveClientConfig::new(me.clone(), north.public())
        .service("south_rpc", south.public())
        .service("south_pub", south.public());
    let both = client::<R>(&grape, Some(keyring));
    let north_only = client::<R>(
        &grape,
        Some(CurveClientConfig::new(me.clone(), north.public())),
    );
    for (server, name) in servers.iter().zip(["north_rpc", "south_rpc"]) {
        server.announce(&both, name).await.expect("announce");
    }
    publisher
        .announce(&both, "south_pub")
        .await
        .expect("announce");
    let opts = RequestOptions::default().timeout(PATIENCE);

    // Act
    let to_north = both.request("north_rpc", json!(1), opts.clone()).await;
    let to_south = both.request("south_rpc", json!(2), opts.clone()).await;
    let south_with_north_key = north_only
        .request("south_rpc", json!(3), opts.clone())
        .await;
    let mut sub = both.subscribe("south_pub").await.expect("subscribe");
    let message = publish_until_heard(&publisher, &mut sub, "south").await;

    // Assert: each server saw our key through its own key; the default key alone fails.
    let me_z85 = json!(me.public().to_z85());
    assert_eq!(to_north, Ok(me_z85.clone()));
    assert_eq!(to_south, Ok(me_z85));
    match south_with_north_key {
        Err(PeerError::Rpc(RpcError::Security(_))) => {}
        other => panic!("the default key at south: {other:?}"),
    }
    assert_eq!(message, Some(WsMessage::Text("south".into())));
    assert!(publisher.curve_stats().established >= 1);
    drop(sub);
    for server in servers {
        server.stop().await;
    }
    publisher.stop().await;
    grape.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn zmq_server_pings_a_silent_peer_then_drops_it<R: Runtime>() {
    use grenache_core::peer::zmtp::{Connection, Limits, SocketType};
    // Arrange: a ZeroMQ server with a fast heartbeat, and a DEALER that completes its
    // handshake, then reads but never answers.
    let mut config = RpcServerConfig::new(RpcTransport::Zmq).listen_on(LOCALHOST, 0);
    config.heartbeat = crate::peer::ZmqHeartbeat {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(400),
    };
    let server = RpcServer::<R>::listen_with_context(config, whoami)
        .await
        .expect("listen");
    let addr = std::net::SocketAddr::new(LOCALHOST, server.port());
    let mut stream = super::connect::<R>(addr).await;
    let mut dealer = Connection::new(SocketType::Dealer, Vec::new(), Limits::default());
    R::write_all(&mut stream, &dealer.take_output())
        .await
        .expect("write");

    // Act: read until the server closes, counting bytes after the handshake.
    let mut buf = [0u8; 1024];
    let mut after_handshake = 0usize;
    let closed = timeout::<R, _>(Duration::from_secs(10), async {
        loop {
            match R::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let was_ready = dealer.is_ready();
                    dealer.handle_input(&buf[..n]).expect("valid ZMTP");
                    if was_ready {
                        after_handshake += n;
                    } else {
                        // The rest of our greeting and READY; nothing more, ever.
                        let out = dealer.take_output();
                        R::write_all(&mut stream, &out).await.expect("write");
                    }
                }
            }
        }
    })
    .await;

    // Assert: PINGs came, then the server hung up and counted it.
    assert!(closed.is_some(), "the server never dropped the silent peer");
    assert!(after_handshake > 0, "no PING before the drop");
    assert!(server.stats().dropped_connections >= 1);
    server.stop().await;
}

/// A ZeroMQ ROUTER on a thread of its own that completes the handshake, takes one request,
/// then neither reads nor answers until `release` (or a minute) has passed.
fn silent_router(release: std::sync::mpsc::Receiver<()>) -> u16 {
    use grenache_core::peer::zmtp::{Connection, Limits, SocketType, ZmtpEvent};
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else {
            return;
        };
        let mut router = Connection::new(SocketType::Router, Vec::new(), Limits::default());
        let mut buf = [0u8; 4096];
        let mut got_request = false;
        while !got_request {
            if socket.write_all(&router.take_output()).is_err() {
                return;
            }
            let Ok(n) = socket.read(&mut buf) else {
                return;
            };
            if n == 0 || router.handle_input(&buf[..n]).is_err() {
                return;
            }
            while let Some(event) = router.poll_event() {
                got_request |= matches!(event, ZmtpEvent::Message(_));
            }
        }
        let _ = socket.write_all(&router.take_output());
        // Silent from here on: no reads, no PONGs, no FIN.
        let _ = release.recv_timeout(Duration::from_secs(60));
    });
    port
}

/// See the test of this name in each runtime's crate.
pub async fn zmq_client_gives_up_on_a_silent_server<R: Runtime>() {
    // Arrange: a ROUTER that goes silent after taking the request, announced on a Grape;
    // a ZeroMQ client with a fast heartbeat and a long request timeout.
    use grenache_core::peer::zmtp::HeartbeatConfig;
    let grape = GrapeServer::<R>::start(local_config(53))
        .await
        .expect("Grape");
    let (release, released) = std::sync::mpsc::channel();
    let port = silent_router(released);
    let mut config =
        PeerConfig::new(format!("http://{}", grape.local_api_addr())).transport(RpcTransport::Zmq);
    config.client.rpc.heartbeat = Some(HeartbeatConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(400),
    });
    let client = PeerClient::<R>::new(config).expect("client");
    client.announce("st_silent", port).await.expect("announce");

    // Act
    let opts = RequestOptions::default().timeout(PATIENCE);
    let result = timeout::<R, _>(PATIENCE, client.request("st_silent", json!(1), opts)).await;
    let _ = release.send(());

    // Assert: the heartbeat, not the request timeout, ended it, with its own error.
    let result = result.expect("the request ended before the test's patience");
    assert_eq!(
        result,
        Err(PeerError::Rpc(RpcError::HeartbeatTimeout(
            Duration::from_millis(400)
        )))
    );
    grape.shutdown().await;
}
