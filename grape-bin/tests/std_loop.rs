//! The std-loop example (`examples/std_loop.rs`: the core driven by a plain loop over
//! `std::net` sockets, no async runtime) is a Grape a Node Grape 1.0.0 can join: a Node
//! Grape bootstraps from it, and announces cross between the two both ways.
//!
//! The example is built by `cargo test` (examples are compiled with the tests); run alone,
//! build it first: `cargo build -p grenache-grape --example std_loop`.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Checks, Ctx, Grape, Kind, PROPAGATION, Proc, Rt, free_port, peer, wait_until};

/// `target/<profile>/examples/std_loop`, beside this test's `deps/` folder.
fn example_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("std_loop{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p grenache-grape --example std_loop`",
        path.display()
    );
    path
}

/// Waits until `addr` accepts connections, or fails with `proc`'s output.
fn wait_listening(proc: &mut Proc, addr: SocketAddr) {
    wait_until(
        &format!("{addr} to listen"),
        Duration::from_secs(20),
        || {
            if let Some(status) = proc.exited() {
                panic!("exited with {status}:\n{}", proc.dump());
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
}

/// The kind only matters to `Grape::is_ours`, which this test does not ask.
const STD_LOOP: Kind = Kind::Ours(Rt::Smol);

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn a_node_grape_joins_the_std_loop_grape() {
    let node = common::node_env();
    let ctx = Ctx::new("std_loop_node_joins");
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let (ours_dht, ours_api) = (free_port(), free_port());
    let mut cmd = Command::new(example_exe());
    cmd.args([ours_dht.to_string(), ours_api.to_string()]);
    let mut ours_proc = Proc::spawn(&ctx, "std_loop", cmd).unwrap_or_else(|e| panic!("{e}"));
    wait_listening(&mut ours_proc, local(ours_api));
    let ours = Grape {
        kind: STD_LOOP,
        label: "std_loop".into(),
        dht: local(ours_dht),
        api: local(ours_api),
        ws: None,
        proc: ours_proc,
    };

    let (node_dht, node_api) = (free_port(), free_port());
    let args = [
        "-b",
        "127.0.0.1",
        "--dp",
        &node_dht.to_string(),
        "--aph",
        &node_api.to_string(),
        "--bn",
        &peer(ours_dht),
    ]
    .map(String::from);
    let cmd = node.command("node_modules/grenache-grape/bin/grape.js", &args);
    let mut node_proc = Proc::spawn(&ctx, "node", cmd).unwrap_or_else(|e| panic!("{e}"));
    wait_listening(&mut node_proc, local(node_api));
    let theirs = Grape {
        kind: Kind::Node,
        label: "node".into(),
        dht: local(node_dht),
        api: local(node_api),
        ws: None,
        proc: node_proc,
    };
    let mut checks = Checks::new(&ctx);

    checks.run(
        "a service announced on the Node Grape is found on ours",
        || {
            let port = free_port();
            wait_until("the Node Grape's announce", PROPAGATION * 5, || {
                theirs.announce("std-loop:from-node", port).map(drop)
            });
            ours.wait_lookup("std-loop:from-node", &[peer(port)], PROPAGATION * 5);
        },
    );
    checks.run(
        "a service announced on ours is found on the Node Grape",
        || {
            let port = free_port();
            ours.announce("std-loop:from-ours", port)
                .unwrap_or_else(|e| panic!("{e}"));
            theirs.wait_lookup("std-loop:from-ours", &[peer(port)], PROPAGATION * 5);
        },
    );
    checks.finish();
}
