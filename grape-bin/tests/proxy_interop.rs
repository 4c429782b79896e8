//! grenache-proxy between the real Node packages and our peers (pinned in `node/`), every
//! service found through one Grape of ours on 127.0.0.1:
//! Node grenache-nodejs-ws client -> proxy -> our ZeroMQ server; Node grenache-nodejs-http
//! client -> proxy -> Node ws server; our ZeroMQ client -> proxy -> Node http server; a libzmq
//! subscriber (the `zeromq` package, grenache-nodejs-zmq framing) receiving what a Node ws
//! publisher sends; Node's plain `fetch` calling our ZeroMQ server and reading the Node ws
//! publisher through the gateway.
//!
//! Needs Node.js 20+ and npm (it fails without them; `GRENACHE_SKIP_INTEROP=1` reports it as
//! ignored instead). The proxy runs on smol, in-process.

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use grenache_proxy::{Proxy, Route, Settings};
use grenache_smol::peer::{
    PeerClient, PeerConfig, RequestOptions, RpcServer, RpcServerConfig, RpcTransport,
};
use grenache_smol::{GrapeServer, ServerConfig, Smol};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, Proc, free_port, wait_script_ready};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn route(text: &str) -> Route {
    text.parse().expect("a valid route")
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_clients_and_servers_talk_across_transports_through_the_proxy() {
    let node = common::node_env();
    let ctx = Ctx::new("proxy_interop");
    let p = ctx.name.clone();
    let grape = smol::block_on(async {
        let mut config = ServerConfig::new([41; 32]);
        config.bind = LOCALHOST;
        config.dht_port = 0;
        config.api_port = 0;
        GrapeServer::start(config).await.expect("start a Grape")
    });
    let url = format!("http://{}", grape.local_api_addr());

    // Node servers: a ws one and an http one (echo `{echo, from: "node", transport}`).
    let mut node_servers = Vec::new();
    for kind in ["ws", "http"] {
        let args = [
            url.clone(),
            format!("{p}:node_{kind}"),
            free_port().to_string(),
            kind.to_owned(),
        ];
        let proc = Proc::spawn(
            &ctx,
            &format!("rpc-server-{kind}"),
            node.command("rpc-server.js", &args),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        wait_script_ready(&proc, Duration::from_secs(30));
        node_servers.push(proc);
    }
    // A Node ws publisher ({"n": i} every 100 ms), with RPC servers we do not use here.
    let ps = format!("{p}:ps");
    let args = [
        url.clone(),
        ps.clone(),
        free_port().to_string(),
        free_port().to_string(),
        free_port().to_string(),
    ];
    let publisher = Proc::spawn(&ctx, "peer-serve", node.command("peer-serve.js", &args))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_script_ready(&publisher, Duration::from_secs(30));
    node_servers.push(publisher);
    // Our ZeroMQ server, and the proxy's routes.
    let zmq =
        PeerClient::new(PeerConfig::new(url.clone()).transport(RpcTransport::Zmq)).expect("client");
    let (server, proxy) = smol::block_on(async {
        let handler = |_key: String, payload: Value| async move {
            match payload.get("fail") {
                Some(_) => Err("ERR_RUST_FAILED".to_owned()),
                None => Ok(json!({ "echo": payload, "from": "rust", "transport": "zmq" })),
            }
        };
        let config = RpcServerConfig::new(RpcTransport::Zmq).listen_on(LOCALHOST, 0);
        let server = RpcServer::start(&zmq, &format!("{p}:rust_zmq"), config, handler)
            .await
            .expect("ZeroMQ server");
        let settings = Settings {
            grape: url.clone(),
            bind: LOCALHOST,
            rpc: vec![
                route(&format!("{p}:via_ws@ws={p}:rust_zmq@zmq")),
                route(&format!("{p}:via_http@http={p}:node_ws@ws")),
                route(&format!("{p}:via_zmq@zmq={p}:node_http@http")),
                route(&format!("{p}:zmq_rpc@zmq={p}:rust_zmq@zmq")),
            ],
            pubsub: vec![route(&format!("{p}:zmq_pub@zmq={ps}:node_pub@ws"))],
            gateway: Some(0),
            ..Settings::default()
        };
        let proxy = Proxy::<Smol>::start(&settings)
            .await
            .expect("start the proxy");
        (server, proxy)
    });

    let mut checks = Checks::new(&ctx);
    let call = |name: &str, kind: &str, payload: &str| {
        let args = [
            url.clone(),
            format!("{p}:{name}"),
            kind.to_owned(),
            payload.to_owned(),
        ];
        node.run_json(
            &ctx,
            &format!("rpc-client-{name}"),
            "rpc-client.js",
            &args,
            Duration::from_secs(30),
        )
    };
    // A one-shot Node script NAME.js, its JSON output.
    let script = |name: &str, args: &[String]| {
        node.run_json(
            &ctx,
            name,
            &format!("{name}.js"),
            args,
            Duration::from_secs(30),
        )
    };
    checks.run("Node ws client -> proxy -> our ZeroMQ server", || {
        let got = call("via_ws", "ws", r#"{"n":1}"#);
        assert_eq!(got["ok"], true, "{got}");
        assert_eq!(got["data"]["echo"], json!({ "n": 1 }), "{got}");
        assert_eq!(got["data"]["from"], "rust", "{got}");
        assert_eq!(got["data"]["transport"], "zmq", "{got}");
    });
    checks.run(
        "the ZeroMQ server's error reaches the Node ws client unchanged",
        || {
            let got = call("via_ws", "ws", r#"{"fail":true}"#);
            assert_eq!(got, json!({ "ok": false, "err": "ERR_RUST_FAILED" }));
        },
    );
    checks.run("Node http client -> proxy -> Node ws server", || {
        let got = call("via_http", "http", r#"{"n":2}"#);
        assert_eq!(got["ok"], true, "{got}");
        assert_eq!(got["data"]["from"], "node", "{got}");
        assert_eq!(got["data"]["transport"], "ws", "{got}");
    });
    checks.run("our ZeroMQ client -> proxy -> Node http server", || {
        let opts = RequestOptions::default().timeout(Duration::from_secs(10));
        let got = smol::block_on(zmq.request(&format!("{p}:via_zmq"), json!({ "n": 3 }), opts));
        let got = got.expect("an answer through the proxy");
        assert_eq!(got["from"], "node", "{got}");
        assert_eq!(got["transport"], "http", "{got}");
    });
    checks.run(
        "a libzmq subscriber gets the Node ws publisher's messages",
        || {
            let args = [url.clone(), format!("{p}:zmq_rpc"), format!("{p}:zmq_pub")];
            let got = script("zmq-call", &args);
            assert_eq!(got.get("fail"), None, "{got}");
            assert_eq!(got["error"], "ERR_RUST_FAILED", "{got}");
            let messages = got["messages"].as_array().expect("messages");
            assert_eq!(messages.len(), 3, "{got}");
            assert!(messages.iter().all(|m| m["n"].is_u64()), "{got}");
        },
    );
    checks.run(
        "Node fetch calls our ZeroMQ server and reads the ws publisher through the gateway",
        || {
            let gateway = proxy.gateway().expect("a gateway").local_addr();
            let args = [
                format!("http://{gateway}"),
                format!("/rpc/{p}:rust_zmq?via=zmq"),
                r#"{"n":5}"#.to_owned(),
                format!("/sub/{ps}:node_pub?via=ws"),
            ];
            let got = script("gateway-fetch", &args);
            assert_eq!(got.get("fail"), None, "{got}");
            assert_eq!(got["status"], 200, "{got}");
            assert_eq!(got["reply"]["echo"], json!({ "n": 5 }), "{got}");
            assert_eq!(got["reply"]["from"], "rust", "{got}");
            assert_eq!(got["sub_status"], 200, "{got}");
            assert_eq!(got["content_type"], "text/event-stream", "{got}");
            let events = got["events"].as_array().expect("events");
            assert_eq!(events.len(), 3, "{got}");
            assert!(events.iter().all(|e| e["n"].is_u64()), "{got}");
        },
    );
    checks.finish();

    smol::block_on(async {
        proxy.stop().await;
        server.stop().await;
        grape.shutdown().await;
    });
    drop(node_servers);
}
