//! WebSocket peer RPC in bursts: the server reads requests however the bytes are cut and
//! writes the answers that wait together in one go (io/src/ws_batch.rs), and our client
//! writes a burst of requests the same way. Every request gets its own answer, once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use futures_lite::{AsyncWriteExt as _, StreamExt as _};
use grenache_core::peer::{RequestOptions, RpcTransport};
use serde_json::{Value, json};

use super::{local_config, ws_client};
use crate::peer::{PeerClient, PeerConfig, RpcServer, RpcServerConfig};
use crate::time::timeout;
use crate::{GrapeServer, Runtime};

/// Requests in one burst: more than the server takes in flight on a connection, so reading
/// pauses and resumes while answers go out in batches.
const BURST: usize = 96;

/// Requests in flight per connection on the server.
const SERVER_IN_FLIGHT: usize = 8;

/// Far longer than anything here takes: a test that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(30);

/// An echo server over WebSocket, answering `[key, payload]`.
async fn echo_server<R: Runtime>() -> RpcServer<R> {
    let mut config =
        RpcServerConfig::new(RpcTransport::Ws).listen_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    config.max_in_flight_per_connection = SERVER_IN_FLIGHT;
    RpcServer::listen(
        config,
        |key, payload| async move { Ok(json!([key, payload])) },
    )
    .await
    .expect("start an RPC server")
}

/// `BURST` request frames as a client sends them (masked), back to back.
fn burst_bytes(tag: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..BURST {
        let text = format!(r#"["{tag}-{i}","key",{i}]"#);
        let mut frame = Frame::message(text.into_bytes(), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some([0x5a, 0x13, 0xc7, u8::try_from(i % 256).unwrap_or(0)]);
        frame
            .format(&mut bytes)
            .expect("a frame formats into a Vec");
    }
    bytes
}

/// Writes the burst in pieces of the sizes `cuts` cycles through, then reads one answer per
/// request and checks each is its own request's, once.
async fn send_cut_and_check<R: Runtime>(addr: SocketAddr, tag: &str, cuts: &[usize]) {
    let mut ws = ws_client::<R>(addr).await;
    let bytes = burst_bytes(tag);
    let mut rest = bytes.as_slice();
    for &cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(cut.clamp(1, rest.len()));
        let stream = ws.get_mut();
        stream.write_all(piece).await.expect("write a piece");
        stream.flush().await.expect("flush a piece");
        rest = after;
    }
    let mut answered = BTreeMap::new();
    for _ in 0..BURST {
        let message = timeout::<R, _>(PATIENCE, ws.next())
            .await
            .expect("an answer in time")
            .expect("the connection stays open")
            .expect("a message");
        let Message::Text(text) = message else {
            panic!("a text answer, got {message:?}");
        };
        let reply: Value = serde_json::from_str(text.as_str()).expect("a JSON answer");
        let rid = reply[0].as_str().expect("a rid").to_owned();
        assert_eq!(reply[1], Value::Null, "no error for {rid}");
        let n: usize = rid
            .strip_prefix(&format!("{tag}-"))
            .and_then(|n| n.parse().ok())
            .expect("a rid of this burst");
        assert_eq!(reply[2], json!(["key", n]), "the answer of {rid}");
        assert!(answered.insert(n, ()).is_none(), "{rid} answered twice");
    }
    assert_eq!(answered.len(), BURST);
}

/// See the test of this name in each runtime's crate.
pub async fn a_websocket_burst_cut_anywhere_is_answered_in_full<R: Runtime>() {
    // Arrange
    let server = echo_server::<R>().await;
    let addr = server.local_addr();

    // Act and assert: one write; one byte at a time (a cut at every boundary); pieces of
    // sizes prime to a frame's length, so cuts fall at every offset within a frame.
    send_cut_and_check::<R>(addr, "whole", &[usize::MAX]).await;
    send_cut_and_check::<R>(addr, "bytes", &[1]).await;
    send_cut_and_check::<R>(addr, "mixed", &[2, 3, 5, 7, 11, 13, 17, 64, 1]).await;
    server.stop().await;
}

/// See the test of this name in each runtime's crate.
pub async fn a_burst_from_our_websocket_client_is_answered_in_full<R: Runtime>() {
    // Arrange: a Grape, the echo server announced on it, and a client of one connection.
    let grape = GrapeServer::<R>::start(local_config(41))
        .await
        .expect("start a Grape");
    let grape_url = format!("http://{}", grape.local_api_addr());
    let mut config = PeerConfig::new(grape_url.clone()).transport(RpcTransport::Ws);
    config.seed = Some([41; 32]);
    config.max_connections_per_peer = 1;
    let client = PeerClient::<R>::new(config).expect("a client");
    let server = echo_server::<R>().await;
    server
        .announce(&client, "ws_burst")
        .await
        .expect("announce");

    // Act: the whole burst at once, so the client's writes queue up behind each other.
    let (tx, rx) = async_channel::bounded(BURST);
    for i in 0..BURST {
        let (client, tx) = (client.clone(), tx.clone());
        R::spawn_detached(async move {
            let opts = RequestOptions::default().timeout(PATIENCE);
            let reply = client.request("ws_burst", json!(i), opts).await;
            let _ = tx.send((i, reply)).await;
        });
    }

    // Assert
    let mut replies = BTreeMap::new();
    for _ in 0..BURST {
        let (i, reply) = timeout::<R, _>(PATIENCE, rx.recv())
            .await
            .expect("every request ends in time")
            .expect("a reply");
        assert_eq!(reply.expect("answered"), json!(["ws_burst", i]));
        replies.insert(i, ());
    }
    assert_eq!(replies.len(), BURST);
    server.stop().await;
    drop(client);
    grape.shutdown().await;
}
