// Watch interop, written once against `rt` and the runtime helpers; see watch_interop.rs.

use std::time::Duration;

use rt::peer::{LinkError, PeerAddr, PeerClient, PeerConfig};

use crate::common::{
    Checks, Ctx, GrapeOpts, Kind, PROPAGATION, Rt, free_port, peer, start_grapes, wait_converged,
};

fn client_of(url: String) -> PeerClient {
    let mut config = PeerConfig::new(url);
    config.seed = Some([5; 32]);
    PeerClient::new(config).expect("a valid Grape URL")
}

fn addrs(set: &[PeerAddr]) -> Vec<String> {
    set.iter().map(|p| p.as_str().to_owned()).collect()
}

/// Sets from `watch` until one lists every peer of `want`, or what was seen last after 10 s.
async fn watch_until(watch: &mut rt::peer::Watch, want: &[String]) -> Result<Vec<String>, String> {
    let mut last = None;
    let seen = within(Duration::from_secs(10), async {
        while let Some(set) = watch.next().await {
            let set = addrs(&set);
            if want.iter().all(|p| set.contains(p)) {
                return Some(set);
            }
            last = Some(set);
        }
        None
    })
    .await;
    match seen {
        Some(Some(set)) => Ok(set),
        Some(None) => Err(format!("the watch ended: {:?}", watch.error())),
        None => Err(format!("not within 10 s; last set {last:?}")),
    }
}

#[test]
#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
fn a_node_grape_keeps_working_while_our_client_watches() {
    crate::common::node_env();
    let grape_rt = if RT == "smol" { Rt::Smol } else { Rt::Tokio };
    let ctx = Ctx::new(&format!("watch_interop_{RT}"));
    let mut grapes = start_grapes(&ctx, &[Kind::Node, Kind::Ours(grape_rt)], GrapeOpts::default());
    wait_converged(&ctx, &grapes, Duration::from_secs(15));
    let runtime = Runtime::new();
    let mut checks = Checks::new(&ctx);
    let name = format!("watched-interop-{RT}");
    let (via_ours, via_node) = (free_port(), free_port());
    let ours = client_of(grapes[1].url());
    let mut watch = runtime
        .block_on(ours.watch(&name))
        .expect("a watch on our Grape");

    checks.run("the watch sees an announce through our Grape", || {
        runtime.block_on(async {
            ours.announce(&name, via_ours).await.expect("announce");
            let set = watch_until(&mut watch, &[peer(via_ours)]).await;
            assert_eq!(set, Ok(vec![peer(via_ours)]));
        });
    });
    checks.run("the Node Grape answers lookups of it meanwhile", || {
        grapes[0].wait_lookup(&name, &[peer(via_ours)], PROPAGATION);
    });
    checks.run("the watch sees an announce through the Node Grape", || {
        grapes[0]
            .announce(&name, via_node)
            .unwrap_or_else(|e| panic!("{e}"));
        let set = runtime.block_on(watch_until(&mut watch, &[peer(via_ours), peer(via_node)]));
        assert!(set.is_ok(), "{set:?}");
    });
    checks.run("requests and lookups of the watched name ask no Grape", || {
        let (found, stats) = runtime.block_on(async {
            let found = ours.lookup(&name).await;
            (found, ours.stats().await.expect("stats"))
        });
        assert_eq!(found.map(|p| addrs(&p).len()), Ok(2));
        assert_eq!(stats.link.watch_hits, 1, "{stats:?}");
    });
    checks.run(
        "a watch through the Node Grape ends with its error; it keeps serving",
        || {
            let node_client = client_of(grapes[0].url());
            let (ended, error, looked_up) = runtime.block_on(async {
                let mut refused = node_client.watch(&name).await.expect("taken by the Link");
                let ended = within(Duration::from_secs(10), refused.next()).await;
                let looked_up = node_client.lookup(&name).await;
                (ended, refused.error().cloned(), looked_up)
            });
            assert_eq!(ended, Some(None));
            assert_eq!(
                error,
                Some(LinkError::Http {
                    status: 500,
                    message: "ERR_GRAPE_PAYLOAD_INVALID".into()
                })
            );
            let looked_up = looked_up.map(|p| addrs(&p));
            assert!(
                looked_up
                    .as_ref()
                    .is_ok_and(|p| p.contains(&peer(via_ours)) && p.contains(&peer(via_node))),
                "{looked_up:?}"
            );
        },
    );
    checks.run("both Grapes are still running", || {
        for g in &mut grapes {
            assert_eq!(g.proc.exited(), None, "{} died", g.label);
        }
    });
    drop(watch);
    checks.finish();
}
