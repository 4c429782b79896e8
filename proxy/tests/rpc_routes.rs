//! The proxy's RPC routes end to end on loopback: a Grape, our servers of one transport,
//! the proxy, and our clients of another.

use std::time::Duration;

use crate::common;
use grenache_core::peer::Protocol;
use grenache_proxy::{FanOut, Proxy, Route, Settings};

use common::{LOCALHOST, client, grape, raw_http, server, url};
use grenache_smol::peer::{PeerError, RequestOptions, RpcError, RpcTransport};
use grenache_smol::{GrapeServer, Smol};
use serde_json::json;

fn route(text: &str, fan_out: FanOut) -> Route {
    let mut route: Route = text.parse().expect("a valid route");
    route.fan_out = fan_out;
    route
}

async fn proxy(grape: &GrapeServer, routes: Vec<Route>) -> Proxy<Smol> {
    let settings = Settings {
        grape: url(grape),
        bind: LOCALHOST,
        timeout: Duration::from_secs(5),
        lookup_cache: Duration::from_millis(200),
        rpc: routes,
        ..Settings::default()
    };
    Proxy::start(&settings).await.expect("start the proxy")
}

fn opts() -> RequestOptions {
    RequestOptions::default().timeout(Duration::from_secs(10))
}

#[test]
fn a_ws_client_reaches_zmq_servers_through_the_proxy() {
    smol::block_on(async {
        // Arrange: two ZeroMQ servers of `echo_zmq`; the proxy serves `echo` over ws.
        let grape = grape(31).await;
        let zmq = client(&grape, RpcTransport::Zmq);
        let a = server(&zmq, "echo_zmq", RpcTransport::Zmq, "a").await;
        let b = server(&zmq, "echo_zmq", RpcTransport::Zmq, "b").await;
        let proxy = proxy(
            &grape,
            vec![
                route("echo@ws=echo_zmq@zmq", FanOut::One),
                route("echo_all@http=echo_zmq@zmq", FanOut::Map),
                route("nobody@ws=nobody_zmq@zmq", FanOut::One),
            ],
        )
        .await;
        let ws = client(&grape, RpcTransport::Ws);
        let http = client(&grape, RpcTransport::Http);

        // Act
        let mut tags = Vec::new();
        for i in 0..4 {
            let reply = ws.request("echo", json!({ "n": i }), opts()).await;
            let reply = reply.expect("an answer through the proxy");
            assert_eq!(
                reply["got"],
                json!({ "n": i }),
                "the payload passes unchanged"
            );
            tags.push(reply["tag"].as_str().unwrap_or_default().to_owned());
        }
        let failed = ws
            .request("echo", json!({ "fail": "ERR_CUSTOM" }), opts())
            .await;
        let missing = ws.request("nobody", json!(1), opts()).await;
        let all = http.request("echo_all", json!("x"), opts()).await;

        // Assert: load spread over both, errors kept or typed, map reaches every peer.
        tags.sort();
        tags.dedup();
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(
            failed,
            Err(PeerError::Rpc(RpcError::Remote("ERR_CUSTOM".into())))
        );
        assert_eq!(
            missing.map_err(|e| e.to_string()),
            Err("ERR_PROXY: ERR_GRAPE_LOOKUP_EMPTY".to_owned())
        );
        let all = all.expect("a map through the proxy");
        let mut mapped: Vec<&str> = all
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|v| v["tag"].as_str())
            .collect();
        mapped.sort_unstable();
        assert_eq!(mapped, ["a", "b"]);
        let stats: Vec<_> = proxy.routes().into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(stats[0].requests, 5);
        assert_eq!((stats[0].replies, stats[0].target_errors), (4, 1));
        assert_eq!(stats[2].proxy_errors, 1);
        proxy.stop().await;
        a.stop().await;
        b.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn a_target_killed_and_restarted_gives_answers_or_typed_errors() {
    smol::block_on(async {
        // Arrange: one HTTP target behind a ws route, and an untouched second route.
        let grape = grape(32).await;
        let http = client(&grape, RpcTransport::Http);
        let target = server(&http, "flaky_http", RpcTransport::Http, "1").await;
        let steady = server(&http, "steady_http", RpcTransport::Http, "s").await;
        let proxy = proxy(
            &grape,
            vec![
                route("flaky@ws=flaky_http@http", FanOut::One),
                route("steady@zmq=steady_http@http", FanOut::One),
            ],
        )
        .await;
        let ws = client(&grape, RpcTransport::Ws);
        let zmq = client(&grape, RpcTransport::Zmq);

        // Act: requests before, while and after the target is away.
        let mut outcomes = Vec::new();
        for i in 0..10 {
            outcomes.push(ws.request("flaky", json!(i), opts()).await);
        }
        target.stop().await;
        for i in 10..20 {
            outcomes.push(ws.request("flaky", json!(i), opts()).await);
        }
        let steady_reply = zmq.request("steady", json!("still"), opts()).await;
        let again = server(&http, "flaky_http", RpcTransport::Http, "2").await;
        let mut after = None;
        for i in 20..200 {
            let reply = ws.request("flaky", json!(i), opts()).await;
            if reply.is_ok() {
                after = Some(reply);
                break;
            }
            outcomes.push(reply);
            smol::Timer::after(Duration::from_millis(50)).await;
        }

        // Assert: every request answered, or failed with a typed proxy error.
        for outcome in &outcomes {
            match outcome {
                Ok(v) => assert_eq!(v["tag"], "1"),
                Err(e) => assert!(e.to_string().starts_with("ERR_PROXY: "), "{e}"),
            }
        }
        assert!(outcomes.iter().take(10).all(Result::is_ok));
        assert_eq!(steady_reply.expect("the other route")["tag"], "s");
        let last = outcomes.last().map(|o| format!("{o:?}"));
        let after = after
            .unwrap_or_else(|| panic!("the restarted target is found: {last:?}"))
            .expect("ok");
        assert_eq!(after["tag"], "2");
        proxy.stop().await;
        again.stop().await;
        steady.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn a_wrong_transport_target_is_a_typed_proxy_error() {
    smol::block_on(async {
        // The route says zmq, but the target serves HTTP.
        let grape = grape(33).await;
        let http = client(&grape, RpcTransport::Http);
        let target = server(&http, "really_http", RpcTransport::Http, "h").await;
        let proxy = proxy(
            &grape,
            vec![route("mixed@http=really_http@zmq", FanOut::One)],
        )
        .await;

        let reply = http.request("mixed", json!(1), opts()).await;

        let want = format!("ERR_PROXY: ERR_WRONG_TRANSPORT: {}", Protocol::Http);
        assert_eq!(reply.map_err(|e| e.to_string()), Err(want));
        proxy.stop().await;
        target.stop().await;
        grape.shutdown().await;
    });
}

/// Sends a raw HTTP POST of `body` and returns the status and body text.
async fn raw_post(addr: std::net::SocketAddr, body: &[u8]) -> (u16, String) {
    let head = format!(
        "POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
        body.len()
    );
    raw_http(addr, &head, body).await
}

#[test]
fn bad_input_on_a_route_gets_typed_errors_and_disturbs_nothing() {
    smol::block_on(async {
        let grape = grape(35).await;
        let http = client(&grape, RpcTransport::Http);
        let target = server(&http, "solid_http", RpcTransport::Http, "t").await;
        let proxy = proxy(
            &grape,
            vec![route("solid@http=solid_http@http", FanOut::One)],
        )
        .await;
        let addr = proxy.routes()[0].1;

        let not_json = raw_post(addr, b"{not json").await;
        let not_a_request = raw_post(addr, br#"{"rid": 1}"#).await;
        let too_large = raw_post(addr, &vec![b' '; 9 << 20]).await;
        let fine = http.request("solid", json!("ok"), opts()).await;

        assert_eq!(not_json.0, 400, "{not_json:?}");
        assert!(not_json.1.contains("ERR_"), "{not_json:?}");
        assert_eq!(not_a_request.0, 400, "{not_a_request:?}");
        assert_eq!(too_large.0, 413, "{too_large:?}");
        assert_eq!(fine.expect("the route still serves")["got"], "ok");
        let stats = proxy.routes()[0].2;
        assert_eq!(stats.requests, 1, "bad input never reached TARGET");
        proxy.stop().await;
        target.stop().await;
        grape.shutdown().await;
    });
}

#[test]
fn a_broken_zeromq_caller_is_dropped_and_counted() {
    smol::block_on(async {
        use smol::io::AsyncWriteExt as _;
        let grape = grape(36).await;
        let http = client(&grape, RpcTransport::Http);
        let target = server(&http, "z_http", RpcTransport::Http, "z").await;
        let proxy = proxy(&grape, vec![route("z@zmq=z_http@http", FanOut::One)]).await;
        let addr = proxy.routes()[0].1;

        // Not a ZMTP greeting at all.
        let mut stream = smol::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while proxy.routes()[0].2.dropped_connections == 0 && std::time::Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        let zmq = client(&grape, RpcTransport::Zmq);
        let fine = zmq.request("z", json!("ok"), opts()).await;

        assert_eq!(proxy.routes()[0].2.dropped_connections, 1);
        assert_eq!(fine.expect("the route still serves")["got"], "ok");
        proxy.stop().await;
        target.stop().await;
        grape.shutdown().await;
    });
}
