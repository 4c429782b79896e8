// Rust ZeroMQ peers and libzmq through Node's `zeromq` package, both directions, RPC and
// PUB/SUB, written once against `rt` and the runtime helpers.
//
// One Grape of ours runs in-process on 127.0.0.1. `node/zmq-serve.js` serves Node's side
// (a ROUTER and a PUB); `node/zmq-call.js` calls ours (a DEALER, then a SUB) and prints
// what it got. Both run while the Rust side does the same.

use std::sync::Arc;
use std::time::Duration;

use rt::peer::{
    PeerClient, PeerConfig, PeerError, PubSubTransport, Publisher, PublisherConfig,
    RequestOptions, RpcError, RpcServer, RpcServerConfig, RpcTransport, WsMessage,
};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, Proc, free_port, wait_until};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn opts() -> RequestOptions {
    RequestOptions::default()
        .timeout(Duration::from_secs(5))
        .attempts(2)
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_zeromq_and_rust_peers_interoperate() {
    let node = crate::common::node_env();
    let ctx = Ctx::new(&format!("zmq_interop_{RT}"));
    let runtime = Runtime::new();
    let prefix = ctx.name.clone();
    let grape = runtime.block_on(local_grape(23));
    let url = format!("http://{}", grape.local_api_addr());
    let (node_rpc, node_pub) = (format!("{prefix}:node_zmq"), format!("{prefix}:node_zmq_pub"));
    let (rust_rpc, rust_pub) = (format!("{prefix}:rust_zmq"), format!("{prefix}:rust_zmq_pub"));
    let serve = Proc::spawn(
        &ctx,
        "zmq-serve",
        node.command(
            "zmq-serve.js",
            &[
                url.clone(),
                node_rpc.clone(),
                free_port().to_string(),
                node_pub.clone(),
                free_port().to_string(),
            ],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The Rust side: a ROUTER server and a PUB publishing {"n": k} every 100 ms.
    let config = PeerConfig::new(url.clone())
        .transport(RpcTransport::Zmq)
        .pubsub_transport(PubSubTransport::Zmq);
    let client = PeerClient::new(config).expect("client");
    let (server, publisher, publishing) = runtime.block_on(async {
        let handler = |key: String, payload: Value| async move {
            if payload.get("fail") == Some(&json!(true)) {
                return Err("ERR_RUST_FAILED".to_string());
            }
            Ok(json!({"echo": payload, "key": key, "from": "rust", "transport": "zmq"}))
        };
        let config = RpcServerConfig::new(RpcTransport::Zmq).listen_on(LOCALHOST, 0);
        let server = RpcServer::start(&client, &rust_rpc, config, handler)
            .await
            .expect("ZeroMQ server");
        let config = PublisherConfig::new()
            .listen_on(LOCALHOST, 0)
            .transport(PubSubTransport::Zmq);
        let publisher = Arc::new(
            Publisher::start(&client, &rust_pub, config)
                .await
                .expect("ZeroMQ publisher"),
        );
        let publishing = Publishing::start(&publisher);
        (server, publisher, publishing)
    });
    let mut call = Proc::spawn(
        &ctx,
        "zmq-call",
        node.command("zmq-call.js", &[url.clone(), rust_rpc.clone(), rust_pub.clone()]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
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
