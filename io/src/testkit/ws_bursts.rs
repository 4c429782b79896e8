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

/// What the server of [`a_websocket_server_answers_a_burst_while_still_reading_it`] did, in
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Read(usize),
    Handled(usize),
}

/// See the test of this name in each runtime's crate.
pub async fn a_websocket_server_answers_a_burst_while_still_reading_it<R: Runtime>() {
    // Arrange: a connection served by the WebSocket loop itself, whose handlers log when
    // they run; the whole burst waits in the socket before the loop reads any of it.
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("an address");
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = R::listener(listener).expect("a listener");
    let (written_tx, written_rx) = async_channel::bounded::<()>(1);
    let client = async move {
        let mut ws = ws_client::<R>(addr).await;
        let stream = ws.get_mut();
        stream.write_all(&burst_bytes("b")).await.expect("write");
        stream.flush().await.expect("flush");
        written_tx.send(()).await.expect("the server waits");
        for _ in 0..BURST {
            let answer = timeout::<R, _>(PATIENCE, ws.next()).await;
            assert!(matches!(answer, Some(Some(Ok(_)))), "{answer:?}");
        }
        let _ = ws.close(None).await;
    };
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&steps);
    let server = async move {
        let (stream, _) = R::accept(&listener).await.expect("accept");
        let stream = crate::tls::MaybeTls::Plain(R::ws_io(stream));
        let ws = crate::ws_server::accept::<R>(stream, 1 << 20, PATIENCE)
            .await
            .expect("a handshake");
        written_rx.recv().await.expect("the burst was written");
        let limits = crate::ws_server::WsLimits {
            max_message: 1 << 20,
            max_in_flight: BURST,
            handshake_timeout: PATIENCE,
            idle_timeout: PATIENCE,
            drain_timeout: PATIENCE,
        };
        let (_trigger, stop) = crate::stop::stop_pair();
        let (out_tx, out_rx) = async_channel::bounded(BURST);
        let mut read = 0;
        let take = |bytes: Vec<u8>| {
            let i = read;
            read += 1;
            let here = std::thread::current().id();
            log.lock().expect("the log").push((Step::Read(i), here));
            let (log, out_tx) = (std::sync::Arc::clone(&log), out_tx.clone());
            R::spawn_detached(async move {
                let here = std::thread::current().id();
                log.lock().expect("the log").push((Step::Handled(i), here));
                let _ = out_tx
                    .send(crate::ws_server::Out::Frame { bytes, done: true })
                    .await;
            });
            std::future::ready(crate::ws_server::Taken::Dispatched)
        };
        crate::ws_server::serve::<R, _, _>(ws, &limits, &stop, &out_rx, take).await;
    };

    // Act: the connection is served by a task of the runtime, as an RpcServer's are, so it
    // shares the executor with the handlers it spawns.
    futures_lite::future::zip(client, R::spawn(server)).await;

    // Assert: the first request was handled before the last was read, so its answer could
    // leave while the rest were read (without bursts, where the handlers run on the
    // reader's thread, every request waiting is read before any handler runs). Where the
    // runtime ran a handler on another thread (smol's executor may have several), the order
    // is the threads' and only the count is checked.
    let steps = steps.lock().expect("the log").clone();
    let position = |step| steps.iter().position(|(s, _)| *s == step);
    let handled_first = position(Step::Handled(0)).expect("the first request was handled");
    let read_last = position(Step::Read(BURST - 1)).expect("the last request was read");
    assert_eq!(steps.len(), 2 * BURST, "{steps:?}");
    let reader = steps[read_last].1;
    if steps.iter().all(|(_, thread)| *thread == reader) {
        assert!(handled_first < read_last, "{steps:?}");
    }
}
