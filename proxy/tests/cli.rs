//! The binary's command line: help with examples, and clear refusals.

use std::process::Command;

fn proxy(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grenache-proxy"))
        .args(args)
        .output()
        .expect("run grenache-proxy")
}

#[test]
fn help_shows_a_flag_route_and_a_config_file() {
    let out = proxy(&["--help"]);

    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("--rpc 'echo@ws=echo_zmq@zmq'"), "{help}");
    assert!(help.contains("[[rpc]]"), "{help}");
    assert!(
        help.contains("route = \"echo@ws:8080=echo_zmq@zmq\""),
        "{help}"
    );
}

#[test]
fn a_bad_route_or_none_is_refused_with_the_reason() {
    let bad = proxy(&["--rpc", "echo@smtp=echo@zmq"]);
    let none = proxy(&["--grape", "http://127.0.0.1:9"]);

    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected http, ws or zmq"));
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no routes"));
}

#[test]
fn a_bad_cors_origin_is_refused_with_the_reason() {
    let out = proxy(&["--gateway", "0", "--gateway-cors", "example.com/path"]);

    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not an origin"), "{err}");
}
