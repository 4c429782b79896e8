//! The harness shared by grape-bin's integration tests: free ports, process guards, the
//! Node.js toolchain, starting Grapes (ours and Node's), their HTTP API, and polling.
//!
//! Everything binds 127.0.0.1. Every child process is owned by a [`Proc`] that kills it on
//! drop, so a failing test leaves nothing running; its output lands in a file under
//! `target/tmp/interop/<test>/` and is printed when the test fails.

// Each test binary compiles this module and uses a different part of it; `pub` is the
// interface between test files, not a crate API.
#![allow(dead_code, unreachable_pub)]

pub mod http;
pub mod ws;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The runtime our Grape runs on (`grape --runtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    Smol,
    Tokio,
}

impl Rt {
    pub fn as_str(self) -> &'static str {
        match self {
            Rt::Smol => "smol",
            Rt::Tokio => "tokio",
        }
    }
}

/// Generates `smol::NAME` and `tokio::NAME` tests that call `NAME(Rt::Smol)` / `NAME(Rt::Tokio)`.
///
/// Attributes written before a name (the interop tests' `cfg_attr(skip_interop, ignore)`)
/// go on both of its tests.
#[macro_export]
macro_rules! both_runtimes {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod smol {
            $( $(#[$attr])* #[test] fn $name() { super::$name($crate::common::Rt::Smol) } )*
        }
        mod tokio {
            $( $(#[$attr])* #[test] fn $name() { super::$name($crate::common::Rt::Tokio) } )*
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Test context, ports, waiting
// ---------------------------------------------------------------------------------------------

/// One test's name and its log folder (`target/tmp/interop/<name>`, emptied at start).
pub struct Ctx {
    pub name: String,
    pub dir: PathBuf,
}

impl Ctx {
    pub fn new(name: &str) -> Ctx {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("interop")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test's log folder");
        eprintln!("[{name}] logs in {}", dir.display());
        Ctx {
            name: name.to_string(),
            dir,
        }
    }
}

/// Ports handed out by this process, so two Grapes of one test binary never get the same one.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
static PORT_RNG: AtomicU64 = AtomicU64::new(0);

/// Returns a port free for both TCP and UDP on 127.0.0.1.
///
/// Drawn at random below the kernel's ephemeral range (32768+), so outgoing connections'
/// source ports cannot take it in the moment between the check and the child's bind, and
/// away from the Grape defaults (20001, 30001) that someone may be running by hand.
pub fn free_port() -> u16 {
    for _ in 0..2000 {
        let port = 21_000 + (next_random() % 8_900) as u16;
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        if reserved.contains(&port) {
            continue;
        }
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
        if tcp.is_ok() && udp.is_ok() {
            reserved.insert(port);
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1 in 21000..29900");
}

fn next_random() -> u64 {
    let mut x = PORT_RNG.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        x = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    }
    // xorshift64: enough to spread ports between concurrent test processes.
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    PORT_RNG.store(x, Ordering::Relaxed);
    x
}

/// Polls `probe` every 50 ms until it returns `Ok` or `timeout` passes.
///
/// # Errors
/// On timeout: what was being waited for, for how long, and the last thing `probe` saw.
pub fn try_wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => {
                return Err(format!(
                    "timed out after {:?} waiting for {what}; last seen: {last}",
                    start.elapsed()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Like [`try_wait_until`], but fails the test on timeout.
pub fn wait_until<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    try_wait_until(what, timeout, probe).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs named checks one after another and reports every failure at the end, so one broken
/// command does not hide the state of the others.
pub struct Checks {
    test: String,
    failures: Vec<String>,
}

impl Checks {
    pub fn new(ctx: &Ctx) -> Checks {
        Checks {
            test: ctx.name.clone(),
            failures: Vec::new(),
        }
    }

    pub fn run(&mut self, what: &str, check: impl FnOnce()) {
        let start = Instant::now();
        match catch_unwind(AssertUnwindSafe(check)) {
            Ok(()) => eprintln!("[{}] ok   {what} ({:?})", self.test, start.elapsed()),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(non-text panic)".into());
                eprintln!("[{}] FAIL {what}: {msg}", self.test);
                self.failures.push(format!("{what}: {msg}"));
            }
        }
    }

    /// Fails the test if any check failed, listing all of them.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed in {}:\n  - {}",
            self.failures.len(),
            self.test,
            self.failures.join("\n  - ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child process that is killed (SIGTERM, then SIGKILL) when dropped.
///
/// stdout and stderr go to `<name>.out` and `<name>.err` in the test's folder; if the test is
/// failing when the guard drops, their tails are printed.
pub struct Proc {
    pub name: String,
    child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(ctx: &Ctx, name: &str, mut cmd: Command) -> io::Result<Proc> {
        let stdout = ctx.dir.join(format!("{name}.out"));
        let stderr = ctx.dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning {name} ({cmd:?}): {e}")))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last lines of both outputs, for failure messages.
    pub fn dump(&self) -> String {
        fn tail(text: &str, n: usize) -> String {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n    ")
        }
        format!(
            "--- {} (pid {}) stdout [{}]:\n    {}\n--- {} stderr [{}]:\n    {}",
            self.name,
            self.child.id(),
            self.stdout.display(),
            tail(&self.stdout_text(), 40),
            self.name,
            self.stderr.display(),
            tail(&self.stderr_text(), 40)
        )
    }

    /// Asks the process to stop cleanly (SIGTERM) without waiting for it.
    pub fn send_term(&self) {
        // The child is not reaped until we wait on it, so its pid cannot have been reused.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stops the process: SIGTERM, up to 2 s to exit, then SIGKILL. Idempotent.
    pub fn terminate(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.send_term();
        if self.wait_exit(Duration::from_secs(2)).is_none() {
            eprintln!(
                "{} (pid {}) ignored SIGTERM for 2 s: SIGKILL",
                self.name,
                self.pid()
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        self.terminate();
    }
}

/// Terminates many processes at once: all get SIGTERM first, then each is waited for.
pub fn terminate_all<'a>(procs: impl IntoIterator<Item = &'a mut Proc>) {
    let mut procs: Vec<&mut Proc> = procs.into_iter().collect();
    for p in procs.iter_mut() {
        if p.exited().is_none() {
            p.send_term();
        }
    }
    for p in procs {
        p.terminate();
    }
}

/// Waits until a serving script has printed `{"ready":true}`; fails the test after `timeout`.
pub fn wait_script_ready(proc: &Proc, timeout: Duration) {
    wait_until(&format!("{} to be ready", proc.name), timeout, || {
        let out = proc.stdout_text();
        if out.contains(r#""ready":true"#) {
            Ok(())
        } else {
            Err(format!("stdout {out:?} stderr {:?}", proc.stderr_text()))
        }
    });
}

/// Waits up to `timeout` for a script to exit 0, then parses its last stdout line as JSON.
pub fn last_json(proc: &mut Proc, timeout: Duration) -> Value {
    match proc.wait_exit(timeout) {
        Some(status) if status.success() => {
            let out = proc.stdout_text();
            serde_json::from_str(out.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{} printed no JSON ({e}): {out:?}", proc.name))
        }
        other => panic!("{} did not finish ({other:?}):\n{}", proc.name, proc.dump()),
    }
}

// ---------------------------------------------------------------------------------------------
// Node.js
// ---------------------------------------------------------------------------------------------

/// The Node.js side: `grape-bin/tests/node` with its `node_modules` installed.
pub struct NodeEnv {
    pub dir: PathBuf,
}

impl NodeEnv {
    /// A `node SCRIPT args..` command run in the node folder.
    pub fn command(&self, script: &str, args: &[String]) -> Command {
        let mut cmd = Command::new("node");
        cmd.current_dir(&self.dir).arg(script).args(args);
        cmd
    }

    /// Runs a one-shot script, waits up to `timeout`, and returns its stdout.
    ///
    /// Fails the test if it times out or exits non-zero (the guard prints its output).
    pub fn run_script(
        &self,
        ctx: &Ctx,
        name: &str,
        script: &str,
        args: &[String],
        timeout: Duration,
    ) -> String {
        let mut proc =
            Proc::spawn(ctx, name, self.command(script, args)).unwrap_or_else(|e| panic!("{e}"));
        match proc.wait_exit(timeout) {
            Some(status) if status.success() => proc.stdout_text(),
            Some(status) => panic!("{name} exited with {status}:\n{}", proc.dump()),
            None => panic!("{name} still running after {timeout:?}:\n{}", proc.dump()),
        }
    }

    /// Runs a one-shot script and parses the last line of its stdout as JSON.
    pub fn run_json(
        &self,
        ctx: &Ctx,
        name: &str,
        script: &str,
        args: &[String],
        timeout: Duration,
    ) -> Value {
        let out = self.run_script(ctx, name, script, args, timeout);
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{name} printed no JSON ({e}): {out:?}"))
    }
}

/// The opt-out that reports the interop tests as ignored (`grape-bin/build.rs` reads it).
const SKIP_VARIABLE: &str = "GRENACHE_SKIP_INTEROP";

/// The oldest Node.js the pinned packages are tested with.
const NODE_MAJOR: u32 = 20;

static NODE: OnceLock<Result<NodeEnv, String>> = OnceLock::new();

/// The Node.js environment, installed once (`npm ci`).
///
/// A test that calls this needs Node.js and must carry
/// `#[cfg_attr(skip_interop, ignore = "GRENACHE_SKIP_INTEROP is set")]`. Without `node`
/// (20 or newer) and `npm` on PATH it fails, naming what to install and the opt-out: a test
/// that could not run must not pass. `node_modules` is reused while `package-lock.json` is
/// unchanged; concurrent test processes (nextest) take turns through a file lock.
pub fn node_env() -> &'static NodeEnv {
    match NODE.get_or_init(install_node) {
        Ok(node) => node,
        Err(missing) => panic!("{missing}"),
    }
}

/// The output of `TOOL --version`, or `None` if it does not run.
fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Why the Node.js toolchain cannot run the interop tests, if it cannot.
fn node_toolchain_problem() -> Option<String> {
    let problem = match (tool_version("node"), tool_version("npm")) {
        (Some(node), Some(_)) => {
            let major = node.trim_start_matches('v').split('.').next();
            match major.and_then(|m| m.parse::<u32>().ok()) {
                Some(m) if m >= NODE_MAJOR => return None,
                _ => format!("`node --version` says {node:?}, older than {NODE_MAJOR}"),
            }
        }
        (None, Some(_)) => "`node` is not on PATH".to_string(),
        (Some(_), None) => "`npm` is not on PATH".to_string(),
        (None, None) => "`node` and `npm` are not on PATH".to_string(),
    };
    let marked = if cfg!(skip_interop) {
        format!(
            " ({SKIP_VARIABLE} is set, so either this test was run with --ignored or it lacks \
             its #[cfg_attr(skip_interop, ignore)] mark)"
        )
    } else {
        String::new()
    };
    Some(format!(
        "this test runs the real Node.js Grenache, but {problem}{marked}. Install Node.js \
         {NODE_MAJOR} or newer with npm (the test then runs `npm ci` in grape-bin/tests/node, \
         which needs the npm registry), or set {SKIP_VARIABLE}=1 to report the interop tests \
         as ignored"
    ))
}

fn install_node() -> Result<NodeEnv, String> {
    if let Some(problem) = node_toolchain_problem() {
        return Err(problem);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("node");

    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-npm-ci.lock");
    let lock = File::create(&lock_path).expect("create the npm lock file");
    // File::lock is newer than the workspace's declared MSRV; these tests run on the CI
    // toolchain only, never on the MSRV job.
    #[allow(clippy::incompatible_msrv)]
    lock.lock().expect("lock the npm lock file");

    let lockfile = fs::read(dir.join("package-lock.json")).expect("read package-lock.json");
    let stamp = dir
        .join("node_modules")
        .join(".grenache-rs-package-lock.json");
    let fresh = fs::read(&stamp).is_ok_and(|old| old == lockfile)
        && dir
            .join("node_modules/grenache-grape/bin/grape.js")
            .exists();
    if !fresh {
        eprintln!("npm ci in {} ...", dir.display());
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("run npm ci");
        assert!(
            out.status.success(),
            "npm ci failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(&stamp, &lockfile).expect("write the npm stamp");
    }
    drop(lock);
    Ok(NodeEnv { dir })
}

// ---------------------------------------------------------------------------------------------
// Grapes
// ---------------------------------------------------------------------------------------------

/// Which implementation a Grape is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ours(Rt),
    Node,
}

/// A running Grape and the addresses it serves.
pub struct Grape {
    pub kind: Kind,
    pub label: String,
    pub dht: SocketAddr,
    pub api: SocketAddr,
    pub ws: Option<SocketAddr>,
    pub proc: Proc,
}

static RID: AtomicU64 = AtomicU64::new(1);

impl Grape {
    /// The API base URL, as grenache-nodejs-link takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// `POST /<cmd>` with `{rid, data}`, returning the raw response.
    pub fn post(&self, cmd: &str, data: &Value) -> io::Result<http::Response> {
        let rid = RID.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "rid": format!("00000000-0000-4000-8000-{rid:012}"), "data": data });
        http::post(self.api, &format!("/{cmd}"), body.to_string().as_bytes())
    }

    /// `POST /<cmd>` and parse the reply; any status but 200 is an error.
    pub fn call(&self, cmd: &str, data: &Value) -> Result<Value, String> {
        let resp = self
            .post(cmd, data)
            .map_err(|e| format!("{} /{cmd} {data}: {e}", self.label))?;
        if resp.status != 200 {
            return Err(format!(
                "{} /{cmd} {data}: status {} body {:?}",
                self.label,
                resp.status,
                resp.text()
            ));
        }
        resp.json()
            .map_err(|e| format!("{} /{cmd} {data}: {e}", self.label))
    }

    /// Announces `name` at `port`; an `"ERR_*"` reply is an error.
    pub fn announce(&self, name: &str, port: u16) -> Result<Value, String> {
        let reply = self.call("announce", &json!([name, port]))?;
        match reply.as_str() {
            Some(err) => Err(format!("{} /announce {name} {port}: {err}", self.label)),
            None => Ok(reply),
        }
    }

    /// Looks `name` up; anything but an array of strings is an error.
    pub fn lookup(&self, name: &str) -> Result<Vec<String>, String> {
        let reply = self.call("lookup", &json!(name))?;
        let bad = || {
            format!(
                "{} /lookup {name}: not a list of peers: {reply}",
                self.label
            )
        };
        reply
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|p| p.as_str().map(str::to_string).ok_or_else(bad))
            .collect()
    }

    /// Polls `/lookup name` until it lists every one of `peers`.
    pub fn wait_lookup(&self, name: &str, peers: &[String], timeout: Duration) -> Vec<String> {
        wait_until(
            &format!("{} to list {peers:?} for {name:?}", self.label),
            timeout,
            || match self.lookup(name) {
                Ok(found) if peers.iter().all(|p| found.contains(p)) => Ok(found),
                Ok(found) => Err(format!("{found:?}")),
                Err(e) => Err(e),
            },
        )
    }

    pub fn is_ours(&self) -> bool {
        matches!(self.kind, Kind::Ours(_))
    }
}

/// How long an announce or put may take to be seen through another Grape (the bound from
/// the issue).
pub const PROPAGATION: Duration = Duration::from_secs(2);

/// Polls `/get query` on `g` until the item satisfies `done`.
pub fn wait_item(g: &Grape, query: &Value, done: impl Fn(&Value) -> bool) -> Value {
    wait_until(&format!("{} /get {query}", g.label), PROPAGATION, || {
        let item = g.call("get", query)?;
        if item.is_object() && done(&item) {
            Ok(item)
        } else {
            Err(item.to_string())
        }
    })
}

/// Asserts that `v` is a string of `bytes` bytes in hex (`whole` is shown on failure).
pub fn assert_hex(v: &Value, bytes: usize, whole: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a string in {whole}"));
    assert!(
        s.len() == 2 * bytes && s.bytes().all(|c| c.is_ascii_hexdigit()),
        "{s:?} is not {bytes} bytes of hex in {whole}"
    );
}

/// `127.0.0.1:port` as a Grape lists it.
pub fn peer(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Options for [`start_grapes`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GrapeOpts {
    /// Give our Grapes a WebSocket API port (`--apw`).
    pub ws: bool,
    /// Apply our Grapes' defences to loopback senders too (`--limit-loopback`), so that
    /// they meet the other Grapes of a loopback network.
    pub limit_loopback: bool,
}

/// Starts one Grape per entry of `kinds` on fresh loopback ports, all at once, and waits until
/// each API accepts connections.
///
/// Bootstrapping: the first two Grapes are seeds; they bootstrap from each other and every
/// other Grape from both, so put a Node Grape and one of ours first to mix the seeds. If a
/// Grape exits during start-up (a port taken meanwhile by another process, say), the whole
/// set is restarted on new ports, up to three times.
pub fn start_grapes(ctx: &Ctx, kinds: &[Kind], opts: GrapeOpts) -> Vec<Grape> {
    let node = kinds.contains(&Kind::Node).then(node_env);
    let mut last_failure = String::new();
    for attempt in 0..3 {
        let mut grapes: Vec<Grape> = Vec::with_capacity(kinds.len());
        let dht: Vec<u16> = kinds.iter().map(|_| free_port()).collect();
        let seeds: Vec<usize> = (0..kinds.len().min(2)).collect();
        for (i, &kind) in kinds.iter().enumerate() {
            let api = free_port();
            let ws = (opts.ws && matches!(kind, Kind::Ours(_))).then(free_port);
            let bn = seeds
                .iter()
                .filter(|&&s| s != i)
                .map(|&s| peer(dht[s]))
                .collect::<Vec<_>>()
                .join(",");
            let label = match kind {
                Kind::Ours(rt) => format!("ours{i}-{}", rt.as_str()),
                Kind::Node => format!("node{i}"),
            };
            let log_name = format!("{label}-try{attempt}");
            let cmd = match kind {
                Kind::Ours(rt) => {
                    let mut cmd = ours_command(rt, dht[i], api, &bn);
                    if let Some(ws) = ws {
                        cmd.args(["--apw", &ws.to_string()]);
                    }
                    if opts.limit_loopback {
                        cmd.arg("--limit-loopback");
                    }
                    cmd
                }
                Kind::Node => {
                    let node = node.expect("set when kinds has a Node Grape");
                    node.command(
                        "node_modules/grenache-grape/bin/grape.js",
                        &[
                            "-b".into(),
                            "127.0.0.1".into(),
                            "--dp".into(),
                            dht[i].to_string(),
                            "--aph".into(),
                            api.to_string(),
                            "--bn".into(),
                            bn.clone(),
                        ],
                    )
                }
            };
            let proc = Proc::spawn(ctx, &log_name, cmd).unwrap_or_else(|e| panic!("{e}"));
            grapes.push(Grape {
                kind,
                label,
                dht: SocketAddr::from((Ipv4Addr::LOCALHOST, dht[i])),
                api: SocketAddr::from((Ipv4Addr::LOCALHOST, api)),
                ws: ws.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
                proc,
            });
        }
        match wait_ready(&mut grapes) {
            Ok(()) => {
                eprintln!(
                    "[{}] started {}",
                    ctx.name,
                    grapes
                        .iter()
                        .map(|g| format!("{} dht={} api={}", g.label, g.dht, g.api))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return grapes;
            }
            Err((exited, failure)) => {
                eprintln!("[{}] start attempt {attempt} failed: {failure}", ctx.name);
                last_failure = failure;
                terminate_all(grapes.iter_mut().map(|g| &mut g.proc));
                if !exited {
                    break;
                }
            }
        }
    }
    panic!("[{}] Grapes did not start: {last_failure}", ctx.name);
}

/// The command line of our Grape on loopback, logging at `info` unless RUST_LOG says otherwise.
fn ours_command(rt: Rt, dht: u16, api: u16, bn: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grape"));
    cmd.args(["--dp", &dht.to_string()])
        .args(["--aph", &api.to_string()])
        .args(["--bn", bn])
        .args(["-b", "127.0.0.1"])
        .args(["--runtime", rt.as_str()]);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd
}

/// Starts one of our Grapes on DHT port `dht` (a fresh API port), joining through `bn`, with
/// `extra` flags, and waits until its API accepts connections. For tests that restart a
/// Grape in place or need flags [`start_grapes`] does not give.
pub fn start_ours(ctx: &Ctx, rt: Rt, label: &str, dht: u16, bn: &str, extra: &[&str]) -> Grape {
    let api = free_port();
    let mut cmd = ours_command(rt, dht, api, bn);
    cmd.args(extra);
    let proc = Proc::spawn(ctx, label, cmd).unwrap_or_else(|e| panic!("{e}"));
    let mut grapes = [Grape {
        kind: Kind::Ours(rt),
        label: label.to_string(),
        dht: SocketAddr::from((Ipv4Addr::LOCALHOST, dht)),
        api: SocketAddr::from((Ipv4Addr::LOCALHOST, api)),
        ws: None,
        proc,
    }];
    if let Err((_, failure)) = wait_ready(&mut grapes) {
        panic!("[{}] {label} did not start: {failure}", ctx.name);
    }
    let [grape] = grapes;
    grape
}

/// Waits until every Grape accepts TCP connections on its API (and WS) port.
///
/// # Errors
/// `(true, why)` if a Grape exited (worth a retry on new ports), `(false, why)` on a timeout.
fn wait_ready(grapes: &mut [Grape]) -> Result<(), (bool, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for g in grapes.iter_mut() {
        let ports: Vec<SocketAddr> = std::iter::once(g.api).chain(g.ws).collect();
        for addr in ports {
            loop {
                if let Some(status) = g.proc.exited() {
                    return Err((
                        true,
                        format!(
                            "{} exited with {status} during start-up:\n{}",
                            g.label,
                            g.proc.dump()
                        ),
                    ));
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err((
                        false,
                        format!(
                            "{} not listening on {addr} after 20 s:\n{}",
                            g.label,
                            g.proc.dump()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }
    // A Grape that lost a port race exits right after binding the other one: look once more.
    std::thread::sleep(Duration::from_millis(50));
    for g in grapes.iter_mut() {
        if let Some(status) = g.proc.exited() {
            return Err((
                true,
                format!(
                    "{} exited with {status} right after start-up:\n{}",
                    g.label,
                    g.proc.dump()
                ),
            ));
        }
    }
    Ok(())
}

/// Waits until the Grapes form one network: every Grape announces `<test>:warmup` (port
/// 10000 + its index, re-announced every second) and every Grape's lookup lists all of them.
///
/// Tests that measure or assert propagation call this first, so they measure propagation
/// rather than bootstrap.
pub fn wait_converged(ctx: &Ctx, grapes: &[Grape], timeout: Duration) {
    let name = format!("{}:warmup", ctx.name);
    let ports: Vec<String> = (0..grapes.len()).map(|i| peer(10_000 + i as u16)).collect();
    let start = Instant::now();
    let mut last_announce: Option<Instant> = None;
    let result = try_wait_until("the Grapes to form one network", timeout, || {
        if last_announce.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_announce = Some(Instant::now());
            for (i, g) in grapes.iter().enumerate() {
                let _ = g.announce(&name, 10_000 + i as u16);
            }
        }
        let mut missing = Vec::new();
        for g in grapes {
            match g.lookup(&name) {
                Ok(found) => {
                    let lacks: Vec<&String> = ports.iter().filter(|p| !found.contains(p)).collect();
                    if !lacks.is_empty() {
                        missing.push(format!("{} lacks {lacks:?}", g.label));
                    }
                }
                Err(e) => missing.push(e),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    });
    match result {
        Ok(()) => eprintln!(
            "[{}] {} Grapes converged in {:?}",
            ctx.name,
            grapes.len(),
            start.elapsed()
        ),
        Err(e) => panic!("[{}] {e}", ctx.name),
    }
}

/// A file lock that lets only one heavy test (many processes, timing assertions) run at a
/// time, across threads and across test processes.
pub fn heavy_test_lock() -> File {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-heavy.lock");
    let file = File::create(path).expect("create the heavy-test lock file");
    #[allow(clippy::incompatible_msrv)]
    file.lock().expect("take the heavy-test lock");
    file
}

/// Signs a BEP-44 mutable item with the core (`grenache_core::dht::bep44::MutableItem::sign`), the
/// way a publisher would before `/put`: `{k, sig, target}` in hex, `v` as the Grape's JSON
/// string (stored as a bencoded byte string).
pub fn sign_mutable(seed: [u8; 32], seq: i64, v: &str, salt: &str) -> Value {
    use grenache_core::dht::bep44::MutableItem;
    use grenache_core::dht::hex;
    let bencoded = [format!("{}:", v.len()).as_bytes(), v.as_bytes()].concat();
    let item = MutableItem::sign(&seed, salt.as_bytes().to_vec(), seq, bencoded)
        .unwrap_or_else(|e| panic!("signing {v:?} seq {seq}: {e}"));
    let target = item.target();
    json!({"k": hex(item.k()), "sig": hex(item.sig()), "target": hex(target.as_bytes())})
}

/// Signs a BEP-44 mutable item with Node's ed25519 (`node/sign.js`): `{k, sig, target}` in hex.
pub fn sign_with_node(
    ctx: &Ctx,
    node: &NodeEnv,
    seed: [u8; 32],
    seq: i64,
    v: &str,
    salt: &str,
) -> Value {
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    node.run_json(
        ctx,
        &format!("sign-{seq}"),
        "sign.js",
        &[seed_hex, seq.to_string(), v.to_string(), salt.to_string()],
        Duration::from_secs(10),
    )
}

/// Starts `rpc-server.js` and waits for its first successful announce.
pub fn spawn_rpc_server(
    ctx: &Ctx,
    node: &NodeEnv,
    grape_url: &str,
    service: &str,
    port: u16,
    kind: &str,
) -> Proc {
    let proc = Proc::spawn(
        ctx,
        &format!("rpc-server-{kind}-{port}"),
        node.command(
            "rpc-server.js",
            &[
                grape_url.into(),
                service.into(),
                port.to_string(),
                kind.into(),
            ],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        &format!("rpc-server.js {service} to announce"),
        Duration::from_secs(10),
        || {
            let out = proc.stdout_text();
            if out.contains(r#""ready":true"#) {
                Ok(())
            } else {
                Err(format!("stdout {out:?} stderr {:?}", proc.stderr_text()))
            }
        },
    );
    proc
}
