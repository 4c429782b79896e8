//! The runtime suite: our Grapes only, once on smol and once on tokio (`smol::*`, `tokio::*`).
//!
//! Each test starts its own Grapes on loopback and talks to them through the HTTP and
//! WebSocket APIs the way grenache clients do, checking the replies the Node Grape 1.0 gives
//! (docs/protocol.md §3) and, where the Node Grape crashes, that ours answers an error.

use crate::common;

use common::http;
use common::ws::WsClient;
use common::{
    Checks, Ctx, Grape, GrapeOpts, Kind, PROPAGATION, Proc, Rt, assert_hex, free_port, peer,
    start_grapes, terminate_all, wait_item, wait_until,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

both_runtimes!(
    announce_lookup,
    immutable_put_get,
    mutable_put_get,
    error_replies,
    websocket_api,
    health_and_metrics,
    ipv6_announce_is_listed_once,
    watch,
);

fn two_grapes(ctx: &Ctx, rt: Rt) -> Vec<Grape> {
    start_grapes(
        ctx,
        &[Kind::Ours(rt), Kind::Ours(rt)],
        GrapeOpts {
            ws: true,
            ..GrapeOpts::default()
        },
    )
}

fn announce_lookup(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_announce_lookup_{}", rt.as_str()));
    let grapes = two_grapes(&ctx, rt);
    let (a, b) = (&grapes[0], &grapes[1]);
    let mut checks = Checks::new(&ctx);
    let name = format!("rt-{}:svc", rt.as_str());
    let port = free_port();

    checks.run(
        "announce replies with a number, as the Node Grape does",
        || {
            let reply = a.announce(&name, port).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                reply.is_number(),
                "/announce replied {reply}, expected a number"
            );
        },
    );
    checks.run(
        "lookup on the announcing Grape lists the peer at once",
        || {
            let found = a.lookup(&name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(found, vec![peer(port)]);
        },
    );
    checks.run("lookup on the second Grape lists it within 2 s", || {
        let start = Instant::now();
        let found = b.wait_lookup(&name, &[peer(port)], PROPAGATION);
        eprintln!(
            "[{}] visible on the second Grape after {:?}",
            ctx.name,
            start.elapsed()
        );
        assert_eq!(found, vec![peer(port)], "one announce, one distinct peer");
    });
    checks.run(
        "a second port for the same name is listed too, without duplicates",
        || {
            let port2 = free_port();
            b.announce(&name, port2).unwrap_or_else(|e| panic!("{e}"));
            let found = a.wait_lookup(&name, &[peer(port), peer(port2)], PROPAGATION);
            let mut sorted = found.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), found.len(), "duplicates in {found:?}");
        },
    );
    checks.run("lookup of a name nobody announced is an empty list", || {
        assert_eq!(a.lookup(&format!("{name}-never")), Ok(vec![]));
    });
    checks.finish();
}

fn immutable_put_get(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_immutable_{}", rt.as_str()));
    let grapes = two_grapes(&ctx, rt);
    let (a, b) = (&grapes[0], &grapes[1]);
    let mut checks = Checks::new(&ctx);
    // SHA-1 of the bencoded "hello" (5:hello), as the Node Grape answers (protocol notes §3).
    let target = "e28910ea0adb94dd45ced75fbff3e135c01bc437";

    checks.run("put replies with the hex target", || {
        assert_eq!(a.call("put", &json!({"v": "hello"})), Ok(json!(target)));
    });
    checks.run("get on the same Grape returns v and a hex id", || {
        let item = a
            .call("get", &json!(target))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(item["v"], json!("hello"), "{item}");
        assert_hex(&item["id"], 20, &item);
    });
    checks.run("get on the second Grape returns it within 2 s", || {
        let item = wait_item(b, &json!(target), |item| item["v"] == json!("hello"));
        assert_hex(&item["id"], 20, &item);
    });
    checks.run("get with a malformed hash is ERR_GRAPE_HASH_FORMAT", || {
        assert_eq!(
            b.call("get", &json!("zz-not-hex")),
            Ok(json!("ERR_GRAPE_HASH_FORMAT"))
        );
    });
    checks.finish();
}

fn mutable_put_get(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_mutable_{}", rt.as_str()));
    let grapes = two_grapes(&ctx, rt);
    let (a, b) = (&grapes[0], &grapes[1]);
    let mut checks = Checks::new(&ctx);
    let seed = [7u8; 32];
    let salt = format!("salt-{}", rt.as_str());
    let one = common::sign_mutable(seed, 1, "mutable one", &salt);
    let two = common::sign_mutable(seed, 2, "mutable two", &salt);
    let target = one["target"].clone();
    let put = |item: &Value, v: &str, seq: i64, extra: Value| {
        let mut data =
            json!({"v": v, "k": item["k"], "sig": item["sig"], "seq": seq, "salt": salt});
        if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        let resp = a
            .post("put", &data)
            .unwrap_or_else(|e| panic!("/put {data}: {e}"));
        let body = resp.json().unwrap_or_else(|_| json!(resp.text()));
        (resp.status, body)
    };
    let query = json!({"hash": target, "salt": salt});

    checks.run("signed put (seq 1) replies with the target", || {
        assert_eq!(
            put(&one, "mutable one", 1, json!({})),
            (200, target.clone())
        );
    });
    checks.run(
        "get {hash, salt} on the second Grape returns v, seq, k, sig, salt",
        || {
            let item = wait_item(b, &query, |item| item["seq"] == json!(1));
            assert_eq!(item["v"], json!("mutable one"), "{item}");
            assert_eq!(item["k"], one["k"], "{item}");
            assert_eq!(item["sig"], one["sig"], "{item}");
            assert_eq!(item["salt"], json!(salt), "{item}");
        },
    );
    checks.run("seq 2 replaces it on both Grapes", || {
        assert_eq!(
            put(&two, "mutable two", 2, json!({})),
            (200, target.clone())
        );
        for g in [a, b] {
            let item = wait_item(g, &query, |item| item["seq"] == json!(2));
            assert_eq!(item["v"], json!("mutable two"), "{item}");
        }
    });
    checks.run("replaying seq 1 is refused with an error string", || {
        let reply = put(&one, "mutable one", 1, json!({}));
        assert_refused(&reply, &target);
    });
    checks.run("a signature that does not match v is refused", || {
        let reply = put(&two, "forged", 2, json!({}));
        assert_refused(&reply, &target);
        let item = a.call("get", &query).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            item["v"],
            json!("mutable two"),
            "the forged value got stored: {item}"
        );
    });
    checks.run(
        "a cas that does not match the stored seq is refused",
        || {
            let three = common::sign_mutable(seed, 3, "mutable three", &salt);
            let reply = put(&three, "mutable three", 3, json!({"cas": 1}));
            assert_refused(&reply, &target);
        },
    );
    checks.finish();
}

fn error_replies(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_errors_{}", rt.as_str()));
    let mut grapes = two_grapes(&ctx, rt);
    let mut checks = Checks::new(&ctx);
    {
        let a = &grapes[0];
        checks.run(
            "a body that is not JSON is 500 ERR_GRAPE_PAYLOAD_INVALID",
            || {
                let resp = http::post(a.api, "/lookup", b"garbage").expect("POST");
                assert_eq!(
                    (resp.status, resp.text()),
                    (500, "ERR_GRAPE_PAYLOAD_INVALID".into())
                );
            },
        );
        checks.run("a 9 KB body is 413 ERR_GRAPE_PAYLOAD_SIZE", || {
            let body = json!({"rid": "r", "data": "a".repeat(9 * 1024)}).to_string();
            let resp = http::post(a.api, "/lookup", body.as_bytes()).expect("POST");
            assert_eq!(
                (resp.status, resp.text()),
                (413, "ERR_GRAPE_PAYLOAD_SIZE".into())
            );
        });
        checks.run("a 1 MB body is refused without being read whole", || {
            let body = json!({"rid": "r", "data": "a".repeat(1 << 20)}).to_string();
            let start = Instant::now();
            // The Grape may close before it has read everything: then the client sees a
            // reset instead of the 413. Either is fine; a 200 or a hang is not.
            match http::post(a.api, "/lookup", body.as_bytes()) {
                Ok(resp) => assert_eq!(
                    (resp.status, resp.text()),
                    (413, "ERR_GRAPE_PAYLOAD_SIZE".into())
                ),
                Err(e) => eprintln!("[{}] 1 MB body: connection error {e}", ctx.name),
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "took {:?}",
                start.elapsed()
            );
        });
        checks.run("an unknown path is 200 \"ERR_REQ_NOTFOUND\"", || {
            let resp = a.post("lookupx", &json!("nope")).expect("POST");
            assert_eq!(
                (resp.status, resp.text()),
                (200, r#""ERR_REQ_NOTFOUND""#.into())
            );
        });
        checks.run(
            "lookup of a number or of nothing is \"ERR_GRAPE_LOOKUP\"",
            || {
                assert_eq!(a.call("lookup", &json!(5)), Ok(json!("ERR_GRAPE_LOOKUP")));
                let resp = http::post(a.api, "/lookup", br#"{"rid":"r"}"#).expect("POST");
                assert_eq!(
                    (resp.status, resp.text()),
                    (200, r#""ERR_GRAPE_LOOKUP""#.into())
                );
            },
        );
        checks.run("announce of a non-array is \"ERR_GRAPE_ANNOUNCE\"", || {
            assert_eq!(
                a.call("announce", &json!("svc")),
                Ok(json!("ERR_GRAPE_ANNOUNCE"))
            );
        });
        checks.run(
            "announce with a non-integer port is \"ERR_GRAPE_SERVICE_PORT\"",
            || {
                for port in [json!("80"), json!(1.5), json!(null)] {
                    assert_eq!(
                        a.call("announce", &json!(["rt:bad", port])),
                        Ok(json!("ERR_GRAPE_SERVICE_PORT")),
                        "port {port}"
                    );
                }
            },
        );
        checks.run(
            "announce with port 70000, -1 or 1e308 is an error, not a crash",
            || {
                for port in [json!(70000), json!(-1), json!(1e308)] {
                    let body = format!(r#"{{"rid":"r","data":["rt:bad",{port}]}}"#);
                    let resp = http::post(a.api, "/announce", body.as_bytes())
                        .unwrap_or_else(|e| panic!("port {port}: {e}"));
                    let reply = resp.json().unwrap_or_else(|e| panic!("port {port}: {e}"));
                    assert!(
                        resp.status == 200 && reply.as_str().is_some_and(|s| s.starts_with("ERR_")),
                        "port {port}: status {} body {reply}",
                        resp.status
                    );
                    eprintln!("[{}] announce port {port} -> {reply}", ctx.name);
                }
            },
        );
    }
    checks.run("the Grape still serves afterwards", || {
        let (a, b) = (&grapes[0], &grapes[1]);
        let port = free_port();
        a.announce("rt:after-errors", port)
            .unwrap_or_else(|e| panic!("{e}"));
        b.wait_lookup("rt:after-errors", &[peer(port)], PROPAGATION);
    });
    let a = &mut grapes[0];
    assert!(
        a.proc.exited().is_none(),
        "{} died:\n{}",
        a.label,
        a.proc.dump()
    );
    checks.finish();
}

fn websocket_api(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_websocket_{}", rt.as_str()));
    let grapes = two_grapes(&ctx, rt);
    let (a, b) = (&grapes[0], &grapes[1]);
    let mut checks = Checks::new(&ctx);
    let name = format!("rt-{}:ws", rt.as_str());
    let port = free_port();
    a.announce(&name, port).unwrap_or_else(|e| panic!("{e}"));
    let ws_addr = b.ws.expect("started with --apw");

    checks.run("[rid, \"lookup\", name] -> [rid, null, [peers]]", || {
        let mut ws = WsClient::connect(ws_addr, "/").expect("WebSocket connect");
        let reply = wait_until("the WS lookup to list the peer", PROPAGATION, || {
            ws.send_text(&json!(["rid-1", "lookup", name]).to_string())
                .map_err(|e| e.to_string())?;
            let reply = recv_json(&mut ws)?;
            if reply[2].as_array().is_some_and(|l| !l.is_empty()) {
                Ok(reply)
            } else {
                Err(reply.to_string())
            }
        });
        assert_eq!(reply, json!(["rid-1", null, [peer(port)]]));
    });
    checks.run(
        "many requests in flight on one socket, matched by rid",
        || {
            let mut ws = WsClient::connect(ws_addr, "/").expect("WebSocket connect");
            let announced = format!("{name}-via-ws");
            let mut expected: BTreeMap<String, ReplyCheck> = BTreeMap::new();
            for i in 0..40 {
                let rid = format!("r{i}");
                let (msg, check): (Value, ReplyCheck) = match i % 4 {
                    0 => (json!([rid, "lookup", name]), {
                        let want = json!([rid, null, [peer(port)]]);
                        Box::new(move |r| *r == want)
                    }),
                    1 => (json!([rid, "lookup", 5]), {
                        let want = json!(rid);
                        Box::new(move |r| r[0] == want && r[1] == json!("ERR_GRAPE_LOOKUP"))
                    }),
                    2 => (json!([rid, "nope", "x"]), {
                        let want = json!(rid);
                        Box::new(move |r| r[0] == want && r[1] == json!("ERR_REQ_NOTFOUND"))
                    }),
                    _ => (json!([rid, "announce", [announced, 4000 + i]]), {
                        let want = json!(rid);
                        Box::new(move |r| r[0] == want && r[1].is_null() && r[2].is_number())
                    }),
                };
                ws.send_text(&msg.to_string()).expect("send");
                expected.insert(rid, check);
            }
            let mut replies: BTreeMap<String, Value> = BTreeMap::new();
            for _ in 0..expected.len() {
                let reply = recv_json(&mut ws)
                    .unwrap_or_else(|e| panic!("after {} replies: {e}", replies.len()));
                let rid = reply[0]
                    .as_str()
                    .unwrap_or_else(|| panic!("reply without a rid: {reply}"));
                replies.insert(rid.to_string(), reply.clone());
            }
            for (rid, check) in &expected {
                let reply = replies
                    .get(rid)
                    .unwrap_or_else(|| panic!("no reply for {rid}: {replies:?}"));
                assert!(check(reply), "unexpected reply for {rid}: {reply}");
            }
            let ports: Vec<String> = (0..10).map(|j| peer(4000 + 4 * j + 3)).collect();
            a.wait_lookup(&announced, &ports, PROPAGATION);
        },
    );
    checks.run("the object form {rid, type, data} is answered too", || {
        let mut ws = WsClient::connect(ws_addr, "/").expect("WebSocket connect");
        ws.send_text(&json!({"rid": "obj", "type": "lookup", "data": name}).to_string())
            .expect("send");
        assert_eq!(recv_json(&mut ws), Ok(json!(["obj", null, [peer(port)]])));
    });
    checks.run(
        "a message that is not JSON gets ERR_GRAPE_PAYLOAD_INVALID",
        || {
            let mut ws = WsClient::connect(ws_addr, "/").expect("WebSocket connect");
            ws.send_text("garbage").expect("send");
            assert_eq!(
                recv_json(&mut ws),
                Ok(json!([null, "ERR_GRAPE_PAYLOAD_INVALID", null]))
            );
            ws.send_text(&json!(["after", "lookup", name]).to_string())
                .expect("send");
            assert_eq!(
                recv_json(&mut ws),
                Ok(json!(["after", null, [peer(port)]])),
                "socket unusable after a bad message"
            );
        },
    );
    checks.finish();
}

fn health_and_metrics(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_health_{}", rt.as_str()));
    let grapes = two_grapes(&ctx, rt);
    let lone = start_grapes(&ctx, &[Kind::Ours(rt)], GrapeOpts::default());
    let mut checks = Checks::new(&ctx);
    let _ = grapes[0].lookup("rt:warm-metrics");

    checks.run("GET /health answers JSON on bootstrapped Grapes", || {
        for g in &grapes {
            let resp = wait_until(&format!("{} /health 200", g.label), PROPAGATION, || {
                let resp = http::get(g.api, "/health").map_err(|e| e.to_string())?;
                if resp.status == 200 {
                    Ok(resp)
                } else {
                    Err(format!("{} {}", resp.status, resp.text()))
                }
            });
            let body = resp.json().unwrap_or_else(|e| panic!("{e}"));
            assert!(body.is_object(), "/health body {body}");
            eprintln!("[{}] {} /health: {body}", ctx.name, g.label);
        }
    });
    checks.run("GET /health answers JSON on a lone Grape", || {
        let resp = http::get(lone[0].api, "/health").expect("GET /health");
        let body = resp
            .json()
            .unwrap_or_else(|e| panic!("status {}: {e}", resp.status));
        assert!(
            resp.status < 500 || resp.status == 503,
            "status {} body {body}",
            resp.status
        );
        eprintln!("[{}] lone /health: {} {body}", ctx.name, resp.status);
    });
    checks.run("a lone Grape answers a lookup promptly", || {
        let start = Instant::now();
        assert_eq!(lone[0].lookup("rt:nobody"), Ok(vec![]));
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "took {:?}",
            start.elapsed()
        );
    });
    checks.run(
        "a lone Grape's announce is kept, answered as Node does, counted as local",
        || {
            let reply = lone[0].call("announce", &json!(["rt:alone", free_port()]));
            let resp = http::get(lone[0].api, "/metrics").expect("GET /metrics");
            let text = resp.text();
            assert_eq!(reply, Ok(json!("No nodes to query")));
            assert_eq!(lone[0].lookup("rt:alone").map(|p| p.len()), Ok(1));
            let line = |outcome: &str| {
                format!("grape_api_requests_total{{command=\"announce\",outcome=\"{outcome}\"}} ")
            };
            let count = |outcome: &str| {
                let line = line(outcome);
                text.lines()
                    .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
            };
            assert_eq!(count("local").as_deref(), Some("1"), "{text}");
            assert_eq!(count("failed").as_deref(), Some("0"), "{text}");
        },
    );
    checks.run("GET /metrics answers Prometheus text", || {
        let resp = http::get(grapes[0].api, "/metrics").expect("GET /metrics");
        let text = resp.text();
        assert_eq!(resp.status, 200, "{text}");
        assert!(text.contains("# TYPE "), "no metric families in:\n{text}");
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert!(samples > 0, "no samples in:\n{text}");
    });
    checks.finish();
}

/// Two of our Grapes bound to `::1` only: an announce is listed once, on both.
fn ipv6_announce_is_listed_once(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_ipv6_{}", rt.as_str()));
    let v6 = |port| SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let (dht, api) = ([free_port(), free_port()], [free_port(), free_port()]);
    let mut grapes: Vec<Grape> = (0..2)
        .map(|i| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_grape"));
            cmd.args(["-b", "::1", "--runtime", rt.as_str()])
                .args(["--dp", &dht[i].to_string(), "--aph", &api[i].to_string()])
                .args(["--bn", &v6(dht[1 - i]).to_string()]);
            let label = format!("v6-{i}-{}", rt.as_str());
            let proc = Proc::spawn(&ctx, &label, cmd).unwrap_or_else(|e| panic!("{e}"));
            Grape {
                kind: Kind::Ours(rt),
                label,
                dht: v6(dht[i]),
                api: v6(api[i]),
                ws: None,
                proc,
            }
        })
        .collect();
    let port = free_port();
    let (a, b) = (&grapes[0], &grapes[1]);

    // The announce reaches the other Grape once the two have found each other.
    let stored = wait_until("the IPv6 Grapes to join", PROPAGATION * 5, || {
        match a.call("announce", &json!(["rt:v6", port])) {
            Ok(n) if n.as_u64().is_some_and(|n| n >= 1) => Ok(n),
            other => Err(format!("{other:?}")),
        }
    });
    let here = a.lookup("rt:v6");
    let there = b.wait_lookup("rt:v6", &[peer(port)], PROPAGATION);

    terminate_all(grapes.iter_mut().map(|g| &mut g.proc));
    assert_eq!(stored, json!(1));
    assert_eq!(
        here,
        Ok(vec![peer(port)]),
        "stored as 127.0.0.1 here and ::1 there"
    );
    assert_eq!(there, vec![peer(port)]);
}

/// A predicate over one WebSocket reply.
type ReplyCheck = Box<dyn Fn(&Value) -> bool>;

// --- helpers ---------------------------------------------------------------------------------

/// A refused put is answered either as the Node Grape answers command errors (status 200, a
/// JSON error string) or, for a remote node's BEP-44 3xx refusal, with that code as the HTTP
/// status (as the Node Grape does for k-rpc errors carrying a code); never with the target.
fn assert_refused((status, body): &(u16, Value), target: &Value) {
    let refused = match status {
        200 => body.is_string() && body != target,
        300..=399 => body.is_string(),
        _ => false,
    };
    assert!(
        refused,
        "expected a refusal, got status {status} body {body}"
    );
    eprintln!("refused put: status {status} body {body}");
}

/// `GET /watch` on `g`, parsed.
fn watch_http(g: &Grape, query: &str) -> (u16, Value) {
    let resp = http::get(g.api, &format!("/watch?{query}")).unwrap_or_else(|e| panic!("{e}"));
    let body = resp.json().unwrap_or_else(|e| panic!("{e}"));
    (resp.status, body)
}

fn sorted(peers: &Value) -> Vec<String> {
    let mut list: Vec<String> = peers
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {peers}"))
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    list.sort();
    list
}

fn watch(rt: Rt) {
    let ctx = Ctx::new(&format!("runtime_watch_{}", rt.as_str()));
    let grapes = two_grapes(&ctx, rt);
    let (a, b) = (&grapes[0], &grapes[1]);
    let mut checks = Checks::new(&ctx);
    let name = format!("rt-{}:watched", rt.as_str());
    let (p1, p2, p3) = (free_port(), free_port(), free_port());

    checks.run(
        "HTTP /watch blocks until an announce on the other Grape",
        || {
            let (status, first) = watch_http(b, &format!("name={name}"));
            assert_eq!((status, &first["peers"]), (200, &json!([])), "{first}");
            let index = first["index"].as_u64().expect("an index");
            let query = format!("name={name}&index={index}&wait=8s");
            let waiting = std::thread::scope(|s| {
                let poll = s.spawn(|| watch_http(b, &query));
                std::thread::sleep(Duration::from_millis(300));
                a.announce(&name, p1).unwrap_or_else(|e| panic!("{e}"));
                poll.join().expect("the poll thread")
            });
            let (status, changed) = waiting;
            assert_eq!(status, 200);
            // Only a change answers with the peer before the 8 s wait is over: the next
            // refresh by lookup is 30 s away.
            assert_eq!(changed["peers"], json!([peer(p1)]), "{changed}");
            assert!(
                changed["index"].as_u64().is_some_and(|i| i > index),
                "{changed}"
            );
        },
    );
    checks.run(
        "WebSocket watch: the current set, a push per change, unwatch ends it",
        || {
            let mut ws = WsClient::connect(b.ws.expect("--apw"), "/").expect("connect");
            ws.send_text(&json!(["w", "watch", name]).to_string())
                .expect("send");
            let current = recv_json(&mut ws).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(current, json!(["w", null, [peer(p1)]]));
            a.announce(&name, p2).unwrap_or_else(|e| panic!("{e}"));
            let pushed = recv_json(&mut ws).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(pushed[0], json!("w"), "{pushed}");
            let mut want = vec![peer(p1), peer(p2)];
            want.sort();
            assert_eq!(sorted(&pushed[2]), want);
            ws.send_text(&json!(["u", "unwatch", name]).to_string())
                .expect("send");
            assert_eq!(recv_json(&mut ws), Ok(json!(["u", null, true])));
            a.announce(&name, p3).unwrap_or_else(|e| panic!("{e}"));
            b.wait_lookup(&name, &[peer(p1), peer(p2), peer(p3)], PROPAGATION);
            ws.send_text(&json!(["l", "lookup", "nobody"]).to_string())
                .expect("send");
            assert_eq!(recv_json(&mut ws), Ok(json!(["l", null, []])));
        },
    );
    checks.run("bad watches get clear errors", || {
        assert_eq!(
            watch_http(b, &format!("name={name}&wait=soon")),
            (400, json!("ERR_GRAPE_WATCH_WAIT"))
        );
        assert_eq!(watch_http(b, "index=3"), (200, json!("ERR_GRAPE_LOOKUP")));
        let mut ws = WsClient::connect(b.ws.expect("--apw"), "/").expect("connect");
        ws.send_text(r#"["w","watch",5]"#).expect("send");
        assert_eq!(
            recv_json(&mut ws),
            Ok(json!(["w", "ERR_GRAPE_LOOKUP", null]))
        );
    });
    checks.finish();
}

fn recv_json(ws: &mut WsClient) -> Result<Value, String> {
    let text = ws.recv_text().map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text:?}"))
}
