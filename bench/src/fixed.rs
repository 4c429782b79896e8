//! Fixed-reply HTTP servers: the bench's own (to measure the load generator) and nginx
//! (the box's HTTP ceiling), plus wrk as an outside check of the load generator.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::procs::{self, Proc};

/// The body every fixed server returns: what a hot lookup returns.
pub const FIXED_BODY: &str = "[\"127.0.0.1:1337\"]";

/// Serves [`FIXED_BODY`] to every request on one thread, forever (the `serve-fixed`
/// subcommand): the cheapest server this load generator can meet.
pub fn serve_fixed(port: u16) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(fixed_connection(stream));
        }
    })
}

async fn fixed_connection(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{FIXED_BODY}",
        FIXED_BODY.len()
    );
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // One request: header, then Content-Length bytes of body.
        let needed = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break end + 4 + length;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 1 << 20 {
                return;
            }
        };
        while buf.len() < needed {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..needed);
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Starts `grape-bench serve-fixed` as a child.
pub fn start_fixed(logs: &Path) -> Result<(Proc, SocketAddr), String> {
    let port = procs::free_tcp_port()?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(me);
    cmd.args(["serve-fixed", "--port", &port.to_string()]);
    let proc = Proc::spawn("fixed-reply", cmd, &logs.join("fixed-reply.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    procs::wait_tcp(addr, Duration::from_secs(10), &proc)?;
    Ok((proc, addr))
}

/// Starts nginx (one process, `master_process off`, so one worker) answering
/// [`FIXED_BODY`] to everything; `None` when nginx is not installed.
pub fn start_nginx(out: &Path) -> Result<Option<(Proc, SocketAddr)>, String> {
    let Some(nginx) = procs::which("nginx").or_else(|| {
        let p = Path::new("/usr/sbin/nginx");
        p.is_file().then(|| p.to_path_buf())
    }) else {
        return Ok(None);
    };
    let port = procs::free_tcp_port()?;
    let prefix = out.join("nginx");
    fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
    let p = prefix.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
         error_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
           client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n    default_type application/json;\n\
             location / {{ return 200 '{FIXED_BODY}'; }}\n  }}\n}}\n"
    );
    let conf_path = prefix.join("nginx.conf");
    fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("logs/error.log"));
    let proc = Proc::spawn("nginx", cmd, &out.join("logs").join("nginx.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    procs::wait_tcp(addr, Duration::from_secs(10), &proc)?;
    Ok(Some((proc, addr)))
}

/// Runs wrk (2 threads, `connections`) with the same POST as our load generator; its
/// requests per second, or `None` when wrk is missing.
pub fn run_wrk(
    out: &Path,
    addr: SocketAddr,
    connections: usize,
    seconds: u64,
) -> Result<Option<f64>, String> {
    let Some(wrk) = procs::which("wrk") else {
        return Ok(None);
    };
    let script = out.join("post.lua");
    fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"rid\":\"r\",\"data\":\"hot-svc\"}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .map_err(|e| e.to_string())?;
    let output = Command::new(wrk)
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}/lookup"))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok()))
}
