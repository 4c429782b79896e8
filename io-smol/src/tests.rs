//! End-to-end tests over real loopback sockets: what the adapter adds (framing, limits,
//! shutdown), not the protocol, which the core's own tests cover.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use async_tungstenite::client_async;
use async_tungstenite::tungstenite::Message;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;
use smol::stream::StreamExt as _;

use crate::{GrapeServer, Listener, ServerConfig, StartError};

fn local_config(seed: u8) -> ServerConfig {
    let mut config = ServerConfig::new([seed; 32]);
    config.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.dht_port = 0;
    config.api_port = 0;
    config
}

/// Sends raw bytes on a fresh connection and reads one response (the server closes after it).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_response(&mut stream).await
}

/// A `POST path` with a body, `Connection: close`.
async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    raw_exchange(addr, &post_request(path, body, "close")).await
}

fn post_request(path: &str, body: &[u8], connection: &str) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Reads one response: status line, headers, then `Content-Length` bytes of body.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a full response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf-8 head");
    let status = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().expect("content-length"))
        })
        .expect("content-length header");
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    (status, body)
}

#[test]
fn lookup_on_a_lone_grape_answers_at_once() {
    smol::block_on(async {
        // Arrange
        let server = GrapeServer::start(local_config(1)).await.expect("start");
        let started = Instant::now();

        // Act
        let (status, body) = post(server.local_api_addr(), "/lookup", br#"{"data":"x"}"#).await;

        // Assert
        assert_eq!(status, 200);
        assert_eq!(body, b"[]");
        assert!(started.elapsed() < Duration::from_secs(1));
        server.shutdown().await;
    });
}

#[test]
fn core_replies_pass_through_unchanged() {
    smol::block_on(async {
        // Arrange
        let server = GrapeServer::start(local_config(2)).await.expect("start");

        // Act
        let (status, body) = post(server.local_api_addr(), "/lookupx", br#"{"data":"x"}"#).await;

        // Assert
        assert_eq!(status, 200);
        assert_eq!(body, br#""ERR_REQ_NOTFOUND""#);
        server.shutdown().await;
    });
}

#[test]
fn body_over_the_limit_is_refused_unread() {
    smol::block_on(async {
        // Arrange: announce 10 MB but send only a little of it.
        let server = GrapeServer::start(local_config(3)).await.expect("start");
        let request =
            b"POST /lookup HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000\r\n\r\n{\"data\":";

        // Act
        let (status, body) = raw_exchange(server.local_api_addr(), request).await;

        // Assert
        assert_eq!(status, 413);
        assert_eq!(body, b"ERR_GRAPE_PAYLOAD_SIZE");
        server.shutdown().await;
    });
}

#[test]
fn chunked_body_over_the_limit_is_refused() {
    smol::block_on(async {
        // Arrange: no Content-Length, so the limit is found while reading.
        let server = GrapeServer::start(local_config(4)).await.expect("start");
        let chunk = vec![b' '; 5000];
        let mut request =
            b"POST /lookup HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..2 {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(&chunk);
            request.extend_from_slice(b"\r\n");
        }

        // Act
        let (status, _) = raw_exchange(server.local_api_addr(), &request).await;

        // Assert
        assert_eq!(status, 413);
        server.shutdown().await;
    });
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    smol::block_on(async {
        // Arrange
        let server = GrapeServer::start(local_config(5)).await.expect("start");
        let mut stream = TcpStream::connect(server.local_api_addr())
            .await
            .expect("connect");

        // Act
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let request = post_request("/lookup", br#"{"data":"x"}"#, "keep-alive");
            stream.write_all(&request).await.expect("write");
            statuses.push(read_response(&mut stream).await.0);
        }

        // Assert
        assert_eq!(statuses, [200, 200, 200]);
        server.shutdown().await;
    });
}

#[test]
fn silent_connection_is_closed_after_the_header_timeout() {
    smol::block_on(async {
        // Arrange
        let mut config = local_config(6);
        config.limits.header_read_timeout = Duration::from_millis(200);
        let server = GrapeServer::start(config).await.expect("start");
        let mut stream = TcpStream::connect(server.local_api_addr())
            .await
            .expect("connect");
        let started = Instant::now();

        // Act: send nothing; the server must hang up on its own.
        let mut buf = [0u8; 64];
        let read = crate::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;

        // Assert
        assert!(matches!(read, Some(Ok(0)) | Some(Err(_))), "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        server.shutdown().await;
    });
}

#[test]
fn websocket_answers_many_messages_in_flight() {
    smol::block_on(async {
        // Arrange
        let mut config = local_config(7);
        config.ws_port = Some(0);
        let server = GrapeServer::start(config).await.expect("start");
        let addr = server.local_ws_addr().expect("ws address");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut ws, _) = client_async(format!("ws://{addr}/"), stream)
            .await
            .expect("handshake");

        // Act: send all before reading any reply.
        for i in 0..10 {
            let text = format!(r#"["rid-{i}","lookup","x"]"#);
            ws.send(Message::text(text)).await.expect("send");
        }
        let mut rids = Vec::new();
        for _ in 0..10 {
            let message = ws.next().await.expect("a reply").expect("a message");
            let reply: serde_json::Value =
                serde_json::from_slice(&message.into_data()).expect("JSON reply");
            rids.push(reply[0].as_str().expect("rid").to_owned());
        }

        // Assert
        rids.sort();
        let mut expected: Vec<String> = (0..10).map(|i| format!("rid-{i}")).collect();
        expected.sort();
        assert_eq!(rids, expected);
        server.shutdown().await;
    });
}

#[test]
fn websocket_message_over_the_limit_ends_the_connection() {
    smol::block_on(async {
        // Arrange
        let mut config = local_config(8);
        config.ws_port = Some(0);
        let server = GrapeServer::start(config).await.expect("start");
        let addr = server.local_ws_addr().expect("ws address");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut ws, _) = client_async(format!("ws://{addr}/"), stream)
            .await
            .expect("handshake");

        // Act
        let _ = ws.send(Message::text("x".repeat(100_000))).await;
        let next = crate::time::timeout(Duration::from_secs(5), ws.next()).await;

        // Assert: no reply, the connection ends (close frame, error or end of stream).
        match next.expect("the server reacts in time") {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("unexpected reply {other:?}"),
        }
        server.shutdown().await;
    });
}

#[test]
fn port_in_use_names_the_listener() {
    smol::block_on(async {
        // Arrange
        let first = GrapeServer::start(local_config(9)).await.expect("start");
        let mut config = local_config(10);
        config.api_port = first.local_api_addr().port();

        // Act
        let result = GrapeServer::start(config).await;

        // Assert
        match result {
            Err(StartError::Bind {
                listener, source, ..
            }) => {
                assert_eq!(listener, Listener::Api);
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
        first.shutdown().await;
    });
}

#[test]
fn shutdown_is_prompt_and_closes_the_listeners() {
    smol::block_on(async {
        // Arrange: an idle keep-alive connection must not hold shutdown up.
        let mut config = local_config(11);
        config.ws_port = Some(0);
        let server = GrapeServer::start(config).await.expect("start");
        let api = server.local_api_addr();
        let mut idle = TcpStream::connect(api).await.expect("connect");
        idle.write_all(&post_request("/lookup", br#"{"data":"x"}"#, "keep-alive"))
            .await
            .expect("write");
        let _ = read_response(&mut idle).await;
        let started = Instant::now();

        // Act
        server.shutdown().await;

        // Assert
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(TcpStream::connect(api).await.is_err());
    });
}

#[test]
fn announce_on_one_grape_is_found_from_another() {
    smol::block_on(async {
        // Arrange: B joins the DHT through A; no lookup cache, so each poll asks afresh.
        let mut config_a = local_config(12);
        config_a.grape.lookup_cache = Duration::ZERO;
        let a = GrapeServer::start(config_a).await.expect("start A");
        let mut config_b = local_config(13);
        config_b.grape.lookup_cache = Duration::ZERO;
        config_b.bootstrap = vec![a.local_dht_addr()];
        let b = GrapeServer::start(config_b).await.expect("start B");

        // Act
        let (status, _) = post(
            a.local_api_addr(),
            "/announce",
            br#"{"data":["rpc_test",1337]}"#,
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let (_, body) = post(b.local_api_addr(), "/lookup", br#"{"data":"rpc_test"}"#).await;
            if body != b"[]" || Instant::now() > deadline {
                break body;
            }
            crate::time::sleep(Duration::from_millis(100)).await;
        };

        // Assert
        assert_eq!(status, 200);
        assert_eq!(found, br#"["127.0.0.1:1337"]"#);
        b.shutdown().await;
        a.shutdown().await;
    });
}

#[test]
fn a_burst_of_queries_is_answered_in_full() {
    smol::block_on(async {
        // Arrange: more pings than the driver reads in one wake-up, queued before it runs.
        let server = GrapeServer::start(local_config(1)).await.expect("start");
        let dht = server.local_dht_addr();

        // Act
        let answered = smol::unblock(move || crate::udp::burst::ping(dht, 200)).await;

        // Assert
        assert_eq!(answered, 200);
        server.shutdown().await;
    });
}
