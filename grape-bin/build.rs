//! Turns `GRENACHE_SKIP_INTEROP` into the `skip_interop` cfg, so the interop tests (which run
//! the real Node.js Grenache) are marked `#[ignore]` at compile time and libtest reports them
//! as ignored, not as passed. Without the variable a missing Node.js fails those tests.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_interop)");
    println!("cargo::rerun-if-env-changed=GRENACHE_SKIP_INTEROP");
    let skip = std::env::var_os("GRENACHE_SKIP_INTEROP").is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        println!("cargo::rustc-cfg=skip_interop");
    }
}
