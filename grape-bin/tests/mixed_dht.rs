//! Mixed DHT: Node Grapes 1.0.0 and ours in one loopback network, once with our Grapes on
//! smol and once on tokio. Announces, lookups and immutable items must cross between the two
//! implementations in both directions. Mutable items are checked across ours only: a stock
//! Node Grape rejects every mutable put (protocol notes §4).

use crate::common;

use common::{
    Checks, Ctx, GrapeOpts, Kind, PROPAGATION, Rt, free_port, http, peer, start_grapes,
    wait_converged, wait_item,
};
use serde_json::json;
use std::time::{Duration, Instant};

both_runtimes!(
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    mixed_network,
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    mixed_network_defended,
    mutable_across_ours
);

fn mixed_network(rt: Rt) {
    mixed(rt, "mixed_network", GrapeOpts::default());
}

/// The same network with our defences applied to the loopback Grapes (default limits): the
/// Node Grapes' traffic meets them, and nothing of it is limited.
fn mixed_network_defended(rt: Rt) {
    let opts = GrapeOpts {
        limit_loopback: true,
        ..GrapeOpts::default()
    };
    mixed(rt, "mixed_network_defended", opts);
}

fn mixed(rt: Rt, test: &str, opts: GrapeOpts) {
    common::node_env();
    let ctx = Ctx::new(&format!("{test}_{}", rt.as_str()));
    let ours_kind = Kind::Ours(rt);
    // Seeds first: one Node Grape and one of ours.
    let kinds = [
        Kind::Node,
        ours_kind,
        Kind::Node,
        ours_kind,
        Kind::Node,
        ours_kind,
    ];
    let grapes = start_grapes(&ctx, &kinds, opts);
    wait_converged(&ctx, &grapes, Duration::from_secs(15));
    let ours: Vec<_> = grapes.iter().filter(|g| g.is_ours()).collect();
    let theirs: Vec<_> = grapes.iter().filter(|g| !g.is_ours()).collect();
    let mut checks = Checks::new(&ctx);

    for (from, to, dir) in [
        (&ours, &theirs, "ours->node"),
        (&theirs, &ours, "node->ours"),
    ] {
        checks.run(
            &format!("{dir}: announce through one, lookup through each of the others"),
            || {
                for (i, announcer) in from.iter().enumerate() {
                    let name = format!("mixed-{}:{dir}:{i}", rt.as_str());
                    let port = free_port();
                    announcer
                        .announce(&name, port)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let start = Instant::now();
                    for g in to {
                        g.wait_lookup(&name, &[peer(port)], PROPAGATION);
                    }
                    eprintln!(
                        "[{}] {name} from {} visible on all of {dir} after {:?}",
                        ctx.name,
                        announcer.label,
                        start.elapsed()
                    );
                }
            },
        );
        checks.run(
            &format!("{dir}: immutable put through one, get through each of the others"),
            || {
                let v = format!("mixed {} {dir}", rt.as_str());
                let target = from[0]
                    .call("put", &json!({"v": v}))
                    .unwrap_or_else(|e| panic!("{e}"));
                common::assert_hex(&target, 20, &target);
                for g in to {
                    let item = wait_item(g, &target, |item| item["v"] == json!(v));
                    common::assert_hex(&item["id"], 20, &item);
                }
            },
        );
    }
    checks.run(
        "ours and the Node Grape reply with the same target for the same v",
        || {
            let v = json!({"v": format!("same target {}", rt.as_str())});
            let t_ours = ours[0].call("put", &v).unwrap_or_else(|e| panic!("{e}"));
            let t_node = theirs[0].call("put", &v).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t_ours, t_node);
        },
    );
    checks.run(
        "a Node Grape's get of an item stored by ours has the Node reply shape",
        || {
            let v = format!("shape {}", rt.as_str());
            let target = ours[2]
                .call("put", &json!({"v": v}))
                .unwrap_or_else(|e| panic!("{e}"));
            let item = wait_item(theirs[2], &target, |item| item["v"] == json!(v));
            let keys: Vec<&String> = item
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            for key in ["id", "v"] {
                assert!(keys.iter().any(|k| *k == key), "no {key} in {item}");
            }
        },
    );
    checks.run(
        "a watch on ours sees an announce through a Node Grape, and Node Grapes keep serving",
        || {
            let name = format!("mixed-{}:watched", rt.as_str());
            let watch = |query: String| {
                let resp = http::get(ours[1].api, &format!("/watch?name={name}&{query}"))
                    .unwrap_or_else(|e| panic!("{e}"));
                resp.json().unwrap_or_else(|e| panic!("{e}"))
            };
            let first = watch("index=0".into());
            let index = first["index"].as_u64().expect("an index");
            let port = free_port();
            let changed = std::thread::scope(|s| {
                let poll = s.spawn(|| watch(format!("index={index}&wait=8s")));
                std::thread::sleep(Duration::from_millis(300));
                theirs[1]
                    .announce(&name, port)
                    .unwrap_or_else(|e| panic!("{e}"));
                poll.join().expect("the poll thread")
            });
            assert_eq!(changed["peers"], json!([peer(port)]), "{changed}");
            for g in &theirs {
                g.wait_lookup(&name, &[peer(port)], PROPAGATION);
            }
        },
    );
    if opts.limit_loopback {
        checks.run(
            "the defences met the traffic and limited none of it",
            || {
                for g in &ours {
                    let text = http::get(g.api, "/metrics")
                        .unwrap_or_else(|e| panic!("{e}"))
                        .text();
                    let count = |name: &str| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    assert!(
                        count("grape_dht_datagrams_total{direction=\"in\"}") > 0,
                        "{text}"
                    );
                    for reason in ["rate_limited", "banned", "reply_budget"] {
                        let line = format!("grape_dht_dropped_total{{reason=\"{reason}\"}}");
                        assert_eq!(count(&line), 0, "{}: {text}", g.label);
                    }
                    assert_eq!(count("grape_dht_bans_total"), 0, "{text}");
                }
            },
        );
    }
    checks.finish();
}

fn mutable_across_ours(rt: Rt) {
    let ctx = Ctx::new(&format!("mutable_across_ours_{}", rt.as_str()));
    let grapes = start_grapes(&ctx, &[Kind::Ours(rt); 3], GrapeOpts::default());
    let mut checks = Checks::new(&ctx);
    let seed = [9u8; 32];
    let salt = format!("across-{}", rt.as_str());
    let query = |target: &serde_json::Value| json!({"hash": target, "salt": salt});

    for seq in 1..=2 {
        checks.run(&format!("seq {seq}: put through the first, get through the others"), || {
            let v = format!("across {} seq {seq}", rt.as_str());
            let signed = common::sign_mutable(seed, seq, &v, &salt);
            let data = json!({"v": v, "k": signed["k"], "sig": signed["sig"], "seq": seq, "salt": salt});
            let reply = grapes[0].call("put", &data);
            assert_eq!(reply, Ok(signed["target"].clone()));
            for g in &grapes[1..] {
                let item = wait_item(g, &query(&signed["target"]), |item| item["seq"] == json!(seq));
                assert_eq!(item["v"], json!(v), "{item}");
                assert_eq!(item["k"], signed["k"], "{item}");
            }
        });
    }
    checks.finish();
}
