//! Scale: a 20-Grape loopback network (10 Node Grapes, 10 of ours). One announce through one
//! of ours must be visible to `/lookup` on every one of the 20 within 2 seconds (the bound
//! from the issue). The time each Grape took is printed.

use crate::common;

use common::{
    Ctx, GrapeOpts, Kind, PROPAGATION, Rt, free_port, peer, start_grapes, wait_converged,
};
use std::time::{Duration, Instant};

both_runtimes!(
    #[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]
    twenty_grapes
);

fn twenty_grapes(rt: Rt) {
    common::node_env();
    // Twenty processes and a timing bound: never alongside the other runtime's copy.
    let _heavy = common::heavy_test_lock();
    let ctx = Ctx::new(&format!("scale_{}", rt.as_str()));
    let kinds: Vec<Kind> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                Kind::Node
            } else {
                Kind::Ours(rt)
            }
        })
        .collect();
    let grapes = start_grapes(&ctx, &kinds, GrapeOpts::default());
    wait_converged(&ctx, &grapes, Duration::from_secs(30));

    let announcer = &grapes[1];
    assert!(announcer.is_ours());
    let name = format!("scale-{}:svc", rt.as_str());
    let port = free_port();
    let start = Instant::now();
    announcer
        .announce(&name, port)
        .unwrap_or_else(|e| panic!("{e}"));
    let announced_after = start.elapsed();
    // Every Grape is polled from its own thread, so one slow Grape cannot delay the others'
    // measurements.
    let results: Vec<(String, Result<Duration, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = grapes
            .iter()
            .map(|g| {
                let name = &name;
                s.spawn(move || {
                    let want = peer(port);
                    loop {
                        let last = match g.lookup(name) {
                            Ok(found) if found.contains(&want) => return Ok(start.elapsed()),
                            Ok(found) => format!("{found:?}"),
                            Err(e) => e,
                        };
                        if start.elapsed() > PROPAGATION + Duration::from_secs(1) {
                            return Err(last);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            })
            .collect();
        grapes
            .iter()
            .zip(handles)
            .map(|(g, h)| {
                (
                    g.label.clone(),
                    h.join().unwrap_or_else(|_| Err("poller panicked".into())),
                )
            })
            .collect()
    });

    eprintln!(
        "[{}] announce through {} returned after {announced_after:?}",
        ctx.name, announcer.label
    );
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    for (label, result) in &results {
        match result {
            Ok(t) => {
                eprintln!("[{}]   {label}: visible after {t:?}", ctx.name);
                slowest = slowest.max(*t);
                if *t > PROPAGATION {
                    failures.push(format!("{label} took {t:?}"));
                }
            }
            Err(last) => {
                eprintln!("[{}]   {label}: NOT visible; last lookup: {last}", ctx.name);
                failures.push(format!("{label} never listed it (last: {last})"));
            }
        }
    }
    eprintln!(
        "[{}] visible on all 20 after {slowest:?} (bound {PROPAGATION:?})",
        ctx.name
    );
    assert!(
        failures.is_empty(),
        "announce through {} not visible everywhere within {PROPAGATION:?}: {}",
        announcer.label,
        failures.join("; ")
    );
}
