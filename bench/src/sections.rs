//! The benchmark sections: each starts what it compares, drives the same load at each,
//! stops them, and adds its rows to the [`Report`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use grenache_core::NodeId;
use grenache_core::dht::krpc::Method;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

use super::grapes::{self, Env, Kind};
use super::http_load::{self, Workload};
use super::report::{
    ApiRow, CeilingRow, DiscoveryRow, MemoryRow, NamesRow, NamesRung, Report, UdpRow, UdpStat,
};
use super::stats::{Latencies, ms};
use super::{fixed, krpc, procs, udp_load};

/// How long each part runs; `--quick` shrinks everything.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    pub discovery_trials: usize,
    pub fake_nodes: usize,
    pub peers: u64,
    pub flood: u64,
    /// Distinct names announced to a fresh Grape, RSS read at each total.
    pub names: &'static [u64],
}

impl Timing {
    pub fn full() -> Timing {
        Timing {
            warmup: Duration::from_millis(500),
            measure: Duration::from_millis(2500),
            discovery_trials: 15,
            fake_nodes: 10_000,
            peers: 100_000,
            flood: 200_000,
            names: &[20_000, 100_000, 1_000_000],
        }
    }

    pub fn quick() -> Timing {
        Timing {
            warmup: Duration::from_millis(300),
            measure: Duration::from_secs(1),
            discovery_trials: 5,
            fake_nodes: 2_000,
            peers: 20_000,
            flood: 40_000,
            names: &[5_000, 20_000],
        }
    }
}

/// Everything a section needs.
pub struct Ctx {
    pub env: Env,
    pub rt: tokio::runtime::Runtime,
    pub timing: Timing,
    pub kinds: Vec<Kind>,
    /// Load-generator threads.
    pub threads: usize,
    /// Cores (tokio workers and client drivers) of our peer RPC client.
    pub client_cores: usize,
    /// grenache-proxy's `--client-shards`, if given.
    pub proxy_client_shards: Option<usize>,
    /// grenache-proxy's `--threads`, if given.
    pub proxy_threads: Option<usize>,
    /// Our peer RPC client's, and grenache-proxy's, HTTP connections per peer, if given.
    pub peer_connections: Option<usize>,
    /// The busy-poll window of our peer RPC clients and servers (`--busy-poll-us`), if given.
    pub busy_poll: Option<std::time::Duration>,
    /// Which rows of `--rpc` and `--tls` run (`--transport`, `--payload`).
    pub rpc_only: RpcOnly,
    /// Only the proxy rows at this concurrency, if given.
    pub proxy_concurrency: Option<usize>,
    pub report: Report,
}

/// A filter on the peer RPC rows, so one transport and size can be measured (and
/// profiled) alone; `None` keeps every one.
#[derive(Clone, Debug, Default)]
pub struct RpcOnly {
    pub transport: Option<String>,
    pub payload: Option<usize>,
}

impl RpcOnly {
    /// Whether rows over `transport` run.
    pub fn transport(&self, transport: &str) -> bool {
        self.transport.as_deref().is_none_or(|t| t == transport)
    }

    /// Whether rows of `bytes` payloads run.
    pub fn payload(&self, bytes: usize) -> bool {
        self.payload.is_none_or(|b| b == bytes)
    }
}

impl Ctx {
    /// A part of a section failed: said on stderr and kept in the report's notes, and the
    /// section goes on with its other parts.
    pub fn part_failed(&mut self, what: &str, err: &str) {
        eprintln!("  {what} failed: {err}");
        self.report.notes.push(format!("{what}: {err}"));
    }
}

/// Concurrency levels of the API section.
pub const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// The three API workloads, by the name the report uses.
pub const WORKLOADS: [&str; 3] = ["hot lookup", "fresh lookup", "announce"];

/// The name the hot lookups ask for (announced once before they start).
const HOT: &str = "hot-svc";

fn workload(name: &str, run: u64) -> Workload {
    match name {
        "hot lookup" => Workload::Fixed {
            path: "/lookup".into(),
            body: format!("{{\"rid\":\"r\",\"data\":\"{HOT}\"}}"),
        },
        "fresh lookup" => Workload::FreshLookup {
            prefix: format!("fresh{run}"),
        },
        _ => Workload::FreshAnnounce {
            prefix: format!("svc{run}"),
        },
    }
}

/// The HTTP ceiling: nginx (one worker) and our own fixed-reply server under the load
/// generator, and nginx under wrk, so the load generator's own limit is on record.
pub fn ceiling(ctx: &mut Ctx) -> Result<(), String> {
    let t = ctx.timing;
    let hot = workload("hot lookup", 0);
    let spec = |addr: SocketAddr| http_load::Spec {
        addr,
        connections: 64,
        warmup: t.warmup,
        measure: t.measure,
        workload: hot.clone(),
    };
    let (fixed_proc, fixed_addr) = fixed::start_fixed(&ctx.env.logs)?;
    let own = http_load::run(ctx.threads, &spec(fixed_addr));
    drop(fixed_proc);
    ctx.report.ceiling.push(CeilingRow {
        what: "fixed-reply Rust server (1 thread), our load generator".into(),
        rps: own.rps,
        p99: own.latency.p99(),
    });
    match fixed::start_nginx(&ctx.report.out)? {
        None => ctx.report.notes.push(
            "nginx is not installed: no HTTP ceiling measured (apt-get install -y nginx wrk)"
                .into(),
        ),
        Some((nginx, addr)) => {
            let ours = http_load::run(ctx.threads, &spec(addr));
            ctx.report.ceiling.push(CeilingRow {
                what: "nginx (1 worker), our load generator (2 threads, 64 conns)".into(),
                rps: ours.rps,
                p99: ours.latency.p99(),
            });
            ctx.report.nginx_rps = Some(ours.rps);
            let secs = (t.warmup + t.measure).as_secs().max(1);
            match fixed::run_wrk(&ctx.report.out, addr, 64, secs)? {
                Some(rps) => ctx.report.ceiling.push(CeilingRow {
                    what: "nginx (1 worker), wrk (2 threads, 64 conns)".into(),
                    rps,
                    p99: None,
                }),
                None => ctx
                    .report
                    .notes
                    .push("wrk is not installed: the load generator is not cross-checked".into()),
            }
            drop(nginx);
        }
    }
    Ok(())
}

/// Grape API throughput and latency, each kind on a network of its own
/// ([`Report::api_grapes`] Grapes).
pub fn api(ctx: &mut Ctx) -> Result<(), String> {
    let t = ctx.timing;
    let size = ctx.report.api_grapes.max(2);
    for kind in ctx.kinds.clone() {
        let grapes = grapes::start_network(&ctx.env, kind, size, "api")?;
        grapes::settle(&grapes, Duration::from_secs(60))?;
        // The hot name lives on another Grape, so the first lookup crosses the DHT.
        grapes[1].announce(HOT, 1337)?;
        let found = grapes[0].lookup(HOT)?;
        if found.is_empty() {
            return Err(format!("{} Grape 0 cannot find {HOT}", kind.name()));
        }
        let target = grapes[0].api;
        let mut run = 0;
        for name in WORKLOADS {
            for c in CONCURRENCY {
                run += 1;
                let out = http_load::run(
                    ctx.threads,
                    &http_load::Spec {
                        addr: target,
                        connections: c,
                        warmup: t.warmup,
                        measure: t.measure,
                        workload: workload(name, run),
                    },
                );
                eprintln!(
                    "  api {:4} {name:12} c={c:<2} {:>9.0} req/s p50 {} ms p99 {} ms errors {}",
                    kind.name(),
                    out.rps,
                    super::stats::ms(out.latency.p50()),
                    super::stats::ms(out.latency.p99()),
                    out.errors
                );
                if let Some(e) = &out.first_error {
                    tracing::info!(kind = kind.name(), name, c, "first error: {e}");
                }
                ctx.report.api.push(ApiRow {
                    kind,
                    workload: name,
                    concurrency: c,
                    rps: out.rps,
                    p50: out.latency.p50(),
                    p99: out.latency.p99(),
                    errors: out.errors,
                    first_error: out.first_error,
                });
                // Let traversals still running from this point end before the next.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        let rss = grapes[0].proc.rss();
        ctx.report.api_rss.insert(kind, rss);
    }
    Ok(())
}

/// Announce on one Grape, poll lookups on another until the name shows up; 20 Grapes.
pub fn discovery(ctx: &mut Ctx) -> Result<(), String> {
    for kind in ctx.kinds.clone() {
        let grapes = grapes::start_network(&ctx.env, kind, 20, "disc")?;
        let settled = grapes::settle(&grapes, Duration::from_secs(90))?;
        eprintln!(
            "  discovery {}: 20 Grapes settled in {settled:?}",
            kind.name()
        );
        let mut samples = Vec::new();
        let mut failures = 0;
        for trial in 0..ctx.timing.discovery_trials {
            let a = trial % grapes.len();
            let b = (a + 7 + trial) % grapes.len();
            let b = if a == b { (b + 1) % grapes.len() } else { b };
            let name = format!("disc-{trial}-{}", std::process::id());
            let start = Instant::now();
            grapes[a].announce(&name, 5000 + trial as u16)?;
            let found = loop {
                if grapes[b]
                    .lookup(&name)
                    .map(|f| !f.is_empty())
                    .unwrap_or(false)
                {
                    break true;
                }
                if start.elapsed() > Duration::from_secs(15) {
                    break false;
                }
            };
            if found {
                samples.push(start.elapsed());
            } else {
                failures += 1;
            }
        }
        let latencies = Latencies::from_durations(&samples);
        ctx.report.discovery.push(DiscoveryRow {
            kind,
            trials: ctx.timing.discovery_trials,
            failures,
            p50: latencies.p50(),
            p90: latencies.percentile(90.0),
            max: latencies.percentile(100.0),
        });
    }
    Ok(())
}

/// Load threads of the UDP section, and queries each keeps in flight.
const UDP_THREADS: usize = 2;
const UDP_WINDOW: usize = 128;

/// Queries in flight on the DHT port, all threads together.
pub const UDP_IN_FLIGHT: usize = UDP_THREADS * UDP_WINDOW;

/// Makes the `i`-th query of load thread `t`.
pub type QueryGen = Box<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>;

/// The UDP section's queries, by name: `ping`, `find_node`, `get_peers`.
pub fn udp_queries() -> [(&'static str, QueryGen); 3] {
    let querier = NodeId([0x42; 20]);
    let target = NodeId([0x17; 20]);
    [
        (
            "ping",
            Box::new(move |_t: usize, i: u64| krpc::query(querier, i, Method::Ping)),
        ),
        (
            "find_node",
            Box::new(move |_t: usize, i: u64| {
                krpc::query(
                    querier,
                    i,
                    Method::FindNode {
                        target: target.into(),
                    },
                )
            }),
        ),
        (
            "get_peers",
            Box::new(move |_t: usize, i: u64| {
                krpc::query(
                    querier,
                    i,
                    Method::GetPeers {
                        info_hash: krpc::key(HOT),
                    },
                )
            }),
        ),
    ]
}

/// The UDP section's closed-loop load on `addr` ([`UDP_IN_FLIGHT`] queries in flight).
pub fn udp_measure(
    addr: SocketAddr,
    krpc_only: bool,
    generator: &udp_load::Generator,
    warmup: Duration,
    measure: Duration,
) -> Result<UdpStat, String> {
    udp_load::run(&udp_load::Spec {
        target: addr,
        threads: UDP_THREADS,
        window: UDP_WINDOW,
        warmup,
        measure,
        max_sends: None,
        krpc_replies_only: krpc_only,
        generator,
    })
    .map(|out| UdpStat {
        rps: out.rps,
        p99: out.latency.p99(),
    })
}

/// DHT queries answered per second on the UDP port, against a bare echo server (one
/// thread, one `recvfrom` and one `sendto` per datagram), with our Grape's batched reads and
/// sends on and off.
pub fn udp(ctx: &mut Ctx) -> Result<(), String> {
    let t = ctx.timing;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let echo_port = procs::free_udp_port()?;
    let mut cmd = std::process::Command::new(me);
    cmd.args(["udp-echo", "--port", &echo_port.to_string()]);
    let echo_proc = procs::Proc::spawn("udp-echo", cmd, &ctx.env.logs.join("udp-echo.log"))?;
    std::thread::sleep(Duration::from_millis(200));
    let echo_addr = SocketAddr::from(([127, 0, 0, 1], echo_port));
    let mut lone = BTreeMap::new();
    for kind in ctx.kinds.clone() {
        let g = grapes::start_network(&ctx.env, kind, 1, "udp")?;
        lone.insert(kind, g);
    }
    let unbatched = if ctx.kinds.contains(&Kind::Rust) {
        let env = Env {
            grape_args: vec!["--no-udp-batch".into()],
            ..ctx.env.clone()
        };
        Some(grapes::start_network(&env, Kind::Rust, 1, "udp-unbatched")?.remove(0))
    } else {
        None
    };
    for (name, generator) in &udp_queries() {
        let measure = |addr: SocketAddr, krpc_only: bool| {
            udp_measure(addr, krpc_only, generator.as_ref(), t.warmup, t.measure)
        };
        let echo = measure(echo_addr, false)?;
        let mut row = UdpRow {
            query: name,
            echo,
            by_kind: BTreeMap::new(),
            unbatched: None,
        };
        let show = |who: &str, x: UdpStat| {
            eprintln!(
                "  udp {name:9} {who:15} {:>9.0}/s p99 {} ms (echo {:.0}/s p99 {} ms)",
                x.rps,
                ms(x.p99),
                echo.rps,
                ms(echo.p99)
            );
        };
        for (kind, g) in &lone {
            let x = measure(g[0].dht, true)?;
            show(kind.name(), x);
            row.by_kind.insert(*kind, x);
        }
        if let Some(g) = &unbatched {
            let x = measure(g.dht, true)?;
            show("rust unbatched", x);
            row.unbatched = Some(x);
        }
        ctx.report.udp.push(row);
    }
    drop(echo_proc);
    Ok(())
}

/// Memory: idle, routing table filled by fake nodes, many announced peers, and a flood of
/// distinct announces; each on a lone Grape.
pub fn memory(ctx: &mut Ctx) -> Result<(), String> {
    let t = ctx.timing;
    for kind in ctx.kinds.clone() {
        let mut g = grapes::start_network(&ctx.env, kind, 1, "mem")?.remove(0);
        std::thread::sleep(Duration::from_secs(2));
        let idle = g.proc.rss();
        let id = krpc::node_id(g.dht)?;
        // Asked before the table fills: the Node Grape answers `get_peers` for an unknown
        // key with its whole routing table (k-bucket's `closest` without a count), and with
        // thousands of entries that reply no longer fits in a datagram, so it never comes.
        // A token stays valid for minutes on both sides, long past this section.
        let token = krpc::token(g.dht)?;
        let swarm = fake_nodes(&ctx.rt, g.dht, id, t.fake_nodes)?;
        if !g.proc.is_running() {
            return Err(format!(
                "{} Grape exited under {} fake nodes:\n{}",
                kind.name(),
                t.fake_nodes,
                g.proc.log_tail(20)
            ));
        }
        let filled = g.holdings();
        let peers_per_key = 100u64;
        let announce_token = token.clone();
        let peers = udp_load::run(&udp_load::Spec {
            target: g.dht,
            threads: 2,
            window: 32,
            warmup: Duration::ZERO,
            measure: Duration::from_secs(120),
            max_sends: Some(t.peers),
            krpc_replies_only: true,
            generator: &move |th: usize, i: u64| {
                let n = i * 2 + th as u64;
                let name = format!("mem-{}", n / peers_per_key);
                let port = 10_000 + (n % peers_per_key) as u16;
                krpc::announce(NodeId([0x33; 20]), n, &name, port, &announce_token)
            },
        })?;
        let with_peers = g.holdings();
        let rss_full = g.proc.rss();
        // The flood: distinct names, RSS sampled all along.
        let sampler = RssSampler::start(g.proc.pid);
        let flood_token = token.clone();
        let flood = udp_load::run(&udp_load::Spec {
            target: g.dht,
            threads: 2,
            window: 32,
            warmup: Duration::ZERO,
            measure: Duration::from_secs(180),
            max_sends: Some(t.flood),
            krpc_replies_only: true,
            generator: &move |th: usize, i: u64| {
                let n = i * 2 + th as u64;
                krpc::announce(
                    NodeId([0x34; 20]),
                    n,
                    &format!("flood-{n}"),
                    7000,
                    &flood_token,
                )
            },
        })?;
        let flood_peak = sampler.stop();
        let after_flood = g.holdings();
        let flood_after = g.proc.rss();
        drop(swarm);
        eprintln!(
            "  memory {}: idle {:?} table {:?} peers {:?} flood peak {:?}",
            kind.name(),
            idle,
            filled.routing_nodes,
            with_peers.stored_peers,
            flood_peak
        );
        ctx.report.memory.push(MemoryRow {
            kind,
            idle,
            fake_nodes: t.fake_nodes,
            routing_nodes: filled.routing_nodes,
            peers_sent: t.peers,
            peers_acked: peers.replies,
            peers_stored: with_peers.stored_peers,
            rss_full,
            flood_sent: t.flood,
            flood_acked: flood.replies,
            flood_rate: flood.rps,
            flood_stored: after_flood.stored_peers,
            flood_keys: after_flood.stored_keys,
            flood_peak,
            flood_after,
        });
    }
    for kind in ctx.kinds.clone() {
        let row = names(ctx, kind)?;
        ctx.report.names.push(row);
    }
    Ok(())
}

/// The Node Grape keeps about 20,000 announced names whatever it is sent; past this many
/// sent, a rung would only cost it a minute for the same answer.
const NODE_NAMES_MAX: u64 = 100_000;

/// Names sampled at each rung to see that they are still found.
const NAMES_SAMPLE: u64 = 200;

/// Distinct names (one peer each) announced to a fresh lone Grape, up to each of
/// `timing.names` in turn; at each total: RSS, keys stored, and how many of a sample
/// spread over every name sent so far a `get_peers` still finds.
fn names(ctx: &Ctx, kind: Kind) -> Result<NamesRow, String> {
    let mut g = grapes::start_network(&ctx.env, kind, 1, "names")?.remove(0);
    std::thread::sleep(Duration::from_secs(2));
    let idle = g.proc.rss();
    let token = krpc::token(g.dht)?;
    let name = |n: u64| format!("name-{n}");
    let mut rungs = Vec::new();
    let (mut sent, mut acked) = (0u64, 0u64);
    for &total in ctx.timing.names {
        if kind == Kind::Node && total > NODE_NAMES_MAX {
            break;
        }
        let (from, token) = (sent, token.clone());
        let flood = udp_load::run(&udp_load::Spec {
            target: g.dht,
            threads: 2,
            window: 32,
            warmup: Duration::ZERO,
            measure: Duration::from_secs(300),
            max_sends: Some(total - from),
            krpc_replies_only: true,
            generator: &move |th: usize, i: u64| {
                let n = from + i * 2 + th as u64;
                krpc::announce(NodeId([0x35; 20]), n, &name(n), 7000, &token)
            },
        })?;
        sent = total;
        acked += flood.replies;
        std::thread::sleep(Duration::from_secs(1));
        let rss = g.proc.rss();
        let stored_keys = g.holdings().stored_keys;
        let step = (total / NAMES_SAMPLE).max(1);
        let mut found = 0u64;
        for j in 0..NAMES_SAMPLE.min(total) {
            let n = j * step;
            let ask = krpc::query(
                NodeId([0x36; 20]),
                n,
                Method::GetPeers {
                    info_hash: krpc::key(&name(n)),
                },
            );
            if krpc::ask(g.dht, &ask).is_ok_and(|r| !r.values.is_empty()) {
                found += 1;
            }
        }
        if !g.proc.is_running() {
            return Err(format!(
                "{} Grape exited after {total} names:\n{}",
                kind.name(),
                g.proc.log_tail(20)
            ));
        }
        eprintln!(
            "  names {}: {total} sent ({acked} acked), {stored_keys:?} keys, {found}/{} found, rss {rss:?}",
            kind.name(),
            NAMES_SAMPLE.min(total)
        );
        rungs.push(NamesRung {
            sent: total,
            acked,
            stored_keys,
            sampled: NAMES_SAMPLE.min(total),
            found,
            rss,
        });
    }
    Ok(NamesRow { kind, idle, rungs })
}

/// Samples a process's RSS every 50 ms on a thread; [`RssSampler::stop`] gives the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kb) = procs::proc_status_kb(pid, "VmRSS:") {
                    p.fetch_max(kb * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Some(self.peak.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }
}

/// A swarm of fake DHT nodes that ping `target` once and then answer its queries until
/// dropped. Ids are spread over every shared-prefix length with `target_id`, so every
/// bucket a table can have gets candidates.
struct Swarm {
    stop: Arc<AtomicBool>,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn fake_nodes(
    rt: &tokio::runtime::Runtime,
    target: SocketAddr,
    target_id: NodeId,
    n: usize,
) -> Result<Swarm, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let ids: Vec<NodeId> = (0..n)
        .map(|i| target_id.random_in_bucket(i % 160, &mut rng))
        .collect();
    let sockets: Vec<tokio::net::UdpSocket> = rt.block_on(async {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(
                tokio::net::UdpSocket::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("fake node socket: {e}"))?,
            );
        }
        Ok::<_, String>(v)
    })?;
    for (i, (socket, id)) in sockets.into_iter().zip(ids).enumerate() {
        let stop = Arc::clone(&stop);
        rt.spawn(async move {
            // Spread the first pings over about a second per 2,000 nodes.
            tokio::time::sleep(Duration::from_micros(500 * i as u64)).await;
            let _ = socket
                .send_to(&krpc::query(id, i as u64, Method::Ping), target)
                .await;
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let recv =
                    tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf))
                        .await;
                let Ok(Ok((len, from))) = recv else {
                    continue;
                };
                if let Some(reply) = krpc::answer(buf.get(..len).unwrap_or_default(), id) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
    }
    // Let every node ping, and the Grape ping back the ones it took in.
    let spread = Duration::from_micros(500 * n as u64);
    std::thread::sleep(spread + Duration::from_secs(4));
    Ok(Swarm { stop })
}
