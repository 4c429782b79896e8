//! Unannounce across Grape processes, once with our Grapes on smol and once on tokio:
//! between two of ours the peer is gone everywhere; in a network with Node Grapes 1.0.0
//! they keep it until it expires (they do not speak `unannounce_peer`, and we do not send
//! it to them), and one that is sent the query anyway ignores it and keeps working.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{
    Checks, Ctx, Grape, GrapeOpts, Kind, PROPAGATION, Rt, free_port, peer, start_grapes,
    wait_converged, wait_until,
};
use grenache_core::dht::Key;
use grenache_core::dht::krpc::{Body, Message, Method, Query};
use serde_json::{Value, json};

both_runtimes!(
    ours_forget_it_everywhere,
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    node_grapes_keep_it_and_keep_running
);

fn unannounce(g: &Grape, name: &str, port: u16) -> Value {
    g.call("unannounce", &json!([name, port]))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ours_forget_it_everywhere(rt: Rt) {
    let ctx = Ctx::new(&format!("unannounce_ours_{}", rt.as_str()));
    let grapes = start_grapes(&ctx, &[Kind::Ours(rt); 2], GrapeOpts::default());
    wait_converged(&ctx, &grapes, Duration::from_secs(15));
    let (a, b) = (&grapes[0], &grapes[1]);
    let name = format!("leaving-{}", rt.as_str());
    let port = free_port();
    a.announce(&name, port).unwrap_or_else(|e| panic!("{e}"));
    b.wait_lookup(&name, &[peer(port)], PROPAGATION);
    let mut checks = Checks::new(&ctx);

    checks.run("the unannounce answers how many nodes dropped it", || {
        assert_eq!(unannounce(a, &name, port), json!(1));
    });
    checks.run("the announcing Grape forgets it at once", || {
        assert_eq!(a.lookup(&name), Ok(vec![]));
    });
    // B may answer from its 500 ms lookup cache; the peer would otherwise live 120 s.
    checks.run("the other Grape forgets it", || {
        wait_until(
            &format!("{} to forget {name}", b.label),
            PROPAGATION,
            || match b.lookup(&name) {
                Ok(found) if found.is_empty() => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    });
    checks.run("bad unannounces get the API's errors", || {
        assert_eq!(unannounce(a, &name, port), json!("ERR_GRAPE_NOT_ANNOUNCED"));
        assert_eq!(unannounce(a, "", port), json!("ERR_GRAPE_UNANNOUNCE"));
        assert_eq!(unannounce(a, &name, 0), json!("ERR_GRAPE_SERVICE_PORT"));
    });
    checks.finish();
}

fn node_grapes_keep_it_and_keep_running(rt: Rt) {
    common::node_env();
    let ctx = Ctx::new(&format!("unannounce_mixed_{}", rt.as_str()));
    let ours_kind = Kind::Ours(rt);
    let kinds = [Kind::Node, ours_kind, Kind::Node, ours_kind];
    let mut grapes = start_grapes(&ctx, &kinds, GrapeOpts::default());
    wait_converged(&ctx, &grapes, Duration::from_secs(15));
    let mut checks = Checks::new(&ctx);
    let name = format!("mixed-leaving-{}", rt.as_str());
    let port = free_port();
    let everyone = |grapes: &[Grape]| {
        for g in grapes {
            g.wait_lookup(&name, &[peer(port)], PROPAGATION);
        }
    };

    checks.run("our unannounce is sent to ours only", || {
        grapes[1]
            .announce(&name, port)
            .unwrap_or_else(|e| panic!("{e}"));
        everyone(&grapes);
        // Three nodes stored it; only the other one of ours was asked to drop it.
        assert_eq!(unannounce(&grapes[1], &name, port), json!(1));
    });
    checks.run("Node Grapes keep it until it expires, and serve it", || {
        everyone(&grapes[..1]);
        everyone(&grapes[2..3]);
    });
    for i in [0, 2] {
        let label = grapes[i].label.clone();
        checks.run(
            &format!("{label} ignores unannounce_peer, even malformed, and keeps working"),
            || {
                let replies = send_unannounce_peer(grapes[i].dht, &name, port);
                eprintln!(
                    "[{}] {label} answered unannounce_peer with {replies:?}",
                    ctx.name
                );
                for reply in &replies {
                    assert!(
                        !matches!(reply, Some(Body::Response(_))),
                        "{label} claims to speak unannounce_peer: {reply:?}"
                    );
                }
                assert_eq!(grapes[i].proc.exited(), None, "{label} died");
                let fresh = format!("{name}-after-{i}");
                let fresh_port = free_port();
                grapes[3]
                    .announce(&fresh, fresh_port)
                    .unwrap_or_else(|e| panic!("{e}"));
                grapes[i].wait_lookup(&fresh, &[peer(fresh_port)], PROPAGATION);
            },
        );
    }
    checks.run("every Grape is still running", || {
        for g in &mut grapes {
            assert_eq!(g.proc.exited(), None, "{} died", g.label);
        }
    });
    checks.finish();
}

/// Sends a Node Grape `unannounce_peer` queries as one of ours would (with a token from its
/// own `get_peers`) and malformed (no token, no arguments), and returns what came back to
/// each: `None` for nothing within a second.
///
/// The queries carry the Node Grape's own id, or a 19-byte one, so that it does not add
/// this short-lived socket to its routing table and wait on it in later lookups.
fn send_unannounce_peer(to: SocketAddr, name: &str, port: u16) -> Vec<Option<Body>> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set a read timeout");
    let mut get_peers = b"d1:ad2:id19:short-id-not-added_9:info_hash".to_vec();
    get_peers.extend_from_slice(format!("{}:{name}", name.len()).as_bytes());
    get_peers.extend_from_slice(b"e1:q9:get_peers1:t2:t01:y1:qe");
    let (id, token) = match ask_raw(&socket, to, b"t0", &get_peers) {
        Some(Body::Response(r)) => (r.id, r.token.expect("get_peers hands out a token")),
        other => panic!("get_peers from {to}: {other:?}"),
    };
    let well_formed = Message {
        tid: b"t1".to_vec(),
        version: None,
        read_only: false,
        body: Body::Query(Query {
            id,
            method: Method::UnannouncePeer {
                info_hash: Key::new(name.as_bytes()).expect("a valid name"),
                port,
                token,
            },
        }),
    };
    let mut replies = vec![ask_raw(&socket, to, b"t1", &well_formed.encode())];
    for (tid, raw) in [
        (
            &b"t2"[..],
            &b"d1:ad2:id19:short-id-not-added_4:porti1ee1:q15:unannounce_peer1:t2:t21:y1:qe"[..],
        ),
        (b"t3", b"d1:q15:unannounce_peer1:t2:t31:y1:qe"),
    ] {
        replies.push(ask_raw(&socket, to, tid, raw));
    }
    replies
}

fn ask_raw(socket: &UdpSocket, to: SocketAddr, tid: &[u8], datagram: &[u8]) -> Option<Body> {
    socket.send_to(datagram, to).expect("send");
    receive(socket, tid)
}

/// The reply with transaction id `tid`, skipping others (pings, late answers).
fn receive(socket: &UdpSocket, tid: &[u8]) -> Option<Body> {
    let mut buf = [0u8; 2048];
    loop {
        let (len, _) = socket.recv_from(&mut buf).ok()?;
        match Message::decode(&buf[..len]) {
            Ok(msg) if msg.tid == tid => return Some(msg.body),
            _ => continue,
        }
    }
}
