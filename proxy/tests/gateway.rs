//! The gateway end to end on loopback: a Grape, our servers, the proxy's gateway, and
//! plain HTTP callers (a raw HTTP/1.1 client and `curl`).

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{LOCALHOST, client, grape, raw_exchange, raw_http, server, url};
use grenache_proxy::{GatewayLimits, GatewayStats, Proxy, Route, Settings};
use grenache_smol::peer::{
    PeerClient, PeerConfig, PubSubTransport, Publisher, PublisherConfig, RpcServer, RpcTransport,
};
use grenache_smol::{GrapeServer, Smol};
use serde_json::{Value, json};

async fn proxy(grape: &GrapeServer, routes: &[&str]) -> (Proxy<Smol>, SocketAddr) {
    proxy_with(grape, routes, GatewayLimits::default()).await
}

async fn proxy_with(
    grape: &GrapeServer,
    routes: &[&str],
    gateway_limits: GatewayLimits,
) -> (Proxy<Smol>, SocketAddr) {
    let settings = Settings {
        grape: url(grape),
        bind: LOCALHOST,
        timeout: Duration::from_secs(5),
        lookup_cache: Duration::from_millis(200),
        rpc: routes
            .iter()
            .map(|r| r.parse::<Route>().expect("a valid route"))
            .collect(),
        gateway: Some(0),
        gateway_limits,
        ..Settings::default()
    };
    let proxy = Proxy::start(&settings).await.expect("start the proxy");
    let addr = proxy.gateway().expect("a gateway").local_addr();
    (proxy, addr)
}

/// An echo server of `name` over `transport`, its replies tagged `tag`.
async fn echo(grape: &GrapeServer, transport: RpcTransport, name: &str, tag: &str) -> RpcServer {
    server(&client(grape, transport), name, transport, tag).await
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
        body.len()
    );
    let (status, reply) = raw_http(addr, &head, body.as_bytes()).await;
    let reply = serde_json::from_str(&reply).unwrap_or(Value::String(reply));
    (status, reply)
}

/// A ws publisher of `name`, announced on `grape`.
async fn ws_publisher(grape: &GrapeServer, name: &str) -> Publisher {
    let config = PeerConfig::new(url(grape)).pubsub_transport(PubSubTransport::Ws);
    let publishing = PeerClient::new(config).expect("a valid Grape URL");
    let config = PublisherConfig::new()
        .transport(PubSubTransport::Ws)
        .listen_on(LOCALHOST, 0);
    Publisher::start(&publishing, name, config)
        .await
        .expect("start a publisher")
}

/// An HTTP client of the gateway's `GET path`, its reply read as it comes.
struct StreamReader {
    stream: smol::net::TcpStream,
    seen: Vec<u8>,
}

impl StreamReader {
    async fn open(addr: SocketAddr, path: &str) -> Self {
        use smol::io::AsyncWriteExt as _;
        let mut stream = smol::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send the head");
        StreamReader {
            stream,
            seen: Vec::new(),
        }
    }

    /// Reads for at most 20 ms; returns all read so far.
    async fn poll(&mut self) -> String {
        use futures_lite::FutureExt as _;
        use smol::io::AsyncReadExt as _;
        let mut chunk = [0u8; 4096];
        let stream = &mut self.stream;
        let read = async { stream.read(&mut chunk).await.ok() }
            .or(async {
                smol::Timer::after(Duration::from_millis(20)).await;
                None
            })
            .await;
        if let Some(n) = read {
            self.seen.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

#[test]
fn plain_http_calls_services_of_every_transport() {
    smol::block_on(async {
        // Arrange
        let grape = grape(41).await;
        let zmq = echo(&grape, RpcTransport::Zmq, "echo_zmq", "zmq").await;
        let ws = echo(&grape, RpcTransport::Ws, "echo_ws", "ws").await;
        let web = echo(&grape, RpcTransport::Http, "echo_http", "http").await;
        let (proxy, addr) = proxy(&grape, &["echo@ws=echo_zmq@zmq"]).await;

        // Act
        let via_zmq = post(addr, "/rpc/echo_zmq?via=zmq", r#"{"n":1}"#).await;
        let via_ws = post(addr, "/rpc/echo_ws?via=ws", "[1,2]").await;
        let by_default = post(addr, "/rpc/echo_http", r#""s""#).await;
        let by_route = post(addr, "/rpc/echo", "7").await;
        let failed = post(addr, "/rpc/echo_zmq?via=zmq", r#"{"fail":"ERR_CUSTOM"}"#).await;

        // Assert
        assert_eq!(via_zmq, (200, json!({ "tag": "zmq", "got": { "n": 1 } })));
        assert_eq!(via_ws, (200, json!({ "tag": "ws", "got": [1, 2] })));
        assert_eq!(by_default, (200, json!({ "tag": "http", "got": "s" })));
        assert_eq!(by_route, (200, json!({ "tag": "zmq", "got": 7 })));
        assert_eq!(failed, (502, json!({ "error": "ERR_CUSTOM" })));
        let stats = proxy.gateway().expect("a gateway").stats();
        assert_eq!(
            stats,
            GatewayStats {
                requests: 5,
                replies: 4,
                target_errors: 1,
                ..GatewayStats::default()
            }
        );
        // The same counters on the metrics page, beside the route's (which the gateway's
        // own calls do not pass through).
        let (status, metrics) = raw_http(addr, "GET /metrics HTTP/1.1", b"").await;
        assert_eq!(status, 200, "{metrics}");
        assert!(
            metrics.contains("\ngrenache_proxy_gateway_requests_total 5\n"),
            "{metrics}"
        );
        assert!(metrics.contains("\ngrenache_proxy_gateway_target_errors_total 1\n"));
        let route = format!(
            "grenache_proxy_route_requests_total{{route=\"echo@ws:{}=echo_zmq@zmq\"}} 0\n",
            proxy.routes()[0].1.port()
        );
        assert!(metrics.contains(&route), "{route} in {metrics}");
        proxy.stop().await;
        for server in [zmq, ws, web] {
            server.stop().await;
        }
        grape.shutdown().await;
    });
}

#[test]
fn bad_requests_get_typed_statuses_and_are_counted() {
    smol::block_on(async {
        // Arrange
        let grape = grape(42).await;
        let (proxy, addr) = proxy(&grape, &[]).await;

        // Act
        let unknown = post(addr, "/rpc/nobody", "1").await;
        let bad_json = post(addr, "/rpc/nobody", "{not json").await;
        let bad_via = post(addr, "/rpc/nobody?via=smtp", "1").await;
        let no_route = post(addr, "/elsewhere", "1").await;
        let get = raw_http(addr, "GET /rpc/nobody HTTP/1.1", b"").await;
        let post_sub = post(addr, "/sub/ticks", "1").await;
        let sub_http = raw_http(addr, "GET /sub/ticks?via=http HTTP/1.1", b"").await;
        // Declared too large: answered before the body is sent.
        let head = "POST /rpc/nobody HTTP/1.1\r\nContent-Length: 5000000\r\nExpect: 100-continue";
        let too_large = raw_http(addr, head, b"").await;

        // Assert
        assert_eq!(unknown, (404, json!({ "error": "ERR_GRAPE_LOOKUP_EMPTY" })));
        assert_eq!(bad_json, (400, json!({ "error": "ERR_BAD_JSON" })));
        assert_eq!(bad_via.0, 400, "{bad_via:?}");
        assert_eq!(no_route, (404, json!({ "error": "ERR_NOT_FOUND" })));
        assert_eq!(get.0, 405, "{get:?}");
        assert_eq!(post_sub.0, 405, "{post_sub:?}");
        assert_eq!(sub_http.0, 400, "{sub_http:?}");
        assert_eq!(too_large.0, 413, "{too_large:?}");
        assert!(too_large.1.contains("ERR_BODY_TOO_LARGE"), "{too_large:?}");
        let stats = proxy.gateway().expect("a gateway").stats();
        assert_eq!(
            stats,
            GatewayStats {
                requests: 1,
                call_errors: 1,
                bad_requests: 7,
                ..GatewayStats::default()
            }
        );
        proxy.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn curl_calls_a_zeromq_service() {
    smol::block_on(async {
        // Arrange
        let grape = grape(43).await;
        let zmq = echo(&grape, RpcTransport::Zmq, "echo_zmq", "zmq").await;
        let (proxy, addr) = proxy(&grape, &[]).await;

        // Act: curl must be there; a missing curl fails the test.
        let url = format!("http://{addr}/rpc/echo_zmq?via=zmq");
        let output = smol::unblock(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
                .args(["-H", "Content-Type: application/json"])
                .args(["-d", r#"{"from":"curl"}"#, &url])
                .output()
                .expect("run curl (it must be installed)")
        })
        .await;

        // Assert
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        let (body, status) = text.rsplit_once('\n').expect("body and status");
        assert_eq!(status, "200");
        let body: Value = serde_json::from_str(body).expect("a JSON reply");
        assert_eq!(body, json!({ "tag": "zmq", "got": { "from": "curl" } }));
        proxy.stop().await;
        zmq.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn an_event_stream_carries_publications_until_the_client_goes() {
    smol::block_on(async {
        // Arrange: a ws publisher of `ticks`, the gateway, and an HTTP reader of its events.
        let grape = grape(44).await;
        let publisher = ws_publisher(&grape, "ticks").await;
        let (proxy, addr) = proxy(&grape, &[]).await;
        let mut reader = StreamReader::open(addr, "/sub/ticks?via=ws").await;

        // Act: publish until an event arrives (the subscription connects meanwhile).
        let mut text = String::new();
        for _ in 0..500 {
            let _ = publisher.publish_text("tick\nsecond line");
            text = reader.poll().await;
            if text.contains("data: tick\ndata: second line\n\n") {
                break;
            }
        }
        drop(reader);
        // The gateway lets go of the subscription once it sees the reader gone.
        let gateway = proxy.gateway().expect("a gateway");
        for _ in 0..500 {
            if gateway.stats().streams_ended > 0 {
                break;
            }
            let _ = publisher.publish_text("after");
            smol::Timer::after(Duration::from_millis(20)).await;
        }

        // Assert
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("content-type: text/event-stream"), "{text}");
        assert!(text.contains("data: tick\ndata: second line\n\n"), "{text}");
        let stats = gateway.stats();
        assert_eq!((stats.streams, stats.streams_ended), (1, 1), "{stats:?}");
        proxy.stop().await;
        publisher.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn a_browser_origin_gets_cors_and_the_body_limit_holds() {
    smol::block_on(async {
        // Arrange
        let grape = grape(45).await;
        let web = echo(&grape, RpcTransport::Http, "echo_http", "http").await;
        let limits = GatewayLimits {
            max_body: 64,
            cors: Some("https://app.example.com".parse().expect("an origin")),
            ..GatewayLimits::default()
        };
        let (plain, plain_addr) = proxy(&grape, &[]).await;
        let (proxy, addr) = proxy_with(&grape, &[], limits).await;

        // Act
        let preflight = raw_exchange(
            addr,
            "OPTIONS /rpc/echo_http HTTP/1.1\r\nOrigin: https://app.example.com\r\n\
             Access-Control-Request-Method: POST",
            b"",
        )
        .await;
        let head = "POST /rpc/echo_http HTTP/1.1\r\nContent-Length: 1";
        let call = raw_exchange(addr, head, b"1").await;
        let big = format!("[{}1]", "1,".repeat(100));
        let head = format!(
            "POST /rpc/echo_http HTTP/1.1\r\nContent-Length: {}",
            big.len()
        );
        let too_big = raw_http(addr, &head, big.as_bytes()).await;
        let no_cors = raw_exchange(
            plain_addr,
            "POST /rpc/echo_http HTTP/1.1\r\nContent-Length: 1",
            b"1",
        )
        .await;

        // Assert
        assert!(preflight.starts_with("HTTP/1.1 204"), "{preflight}");
        let preflight = preflight.to_ascii_lowercase();
        assert!(preflight.contains("access-control-allow-origin: https://app.example.com\r\n"));
        assert!(preflight.contains("access-control-allow-methods: get, post, options\r\n"));
        assert!(call.starts_with("HTTP/1.1 200"), "{call}");
        let body = call.split_once("\r\n\r\n").map(|(_, b)| b);
        let body = body.and_then(|b| serde_json::from_str::<Value>(b).ok());
        assert_eq!(body, Some(json!({ "tag": "http", "got": 1 })), "{call}");
        assert!(
            call.contains("access-control-allow-origin: https://app.example.com\r\n"),
            "{call}"
        );
        assert_eq!(
            too_big,
            (413, json!({ "error": "ERR_BODY_TOO_LARGE" }).to_string())
        );
        assert!(no_cors.starts_with("HTTP/1.1 200"), "{no_cors}");
        assert!(!no_cors.contains("access-control"), "{no_cors}");
        for proxy in [proxy, plain] {
            proxy.stop().await;
        }
        web.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn a_quiet_event_stream_gets_keep_alive_comments() {
    smol::block_on(async {
        // Arrange: a ws publisher that never publishes, and a short keep-alive.
        let grape = grape(46).await;
        let publisher = ws_publisher(&grape, "quiet").await;
        let limits = GatewayLimits {
            keep_alive: Duration::from_millis(100),
            ..GatewayLimits::default()
        };
        let (proxy, addr) = proxy_with(&grape, &[], limits).await;
        let mut reader = StreamReader::open(addr, "/sub/quiet?via=ws").await;

        // Act: read for at most 5 s, until two keep-alive comments came.
        let mut text = String::new();
        for _ in 0..250 {
            text = reader.poll().await;
            if text.matches(": keep-alive\n\n").count() >= 2 {
                break;
            }
        }

        // Assert
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.matches(": keep-alive\n\n").count() >= 2, "{text}");
        assert!(!text.contains("data:"), "{text}");
        drop(reader);
        proxy.stop().await;
        publisher.stop().await;
        grape.shutdown().await;
    });
}
