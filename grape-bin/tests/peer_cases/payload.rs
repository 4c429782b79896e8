// Payload fidelity (issue 17) between Rust peers and the real Node peers, written once
// against `rt` and the runtime helpers: JSON texts that Node's JSON.stringify wrote
// (`node/payload-gen.js`: keys in any order, control characters, emoji, lone surrogates,
// numbers from 5e-324 to 1.7976931348623157e+308) go through echo servers in both
// directions over HTTP, WebSocket and ZeroMQ, and through publishers in both directions
// over WebSocket and ZeroMQ. Every text must come back byte for byte, and every text with a
// lone surrogate must be refused with ERR_PAYLOAD_LONE_SURROGATE (docs/protocol.md §8).
//
// One Grape of ours runs in-process on 127.0.0.1. `node/payload-serve.js` serves Node's
// side; `node/payload-call.js` calls ours and prints what it found.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use grenache_core::peer::{PayloadError, payload_text};
use rt::peer::{
    PeerClient, PeerConfig, PeerError, PubSubTransport, Publisher, PublisherConfig,
    RequestOptions, RpcError, RpcServer, RpcServerConfig, RpcTransport, WsMessage,
};
use rt::{GrapeServer, ServerConfig};
use serde_json::{Value, json};

use crate::common::{Checks, Ctx, Proc, free_port, last_json, wait_script_ready};

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Texts per run: enough for every kind of value to show up, a few seconds per transport.
const CASES: usize = 300;

/// One generated text and whether it holds a lone surrogate.
#[derive(Clone)]
struct Case {
    text: String,
    lone: bool,
}

fn opts() -> RequestOptions {
    RequestOptions::default()
        .timeout(Duration::from_secs(5))
        .attempts(1)
}

/// The handler of every Rust server: echo, or `{"fail": msg}` -> `Err(msg)`.
async fn echo(_key: String, payload: Value) -> Result<Value, String> {
    match payload.as_object().map(|m| (m.len(), m.get("fail"))) {
        Some((1, Some(Value::String(msg)))) => Err(msg.clone()),
        _ => Ok(payload),
    }
}

/// Sends every case to `name` through `client` and returns the problems found.
fn send_all(runtime: &Runtime, client: &PeerClient, name: &str, cases: &[Case]) -> Vec<String> {
    let answers = runtime.block_on(async {
        let calls: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let (client, name, case) = (client.clone(), name.to_owned(), case.clone());
                spawn(async move {
                    // A Rust value cannot hold a lone surrogate: ask Node to send case i.
                    let payload = if case.lone {
                        json!({ "lone": i })
                    } else {
                        serde_json::from_str(&case.text).expect("Node wrote JSON")
                    };
                    (case, client.request(&name, payload, opts()).await)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await);
        }
        answers
    });
    let refused = Err(PeerError::Rpc(RpcError::ReplyPayload(
        PayloadError::LoneSurrogate,
    )));
    answers
        .into_iter()
        .filter_map(|(case, got)| match (&got, case.lone) {
            (Ok(v), false) if payload_text(v) == case.text => None,
            (Err(_), true) if got == refused => None,
            _ => Some(format!("sent {} got {got:?}", case.text)),
        })
        .collect()
}

/// Takes messages from a subscription until every text was seen (or 15 s pass); returns
/// how many distinct texts came and the messages that were not one of them.
fn receive_all(
    runtime: &Runtime,
    client: &PeerClient,
    name: &str,
    cases: &[Case],
) -> (usize, Vec<String>) {
    let known: HashSet<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    runtime.block_on(async {
        let mut sub = client.subscribe(name).await.expect("subscribe");
        let (mut seen, mut strangers) = (HashSet::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(15);
        while seen.len() < known.len() && Instant::now() < deadline {
            match within(Duration::from_secs(5), sub.next_message()).await {
                Some(Some(WsMessage::Text(t))) if known.contains(t.as_str()) => {
                    seen.insert(t);
                }
                Some(Some(other)) => strangers.push(format!("{other:?}")),
                Some(None) | None => break,
            }
        }
        (seen.len(), strangers)
    })
}

/// A part of `payload-call.js`'s report: every case answered as it should be.
fn check_part(report: &Value, part: &str, cases: &[Case]) {
    let got = &report[part];
    let lone = cases.iter().filter(|c| c.lone).count();
    assert_eq!(got["bad"], json!([]), "Node's {part}: {got}");
    assert_eq!(got["ok"], json!(cases.len() - lone), "Node's {part}: {got}");
    assert_eq!(got["refused"], json!(lone), "Node's {part}: {got}");
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn payloads_pass_between_node_and_rust_peers_unchanged() {
    let node = crate::common::node_env();
    let ctx = Ctx::new(&format!("payload_interop_{RT}"));
    let runtime = Runtime::new();
    let prefix = ctx.name.clone();
    let texts_file = ctx.dir.join("texts.json");
    let texts = texts_file.to_string_lossy().into_owned();
    node.run_json(
        &ctx,
        "payload-gen",
        "payload-gen.js",
        &["17".into(), CASES.to_string(), texts.clone()],
        Duration::from_secs(30),
    );
    let generated: Value = serde_json::from_slice(&std::fs::read(&texts_file).expect("texts"))
        .expect("payload-gen.js wrote JSON");
    let cases: Vec<Case> = generated
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("a text").to_owned(),
            lone: c["lone"].as_bool().expect("a flag"),
        })
        .collect();
    // The test must be able to fail: both kinds of case are there.
    assert_eq!(cases.len(), CASES);
    assert!(cases.iter().filter(|c| c.lone).count() >= 10, "too few lone surrogates");
    // Small values repeat (`0`, `{}`); a subscriber must see each distinct text.
    let distinct = cases.iter().map(|c| &c.text).collect::<HashSet<_>>().len();

    let grape = runtime.block_on(async {
        let mut config = ServerConfig::new([27; 32]);
        config.bind = LOCALHOST;
        config.dht_port = 0;
        config.api_port = 0;
        GrapeServer::start(config).await.expect("start a Grape")
    });
    let url = format!("http://{}", grape.local_api_addr());
    let serve = Proc::spawn(
        &ctx,
        "payload-serve",
        node.command(
            "payload-serve.js",
            &[url.clone(), prefix.clone(), texts.clone()]
                .into_iter()
                .chain((0..5).map(|_| free_port().to_string()))
                .collect::<Vec<_>>(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let http_client = PeerClient::new(PeerConfig::new(url.clone())).expect("client");
    let ws_client =
        PeerClient::new(PeerConfig::new(url.clone()).transport(RpcTransport::Ws)).expect("client");
    let zmq_client = PeerClient::new(
        PeerConfig::new(url.clone())
            .transport(RpcTransport::Zmq)
            .pubsub_transport(PubSubTransport::Zmq),
    )
    .expect("client");

    // The Rust side: three echo servers and two publishers sending every text in turn.
    let publishing = Arc::new(AtomicBool::new(true));
    let (servers, publishers, publish_task) = runtime.block_on(async {
        let mut servers = Vec::new();
        for (transport, name) in [
            (RpcTransport::Http, "rust_http"),
            (RpcTransport::Ws, "rust_ws"),
            (RpcTransport::Zmq, "rust_zmq"),
        ] {
            let config = RpcServerConfig::new(transport).listen_on(LOCALHOST, 0);
            let server = RpcServer::start(&http_client, &format!("{prefix}:{name}"), config, echo)
                .await
                .expect("echo server");
            servers.push(server);
        }
        let mut publishers = Vec::new();
        for (transport, name) in [
            (PubSubTransport::Ws, "rust_ws_pub"),
            (PubSubTransport::Zmq, "rust_zmq_pub"),
        ] {
            let config = PublisherConfig::new()
                .listen_on(LOCALHOST, 0)
                .transport(transport);
            let publisher = Publisher::start(&http_client, &format!("{prefix}:{name}"), config)
                .await
                .expect("publisher");
            publishers.push(Arc::new(publisher));
        }
        let (ps, on) = (publishers.clone(), Arc::clone(&publishing));
        let texts: Vec<String> = cases.iter().map(|c| c.text.clone()).collect();
        let publish_task = spawn(async move {
            let mut n = 0;
            while on.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    for p in &ps {
                        let _ = p.publish_text(texts[n % texts.len()].clone());
                    }
                    n += 1;
                }
                sleep(Duration::from_millis(5)).await;
            }
        });
        (servers, publishers, publish_task)
    });
    let mut call = Proc::spawn(
        &ctx,
        "payload-call",
        node.command("payload-call.js", &[url.clone(), prefix.clone(), texts]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_script_ready(&serve, Duration::from_secs(15));

    let mut checks = Checks::new(&ctx);
    for (client, name) in [
        (&http_client, "node_http"),
        (&ws_client, "node_ws"),
        (&zmq_client, "node_zmq"),
    ] {
        checks.run(&format!("Rust client -> Node {name}, {CASES} texts"), || {
            let problems = send_all(&runtime, client, &format!("{prefix}:{name}"), &cases);
            assert!(
                problems.is_empty(),
                "{} of {CASES}: {:#?}",
                problems.len(),
                &problems[..problems.len().min(5)]
            );
        });
    }
    for (client, name) in [(&http_client, "node_ws_pub"), (&zmq_client, "node_zmq_pub")] {
        checks.run(&format!("Node publisher -> Rust subscriber, {name}"), || {
            let (seen, strangers) =
                receive_all(&runtime, client, &format!("{prefix}:{name}"), &cases);
            assert_eq!(strangers, Vec::<String>::new());
            assert_eq!(seen, distinct, "distinct texts received");
        });
    }

    let report = last_json(&mut call, Duration::from_secs(90));
    for part in ["http", "ws", "zmq"] {
        checks.run(&format!("Node client -> Rust {part} server, {CASES} texts"), || {
            check_part(&report, part, &cases);
        });
    }
    checks.run("a handler's Err(\"boom\") reads as an error in Node", || {
        // HTTP and WS carry the message as is, as Node's own servers do; ZeroMQ prefixes
        // ERR_, the only errors an original grenache-nodejs-zmq client recognises.
        assert_eq!(report["http"]["error"], json!("boom"), "{report}");
        assert_eq!(report["ws"]["error"], json!("boom"), "{report}");
        assert_eq!(report["zmq"]["error"], json!("ERR_boom"), "{report}");
    });
    for part in ["ws_sub", "zmq_sub"] {
        checks.run(&format!("Rust publisher -> Node subscriber, {part}"), || {
            assert_eq!(report[part]["bad"], json!([]), "{report}");
            assert_eq!(report[part]["seen"], json!(distinct), "{report}");
        });
    }
    drop(call);
    drop(serve);
    publishing.store(false, Ordering::Relaxed);
    runtime.block_on(async {
        publish_task.await;
        for publisher in publishers {
            if let Some(publisher) = Arc::into_inner(publisher) {
                publisher.stop().await;
            }
        }
        for server in servers {
            server.stop().await;
        }
        grape.shutdown().await;
    });
    checks.finish();
}
