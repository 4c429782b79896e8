//! The HTTP load generator: keep-alive HTTP/1.1 connections on a tokio runtime, each
//! sending one request at a time (closed loop, as wrk does), for a fixed time.
//!
//! It is written to cost less per request than the servers it drives: requests are
//! prebuilt bytes, responses are parsed only as far as status, length and a peek at the
//! body. [`crate::bench::sections`] measures its own ceiling against a fixed-reply server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::stats::Latencies;

/// Longest a single request may take before it counts as an error and its
/// connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response the generator reads (a lookup answers at most 100 addresses).
const MAX_RESPONSE: usize = 1 << 20;

/// What each request carries.
#[derive(Clone, Debug)]
pub enum Workload {
    /// The same request every time (hot lookups, the ceiling).
    Fixed { path: String, body: String },
    /// `lookup` of a name never asked before.
    FreshLookup { prefix: String },
    /// `announce` of a name never announced before.
    FreshAnnounce { prefix: String },
}

impl Workload {
    /// Writes the request bytes for the `i`-th request of connection `conn` into `out`
    /// (cleared first); a fixed workload is written once and then left as it is.
    fn request(&self, conn: usize, i: u64, out: &mut Vec<u8>) {
        match self {
            Workload::Fixed { path, body } => {
                if out.is_empty() {
                    *out = request_bytes(path, body);
                }
            }
            Workload::FreshLookup { prefix } => {
                out.clear();
                let body = format!("{{\"rid\":\"r\",\"data\":\"{prefix}-{conn}-{i}\"}}");
                write_request(out, "/lookup", &body);
            }
            Workload::FreshAnnounce { prefix } => {
                out.clear();
                let body = format!(
                    "{{\"rid\":\"r\",\"data\":[\"{prefix}-{conn}-{i}\",{}]}}",
                    1024 + (i % 60_000)
                );
                write_request(out, "/announce", &body);
            }
        }
    }
}

fn write_request(out: &mut Vec<u8>, path: &str, body: &str) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// A `POST path` with a JSON body, keep-alive.
pub fn request_bytes(path: &str, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    write_request(&mut out, path, body);
    out
}

/// One load run's settings.
#[derive(Clone, Debug)]
pub struct Spec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub workload: Workload,
}

/// What a run measured over its measuring window.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Successful requests per second.
    pub rps: f64,
    /// Requests that failed (status, `"ERR_...` body, timeout, connection loss).
    pub errors: u64,
    pub ok: u64,
    pub latency: Latencies,
    /// First error seen, for the log.
    pub first_error: Option<String>,
}

/// Runs `spec` on `threads` threads, each with its own single-threaded runtime and
/// its share of the connections (as wrk splits them), and returns what it measured.
pub fn run(threads: usize, spec: &Spec) -> Outcome {
    let spec = Arc::new(spec.clone());
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.measure;
    let threads = threads.clamp(1, spec.connections.max(1));
    let parts: Vec<Part> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let spec = Arc::clone(&spec);
                scope.spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return vec![Part::failed("no runtime")];
                    };
                    rt.block_on(async {
                        let tasks: Vec<_> = (t..spec.connections)
                            .step_by(threads)
                            .map(|conn| {
                                let spec = Arc::clone(&spec);
                                tokio::spawn(async move {
                                    connection(&spec, conn, measure_from, end).await
                                })
                            })
                            .collect();
                        let mut parts = Vec::with_capacity(tasks.len());
                        for task in tasks {
                            parts
                                .push(task.await.unwrap_or_else(|_| Part::failed("task panicked")));
                        }
                        parts
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Part::failed("thread panicked")])
            })
            .collect()
    });
    let mut out = Outcome::default();
    let mut all = Vec::new();
    for part in parts {
        out.ok += part.ok;
        out.errors += part.errors;
        all.extend_from_slice(&part.latencies_us);
        if out.first_error.is_none() {
            out.first_error = part.first_error;
        }
    }
    out.rps = out.ok as f64 / spec.measure.as_secs_f64();
    out.latency = Latencies::from_micros(all);
    out
}

#[derive(Default)]
struct Part {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl Part {
    fn failed(why: &str) -> Part {
        Part {
            errors: 1,
            first_error: Some(why.to_string()),
            ..Part::default()
        }
    }

    fn error(&mut self, counted: bool, e: String) {
        if counted {
            self.errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

/// One connection's closed loop; reconnects after an error.
async fn connection(spec: &Spec, conn: usize, measure_from: Instant, end: Instant) -> Part {
    let mut part = Part::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut req = Vec::with_capacity(512);
    let mut i = 0u64;
    'reconnect: while Instant::now() < end {
        let mut stream = match TcpStream::connect(spec.addr).await {
            Ok(s) => s,
            Err(e) => {
                part.error(Instant::now() >= measure_from, format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        loop {
            let sent = Instant::now();
            if sent >= end {
                break 'reconnect;
            }
            spec.workload.request(conn, i, &mut req);
            i += 1;
            let counted = sent >= measure_from;
            let exchange = async {
                stream.write_all(&req).await.map_err(|e| e.to_string())?;
                read_response(&mut stream, &mut buf).await
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(Ok(resp)) => {
                    let took = sent.elapsed();
                    if counted {
                        if resp.ok {
                            part.ok += 1;
                            part.latencies_us
                                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                        } else {
                            part.error(true, resp.summary);
                        }
                    }
                    if resp.close {
                        continue 'reconnect;
                    }
                }
                Ok(Err(e)) => {
                    part.error(counted, e);
                    continue 'reconnect;
                }
                Err(_) => {
                    part.error(counted, "timeout".into());
                    continue 'reconnect;
                }
            }
        }
    }
    part
}

struct Response {
    ok: bool,
    close: bool,
    summary: String,
}

/// Reads one response (Content-Length or chunked body) from `stream`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Response, String> {
    buf.clear();
    let mut searched = 0;
    let header_end = loop {
        if let Some(at) = find(&buf[searched..], b"\r\n\r\n") {
            break searched + at + 4;
        }
        searched = buf.len().saturating_sub(3);
        read_more(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|_| "bad header bytes")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let chunked_body;
    let body: &[u8] = if chunked {
        chunked_body = read_chunked(stream, buf, header_end).await?;
        &chunked_body
    } else {
        let length = length.ok_or("response without length")?;
        if length > MAX_RESPONSE {
            return Err("response too large".into());
        }
        while buf.len() < header_end + length {
            read_more(stream, buf).await?;
        }
        &buf[header_end..header_end + length]
    };
    // Grape errors come back as 200 with a JSON string body "ERR_...".
    let ok = status == 200 && !body.starts_with(b"\"ERR") && !body.starts_with(b"ERR");
    let summary = if ok {
        String::new()
    } else {
        format!(
            "{status} {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        )
    };
    Ok(Response { ok, close, summary })
}

async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut at: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(e) = find(&buf[at..], b"\r\n") {
                break at + e;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end]).map_err(|_| "bad chunk")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        if size > MAX_RESPONSE {
            return Err("chunk too large".into());
        }
        let data = line_end + 2;
        while buf.len() < data + size + 2 {
            read_more(stream, buf).await?;
        }
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&buf[data..data + size]);
        at = data + size + 2;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    if buf.len() > MAX_RESPONSE {
        return Err("response too large".into());
    }
    buf.reserve(8192);
    let n = stream.read_buf(buf).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_workloads_never_repeat_a_name() {
        let w = Workload::FreshLookup { prefix: "f".into() };
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        w.request(0, 1, &mut a);
        w.request(0, 2, &mut b);
        w.request(1, 1, &mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn request_bytes_carry_the_exact_length() {
        let req = String::from_utf8(request_bytes("/lookup", "{\"data\":\"x\"}")).unwrap();
        assert!(req.contains("Content-Length: 12\r\n\r\n{\"data\":\"x\"}"));
    }

    #[test]
    fn reads_length_and_chunked_responses_and_spots_grape_errors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let replies: [&[u8]; 2] = [
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n\"ER\r\n4\r\nR_X\"\r\n0\r\n\r\n",
                ];
                for reply in replies {
                    let (mut s, _) = listener.accept().await.unwrap();
                    s.write_all(reply).await.unwrap();
                }
            });
            let mut buf = Vec::new();
            let mut first = TcpStream::connect(addr).await.unwrap();
            let ok = read_response(&mut first, &mut buf).await.unwrap();
            let mut second = TcpStream::connect(addr).await.unwrap();
            let err = read_response(&mut second, &mut buf).await.unwrap();
            assert!(ok.ok, "{}", ok.summary);
            assert!(!err.ok);
            assert_eq!(err.summary, "200 \"ERR_X\"");
        });
    }
}
