//! Arbitrary Grape and peer replies into a fixed-seed `peer::Client` with every kind of
//! command pending (lookup, announce, unannounce, put, get, request, map) and a
//! subscription: it must never panic, no command may end twice, and once the timers have
//! run past every deadline each command must have ended with exactly one event. Then,
//! unsubscribed and left idle, the client must have nothing left to wake up for.
//!
//! The first byte picks the setup: bit 0 a `ws://` Grape (else `http://`), bit 1 peer RPC
//! over WebSocket (else HTTP), bit 2 gzip for RPC over HTTP. The rest is a list of
//! reports, each `[op: u8][pick: u8][wait: u8][len: u8][len bytes]` (the last one takes
//! what is left); `wait` advances the clock by that many 10 ms steps, running due timers.
//! `pick` chooses among the HTTP exchanges or connections the client asked for (255: an
//! id it never issued). `op` bits 0-2 pick the report, bits 3-5 the HTTP status, bit 6
//! gzips the body:
//!
//! * 0-2: an HTTP reply with the bytes as body; 3: an HTTP transport error;
//! * 4: the connection opened; 5: the bytes as a text message; 6: as a binary message;
//! * 7: the connection closed.
//!
//! In a body or message, the first `@rid` is replaced by the request id the client sent
//! on that exchange (HTTP) or on that connection (WebSocket), so replies can match.
#![no_main]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::epoch;
use grenache_core::dht::bep44::Target;
use grenache_core::peer::{
    Client, ClientConfig, ClientEvent, CommandId, ConnId, DEFAULT_MAX_FRAME_LEN, HttpId,
    HttpResponse, Io, LinkEvent, Put, RequestOptions, RpcTransport, SubscriptionId, TransportError,
    WsMessage, gunzip, gzip,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const STATUSES: [u16; 8] = [200, 200, 200, 204, 302, 413, 500, 504];
const MARKER: &[u8] = b"@rid";
/// Exchanges and connections remembered, at most.
const MAX_IDS: usize = 256;
/// How long past the last report the timers run: past every deadline and retry.
const AFTER: Duration = Duration::from_secs(300);
/// Long enough for idle peer connections to close (120 s) and the subscription's last
/// lookup to give up.
const IDLE: Duration = Duration::from_secs(600);
const MAX_WAKEUPS: usize = 10_000;

struct Harness {
    client: Client,
    now: Instant,
    /// HTTP exchanges asked for, with the rid in their body.
    http: Vec<(HttpId, Option<String>)>,
    /// Connections asked for, with the rids sent on them.
    conns: Vec<(ConnId, Vec<String>)>,
    commands: Vec<CommandId>,
    ended: BTreeMap<CommandId, usize>,
    sub: SubscriptionId,
    unsubscribed: bool,
}

/// The rid in a request body: `[rid, ...]` or `{"rid": ...}`, gzipped or not.
fn rid_of(body: &[u8]) -> Option<String> {
    let plain = gunzip(body, DEFAULT_MAX_FRAME_LEN).unwrap_or_else(|_| body.to_vec());
    match serde_json::from_slice::<Value>(&plain).ok()? {
        Value::Array(items) => items.first()?.as_str().map(str::to_owned),
        Value::Object(m) => m.get("rid")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn with_rid(bytes: &[u8], rid: Option<&str>) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(rid) = rid
        && let Some(at) = out.windows(MARKER.len()).position(|w| w == MARKER)
    {
        out.splice(at..at + MARKER.len(), rid.bytes());
    }
    out
}

impl Harness {
    fn drain(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            match t {
                Io::Http(req) => {
                    if self.http.len() < MAX_IDS {
                        self.http.push((req.id, rid_of(&req.body)));
                    }
                }
                Io::WsConnect { conn, .. } => {
                    if self.conns.len() < MAX_IDS {
                        self.conns.push((conn, Vec::new()));
                    }
                }
                Io::WsSend { conn, msg } => {
                    let rid = rid_of(msg.as_bytes());
                    if let (Some((_, rids)), Some(rid)) =
                        (self.conns.iter_mut().find(|(c, _)| *c == conn), rid)
                    {
                        rids.push(rid);
                    }
                }
                Io::WsClose { .. } => {}
                // The setup never picks ZeroMQ; its bytes are fuzzed by zmtp_stream.
                Io::TcpConnect { .. } | Io::TcpSend { .. } | Io::TcpClose { .. } => {}
            }
        }
        while let Some(event) = self.client.poll_event() {
            let id = match &event {
                ClientEvent::Link(
                    LinkEvent::Lookup { id, .. }
                    | LinkEvent::Announce { id, .. }
                    | LinkEvent::Unannounce { id, .. }
                    | LinkEvent::Put { id, .. }
                    | LinkEvent::Get { id, .. },
                )
                | ClientEvent::Reply { id, .. }
                | ClientEvent::Map { id, .. } => *id,
                ClientEvent::Subscribed { sub, .. }
                | ClientEvent::Message { sub, .. }
                | ClientEvent::Disconnected { sub, .. } => {
                    assert_eq!(*sub, self.sub);
                    assert!(!self.unsubscribed, "event after unsubscribe: {event:?}");
                    continue;
                }
                other => panic!("unexpected event {other:?}"),
            };
            assert!(self.commands.contains(&id), "event for {id}: {event:?}");
            let n = self.ended.entry(id).or_default();
            *n += 1;
            assert_eq!(*n, 1, "second event for {id}: {event:?}");
        }
    }

    fn run_until(&mut self, until: Instant) {
        for _ in 0..MAX_WAKEUPS {
            let Some(at) = self.client.poll_timeout() else {
                return;
            };
            if at > until {
                return;
            }
            self.now = self.now.max(at);
            self.client.handle_timeout(self.now);
            self.drain();
            assert!(
                self.client.poll_timeout().is_none_or(|t| t > self.now),
                "poll_timeout not after handle_timeout"
            );
        }
        panic!("more than {MAX_WAKEUPS} wake-ups");
    }

    fn http_pick(&self, pick: u8) -> (HttpId, Option<String>) {
        match self.http.len() {
            n if n == 0 || pick == u8::MAX => (HttpId(u64::MAX - u64::from(pick)), None),
            n => self.http[usize::from(pick) % n].clone(),
        }
    }

    fn conn_pick(&self, pick: u8) -> (ConnId, Option<String>) {
        match self.conns.len() {
            n if n == 0 || pick == u8::MAX => (ConnId(u64::MAX - u64::from(pick)), None),
            n => {
                let (conn, rids) = &self.conns[usize::from(pick) % n];
                let rid = match rids.len() {
                    0 => None,
                    m => Some(rids[usize::from(pick) / n % m].clone()),
                };
                (*conn, rid)
            }
        }
    }

    fn report(&mut self, op: u8, pick: u8, bytes: &[u8]) {
        let now = self.now;
        let status = STATUSES[usize::from((op >> 3) & 7)];
        let zip = op & 0x40 != 0;
        match op & 7 {
            0..=2 => {
                let (id, rid) = self.http_pick(pick);
                let body = with_rid(bytes, rid.as_deref());
                let body = if zip { gzip(&body) } else { body };
                let reply = Ok(HttpResponse { status, body });
                self.client.handle_http_reply(now, id, reply);
            }
            3 => {
                let (id, _) = self.http_pick(pick);
                let err = TransportError::new(String::from_utf8_lossy(bytes));
                self.client.handle_http_reply(now, id, Err(err));
            }
            4 => {
                let (conn, _) = self.conn_pick(pick);
                self.client.handle_ws_open(now, conn);
            }
            5 | 6 => {
                let (conn, rid) = self.conn_pick(pick);
                let bytes = with_rid(bytes, rid.as_deref());
                let msg = if op & 7 == 5 {
                    WsMessage::Text(String::from_utf8_lossy(&bytes).into_owned())
                } else {
                    WsMessage::Binary(bytes)
                };
                self.client.handle_ws_message(now, conn, msg);
            }
            _ => {
                let (conn, _) = self.conn_pick(pick);
                self.client.handle_ws_closed(now, conn);
            }
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let grape = if setup & 1 == 1 {
        "ws://127.0.0.1:30001"
    } else {
        "http://127.0.0.1:30001"
    };
    let mut config = ClientConfig::new(grape);
    if setup & 2 == 2 {
        config.rpc.transport = RpcTransport::Ws;
    }
    config.rpc.compress = setup & 4 == 4;
    let Ok(client) = Client::new(config, [11; 32]) else {
        return;
    };
    let now = epoch();
    let mut h = Harness {
        client,
        now,
        http: Vec::new(),
        conns: Vec::new(),
        commands: Vec::new(),
        ended: BTreeMap::new(),
        sub: SubscriptionId(0),
        unsubscribed: false,
    };

    let opts = RequestOptions::default()
        .attempts(2)
        .timeout(Duration::from_secs(5));
    let payload = json!({"action": "ping", "n": 1.5});
    let c = &mut h.client;
    let put = Put::immutable("hello").expect("a short value");
    let commands = [
        c.lookup(now, "svc"),
        c.request(now, "svc", &payload, &opts),
        c.map(now, "svc", &payload, &opts.clone().limit(2)),
        c.announce(now, "svc", 1337),
        c.unannounce(now, "svc", 1338),
        c.put(now, put.clone()),
        c.get(now, put.target(), None),
        c.get(now, Target([7; 20]), Some("salt")),
    ];
    h.commands = commands
        .into_iter()
        .map(|r| r.expect("command accepted"))
        .collect();
    h.sub = h.client.subscribe(now, "chan").expect("subscribed");
    h.drain();

    while let [op, pick, wait, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = if tail.len() - n < 4 {
            (tail, &[][..])
        } else {
            tail.split_at(n)
        };
        rest = next;
        h.report(*op, *pick, bytes);
        let until = h.now + Duration::from_millis(10 * u64::from(*wait));
        h.run_until(until);
        h.now = h.now.max(until);
    }

    let end = h.now + AFTER;
    h.run_until(end);
    for id in &h.commands {
        assert_eq!(h.ended.get(id), Some(&1), "command {id} did not end once");
    }

    h.unsubscribed = true;
    assert!(h.client.unsubscribe(h.sub));
    h.drain();
    let end = h.now + IDLE;
    h.run_until(end);
    assert_eq!(
        h.client.poll_timeout(),
        None,
        "timers left with nothing pending"
    );
});
