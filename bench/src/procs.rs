//! Child processes owned by guards, free loopback ports, and resident memory.
//!
//! Every process the bench starts is a [`Proc`]: dropping it (also while a panic unwinds)
//! kills it by its pid, and [`install_interrupt_handler`] kills every live one on Ctrl-C or
//! SIGTERM before the bench exits, so a run never leaves a Grape behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Every live child, by a serial number, so the interrupt handler can reach them.
static LIVE: Mutex<BTreeMap<u64, Arc<Mutex<Child>>>> = Mutex::new(BTreeMap::new());
static SERIAL: AtomicU64 = AtomicU64::new(0);

fn live() -> MutexGuard<'static, BTreeMap<u64, Arc<Mutex<Child>>>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A child process that is killed (by pid) when the guard is dropped.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    serial: u64,
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `cmd` with its stdout and stderr in `log` (stdin closed).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        Proc::start(name, cmd, log)
    }

    /// Starts `cmd` with piped stdin and stdout (for a line protocol) and stderr in `log`.
    pub fn spawn_piped(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let err = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err);
        Proc::start(name, cmd, log)
    }

    fn start(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        let pid = child.id();
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let child = Arc::new(Mutex::new(child));
        live().insert(serial, Arc::clone(&child));
        tracing::debug!(name, pid, "started");
        Ok(Proc {
            name: name.to_string(),
            pid,
            log: log.to_path_buf(),
            serial,
            child,
            stdin,
            stdout,
        })
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(child.try_wait(), Ok(None))
    }

    /// Sends one line on stdin and reads one line back from stdout (piped children only).
    pub fn ask(&mut self, line: &str) -> Result<String, String> {
        let (Some(stdin), Some(stdout)) = (self.stdin.as_mut(), self.stdout.as_mut()) else {
            return Err(format!("{} has no line protocol", self.name));
        };
        writeln!(stdin, "{line}").map_err(|e| format!("{}: {e}", self.name))?;
        stdin.flush().map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stdout
            .read_line(&mut answer)
            .map_err(|e| format!("{}: {e}", self.name))?;
        if answer.is_empty() {
            return Err(format!("{} closed its stdout", self.name));
        }
        Ok(answer.trim_end().to_string())
    }

    /// Reads one line from the child's stdout (piped children only).
    pub fn read_line(&mut self) -> Result<String, String> {
        let Some(stdout) = self.stdout.as_mut() else {
            return Err(format!("{} has no piped stdout", self.name));
        };
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .map_err(|e| format!("{}: {e}", self.name))?;
        if line.is_empty() {
            return Err(format!("{} exited:\n{}", self.name, self.log_tail(20)));
        }
        Ok(line.trim_end().to_string())
    }

    /// Takes the child's stdout (piped children only), for a reader on another thread
    /// while this guard stays here to kill the child.
    pub fn take_stdout(&mut self) -> Option<BufReader<ChildStdout>> {
        self.stdout.take()
    }

    /// Resident memory now, in bytes (`VmRSS`).
    pub fn rss(&self) -> Option<u64> {
        proc_status_kb(self.pid, "VmRSS:").map(|kb| kb * 1024)
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        live().remove(&self.serial);
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
        tracing::debug!(name = self.name, pid = self.pid, "stopped");
    }
}

/// Kills every live child; used on interrupt, where destructors will not run.
pub fn kill_all() {
    let children: Vec<_> = std::mem::take(&mut *live()).into_values().collect();
    for child in children {
        let mut child = child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// On SIGINT or SIGTERM: kill every child, then exit with 130.
pub fn install_interrupt_handler() {
    let spawned = std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            eprintln!("\ngrape-bench: interrupted; stopping every process it started");
            kill_all();
            std::process::exit(130);
        });
    if let Err(e) = spawned {
        tracing::warn!("no interrupt handler: {e}");
    }
}

/// Reads a `kB` field of `/proc/<pid>/status`.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system, every thread) process `pid` has used so far, from
/// `/proc/<pid>/stat`, at the 10 ms resolution of Linux's `USER_HZ` (100 on every
/// architecture this runs on).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces: count fields after its `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU time the whole machine has spent in processes so far (user, nice, system and steal
/// of every core, from the first line of `/proc/stat`), at `USER_HZ` resolution. Interrupt
/// and softirq time are left out: the kernel charges them to no process, and on loopback
/// most of it is the benchmark's own traffic.
pub fn machine_busy() -> Option<Duration> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy = [0, 1, 2, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    Some(Duration::from_millis(busy * 10))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> Result<u16, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_tcp(addr: SocketAddr, limit: Duration, proc: &Proc) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if !proc.is_running() {
            return Err(format!(
                "{} exited before listening on {addr}:\n{}",
                proc.name,
                proc.log_tail(20)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{} did not listen on {addr} within {limit:?}:\n{}",
        proc.name,
        proc.log_tail(20)
    ))
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Finds `name` on the PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
