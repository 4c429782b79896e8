//! Ids, addresses and I/O values shared by the peer state machines and their adapters.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;

use crate::peer::sniff::Protocol;

/// Longest `host:port` accepted from a lookup reply (a DNS name is at most 253 bytes).
pub const MAX_ADDR_LEN: usize = 260;

/// Names one command (lookup, announce, put, get, request, map) until its one terminal event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// Names one HTTP exchange the adapter performs; it hands the id back with the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpId(pub u64);

/// Names one WebSocket or TCP connection the adapter opens; every report about it carries
/// the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Names one subscription until `unsubscribe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(pub u64);

/// Names one watch of a service (from `watch` until `unwatch` or its end); unlike a
/// [`CommandId`] it gets many events, one per peer set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub u64);

macro_rules! display_id {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}
display_id!(CommandId, HttpId, ConnId, SubscriptionId, WatchId);

/// One counter for every id kind, so ids never repeat within a state machine and its parts.
#[derive(Debug, Default)]
pub(crate) struct Ids(u64);

impl Ids {
    /// The next fresh number (ids start at 1, so 0 never names anything).
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        self.0
    }
}

/// A peer as the Grape lists it: `host:port`, where host is an IPv4 address or a name.
///
/// Kept as the Grape's string (not a `SocketAddr`) because a host may be a DNS name and
/// the adapter, not the core, resolves names. Shared (`Arc`), since every request copies
/// its peers out of the lookup cache and into its attempt: a clone is a count, not a string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr(Arc<str>);

impl PeerAddr {
    /// Checks `host:port`: a non-empty host without whitespace, `/`, `@`, `?` or `#`
    /// (it goes into a URL), and a port 1..=65535. IPv6 hosts must be in brackets.
    pub fn parse(s: &str) -> Option<PeerAddr> {
        if s.len() > MAX_ADDR_LEN {
            return None;
        }
        let (host, port) = s.rsplit_once(':')?;
        let port_ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        let host_ok = !host.is_empty()
            && !host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/@?#".contains(c))
            && (host.starts_with('[') == host.ends_with(']'))
            && (host.starts_with('[') || !host.contains(':'));
        (port_ok && host_ok).then(|| PeerAddr(Arc::from(s)))
    }

    /// The `host:port` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL a peer-RPC HTTP request is POSTed to: `http://host:port/`.
    pub fn http_url(&self) -> String {
        self.http_url_as(false)
    }

    /// The URL of a peer's WebSocket (RPC and PUB/SUB): `ws://host:port/ws`.
    pub fn ws_url(&self) -> String {
        self.ws_url_as(false)
    }

    /// [`http_url`](Self::http_url), or `https://host:port/` when `secure`: the Grape
    /// carries only host:port, so whether to speak TLS is the client's setting.
    pub fn http_url_as(&self, secure: bool) -> String {
        let scheme = if secure { "https" } else { "http" };
        format!("{scheme}://{}/", self.0)
    }

    /// [`ws_url`](Self::ws_url), or `wss://host:port/ws` when `secure`.
    pub fn ws_url_as(&self, secure: bool) -> String {
        let scheme = if secure { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.0)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One WebSocket message, text or binary, as the adapter received it or must send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsMessage {
    /// A text frame (every frame Grenache's RPC sends).
    Text(String),
    /// A binary frame (a publisher may send Buffers).
    Binary(Vec<u8>),
}

impl WsMessage {
    /// The payload bytes, whatever the frame type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WsMessage::Text(s) => s.as_bytes(),
            WsMessage::Binary(b) => b,
        }
    }
}

/// An HTTP response as the adapter read it (body whole, at most the configured limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body bytes, still compressed if the peer compressed them.
    pub body: Vec<u8>,
}

/// The HTTP method of an [`HttpRequest`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpMethod {
    /// Every command and peer request (with a body).
    #[default]
    Post,
    /// A Grape `/watch` long poll (no body; the query string says it all).
    Get,
}

/// An HTTP request for the adapter to perform (a POST, but for a Grape watch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Hand back with the reply.
    pub id: HttpId,
    /// POST, or GET for a watch.
    pub method: HttpMethod,
    /// Absolute URL (`http://host:port/path`).
    pub url: String,
    /// Headers to set, besides those the HTTP client sets itself.
    pub headers: Vec<(&'static str, &'static str)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// When the core gives up on it; the adapter may abort the exchange then (a reply
    /// arriving later is ignored anyway).
    pub deadline: Instant,
}

/// Something for the adapter to do on the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Io {
    /// POST a body; report with `handle_http_reply`.
    Http(HttpRequest),
    /// Open a WebSocket to `url`; report `handle_ws_open`, then each message, then
    /// `handle_ws_closed` (also when the connection could not be made).
    WsConnect {
        /// Names the connection from now on.
        conn: ConnId,
        /// `ws://…` URL.
        url: String,
    },
    /// Send one message on an open connection.
    WsSend {
        /// The connection (open: the core sends only after `handle_ws_open`).
        conn: ConnId,
        /// The message.
        msg: WsMessage,
    },
    /// Close a connection; the core has forgotten it, so no further report is needed.
    WsClose {
        /// The connection.
        conn: ConnId,
    },
    /// Open a TCP connection to `addr` (a ZeroMQ peer); report `handle_tcp_open`, then
    /// every read with `handle_tcp_data`, then `handle_tcp_closed` (also when it could not
    /// be opened). `TcpSend`s for it may come before it is open: write them once it is.
    TcpConnect {
        /// Names the connection from now on.
        conn: ConnId,
        /// `host:port`.
        addr: PeerAddr,
    },
    /// Write bytes on a TCP connection, in order.
    TcpSend {
        /// The connection.
        conn: ConnId,
        /// What to write.
        bytes: Vec<u8>,
    },
    /// Close a TCP connection; the core has forgotten it, so no further report is needed.
    TcpClose {
        /// The connection.
        conn: ConnId,
    },
}

/// Whether a failed request may have reached the server, as the adapter knows it.
///
/// Only [`Delivery::Unsent`] lets the client send the request to another peer by itself:
/// a request that may have arrived could have run, and must not run twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// No byte of the request was written: the connect was refused or failed, or the
    /// connection broke before the request went out.
    Unsent,
    /// Some or all of the request may have been written (or the adapter cannot tell).
    #[default]
    MaybeSent,
    /// The peer answered in another protocol (named): whatever was written reached no
    /// Grenache handler, so the request may go to another peer.
    WrongTransport(Protocol),
}

/// A failure below HTTP or WebSocket: refused, reset, DNS, TLS, body over the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// What the transport said, shown to the user inside the command's error.
    pub message: String,
    /// Whether the request may have reached the server.
    pub delivery: Delivery,
}

impl TransportError {
    /// Wraps a message from the adapter's I/O library, for a request that may have been
    /// sent (the safe default: it is never re-sent).
    pub fn new(message: impl Into<String>) -> Self {
        TransportError {
            message: message.into(),
            delivery: Delivery::MaybeSent,
        }
    }

    /// Wraps a message for a request of which no byte was written (connect refused or
    /// failed, connection broken before writing): the client may try another peer.
    pub fn unsent(message: impl Into<String>) -> Self {
        TransportError {
            message: message.into(),
            delivery: Delivery::Unsent,
        }
    }

    /// The peer answered in another protocol ([`Protocol::sniff`] of what it sent).
    pub fn wrong_transport(met: Protocol) -> Self {
        TransportError {
            message: format!("ERR_WRONG_TRANSPORT: {met}"),
            delivery: Delivery::WrongTransport(met),
        }
    }
}

/// A request id as the Node packages make them: a lower-case UUID v4 string.
pub(crate) fn request_id(rng: &mut impl Rng) -> String {
    Rid::new(rng).as_str().to_owned()
}

/// A request id of ours ([`request_id`]'s text), kept inline: the RPC client files every
/// attempt's rid in several maps, and a `Copy` key costs no allocation or free there. It
/// compares as three big-endian integers read off its text (the text's order, without a
/// `memcmp` call per step of a map search).
#[derive(Clone, Copy)]
pub(crate) struct Rid([u8; RID_LEN]);

/// Characters of a UUID in text form.
const RID_LEN: usize = 36;

impl Rid {
    /// A fresh UUID v4, lower-case.
    pub(crate) fn new(rng: &mut impl Rng) -> Rid {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut b = [0u8; 16];
        rng.fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let mut id = [b'-'; RID_LEN];
        let mut at = 0;
        for (i, byte) in b.iter().enumerate() {
            // Dashes after the 4th, 6th, 8th and 10th byte: 8-4-4-4-12 digits.
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            id[at] = DIGITS[usize::from(byte >> 4)];
            id[at + 1] = DIGITS[usize::from(byte & 0xf)];
            at += 2;
        }
        Rid(id)
    }

    /// The rid a peer's frame names, if it can be one of ours (any other answers nothing
    /// we sent).
    pub(crate) fn parse(rid: &str) -> Option<Rid> {
        <[u8; RID_LEN]>::try_from(rid.as_bytes()).ok().map(Rid)
    }

    /// The text form.
    pub(crate) fn as_str(&self) -> &str {
        // Only ever made from a `str` (or ASCII digits and dashes), so never empty.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text as big-endian integers: they compare as the bytes do.
    fn words(&self) -> (u128, u128, u32) {
        let (head, rest) = self.0.split_at(16);
        let (middle, tail) = rest.split_at(16);
        let word = |b: &[u8]| <[u8; 16]>::try_from(b).map_or(0, u128::from_be_bytes);
        let tail = <[u8; 4]>::try_from(tail).map_or(0, u32::from_be_bytes);
        (word(head), word(middle), tail)
    }
}

impl PartialEq for Rid {
    fn eq(&self, other: &Rid) -> bool {
        self.words() == other.words()
    }
}

impl Eq for Rid {}

impl PartialOrd for Rid {
    fn partial_cmp(&self, other: &Rid) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rid {
    fn cmp(&self, other: &Rid) -> std::cmp::Ordering {
        self.words().cmp(&other.words())
    }
}

impl fmt::Debug for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn request_ids_are_uuid_v4() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);

        let id = request_id(&mut rng);

        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!("89ab".contains(&parts[3][..1]));
        assert_ne!(id, request_id(&mut rng));
        let bytes = crate::dht::id::hex(&{
            let mut b = [0u8; 16];
            ChaCha8Rng::seed_from_u64(1).fill(&mut b);
            b
        });
        assert_eq!(id.replace('-', "")[..12], bytes[..12]);
        assert_eq!(id.replace('-', "")[20..], bytes[20..]);
    }

    #[test]
    fn rids_read_back_only_their_own_length() {
        let rid = Rid::new(&mut ChaCha8Rng::seed_from_u64(3));

        assert_eq!(Rid::parse(rid.as_str()), Some(rid));
        assert_eq!(
            request_id(&mut ChaCha8Rng::seed_from_u64(3)),
            rid.as_str(),
            "a rid is request_id's text"
        );
        assert_eq!(Rid::parse(&rid.as_str()[1..]), None);
        assert_eq!(Rid::parse(&format!("{}0", rid.as_str())), None);
        assert_eq!(Rid::parse(""), None);
        // Any 36 bytes read back (a peer's odd rid then matches no attempt), as they are.
        let upper = rid.as_str().to_uppercase();
        assert_ne!(Rid::parse(&upper), Some(rid));
        assert_eq!(
            Rid::parse(&upper).map(|r| r.as_str().to_owned()),
            Some(upper)
        );
    }

    #[test]
    fn rids_equal_and_order_as_their_text() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let rids: Vec<Rid> = (0..64).map(|_| Rid::new(&mut rng)).collect();

        for a in &rids {
            for b in &rids {
                assert_eq!(a.cmp(b), a.as_str().cmp(b.as_str()));
                assert_eq!(a == b, a.as_str() == b.as_str());
            }
            assert_eq!(
                Rid::parse(a.as_str()).map(|r| r.as_str().to_owned()),
                Some(a.as_str().to_owned())
            );
        }
        // A difference in any of the three words, the last byte of each included.
        let base = "3e4c2c9a-6a0b-4d3c-9a55-08f1b7a3d2e1";
        for at in [0, 15, 16, 31, 32, 35] {
            let mut higher = base.as_bytes().to_vec();
            higher[at] = b'f';
            let higher = String::from_utf8(higher).expect("ASCII");
            let (a, b) = (Rid::parse(base), Rid::parse(&higher));
            assert!(a < b, "at {at}");
            assert_ne!(a, b, "at {at}");
        }
    }

    #[test]
    fn request_ids_repeat_with_the_seed() {
        let a = request_id(&mut ChaCha8Rng::seed_from_u64(7));
        let b = request_id(&mut ChaCha8Rng::seed_from_u64(7));

        assert_eq!(a, b);
    }

    #[test]
    fn peer_addr_parses_host_port_only() {
        assert!(PeerAddr::parse("127.0.0.1:1337").is_some());
        assert!(PeerAddr::parse("svc.local:80").is_some());
        assert!(PeerAddr::parse("[::1]:80").is_some());
        for bad in [
            "", "1337", ":80", "h:", "h:0", "h:65536", "h:+80", "h/x:80", "a b:80", "::1:80",
            "h:8a",
        ] {
            assert!(PeerAddr::parse(bad).is_none(), "{bad}");
        }
        assert!(PeerAddr::parse(&format!("{}:80", "a".repeat(MAX_ADDR_LEN))).is_none());
    }

    #[test]
    fn peer_urls_follow_node() {
        let a = PeerAddr::parse("127.0.0.1:1337").expect("valid");

        assert_eq!(a.http_url(), "http://127.0.0.1:1337/");
        assert_eq!(a.ws_url(), "ws://127.0.0.1:1337/ws");
        assert_eq!(a.http_url_as(true), "https://127.0.0.1:1337/");
        assert_eq!(a.ws_url_as(true), "wss://127.0.0.1:1337/ws");
    }
}
