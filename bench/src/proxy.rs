//! The proxy (issue 14's targets): the same Rust client and echo server as the RPC section,
//! once direct and once through `grenache-proxy`, and a direct Node client-to-server pair in
//! the same run. Rows at 1, 16 and 64 in flight, 100 B; the proxy's CPU per request and its
//! resident memory under load are recorded beside them.
//!
//! Routes measured: `http -> http` (the like-for-like case: the proxy's cost alone) and
//! `ws -> zmq` (a transport change, against a direct ZeroMQ call).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::grapes::{self, Kind};
use super::procs::{self, Proc};
use super::report::{ProxyPath, ProxyRow, RpcRow};
use super::rpc::{self, Run, Security};
use super::sections::Ctx;

/// Payload of every proxy row, in bytes.
const BYTES: usize = 100;

/// One measured path: what the client calls, over which transport, and whose CPU counts.
struct Path<'a> {
    path: ProxyPath,
    service: &'a str,
    client_transport: &'static str,
    /// The process doing the work between client and Grape-found server: the proxy on a
    /// proxied path, the echo server on a direct one.
    server_pid: u32,
}

/// The proxy section.
pub fn proxy(ctx: &mut Ctx) -> Result<(), String> {
    let grape = grapes::start_network(&ctx.env, Kind::Rust, 1, "proxy")?.remove(0);
    let url = format!("http://{}", grape.api);
    let mut http_server = echo_server(ctx, &url, "bench_proxy_target_http", "http")?;
    let mut zmq_server = echo_server(ctx, &url, "bench_proxy_target_zmq", "zmq")?;
    let mut proxy = start_proxy(
        ctx,
        &url,
        &[
            "bench_proxy_via_http@http=bench_proxy_target_http@http",
            "bench_proxy_via_ws@ws=bench_proxy_target_zmq@zmq",
        ],
    )?;
    for name in ["bench_proxy_via_http", "bench_proxy_via_ws"] {
        wait_announced(&grape, name, &proxy)?;
    }
    let paths = [
        Path {
            path: ProxyPath::Direct,
            service: "bench_proxy_target_http",
            client_transport: "http",
            server_pid: http_server.pid,
        },
        Path {
            path: ProxyPath::Proxied("http -> http"),
            service: "bench_proxy_via_http",
            client_transport: "http",
            server_pid: proxy.pid,
        },
        Path {
            path: ProxyPath::Direct,
            service: "bench_proxy_target_zmq",
            client_transport: "zmq",
            server_pid: zmq_server.pid,
        },
        Path {
            path: ProxyPath::Proxied("ws -> zmq"),
            service: "bench_proxy_via_ws",
            client_transport: "ws",
            server_pid: proxy.pid,
        },
    ];
    for c in concurrencies(ctx)? {
        for p in &paths {
            let run = Run {
                grape: &url,
                service: p.service,
                tr: p.client_transport,
                bytes: BYTES,
                concurrency: c,
                warmup: ctx.timing.warmup,
                measure: ctx.timing.measure,
                server: p.server_pid,
                security: Security::Plain,
                client_cores: ctx.client_cores,
                peer_connections: ctx.peer_connections,
                busy_poll: ctx.busy_poll,
            };
            let watch = RssWatch::start(proxy.pid);
            let rpc = rpc::rust_load(&run, Kind::Rust)?;
            let rss = watch.stop();
            let row = ProxyRow {
                path: p.path,
                client: Kind::Rust,
                proxy_rss: matches!(p.path, ProxyPath::Proxied(_))
                    .then_some(rss)
                    .flatten(),
                rpc,
            };
            log_row(&row);
            ctx.report.proxy.push(row);
        }
        for server in [&mut http_server, &mut zmq_server, &mut proxy] {
            if !server.is_running() {
                return Err(format!("{} exited:\n{}", server.name, server.log_tail(20)));
            }
        }
    }
    drop((proxy, http_server, zmq_server, grape));
    if ctx.kinds.contains(&Kind::Node) {
        node_pair(ctx)?;
    }
    Ok(())
}

/// The direct Node pair, grenache-nodejs-http client and server through a Node Grape.
fn node_pair(ctx: &mut Ctx) -> Result<(), String> {
    let grape = grapes::start_network(&ctx.env, Kind::Node, 1, "proxy")?.remove(0);
    let url = format!("http://{}", grape.api);
    let service = "bench_proxy_node_http";
    let log = ctx.env.logs.join("proxy-node-http-server.log");
    let server = rpc::echo_server(ctx, Kind::Node, &url, service, "http", None, &log)?;
    for c in concurrencies(ctx)? {
        let run = Run {
            grape: &url,
            service,
            tr: "http",
            bytes: BYTES,
            concurrency: c,
            warmup: ctx.timing.warmup,
            measure: ctx.timing.measure,
            server: server.pid,
            security: Security::Plain,
            client_cores: ctx.client_cores,
            peer_connections: ctx.peer_connections,
            busy_poll: ctx.busy_poll,
        };
        let row = ProxyRow {
            path: ProxyPath::Direct,
            client: Kind::Node,
            proxy_rss: None,
            rpc: rpc::node_load(ctx, &run)?,
        };
        log_row(&row);
        ctx.report.proxy.push(row);
    }
    drop((server, grape));
    Ok(())
}

/// The concurrencies to measure: all of them, or the one `--proxy-concurrency` names.
fn concurrencies(ctx: &Ctx) -> Result<Vec<usize>, String> {
    let Some(only) = ctx.proxy_concurrency else {
        return Ok(rpc::CONCURRENCY.to_vec());
    };
    if rpc::CONCURRENCY.contains(&only) {
        Ok(vec![only])
    } else {
        Err(format!(
            "--proxy-concurrency {only}: the rows are at {:?}",
            rpc::CONCURRENCY
        ))
    }
}

fn log_row(row: &ProxyRow) {
    let r: &RpcRow = &row.rpc;
    eprintln!(
        "  proxy {:12} {:4} client {:4} c={:<2} {:>8.0} req/s p99 {} ms errors {} cpu {} rss {}",
        row.path.name(),
        row.client.name(),
        r.transport,
        r.concurrency,
        r.rps,
        super::stats::ms(r.p99),
        r.errors,
        r.server_cpu.map_or("-".into(), |v| format!("{v:.2}")),
        row.proxy_rss
            .map_or("-".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
    );
}

/// Our echo server on `transport`, announced as `service`.
fn echo_server(ctx: &Ctx, url: &str, service: &str, transport: &str) -> Result<Proc, String> {
    let log = ctx.env.logs.join(format!("proxy-{service}.log"));
    rpc::echo_server(ctx, Kind::Rust, url, service, transport, None, &log)
}

/// `grenache-proxy` on the runtime the Grape uses, serving `routes` on loopback.
fn start_proxy(ctx: &Ctx, url: &str, routes: &[&str]) -> Result<Proc, String> {
    let bin = grapes::find_binary("grenache-proxy", "grenache-proxy")?;
    let mut cmd = Command::new(bin);
    cmd.args(["--grape", url, "--bind", "127.0.0.1"])
        .args(["--runtime", ctx.env.runtime.as_str()]);
    if let Some(n) = ctx.proxy_client_shards {
        cmd.args(["--client-shards", &n.to_string()]);
    }
    if let Some(n) = ctx.proxy_threads {
        cmd.args(["--threads", &n.to_string()]);
    }
    if let Some(n) = ctx.peer_connections {
        cmd.args(["--connections-per-peer", &n.to_string()]);
    }
    if let Some(window) = ctx.busy_poll {
        cmd.args(["--busy-poll-us", &window.as_micros().to_string()]);
    }
    for route in routes {
        cmd.args(["--rpc", route]);
    }
    Proc::spawn("grenache-proxy", cmd, &ctx.env.logs.join("proxy.log"))
}

/// Waits until the Grape lists a peer for `name` (the proxy announced its route).
fn wait_announced(grape: &grapes::Grape, name: &str, proxy: &Proc) -> Result<(), String> {
    let limit = Instant::now() + Duration::from_secs(15);
    loop {
        if grape.lookup(name).is_ok_and(|peers| !peers.is_empty()) {
            return Ok(());
        }
        if !proxy.is_running() || Instant::now() >= limit {
            return Err(format!(
                "the proxy's route {name} was never announced:\n{}",
                proxy.log_tail(20)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The highest resident memory of a process while a load runs, sampled every 50 ms.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kb) = procs::proc_status_kb(pid, "VmRSS:") {
                        peak.fetch_max(kb * 1024, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        RssWatch { stop, peak, thread }
    }

    fn stop(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        Some(self.peak.load(Ordering::Relaxed)).filter(|b| *b > 0)
    }
}
