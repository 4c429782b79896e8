//! `grape-bench`: benchmarks our Grape against the Node.js Grape (grenache-grape 1.0.0)
//! on loopback, side by side in one run, and prints a table of ratios.
//!
//! ```text
//! cargo run --release -p grenache-bench -- --all
//! ```
//! Sections: `--ceiling` (nginx and the load generator's own limit), `--api` (Grape HTTP
//! API), `--udp` (DHT queries per second), `--discovery` (announce-to-lookup latency),
//! `--memory`, `--rpc` (peer RPC over HTTP, WebSocket and ZeroMQ), `--proxy` (the same
//! RPC direct and through grenache-proxy), `--tls` (peer RPC over HTTPS and WSS),
//! `--scale` (simulator), `--micro` (criterion); `--all` runs them all, `--quick` shortens
//! every one, `--chart PATH` also writes the API throughput chart there; `--transport ws
//! --payload 100` keeps only those rows of `--rpc` and `--tls` (to measure or profile one
//! path). See docs/benchmarks.md.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Parser;

use grenache_bench::grapes::{self, Env, Kind};
use grenache_bench::report::Report;
use grenache_bench::sections::{self, Ctx, RpcOnly, Timing};
use grenache_bench::{fixed, procs, proxy, rpc, scale, tls, udp_load};

#[derive(Parser, Debug)]
#[command(
    name = "grape-bench",
    about = "Benchmarks our Grape against the Node.js Grape on loopback"
)]
struct Args {
    /// Run every section.
    #[arg(long)]
    all: bool,
    /// Shorter runs and smaller sizes everywhere (about 2 minutes).
    #[arg(long)]
    quick: bool,
    /// HTTP ceiling: nginx with a fixed reply, our load generator against wrk.
    #[arg(long)]
    ceiling: bool,
    /// Grape HTTP API: hot lookups, fresh lookups, announces at concurrency 1, 16, 64.
    #[arg(long)]
    api: bool,
    /// Grapes in the API section's network of each kind (the load goes to the first; at
    /// least 2, so the hot name lives on another Grape).
    #[arg(long, default_value_t = 5)]
    api_grapes: usize,
    /// DHT UDP port: ping, find_node, get_peers per second against a bare echo server.
    #[arg(long)]
    udp: bool,
    /// Time from an announce on one Grape to a successful lookup on another (20 Grapes).
    #[arg(long)]
    discovery: bool,
    /// Resident memory: idle, routing table, announced peers, a flood of announces, and a
    /// fresh Grape at 20k, 100k and 1M distinct names (Node's up to 100k: it keeps ~20k)
    #[arg(long)]
    memory: bool,
    /// Peer RPC over HTTP, WebSocket and ZeroMQ.
    #[arg(long)]
    rpc: bool,
    /// Peer RPC direct and through grenache-proxy, beside a direct Node pair.
    #[arg(long)]
    proxy: bool,
    /// Peer RPC over HTTPS and WSS (mutual TLS), ours plain and TLS against Node's TLS.
    #[arg(long)]
    tls: bool,
    /// The simulator at 1,000, 10,000 and 100,000 nodes.
    #[arg(long)]
    scale: bool,
    /// The core's criterion micro-benchmarks (cargo bench, quick mode).
    #[arg(long)]
    micro: bool,
    /// Runtime of our Grape (the `grape` binary's default is tokio).
    #[arg(long, default_value = "tokio")]
    runtime: String,
    /// Leave the Node.js side out.
    #[arg(long)]
    no_node: bool,
    /// Folder with package.json and the lock of the pinned Node packages.
    #[arg(long)]
    node_dir: Option<PathBuf>,
    /// Where logs, results.md and throughput.svg go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the API throughput chart (SVG) here, e.g. docs/bench-throughput.svg.
    #[arg(long, value_name = "PATH")]
    chart: Option<PathBuf>,
    /// Load-generator threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Cores of our peer RPC client in --rpc, --proxy and --tls: 1 is a current-thread
    /// runtime with one driver (per-core rows); N > 1 is N tokio workers and N drivers.
    #[arg(long, default_value_t = 1)]
    client_cores: usize,
    /// Drivers of grenache-proxy's outgoing clients in --proxy (its --client-shards);
    /// unset, the proxy's default (the cores it may use).
    #[arg(long, value_name = "N")]
    proxy_client_shards: Option<usize>,
    /// grenache-proxy's tokio worker threads in --proxy (its --threads; 1 is one thread);
    /// unset, the proxy's default.
    #[arg(long, value_name = "N")]
    proxy_threads: Option<usize>,
    /// HTTP connections per peer of our peer RPC client (its `max_connections_per_peer`)
    /// and of grenache-proxy's outgoing clients (its --connections-per-peer) in --rpc,
    /// --proxy and --tls; unset, their defaults (64).
    #[arg(long, value_name = "N")]
    peer_connections: Option<usize>,
    /// Our peer RPC clients and echo servers in --rpc, --tls and --proxy, and grenache-proxy,
    /// busy-poll this many microseconds after each wake-up (their `busy_poll`, the proxy's
    /// --busy-poll-us); 0, the default, is off.
    #[arg(long, value_name = "US", default_value_t = 0)]
    busy_poll_us: u64,
    /// Only this transport's rows in --rpc and --tls (`http`, `ws` or `zmq`).
    #[arg(long, value_name = "NAME", value_parser = ["http", "ws", "zmq"])]
    transport: Option<String>,
    /// Only this payload size's rows in --rpc and --tls (100 or 10240 bytes).
    #[arg(long, value_name = "BYTES")]
    payload: Option<usize>,
    /// Only the --proxy rows at this many requests in flight (1, 16 or 64): one row alone,
    /// e.g. to profile the proxy under a steady load (`perf record -p <proxy pid>`).
    #[arg(long, value_name = "N")]
    proxy_concurrency: Option<usize>,
    /// Wait (up to --wait-minutes) for the 1-minute load average to drop below this.
    #[arg(long, default_value_t = 1.5)]
    max_load: f64,
    /// How long to wait for a quiet machine before running anyway.
    #[arg(long, default_value_t = 0)]
    wait_minutes: u64,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// Helper servers the bench starts as its own children.
#[derive(clap::Subcommand, Debug)]
enum Helper {
    /// Answers every HTTP request with a fixed body (one thread).
    #[command(hide = true)]
    ServeFixed {
        #[arg(long)]
        port: u16,
    },
    /// Echoes UDP datagrams (one thread).
    #[command(hide = true)]
    UdpEcho {
        #[arg(long)]
        port: u16,
    },
    /// The UDP section's load on one server, alone: for profiling it (`perf record -p`).
    #[command(hide = true)]
    UdpLoad {
        /// The server, e.g. 127.0.0.1:20001.
        #[arg(long)]
        target: std::net::SocketAddr,
        /// `ping`, `find_node` or `get_peers`.
        #[arg(long, default_value = "ping")]
        query: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Count every reply (an echo server's), not only KRPC responses.
        #[arg(long)]
        any_reply: bool,
    },
    /// Serves an echo RPC service through a Grape (one thread).
    #[command(hide = true)]
    RpcServe {
        #[arg(long)]
        grape: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        transport: String,
        /// Serve over TLS with the PEM files in this folder.
        #[arg(long)]
        pem_dir: Option<PathBuf>,
        /// Busy-poll this many microseconds after each wake-up.
        #[arg(long)]
        busy_poll_us: Option<u64>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let served = match &args.helper {
        Some(Helper::ServeFixed { port }) => Some(fixed::serve_fixed(*port)),
        Some(Helper::UdpEcho { port }) => Some(udp_load::serve_echo(*port)),
        Some(Helper::UdpLoad {
            target,
            query,
            seconds,
            any_reply,
        }) => Some(udp_load_alone(*target, query, *seconds, *any_reply)),
        Some(Helper::RpcServe {
            grape,
            service,
            transport,
            pem_dir,
            busy_poll_us,
        }) => Some(rpc::serve(
            grape,
            service,
            transport,
            pem_dir.as_deref(),
            busy_poll_us.map(std::time::Duration::from_micros),
        )),
        None => None,
    };
    if let Some(result) = served {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("grape-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    procs::install_interrupt_handler();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grape-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `udp-load` helper: one load run, its rate and p99 on stdout.
fn udp_load_alone(
    target: std::net::SocketAddr,
    query: &str,
    seconds: u64,
    any_reply: bool,
) -> Result<(), String> {
    let queries = sections::udp_queries();
    let (_, generator) = queries
        .iter()
        .find(|(name, _)| *name == query)
        .ok_or_else(|| format!("no query {query:?}: ping, find_node or get_peers"))?;
    let x = sections::udp_measure(
        target,
        !any_reply,
        generator.as_ref(),
        Duration::from_millis(500),
        Duration::from_secs(seconds),
    )?;
    eprintln!(
        "udp-load {query} {target}: {:.0}/s p99 {} ms",
        x.rps,
        grenache_bench::stats::ms(x.p99)
    );
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let selected = [
        args.ceiling,
        args.api,
        args.udp,
        args.discovery,
        args.memory,
        args.rpc,
        args.proxy,
        args.tls,
        args.scale,
        args.micro,
    ];
    if let Some(b) = args.payload.filter(|b| !rpc::PAYLOADS.contains(b)) {
        return Err(format!("--payload {b}: the sizes are {:?}", rpc::PAYLOADS));
    }
    let all = args.all || !selected.iter().any(|s| *s);
    let want = |flag: bool| all || flag;
    let workspace = scale::workspace_root();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace.join("target/grape-bench"));
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;

    wait_for_quiet(args.max_load, Duration::from_secs(args.wait_minutes * 60));
    let load_before = procs::load_average();
    let grape = grapes::find_grape_binary()?;
    let mut report = Report {
        out: out.clone(),
        api_grapes: args.api_grapes.max(2),
        ..Report::default()
    };
    let mut kinds = vec![Kind::Rust];
    let node_dir = args
        .node_dir
        .clone()
        .unwrap_or_else(|| workspace.join("grape-bin/tests/node"));
    let node_modules = if args.no_node {
        report
            .notes
            .push("run with --no-node: Rust side only".into());
        None
    } else {
        match grapes::ensure_node_modules(&node_dir) {
            Ok(m) => {
                kinds.push(Kind::Node);
                Some(m)
            }
            Err(e) => {
                report.notes.push(format!("Node.js side skipped: {e}"));
                None
            }
        }
    };
    let env = Env {
        grape,
        runtime: args.runtime.clone(),
        grape_args: Vec::new(),
        node_modules,
        node_scripts: workspace.join("bench/node"),
        logs,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let timing = if args.quick {
        Timing::quick()
    } else {
        Timing::full()
    };
    let mut ctx = Ctx {
        env,
        rt,
        timing,
        kinds,
        threads: args.threads.max(1),
        client_cores: args.client_cores.max(1),
        proxy_client_shards: args.proxy_client_shards,
        proxy_threads: args.proxy_threads,
        peer_connections: args.peer_connections,
        busy_poll: (args.busy_poll_us > 0)
            .then(|| std::time::Duration::from_micros(args.busy_poll_us)),
        rpc_only: RpcOnly {
            transport: args.transport.clone(),
            payload: args.payload,
        },
        proxy_concurrency: args.proxy_concurrency,
        report,
    };
    if ctx.client_cores > 1 {
        let n = ctx.client_cores;
        let note = format!("our peer RPC client: {n} tokio workers and {n} drivers");
        ctx.report.notes.push(note);
    }
    if let Some(window) = ctx.busy_poll {
        let note = format!(
            "our peer RPC clients and echo servers busy-poll {} µs after each wake-up",
            window.as_micros()
        );
        ctx.report.notes.push(note);
    }
    if let Some(n) = ctx.proxy_client_shards {
        let note = format!("grenache-proxy --client-shards {n}");
        ctx.report.notes.push(note);
    }
    if let Some(n) = ctx.proxy_threads {
        let note = format!("grenache-proxy --threads {n}");
        ctx.report.notes.push(note);
    }
    if let Some(n) = ctx.peer_connections {
        let note = format!("HTTP connections per peer: {n} (our client and grenache-proxy's)");
        ctx.report.notes.push(note);
    }
    let started = Instant::now();
    type Section = fn(&mut Ctx) -> Result<(), String>;
    let plan: [(&str, bool, Section); 10] = [
        ("ceiling", want(args.ceiling), sections::ceiling),
        ("api", want(args.api), sections::api),
        ("udp", want(args.udp), sections::udp),
        ("discovery", want(args.discovery), sections::discovery),
        ("memory", want(args.memory), sections::memory),
        ("rpc", want(args.rpc), rpc::rpc),
        ("proxy", want(args.proxy), proxy::proxy),
        ("tls", want(args.tls), tls::tls),
        ("scale", want(args.scale), |ctx| {
            let quick = ctx.timing.discovery_trials < 10;
            let sizes: &[usize] = if quick {
                &[1_000, 10_000]
            } else {
                &[1_000, 10_000, 100_000]
            };
            scale::scale(&mut ctx.report, sizes, if quick { 100 } else { 300 })?;
            for loss in [0.0, 0.1] {
                scale::loss_latency(&mut ctx.report, 20, loss, if quick { 20 } else { 100 })?;
            }
            Ok(())
        }),
        ("micro", want(args.micro), |ctx| {
            scale::micro(&mut ctx.report)
        }),
    ];
    for (name, on, section) in plan {
        if !on {
            continue;
        }
        eprintln!(
            "grape-bench: {name} (load average {:.2})",
            procs::load_average().unwrap_or(0.0)
        );
        let t = Instant::now();
        if let Err(e) = section(&mut ctx) {
            eprintln!("grape-bench: {name} failed: {e}");
            ctx.report.notes.push(format!("section {name} failed: {e}"));
        }
        eprintln!("grape-bench: {name} took {:.0?}", t.elapsed());
    }
    procs::kill_all();
    let load_after = procs::load_average();
    ctx.report.header = header(args, load_before, load_after, started.elapsed());
    let text = ctx.report.markdown();
    let stdout = std::io::stdout();
    use std::io::Write as _;
    let _ = writeln!(stdout.lock(), "{text}");
    std::fs::write(out.join("results.md"), &text).map_err(|e| e.to_string())?;
    eprintln!("grape-bench: wrote {}", out.join("results.md").display());
    match ctx.report.svg() {
        Some(svg) => {
            let mut paths = vec![out.join("throughput.svg")];
            paths.extend(args.chart.clone());
            for path in paths {
                std::fs::write(&path, &svg).map_err(|e| format!("{}: {e}", path.display()))?;
                eprintln!("grape-bench: wrote {}", path.display());
            }
        }
        None if args.chart.is_some() => {
            eprintln!("grape-bench: no chart: the api section did not run or measured nothing");
        }
        None => {}
    }
    Ok(())
}

/// Waits while the machine is busy, up to `limit`.
fn wait_for_quiet(max_load: f64, limit: Duration) {
    let start = Instant::now();
    while let Some(load) = procs::load_average() {
        if load < max_load || start.elapsed() >= limit {
            return;
        }
        eprintln!("grape-bench: load average {load:.2} ≥ {max_load}; waiting 30 s");
        std::thread::sleep(Duration::from_secs(30));
    }
}

/// Machine, date, load and the exact command, for the report.
fn header(args: &Args, before: Option<f64>, after: Option<f64>, took: Duration) -> Vec<String> {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1_048_576.0);
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    let command: Vec<String> = std::env::args().skip(1).collect();
    vec![
        format!("**Date:** {date}; took {:.0} s", took.as_secs_f64()),
        format!(
            "**Machine:** {cores} cores ({cpu}), {mem_gb:.1} GiB memory; Node.js {node}; our Grape on {}",
            args.runtime
        ),
        format!(
            "**Load average (1 min):** {:.2} before, {:.2} after",
            before.unwrap_or(0.0),
            after.unwrap_or(0.0)
        ),
        format!(
            "**Command:** `cargo run --release -p grenache-bench -- {}`",
            command.join(" ")
        ),
    ]
}
