//! Turns `GRENACHE_SKIP_INTEROP` into the `skip_interop` cfg, so the interop tests (which run
//! the real Node.js Grenache) are marked `#[ignore]` at compile time and libtest reports them
//! as ignored, not as passed. Without the variable a missing Node.js fails those tests.
//!
//! Likewise `no_systemd_analyze`: the test that checks deploy/grape.service with
//! `systemd-analyze verify` is reported as ignored where that tool is missing.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_interop)");
    println!("cargo::rerun-if-env-changed=GRENACHE_SKIP_INTEROP");
    let skip = std::env::var_os("GRENACHE_SKIP_INTEROP").is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        println!("cargo::rustc-cfg=skip_interop");
    }

    println!("cargo::rustc-check-cfg=cfg(no_systemd_analyze)");
    println!("cargo::rerun-if-env-changed=PATH");
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !analyze {
        println!("cargo::rustc-cfg=no_systemd_analyze");
    }
}
