// Rust peers and the real Node peers (grenache-nodejs-http 1.0.2, grenache-nodejs-ws 1.0.0),
// both directions, both transports, written once against `rt` and the runtime helpers.
//
// One Grape of ours runs in-process on 127.0.0.1. `node/peer-serve.js` serves Node's side
// (HTTP and WS RPC servers, a publisher); `node/peer-call.js` calls ours (HTTP plain and
// gzip, WS, a subscriber) and prints what it got. Both run while the Rust side does the same.

use std::sync::Arc;
use std::time::Duration;

use rt::peer::{
    PeerClient, PeerConfig, PeerError, Publisher, PublisherConfig, RequestOptions, RpcError,
    RpcServer, RpcServerConfig, RpcTransport, WsMessage,
};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, Proc, free_port, wait_until};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Everything the Rust side runs, dropped (and so stopped) at the end of the test.
struct RustSide {
    http: RpcServer,
    ws: RpcServer,
    publisher: Arc<Publisher>,
    publishing: Publishing,
}

async fn start_rust_side(client: &PeerClient, prefix: &str) -> RustSide {
    let server = |transport: RpcTransport| {
        let config = RpcServerConfig::new(transport).listen_on(LOCALHOST, 0);
        let tag = format!("{transport:?}").to_lowercase();
        let handler = move |key: String, payload: Value| {
            let tag = tag.clone();
            async move {
                match payload.get("fail").and_then(Value::as_str) {
                    Some(msg) => Err(msg.to_owned()),
                    None => {
                        Ok(json!({"echo": payload, "key": key, "from": "rust", "transport": tag}))
                    }
                }
            }
        };
        RpcServer::listen(config, handler)
    };
    let http = server(RpcTransport::Http).await.expect("HTTP server");
    let ws = server(RpcTransport::Ws).await.expect("WS server");
    let config = PublisherConfig::new().listen_on(LOCALHOST, 0);
    let publisher = Arc::new(Publisher::listen(config).await.expect("publisher"));
    http.announce(client, &format!("{prefix}:rust_http"))
        .await
        .expect("announce rust_http");
    ws.announce(client, &format!("{prefix}:rust_ws"))
        .await
        .expect("announce rust_ws");
    publisher
        .announce(client, &format!("{prefix}:rust_pub"))
        .await
        .expect("announce rust_pub");
    let publishing = Publishing::start(&publisher);
    RustSide {
        http,
        ws,
        publisher,
        publishing,
    }
}

fn opts() -> RequestOptions {
    RequestOptions::default()
        .timeout(Duration::from_secs(5))
        .attempts(2)
}

/// A part of `peer-call.js`'s output: `{"ok": true, "data": ...}`, or fails the check.
fn ok_part<'a>(report: &'a Value, part: &str) -> &'a Value {
    let got = &report[part];
    assert_eq!(got["ok"], json!(true), "Node's {part}: {got}");
    &got["data"]
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_and_rust_peers_interoperate() {
    let node = crate::common::node_env();
    let ctx = Ctx::new(&format!("peer_interop_{RT}"));
    let runtime = Runtime::new();
    let prefix = ctx.name.clone();
    let grape = runtime.block_on(local_grape(21));
    let url = format!("http://{}", grape.local_api_addr());
    let ports = [free_port(), free_port(), free_port()];
    let serve = Proc::spawn(
        &ctx,
        "peer-serve",
        node.command(
            "peer-serve.js",
            &[
                url.clone(),
                prefix.clone(),
                ports[0].to_string(),
                ports[1].to_string(),
                ports[2].to_string(),
            ],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let http_client = PeerClient::new(PeerConfig::new(url.clone())).expect("client");
    let ws_client =
        PeerClient::new(PeerConfig::new(url.clone()).transport(RpcTransport::Ws)).expect("client");
    let rust = runtime.block_on(start_rust_side(&http_client, &prefix));
    let mut call = Proc::spawn(
        &ctx,
        "peer-call",
        node.command("peer-call.js", &[url.clone(), prefix.clone()]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_until("peer-serve.js to announce", Duration::from_secs(15), || {
        let out = serve.stdout_text();
        if out.contains(r#""ready":true"#) {
            Ok(())
        } else {
            Err(format!("stdout {out:?} stderr {:?}", serve.stderr_text()))
        }
    });

    let mut checks = Checks::new(&ctx);
    checks.run("Rust HTTP client -> Node HTTP server", || {
        let name = format!("{prefix}:node_http");
        let reply = runtime.block_on(http_client.request(&name, json!({"n": 1}), opts()));
        let reply = reply.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            reply,
            json!({"echo": {"n": 1}, "key": name, "from": "node", "transport": "http"})
        );
    });
    checks.run("Rust HTTP client -> Node HTTP server, gzip", || {
        let name = format!("{prefix}:node_http");
        let payload = json!({"pad": "z".repeat(3000)});
        let reply =
            runtime.block_on(http_client.request(&name, payload.clone(), opts().compress(true)));
        let reply = reply.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(reply["echo"], payload);
    });
    checks.run(
        "Rust HTTP client -> Node HTTP server, handler error",
        || {
            let name = format!("{prefix}:node_http");
            let reply =
                runtime.block_on(http_client.request(&name, json!({"fail": "ERR_NODE"}), opts()));
            assert_eq!(
                reply,
                Err(PeerError::Rpc(RpcError::Remote("ERR_NODE".into())))
            );
        },
    );
    checks.run("Rust WS client -> Node WS server", || {
        let name = format!("{prefix}:node_ws");
        let reply = runtime.block_on(ws_client.request(&name, json!([1, "two"]), opts()));
        let reply = reply.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            reply,
            json!({"echo": [1, "two"], "key": name, "from": "node", "transport": "ws"})
        );
        let failed =
            runtime.block_on(ws_client.request(&name, json!({"fail": "ERR_NODE_WS"}), opts()));
        assert_eq!(
            failed,
            Err(PeerError::Rpc(RpcError::Remote("ERR_NODE_WS".into())))
        );
    });
    checks.run("Node publisher -> Rust subscriber", || {
        let name = format!("{prefix}:node_pub");
        let messages = runtime.block_on(async {
            let mut sub = http_client.subscribe(&name).await.expect("subscribe");
            let mut got = Vec::new();
            while got.len() < 3 {
                match within(Duration::from_secs(10), sub.next_message()).await {
                    Some(Some(msg)) => got.push(msg),
                    other => panic!("after {got:?}: {other:?}"),
                }
            }
            got
        });
        let numbers: Vec<u64> = messages
            .iter()
            .map(|m| match m {
                WsMessage::Text(t) => serde_json::from_str::<Value>(t)
                    .ok()
                    .and_then(|v| v["n"].as_u64())
                    .unwrap_or_else(|| panic!("not {{\"n\": k}}: {t:?}")),
                other => panic!("a binary message: {other:?}"),
            })
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in order: {numbers:?}"
        );
    });

    let report: Value = match call.wait_exit(Duration::from_secs(25)) {
        Some(status) if status.success() => {
            let out = call.stdout_text();
            serde_json::from_str(out.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("peer-call.js printed no JSON ({e}): {out:?}"))
        }
        other => panic!("peer-call.js did not finish ({other:?}):\n{}", call.dump()),
    };
    checks.run("Node HTTP client -> Rust HTTP server", || {
        let data = ok_part(&report, "http");
        assert_eq!(data["from"], json!("rust"));
        assert_eq!(data["transport"], json!("http"));
        assert_eq!(data["echo"], json!({"hello": "from node"}));
        assert_eq!(data["key"], json!(format!("{prefix}:rust_http")));
    });
    checks.run("Node HTTP client -> Rust HTTP server, gzip", || {
        let data = ok_part(&report, "http_gzip");
        assert_eq!(data["echo"]["hello"], json!("gzip from node"));
    });
    checks.run("Node WS client -> Rust WS server", || {
        let data = ok_part(&report, "ws");
        assert_eq!(data["transport"], json!("ws"));
        assert_eq!(data["echo"], json!({"hello": "from node over ws"}));
    });
    checks.run("Rust publisher -> Node subscriber", || {
        let data = ok_part(&report, "sub");
        let numbers: Vec<u64> = data
            .as_array()
            .unwrap_or_else(|| panic!("a list: {data}"))
            .iter()
            .map(|m| {
                let text = m.as_str().unwrap_or_else(|| panic!("a string: {m}"));
                let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
                v["n"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{{\"n\": k}}: {text}"))
            })
            .collect();
        assert_eq!(numbers.len(), 3);
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in order: {numbers:?}"
        );
    });
    drop(call);
    drop(serve);
    runtime.block_on(async {
        rust.publishing.stop(rust.publisher).await;
        rust.http.stop().await;
        rust.ws.stop().await;
        grape.shutdown().await;
    });
    checks.finish();
}
