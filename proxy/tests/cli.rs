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

/// A free loopback port (the OS picks it; freed at once for the proxy to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("its address").port()
}

#[test]
fn the_binary_serves_on_either_runtime_and_stops_cleanly_on_sigterm() {
    for runtime in ["smol", "tokio"] {
        // Arrange: a gateway alone (no route needs the Grape until a call).
        let port = free_port().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_grenache-proxy"))
            .args(["--grape", "http://127.0.0.1:9", "--bind", "127.0.0.1"])
            .args(["--gateway", &port, "--runtime", runtime])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start grenache-proxy");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");

        // Act: wait for its metrics page, then ask it to stop.
        let mut page = String::new();
        for _ in 0..200 {
            if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
                use std::io::{Read as _, Write as _};
                let head = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.read_to_string(&mut page);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        let status = child.wait().expect("wait for the proxy");
        let mut log = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use std::io::Read as _;
            let _ = stderr.read_to_string(&mut log);
        }

        // Assert
        assert!(page.starts_with("HTTP/1.1 200"), "{runtime}: {page}\n{log}");
        assert!(
            page.contains("grenache_proxy_gateway_requests_total 0"),
            "{page}"
        );
        assert!(killed.success());
        assert!(status.success(), "{runtime}: {status:?}\n{log}");
        assert!(log.contains("SIGTERM"), "{runtime}: {log}");
    }
}
