//! grenache-nodejs-link 1.0.2 against our Grape: `node/link-check.js` drives Link's announce,
//! startAnnouncing, lookup, put and get (immutable and mutable) and its error cases, and
//! prints what each call gave; this test checks it. A Node client must not be able to tell
//! our Grape from the Node Grape, except that mutable items work on ours.

use crate::common;

use common::{Checks, Ctx, GrapeOpts, Kind, Rt, free_port, peer, start_grapes};
use serde_json::{Value, json};
use std::time::Duration;

both_runtimes!(
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    link_against_ours
);

fn link_against_ours(rt: Rt) {
    let node = common::node_env();
    let ctx = Ctx::new(&format!("node_link_{}", rt.as_str()));
    let grapes = start_grapes(
        &ctx,
        &[Kind::Ours(rt), Kind::Ours(rt)],
        GrapeOpts::default(),
    );
    let port = free_port();
    let out = node.run_json(
        &ctx,
        "link-check",
        "link-check.js",
        &[
            grapes[0].url(),
            format!("link-{}", rt.as_str()),
            port.to_string(),
        ],
        Duration::from_secs(60),
    );
    eprintln!("[{}] link-check.js: {out}", ctx.name);
    let step = |name: &str| out["steps"][name].clone();
    let ok = |name: &str| -> Value {
        let s = step(name);
        assert_eq!(s["ok"], json!(true), "{name}: {s}");
        s["result"].clone()
    };
    let expect = out["expect"].clone();
    let mut checks = Checks::new(&ctx);

    checks.run("announce replies with a number", || {
        assert!(ok("announce").is_number(), "{}", step("announce"));
    });
    checks.run("startAnnouncing's first announce succeeds", || {
        ok("start_announcing");
    });
    checks.run("lookup lists the announced peer", || {
        assert_eq!(ok("lookup"), json!([peer(port)]));
    });
    checks.run("lookup lists the peer announced by startAnnouncing", || {
        assert_eq!(ok("lookup_announcing"), json!([peer(port + 1)]));
    });
    checks.run(
        "lookup of an unknown name fails with ERR_GRAPE_LOOKUP_EMPTY",
        || {
            let s = step("lookup_unknown");
            assert_eq!(
                (s["ok"].clone(), s["err"].clone()),
                (json!(false), json!("ERR_GRAPE_LOOKUP_EMPTY")),
                "{s}"
            );
        },
    );
    checks.run("put of an immutable item gives its target", || {
        assert_eq!(ok("put_immutable"), expect["immutable_target"]);
    });
    checks.run("get of the immutable item gives v and id", || {
        let item = ok("get_immutable");
        assert_eq!(item["v"], expect["immutable_v"], "{item}");
        common::assert_hex(&item["id"], 20, &item);
    });
    checks.run("mutable put (seq 1) gives the mutable target", || {
        assert_eq!(ok("put_mutable_1"), expect["mutable_target"]);
    });
    checks.run("mutable get gives v, seq 1, k and salt", || {
        let item = ok("get_mutable_1");
        assert_eq!(item["v"], expect["mutable_v1"], "{item}");
        assert_eq!(item["seq"], json!(1), "{item}");
        assert_eq!(item["k"], expect["k"], "{item}");
        assert_eq!(item["salt"], expect["salt"], "{item}");
        common::assert_hex(&item["sig"], 64, &item);
    });
    checks.run("mutable put seq 2 replaces seq 1", || {
        assert_eq!(ok("put_mutable_2"), expect["mutable_target"]);
        let item = ok("get_mutable_2");
        assert_eq!(
            (item["v"].clone(), item["seq"].clone()),
            (expect["mutable_v2"].clone(), json!(2)),
            "{item}"
        );
    });
    checks.run("replaying seq 1 is refused", || {
        let s = step("put_mutable_stale");
        assert_refused(&s, &expect["mutable_target"]);
    });
    checks.run("a bad signature is refused", || {
        let s = step("put_mutable_bad_sig");
        assert_refused(&s, &expect["mutable_target"]);
    });
    checks.run(
        "an announce through Link is visible through the other Grape",
        || {
            grapes[1].wait_lookup(
                expect["service"].as_str().unwrap_or_default(),
                &[peer(port)],
                common::PROPAGATION,
            );
        },
    );
    checks.finish();
}

/// A refused put reaches Link as a 200 with an error string (or as a Link error): either way
/// not the target.
fn assert_refused(step: &Value, target: &Value) {
    let refused = match step["ok"].as_bool() {
        Some(true) => step["result"].is_string() && step["result"] != *target,
        Some(false) => step["err"].is_string(),
        None => false,
    };
    assert!(refused, "expected a refusal, got {step}");
}
