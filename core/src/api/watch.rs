//! Watches: clients that follow a name's peer set instead of polling it.
//!
//! - HTTP `GET /watch?name=NAME&index=N&wait=30s` (Consul's blocking query): answers
//!   `{"index": M, "peers": [...]}` once the set's index differs from `N`, or when the wait
//!   ends. Index 0 answers as soon as the set is known.
//! - WebSocket `[rid, "watch", name]`: answers the current set, then pushes `[rid, null,
//!   peers]` on every change until `[rid, "unwatch", name]` or the connection closes.
//!
//! Each watched name has its own index, so churn of other names wakes nobody. Indexes come
//! from one counter per Grape and never repeat, so an index from before a name was dropped
//! (or from another Grape) just answers at once. The set is learnt from the node
//! ([`Node::watch`]): a lookup that subscribes with the storing nodes, renewed every
//! [`RENEW`], and a shared lookup each time a change is reported (docs/design.md, "Watch").

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use super::error::ApiError;
use super::reply::{http_reply, peers_json, ws_reply};
use super::{Reply, RequestId, WsConn};
use crate::dht::event::{Outcome, QueryError, QueryId};
use crate::dht::id::Key;
use crate::dht::node::{Node, WATCH_TTL};

/// Wait of an HTTP watch without `wait=`, as Consul.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Longest wait of an HTTP watch; longer ones are cut to it, as Consul does.
pub const MAX_WATCH_WAIT: Duration = Duration::from_secs(600);
/// How often a watched name is looked up again and its subscriptions renewed: half their
/// lifetime, so one lost renewal does not drop them. A name nobody watches any more is
/// dropped at its next renewal, so clients re-polling between answers keep it warm.
pub const RENEW: Duration = Duration::from_secs(WATCH_TTL.as_secs() / 2);

/// What an HTTP `/watch` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpWatch {
    pub(crate) name: Key,
    pub(crate) index: u64,
    pub(crate) wait: Duration,
}

/// Reads the query string of `/watch?name=NAME&index=N&wait=30s`.
pub(crate) fn parse_http_watch(path: &str) -> Result<HttpWatch, ApiError> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let (mut name, mut index, mut wait) = (None, 0, DEFAULT_WAIT);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "name" => name = Key::new(&v),
            "index" => {
                index = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(ApiError::WatchIndex)?;
            }
            "wait" => {
                wait = std::str::from_utf8(&v)
                    .ok()
                    .and_then(parse_duration)
                    .ok_or(ApiError::WatchWait)?
                    .min(MAX_WATCH_WAIT);
            }
            _ => {}
        }
    }
    Ok(HttpWatch {
        name: name.ok_or(ApiError::Lookup)?,
        index,
        wait,
    })
}

/// Decodes `%XX` escapes and `+` (a space), as a form-encoded query string.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Parses a duration in Consul's (Go's) syntax: `250ms`, `30s`, `5m`, `1m30s`, `1.5h`; a
/// unit on every number, except for a bare `0`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    // Anything past the cap is cut to it by the caller; keep the conversion in range.
    Duration::try_from_secs_f64(total.min(1e9)).ok()
}

/// Who waits on a name.
#[derive(Debug)]
enum Watcher {
    /// An HTTP `/watch` waiting for the index to differ from `index`, until `deadline`.
    Poll { index: u64, deadline: Instant },
    /// A WebSocket `watch` on `conn`: every change is pushed to `rid`.
    Ws { conn: WsConn, rid: String },
}

/// One watched name.
#[derive(Debug)]
struct Watched {
    /// Changes with the set; 0 until the first lookup ended.
    index: u64,
    peers: Vec<SocketAddr>,
    watchers: BTreeMap<RequestId, Watcher>,
    /// The lookup that refreshes the set now, and whether a change was reported since it
    /// started (it may have missed it: then one more runs).
    refresh: Option<QueryId>,
    again: bool,
    renew_at: Instant,
}

/// Every watched name, its watchers and timers.
#[derive(Debug)]
pub(crate) struct Watches {
    names: BTreeMap<Key, Watched>,
    by_req: BTreeMap<RequestId, Key>,
    queries: BTreeMap<QueryId, Key>,
    renewals: BTreeSet<(Instant, Key)>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    /// The WebSocket watches of each connection, so closing one costs only its own.
    per_conn: BTreeMap<WsConn, BTreeSet<RequestId>>,
    last_index: u64,
    max_watches: usize,
    max_per_conn: usize,
    max_results: usize,
}

/// A new watch: how it answers and who it is.
pub(crate) enum NewWatch {
    Http(HttpWatch),
    Ws {
        conn: WsConn,
        rid: String,
        name: Key,
    },
}

impl Watches {
    pub(crate) fn new(max_watches: usize, max_per_conn: usize, max_results: usize) -> Self {
        Watches {
            names: BTreeMap::new(),
            by_req: BTreeMap::new(),
            queries: BTreeMap::new(),
            renewals: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            per_conn: BTreeMap::new(),
            last_index: 0,
            max_watches,
            max_per_conn,
            max_results,
        }
    }

    /// Watches waiting now (HTTP and WebSocket), and names followed.
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.by_req.len(), self.names.len())
    }

    /// Each watched name with its number of watchers, in name order (the dashboard).
    pub(crate) fn watchers(&self) -> impl Iterator<Item = (&Key, usize)> + '_ {
        self.names.iter().map(|(name, w)| (name, w.watchers.len()))
    }

    /// When [`Watches::handle_timeout`] is next due.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let a = self.deadlines.first().map(|(t, _)| *t);
        let b = self.renewals.first().map(|(t, _)| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts a watch; its first answer may be in `out` already.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        node: &mut Node,
        req: RequestId,
        watch: NewWatch,
        out: &mut Vec<Reply>,
    ) -> Result<(), ApiError> {
        let name = match &watch {
            NewWatch::Http(w) => &w.name,
            NewWatch::Ws { name, .. } => name,
        };
        // Names nobody watches linger until their next renewal: they count too.
        let new_name = !self.names.contains_key(name);
        if self.by_req.len() >= self.max_watches
            || (new_name && self.names.len() >= self.max_watches)
            || self.by_req.contains_key(&req)
        {
            return Err(ApiError::WatchLimit);
        }
        let (name, watcher) = match watch {
            NewWatch::Http(w) => {
                let deadline = now + w.wait;
                self.deadlines.insert((deadline, req));
                let watcher = Watcher::Poll {
                    index: w.index,
                    deadline,
                };
                (w.name, watcher)
            }
            NewWatch::Ws { conn, rid, name } => {
                let mine = self.per_conn.entry(conn).or_default();
                if mine.len() >= self.max_per_conn {
                    return Err(ApiError::WatchLimit);
                }
                mine.insert(req);
                (name, Watcher::Ws { conn, rid })
            }
        };
        if !self.names.contains_key(&name) {
            let query = node.watch(now, name.clone());
            self.queries.insert(query, name.clone());
            let renew_at = now + RENEW;
            self.renewals.insert((renew_at, name.clone()));
            self.names.insert(
                name.clone(),
                Watched {
                    index: 0,
                    peers: Vec::new(),
                    watchers: BTreeMap::new(),
                    refresh: Some(query),
                    again: false,
                    renew_at,
                },
            );
        }
        self.by_req.insert(req, name.clone());
        if let Some(w) = self.names.get_mut(&name) {
            w.watchers.insert(req, watcher);
        }
        self.wake(&name, Some(req), out);
        Ok(())
    }

    /// Ends the WebSocket watches of `name` on `conn`; returns the requests ended.
    pub(crate) fn unwatch(&mut self, conn: WsConn, name: &Key) -> Vec<RequestId> {
        let ended: Vec<RequestId> = self.per_conn.get(&conn).map_or_else(Vec::new, |reqs| {
            reqs.iter()
                .filter(|r| self.by_req.get(r) == Some(name))
                .copied()
                .collect()
        });
        for req in &ended {
            self.remove(*req);
        }
        ended
    }

    /// Ends every watch of a closed WebSocket connection; returns the requests ended.
    pub(crate) fn close(&mut self, conn: WsConn) -> Vec<RequestId> {
        let ended: Vec<RequestId> = self
            .per_conn
            .get(&conn)
            .map_or_else(Vec::new, |reqs| reqs.iter().copied().collect());
        for req in &ended {
            self.remove(*req);
        }
        ended
    }

    /// The node reports a change of `name`: refresh it with one shared lookup.
    pub(crate) fn on_changed(&mut self, now: Instant, node: &mut Node, name: &Key) {
        let Some(w) = self.names.get_mut(name) else {
            return;
        };
        if w.refresh.is_some() {
            w.again = true;
            return;
        }
        let query = node.get_peers(now, name.clone());
        w.refresh = Some(query);
        self.queries.insert(query, name.clone());
    }

    /// A lookup ended; returns `false` when it was not one of ours.
    pub(crate) fn on_finished(
        &mut self,
        now: Instant,
        node: &mut Node,
        query: QueryId,
        result: &Result<Outcome, QueryError>,
        out: &mut Vec<Reply>,
    ) -> bool {
        let Some(name) = self.queries.remove(&query) else {
            return false;
        };
        let max = self.max_results;
        let Some(w) = self.names.get_mut(&name) else {
            return true;
        };
        if w.refresh == Some(query) {
            w.refresh = None;
        }
        // A failed lookup tells nothing new: keep the set until one succeeds.
        if let Ok(Outcome::Peers { peers }) = result {
            let peers = watched_set(peers, max);
            if w.index == 0 || peers != w.peers {
                self.last_index += 1;
                w.index = self.last_index;
                w.peers = peers;
                self.wake(&name, None, out);
            }
        }
        if let Some(w) = self.names.get_mut(&name)
            && w.again
            && w.refresh.is_none()
        {
            w.again = false;
            self.on_changed(now, node, &name);
        }
        true
    }

    /// Answers HTTP watches past their wait, renews names due and drops names nobody
    /// watches any more.
    pub(crate) fn handle_timeout(&mut self, now: Instant, node: &mut Node, out: &mut Vec<Reply>) {
        while let Some(&(at, req)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(name) = self.by_req.get(&req).cloned()
                && let Some(w) = self.names.get(&name)
            {
                out.push(http_reply(req, Ok(http_body(w.index, &w.peers))));
                self.remove(req);
            }
        }
        while let Some((at, name)) = self.renewals.first().cloned() {
            if at > now {
                break;
            }
            self.renewals.pop_first();
            let Some(w) = self.names.get_mut(&name) else {
                continue;
            };
            if w.watchers.is_empty() {
                self.names.remove(&name);
                node.unwatch(&name);
                continue;
            }
            // A renewal is a lookup too: it catches changes on nodes that never notify.
            let query = node.watch(now, name.clone());
            if let Some(old) = w.refresh.replace(query) {
                self.queries.remove(&old);
            }
            w.again = false;
            w.renew_at = now + RENEW;
            self.renewals.insert((w.renew_at, name.clone()));
            self.queries.insert(query, name);
        }
    }

    /// Answers the watchers of `name` that are due (only `only` when given): WebSocket
    /// watchers whenever the set is known, HTTP ones once its index differs from theirs.
    fn wake(&mut self, name: &Key, only: Option<RequestId>, out: &mut Vec<Reply>) {
        let Some(w) = self.names.get(name) else {
            return;
        };
        if w.index == 0 {
            return;
        }
        let mut done = Vec::new();
        for (req, watcher) in &w.watchers {
            if only.is_some_and(|o| o != *req) {
                continue;
            }
            match watcher {
                Watcher::Ws { rid, .. } => {
                    let mut reply = ws_reply(*req, rid, Ok(peers_json(&w.peers)));
                    reply.more = true;
                    out.push(reply);
                }
                Watcher::Poll { index, .. } if *index != w.index => {
                    out.push(http_reply(*req, Ok(http_body(w.index, &w.peers))));
                    done.push(*req);
                }
                Watcher::Poll { .. } => {}
            }
        }
        for req in done {
            self.remove(req);
        }
    }

    /// Forgets one watch (its name stays until its next renewal).
    fn remove(&mut self, req: RequestId) {
        let Some(name) = self.by_req.remove(&req) else {
            return;
        };
        let Some(watcher) = self
            .names
            .get_mut(&name)
            .and_then(|w| w.watchers.remove(&req))
        else {
            return;
        };
        match watcher {
            Watcher::Poll { deadline, .. } => {
                self.deadlines.remove(&(deadline, req));
            }
            Watcher::Ws { conn, .. } => {
                if let Some(reqs) = self.per_conn.get_mut(&conn) {
                    reqs.remove(&req);
                    if reqs.is_empty() {
                        self.per_conn.remove(&conn);
                    }
                }
            }
        }
    }
}

/// The set a watch reports: distinct, sorted, without port 0, the first `max`. No random
/// sample as lookups take, so an unchanged set always compares equal.
fn watched_set(peers: &[SocketAddr], max: usize) -> Vec<SocketAddr> {
    let set: BTreeSet<SocketAddr> = peers.iter().copied().filter(|p| p.port() != 0).collect();
    set.into_iter().take(max).collect()
}

/// `{"index": M, "peers": [...]}`.
fn http_body(index: u64, peers: &[SocketAddr]) -> Vec<u8> {
    let mut body = format!("{{\"index\":{index},\"peers\":").into_bytes();
    body.extend_from_slice(&peers_json(peers));
    body.push(b'}');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_consul_syntax() {
        let d = |s| parse_duration(s);

        assert_eq!(d("30s"), Some(Duration::from_secs(30)));
        assert_eq!(d("5m"), Some(Duration::from_secs(300)));
        assert_eq!(d("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in ["", "30", "s", "5x", "-1s", "1m30", "1..5s"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn watch_query_strings() {
        let w = parse_http_watch("/watch?name=rest%3Anet+util&index=7&wait=1m30s");

        assert_eq!(
            w,
            Ok(HttpWatch {
                name: Key::new(b"rest:net util").expect("key"),
                index: 7,
                wait: Duration::from_secs(90),
            })
        );
        let defaults = parse_http_watch("/watch?name=svc").expect("valid");
        assert_eq!((defaults.index, defaults.wait), (0, DEFAULT_WAIT));
        let capped = parse_http_watch("/watch?name=svc&wait=1h").expect("valid");
        assert_eq!(capped.wait, MAX_WATCH_WAIT);
        assert_eq!(parse_http_watch("/watch"), Err(ApiError::Lookup));
        assert_eq!(parse_http_watch("/watch?name="), Err(ApiError::Lookup));
        assert_eq!(
            parse_http_watch("/watch?name=svc&index=-1"),
            Err(ApiError::WatchIndex)
        );
        assert_eq!(
            parse_http_watch("/watch?name=svc&wait=soon"),
            Err(ApiError::WatchWait)
        );
    }
}
