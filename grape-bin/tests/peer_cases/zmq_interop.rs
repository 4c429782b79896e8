// Rust ZeroMQ peers and libzmq through Node's `zeromq` package, both directions, RPC and
// PUB/SUB, written once against `rt` and the runtime helpers.
//
// One Grape of ours runs in-process on 127.0.0.1. `node/zmq-serve.js` serves Node's side
// (a ROUTER and a PUB); `node/zmq-call.js` calls ours (a DEALER, then a SUB) and prints
// what it got. Both run while the Rust side does the same. The whole exchange runs twice:
// with the NULL mechanism, and with CURVE on every socket (keys made here, passed to the
// Node scripts in the environment; our ROUTER lets in only the Node client's key).
// Each run also checks a mechanism mismatch both ways, MISMATCH_TRIES times each: our
// client of the other mechanism at Node's ROUTER, and libzmq DEALERs of the other mechanism
// (`node/zmq-mismatch.js`) at ours. Every try must be reported as the mismatch it is, on
// the side that sees it, never as a reset or a timeout.

use std::sync::Arc;
use std::time::Duration;

use rt::peer::{
    CurveClientConfig, CurveFailure, CurveKeyPair, CurveServerConfig, PeerClient, PeerConfig,
    PeerError, PubSubTransport, Publisher, PublisherConfig, RequestOptions, RpcError, RpcServer,
    RpcServerConfig, RpcTransport, WsMessage,
};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, NodeEnv, Proc, free_port, wait_until};

/// How often each mismatch is tried: libzmq hangs up on a mismatch at once, so a race
/// between its close and its greeting would show within a few tries.
const MISMATCH_TRIES: usize = 20;

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn opts() -> RequestOptions {
    RequestOptions::default()
        .timeout(Duration::from_secs(5))
        .attempts(2)
}

/// The key pairs of a CURVE run: each server's, and each client's. A second Node server
/// holds a key of its own, which our client has for that server's names only.
struct CurveKeys {
    node_server: CurveKeyPair,
    node_server_2: CurveKeyPair,
    rust_server: CurveKeyPair,
    node_client: CurveKeyPair,
    rust_client: CurveKeyPair,
}

impl CurveKeys {
    fn new() -> Self {
        CurveKeys {
            node_server: CurveKeyPair::from_secret([0x11; 32]),
            node_server_2: CurveKeyPair::from_secret([0x66; 32]),
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

/// One request by `client` at `service`, which speaks the other mechanism: it must fail
/// with ERR_ZMQ_SECURITY naming both, every time.
fn assert_mismatch(runtime: &Runtime, client: &PeerClient, service: &str, ours: &str, peer: &str) {
    for i in 0..MISMATCH_TRIES {
        let reply = runtime.block_on(client.request(service, json!(i), opts().attempts(1)));
        let err = reply.expect_err("a mismatch");
        let text = err.to_string();
        assert!(
            matches!(err, PeerError::Rpc(RpcError::Security(_)))
                && text.contains(&format!("we use {ours}, the peer uses {peer}")),
            "try {i}: {text}"
        );
    }
}

/// Runs `node/zmq-mismatch.js` at `port` (MISMATCH_TRIES handshakes, by libzmq CURVE
/// clients trusting `server_key` when given, else NULL ones) and returns the outcomes.
fn libzmq_handshakes(
    ctx: &Ctx,
    node: &NodeEnv,
    port: u16,
    server_key: Option<&CurveKeyPair>,
) -> Vec<String> {
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = node.command("zmq-mismatch.js", &[addr, MISMATCH_TRIES.to_string()]);
    if let Some(server) = server_key {
        let client = CurveKeyPair::from_secret([0x55; 32]);
        cmd.env("ZMQ_CURVE_SERVER_KEY", server.public().to_z85())
            .env("ZMQ_CURVE_CLIENT_PUBLIC", client.public().to_z85())
            .env("ZMQ_CURVE_CLIENT_SECRET", client.secret_z85());
    }
    let mut run = Proc::spawn(ctx, "zmq-mismatch", cmd).unwrap_or_else(|e| panic!("{e}"));
    let report: Value = match run.wait_exit(Duration::from_secs(10 + 6 * MISMATCH_TRIES as u64)) {
        Some(status) if status.success() => {
            let out = run.stdout_text();
            serde_json::from_str(out.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("zmq-mismatch.js printed no JSON ({e}): {out:?}"))
        }
        other => panic!("zmq-mismatch.js did not finish ({other:?}):\n{}", run.dump()),
    };
    let outcomes: Vec<String> = serde_json::from_value(report["outcomes"].clone())
        .unwrap_or_else(|e| panic!("outcomes ({e}): {report}"));
    assert_eq!(outcomes.len(), MISMATCH_TRIES, "{report}");
    outcomes
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
    // Node's ROUTER and PUB (zmq-serve.js), CURVE servers when given a secret key.
    let spawn_serve = |what: &str, rpc: &str, publish: &str, secret: Option<String>| {
        let (rpc_port, pub_port) = (free_port().to_string(), free_port().to_string());
        let args = [url.clone(), rpc.to_owned(), rpc_port, publish.to_owned(), pub_port];
        let mut cmd = node.command("zmq-serve.js", &args);
        if let Some(secret) = secret {
            cmd.env("ZMQ_CURVE_SERVER_SECRET", secret);
        }
        Proc::spawn(&ctx, what, cmd).unwrap_or_else(|e| panic!("{e}"))
    };
    let node_secret = curve.as_ref().map(|keys| keys.node_server.secret_z85());
    let serve = spawn_serve("zmq-serve", &node_rpc, &node_pub, node_secret);
    // CURVE only: a second Node ROUTER and PUB, with a key of their own.
    let node_rpc_2 = format!("{prefix}:node_zmq_2");
    let node_pub_2 = format!("{prefix}:node_zmq_pub_2");
    let serve_2 = curve.as_ref().map(|keys| {
        let secret = Some(keys.node_server_2.secret_z85());
        spawn_serve("zmq-serve-2", &node_rpc_2, &node_pub_2, secret)
    });

    // The Rust side: a ROUTER server and a PUB publishing {"n": k} every 100 ms.
    let plain_config = PeerConfig::new(url.clone())
        .transport(RpcTransport::Zmq)
        .pubsub_transport(PubSubTransport::Zmq);
    let config = match &curve {
        Some(keys) => plain_config.clone().curve(
            CurveClientConfig::new(keys.rust_client.clone(), keys.node_server.public())
                .service(node_rpc_2.clone(), keys.node_server_2.public())
                .service(node_pub_2.clone(), keys.node_server_2.public()),
        ),
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
    for serving in std::iter::once(&serve).chain(&serve_2) {
        wait_until("zmq-serve.js to announce", Duration::from_secs(15), || {
            let out = serving.stdout_text();
            if out.contains(r#""ready":true"#) {
                Ok(())
            } else {
                Err(format!("stdout {out:?} stderr {:?}", serving.stderr_text()))
            }
        });
    }

    let mut checks = Checks::new(&ctx);
    if serve_2.is_some() {
        checks.run("Rust client, a key per service -> two Node CURVE servers of two keys", || {
            let (first, second, numbers) = runtime.block_on(async {
                let first = client.request(&node_rpc, json!({"to": 1}), opts()).await;
                let second = client.request(&node_rpc_2, json!({"to": 2}), opts()).await;
                let mut sub = client.subscribe(&node_pub_2).await.expect("subscribe");
                let mut numbers = Vec::new();
                while numbers.len() < 2 {
                    match within(Duration::from_secs(10), sub.next_message()).await {
                        Some(Some(WsMessage::Text(t))) => numbers.push(t),
                        other => panic!("after {numbers:?}: {other:?}"),
                    }
                }
                (first, second, numbers)
            });
            assert_eq!(first.unwrap_or_else(|e| panic!("{e:?}"))["echo"], json!({"to": 1}));
            assert_eq!(second.unwrap_or_else(|e| panic!("{e:?}"))["echo"], json!({"to": 2}));
            assert!(numbers.iter().all(|t| t.contains("\"n\"")), "{numbers:?}");
        });
    }
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
            // libzmq hangs up as soon as it has read our NULL greeting; the rest of ours
            // waits for its first bytes, which come with its mechanism.
            assert_mismatch(&runtime, &plain, &node_rpc, "NULL", "CURVE");
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
    if curve.is_none() {
        checks.run("Rust CURVE client -> Node NULL server fails typed at once", || {
            let keys = CurveKeys::new();
            let curved = plain_config.clone().curve(CurveClientConfig::new(
                keys.rust_client.clone(),
                keys.node_server.public(),
            ));
            let curved = PeerClient::new(curved).expect("client");
            assert_mismatch(&runtime, &curved, &node_rpc, "CURVE", "NULL");
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
    // libzmq clients of the other mechanism at our ROUTER: CURVE ones at the NULL server,
    // NULL ones at the CURVE server. Both sides must see the mismatch: libzmq in its
    // monitor (it had our mechanism before we closed), we in the server's counters.
    let (what, trusted) = match &curve {
        None => ("Node CURVE client -> Rust NULL ROUTER", Some(CurveKeys::new().rust_server)),
        Some(_) => ("Node NULL client -> Rust CURVE ROUTER", None),
    };
    checks.run(&format!("{what}: a typed mismatch on both sides"), || {
        let before = server.stats().curve.failed(CurveFailure::Mismatch);
        let outcomes = libzmq_handshakes(&ctx, node, server.port(), trusted.as_ref());
        assert!(
            outcomes.iter().all(|o| o == "ERR_ZMTP_MECHANISM_MISMATCH"),
            "{outcomes:?}"
        );
        let counted = server.stats().curve.failed(CurveFailure::Mismatch) - before;
        assert!(counted >= MISMATCH_TRIES as u64, "{counted} counted");
    });
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
    drop(serve_2);
    runtime.block_on(async {
        publishing.stop(publisher).await;
        server.stop().await;
        grape.shutdown().await;
    });
    checks.finish();
}
