//! A tiny HTTP/1.1 client over `std::net::TcpStream`, enough to talk to a Grape's API.
//!
//! Written here rather than pulled in as a crate so the tests need no HTTP stack of their
//! own and see the server's bytes exactly (status, raw body) without any client-side fixing up.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long one request may take before the client gives up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A response as the server sent it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `POST path` with `body` and returns the response.
pub fn post(addr: SocketAddr, path: &str, body: &[u8]) -> io::Result<Response> {
    request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body,
    )
}

/// Sends `GET path` and returns the response.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    request(addr, "GET", path, &[], &[])
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole response.
///
/// A write error does not end the attempt: a server may answer (413) and close before it has
/// read a large body, and that answer is what the test wants to see.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let write_result = stream.write_all(&out).and_then(|()| stream.flush());

    let mut raw = Vec::new();
    let read_result = read_response(&mut stream, &mut raw);
    match (read_result, write_result) {
        (Ok(resp), _) => Ok(resp),
        (Err(e), Err(w)) if raw.is_empty() => Err(io::Error::new(
            w.kind(),
            format!("write failed ({w}) and no response came ({e})"),
        )),
        (Err(e), _) => Err(io::Error::new(
            e.kind(),
            format!("{e}; got so far: {:?}", String::from_utf8_lossy(&raw)),
        )),
    }
}

fn read_response(stream: &mut TcpStream, raw: &mut Vec<u8>) -> io::Result<Response> {
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(raw, b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head ended",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut rest = raw[head_end + 4..].to_vec();
    let find_header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked = find_header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = find_header("content-length").and_then(|v| v.parse::<usize>().ok());

    let body = if chunked {
        loop {
            if let Some(body) = dechunk(&rest)? {
                break body;
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(bad("connection closed inside a chunked body".into()));
            }
            rest.extend_from_slice(&buf[..n]);
        }
    } else if let Some(len) = length {
        while rest.len() < len {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(bad(format!(
                    "connection closed after {} of {len} body bytes",
                    rest.len()
                )));
            }
            rest.extend_from_slice(&buf[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        // No length: the body runs to the end of the connection.
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        rest
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a complete chunked body, or returns `None` if more bytes are needed.
fn dechunk(mut data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        let start = line_end + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        if data.len() < start + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
