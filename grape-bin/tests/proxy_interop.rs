//! grenache-proxy between the real Node packages and our peers (pinned in `node/`), every
//! service found through one Grape of ours on 127.0.0.1:
//! Node grenache-nodejs-ws client -> proxy -> our ZeroMQ server; Node grenache-nodejs-http
//! client -> proxy -> Node ws server; our ZeroMQ client -> proxy -> Node http server.
//!
//! Needs Node.js 20+ and npm (it fails without them; `GRENACHE_SKIP_INTEROP=1` reports it as
//! ignored instead). The proxy runs on smol, in-process.

mod common;

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
    // Our ZeroMQ server, and the proxy's three routes.
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
            ],
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
    checks.finish();

    smol::block_on(async {
        proxy.stop().await;
        server.stop().await;
        grape.shutdown().await;
    });
    drop(node_servers);
}
