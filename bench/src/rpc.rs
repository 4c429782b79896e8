//! Peer RPC: a Rust client against a Rust server (grenache-tokio's peer module) and a Node
//! client against a Node server, each through a Grape of its own kind, over HTTP and
//! WebSocket (grenache-nodejs-http / -ws) and ZeroMQ (the `zeromq` npm package, libzmq
//! 4.3.5, speaking the frames of docs/zeromq-wire.md: bench/node/zmq-bench-*.js), with
//! 100-byte and 10 KB payloads echoed back, at 1, 16 and 64 requests in flight. Our
//! client also drives the Node servers, to show what they do when their own client is not
//! the limit.
//!
//! Both sides run one thread per process (Node is single-threaded, though libzmq adds an
//! I/O thread; the Rust server and client each get a current-thread runtime), so the
//! comparison is per core. `--client-cores N` gives our client N tokio workers and N
//! drivers instead, to show it spreading over the cores it is given. The CPU each client and each server used over the measured
//! window is recorded with every row: a server near one core is the limit, a client near
//! one core with its server well below means the load generator is. So is the CPU the
//! rest of the machine used meanwhile (other users' builds on a shared box), which tells
//! a clean row from a disturbed one.

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grenache_tokio::peer::{
    ClientTls, CurveClientConfig, CurveKeyPair, CurveServerConfig, PeerClient, PeerConfig,
    RequestOptions, RpcServer, RpcServerConfig, RpcTransport, ServerTls,
};
use serde_json::Value;

use super::grapes::{self, Kind};
use super::procs::{self, Proc};
use super::report::RpcRow;
use super::sections::Ctx;
use super::stats::Latencies;

/// Requests kept in flight by each client.
pub const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// Payload sizes, in bytes of the JSON string sent and echoed.
pub const PAYLOADS: [usize; 2] = [100, 10 * 1024];

/// The transports, by the name the report uses.
pub const TRANSPORTS: [&str; 3] = ["http", "ws", "zmq"];

fn transport(name: &str) -> RpcTransport {
    match name {
        "ws" => RpcTransport::Ws,
        "zmq" => RpcTransport::Zmq,
        _ => RpcTransport::Http,
    }
}

/// How a run's peers are secured, resolved once from its transport and PEM folder.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Security<'a> {
    Plain,
    /// HTTP and WebSocket: mutual TLS with the certificates of [`pem_files`] in this folder.
    Tls(&'a Path),
    /// ZeroMQ: CURVE with the fixed keys of [`CurveKeys`] (a secured run's PEM folder is
    /// not read).
    Curve,
}

impl<'a> Security<'a> {
    pub(crate) fn of(pem_dir: Option<&'a Path>, tr: &str) -> Security<'a> {
        match (pem_dir, transport(tr)) {
            (None, _) => Security::Plain,
            (Some(_), RpcTransport::Zmq) => Security::Curve,
            (Some(dir), _) => Security::Tls(dir),
        }
    }
}

/// Serves `service`, echoing every payload, until killed (the `rpc-serve` subcommand); with
/// `pem_dir`, secured: over TLS with the certificates of [`pem_files`], asking clients for
/// theirs, or for ZeroMQ with CURVE and the server key of [`CurveKeys`].
/// Prints `{"ready":true,"port":N}` once the Grape has taken the announce.
/// With `busy_poll`, its connections busy-poll that long after each wake-up.
pub fn serve(
    grape: &str,
    service: &str,
    kind: &str,
    pem_dir: Option<&Path>,
    busy_poll: Option<Duration>,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = PeerClient::new(PeerConfig::new(grape)).map_err(|e| e.to_string())?;
        let mut config =
            RpcServerConfig::new(transport(kind)).listen_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        match Security::of(pem_dir, kind) {
            Security::Curve => {
                let keys = CurveKeys::new();
                config =
                    config.curve(CurveServerConfig::new(keys.server).allow([keys.client.public()]));
            }
            Security::Tls(dir) => {
                let [ca, cert, key] = pem_files(dir);
                let tls =
                    ServerTls::from_pem_files(cert, key, Some(&ca)).map_err(|e| e.to_string())?;
                config = config.tls(tls);
            }
            Security::Plain => {}
        }
        if let Some(window) = busy_poll {
            config = config.busy_poll(window);
        }
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

/// The PEM files of a TLS run in `dir`, as bench/node/tls.js reads them: the CA, and one
/// certificate and key that every server and client shows.
pub fn pem_files(dir: &Path) -> [PathBuf; 3] {
    ["ca.pem", "node.pem", "node-key.pem"].map(|f| dir.join(f))
}

/// The CURVE keys of a secured ZeroMQ run, ours and libzmq's alike: one server pair and one
/// client pair that the server allows. Fixed, as the TLS run's certificates are made for it:
/// a benchmark, not a deployment.
pub(crate) struct CurveKeys {
    server: CurveKeyPair,
    client: CurveKeyPair,
}

impl CurveKeys {
    pub(crate) fn new() -> Self {
        CurveKeys {
            server: CurveKeyPair::from_secret([0x51; 32]),
            client: CurveKeyPair::from_secret([0x52; 32]),
        }
    }

    /// What bench/node/zmq-bench-serve.js and -load.js read: Z85 keys in the environment.
    fn node_env(&self, cmd: &mut Command, server: bool) {
        if server {
            cmd.env("ZMQ_CURVE_SERVER_SECRET", self.server.secret_z85());
        } else {
            cmd.env("ZMQ_CURVE_SERVER_KEY", self.server.public().to_z85())
                .env("ZMQ_CURVE_CLIENT_PUBLIC", self.client.public().to_z85())
                .env("ZMQ_CURVE_CLIENT_SECRET", self.client.secret_z85());
        }
    }
}

/// The RPC section.
pub fn rpc(ctx: &mut Ctx) -> Result<(), String> {
    let only = ctx.rpc_only.clone();
    for kind in ctx.kinds.clone() {
        let grape = grapes::start_network(&ctx.env, kind, 1, "rpc")?.remove(0);
        let url = format!("http://{}", grape.api);
        for tr in TRANSPORTS.into_iter().filter(|t| only.transport(t)) {
            if let Err(e) = transport_rows(ctx, kind, &url, tr) {
                ctx.part_failed(&format!("rpc {} {tr}", kind.name()), &e);
            }
        }
        drop(grape);
    }
    Ok(())
}

/// An echo server of `kind` over `tr` (TLS with the certificates in `pem`), announced as
/// `service`, once it says it is ready.
pub(crate) fn echo_server(
    ctx: &Ctx,
    kind: Kind,
    url: &str,
    service: &str,
    tr: &str,
    pem: Option<&Path>,
    log: &Path,
) -> Result<Proc, String> {
    let mut server = match kind {
        Kind::Rust => {
            let me = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(me);
            cmd.args(["rpc-serve", "--grape", url, "--service", service])
                .args(["--transport", tr]);
            if let Some(dir) = pem {
                cmd.arg("--pem-dir").arg(dir);
            }
            if let Some(window) = ctx.busy_poll {
                cmd.arg("--busy-poll-us")
                    .arg(window.as_micros().to_string());
            }
            Proc::spawn_piped("rpc-server", cmd, log)?
        }
        Kind::Node => {
            let script = if tr == "zmq" {
                "zmq-bench-serve.js"
            } else {
                "rpc-server.js"
            };
            let mut cmd = ctx.env.node_command(script).ok_or("no Node packages")?;
            match pem {
                Some(_) if tr == "zmq" => CurveKeys::new().node_env(&mut cmd, true),
                Some(dir) => {
                    cmd.env("PEM_DIR", dir);
                }
                None => {}
            }
            let port = procs::free_tcp_port()?.to_string();
            cmd.args([url, service]);
            if tr != "zmq" {
                cmd.arg(tr);
            }
            cmd.arg(port);
            Proc::spawn_piped("rpc-server", cmd, log)?
        }
    };
    let ready = server.read_line()?;
    if !ready.contains("\"ready\":true") {
        return Err(format!("{} {tr} RPC server: {ready}", kind.name()));
    }
    Ok(server)
}

/// One server of `kind` over `tr`, and every payload and concurrency against it.
fn transport_rows(ctx: &mut Ctx, kind: Kind, url: &str, tr: &'static str) -> Result<(), String> {
    let t = ctx.timing;
    let service = format!("bench_rpc_{tr}");
    let log = ctx
        .env
        .logs
        .join(format!("rpc-{}-{tr}-server.log", kind.name()));
    let server = echo_server(ctx, kind, url, &service, tr, None, &log)?;
    let only = ctx.rpc_only.clone();
    for bytes in PAYLOADS.into_iter().filter(|b| only.payload(*b)) {
        for c in CONCURRENCY {
            let run = Run {
                grape: url,
                service: &service,
                tr,
                bytes,
                concurrency: c,
                warmup: t.warmup,
                measure: t.measure,
                server: server.pid,
                security: Security::Plain,
                client_cores: ctx.client_cores,
                peer_connections: ctx.peer_connections,
                busy_poll: ctx.busy_poll,
            };
            // Each pair, and our client against the Node server too: that row shows what
            // the Node server does when its client is not the limit.
            let mut rows = vec![match kind {
                Kind::Rust => rust_load(&run, kind)?,
                Kind::Node => node_load(ctx, &run)?,
            }];
            if kind == Kind::Node {
                rows.push(rust_load(&run, kind)?);
            }
            for row in rows {
                eprintln!(
                    "  rpc {:4} server {:4} client {tr:4} {bytes:>5} B c={c:<2} {:>8.0} req/s p99 {} ms errors {} cpu client {} server {} others {}",
                    kind.name(),
                    row.client.name(),
                    row.rps,
                    super::stats::ms(row.p99),
                    row.errors,
                    cores(row.client_cpu),
                    cores(row.server_cpu),
                    cores(row.others_cpu),
                );
                ctx.report.rpc.push(row);
            }
            if !server.is_running() {
                return Err(format!("the server exited:\n{}", server.log_tail(20)));
            }
        }
    }
    Ok(())
}

fn cores(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// One load run's settings.
pub(crate) struct Run<'a> {
    pub(crate) grape: &'a str,
    pub(crate) service: &'a str,
    pub(crate) tr: &'static str,
    pub(crate) bytes: usize,
    pub(crate) concurrency: usize,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    /// The server's pid, for its CPU time.
    pub(crate) server: u32,
    pub(crate) security: Security<'a>,
    /// Our client's tokio workers and drivers; 1 is a current-thread runtime.
    pub(crate) client_cores: usize,
    /// Our client's `max_connections_per_peer`, if set.
    pub(crate) peer_connections: Option<usize>,
    /// Our client's busy-poll window, if set (`--busy-poll-us`).
    pub(crate) busy_poll: Option<Duration>,
}

/// CPU time of a client, a server and the whole machine over a window of wall time.
struct CpuWindow {
    pids: [u32; 2],
    opened: Instant,
    cpu: [Option<Duration>; 2],
    machine: Option<Duration>,
}

/// Cores used over a [`CpuWindow`] (1.0 = one core busy all the time).
#[derive(Clone, Copy, Debug, Default)]
struct CpuUse {
    client: Option<f64>,
    server: Option<f64>,
    /// Every other process on the machine, plus steal (interrupts and softirqs are left
    /// out: see [`procs::machine_busy`]).
    others: Option<f64>,
}

impl CpuWindow {
    fn open(client: u32, server: u32) -> CpuWindow {
        let pids = [client, server];
        CpuWindow {
            pids,
            opened: Instant::now(),
            cpu: pids.map(procs::cpu_time),
            machine: procs::machine_busy(),
        }
    }

    fn close(&self) -> CpuUse {
        let wall = self.opened.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return CpuUse::default();
        }
        let used = |i: usize| {
            let before = self.cpu[i]?;
            let after = procs::cpu_time(self.pids[i])?;
            Some(after.saturating_sub(before).as_secs_f64() / wall)
        };
        let (client, server) = (used(0), used(1));
        let machine = self
            .machine
            .zip(procs::machine_busy())
            .map(|(before, after)| after.saturating_sub(before).as_secs_f64() / wall);
        let others = machine
            .zip(client.zip(server))
            .map(|(m, (c, s))| (m - c - s).max(0.0));
        CpuUse {
            client,
            server,
            others,
        }
    }
}

/// Our client, `concurrency` requests in flight, against a server of kind `server`: on
/// one current-thread runtime, or with `run.client_cores` > 1 on that many tokio workers
/// and as many client drivers.
pub(crate) fn rust_load(run: &Run<'_>, server: Kind) -> Result<RpcRow, String> {
    let cores = run.client_cores.max(1);
    let rt = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cores);
        builder
    }
    .enable_all()
    .build()
    .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut config = PeerConfig::new(run.grape)
            .transport(transport(run.tr))
            .shards(cores);
        if let Some(n) = run.peer_connections {
            config.max_connections_per_peer = n;
        }
        if let Some(window) = run.busy_poll {
            config = config.busy_poll(window);
        }
        match run.security {
            Security::Curve => {
                let keys = CurveKeys::new();
                config = config.curve(CurveClientConfig::new(keys.client, keys.server.public()));
            }
            Security::Tls(dir) => {
                let [ca, cert, key] = pem_files(dir);
                let tls = ClientTls::from_pem_files(ca, Some((cert.as_path(), key.as_path())))
                    .map_err(|e| e.to_string())?;
                config = config.tls(tls);
            }
            Security::Plain => {}
        }
        let client = PeerClient::new(config).map_err(|e| e.to_string())?;
        let payload = Value::String("x".repeat(run.bytes));
        client
            .request(run.service, payload.clone(), RequestOptions::default())
            .await
            .map_err(|e| format!("first request: {e}"))?;
        let start = Instant::now();
        let measure_from = start + run.warmup;
        let end = measure_from + run.measure;
        // This process is the client: its CPU over the window, on a thread of its own.
        let server_pid = run.server;
        let sampler = std::thread::spawn(move || {
            std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
            let window = CpuWindow::open(std::process::id(), server_pid);
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            window.close()
        });
        let service: Arc<str> = Arc::from(run.service);
        let tasks: Vec<_> = (0..run.concurrency)
            .map(|_| {
                let (client, payload, service) =
                    (client.clone(), payload.clone(), Arc::clone(&service));
                tokio::spawn(async move {
                    let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
                    let mut first_error = None;
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
                            Ok(_) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| "bad reply".to_string());
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    (ok, errors, lat, first_error)
                })
            })
            .collect();
        let (mut ok, mut errors, mut all, mut first_error) = (0, 0, Vec::new(), None);
        for task in tasks {
            let (o, e, l, f) =
                task.await
                    .unwrap_or((0, 1, Vec::new(), Some("task panicked".into())));
            ok += o;
            errors += e;
            all.extend(l);
            first_error = first_error.or(f);
        }
        let cpu = sampler.join().unwrap_or_default();
        let latency = Latencies::from_micros(all);
        Ok(RpcRow {
            transport: run.tr,
            payload: run.bytes,
            concurrency: run.concurrency,
            kind: server,
            client: Kind::Rust,
            rps: ok as f64 / run.measure.as_secs_f64(),
            p50: latency.p50(),
            p99: latency.p99(),
            errors,
            first_error,
            client_cpu: cpu.client,
            server_cpu: cpu.server,
            others_cpu: cpu.others,
        })
    })
}

/// The Node client: grenache-nodejs-http / -ws through bench/node/rpc-load.js, or a
/// zeromq DEALER through bench/node/zmq-bench-load.js.
pub(crate) fn node_load(ctx: &Ctx, run: &Run<'_>) -> Result<RpcRow, String> {
    let script = if run.tr == "zmq" {
        "zmq-bench-load.js"
    } else {
        "rpc-load.js"
    };
    let mut cmd = ctx.env.node_command(script).ok_or("no Node packages")?;
    cmd.args([run.grape, run.service]);
    if run.tr != "zmq" {
        cmd.arg(run.tr);
    }
    match run.security {
        Security::Curve => CurveKeys::new().node_env(&mut cmd, false),
        Security::Tls(dir) => {
            cmd.env("PEM_DIR", dir);
        }
        Security::Plain => {}
    }
    cmd.arg(run.concurrency.to_string())
        .arg(run.bytes.to_string())
        .arg(run.warmup.as_millis().to_string())
        .arg(run.measure.as_millis().to_string());
    let log = ctx.env.logs.join(format!(
        "rpc-node-{}-{}-c{}-client.log",
        run.tr, run.bytes, run.concurrency
    ));
    let mut proc = Proc::spawn_piped("rpc-load", cmd, &log)?;
    // Its lines come through a thread, so a client that hangs cannot hang the bench: the
    // guard stays here and kills it at the limit.
    let stdout = proc.take_stdout().ok_or("rpc-load has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let limit = Instant::now() + run.warmup + run.measure + Duration::from_secs(30);
    let (mut window, mut cpu) = (None, CpuUse::default());
    let line = loop {
        let left = limit.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| {
            format!(
                "{script} gave no result in time or exited:\n{}",
                proc.log_tail(20)
            )
        })?;
        if line.contains("\"measuring\"") {
            window = Some(CpuWindow::open(proc.pid, run.server));
        } else if line.contains("\"measured\"") {
            cpu = window.as_ref().map(CpuWindow::close).unwrap_or_default();
        } else if line.starts_with('{') {
            break line;
        }
    };
    drop(proc);
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("{line}: {e}"))?;
    let us = |k: &str| v[k].as_u64().map(Duration::from_micros);
    Ok(RpcRow {
        transport: run.tr,
        payload: run.bytes,
        concurrency: run.concurrency,
        kind: Kind::Node,
        client: Kind::Node,
        rps: v["rps"].as_f64().unwrap_or(0.0),
        p50: us("p50_us"),
        p99: us("p99_us"),
        errors: v["errors"].as_u64().unwrap_or(0),
        first_error: v["first_error"].as_str().map(str::to_string),
        client_cpu: cpu.client,
        server_cpu: cpu.server,
        others_cpu: cpu.others,
    })
}
