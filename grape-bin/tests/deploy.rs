//! deploy/grape.service: the hardened systemd unit is one systemd accepts
//! (`systemd-analyze verify`) and keeps the hardening docs/operators.md promises.
//!
//! Reported as ignored where `systemd-analyze` was missing when the tests were built
//! (grape-bin/build.rs); `apt-get install systemd` brings it.

use crate::common;

use common::Ctx;
use std::path::Path;
use std::process::Command;

/// The unit as shipped.
fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grape.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn the_unit_keeps_its_hardening() {
    let unit = unit();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for directive in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "StateDirectory=grape",
    ] {
        assert!(
            lines.contains(&directive),
            "deploy/grape.service lacks {directive}"
        );
    }
    let nofile = lines
        .iter()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        nofile.is_some_and(|n| n >= 65_536),
        "LimitNOFILE must allow many connections, is {nofile:?}"
    );
    let exec = lines
        .iter()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    for flag in ["--dp", "--aph", "--bn", "--state ${STATE_DIRECTORY}/"] {
        assert!(exec.contains(flag), "ExecStart lacks {flag}: {exec}");
    }
}

#[test]
#[cfg_attr(
    no_systemd_analyze,
    ignore = "systemd-analyze was not found when the tests were built (apt-get install systemd)"
)]
fn systemd_analyze_verifies_the_unit() {
    let ctx = Ctx::new("deploy_systemd_analyze_verify");
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let unit = unit().replace("/usr/local/bin/grape", env!("CARGO_BIN_EXE_grape"));
    let path = ctx.dir.join("grape.service");
    std::fs::write(&path, unit).expect("write the unit");

    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze (the build found it)");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
    // Unknown or misspelt directives are only warnings: none is allowed either.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("grape.service"))
        .collect();
    assert!(
        warnings.is_empty(),
        "systemd-analyze warns:\n{}",
        warnings.join("\n")
    );
}
