//! The Link's watches: who follows which name, what the Grape last said about it, and
//! what is still to be reported. [`Link`](super::Link) does the talking (HTTP long polls
//! or WebSocket pushes); this module keeps the books, so each rule lives in one place.
//!
//! # Why a queue of its own
//! A watch is not a command: it has no one terminal event, and only its latest set
//! matters. Its reports therefore do not go through `poll_event` (where they would count
//! against `max_pending` and pile up behind each other while nobody polls) but through
//! `poll_watch`, which holds at most one report per watch: a set not yet polled is
//! replaced by the next one, and an end replaces any set.
//!
//! # Sharing
//! Several watches of one name share one Grape watch (one long poll, or one WebSocket
//! `watch`); the Grape watch ends with the last of them.
//!
//! # Idle names
//! A long poll cannot be called back: after the last watch of a name ends, its poll
//! holds a connection to the Grape until the Grape answers or the poll times out. The
//! name stays, idle, until then: it still counts against `max_watches` (so the
//! connections held stay bounded), a new watch of it takes the poll over, and its end
//! drops the name instead of polling again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use serde_json::Value;

use crate::peer::error::{CommandError, LinkError};
use crate::peer::types::{HttpId, PeerAddr, WatchId};

/// What a watch reports, from [`Link::poll_watch`](super::Link::poll_watch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The watch.
    pub watch: WatchId,
    /// The name it follows.
    pub name: String,
    /// The peers serving the name now (sorted; empty when nobody does), or why the watch
    /// ended: the Grape refused it (`ERR_GRAPE_WATCH_LIMIT`, or a Grape that does not
    /// speak watch). An `Err` is the watch's last event.
    pub peers: Result<Vec<PeerAddr>, LinkError>,
}

/// How the Grape is being asked about one name now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Poll {
    /// An HTTP long poll in flight, given up at `deadline`.
    Http { http: HttpId, deadline: Instant },
    /// `[rid, "watch", name]` sent (or queued) on the Grape WebSocket.
    Ws { rid: String },
    /// Nothing in flight: ask (again) at `at`.
    Retry { at: Instant },
}

/// One watched name.
#[derive(Debug)]
struct Watched {
    handles: BTreeSet<WatchId>,
    /// The set as the Grape last answered it; `None` while unknown (before the first
    /// answer, and after a failed poll until the next answer).
    fresh: Option<Vec<PeerAddr>>,
    /// The set last reported, so that only changes are.
    reported: Option<Vec<PeerAddr>>,
    /// The index of the last HTTP answer (0: answer at once).
    index: u64,
    poll: Poll,
}

/// What [`Watches::remove`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// No such watch.
    Unknown,
    /// Others still watch the name.
    Shared,
    /// It was the last watch of `name`; `poll` was its Grape watch.
    Last { name: String, poll: Poll },
}

/// Every watch of a Link.
#[derive(Debug)]
pub(crate) struct Watches {
    names: BTreeMap<String, Watched>,
    handles: BTreeMap<WatchId, String>,
    by_http: BTreeMap<HttpId, String>,
    by_rid: BTreeMap<String, String>,
    timers: BTreeSet<(Instant, String)>,
    /// At most one report per watch, in the order they were first queued.
    pending: BTreeMap<WatchId, WatchEvent>,
    order: VecDeque<WatchId>,
    max_names: usize,
    max_handles: usize,
}

impl Watches {
    pub(crate) fn new(max_names: usize, max_handles: usize) -> Self {
        Watches {
            names: BTreeMap::new(),
            handles: BTreeMap::new(),
            by_http: BTreeMap::new(),
            by_rid: BTreeMap::new(),
            timers: BTreeSet::new(),
            pending: BTreeMap::new(),
            order: VecDeque::new(),
            max_names,
            max_handles,
        }
    }

    /// Adds watch `id` of `name`; `true` when the name is new (the caller then starts its
    /// Grape watch with [`set_poll`](Self::set_poll)). A name already known reports its
    /// set to the new watch at once.
    pub(crate) fn add(
        &mut self,
        now: Instant,
        name: &str,
        id: WatchId,
    ) -> Result<bool, CommandError> {
        let new = !self.names.contains_key(name);
        if self.handles.len() >= self.max_handles || (new && self.names.len() >= self.max_names) {
            return Err(CommandError::TooManyWatches);
        }
        self.handles.insert(id, name.to_owned());
        let watched = self
            .names
            .entry(name.to_owned())
            .or_insert_with(|| Watched {
                handles: BTreeSet::new(),
                fresh: None,
                reported: None,
                index: 0,
                poll: Poll::Retry { at: now },
            });
        watched.handles.insert(id);
        if let Some(set) = watched.fresh.clone() {
            self.report(id, name, Ok(set));
        }
        Ok(new)
    }

    /// Ends watch `id`.
    pub(crate) fn remove(&mut self, id: WatchId) -> Removal {
        let Some(name) = self.handles.remove(&id) else {
            return Removal::Unknown;
        };
        self.pending.remove(&id);
        let Some(watched) = self.names.get_mut(&name) else {
            return Removal::Shared;
        };
        watched.handles.remove(&id);
        if !watched.handles.is_empty() {
            return Removal::Shared;
        }
        let poll = watched.poll.clone();
        if !matches!(poll, Poll::Http { .. }) {
            self.forget(&name);
        }
        Removal::Last { name, poll }
    }

    /// Whether the Grape watch of `name` goes on after its poll ended; an idle name (no
    /// watch left) is dropped instead.
    pub(crate) fn keep_polling(&mut self, name: &str) -> bool {
        match self.names.get(name) {
            Some(watched) if !watched.handles.is_empty() => true,
            Some(_) => {
                self.forget(name);
                false
            }
            None => false,
        }
    }

    /// Whether `name` is watched.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.names.get(name).is_some_and(|w| !w.handles.is_empty())
    }

    /// The watched set of `name`, while it is watched and the Grape's last answer is
    /// current.
    pub(crate) fn current(&self, name: &str) -> Option<&[PeerAddr]> {
        let watched = self.names.get(name).filter(|w| !w.handles.is_empty())?;
        watched.fresh.as_deref()
    }

    /// The index to send in the next HTTP poll of `name`.
    pub(crate) fn index(&self, name: &str) -> u64 {
        self.names.get(name).map_or(0, |w| w.index)
    }

    /// When the long poll of `name` in flight gives up, if one is.
    pub(crate) fn poll_deadline(&self, name: &str) -> Option<Instant> {
        match self.names.get(name)?.poll {
            Poll::Http { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// The name whose long poll is `http`.
    pub(crate) fn name_of_http(&self, http: HttpId) -> Option<String> {
        self.by_http.get(&http).cloned()
    }

    /// The name whose WebSocket watch is `rid`.
    pub(crate) fn name_of_rid(&self, rid: &str) -> Option<String> {
        self.by_rid.get(rid).cloned()
    }

    /// Names whose Grape watch is on the WebSocket.
    pub(crate) fn on_ws(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, w)| matches!(w.poll, Poll::Ws { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Records how `name` is asked now, replacing what was in flight.
    pub(crate) fn set_poll(&mut self, name: &str, poll: Poll) {
        let Some(watched) = self.names.get_mut(name) else {
            return;
        };
        let old = std::mem::replace(&mut watched.poll, poll.clone());
        unregister(
            &mut self.by_http,
            &mut self.by_rid,
            &mut self.timers,
            name,
            &old,
        );
        match poll {
            Poll::Http { http, deadline } => {
                self.by_http.insert(http, name.to_owned());
                self.timers.insert((deadline, name.to_owned()));
            }
            Poll::Ws { rid } => {
                self.by_rid.insert(rid, name.to_owned());
            }
            Poll::Retry { at } => {
                self.timers.insert((at, name.to_owned()));
            }
        }
    }

    /// The Grape answered `name` with `peers` (and, over HTTP, `index`); reports it to
    /// every watch of the name if it differs from the last report.
    pub(crate) fn answered(&mut self, name: &str, mut peers: Vec<PeerAddr>, index: Option<u64>) {
        let Some(watched) = self.names.get_mut(name) else {
            return;
        };
        peers.sort();
        if let Some(index) = index {
            watched.index = index;
        }
        watched.fresh = Some(peers.clone());
        if watched.reported.as_ref() == Some(&peers) {
            return;
        }
        watched.reported = Some(peers.clone());
        let handles: Vec<WatchId> = watched.handles.iter().copied().collect();
        for id in handles {
            self.report(id, name, Ok(peers.clone()));
        }
    }

    /// A poll of `name` failed: the set is unknown until the next answer, which starts
    /// from index 0 (the Grape may have restarted), at `retry_at`.
    pub(crate) fn failed(&mut self, name: &str, retry_at: Instant) {
        if !self.keep_polling(name) {
            return;
        }
        let Some(watched) = self.names.get_mut(name) else {
            return;
        };
        watched.fresh = None;
        watched.index = 0;
        self.set_poll(name, Poll::Retry { at: retry_at });
    }

    /// The Grape refused to watch `name`: every watch of it ends with `error`.
    pub(crate) fn refused(&mut self, name: &str, error: &LinkError) {
        let Some(watched) = self.names.get(name) else {
            return;
        };
        let handles: Vec<WatchId> = watched.handles.iter().copied().collect();
        for id in handles {
            self.handles.remove(&id);
            self.report(id, name, Err(error.clone()));
        }
        self.forget(name);
    }

    /// Names whose timer is due, each with whether it was a poll in flight (now timed
    /// out) rather than a retry.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(String, bool)> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((_, name)) = self.timers.pop_first() else {
                break;
            };
            let in_flight = self
                .names
                .get(&name)
                .is_some_and(|w| matches!(w.poll, Poll::Http { .. }));
            due.push((name, in_flight));
        }
        due
    }

    /// When [`due`](Self::due) next has something.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The next report.
    pub(crate) fn poll_event(&mut self) -> Option<WatchEvent> {
        while let Some(watch) = self.order.pop_front() {
            if let Some(event) = self.pending.remove(&watch) {
                return Some(event);
            }
        }
        None
    }

    fn report(&mut self, watch: WatchId, name: &str, peers: Result<Vec<PeerAddr>, LinkError>) {
        let event = WatchEvent {
            watch,
            name: name.to_owned(),
            peers,
        };
        if self.pending.insert(watch, event).is_none() {
            self.order.push_back(watch);
        }
    }

    fn forget(&mut self, name: &str) {
        if let Some(watched) = self.names.remove(name) {
            unregister(
                &mut self.by_http,
                &mut self.by_rid,
                &mut self.timers,
                name,
                &watched.poll,
            );
        }
    }
}

fn unregister(
    by_http: &mut BTreeMap<HttpId, String>,
    by_rid: &mut BTreeMap<String, String>,
    timers: &mut BTreeSet<(Instant, String)>,
    name: &str,
    poll: &Poll,
) {
    match poll {
        Poll::Http { http, deadline } => {
            by_http.remove(http);
            timers.remove(&(*deadline, name.to_owned()));
        }
        Poll::Ws { rid } => {
            by_rid.remove(rid);
        }
        Poll::Retry { at } => {
            timers.remove(&(*at, name.to_owned()));
        }
    }
}

/// Whether a failed watch poll is the Grape saying no (it will say it again: end the
/// watch) rather than a passing failure (retry). A Grape that does not speak watch (a Node
/// Grape) answers `ERR_REQ_NOTFOUND` over WebSocket and 500 `ERR_GRAPE_PAYLOAD_INVALID`
/// over HTTP; ours refuses with 429 `ERR_GRAPE_WATCH_LIMIT` or 400 for a bad argument.
pub(crate) fn is_refusal(error: &LinkError) -> bool {
    match error {
        LinkError::Grape(_) => true,
        LinkError::Http { status, .. } => (400..=500).contains(status),
        _ => false,
    }
}

/// Reads an HTTP watch answer, `{"index": M, "peers": [...]}`.
pub(crate) fn read_http_answer(
    value: Value,
    max_peers: usize,
) -> Result<(u64, Vec<PeerAddr>), LinkError> {
    let bad = LinkError::BadReply("watch reply is not {index, peers}");
    match value {
        Value::String(s) if s.starts_with("ERR_") => Err(LinkError::Grape(s)),
        Value::Object(mut obj) => {
            let index = obj
                .get("index")
                .and_then(Value::as_u64)
                .ok_or(bad.clone())?;
            let Some(Value::Array(items)) = obj.remove("peers") else {
                return Err(bad);
            };
            Ok((index, read_peers(items, max_peers)))
        }
        _ => Err(bad),
    }
}

/// The readable, distinct peers of a Grape's list, in its order, at most `max`.
pub(crate) fn read_peers(items: Vec<Value>, max: usize) -> Vec<PeerAddr> {
    let mut seen = BTreeSet::new();
    let mut peers = Vec::new();
    for item in items {
        let Some(addr) = item.as_str().and_then(PeerAddr::parse) else {
            tracing::debug!(?item, "skipping unreadable peer in a grape reply");
            continue;
        };
        if seen.insert(addr.clone()) {
            peers.push(addr);
        }
        if peers.len() >= max {
            break;
        }
    }
    peers
}

/// `s` escaped for a URL query value: everything but RFC 3986's unreserved characters
/// becomes `%XX`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::link::tests::addrs;

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            query_escape("rest:net util/ü"),
            "rest%3Anet%20util%2F%C3%BC"
        );
        assert_eq!(query_escape("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn http_answers_are_read() {
        let ok = read_http_answer(
            serde_json::json!({"index": 7, "peers": ["h:1", "h:1", "bad", "h:2"]}),
            10,
        );
        assert_eq!(ok, Ok((7, addrs(&["h:1", "h:2"]))));
        assert_eq!(
            read_http_answer(Value::from("ERR_GRAPE_WATCH_LIMIT"), 10),
            Err(LinkError::Grape("ERR_GRAPE_WATCH_LIMIT".into()))
        );
        assert!(matches!(
            read_http_answer(serde_json::json!({"peers": []}), 10),
            Err(LinkError::BadReply(_))
        ));
    }

    #[test]
    fn an_unpolled_set_is_replaced_and_an_end_replaces_it() {
        let t0 = Instant::now();
        let mut w = Watches::new(4, 4);
        let id = WatchId(1);
        assert_eq!(w.add(t0, "svc", id), Ok(true));

        w.answered("svc", addrs(&["h:1"]), Some(1));
        w.answered("svc", addrs(&["h:2"]), Some(2));
        let second = w.poll_event();
        w.answered("svc", addrs(&["h:3"]), Some(3));
        w.refused("svc", &LinkError::Grape("ERR_X".into()));
        let last = w.poll_event();

        assert_eq!(second.map(|e| e.peers), Some(Ok(addrs(&["h:2"]))));
        assert_eq!(
            last.map(|e| e.peers),
            Some(Err(LinkError::Grape("ERR_X".into())))
        );
        assert_eq!(w.poll_event(), None);
        assert!(!w.contains("svc"));
    }

    #[test]
    fn refusals_and_passing_failures() {
        assert!(is_refusal(&LinkError::Grape("ERR_REQ_NOTFOUND".into())));
        for status in [400, 429, 500] {
            let e = LinkError::Http {
                status,
                message: "x".into(),
            };
            assert!(is_refusal(&e), "{status}");
        }
        for e in [
            LinkError::Timeout,
            LinkError::TransportClose,
            LinkError::Http {
                status: 503,
                message: "ERR_GRAPE_BUSY".into(),
            },
        ] {
            assert!(!is_refusal(&e), "{e:?}");
        }
    }
}
