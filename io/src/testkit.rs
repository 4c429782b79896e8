//! The adapter's tests, written once and run by each runtime's crate against its own
//! [`Runtime`] ([`adapter_tests!`](crate::adapter_tests)): end to end over real loopback
//! sockets, they test what the adapter adds (framing, limits, shutdown), not the protocol,
//! which the core's own tests cover. Not an API: compiled only with the `testkit` feature.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt as _;

use crate::{GrapeServer, Listener, Runtime, ServerConfig, StartError};

/// Connects to `addr`, or fails the test.
pub use http_client::{
    a_close_after_the_request_arrived_may_have_been_sent, a_refused_connect_is_unsent,
};

/// Defines one `#[test]` per adapter test, each run on `$runtime` by `$block_on` (a function
/// that runs a future to its end on a fresh runtime). Each runtime's crate invokes it once.
#[macro_export]
macro_rules! adapter_tests {
    ($runtime:ty, $block_on:path) => {
        $crate::adapter_tests!(@each $runtime, $block_on;
            lookup_on_a_lone_grape_answers_at_once,
            a_cached_lookup_is_answered_while_the_driver_is_held,
            a_lookup_cached_past_its_ttl_waits_for_the_driver,
            an_announce_here_is_seen_by_the_next_lookup_at_once,
            cached_lookups_on_the_connections_show_in_the_recent_lookups,
            core_replies_pass_through_unchanged,
            body_over_the_limit_is_refused_unread,
            chunked_body_over_the_limit_is_refused,
            keep_alive_serves_several_requests_on_one_connection,
            silent_connection_is_closed_after_the_header_timeout,
            websocket_answers_many_messages_in_flight,
            a_websocket_server_answers_a_burst_while_still_reading_it,
            websocket_message_over_the_limit_ends_the_connection,
            port_in_use_names_the_listener,
            shutdown_is_prompt_and_closes_the_listeners,
            announce_on_one_grape_is_found_from_another,
            a_burst_of_queries_is_answered_in_full,
            the_dht_rate_limit_drops_a_flood_and_answers_others,
            api_limits_hold_a_client_to_its_share,
            api_limits_leave_loopback_alone_by_default,
            a_refused_connect_is_unsent,
            a_close_after_the_request_arrived_may_have_been_sent,
            tls_rpc_and_pubsub_carry_the_client_identity,
            tls_bad_clients_are_refused_counted_and_the_rest_served,
            tls_clients_refuse_servers_they_cannot_verify,
            a_client_of_the_wrong_transport_fails_typed,
            a_websocket_server_turns_other_transports_away_at_once,
            a_plain_request_to_the_websocket_api_gets_426,
            dashboard_paths_answer_and_bad_targets_get_clear_errors,
            a_later_oversized_head_gets_the_json_431,
            curve_rpc_and_pubsub_with_allow_list_and_typed_mismatches,
            one_curve_client_trusts_a_key_per_service,
            zmq_server_pings_a_silent_peer_then_drops_it,
            request_streams_carry_their_metadata_and_limits,
            a_slow_stream_handler_holds_a_raw_sender_back,
            our_stream_client_is_held_back_by_a_slow_server,
            zmq_client_gives_up_on_a_silent_server,
            requests_and_maps_spread_over_shards_answer_right,
            a_dead_peer_is_skipped_by_every_shard,
            a_watched_name_is_answered_from_its_set_on_a_spread_client,
            a_websocket_burst_cut_anywhere_is_answered_in_full,
            a_burst_from_our_websocket_client_is_answered_in_full,
            busy_poll_spins_after_each_wake_up_then_sleeps,
            busy_polling_peers_answer_on_every_transport,
        );
    };
    (@each $runtime:ty, $block_on:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $block_on($crate::testkit::$name::<$runtime>());
            }
        )*
    };
}

async fn connect<R: Runtime>(addr: SocketAddr) -> R::TcpStream {
    crate::net::connect::<R>(&addr.ip().to_string(), addr.port())
        .await
        .expect("connect")
}

/// A WebSocket client connected to `addr`, or fails the test.
async fn ws_client<R: Runtime>(
    addr: SocketAddr,
) -> async_tungstenite::WebSocketStream<crate::tls::MaybeTls<R>> {
    let stream = connect::<R>(addr).await;
    let stream = crate::tls::MaybeTls::Plain(R::ws_io(stream));
    crate::net::ws_connect(format!("ws://{addr}/"), stream, Default::default())
        .await
        .expect("handshake")
}

/// Runs blocking `work` on a thread of its own while the runtime goes on serving.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = async_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send_blocking(work());
    });
    rx.recv().await.expect("the worker thread answers")
}

fn local_config(seed: u8) -> ServerConfig {
    let mut config = ServerConfig::new([seed; 32]);
    config.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.dht_port = 0;
    config.api_port = 0;
    config
}

/// Sends raw bytes on a fresh connection and reads one response (the server closes after it).
async fn raw_exchange<R: Runtime>(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = connect::<R>(addr).await;
    R::write_all(&mut stream, request).await.expect("write");
    read_response::<R>(&mut stream).await
}

/// A `POST path` with a body, `Connection: close`.
async fn post<R: Runtime>(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    raw_exchange::<R>(addr, &post_request(path, body, "close")).await
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
async fn read_response<R: Runtime>(stream: &mut R::TcpStream) -> (u16, Vec<u8>) {
    let (head, body) = read_whole_response::<R>(stream).await;
    (head[9..12].parse().expect("status code"), body)
}

/// Reads one response: its head as text, and its body.
async fn read_whole_response<R: Runtime>(stream: &mut R::TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = R::read(stream, &mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a full response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf-8 head");
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
        let n = R::read(stream, &mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    (head, body)
}

/// See the test of this name in each runtime's crate.
pub async fn lookup_on_a_lone_grape_answers_at_once<R: Runtime>() {
    // Arrange
    let server = GrapeServer::<R>::start(local_config(1))
        .await
        .expect("start");
    let started = Instant::now();

    // Act
    let (status, body) = post::<R>(server.local_api_addr(), "/lookup", br#"{"data":"x"}"#).await;

    // Assert
    assert_eq!(status, 200);
    assert_eq!(body, b"[]");
    assert!(started.elapsed() < Duration::from_secs(1));
    server.shutdown().await;
}

/// A Grape on loopback whose cached lookups last a minute, so a stale one would show, and
/// its API address.
async fn long_cache_grape<R: Runtime>(seed: u8) -> (GrapeServer<R>, SocketAddr) {
    let mut config = local_config(seed);
    config.grape.lookup_cache = Duration::from_secs(60);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let api = server.local_api_addr();
    (server, api)
}

/// See the test of this name in each runtime's crate.
pub async fn a_cached_lookup_is_answered_while_the_driver_is_held<R: Runtime>() {
    // Arrange: "svc" cached, then the driver held.
    let (server, api) = long_cache_grape::<R>(35).await;
    let lookup = br#"{"data":"svc"}"#;
    let first = post::<R>(api, "/lookup", lookup).await;
    let release = server.hold_driver().await;

    // Act
    let mut hits = Vec::new();
    for _ in 0..3 {
        let hit =
            crate::time::timeout::<R, _>(Duration::from_secs(5), post::<R>(api, "/lookup", lookup));
        hits.push(hit.await);
    }
    let health =
        crate::time::timeout::<R, _>(Duration::from_millis(300), get::<R>(api, "/health")).await;
    drop(release);
    let (_, metrics) = get::<R>(api, "/metrics").await;

    // Assert: answered without the driver, and counted by the core all the same.
    assert_eq!(first, (200, b"[]".to_vec()));
    for hit in hits {
        assert_eq!(hit, Some((200, b"[]".to_vec())));
    }
    assert_eq!(health, None, "the driver was held");
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(
        metric(&metrics, "grape_api_lookup_cache_hits_total"),
        Some(3),
        "{metrics}"
    );
    let lookups_ok = "grape_api_requests_total{command=\"lookup\",outcome=\"ok\"}";
    assert_eq!(metric(&metrics, lookups_ok), Some(4), "{metrics}");
    let took_no_time = "grape_api_lookup_duration_seconds_bucket{le=\"0.0001\"}";
    assert_eq!(metric(&metrics, took_no_time), Some(4), "{metrics}");
    assert_eq!(
        metric(&metrics, "grape_api_lookup_duration_seconds_count"),
        Some(4)
    );
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn a_lookup_cached_past_its_ttl_waits_for_the_driver<R: Runtime>() {
    // Arrange: "svc" cached for 100 ms, then the driver held past that.
    let mut config = local_config(38);
    config.grape.lookup_cache = Duration::from_millis(100);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let api = server.local_api_addr();
    let lookup = br#"{"data":"svc"}"#;
    let first = post::<R>(api, "/lookup", lookup).await;
    let release = server.hold_driver().await;
    crate::time::sleep::<R>(Duration::from_millis(200)).await;

    // Act
    let stale = crate::time::timeout::<R, _>(
        Duration::from_millis(300),
        post::<R>(api, "/lookup", lookup),
    )
    .await;
    drop(release);
    let fresh = post::<R>(api, "/lookup", lookup).await;

    // Assert: not answered from the copy once stale; the core answers it after.
    assert_eq!(first, (200, b"[]".to_vec()));
    assert_eq!(stale, None, "a stale copy is not served");
    assert_eq!(fresh, first);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn an_announce_here_is_seen_by_the_next_lookup_at_once<R: Runtime>() {
    // Arrange: "svc" cached with no peer, and hit once.
    let (server, api) = long_cache_grape::<R>(36).await;
    let lookup = br#"{"data":"svc"}"#;
    let before = post::<R>(api, "/lookup", lookup).await;
    let hit = post::<R>(api, "/lookup", lookup).await;

    // Act
    let (announced, _) = post::<R>(api, "/announce", br#"{"data":["svc",1337]}"#).await;
    let after = post::<R>(api, "/lookup", lookup).await;

    // Assert
    assert_eq!(before, (200, b"[]".to_vec()));
    assert_eq!(hit, before);
    assert_eq!(announced, 200);
    assert_eq!(after, (200, br#"["127.0.0.1:1337"]"#.to_vec()));
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn cached_lookups_on_the_connections_show_in_the_recent_lookups<R: Runtime>() {
    // Arrange: "svc" looked up, then "other"; then the driver held.
    let (server, api) = long_cache_grape::<R>(37).await;
    post::<R>(api, "/lookup", br#"{"data":"svc"}"#).await;
    crate::time::sleep::<R>(Duration::from_millis(20)).await;
    post::<R>(api, "/lookup", br#"{"data":"other"}"#).await;
    let release = server.hold_driver().await;
    crate::time::sleep::<R>(Duration::from_millis(20)).await;

    // Act: a hit on "svc" while the driver cannot see it.
    let hit = crate::time::timeout::<R, _>(
        Duration::from_secs(5),
        post::<R>(api, "/lookup", br#"{"data":"svc"}"#),
    )
    .await;
    drop(release);
    let (_, status) = get::<R>(api, "/status").await;

    // Assert
    assert_eq!(hit, Some((200, b"[]".to_vec())));
    let status: serde_json::Value = serde_json::from_slice(&status).expect("JSON status");
    let names: Vec<&str> = status["lookups"]["items"]
        .as_array()
        .expect("lookup rows")
        .iter()
        .filter_map(|row| row["name"].as_str())
        .collect();
    assert_eq!(names, ["svc", "other"], "{status}");
    server.shutdown().await;
}

/// A `GET target`, `Connection: close`.
async fn get<R: Runtime>(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw_exchange::<R>(addr, request.as_bytes()).await
}

/// See the test of this name in each runtime's crate.
pub async fn dashboard_paths_answer_and_bad_targets_get_clear_errors<R: Runtime>() {
    // Arrange
    let server = GrapeServer::<R>::start(local_config(29))
        .await
        .expect("start");
    let api = server.local_api_addr();
    let json =
        |body: &[u8]| -> serde_json::Value { serde_json::from_slice(body).expect("a JSON body") };

    // Act
    let page = get::<R>(api, "/").await;
    let status = get::<R>(api, "/status").await;
    let unknown = get::<R>(api, "/nope").await;
    let long = get::<R>(api, &format!("/status?{}", "a".repeat(3000))).await;
    // Past what the API reads of a request head: a JSON 431, and the server lives on.
    let huge = format!(
        "GET /?{} HTTP/1.1\r\nHost: test\r\n\r\n",
        "a".repeat(200_000)
    );
    let huge = raw_exchange::<R>(api, huge.as_bytes()).await;
    let many = format!(
        "GET /status HTTP/1.1\r\n{}\r\n",
        "X-Pad: 0123456789\r\n".repeat(4000)
    );
    let many = raw_exchange::<R>(api, many.as_bytes()).await;
    let after = get::<R>(api, "/status").await;

    // Assert
    assert_eq!(page.0, 200);
    assert!(page.1.starts_with(b"<!doctype html>"));
    assert_eq!(status.0, 200);
    let status = json(&status.1);
    assert_eq!(status["id"], server.node_id().to_string());
    assert_eq!(status["listeners"]["api"], api.to_string());
    assert_eq!(
        status["listeners"]["dht"],
        server.local_dht_addr().to_string()
    );
    assert_eq!(unknown.0, 404);
    assert_eq!(json(&unknown.1)["error"], "ERR_GRAPE_NOT_FOUND");
    assert_eq!(long.0, 414);
    assert_eq!(json(&long.1)["error"], "ERR_GRAPE_URI_TOO_LONG");
    for (status, body) in [huge, many] {
        assert_eq!(status, 431);
        assert_eq!(body, br#""ERR_GRAPE_HEAD_TOO_LARGE""#);
    }
    assert_eq!(after.0, 200);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn a_later_oversized_head_gets_the_json_431<R: Runtime>() {
    // Arrange
    let server = GrapeServer::<R>::start(local_config(34))
        .await
        .expect("start");
    let api = server.local_api_addr();
    let long = format!(
        "GET /?{} HTTP/1.1\r\nHost: test\r\n\r\n",
        "a".repeat(200_000)
    );
    let many = format!("GET /status HTTP/1.1\r\n{}\r\n", "X-Pad: 0\r\n".repeat(150));
    let mut replies = Vec::new();

    // Act: on each kept-alive connection, a lookup, then a head over the limit (too long,
    // or with more header fields than the API reads).
    for oversized in [long, many] {
        let mut stream = connect::<R>(api).await;
        let first = post_request("/lookup", br#"{"data":"x"}"#, "keep-alive");
        R::write_all(&mut stream, &first).await.expect("write");
        let first = read_response::<R>(&mut stream).await;
        R::write_all(&mut stream, oversized.as_bytes())
            .await
            .expect("write");
        replies.push((first, read_whole_response::<R>(&mut stream).await));
    }
    let after = get::<R>(api, "/health").await;

    // Assert
    for ((first_status, first_body), (head, body)) in replies {
        assert_eq!((first_status, &first_body[..]), (200, &b"[]"[..]));
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        assert_eq!(body, br#""ERR_GRAPE_HEAD_TOO_LARGE""#);
    }
    assert_eq!(after.0, 200);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn a_plain_request_to_the_websocket_api_gets_426<R: Runtime>() {
    // Arrange
    let mut config = local_config(33);
    config.ws_port = Some(0);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let ws_addr = server.local_ws_addr().expect("ws address");

    // Act: a POST as an HTTP client sends it, then a real WebSocket client.
    let mut stream = connect::<R>(ws_addr).await;
    let request = post_request("/", br#"{"data":"x"}"#, "keep-alive");
    R::write_all(&mut stream, &request).await.expect("write");
    let (head, body) = read_whole_response::<R>(&mut stream).await;
    let mut ws = ws_client::<R>(ws_addr).await;
    ws.send(Message::text(r#"["r","lookup","x"]"#))
        .await
        .expect("send");
    let reply = ws.next().await.expect("a reply").expect("a message");

    // Assert
    assert!(
        head.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nupgrade: websocket\r\n"),
        "{head}"
    );
    assert_eq!(body, b"Upgrade Required");
    assert_eq!(reply.into_data().as_ref(), br#"["r",null,[]]"#);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn core_replies_pass_through_unchanged<R: Runtime>() {
    // Arrange
    let server = GrapeServer::<R>::start(local_config(2))
        .await
        .expect("start");

    // Act
    let (status, body) = post::<R>(server.local_api_addr(), "/lookupx", br#"{"data":"x"}"#).await;

    // Assert
    assert_eq!(status, 200);
    assert_eq!(body, br#""ERR_REQ_NOTFOUND""#);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn body_over_the_limit_is_refused_unread<R: Runtime>() {
    // Arrange: announce 10 MB but send only a little of it.
    let server = GrapeServer::<R>::start(local_config(3))
        .await
        .expect("start");
    let request =
        b"POST /lookup HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000\r\n\r\n{\"data\":";

    // Act
    let (status, body) = raw_exchange::<R>(server.local_api_addr(), request).await;

    // Assert
    assert_eq!(status, 413);
    assert_eq!(body, b"ERR_GRAPE_PAYLOAD_SIZE");
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn chunked_body_over_the_limit_is_refused<R: Runtime>() {
    // Arrange: no Content-Length, so the limit is found while reading.
    let server = GrapeServer::<R>::start(local_config(4))
        .await
        .expect("start");
    let chunk = vec![b' '; 5000];
    let mut request =
        b"POST /lookup HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }

    // Act
    let (status, _) = raw_exchange::<R>(server.local_api_addr(), &request).await;

    // Assert
    assert_eq!(status, 413);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn keep_alive_serves_several_requests_on_one_connection<R: Runtime>() {
    // Arrange
    let server = GrapeServer::<R>::start(local_config(5))
        .await
        .expect("start");
    let mut stream = connect::<R>(server.local_api_addr()).await;

    // Act
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let request = post_request("/lookup", br#"{"data":"x"}"#, "keep-alive");
        R::write_all(&mut stream, &request).await.expect("write");
        statuses.push(read_response::<R>(&mut stream).await.0);
    }

    // Assert
    assert_eq!(statuses, [200, 200, 200]);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn silent_connection_is_closed_after_the_header_timeout<R: Runtime>() {
    // Arrange
    let mut config = local_config(6);
    config.limits.header_read_timeout = Duration::from_millis(200);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let mut stream = connect::<R>(server.local_api_addr()).await;
    let started = Instant::now();

    // Act: send nothing; the server must hang up on its own.
    let mut buf = [0u8; 64];
    let read =
        crate::time::timeout::<R, _>(Duration::from_secs(5), R::read(&mut stream, &mut buf)).await;

    // Assert
    assert!(matches!(read, Some(Ok(0)) | Some(Err(_))), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn websocket_answers_many_messages_in_flight<R: Runtime>() {
    // Arrange
    let mut config = local_config(7);
    config.ws_port = Some(0);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let addr = server.local_ws_addr().expect("ws address");
    let mut ws = ws_client::<R>(addr).await;

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
}

/// See the test of this name in each runtime's crate.
pub async fn websocket_message_over_the_limit_ends_the_connection<R: Runtime>() {
    // Arrange
    let mut config = local_config(8);
    config.ws_port = Some(0);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let addr = server.local_ws_addr().expect("ws address");
    let mut ws = ws_client::<R>(addr).await;

    // Act
    let _ = ws.send(Message::text("x".repeat(100_000))).await;
    let next = crate::time::timeout::<R, _>(Duration::from_secs(5), ws.next()).await;

    // Assert: no reply, the connection ends (close frame, error or end of stream).
    match next.expect("the server reacts in time") {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("unexpected reply {other:?}"),
    }
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn port_in_use_names_the_listener<R: Runtime>() {
    // Arrange
    let first = GrapeServer::<R>::start(local_config(9))
        .await
        .expect("start");
    let mut config = local_config(10);
    config.api_port = first.local_api_addr().port();

    // Act
    let result = GrapeServer::<R>::start(config).await;

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
}

/// See the test of this name in each runtime's crate.
pub async fn shutdown_is_prompt_and_closes_the_listeners<R: Runtime>() {
    // Arrange: an idle keep-alive connection must not hold shutdown up.
    let mut config = local_config(11);
    config.ws_port = Some(0);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let api = server.local_api_addr();
    let mut idle = connect::<R>(api).await;
    R::write_all(
        &mut idle,
        &post_request("/lookup", br#"{"data":"x"}"#, "keep-alive"),
    )
    .await
    .expect("write");
    let _ = read_response::<R>(&mut idle).await;
    let started = Instant::now();

    // Act
    server.shutdown().await;

    // Assert
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(R::connect("127.0.0.1", api.port()).await.is_err());
}

/// See the test of this name in each runtime's crate.
pub async fn announce_on_one_grape_is_found_from_another<R: Runtime>() {
    // Arrange: B joins the DHT through A; no lookup cache, so each poll asks afresh.
    let mut config_a = local_config(12);
    config_a.grape.lookup_cache = Duration::ZERO;
    let a = GrapeServer::<R>::start(config_a).await.expect("start A");
    let mut config_b = local_config(13);
    config_b.grape.lookup_cache = Duration::ZERO;
    config_b.bootstrap = vec![a.local_dht_addr()];
    let b = GrapeServer::<R>::start(config_b).await.expect("start B");

    // Act
    let (status, _) = post::<R>(
        a.local_api_addr(),
        "/announce",
        br#"{"data":["rpc_test",1337]}"#,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let (_, body) = post::<R>(b.local_api_addr(), "/lookup", br#"{"data":"rpc_test"}"#).await;
        if body != b"[]" || Instant::now() > deadline {
            break body;
        }
        crate::time::sleep::<R>(Duration::from_millis(100)).await;
    };

    // Assert
    assert_eq!(status, 200);
    assert_eq!(found, br#"["127.0.0.1:1337"]"#);
    b.shutdown().await;
    a.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn a_burst_of_queries_is_answered_in_full<R: Runtime>() {
    for batching in [true, false] {
        // Arrange: more pings than the driver reads in one wake-up, queued before it runs,
        // from two senders at once, so batched reads mix them and the answers (of one size,
        // which GSO sends together) go back to both.
        let mut config = local_config(1);
        config.udp_batching = batching;
        let server = GrapeServer::<R>::start(config).await.expect("start");
        let dht = server.local_dht_addr();

        // Act
        let (first, second) = off_thread(move || {
            let other = std::thread::spawn(move || burst::ping_from([127, 0, 0, 2], dht, 200));
            let first = burst::ping(dht, 200);
            (first, other.join().expect("second sender"))
        })
        .await;

        // Assert
        assert_eq!((first, second), (200, 200), "batching {batching}");
        assert_eq!(server.io_stats().send_errors, 0, "batching {batching}");
        server.shutdown().await;
    }
}

/// See the test of this name in each runtime's crate.
pub async fn the_dht_rate_limit_drops_a_flood_and_answers_others<R: Runtime>() {
    use grenache_core::dht::defence::{Ban, Limit};

    // Arrange: loopback not exempt, so the defences apply to this box's senders.
    let mut config = local_config(2);
    let defences = &mut config.grape.node.defences;
    defences.exempt_loopback = false;
    defences.rate_limit = Some(Limit::per_second(50));
    defences.ban = Some(Ban {
        after: 100,
        window: Duration::from_secs(10),
        duration: Duration::from_secs(60),
    });
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let dht = server.local_dht_addr();

    // Act: one socket floods from 127.0.0.2, then another asks from 127.0.0.1.
    let flooded = off_thread(move || burst::ping_from([127, 0, 0, 2], dht, 500)).await;
    let other = off_thread(move || burst::ping_from([127, 0, 0, 1], dht, 20)).await;
    let request = b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    let (status, metrics) = raw_exchange::<R>(server.local_api_addr(), request).await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();

    // Assert
    assert!(flooded < 250, "{flooded} of 500 flooding pings answered");
    assert_eq!(other, 20, "the other socket is answered in full");
    assert_eq!(status, 200);
    let counter = |line: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let dropped = counter("grape_dht_dropped_total{reason=\"rate_limited\"}")
        + counter("grape_dht_dropped_total{reason=\"banned\"}");
    // Most of the flood reached the node and was dropped there (the kernel may drop some).
    assert!(dropped >= 250, "{metrics}");
    assert_eq!(counter("grape_dht_bans_total"), 1, "{metrics}");
    server.shutdown().await;
}

/// A `GET target` on a fresh connection, or `None` when the server closes it unanswered.
async fn try_get<R: Runtime>(addr: SocketAddr, target: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = connect::<R>(addr).await;
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    R::write_all(&mut stream, request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Connection: close, so the response ends with the stream.
    loop {
        match R::read(&mut stream, &mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    Some((status, buf[head_end..].to_vec()))
}

/// The value of the `/metrics` line that starts with `name` (labels included).
fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// See the test of this name in each runtime's crate.
pub async fn api_limits_hold_a_client_to_its_share<R: Runtime>() {
    use grenache_core::dht::defence::Limit;

    // Arrange: loopback counted; 5 requests saved up, then 1 a second; 2 connections.
    let mut config = local_config(31);
    config.ws_port = Some(0);
    let limits = &mut config.grape.api_limits;
    limits.exempt_loopback = false;
    limits.requests_per_second = Some(Limit {
        per_second: 1,
        burst: 5,
    });
    limits.connections_per_client = Some(2);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let api = server.local_api_addr();
    let ws_addr = server.local_ws_addr().expect("ws address");

    // Act: 20 requests on one kept-alive connection, then a WebSocket call (the second
    // connection), then a third connection.
    let mut first = connect::<R>(api).await;
    let mut replies = Vec::new();
    for _ in 0..20 {
        let request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";
        R::write_all(&mut first, request).await.expect("write");
        replies.push(read_response::<R>(&mut first).await);
    }
    let mut ws = ws_client::<R>(ws_addr).await;
    ws.send(Message::text(r#"["r1","lookup","x"]"#))
        .await
        .expect("send");
    let ws_reply = ws.next().await.expect("a reply").expect("a message");
    let mut third = connect::<R>(api).await;
    let _ = R::write_all(&mut third, b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let refused =
        crate::time::timeout::<R, _>(Duration::from_secs(5), R::read(&mut third, &mut buf)).await;
    // Closing the WebSocket frees its slot; the bucket refills one request a second.
    let _ = ws.close(None).await;
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        match try_get::<R>(api, "/metrics").await {
            Some((200, body)) => break String::from_utf8_lossy(&body).into_owned(),
            _ if Instant::now() < deadline => {
                crate::time::sleep::<R>(Duration::from_millis(200)).await;
            }
            other => panic!("no /metrics after the slot was freed: {other:?}"),
        }
    };

    // Assert
    assert!(
        replies[..5].iter().all(|(status, _)| *status == 200),
        "{replies:?}"
    );
    let limited: Vec<&(u16, Vec<u8>)> = replies.iter().filter(|(s, _)| *s != 200).collect();
    assert!(limited.len() >= 10, "{} of 20 refused", limited.len());
    for (status, body) in limited {
        assert_eq!(
            (*status, body.as_slice()),
            (429, &br#""ERR_GRAPE_RATE_LIMIT""#[..])
        );
    }
    let ws_reply: serde_json::Value =
        serde_json::from_slice(&ws_reply.into_data()).expect("JSON reply");
    assert_eq!(
        ws_reply,
        serde_json::json!(["r1", "ERR_GRAPE_RATE_LIMIT", null])
    );
    assert!(
        matches!(refused, Some(Ok(0) | Err(_))),
        "the third connection is closed unread: {refused:?}"
    );
    let counted = |reason: &str| {
        metric(
            &metrics,
            &format!("grape_api_clients_refused_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0)
    };
    assert!(counted("rate") >= 11, "{metrics}");
    assert!(counted("connections") >= 1, "{metrics}");
    drop(first);
    server.shutdown().await;
}

/// See the test of this name in each runtime's crate.
pub async fn api_limits_leave_loopback_alone_by_default<R: Runtime>() {
    use grenache_core::dht::defence::Limit;

    // Arrange: tiny limits, but loopback exempt (the default).
    let mut config = local_config(32);
    let limits = &mut config.grape.api_limits;
    limits.requests_per_second = Some(Limit::per_second(1));
    limits.connections_per_client = Some(1);
    let server = GrapeServer::<R>::start(config).await.expect("start");
    let api = server.local_api_addr();

    // Act: three connections held open, ten requests on each.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(connect::<R>(api).await);
    }
    let mut statuses = Vec::new();
    for stream in &mut streams {
        for _ in 0..10 {
            let request = post_request("/lookup", br#"{"data":"x"}"#, "keep-alive");
            R::write_all(stream, &request).await.expect("write");
            statuses.push(read_response::<R>(stream).await.0);
        }
    }

    // Assert
    assert_eq!(statuses, [200; 30]);
    server.shutdown().await;
}

/// The HTTP client's view of failed exchanges: what reached the server and what did not.
pub mod http_client {
    use std::io::Read as _;
    use std::net::{Ipv4Addr, TcpListener};
    use std::time::Duration;

    use grenache_core::peer::{
        Delivery, HttpId, HttpMethod, HttpRequest, HttpResponse, TransportError,
    };

    use super::off_thread;
    use crate::Runtime;
    use crate::peer::http_client::{HttpPool, exchange};

    /// A POST of a small request frame to `url`, with 5 s to spare.
    pub(crate) fn small_post<R: Runtime>(url: String) -> HttpRequest {
        HttpRequest {
            id: HttpId(1),
            method: HttpMethod::Post,
            url,
            headers: Vec::new(),
            body: br#"["rid","svc",1]"#.to_vec(),
            deadline: R::now() + Duration::from_secs(5),
        }
    }

    /// One POST of a small frame to `port` on loopback, with 5 s to spare.
    async fn post<R: Runtime>(port: u16) -> Option<Result<HttpResponse, TransportError>> {
        let pool = HttpPool::new(1, 1, Duration::from_secs(4));
        let request = small_post::<R>(format!("http://127.0.0.1:{port}/"));
        exchange::<R>(&pool, request, 1024).await
    }

    /// See the test of this name in each runtime's crate.
    pub async fn a_refused_connect_is_unsent<R: Runtime>() {
        // Bound and released: nobody listens there now.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();

        let reply = post::<R>(port).await;

        let Some(Err(err)) = reply else {
            panic!("expected a transport error, got {reply:?}");
        };
        assert_eq!(err.delivery, Delivery::Unsent, "{err}");
    }

    /// See the test of this name in each runtime's crate.
    pub async fn a_close_after_the_request_arrived_may_have_been_sent<R: Runtime>() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Reads the request, then closes without a word.
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
        });

        let reply = post::<R>(port).await;
        off_thread(move || server.join().expect("server thread")).await;

        let Some(Err(err)) = reply else {
            panic!("expected a transport error, got {reply:?}");
        };
        assert_eq!(err.delivery, Delivery::MaybeSent, "{err}");
    }
}

pub use wrong_transport::{
    a_client_of_the_wrong_transport_fails_typed,
    a_websocket_server_turns_other_transports_away_at_once,
};

/// Clients dialling a server of another transport: they fail at once, saying what they met.
pub mod wrong_transport {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use grenache_core::peer::{Protocol, RequestOptions, RpcError, RpcTransport};
    use serde_json::{Value, json};

    use super::local_config;
    use crate::peer::{PeerClient, PeerConfig, PeerError, RpcServer, RpcServerConfig};
    use crate::{GrapeServer, Runtime};

    /// Far longer than a failure takes: a client that waited would end in `ERR_TIMEOUT`.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A client of `transport` through `grape`.
    fn client<R: Runtime>(grape: &GrapeServer<R>, transport: RpcTransport) -> PeerClient<R> {
        let mut config =
            PeerConfig::new(format!("http://{}", grape.local_api_addr())).transport(transport);
        config.seed = Some([3; 32]);
        PeerClient::new(config).expect("a valid Grape URL")
    }

    /// An echo server of `transport` announced as `name`.
    async fn server<R: Runtime>(
        announcer: &PeerClient<R>,
        name: &str,
        transport: RpcTransport,
    ) -> RpcServer<R> {
        let config = RpcServerConfig::new(transport).listen_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        RpcServer::start(announcer, name, config, |_key, payload: Value| async move {
            Ok(payload)
        })
        .await
        .expect("start an RPC server")
    }

    /// What a `transport` client gets from the service `name`.
    async fn call<R: Runtime>(
        grape: &GrapeServer<R>,
        transport: RpcTransport,
        name: &str,
    ) -> Result<Value, PeerError> {
        let opts = RequestOptions::default().timeout(PATIENCE);
        client::<R>(grape, transport)
            .request(name, json!("hello"), opts)
            .await
    }

    /// See the test of this name in each runtime's crate.
    pub async fn a_client_of_the_wrong_transport_fails_typed<R: Runtime>() {
        // Arrange: one server of each transport that answers first or answers in HTTP.
        let grape = GrapeServer::<R>::start(local_config(21))
            .await
            .expect("Grape");
        let announcer = client::<R>(&grape, RpcTransport::Http);
        let http = server::<R>(&announcer, "wt_http", RpcTransport::Http).await;
        let zmq = server::<R>(&announcer, "wt_zmq", RpcTransport::Zmq).await;
        let cases = [
            (RpcTransport::Http, "wt_zmq", Protocol::Zmq),
            (RpcTransport::Ws, "wt_zmq", Protocol::Zmq),
            (RpcTransport::Zmq, "wt_http", Protocol::Http),
            (RpcTransport::Ws, "wt_http", Protocol::Http),
        ];

        for (transport, name, met) in cases {
            // Act
            let result = call::<R>(&grape, transport, name).await;

            // Assert
            let want = PeerError::Rpc(RpcError::WrongTransport(met));
            assert_eq!(result, Err(want), "{transport:?} client to {name}");
        }
        let err = call::<R>(&grape, RpcTransport::Ws, "wt_zmq").await;
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("ERR_WRONG_TRANSPORT: zmq".to_owned())
        );
        // The servers still serve their own transport.
        for (transport, name) in [
            (RpcTransport::Http, "wt_http"),
            (RpcTransport::Zmq, "wt_zmq"),
        ] {
            assert_eq!(call::<R>(&grape, transport, name).await, Ok(json!("hello")));
        }
        http.stop().await;
        zmq.stop().await;
        grape.shutdown().await;
    }

    /// See the test of this name in each runtime's crate.
    pub async fn a_websocket_server_turns_other_transports_away_at_once<R: Runtime>() {
        // Our WebSocket server answers a plain HTTP request with 426 Upgrade Required, so
        // an HTTP client names what it met; a ZMTP greeting is no HTTP at all, and the
        // connection ends at once.
        let grape = GrapeServer::<R>::start(local_config(22))
            .await
            .expect("Grape");
        let announcer = client::<R>(&grape, RpcTransport::Http);
        let ws = server::<R>(&announcer, "wt_ws", RpcTransport::Ws).await;

        let http = call::<R>(&grape, RpcTransport::Http, "wt_ws").await;
        let zmq = call::<R>(&grape, RpcTransport::Zmq, "wt_ws").await;

        let want = PeerError::Rpc(RpcError::WrongTransport(Protocol::Ws));
        assert_eq!(http, Err(want));
        let err = zmq.expect_err("a WebSocket server does not answer ZMTP");
        assert!(!err.is_timeout(), "zmq: {err}");
        // It still serves WebSocket clients.
        let ok = call::<R>(&grape, RpcTransport::Ws, "wt_ws").await;
        assert_eq!(ok, Ok(json!("hello")));
        ws.stop().await;
        grape.shutdown().await;
    }
}

/// A client for the adapters' tests: a burst of queries sent before any answer is read.
mod burst {
    use std::collections::HashSet;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use grenache_core::NodeId;
    use grenache_core::dht::krpc::{Body, Message, Method, Query};

    /// Sends `n` pings to `dht` back to back, then counts the distinct answers that come
    /// within a second of the last one. Blocking: run it off the runtime's threads.
    pub(crate) fn ping(dht: SocketAddr, n: u16) -> usize {
        ping_from([127, 0, 0, 1], dht, n)
    }

    /// [`ping`] from a socket bound to `ip` (any of 127.0.0.0/8 works on loopback).
    pub(crate) fn ping_from(ip: [u8; 4], dht: SocketAddr, n: u16) -> usize {
        let socket = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        for i in 0..n {
            let query = Message {
                tid: i.to_be_bytes().to_vec(),
                version: None,
                read_only: false,
                body: Body::Query(Query {
                    id: NodeId([9; 20]),
                    method: Method::Ping,
                }),
            };
            socket.send_to(&query.encode(), dht).expect("send");
        }
        let mut answered = HashSet::new();
        let mut buf = [0u8; 1500];
        while answered.len() < usize::from(n) {
            let Ok((len, _)) = socket.recv_from(&mut buf) else {
                break;
            };
            let message = Message::decode(&buf[..len]).expect("KRPC");
            // The Grape may also ping us back, to check the new contact.
            if matches!(message.body, Body::Response(_)) {
                answered.insert(message.tid);
            }
        }
        answered.len()
    }
}

mod busy_poll;
pub use busy_poll::{
    busy_poll_spins_after_each_wake_up_then_sleeps, busy_polling_peers_answer_on_every_transport,
};
mod curve;
pub use curve::{
    curve_rpc_and_pubsub_with_allow_list_and_typed_mismatches,
    one_curve_client_trusts_a_key_per_service, zmq_client_gives_up_on_a_silent_server,
    zmq_server_pings_a_silent_peer_then_drops_it,
};
pub mod pki;
mod shards;
pub use shards::{
    a_dead_peer_is_skipped_by_every_shard,
    a_watched_name_is_answered_from_its_set_on_a_spread_client,
    requests_and_maps_spread_over_shards_answer_right,
};
mod streams;
pub use streams::{
    a_slow_stream_handler_holds_a_raw_sender_back, our_stream_client_is_held_back_by_a_slow_server,
    request_streams_carry_their_metadata_and_limits,
};
mod tls;
pub use tls::{
    tls_bad_clients_are_refused_counted_and_the_rest_served,
    tls_clients_refuse_servers_they_cannot_verify, tls_rpc_and_pubsub_carry_the_client_identity,
};
mod ws_bursts;
pub use ws_bursts::{
    a_burst_from_our_websocket_client_is_answered_in_full,
    a_websocket_burst_cut_anywhere_is_answered_in_full,
    a_websocket_server_answers_a_burst_while_still_reading_it,
};
