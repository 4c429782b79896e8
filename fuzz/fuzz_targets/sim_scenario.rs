//! Random scenarios of the whole system (Grapes, peer clients, echo servers and bare DHT
//! nodes on the deterministic simulator) checked against the reference model of
//! `grenache_core::sim::scenario`: any broken rule (a phantom or stale peer, a settled
//! service not found, a call not echoed, a watch that missed a change) is a crash.
//!
//! The input is `[seed: u8]` then ops, two bytes each (`Op::decode`: a kind and an
//! argument), at most `MAX_OPS` of them.
#![no_main]

mod common;

use common::epoch;
use grenache_core::sim::scenario::{Op, Scenario, ScenarioConfig};
use libfuzzer_sys::fuzz_target;

/// Ops per input, at most: each costs a simulated second or more.
const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let mut ops = Op::decode(rest);
    ops.truncate(MAX_OPS);
    let mut config = ScenarioConfig::default();
    // A smaller network keeps an input under a second; the rules do not depend on size.
    config.nodes = 12;
    if let Err(v) = Scenario::run(u64::from(seed), epoch(), config, &ops) {
        panic!("{v}\nops: {ops:?}");
    }
});
