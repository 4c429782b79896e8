//! Peer RPC: a Rust client against a Rust server (grenache-tokio's peer module) and a Node
//! client against a Node server (grenache-nodejs-http / -ws), each through a Grape of its
//! own kind, with 100-byte and 10 KB payloads echoed back.
//!
//! Both sides run one thread per process (Node is single-threaded; the Rust server and
//! client each get a current-thread runtime), so the comparison is per core.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grenache_tokio::peer::{
    PeerClient, PeerConfig, RequestOptions, RpcServer, RpcServerConfig, RpcTransport,
};
use serde_json::Value;

use super::grapes::{self, Kind};
use super::procs::Proc;
use super::report::RpcRow;
use super::sections::Ctx;
use super::stats::Latencies;

/// Requests kept in flight by each client.
pub const CONCURRENCY: usize = 64;

/// Payload sizes, in bytes of the JSON string sent and echoed.
pub const PAYLOADS: [usize; 2] = [100, 10 * 1024];

fn transport(name: &str) -> RpcTransport {
    if name == "ws" {
        RpcTransport::Ws
    } else {
        RpcTransport::Http
    }
}

/// Serves `service`, echoing every payload, until killed (the `rpc-serve` subcommand).
/// Prints `{"ready":true,"port":N}` once the Grape has taken the announce.
pub fn serve(grape: &str, service: &str, kind: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = PeerClient::new(PeerConfig::new(grape)).map_err(|e| e.to_string())?;
        let config =
            RpcServerConfig::new(transport(kind)).listen_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let server = RpcServer::start(
            &client,
            service,
            config,
            |_key: String, payload: Value| async move { Ok(payload) },
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{{\"ready\":true,\"port\":{}}}", server.port());
        let _ = out.flush();
        drop(out);
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// The RPC section.
pub fn rpc(ctx: &mut Ctx) -> Result<(), String> {
    let t = ctx.timing;
    for kind in ctx.kinds.clone() {
        let grape = grapes::start_network(&ctx.env, kind, 1, "rpc")?.remove(0);
        let url = format!("http://{}", grape.api);
        for tr in ["http", "ws"] {
            let service = format!("bench_rpc_{tr}");
            let log = ctx
                .env
                .logs
                .join(format!("rpc-{}-{tr}-server.log", kind.name()));
            let mut server = match kind {
                Kind::Rust => {
                    let me = std::env::current_exe().map_err(|e| e.to_string())?;
                    let mut cmd = Command::new(me);
                    cmd.args(["rpc-serve", "--grape", &url, "--service", &service])
                        .args(["--transport", tr]);
                    Proc::spawn_piped("rpc-server", cmd, &log)?
                }
                Kind::Node => {
                    let mut cmd = ctx
                        .env
                        .node_command("rpc-server.js")
                        .ok_or("no Node packages")?;
                    let port = super::procs::free_tcp_port()?;
                    cmd.args([&url, &service, tr, &port.to_string()]);
                    Proc::spawn_piped("rpc-server", cmd, &log)?
                }
            };
            let ready = server.read_line()?;
            if !ready.contains("\"ready\":true") {
                return Err(format!("{} {tr} RPC server: {ready}", kind.name()));
            }
            for bytes in PAYLOADS {
                let row = match kind {
                    Kind::Rust => rust_load(&url, &service, tr, bytes, t.warmup, t.measure)?,
                    Kind::Node => node_load(ctx, &url, &service, tr, bytes, t.warmup, t.measure)?,
                };
                eprintln!(
                    "  rpc {:4} {tr:4} {bytes:>5} B {:>8.0} req/s p99 {} ms errors {}",
                    kind.name(),
                    row.rps,
                    super::stats::ms(row.p99),
                    row.errors
                );
                ctx.report.rpc.push(RpcRow { kind, ..row });
            }
            drop(server);
        }
        drop(grape);
    }
    Ok(())
}

/// Our client, one current-thread runtime, [`CONCURRENCY`] requests in flight.
fn rust_load(
    grape: &str,
    service: &str,
    tr: &'static str,
    bytes: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<RpcRow, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = PeerClient::new(PeerConfig::new(grape).transport(transport(tr)))
            .map_err(|e| e.to_string())?;
        let payload = Value::String("x".repeat(bytes));
        client
            .request(service, payload.clone(), RequestOptions::default())
            .await
            .map_err(|e| format!("first request: {e}"))?;
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = measure_from + measure;
        let service: Arc<str> = Arc::from(service);
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let (client, payload, service) =
                    (client.clone(), payload.clone(), Arc::clone(&service));
                tokio::spawn(async move {
                    let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let reply = client
                            .request(&service, payload.clone(), RequestOptions::default())
                            .await;
                        if sent < measure_from {
                            continue;
                        }
                        match reply {
                            Ok(v) if v == payload => {
                                ok += 1;
                                lat.push(
                                    u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX),
                                );
                            }
                            _ => errors += 1,
                        }
                    }
                    (ok, errors, lat)
                })
            })
            .collect();
        let (mut ok, mut errors, mut all) = (0, 0, Vec::new());
        for task in tasks {
            let (o, e, l) = task.await.unwrap_or((0, 1, Vec::new()));
            ok += o;
            errors += e;
            all.extend(l);
        }
        let latency = Latencies::from_micros(all);
        Ok(RpcRow {
            transport: tr,
            payload: bytes,
            kind: Kind::Rust,
            rps: ok as f64 / measure.as_secs_f64(),
            p50: latency.p50(),
            p99: latency.p99(),
            errors,
        })
    })
}

/// grenache-nodejs-http / -ws as client, through benches/node/rpc-load.js.
fn node_load(
    ctx: &Ctx,
    grape: &str,
    service: &str,
    tr: &'static str,
    bytes: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<RpcRow, String> {
    let mut cmd = ctx
        .env
        .node_command("rpc-load.js")
        .ok_or("no Node packages")?;
    cmd.args([grape, service, tr])
        .arg(CONCURRENCY.to_string())
        .arg(bytes.to_string())
        .arg(warmup.as_millis().to_string())
        .arg(measure.as_millis().to_string());
    // A child with a guard, like every other: run it to the end through the log file.
    let log = ctx
        .env
        .logs
        .join(format!("rpc-node-{tr}-{bytes}-client.log"));
    let proc = Proc::spawn("rpc-load", cmd, &log)?;
    let limit = warmup + measure + Duration::from_secs(30);
    let start = Instant::now();
    while proc.is_running() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(proc);
    let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("rpc-load.js printed no result: {text}"))?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("{line}: {e}"))?;
    let us = |k: &str| v[k].as_u64().map(Duration::from_micros);
    Ok(RpcRow {
        transport: tr,
        payload: bytes,
        kind: Kind::Node,
        rps: v["rps"].as_f64().unwrap_or(0.0),
        p50: us("p50_us"),
        p99: us("p99_us"),
        errors: v["errors"].as_u64().unwrap_or(0),
    })
}
