//! Starting Grapes (ours and the Node.js one) on loopback, alone or as a network, and
//! talking to their HTTP API and stats.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::procs::{self, Proc};

/// Which implementation a Grape is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// This repository's `grape` binary.
    Rust,
    /// grenache-grape 1.0.0 from npm, on Node.js.
    Node,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rust => "rust",
            Kind::Node => "node",
        }
    }
}

/// Where the programs are and where logs go.
#[derive(Clone, Debug)]
pub struct Env {
    /// Our `grape` binary.
    pub grape: PathBuf,
    /// `--runtime` for our Grape.
    pub runtime: String,
    /// More arguments for each of our Grapes (e.g. `--no-udp-batch`).
    pub grape_args: Vec<String>,
    /// The folder holding `node_modules` with the pinned Grenache packages, when usable.
    pub node_modules: Option<PathBuf>,
    /// bench/node (our Node scripts).
    pub node_scripts: PathBuf,
    /// Log folder.
    pub logs: PathBuf,
}

impl Env {
    /// A `node` command running one of our scripts, with the pinned packages on NODE_PATH.
    pub fn node_command(&self, script: &str) -> Option<Command> {
        let modules = self.node_modules.as_ref()?;
        let mut cmd = Command::new("node");
        cmd.arg(self.node_scripts.join(script))
            .env("NODE_PATH", modules)
            .env("NODE_ENV", "production");
        Some(cmd)
    }
}

/// One running Grape.
pub struct Grape {
    pub kind: Kind,
    pub dht: SocketAddr,
    pub api: SocketAddr,
    pub proc: Proc,
}

/// What a Grape holds, as it reports it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Holdings {
    pub routing_nodes: Option<u64>,
    pub stored_keys: Option<u64>,
    pub stored_peers: Option<u64>,
}

impl Grape {
    /// Starts one Grape of `kind` with the given bootstrap nodes and ports.
    pub fn start(
        env: &Env,
        kind: Kind,
        name: &str,
        dht_port: u16,
        api_port: u16,
        bootstrap: &[SocketAddr],
    ) -> Result<Grape, String> {
        let bn = bootstrap
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let log = env.logs.join(format!("{name}.log"));
        let proc = match kind {
            Kind::Rust => {
                let mut cmd = Command::new(&env.grape);
                cmd.args(["--dp", &dht_port.to_string()])
                    .args(["--aph", &api_port.to_string()])
                    .args(["--bn", &bn])
                    .args(["-b", "127.0.0.1"])
                    .args(["--runtime", &env.runtime])
                    .args(&env.grape_args)
                    .env("RUST_LOG", "warn");
                Proc::spawn(name, cmd, &log)?
            }
            Kind::Node => {
                let mut cmd = env
                    .node_command("grape.js")
                    .ok_or("the Node.js Grenache packages are not installed")?;
                cmd.args(["--dp", &dht_port.to_string()])
                    .args(["--aph", &api_port.to_string()])
                    .args(["--bn", &bn])
                    .args(["-b", "127.0.0.1"]);
                Proc::spawn_piped(name, cmd, &log)?
            }
        };
        let api = SocketAddr::from(([127, 0, 0, 1], api_port));
        procs::wait_tcp(api, Duration::from_secs(20), &proc)?;
        Ok(Grape {
            kind,
            dht: SocketAddr::from(([127, 0, 0, 1], dht_port)),
            api,
            proc,
        })
    }

    /// `POST /<command>` with `{"rid", "data"}`; the reply body.
    pub fn call(&self, command: &str, data: &str) -> Result<String, String> {
        let body = format!("{{\"rid\":\"bench\",\"data\":{data}}}");
        let (status, reply) = http(self.api, "POST", &format!("/{command}"), &body)?;
        if status != 200 {
            return Err(format!("{command}: HTTP {status}: {reply}"));
        }
        Ok(reply)
    }

    /// Announces `name` at `port`.
    pub fn announce(&self, name: &str, port: u16) -> Result<String, String> {
        self.call("announce", &format!("[\"{name}\",{port}]"))
    }

    /// Looks `name` up; the addresses found.
    pub fn lookup(&self, name: &str) -> Result<Vec<String>, String> {
        let reply = self.call("lookup", &format!("\"{name}\""))?;
        let value: serde_json::Value =
            serde_json::from_str(&reply).map_err(|e| format!("lookup reply {reply:?}: {e}"))?;
        match value {
            serde_json::Value::Array(items) => Ok(items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()),
            other => Err(format!("lookup: {other}")),
        }
    }

    /// Routing-table size and stored peers, from `/metrics` (ours) or the stats line of
    /// bench/node/grape.js (Node's).
    pub fn holdings(&mut self) -> Holdings {
        match self.kind {
            Kind::Rust => {
                let Ok((200, text)) = http(self.api, "GET", "/metrics", "") else {
                    return Holdings::default();
                };
                Holdings {
                    routing_nodes: metric(&text, "grape_dht_routing_table_nodes"),
                    stored_keys: metric(&text, "grape_dht_stored_keys"),
                    stored_peers: metric(&text, "grape_dht_stored_peers"),
                }
            }
            Kind::Node => {
                let Ok(line) = self.proc.ask("stats") else {
                    return Holdings::default();
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    return Holdings::default();
                };
                Holdings {
                    routing_nodes: v["nodes"].as_u64(),
                    stored_keys: v["keys"].as_u64(),
                    stored_peers: v["peers"].as_u64(),
                }
            }
        }
    }
}

/// A network of `n` Grapes of one kind: Grape 0 and 1 bootstrap from each other, every
/// other Grape from both, as a small deployment is set up.
pub fn start_network(env: &Env, kind: Kind, n: usize, tag: &str) -> Result<Vec<Grape>, String> {
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        ports.push((procs::free_udp_port()?, procs::free_tcp_port()?));
    }
    let dht = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i].0));
    let mut grapes = Vec::with_capacity(n);
    for (i, &(dht_port, api_port)) in ports.iter().enumerate() {
        let bootstrap: Vec<SocketAddr> = match (i, n) {
            (_, 1) => Vec::new(),
            (0, _) => vec![dht(1)],
            (1, _) => vec![dht(0)],
            _ => vec![dht(0), dht(1)],
        };
        let name = format!("{tag}-{}-{i}", kind.name());
        grapes.push(Grape::start(
            env, kind, &name, dht_port, api_port, &bootstrap,
        )?);
    }
    Ok(grapes)
}

/// Announces a name on the first Grape and waits until every Grape finds it, so the
/// routing tables are warm before anything is measured.
pub fn settle(grapes: &[Grape], limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let Some(first) = grapes.first() else {
        return Ok(Duration::ZERO);
    };
    let name = format!("settle-{}", start.elapsed().as_nanos());
    let mut pending: Vec<&Grape> = grapes.iter().skip(1).collect();
    while !pending.is_empty() {
        if start.elapsed() > limit {
            return Err(format!(
                "{} of {} {} Grapes still cannot find a name after {limit:?}",
                pending.len(),
                grapes.len(),
                first.kind.name()
            ));
        }
        first.announce(&name, 4242)?;
        pending.retain(|g| {
            g.lookup(&name)
                .map(|found| found.is_empty())
                .unwrap_or(true)
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(start.elapsed())
}

/// One HTTP/1.1 exchange with `Connection: close`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The value of an unlabelled Prometheus metric.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Finds (or builds) our `grape` binary next to this one.
pub fn find_grape_binary() -> Result<PathBuf, String> {
    find_binary("grenache-grape", "grape")
}

/// A binary of this workspace beside the bench binary (same profile), built first when it
/// is missing or older than the bench.
pub fn find_binary(package: &str, bin: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no folder for the bench binary")?;
    let path = dir.join(bin);
    let stale = match (modified(&path), modified(&me)) {
        (Some(g), Some(m)) => g < m,
        _ => true,
    };
    if stale {
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!(
            "grape-bench: building {bin} ({cargo} build -p {package} --bin {bin} {profile:?})"
        );
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", package, "--bin", bin])
            .args(profile)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("cargo: {e}"))?;
        if !status.success() || !path.is_file() {
            return Err(format!("could not build {}", path.display()));
        }
    }
    Ok(path)
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).ok()?.modified().ok()
}

/// Makes sure the pinned Node packages are installed in `dir` (`npm ci` from its lock).
pub fn ensure_node_modules(dir: &Path) -> Result<PathBuf, String> {
    let modules = dir.join("node_modules");
    if modules.join("grenache-grape").is_dir()
        && modules.join("grenache-nodejs-http").is_dir()
        && modules.join("grenache-nodejs-ws").is_dir()
        && modules.join("zeromq").is_dir()
    {
        return Ok(modules);
    }
    if procs::which("node").is_none() || procs::which("npm").is_none() {
        return Err("node and npm are not on the PATH".into());
    }
    if !dir.join("package.json").is_file() {
        return Err(format!("{} has no package.json", dir.display()));
    }
    eprintln!(
        "grape-bench: installing the pinned Node packages in {}",
        dir.display()
    );
    let sub = if dir.join("package-lock.json").is_file() {
        "ci"
    } else {
        "install"
    };
    let status = Command::new("npm")
        .args([sub, "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    if status.success() && modules.join("grenache-grape").is_dir() {
        Ok(modules)
    } else {
        Err(format!("npm {sub} failed in {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_metrics_only() {
        let text = "# HELP x\ngrape_dht_stored_peers{a=\"b\"} 9\ngrape_dht_stored_peers 12\n";
        assert_eq!(metric(text, "grape_dht_stored_peers"), Some(12));
        assert_eq!(metric(text, "grape_dht_stored_keys"), None);
    }

    #[test]
    fn dechunks_bodies() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
