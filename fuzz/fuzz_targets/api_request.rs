//! Arbitrary HTTP bodies and WebSocket messages into a fixed-seed `api::Grape` whose node
//! has a routing table (so commands wait on the DHT and its timers): it must never panic,
//! every request must get exactly one reply, and every reply must be well-formed (HTTP: a
//! status the API uses with a matching body; WebSocket: a JSON array `[rid, err, result]`).
//!
//! The first byte sets the Grape's request bound (1 to 8 s, against the node's ~4 s for a
//! command to silent nodes, so both the node and the bound end commands). The rest is a
//! list of requests, each `[op: u8][wait: u8][len: u8][len bytes]` (the last one takes
//! what is left). `wait` advances the clock by that many 10 ms steps, running due timers.
//! `op` bits 0-2 pick the kind, bits 3-4 a command (or GET for a free path), bit 5 wraps
//! the bytes as `data` (`{"rid":"r","data":BYTES}`, `["r","CMD",BYTES]`):
//!
//! * 0-3: POST the bytes to `/announce`, `/lookup`, `/put`, `/get`;
//! * 4: the bytes up to the first `\n` are the path, the rest the body (POST or GET);
//! * 5: a body over `max_payload` to the command (the adapter's `HttpBody::TooLarge`);
//! * 6-7: the bytes as a WebSocket text message (wrapped: a call of the command).
#![no_main]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{epoch, ping_from};
use grenache_core::api::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_METRICS, CONTENT_TYPE_TEXT, Grape, GrapeConfig, HttpBody,
    MAX_WATCH_WAIT, Reply, RequestId, WsConn,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Where API requests come from: loopback, which the API limits exempt by default.
const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

/// Nodes put in the routing table before the input is fed; none of them ever answers.
const KNOWN: u8 = 4;
/// Largest body accepted: small enough that inputs of 4096 bytes pass it.
const MAX_PAYLOAD: usize = 1024;
/// Requests waiting on the DHT at most, low enough to reach `ERR_GRAPE_BUSY`.
const MAX_INFLIGHT: usize = 8;
/// Timer firings allowed per input; a Grape that needs more is looping.
const MAX_WAKEUPS: usize = 10_000;
const COMMANDS: [&str; 4] = ["announce", "lookup", "put", "get"];
/// Plain-text bodies the API may send, by status.
const TEXT_ERRORS: [(u16, &[u8]); 4] = [
    (500, b"ERR_GRAPE_PAYLOAD_INVALID"),
    (413, b"ERR_GRAPE_PAYLOAD_SIZE"),
    (503, b"ERR_GRAPE_BUSY"),
    (504, b"ERR_GRAPE_TIMEOUT"),
];

fn sender(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i + 1], 6881))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Http,
    Ws,
}

struct Harness {
    grape: Grape,
    now: Instant,
    next: u64,
    /// Requests sent and not yet answered.
    waiting: BTreeMap<RequestId, Via>,
}

impl Harness {
    fn id(&mut self, via: Via) -> RequestId {
        self.next += 1;
        let id = RequestId(self.next);
        self.waiting.insert(id, via);
        id
    }

    fn http(&mut self, method: &str, path: &str, body: &[u8]) {
        let id = self.id(Via::Http);
        // An adapter stops reading one byte past max_payload.
        let body = if body.len() > self.grape.max_payload() {
            HttpBody::TooLarge
        } else {
            HttpBody::Complete(body)
        };
        self.grape
            .handle_http(self.now, CLIENT, id, method, path, body);
        self.drain();
    }

    fn ws(&mut self, text: &[u8]) {
        let id = self.id(Via::Ws);
        self.grape.handle_ws(self.now, WsConn(0), CLIENT, id, text);
        self.drain();
    }

    fn drain(&mut self) {
        while self.grape.poll_transmit().is_some() {}
        while let Some(reply) = self.grape.poll_reply() {
            let Some(via) = self.waiting.remove(&reply.req) else {
                panic!("reply to a request not waiting: {reply:?}");
            };
            check(&reply, via);
            // A WebSocket watch answers again on every change, until it ends.
            if reply.more {
                self.waiting.insert(reply.req, via);
            }
        }
        while let Some(req) = self.grape.poll_ended() {
            self.waiting.remove(&req);
        }
    }

    /// Runs every timer due by `until`; asserts none is left due (no busy loop).
    fn run_until(&mut self, until: Instant) {
        for _ in 0..MAX_WAKEUPS {
            let Some(at) = self.grape.poll_timeout() else {
                return;
            };
            if at > until {
                return;
            }
            self.now = self.now.max(at);
            self.grape.handle_timeout(self.now);
            self.drain();
            assert!(
                self.grape.poll_timeout().is_none_or(|t| t > self.now),
                "poll_timeout not after handle_timeout"
            );
        }
        panic!("more than {MAX_WAKEUPS} wake-ups");
    }
}

fn check(reply: &Reply, via: Via) {
    match via {
        Via::Ws => {
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(reply.content_type, CONTENT_TYPE_JSON);
            let frame: Value = serde_json::from_slice(&reply.body).expect("WS reply is JSON");
            let Value::Array(items) = frame else {
                panic!("WS reply is not an array: {reply:?}");
            };
            assert_eq!(items.len(), 3, "{reply:?}");
            match &items[1] {
                Value::Null => {}
                Value::String(_) => assert!(items[2].is_null(), "{reply:?}"),
                other => panic!("WS err is {other}"),
            }
        }
        Via::Http => match reply.content_type {
            CONTENT_TYPE_JSON => {
                // 400 and 429: a `/watch` with a bad index or wait, or past the watch bound.
                assert!(
                    matches!(reply.status, 200 | 300..400 | 400 | 429),
                    "{reply:?}"
                );
                if !reply.body.is_empty() {
                    let _: Value = serde_json::from_slice(&reply.body).expect("JSON body");
                }
            }
            CONTENT_TYPE_TEXT => {
                assert!(
                    TEXT_ERRORS.contains(&(reply.status, &reply.body[..])),
                    "{reply:?}"
                );
            }
            CONTENT_TYPE_METRICS => assert_eq!(reply.status, 200),
            other => panic!("content type {other}"),
        },
    }
}

fn wrap_http(bytes: &[u8]) -> Vec<u8> {
    let mut out = b"{\"rid\":\"r\",\"data\":".to_vec();
    out.extend_from_slice(bytes);
    out.push(b'}');
    out
}

fn wrap_ws(command: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("[\"r\",\"{command}\",").into_bytes();
    out.extend_from_slice(bytes);
    out.push(b']');
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&bound, mut rest)) = data.split_first() else {
        return;
    };
    let now = epoch();
    let mut config = GrapeConfig::default();
    config.max_payload = MAX_PAYLOAD;
    config.max_inflight = MAX_INFLIGHT;
    config.request_timeout = Duration::from_secs(u64::from(bound % 8) + 1);
    let request_timeout = config.request_timeout;
    let mut grape = Grape::new(config, [7; 32], now);
    for i in 0..KNOWN {
        grape.handle_datagram(now, sender(i), &ping_from(i));
    }
    grape.bootstrap(now, &[]);
    let mut h = Harness {
        grape,
        now,
        next: 0,
        waiting: BTreeMap::new(),
    };
    h.drain();

    while let [op, wait, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = if tail.len() - n < 3 {
            (tail, &[][..])
        } else {
            tail.split_at(n)
        };
        rest = next;
        let kind = op & 7;
        let sel = usize::from((op >> 3) & 3);
        let wrap = op & 0x20 != 0;
        let command = COMMANDS[sel];
        match kind {
            0..=3 => {
                let path = format!("/{}", COMMANDS[usize::from(kind)]);
                let body = if wrap {
                    wrap_http(bytes)
                } else {
                    bytes.to_vec()
                };
                h.http("POST", &path, &body);
            }
            4 => {
                let at = bytes
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(bytes.len());
                let path = String::from_utf8_lossy(&bytes[..at]).into_owned();
                let body = bytes.get(at + 1..).unwrap_or_default();
                let method = if sel & 1 == 1 { "GET" } else { "POST" };
                h.http(method, &path, body);
            }
            5 => {
                let big = vec![b' '; MAX_PAYLOAD + 1];
                h.http("POST", &format!("/{command}"), &big);
            }
            _ => {
                let text = if wrap {
                    wrap_ws(command, bytes)
                } else {
                    bytes.to_vec()
                };
                h.ws(&text);
            }
        }
        let until = h.now + Duration::from_millis(10 * u64::from(*wait));
        h.run_until(until);
        h.now = h.now.max(until);
    }

    // Every request is answered by the Grape's bound at the latest, an HTTP watch by the
    // end of its wait; WebSocket watches end with their connection.
    h.grape.ws_closed(WsConn(0));
    h.drain();
    let end = h.now + request_timeout.max(MAX_WATCH_WAIT) + Duration::from_secs(1);
    h.run_until(end);
    assert!(h.waiting.is_empty(), "unanswered: {:?}", h.waiting);
    assert_eq!(h.grape.inflight(), 0);
});
