// Rust and Node peers with TLS on, both directions (see tls_interop.rs). Node's side is
// `node/tls-serve.js` (servers and a publisher) and `node/tls-call.js` (clients and a
// subscriber); the Rust side runs the same in-process, with one Grape of ours.

use std::sync::Arc;
use std::time::Duration;

use grenache_io::testkit::pki::{Issued, TestCa};
use rt::peer::{
    PeerClient, PeerConfig, Publisher, PublisherConfig, RequestContext, RequestOptions,
    RpcServer, RpcServerConfig, RpcTransport, WsMessage,
};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, Proc, free_port, last_json, wait_script_ready};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Writes what the Node scripts read: `ca.pem`, `node.pem`, `node-key.pem`.
fn write_pems(dir: &std::path::Path, ca: &TestCa, node: &Issued) {
    std::fs::create_dir_all(dir).expect("PEM folder");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
    std::fs::write(dir.join("node.pem"), &node.cert_pem).expect("node.pem");
    std::fs::write(dir.join("node-key.pem"), &node.key_pem).expect("node-key.pem");
}

/// Answers with the payload and the certificate the caller showed.
async fn echo_identity(
    tag: &'static str,
    payload: Value,
    context: RequestContext,
) -> Result<Value, String> {
    let client = context
        .peer
        .map(|p| json!({"subject": p.subject, "fingerprint256": p.sha256.to_string()}));
    Ok(json!({"echo": payload, "from": "rust", "transport": tag, "client": client}))
}

/// A reply's `client` part names `leaf` (Node reports `cn`, we report `subject`).
fn names(client: &Value, cn: &str, leaf: &Issued) -> bool {
    let fingerprint = client["fingerprint256"] == json!(leaf.fingerprint.to_string());
    let named = client["cn"] == json!(cn)
        || client["subject"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("CN={cn}")));
    fingerprint && named
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_and_rust_peers_interoperate_over_tls() {
    let node = crate::common::node_env();
    let ctx = Ctx::new(&format!("tls_interop_{RT}"));
    let runtime = Runtime::new();
    let prefix = ctx.name.clone();
    let ca = TestCa::new("grenache interop CA");
    let rust_leaf = ca.issue("rust");
    let node_leaf = ca.issue("node");
    let pem_dir = ctx.dir.join("pem");
    write_pems(&pem_dir, &ca, &node_leaf);
    let grape = runtime.block_on(local_grape(25));
    let url = format!("http://{}", grape.local_api_addr());
    let ports = [free_port(), free_port(), free_port()];
    let serve = Proc::spawn(
        &ctx,
        "tls-serve",
        node.command(
            "tls-serve.js",
            &[
                url.clone(),
                prefix.clone(),
                pem_dir.display().to_string(),
                ports[0].to_string(),
                ports[1].to_string(),
                ports[2].to_string(),
                rust_leaf.fingerprint.to_string(),
            ],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tls = ca.client(Some(&rust_leaf));
    let http_client = PeerClient::new(PeerConfig::new(url.clone()).tls(tls.clone())).expect("client");
    let ws_client =
        PeerClient::new(PeerConfig::new(url.clone()).transport(RpcTransport::Ws).tls(tls))
            .expect("client");
    // Our servers take only Node's certificate, as its WS server takes only ours.
    let server_tls = ca
        .server(&rust_leaf)
        .allow_fingerprints([node_leaf.fingerprint]);
    let (https, wss, publisher, publishing) = runtime.block_on(async {
        let server = |transport: RpcTransport, tag: &'static str| {
            let config = RpcServerConfig::new(transport)
                .listen_on(LOCALHOST, 0)
                .tls(server_tls.clone());
            RpcServer::listen_with_context(config, move |_key, payload, context| {
                echo_identity(tag, payload, context)
            })
        };
        let https = server(RpcTransport::Http, "https").await.expect("HTTPS server");
        let wss = server(RpcTransport::Ws, "wss").await.expect("WSS server");
        let config = PublisherConfig::new()
            .listen_on(LOCALHOST, 0)
            .tls(server_tls.clone());
        let publisher = Arc::new(Publisher::listen(config).await.expect("publisher"));
        for (server, name) in [(&https, "rust_https"), (&wss, "rust_wss")] {
            server
                .announce(&http_client, &format!("{prefix}:{name}"))
                .await
                .expect("announce");
        }
        publisher
            .announce(&http_client, &format!("{prefix}:rust_wss_pub"))
            .await
            .expect("announce");
        let publishing = Publishing::start(&publisher);
        (https, wss, publisher, publishing)
    });
    let mut call = Proc::spawn(
        &ctx,
        "tls-call",
        node.command(
            "tls-call.js",
            &[url.clone(), prefix.clone(), pem_dir.display().to_string()],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_script_ready(&serve, Duration::from_secs(15));
    let opts = RequestOptions::default()
        .timeout(Duration::from_secs(5))
        .attempts(2);

    let mut checks = Checks::new(&ctx);
    for (client, name) in [(&http_client, "node_https"), (&ws_client, "node_wss")] {
        checks.run(&format!("Rust client -> Node {name} server"), || {
            let name = format!("{prefix}:{name}");
            let reply = runtime.block_on(client.request(&name, json!({"n": 1}), opts.clone()));
            let reply = reply.unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(reply["from"], json!("node"));
            assert_eq!(reply["echo"], json!({"n": 1}));
            assert!(names(&reply["client"], "rust", &rust_leaf), "{reply}");
        });
    }
    checks.run("Node WSS publisher -> Rust subscriber", || {
        let name = format!("{prefix}:node_wss_pub");
        let got = runtime.block_on(async {
            let mut sub = http_client.subscribe(&name).await.expect("subscribe");
            let mut got = Vec::new();
            while got.len() < 3 {
                match within(Duration::from_secs(10), sub.next_message()).await {
                    Some(Some(WsMessage::Text(text))) => got.push(text),
                    other => panic!("after {got:?}: {other:?}"),
                }
            }
            got
        });
        assert!(got.iter().all(|t| t.starts_with(r#"{"n":"#)), "{got:?}");
    });

    let report = last_json(&mut call, Duration::from_secs(25));
    for (part, transport) in [("https", "https"), ("wss", "wss")] {
        checks.run(&format!("Node {part} client -> Rust server"), || {
            let got = &report[part];
            assert_eq!(got["ok"], json!(true), "Node's {part}: {got}");
            let data = &got["data"];
            assert_eq!(data["from"], json!("rust"));
            assert_eq!(data["transport"], json!(transport));
            assert!(names(&data["client"], "node", &node_leaf), "{data}");
        });
    }
    checks.run("Rust WSS publisher -> Node subscriber", || {
        let got = &report["sub"];
        assert_eq!(got["ok"], json!(true), "Node's sub: {got}");
        assert_eq!(got["data"].as_array().map(Vec::len), Some(3), "{got}");
    });
    checks.run("no TLS handshake failed on our servers", || {
        for stats in [https.stats().tls, wss.stats().tls, publisher.tls_stats()] {
            assert_eq!(stats.failed_total(), 0, "{stats:?}");
            assert!(stats.established >= 1, "{stats:?}");
        }
    });
    drop(call);
    drop(serve);
    runtime.block_on(async {
        publishing.stop(publisher).await;
        https.stop().await;
        wss.stop().await;
        grape.shutdown().await;
    });
    checks.finish();
}
