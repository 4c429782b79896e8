//! Peer RPC with grenache-nodejs-http 1.0.2 and grenache-nodejs-ws 1.0.0: a Node
//! PeerRPCServer and a Node PeerRPCClient find each other through our Grapes, first in a
//! network of ours only, then in a mixed network with Node Grapes.

use crate::common;

use common::{
    Checks, Ctx, Grape, GrapeOpts, Kind, NodeEnv, PROPAGATION, Rt, free_port, peer,
    spawn_rpc_server, start_grapes, wait_converged,
};
use serde_json::json;
use std::time::Duration;

both_runtimes!(
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    rpc_through_ours_only,
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    rpc_mixed_network
);

fn rpc_through_ours_only(rt: Rt) {
    let node = common::node_env();
    let ctx = Ctx::new(&format!("node_rpc_ours_{}", rt.as_str()));
    let grapes = start_grapes(
        &ctx,
        &[Kind::Ours(rt), Kind::Ours(rt)],
        GrapeOpts::default(),
    );
    let mut checks = Checks::new(&ctx);
    for transport in ["http", "ws"] {
        checks.run(
            &format!("{transport}: server announcing on one of ours, client on the other"),
            || {
                exchange(&ctx, node, &grapes[0], &grapes[1], transport);
            },
        );
    }
    checks.finish();
}

fn rpc_mixed_network(rt: Rt) {
    let node = common::node_env();
    let ctx = Ctx::new(&format!("node_rpc_mixed_{}", rt.as_str()));
    let kinds = [Kind::Node, Kind::Ours(rt), Kind::Node, Kind::Ours(rt)];
    let grapes = start_grapes(&ctx, &kinds, GrapeOpts::default());
    wait_converged(&ctx, &grapes, Duration::from_secs(15));
    let mut checks = Checks::new(&ctx);
    for transport in ["http", "ws"] {
        checks.run(
            &format!("{transport}: server on ours, client on a Node Grape"),
            || {
                exchange(&ctx, node, &grapes[1], &grapes[2], transport);
            },
        );
        checks.run(
            &format!("{transport}: server on a Node Grape, client on ours"),
            || {
                exchange(&ctx, node, &grapes[0], &grapes[3], transport);
            },
        );
    }
    checks.finish();
}

/// Starts an RPC server announcing through `server_grape`, waits until `client_grape` lists it,
/// then makes one request from a Node client using `client_grape`.
fn exchange(
    ctx: &Ctx,
    node: &NodeEnv,
    server_grape: &Grape,
    client_grape: &Grape,
    transport: &str,
) {
    let service = format!("{}:echo-{transport}-{}", ctx.name, server_grape.label);
    let port = free_port();
    let server = spawn_rpc_server(ctx, node, &server_grape.url(), &service, port, transport);
    client_grape.wait_lookup(&service, &[peer(port)], PROPAGATION);
    let payload = json!({"question": 42, "via": client_grape.label});
    let reply = node.run_json(
        ctx,
        &format!("rpc-client-{transport}-{}", client_grape.label),
        "rpc-client.js",
        &[
            client_grape.url(),
            service,
            transport.into(),
            payload.to_string(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(
        reply,
        json!({"ok": true, "data": {"echo": payload, "from": "node", "transport": transport}}),
        "{}",
        server.dump()
    );
}
