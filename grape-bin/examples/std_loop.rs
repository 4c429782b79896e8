//! A Grape driven by a plain `std` loop: no async runtime, no threads, one
//! `std::net::UdpSocket` for the DHT and one non-blocking `std::net::TcpListener` for the
//! HTTP API. It shows how to embed the sans-IO core in an event loop of your own:
//!
//! 1. send every datagram the core queued (`poll_transmit`), answer every request it has
//!    finished (`poll_reply`);
//! 2. take new API connections and hand each request to the core (`handle_http`);
//! 3. wait for a datagram until the core's next timer (`poll_timeout`), at most a few
//!    milliseconds so new connections are seen, and hand it over (`handle_datagram`);
//! 4. when the timer is due, `handle_timeout`.
//!
//! ```sh
//! cargo run -p grenache-grape --example std_loop -- 20001 30001 [BOOTSTRAP_HOST:PORT ...]
//! ```
//!
//! The HTTP side is the least a Grenache client needs (one request per connection, a
//! `Content-Length` body): enough for grenache-nodejs-link and curl, not a web server.

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use grenache_core::api::{Grape, GrapeConfig, HttpBody, Reply, RequestId};
use rand::TryRngCore as _;
use rand::rngs::OsRng;

/// Longest wait for a datagram before the loop looks for API connections again.
const MAX_WAIT: Duration = Duration::from_millis(5);

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port = |arg: Option<String>, default: u16| -> u16 {
        arg.and_then(|p| p.parse().ok()).unwrap_or(default)
    };
    let dht_port = port(args.next(), 20001);
    let api_port = port(args.next(), 30001);
    let bootstrap: Vec<SocketAddr> = args.filter_map(|a| a.parse().ok()).collect();

    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, dht_port))?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, api_port))?;
    listener.set_nonblocking(true)?;
    // The core's only randomness: node id, tokens, transaction ids all come from it.
    let mut seed = [0u8; 32];
    OsRng.try_fill_bytes(&mut seed).map_err(io::Error::other)?;
    let now = Instant::now();
    let mut grape = Grape::new(GrapeConfig::default(), seed, now);
    grape.join(now, &bootstrap, &[]);
    eprintln!(
        "std_loop grape: DHT udp://{}, API http://{}, node id {}",
        socket.local_addr()?,
        listener.local_addr()?,
        grape.node().id()
    );

    let mut waiting: HashMap<RequestId, TcpStream> = HashMap::new();
    let mut next_req = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // 1. Whatever the core has to say.
        while let Some(transmit) = grape.poll_transmit() {
            if let Err(err) = socket.send_to(&transmit.payload, transmit.to) {
                eprintln!("send to {} failed: {err}", transmit.to);
            }
        }
        while let Some(reply) = grape.poll_reply() {
            if let Some(stream) = waiting.remove(&reply.req) {
                respond(stream, &reply);
            }
        }

        // 2. New API requests.
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let req = RequestId(next_req);
                    next_req += 1;
                    if let Some((method, path, body)) = read_request(&stream) {
                        let body = if body.len() > grape.max_payload() {
                            HttpBody::TooLarge
                        } else {
                            HttpBody::Complete(&body)
                        };
                        grape.handle_http(Instant::now(), peer, req, &method, &path, body);
                        waiting.insert(req, stream);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    eprintln!("accept failed: {err}");
                    break;
                }
            }
        }

        // 3. A datagram, or the timer.
        let deadline = grape.poll_timeout();
        let wait = deadline
            .map_or(MAX_WAIT, |at| at.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(1), MAX_WAIT);
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let bytes = buf.get(..len).unwrap_or_default();
                grape.handle_datagram(Instant::now(), from, bytes);
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(err) => eprintln!("receive failed: {err}"),
        }

        // 4. Timers that are due.
        let now = Instant::now();
        if deadline.is_some_and(|at| at <= now) {
            grape.handle_timeout(now);
        }
    }
}

/// Reads one request: the method, the target and a `Content-Length` body. `None` (the
/// connection is dropped) if it is not one.
fn read_request(mut stream: &TcpStream) -> Option<(String, String, Vec<u8>)> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if data.len() > 16 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        data.extend_from_slice(chunk.get(..n)?);
    };
    let head = std::str::from_utf8(data.get(..head_end)?).ok()?;
    let mut request_line = head.lines().next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = data.get(head_end..)?.to_vec();
    // A body past the Grape's limit is cut here; the core answers 413 for it.
    let wanted = length.min(64 * 1024);
    while body.len() < wanted {
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        body.extend_from_slice(chunk.get(..n)?);
    }
    body.truncate(length);
    Some((method, path, body))
}

/// Writes the core's reply and closes the connection.
fn respond(mut stream: TcpStream, reply: &Reply) {
    let head = format!(
        "HTTP/1.1 {} -\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if let Err(err) = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&reply.body))
    {
        eprintln!("reply failed: {err}");
    }
}
