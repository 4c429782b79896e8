//! The real Node.js Grenache on its own: checks that the harness and the Node scripts the
//! interop tests rely on behave as the protocol notes say, with no Grape of ours involved.
//! If this fails, the interop tests' failures say nothing about our Grape.

use crate::common;

use common::{Checks, Ctx, GrapeOpts, Kind, free_port, peer, spawn_rpc_server, start_grapes};
use serde_json::json;
use std::time::Duration;

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn node_grapes_scripts_and_api() {
    let node = common::node_env();
    let ctx = Ctx::new("node_reference");
    let grapes = start_grapes(
        &ctx,
        &[Kind::Node, Kind::Node, Kind::Node],
        GrapeOpts::default(),
    );
    common::wait_converged(&ctx, &grapes, Duration::from_secs(10));
    let mut checks = Checks::new(&ctx);

    checks.run("link-check.js against a Node Grape", || {
        let port = free_port();
        let out = node.run_json(
            &ctx,
            "link-check",
            "link-check.js",
            &[grapes[1].url(), "noderef".into(), port.to_string()],
            Duration::from_secs(30),
        );
        let step = |name: &str| out["steps"][name].clone();
        let expect = &out["expect"];
        assert_eq!(step("announce")["ok"], json!(true), "{out}");
        assert!(step("announce")["result"].is_number(), "{out}");
        assert_eq!(step("lookup")["result"], json!([peer(port)]), "{out}");
        assert_eq!(
            step("lookup_announcing")["result"],
            json!([peer(port + 1)]),
            "{out}"
        );
        assert_eq!(
            step("lookup_unknown")["err"],
            json!("ERR_GRAPE_LOOKUP_EMPTY"),
            "{out}"
        );
        assert_eq!(
            step("put_immutable")["result"],
            expect["immutable_target"],
            "{out}"
        );
        assert_eq!(
            step("get_immutable")["result"]["v"],
            expect["immutable_v"],
            "{out}"
        );
        // Stock Node Grapes have no `verify`: every mutable put fails (protocol notes §4).
        assert_eq!(
            step("put_mutable_1")["result"],
            json!("All queries failed"),
            "{out}"
        );
    });

    checks.run("Node RPC server and client over http and ws", || {
        for kind in ["http", "ws"] {
            let service = format!("noderef:echo-{kind}");
            let port = free_port();
            let server = spawn_rpc_server(&ctx, node, &grapes[0].url(), &service, port, kind);
            grapes[2].wait_lookup(&service, &[peer(port)], Duration::from_secs(5));
            let reply = node.run_json(
                &ctx,
                &format!("rpc-client-{kind}"),
                "rpc-client.js",
                &[
                    grapes[2].url(),
                    service.clone(),
                    kind.into(),
                    r#"{"n":1}"#.into(),
                ],
                Duration::from_secs(20),
            );
            assert_eq!(
                reply,
                json!({"ok": true, "data": {"echo": {"n": 1}, "from": "node", "transport": kind}}),
                "{}",
                server.dump()
            );
        }
    });

    checks.run(
        "the core's BEP-44 signature equals Node's (ed25519 is deterministic)",
        || {
            for (seq, v, salt) in [(1, "hello", "salt"), (7, "no salt", ""), (2, "x", "s")] {
                let seed = [seq as u8; 32];
                let ours = common::sign_mutable(seed, seq, v, salt);
                let node = common::sign_with_node(&ctx, node, seed, seq, v, salt);
                assert_eq!(ours, node, "seq {seq} v {v:?} salt {salt:?}");
            }
        },
    );

    checks.run("Node Grape API error replies", || {
        let g = &grapes[0];
        let resp = common::http::post(g.api, "/lookup", b"garbage").expect("post");
        assert_eq!(
            (resp.status, resp.text()),
            (500, "ERR_GRAPE_PAYLOAD_INVALID".into())
        );
        let resp = g.post("lookupx", &json!("nope")).expect("post");
        assert_eq!(
            (resp.status, resp.text()),
            (200, r#""ERR_REQ_NOTFOUND""#.into())
        );
        assert_eq!(g.call("lookup", &json!(5)), Ok(json!("ERR_GRAPE_LOOKUP")));
        assert_eq!(
            g.call("announce", &json!("x")),
            Ok(json!("ERR_GRAPE_ANNOUNCE"))
        );
        assert_eq!(
            g.call("announce", &json!(["x", "80"])),
            Ok(json!("ERR_GRAPE_SERVICE_PORT"))
        );
    });

    checks.finish();
}
