// Rust ZeroMQ peers and libzmq through Node's `zeromq` package, both directions, RPC and
// PUB/SUB, written once against `rt` and the runtime helpers.
//
// One Grape of ours runs in-process on 127.0.0.1. `node/zmq-serve.js` serves Node's side
// (a ROUTER and a PUB); `node/zmq-call.js` calls ours (a DEALER, then a SUB) and prints
// what it got. Both run while the Rust side does the same. The whole exchange runs twice:
// with the NULL mechanism, and with CURVE on every socket (keys made here, passed to the
// Node scripts in the environment; our ROUTER lets in only the Node client's key).

use std::sync::Arc;
use std::time::Duration;

use rt::peer::{
    CurveClientConfig, CurveKeyPair, CurveServerConfig, PeerClient, PeerConfig, PeerError,
    PubSubTransport, Publisher, PublisherConfig, RequestOptions, RpcError, RpcServer,
    RpcServerConfig, RpcTransport, WsMessage,
};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, Proc, free_port, wait_until};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn opts() -> RequestOptions {
    RequestOptions::default()
        .timeout(Duration::from_secs(5))
        .attempts(2)
}

/// The key pairs of a CURVE run: each server's, and each client's.
struct CurveKeys {
    node_server: CurveKeyPair,
    rust_server: CurveKeyPair,
    node_client: CurveKeyPair,
    rust_client: CurveKeyPair,
}

impl CurveKeys {
    fn new() -> Self {
        CurveKeys {
            node_server: CurveKeyPair::from_secret([0x11; 32]),
            rust_server: CurveKeyPair::from_secret([0x22; 32]),
            node_client: CurveKeyPair::from_secret([0x33; 32]),
            rust_client: CurveKeyPair::from_secret([0x44; 32]),
        }
    }
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_zeromq_and_rust_peers_interoperate() {
    interoperate(None);
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_zeromq_and_rust_peers_interoperate_over_curve() {
    interoperate(Some(CurveKeys::new()));
}

fn interoperate(curve: Option<CurveKeys>) {
    let node = crate::common::node_env();
    let mechanism = if curve.is_some() { "curve" } else { "null" };
    let ctx = Ctx::new(&format!("zmq_interop_{mechanism}_{RT}"));
    let runtime = Runtime::new();
    let prefix = ctx.name.clone();
    let grape = runtime.block_on(local_grape(if curve.is_some() { 24 } else { 23 }));
    let url = format!("http://{}", grape.local_api_addr());
    let (node_rpc, node_pub) = (format!("{prefix}:node_zmq"), format!("{prefix}:node_zmq_pub"));
    let (rust_rpc, rust_pub) = (format!("{prefix}:rust_zmq"), format!("{prefix}:rust_zmq_pub"));
    let mut serve_cmd = node.command(
        "zmq-serve.js",
        &[
            url.clone(),
            node_rpc.clone(),
            free_port().to_string(),
            node_pub.clone(),
            free_port().to_string(),
        ],
    );
    if let Some(keys) = &curve {
        serve_cmd.env("ZMQ_CURVE_SERVER_SECRET", keys.node_server.secret_z85());
    }
    let serve = Proc::spawn(&ctx, "zmq-serve", serve_cmd).unwrap_or_else(|e| panic!("{e}"));

    // The Rust side: a ROUTER server and a PUB publishing {"n": k} every 100 ms.
    let plain_config = PeerConfig::new(url.clone())
        .transport(RpcTransport::Zmq)
        .pubsub_transport(PubSubTransport::Zmq);
    let config = match &curve {
        Some(keys) => plain_config.clone().curve(CurveClientConfig::new(
            keys.rust_client.clone(),
            keys.node_server.public(),
        )),
        None => plain_config.clone(),
    };
    let client = PeerClient::new(config).expect("client");
    let (server, publisher, publishing) = runtime.block_on(async {
        let handler = |key: String, payload: Value| async move {
            if payload.get("fail") == Some(&json!(true)) {
                return Err("ERR_RUST_FAILED".to_string());
            }
            Ok(json!({"echo": payload, "key": key, "from": "rust", "transport": "zmq"}))
        };
        let mut config = RpcServerConfig::new(RpcTransport::Zmq).listen_on(LOCALHOST, 0);
        if let Some(keys) = &curve {
            let allow = [keys.node_client.public()];
            config = config.curve(CurveServerConfig::new(keys.rust_server.clone()).allow(allow));
        }
        let server = RpcServer::start(&client, &rust_rpc, config, handler)
            .await
            .expect("ZeroMQ server");
        let mut config = PublisherConfig::new()
            .listen_on(LOCALHOST, 0)
            .transport(PubSubTransport::Zmq);
        if let Some(keys) = &curve {
            config = config.curve(CurveServerConfig::new(keys.rust_server.clone()));
        }
        let publisher = Arc::new(
            Publisher::start(&client, &rust_pub, config)
                .await
                .expect("ZeroMQ publisher"),
        );
        let publishing = Publishing::start(&publisher);
        (server, publisher, publishing)
    });
    let mut call_cmd = node.command("zmq-call.js", &[url.clone(), rust_rpc.clone(), rust_pub.clone()]);
    if let Some(keys) = &curve {
        call_cmd
            .env("ZMQ_CURVE_SERVER_KEY", keys.rust_server.public().to_z85())
            .env("ZMQ_CURVE_CLIENT_PUBLIC", keys.node_client.public().to_z85())
            .env("ZMQ_CURVE_CLIENT_SECRET", keys.node_client.secret_z85());
    }
    let mut call = Proc::spawn(&ctx, "zmq-call", call_cmd).unwrap_or_else(|e| panic!("{e}"));
    wait_until("zmq-serve.js to announce", Duration::from_secs(15), || {
        let out = serve.stdout_text();
        if out.contains(r#""ready":true"#) {
            Ok(())
        } else {
            Err(format!("stdout {out:?} stderr {:?}", serve.stderr_text()))
        }
    });

    let mut checks = Checks::new(&ctx);
    checks.run("Rust DEALER client -> Node ROUTER server", || {
        let reply = runtime.block_on(client.request(&node_rpc, json!({"n": 1}), opts()));
        let reply = reply.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            reply,
            json!({"echo": {"n": 1}, "from": "node", "transport": "zmq"})
        );
    });
    checks.run("Rust DEALER client -> Node ROUTER server, error reply", || {
        let reply = runtime.block_on(client.request(&node_rpc, json!({"fail": true}), opts()));
        assert_eq!(
            reply,
            Err(PeerError::Rpc(RpcError::Remote("ERR_NODE_FAILED".into())))
        );
    });
    checks.run("Rust DEALER client -> Node ROUTER server, 50 at once", || {
        let replies = runtime.block_on(async {
            let calls: Vec<_> = (0..50)
                .map(|i| {
                    let client = client.clone();
                    let name = node_rpc.clone();
                    spawn(async move { client.request(&name, json!({ "i": i }), opts()).await })
                })
                .collect();
            let mut replies = Vec::new();
            for call in calls {
                replies.push(call.await);
            }
            replies
        });
        for (i, reply) in replies.iter().enumerate() {
            let reply = reply.as_ref().unwrap_or_else(|e| panic!("{i}: {e:?}"));
            assert_eq!(reply["echo"], json!({ "i": i }));
        }
    });
    if let Some(keys) = &curve {
        checks.run("Rust NULL client -> Node CURVE server fails typed at once", || {
            let plain = PeerClient::new(plain_config.clone()).expect("client");
            let reply = runtime.block_on(plain.request(&node_rpc, json!(1), opts()));
            // libzmq hangs up as soon as it reads our NULL greeting, often before the part
            // of its own that names CURVE has left: we then see it close mid-greeting
            // (typed), or, when its close was a reset that dropped those bytes, a plain
            // close. Never a timeout.
            match reply {
                Err(PeerError::Rpc(RpcError::Security(_) | RpcError::TransportClose)) => {}
                other => panic!("{other:?}"),
            }
        });
        checks.run("Rust client with a wrong server key -> Node CURVE server fails, no timeout", || {
            let wrong = plain_config.clone().curve(CurveClientConfig::new(
                keys.rust_client.clone(),
                keys.rust_server.public(),
            ));
            let wrong = PeerClient::new(wrong).expect("client");
            let reply = runtime.block_on(wrong.request(&node_rpc, json!(1), opts()));
            let err = reply.expect_err("libzmq closes on a HELLO it cannot open");
            assert!(!err.is_timeout(), "{err}");
        });
    }
    checks.run("Node PUB -> Rust SUB", || {
        let messages = runtime.block_on(async {
            let mut sub = client.subscribe(&node_pub).await.expect("subscribe");
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
                .unwrap_or_else(|e| panic!("zmq-call.js printed no JSON ({e}): {out:?}"))
        }
        other => panic!("zmq-call.js did not finish ({other:?}):\n{}", call.dump()),
    };
    checks.run("Node DEALER client -> Rust ROUTER server", || {
        let reply = &report["reply"];
        assert_eq!(reply["from"], json!("rust"), "{report}");
        assert_eq!(reply["transport"], json!("zmq"));
        assert_eq!(reply["echo"], json!({"hello": "from node"}));
        assert_eq!(reply["key"], json!(rust_rpc));
    });
    checks.run("Node DEALER client -> Rust ROUTER server, error reply", || {
        assert_eq!(report["error"], json!("ERR_RUST_FAILED"), "{report}");
    });
    checks.run("Node DEALER client -> Rust ROUTER server, 50 at once", || {
        assert_eq!(report["concurrent_ok"], json!(50), "{report}");
    });
    if curve.is_some() {
        checks.run("Rust ROUTER counted the Node client's CURVE handshake", || {
            let stats = server.stats().curve;
            assert!(stats.established >= 1, "{stats:?}");
            assert_eq!(stats.failed_total(), 0, "{stats:?}");
        });
    }
    checks.run("Rust PUB -> Node SUB", || {
        let numbers: Vec<u64> = report["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("a list: {report}"))
            .iter()
            .map(|m| m["n"].as_u64().unwrap_or_else(|| panic!("{{\"n\": k}}: {m}")))
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
        publishing.stop(publisher).await;
        server.stop().await;
        grape.shutdown().await;
    });
    checks.finish();
}
