//! Warm restart with `--state FILE`, once on smol and once on tokio (`smol::*`, `tokio::*`).
//!
//! Grape B joins Grape A with `--bn` and `--state`, is stopped with SIGTERM, and comes back
//! with the same `--state` and no `--bn`: it must keep its node id and find what A
//! announces. A damaged state file must cost one warning and a fresh start, nothing more.

use crate::common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{
    Checks, Ctx, Grape, GrapeOpts, Kind, PROPAGATION, Rt, free_port, http, peer, start_grapes,
    start_ours, wait_until,
};
use grenache_core::dht::NodeId;
use grenache_core::dht::krpc::NodeInfo;
use grenache_core::dht::state::Snapshot;
use serde_json::Value;

both_runtimes!(warm_restart, damaged_state_file);

fn warm_restart(rt: Rt) {
    let ctx = Ctx::new(&format!("state_warm_restart_{}", rt.as_str()));
    let grapes = start_grapes(&ctx, &[Kind::Ours(rt)], GrapeOpts::default());
    let a = &grapes[0];
    let state = ctx.dir.join("b.state");
    let state_arg = state.to_string_lossy().into_owned();
    let b_dht = free_port();
    let mut checks = Checks::new(&ctx);

    let mut b = start_ours(
        &ctx,
        rt,
        "b",
        b_dht,
        &peer(a.dht.port()),
        &["--state", &state_arg],
    );
    wait_until("B to know A", PROPAGATION, || {
        let h = health(&b)?;
        if h["bootstrapped"] == Value::Bool(true) && h["routing_table"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(h.to_string())
        }
    });
    let id = health(&b).map(|h| h["id"].clone());
    // Announced while B is up, so nothing from A needs to reach the restarted B: only its
    // saved nodes can lead it to A.
    let name = format!("state-{}:svc", rt.as_str());
    let port = free_port();
    a.announce(&name, port).unwrap_or_else(|e| panic!("{e}"));
    checks.run("a missing state file is one warning", || {
        assert_eq!(state_warnings(&b), 1, "{}", b.proc.stderr_text());
    });
    checks.run("SIGTERM stops B cleanly and saves the state", || {
        stop(&mut b);
        let snapshot = read_state(&state);
        assert_eq!(Ok(Value::String(snapshot.id().to_string())), id);
        let a_node = snapshot.nodes().iter().map(|n| n.addr).collect::<Vec<_>>();
        assert_eq!(a_node, [a.dht], "the saved nodes should be A alone");
    });

    let b = start_ours(&ctx, rt, "b-restarted", b_dht, "", &["--state", &state_arg]);
    checks.run("restarted without --bn, B keeps its node id", || {
        assert_eq!(health(&b).map(|h| h["id"].clone()), id);
        assert_eq!(state_warnings(&b), 0, "{}", b.proc.stderr_text());
    });
    checks.run("and rejoins through the saved nodes", || {
        wait_until("B to bootstrap", PROPAGATION, || {
            let h = health(&b)?;
            if h["bootstrapped"] == Value::Bool(true) {
                Ok(())
            } else {
                Err(h.to_string())
            }
        });
        b.wait_lookup(&name, &[peer(port)], PROPAGATION);
    });
    checks.finish();
}

fn damaged_state_file(rt: Rt) {
    let ctx = Ctx::new(&format!("state_damaged_{}", rt.as_str()));
    let grapes = start_grapes(&ctx, &[Kind::Ours(rt)], GrapeOpts::default());
    let a = &grapes[0];
    let saved = Snapshot::new(
        NodeId([0x5a; 20]),
        [NodeInfo {
            id: NodeId([0x11; 20]),
            addr: a.dht,
        }],
    )
    .encode();
    let cases: [(&str, Vec<u8>); 2] = [
        (
            "garbled",
            b"d2:id20:not a state file, though long enough to be one".to_vec(),
        ),
        ("truncated", saved[..saved.len() / 2].to_vec()),
    ];
    let mut checks = Checks::new(&ctx);
    for (what, bytes) in cases {
        let state = ctx.dir.join(format!("{what}.state"));
        fs::write(&state, &bytes).expect("write the damaged state file");
        let state_arg = state.to_string_lossy().into_owned();
        let mut b = start_ours(
            &ctx,
            rt,
            &format!("b-{what}"),
            free_port(),
            &peer(a.dht.port()),
            &["--state", &state_arg],
        );
        checks.run(&format!("a {what} file is one warning"), || {
            assert_eq!(state_warnings(&b), 1, "{}", b.proc.stderr_text());
        });
        checks.run(&format!("with a {what} file B works"), || {
            let name = format!("state-{}:{what}", rt.as_str());
            let port = free_port();
            b.announce(&name, port).unwrap_or_else(|e| panic!("{e}"));
            a.wait_lookup(&name, &[peer(port)], PROPAGATION);
            let id = health(&b).map(|h| h["id"].clone());
            assert_ne!(id, Ok(Value::String(NodeId([0x5a; 20]).to_string())));
        });
        checks.run(&format!("the {what} file is replaced at shutdown"), || {
            let id = health(&b).map(|h| h["id"].clone());
            stop(&mut b);
            assert_eq!(Ok(Value::String(read_state(&state).id().to_string())), id);
        });
    }
    checks.finish();
}

fn health(g: &Grape) -> Result<Value, String> {
    let resp = http::get(g.api, "/health").map_err(|e| format!("{}: {e}", g.label))?;
    resp.json().map_err(|e| format!("{} /health: {e}", g.label))
}

/// Sends SIGTERM and expects a clean exit.
fn stop(g: &mut Grape) {
    g.proc.send_term();
    let status = g.proc.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{} exit after SIGTERM: {status:?}\n{}",
        g.label,
        g.proc.dump()
    );
}

fn read_state(path: &Path) -> Snapshot {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Snapshot::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Warning lines about the state file in the Grape's log.
fn state_warnings(g: &Grape) -> usize {
    g.proc
        .stderr_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("--state"))
        .count()
}
