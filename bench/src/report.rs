//! The results, printed as Markdown tables (readable in a terminal, pasteable into
//! docs/benchmarks.md) and drawn as an SVG chart of API throughput vs concurrency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::grapes::Kind;
use super::sections::{CONCURRENCY, UDP_IN_FLIGHT, WORKLOADS};

/// The API workloads the chart draws, one panel each.
pub const CHART_WORKLOADS: [&str; 2] = ["hot lookup", "fresh lookup"];
use super::stats::{mb, ms, rate, ratio};

#[derive(Debug)]
pub struct CeilingRow {
    pub what: String,
    pub rps: f64,
    pub p99: Option<Duration>,
}

#[derive(Debug)]
pub struct ApiRow {
    pub kind: Kind,
    pub workload: &'static str,
    pub concurrency: usize,
    pub rps: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub errors: u64,
    pub first_error: Option<String>,
}

#[derive(Debug)]
pub struct UdpRow {
    pub query: &'static str,
    pub echo: UdpStat,
    pub by_kind: BTreeMap<Kind, UdpStat>,
    /// Ours with batched reads and sends turned off (`--no-udp-batch`).
    pub unbatched: Option<UdpStat>,
}

/// Replies per second and their round trip's 99th percentile.
#[derive(Clone, Copy, Debug)]
pub struct UdpStat {
    pub rps: f64,
    pub p99: Option<Duration>,
}

#[derive(Debug)]
pub struct DiscoveryRow {
    pub kind: Kind,
    pub trials: usize,
    pub failures: usize,
    pub p50: Option<Duration>,
    pub p90: Option<Duration>,
    pub max: Option<Duration>,
}

#[derive(Debug)]
pub struct MemoryRow {
    pub kind: Kind,
    pub idle: Option<u64>,
    pub fake_nodes: usize,
    pub routing_nodes: Option<u64>,
    pub peers_sent: u64,
    pub peers_acked: u64,
    pub peers_stored: Option<u64>,
    pub rss_full: Option<u64>,
    pub flood_sent: u64,
    pub flood_acked: u64,
    pub flood_rate: f64,
    pub flood_stored: Option<u64>,
    pub flood_keys: Option<u64>,
    pub flood_peak: Option<u64>,
    pub flood_after: Option<u64>,
}

/// A fresh lone Grape fed distinct names, read at each total sent.
#[derive(Debug)]
pub struct NamesRow {
    pub kind: Kind,
    pub idle: Option<u64>,
    pub rungs: Vec<NamesRung>,
}

#[derive(Debug)]
pub struct NamesRung {
    pub sent: u64,
    pub acked: u64,
    pub stored_keys: Option<u64>,
    /// Names of those sent asked with `get_peers`, spread evenly, and how many had peers.
    pub sampled: u64,
    pub found: u64,
    pub rss: Option<u64>,
}

#[derive(Debug)]
pub struct ScaleRow {
    pub nodes: usize,
    pub lookups: u64,
    pub success_rate: f64,
    pub p50_rounds: f64,
    pub p99_rounds: f64,
    pub msgs_per_lookup: f64,
    pub wall_s: f64,
    pub note: String,
}

#[derive(Debug)]
pub struct LossRow {
    pub nodes: usize,
    pub loss: f64,
    pub lookups: usize,
    pub failed: usize,
    pub p50: Option<Duration>,
    pub p90: Option<Duration>,
}

#[derive(Debug)]
pub struct RpcRow {
    pub transport: &'static str,
    pub payload: usize,
    pub concurrency: usize,
    /// The server's kind.
    pub kind: Kind,
    /// The client's kind.
    pub client: Kind,
    pub rps: f64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Cores the client used over the measured window (1.0 = one core all the time).
    pub client_cpu: Option<f64>,
    /// Cores the server used over the measured window.
    pub server_cpu: Option<f64>,
    /// Cores the rest of the machine used meanwhile (other users, kernel, steal).
    pub others_cpu: Option<f64>,
}

/// How a proxy-section request went: straight to the echo server, or through the proxy
/// on a route (`"http -> http"`: the client's transport, then the proxy's to the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyPath {
    Direct,
    Proxied(&'static str),
}

impl ProxyPath {
    pub fn name(self) -> &'static str {
        match self {
            ProxyPath::Direct => "direct",
            ProxyPath::Proxied(route) => route,
        }
    }

    /// The transport of the direct call this path is compared with: the proxy's own leg.
    fn direct_transport(self) -> Option<&'static str> {
        match self {
            ProxyPath::Direct => None,
            ProxyPath::Proxied(route) => route.rsplit("-> ").next(),
        }
    }
}

/// One row of the proxy section: an RPC load run, with the path it took. On a proxied
/// row, `rpc.server_cpu` is the proxy's CPU.
#[derive(Debug)]
pub struct ProxyRow {
    pub path: ProxyPath,
    pub client: Kind,
    /// The proxy's highest resident memory during the run.
    pub proxy_rss: Option<u64>,
    pub rpc: RpcRow,
}

/// One row of the TLS section: an RPC load run with TLS on or off.
#[derive(Debug)]
pub struct TlsRow {
    pub secure: bool,
    pub rpc: RpcRow,
}

#[derive(Debug)]
pub struct MicroRow {
    pub name: String,
    pub time: String,
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct Report {
    pub out: PathBuf,
    pub header: Vec<String>,
    pub notes: Vec<String>,
    pub ceiling: Vec<CeilingRow>,
    pub nginx_rps: Option<f64>,
    pub api: Vec<ApiRow>,
    pub api_rss: BTreeMap<Kind, Option<u64>>,
    /// Grapes in the API section's network of each kind (`--api-grapes`).
    pub api_grapes: usize,
    pub udp: Vec<UdpRow>,
    pub discovery: Vec<DiscoveryRow>,
    pub memory: Vec<MemoryRow>,
    pub names: Vec<NamesRow>,
    pub scale: Vec<ScaleRow>,
    pub loss: Vec<LossRow>,
    pub rpc: Vec<RpcRow>,
    pub proxy: Vec<ProxyRow>,
    pub tls: Vec<TlsRow>,
    pub micro: Vec<MicroRow>,
}

impl Report {
    fn api_row(&self, kind: Kind, workload: &str, c: usize) -> Option<&ApiRow> {
        self.api
            .iter()
            .find(|r| r.kind == kind && r.workload == workload && r.concurrency == c)
    }

    /// The DHT port's table: each server's rate and p99 beside the echo server's.
    fn udp_markdown(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### DHT UDP port: queries answered per second (2 load threads, {} in flight in all)\n",
            UDP_IN_FLIGHT
        );
        let _ = writeln!(
            s,
            "| query | echo server | rust | rust, batching off | node | rust / echo | batching off / echo | node / echo | p99 rust / echo |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let cell = |x: Option<UdpStat>| {
            x.map_or("-".into(), |x| {
                format!("{} ({} ms)", rate(x.rps), ms(x.p99))
            })
        };
        let rps = |x: Option<UdpStat>| x.map(|x| x.rps);
        for r in &self.udp {
            let rust = r.by_kind.get(&Kind::Rust).copied();
            let node = r.by_kind.get(&Kind::Node).copied();
            let echo = Some(r.echo);
            let p99 = |x: Option<UdpStat>| x.and_then(|x| x.p99).map(|d| d.as_secs_f64());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.query,
                cell(echo),
                cell(rust),
                cell(r.unbatched),
                cell(node),
                ratio(rps(rust), rps(echo)),
                ratio(rps(r.unbatched), rps(echo)),
                ratio(rps(node), rps(echo)),
                ratio(p99(rust), p99(echo)),
            );
        }
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        for line in &self.header {
            let _ = writeln!(s, "{line}  ");
        }
        if !self.ceiling.is_empty() {
            let _ = writeln!(s, "\n### HTTP ceiling and the load generator\n");
            let _ = writeln!(s, "| server, client | req/s | p99 ms |\n|---|---:|---:|");
            for r in &self.ceiling {
                let _ = writeln!(s, "| {} | {} | {} |", r.what, rate(r.rps), ms(r.p99));
            }
        }
        if !self.api.is_empty() {
            self.api_markdown(&mut s);
        }
        if !self.udp.is_empty() {
            self.udp_markdown(&mut s);
        }
        if !self.discovery.is_empty() {
            let _ = writeln!(
                s,
                "\n### Discovery latency: announce on one Grape until a lookup on another finds it (20 Grapes)\n"
            );
            let _ = writeln!(
                s,
                "| grape | trials | not found in 15 s | p50 ms | p90 ms | max ms |\n|---|---:|---:|---:|---:|---:|"
            );
            for r in &self.discovery {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.kind.name(),
                    r.trials,
                    r.failures,
                    ms(r.p50),
                    ms(r.p90),
                    ms(r.max)
                );
            }
        }
        if !self.memory.is_empty() {
            self.memory_markdown(&mut s);
        }
        if !self.names.is_empty() {
            self.names_markdown(&mut s);
        }
        if !self.rpc.is_empty() {
            self.rpc_markdown(&mut s);
        }
        if !self.proxy.is_empty() {
            self.proxy_markdown(&mut s);
        }
        if !self.tls.is_empty() {
            self.tls_markdown(&mut s);
        }
        if !self.scale.is_empty() {
            let _ = writeln!(s, "\n### Scale (simulator, our core only)\n");
            let _ = writeln!(
                s,
                "| nodes | lookups | success | rounds p50 | rounds p99 | datagrams / lookup | wall s | note |\n|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for r in &self.scale {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1}% | {} | {} | {:.1} | {:.1} | {} |",
                    r.nodes,
                    r.lookups,
                    r.success_rate * 100.0,
                    r.p50_rounds,
                    r.p99_rounds,
                    r.msgs_per_lookup,
                    r.wall_s,
                    r.note
                );
            }
        }
        if !self.loss.is_empty() {
            let _ = writeln!(
                s,
                "\n### Lookup latency under packet loss (simulator, 1 ms links; Node Grape measured at 2.2 s median with 10% loss on netem)\n"
            );
            let _ = writeln!(
                s,
                "| nodes | loss | lookups | failed | p50 ms | p90 ms |\n|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.loss {
                let _ = writeln!(
                    s,
                    "| {} | {:.0}% | {} | {} | {} | {} |",
                    r.nodes,
                    r.loss * 100.0,
                    r.lookups,
                    r.failed,
                    ms(r.p50),
                    ms(r.p90)
                );
            }
        }
        if !self.micro.is_empty() {
            let _ = writeln!(s, "\n### Core micro-benchmarks (criterion, median)\n");
            let _ = writeln!(s, "| benchmark | time |\n|---|---:|");
            for r in &self.micro {
                let _ = writeln!(s, "| {} | {} |", r.name, r.time);
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    fn api_markdown(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Grape HTTP API, {}-Grape network of each kind (load on one Grape)\n",
            self.api_grapes
        );
        let _ = writeln!(
            s,
            "| workload | conc | rust req/s | node req/s | rust / node | rust p50 | node p50 | rust p99 ms | node p99 ms | p99 node / rust | errors rust / node |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for w in WORKLOADS {
            for c in CONCURRENCY {
                let rust = self.api_row(Kind::Rust, w, c);
                let node = self.api_row(Kind::Node, w, c);
                let p99 = |r: Option<&ApiRow>| r.and_then(|r| r.p99).map(|d| d.as_secs_f64());
                let _ = writeln!(
                    s,
                    "| {w} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                    rust.map(|r| rate(r.rps)).unwrap_or("-".into()),
                    node.map(|r| rate(r.rps)).unwrap_or("-".into()),
                    ratio(rust.map(|r| r.rps), node.map(|r| r.rps)),
                    ms(rust.and_then(|r| r.p50)),
                    ms(node.and_then(|r| r.p50)),
                    ms(rust.and_then(|r| r.p99)),
                    ms(node.and_then(|r| r.p99)),
                    ratio(p99(node), p99(rust)),
                    rust.map(|r| r.errors.to_string()).unwrap_or("-".into()),
                    node.map(|r| r.errors.to_string()).unwrap_or("-".into()),
                );
            }
        }
        if let Some(ceiling) = self.nginx_rps {
            let best_hot = self
                .api
                .iter()
                .filter(|r| r.kind == Kind::Rust && r.workload == "hot lookup")
                .map(|r| r.rps)
                .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
            let _ = writeln!(
                s,
                "\nOur best hot-lookup rate is {} of the nginx ceiling ({} req/s).",
                ratio(best_hot, Some(ceiling)),
                rate(ceiling)
            );
            let at_64: Vec<String> = WORKLOADS
                .iter()
                .filter_map(|w| {
                    let r = self.api_row(Kind::Rust, w, 64)?;
                    Some(format!("{w} {}", ratio(Some(r.rps), Some(ceiling))))
                })
                .collect();
            if !at_64.is_empty() {
                let _ = writeln!(
                    s,
                    "Ours at 64 connections against that ceiling: {}.",
                    at_64.join(", ")
                );
            }
        }
        let rss: Vec<String> = self
            .api_rss
            .iter()
            .map(|(k, v)| format!("{} {}", k.name(), mb(*v)))
            .collect();
        if !rss.is_empty() {
            let _ = writeln!(s, "RSS of the loaded Grape afterwards: {}.", rss.join(", "));
        }
        for r in self.api.iter().filter(|r| r.errors > 0) {
            if let Some(e) = &r.first_error {
                let _ = writeln!(
                    s,
                    "\n{} {} c={}: {} errors, first: `{}`",
                    r.kind.name(),
                    r.workload,
                    r.concurrency,
                    r.errors,
                    e.replace('`', "'")
                );
            }
        }
    }

    fn tls_markdown(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Peer RPC with TLS: ours (plain and TLS) against the Node peers with `secure` (payload echoed)\n"
        );
        let _ = writeln!(
            s,
            "Mutual TLS on every TLS row of http and ws; on zmq rows \"TLS\" is CURVE (ZMTP 3.0, a client key the server allows), and Node is a libzmq DEALER/ROUTER pair (the `zeromq` npm package) with the same keys. Each pair is a client and a server of one kind. Server CPU in µs per request.\n"
        );
        let _ = writeln!(
            s,
            "| transport | payload | in flight | ours plain req/s | ours TLS req/s | TLS / plain | Node TLS req/s | ours / Node (TLS) | p99 ms ours TLS / Node TLS | server µs/req ours plain / TLS / Node TLS | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        let find = |kind: Kind, secure: bool, tr: &str, bytes: usize, c: usize| {
            self.tls.iter().find(|r| {
                r.secure == secure
                    && r.rpc.kind == kind
                    && r.rpc.transport == tr
                    && r.rpc.payload == bytes
                    && r.rpc.concurrency == c
            })
        };
        let mut keys: Vec<(&str, usize, usize)> = self
            .tls
            .iter()
            .map(|r| (r.rpc.transport, r.rpc.payload, r.rpc.concurrency))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let per_request = |r: Option<&TlsRow>| {
            r.and_then(|r| Some(r.rpc.server_cpu? / r.rpc.rps.max(f64::MIN_POSITIVE) * 1e6))
                .map_or("-".into(), |us| format!("{us:.1}"))
        };
        for (tr, bytes, c) in keys {
            let plain = find(Kind::Rust, false, tr, bytes, c);
            let ours = find(Kind::Rust, true, tr, bytes, c);
            let node = find(Kind::Node, true, tr, bytes, c);
            let rps = |r: Option<&TlsRow>| r.map(|r| r.rpc.rps);
            let errors: u64 = [plain, ours, node]
                .iter()
                .flatten()
                .map(|r| r.rpc.errors)
                .sum();
            let _ = writeln!(
                s,
                "| {tr} | {bytes} B | {c} | {} | {} | {} | {} | {} | {} / {} | {} / {} / {} | {errors} |",
                rps(plain).map_or("-".into(), rate),
                rps(ours).map_or("-".into(), rate),
                ratio(rps(ours), rps(plain)),
                rps(node).map_or("-".into(), rate),
                ratio(rps(ours), rps(node)),
                ms(ours.and_then(|r| r.rpc.p99)),
                ms(node.and_then(|r| r.rpc.p99)),
                per_request(plain),
                per_request(ours),
                per_request(node),
            );
        }
    }

    fn proxy_markdown(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Proxy: our client and echo server, direct and through grenache-proxy (100 B echoed)\n"
        );
        let _ = writeln!(
            s,
            "Ratios at the same concurrency: a proxied row against the direct call over the proxy's own leg to the \
             server, and against the direct Node http pair. CPU is the proxy's on a proxied row, the server's on a direct one.\n"
        );
        let _ = writeln!(
            s,
            "| path | client | client transport | in flight | req/s | p50 / p99 ms | cores | CPU µs per request | proxy RSS peak | vs direct | p99 added ms | vs Node pair |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let find = |client: Kind, tr: &str, c: usize| {
            self.proxy.iter().find(|r| {
                r.path == ProxyPath::Direct
                    && r.client == client
                    && r.rpc.transport == tr
                    && r.rpc.concurrency == c
            })
        };
        for r in &self.proxy {
            let c = r.rpc.concurrency;
            let direct = r
                .path
                .direct_transport()
                .and_then(|tr| find(Kind::Rust, tr, c));
            let node = find(Kind::Node, "http", c).filter(|_| r.path != ProxyPath::Direct);
            let added = direct
                .and_then(|d| Some(r.rpc.p99?.as_secs_f64() - d.rpc.p99?.as_secs_f64()))
                .map_or("-".into(), |d| format!("{:+.2}", d * 1000.0));
            let per_request = r
                .rpc
                .server_cpu
                .filter(|_| r.rpc.rps > 0.0)
                .map_or("-".into(), |cores| {
                    format!("{:.1}", cores / r.rpc.rps * 1e6)
                });
            let _ = writeln!(
                s,
                "| {} | {} | {} | {c} | {} | {} / {} | {} | {per_request} | {} | {} | {added} | {} |",
                r.path.name(),
                r.client.name(),
                r.rpc.transport,
                rate(r.rpc.rps),
                ms(r.rpc.p50),
                ms(r.rpc.p99),
                r.rpc.server_cpu.map_or("-".into(), |v| format!("{v:.2}")),
                if r.path == ProxyPath::Direct {
                    "-".into()
                } else {
                    mb(r.proxy_rss)
                },
                ratio(Some(r.rpc.rps), direct.map(|d| d.rpc.rps)),
                ratio(Some(r.rpc.rps), node.map(|n| n.rpc.rps)),
            );
        }
    }

    fn rpc_markdown(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Peer RPC: Rust client → Rust server vs Node client → Node server (payload echoed)\n"
        );
        let _ = writeln!(
            s,
            "| transport | payload | in flight | rust req/s | node req/s | rust / node | rust p50 / p99 ms | node p50 / p99 ms | p99 node / rust | errors rust / node |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        let mut keys: Vec<(&str, usize, usize)> = self
            .rpc
            .iter()
            .map(|r| (r.transport, r.payload, r.concurrency))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let get = |(tr, bytes, c): (&str, usize, usize), server: Kind, client: Kind| {
            self.rpc.iter().find(|r| {
                r.kind == server
                    && r.client == client
                    && r.transport == tr
                    && r.payload == bytes
                    && r.concurrency == c
            })
        };
        let lat = |r: Option<&RpcRow>| {
            format!(
                "{} / {}",
                ms(r.and_then(|r| r.p50)),
                ms(r.and_then(|r| r.p99))
            )
        };
        let cpu = |r: Option<&RpcRow>| {
            let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            format!(
                "{} / {} / {}",
                f(r.and_then(|r| r.client_cpu)),
                f(r.and_then(|r| r.server_cpu)),
                f(r.and_then(|r| r.others_cpu))
            )
        };
        let rps = |r: Option<&RpcRow>| r.map(|r| rate(r.rps)).unwrap_or("-".into());
        for &(tr, bytes, c) in &keys {
            let rust = get((tr, bytes, c), Kind::Rust, Kind::Rust);
            let node = get((tr, bytes, c), Kind::Node, Kind::Node);
            let p99 = |r: Option<&RpcRow>| r.and_then(|r| r.p99).map(|d| d.as_secs_f64());
            let _ = writeln!(
                s,
                "| {tr} | {} | {c} | {} | {} | {} | {} | {} | {} | {} / {} |",
                size(bytes),
                rps(rust),
                rps(node),
                ratio(rust.map(|r| r.rps), node.map(|r| r.rps)),
                lat(rust),
                lat(node),
                ratio(p99(node), p99(rust)),
                rust.map(|r| r.errors.to_string()).unwrap_or("-".into()),
                node.map(|r| r.errors.to_string()).unwrap_or("-".into()),
            );
        }
        let _ = writeln!(
            s,
            "\n#### Which side is the limit: CPU used over the measured window, and our client against the Node server\n"
        );
        let _ = writeln!(
            s,
            "| transport | payload | in flight | CPU rust client / server / rest | CPU node client / server / rest | node server, rust client: req/s | p50 / p99 ms | CPU client / server / rest | errors | server CPU µs per request: rust / node / node with rust client |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        // The server's CPU time per request answered: comparable whoever drives it.
        let us_per_req = |r: Option<&RpcRow>| {
            r.and_then(|r| Some(r.server_cpu? / r.rps * 1e6).filter(|us| us.is_finite()))
                .map_or("-".into(), |us| format!("{us:.1}"))
        };
        for &(tr, bytes, c) in &keys {
            let rust = get((tr, bytes, c), Kind::Rust, Kind::Rust);
            let node = get((tr, bytes, c), Kind::Node, Kind::Node);
            let cross = get((tr, bytes, c), Kind::Node, Kind::Rust);
            let _ = writeln!(
                s,
                "| {tr} | {} | {c} | {} | {} | {} | {} | {} | {} | {} / {} / {} |",
                size(bytes),
                cpu(rust),
                cpu(node),
                rps(cross),
                lat(cross),
                cpu(cross),
                cross.map(|r| r.errors.to_string()).unwrap_or("-".into()),
                us_per_req(rust),
                us_per_req(node),
                us_per_req(cross),
            );
        }
        let _ = writeln!(
            s,
            "\nCPU is in cores (1.00 = one core busy all the time). Each client and each Rust server \
             runs on one thread, a Node process on its event loop (plus libzmq's I/O thread for \
             ZeroMQ). A side near 1.00 while the other is well below is the limit. \"rest\" is the CPU \
             every other process used meanwhile, plus steal (other users' builds on a shared box): \
             with 2 cores, a row whose rest is above about 0.3 was disturbed. Interrupt and softirq \
             time (the loopback's TCP work, up to a quarter of a core) is in none of the three."
        );
        for r in self.rpc.iter().filter(|r| r.errors > 0) {
            if let Some(e) = &r.first_error {
                let _ = writeln!(
                    s,
                    "\n{} client → {} server, {} {} c={}: {} errors, first: `{}`",
                    r.client.name(),
                    r.kind.name(),
                    r.transport,
                    size(r.payload),
                    r.concurrency,
                    r.errors,
                    e.replace('`', "'")
                );
            }
        }
    }

    fn memory_markdown(&self, s: &mut String) {
        let _ = writeln!(s, "\n### Memory (one lone Grape)\n");
        let _ = writeln!(
            s,
            "| grape | idle RSS | fake nodes → routing entries | peers announced (acked) → stored | RSS with table + peers | distinct announces (acked, per s) → peers / keys stored | RSS peak in flood | RSS after |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.memory {
            let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
            let _ = writeln!(
                s,
                "| {} | {} | {} → {} | {} ({}) → {} | {} | {} ({}, {}/s) → {} / {} | {} | {} |",
                r.kind.name(),
                mb(r.idle),
                r.fake_nodes,
                opt(r.routing_nodes),
                r.peers_sent,
                r.peers_acked,
                opt(r.peers_stored),
                mb(r.rss_full),
                r.flood_sent,
                r.flood_acked,
                rate(r.flood_rate),
                opt(r.flood_stored),
                opt(r.flood_keys),
                mb(r.flood_peak),
                mb(r.flood_after)
            );
        }
        let get = |k: Kind| self.memory.iter().find(|r| r.kind == k);
        if let (Some(rust), Some(node)) = (get(Kind::Rust), get(Kind::Node)) {
            let f = |v: Option<u64>| v.map(|v| v as f64);
            let _ = writeln!(
                s,
                "\nRSS rust / node: idle {}, with table + peers {}, flood peak {}.",
                ratio(f(rust.idle), f(node.idle)),
                ratio(f(rust.rss_full), f(node.rss_full)),
                ratio(f(rust.flood_peak), f(node.flood_peak))
            );
        }
    }

    /// RSS against names held, and ours over Node's where both hold about as many: the
    /// Node Grape keeps about 20,000 names however many it is sent, so its last rung is
    /// set beside our rung whose stored keys come closest to what it kept.
    fn names_markdown(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n### Memory with many names (a fresh lone Grape; distinct names, one peer each)\n\n\
             | grape | idle RSS | names sent (acked) | keys stored | sample still found | RSS |\n\
             |---|---:|---:|---:|---:|---:|"
        );
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
        for r in &self.names {
            for g in &r.rungs {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ({}) | {} | {} / {} | {} |",
                    r.kind.name(),
                    mb(r.idle),
                    g.sent,
                    g.acked,
                    opt(g.stored_keys),
                    g.found,
                    g.sampled,
                    mb(g.rss)
                );
            }
        }
        let get = |k: Kind| self.names.iter().find(|r| r.kind == k);
        let (Some(rust), Some(node)) = (get(Kind::Rust), get(Kind::Node)) else {
            return;
        };
        let Some(last) = node.rungs.last() else {
            return;
        };
        let kept = last.stored_keys.unwrap_or(last.sent);
        let closest = rust
            .rungs
            .iter()
            .min_by_key(|g| g.stored_keys.unwrap_or(g.sent).abs_diff(kept));
        let f = |v: Option<u64>| v.map(|v| v as f64);
        let same_sent: Vec<String> = node
            .rungs
            .iter()
            .filter_map(|theirs| {
                let ours = rust.rungs.iter().find(|g| g.sent == theirs.sent)?;
                Some(format!(
                    "{} sent: {} (holding {} / {})",
                    theirs.sent,
                    ratio(f(ours.rss), f(theirs.rss)),
                    opt(ours.stored_keys),
                    opt(theirs.stored_keys)
                ))
            })
            .collect();
        let _ = writeln!(
            s,
            "\nRSS rust / node at the same names sent: {}.",
            same_sent.join("; ")
        );
        if let Some(ours) = closest {
            let _ = writeln!(
                s,
                "\nRSS rust / node at about the same names held: ours holding {} ({} sent) / Node's \
                 holding {} ({} sent) = {}.",
                opt(ours.stored_keys),
                ours.sent,
                opt(last.stored_keys),
                last.sent,
                ratio(f(ours.rss), f(last.rss))
            );
        }
    }

    /// An SVG chart of Grape API throughput against concurrency: one panel per lookup
    /// workload ([`CHART_WORKLOADS`]), one line per Grape kind, each point labelled with
    /// its rate, and the nginx ceiling as a dashed line where it was measured.
    pub fn svg(&self) -> Option<String> {
        if !self
            .api
            .iter()
            .any(|r| CHART_WORKLOADS.contains(&r.workload))
        {
            return None;
        }
        let panels = CHART_WORKLOADS.len() as f64;
        let (pw, ph, top, left, gap) = (300.0, 220.0, 58.0, 64.0, 70.0);
        let width = left + panels * pw + (panels - 1.0) * gap + 30.0;
        let height = top + ph + 78.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"20\" font-size=\"15\" text-anchor=\"middle\">Grape HTTP API: lookups per second vs concurrency</text>\n\
             <text x=\"{}\" y=\"37\" fill=\"#555\" text-anchor=\"middle\">load on one Grape of a {}-Grape network of each kind, loopback, keep-alive connections; higher is better</text>",
            width / 2.0,
            width / 2.0,
            self.api_grapes
        );
        let colour = |k: Kind| match k {
            Kind::Rust => "#c0392b",
            Kind::Node => "#2c7bb6",
        };
        for (p, w) in CHART_WORKLOADS.iter().enumerate() {
            let x0 = left + p as f64 * (pw + gap);
            let ceiling = self.nginx_rps.filter(|_| *w == "hot lookup");
            let max = self
                .api
                .iter()
                .filter(|r| r.workload == *w)
                .map(|r| r.rps)
                .chain(ceiling)
                .fold(1.0_f64, f64::max);
            let (step, intervals) = axis(max * 1.08);
            let ymax = step * f64::from(intervals);
            let y = |v: f64| top + ph - ph * v / ymax;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{w}{}</text>",
                x0 + pw / 2.0,
                top - 6.0,
                if *w == "fresh lookup" {
                    " (a DHT traversal each)"
                } else {
                    " (the same name each time)"
                }
            );
            for tick in 0..=intervals {
                let v = step * f64::from(tick);
                let _ = writeln!(
                    s,
                    "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#e4e4e4\"/>\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                    x0 + pw,
                    x0 - 5.0,
                    y(v) + 4.0,
                    rate(v),
                    y = y(v)
                );
            }
            let _ = writeln!(
                s,
                "<rect x=\"{x0}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\n\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">req/s</text>\n\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">requests in flight (connections)</text>",
                x0 - 48.0,
                top + ph / 2.0,
                x0 - 48.0,
                top + ph / 2.0,
                x0 + pw / 2.0,
                top + ph + 30.0
            );
            if let Some(c) = ceiling {
                let _ = writeln!(
                    s,
                    "<line x1=\"{x0}\" y1=\"{yc:.1}\" x2=\"{}\" y2=\"{yc:.1}\" stroke=\"#333\" stroke-dasharray=\"5 4\"/>\
                     <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#333\">nginx ceiling {}</text>",
                    x0 + pw,
                    x0 + pw - 4.0,
                    y(c) - 5.0,
                    rate(c),
                    yc = y(c)
                );
            }
            let xs: Vec<f64> = (0..CONCURRENCY.len())
                .map(|i| x0 + pw * (i as f64 + 0.5) / CONCURRENCY.len() as f64)
                .collect();
            for (x, c) in xs.iter().zip(CONCURRENCY) {
                let _ = writeln!(
                    s,
                    "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{c}</text>",
                    top + ph + 15.0
                );
            }
            for kind in [Kind::Rust, Kind::Node] {
                let points: Vec<(f64, f64, f64)> = xs
                    .iter()
                    .zip(CONCURRENCY)
                    .filter_map(|(x, c)| {
                        let r = self.api_row(kind, w, c)?;
                        Some((*x, y(r.rps), r.rps))
                    })
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let line: Vec<String> = points
                    .iter()
                    .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
                    colour(kind),
                    line.join(" ")
                );
                // Labels above our line and below Node's, which is the lower one; a Node
                // point too near the axis for that gets its label on its left instead (its
                // line comes from lower left, if anything).
                for (x, y, v) in &points {
                    let (lx, ly, anchor) = match kind {
                        Kind::Rust => (*x, y - 8.0, "middle"),
                        Kind::Node if y + 16.0 < top + ph - 2.0 => (*x, y + 16.0, "middle"),
                        Kind::Node => (x - 7.0, y - 2.0, "end"),
                    };
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{c}\"/>\
                         <text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"{anchor}\" fill=\"{c}\">{}</text>",
                        rate(*v),
                        c = colour(kind)
                    );
                }
            }
        }
        let ly = top + ph + 58.0;
        for (i, kind) in [Kind::Rust, Kind::Node].iter().enumerate() {
            let lx = left + i as f64 * 240.0;
            let label = match kind {
                Kind::Rust => "grenache-rs grape (ours)",
                Kind::Node => "Node.js grenache-grape 1.0.0",
            };
            let _ = writeln!(
                s,
                "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"3\"/>\
                 <text x=\"{}\" y=\"{}\">{label}</text>",
                lx + 24.0,
                colour(*kind),
                lx + 30.0,
                ly + 4.0
            );
        }
        let _ = writeln!(s, "</svg>");
        Some(s)
    }
}

/// A payload size as the report writes it: `100 B`, `10 KB`.
fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// A y axis for values up to `max`: a round step (1, 2, 2.5 or 5 times a power of ten)
/// giving three to five intervals, and the number of intervals.
fn axis(max: f64) -> (f64, u32) {
    let wanted = max.max(1.0) / 4.0;
    let mut base = 1.0;
    let step = 'found: loop {
        // In tenths, so 2.5 × 10^4 is exactly 25,000.
        for tenths in [10.0, 20.0, 25.0, 50.0] {
            let step = base * tenths / 10.0;
            if step >= wanted {
                break 'found step;
            }
        }
        base *= 10.0;
    };
    let intervals = (max.max(1.0) / step).ceil().max(1.0) as u32;
    (step, intervals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(sent: u64, held: u64, rss_mb: u64) -> NamesRung {
        NamesRung {
            sent,
            acked: sent,
            stored_keys: Some(held),
            sampled: 200,
            found: 200,
            rss: Some(rss_mb * 1_000_000),
        }
    }

    #[test]
    fn names_are_compared_at_what_each_side_still_holds() {
        let report = Report {
            names: vec![
                NamesRow {
                    kind: Kind::Rust,
                    idle: Some(5_000_000),
                    rungs: vec![
                        rung(20_000, 20_000, 10),
                        rung(100_000, 100_000, 26),
                        rung(1_000_000, 1_000_000, 200),
                    ],
                },
                NamesRow {
                    kind: Kind::Node,
                    idle: Some(50_000_000),
                    rungs: vec![rung(20_000, 20_000, 100), rung(100_000, 19_800, 130)],
                },
            ],
            ..Report::default()
        };
        let mut s = String::new();
        report.names_markdown(&mut s);
        assert!(
            s.contains(
                "same names sent: 20000 sent: 0.10x (holding 20000 / 20000); 100000 sent: 0.20x"
            ),
            "{s}"
        );
        // Node holds 19,800 after 100,000 sent: our 20,000 rung is the one beside it.
        assert!(
            s.contains(
                "ours holding 20000 (20000 sent) / Node's holding 19800 (100000 sent) = 0.08x"
            ),
            "{s}"
        );
    }

    #[test]
    fn axes_have_round_steps() {
        assert_eq!(axis(0.5), (1.0, 1));
        assert_eq!(axis(14_500.0), (5_000.0, 3));
        assert_eq!(axis(123_000.0), (50_000.0, 3));
        assert_eq!(axis(58_000.0), (20_000.0, 3));
        assert_eq!(axis(100_000.0), (25_000.0, 4));
        assert_eq!(axis(8_100.0), (2_500.0, 4));
    }

    #[test]
    fn chart_has_a_line_per_kind_and_table_has_ratios() {
        let mut report = Report::default();
        for (kind, rps) in [(Kind::Rust, 100.0), (Kind::Node, 50.0)] {
            for c in CONCURRENCY {
                report.api.push(ApiRow {
                    kind,
                    workload: "hot lookup",
                    concurrency: c,
                    rps,
                    p50: None,
                    p99: Some(Duration::from_millis(4)),
                    errors: 0,
                    first_error: None,
                });
            }
        }
        report.nginx_rps = Some(300.0);
        let svg = report.svg().unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("nginx ceiling 300"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(
            report
                .markdown()
                .contains("| hot lookup | 64 | 100 | 50 | 2.00x |")
        );
    }

    #[test]
    fn rpc_table_has_a_row_per_transport_payload_and_concurrency() {
        let mut report = Report::default();
        for (kind, rps) in [(Kind::Rust, 300.0), (Kind::Node, 100.0)] {
            for c in [1, 64] {
                report.rpc.push(RpcRow {
                    transport: "zmq",
                    payload: 10 * 1024,
                    concurrency: c,
                    kind,
                    client: kind,
                    rps,
                    p50: Some(Duration::from_micros(100)),
                    p99: Some(Duration::from_millis(1)),
                    errors: 0,
                    first_error: None,
                    client_cpu: Some(0.5),
                    server_cpu: Some(1.0),
                    others_cpu: Some(0.1),
                });
            }
        }
        let md = report.markdown();
        assert!(
            md.contains("| zmq | 10 KB | 1 | 300 | 100 | 3.00x |"),
            "{md}"
        );
        assert!(md.contains("| zmq | 10 KB | 64 |"), "{md}");
        assert!(
            md.contains("| zmq | 10 KB | 64 | 0.50 / 1.00 / 0.10 | 0.50 / 1.00 / 0.10 | - |"),
            "{md}"
        );
        // One core for 300 req/s and for 100 req/s; no row with our client on Node's server.
        assert!(md.contains("| 3333.3 / 10000.0 / - |"), "{md}");
    }

    #[test]
    fn udp_table_sets_each_server_beside_the_echo_server() {
        let stat = |rps, p99_us| UdpStat {
            rps,
            p99: Some(Duration::from_micros(p99_us)),
        };
        let mut report = Report::default();
        report.udp.push(UdpRow {
            query: "ping",
            echo: stat(200_000.0, 2000),
            by_kind: BTreeMap::from([(Kind::Rust, stat(190_000.0, 2500))]),
            unbatched: Some(stat(120_000.0, 4000)),
        });
        let md = report.markdown();
        assert!(
            md.contains("| ping | 200.0k (2.00 ms) | 190.0k (2.50 ms) | 120.0k (4.00 ms) | - | 0.95x | 0.60x | - | 1.25x |"),
            "{md}"
        );
    }
}
