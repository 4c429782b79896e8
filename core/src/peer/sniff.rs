//! Which protocol a peer speaks, told from what it sent first.
//!
//! A Grenache client dialling a server of another transport used to wait out its whole
//! timeout (grenache#8: it "will just idle endlessly"). The three transports differ in
//! their first bytes, so the client can tell at once and fail the request with
//! `ERR_WRONG_TRANSPORT`, naming what it met. The rule lives here, once; the adapters
//! only hand over the bytes (or the status) they got.

use std::fmt;
use std::str::FromStr;

use crate::peer::rpc::RpcTransport;

/// A transport a Grenache peer serves, as recognised on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Plain HTTP/1.x: an HTTP answer where no HTTP was expected, or one without the
    /// WebSocket upgrade on a WebSocket dial.
    Http,
    /// A WebSocket server: it answered a plain HTTP request with 426 Upgrade Required
    /// (as Node's `ws` server does).
    Ws,
    /// ZeroMQ: a ZMTP greeting (`0xFF`, eight padding bytes, `0x7F`).
    Zmq,
}

impl Protocol {
    /// The name routes and transports use for it: `http`, `ws` or `zmq`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ws => "ws",
            Protocol::Zmq => "zmq",
        }
    }

    /// The protocol an RPC transport speaks.
    pub fn of(transport: RpcTransport) -> Protocol {
        match transport {
            RpcTransport::Http => Protocol::Http,
            RpcTransport::Ws => Protocol::Ws,
            RpcTransport::Zmq => Protocol::Zmq,
        }
    }

    /// The RPC transport that speaks it.
    pub fn rpc_transport(self) -> RpcTransport {
        match self {
            Protocol::Http => RpcTransport::Http,
            Protocol::Ws => RpcTransport::Ws,
            Protocol::Zmq => RpcTransport::Zmq,
        }
    }

    /// What the first bytes a peer sent say it speaks; `None` when they match nothing
    /// known (or are empty). A prefix is enough: ZMTP fails on the first byte that is not
    /// its signature, so that byte may come alone.
    pub fn sniff(first: &[u8]) -> Option<Protocol> {
        const HTTP: &[u8] = b"HTTP/1.";
        // ZMTP's signature: 0xFF, eight bytes of padding, then a byte with bit 0 set (0x7F).
        const ZMTP_LAST: usize = 9;
        match first.first()? {
            0xFF if first.get(ZMTP_LAST).is_none_or(|b| b & 1 == 1) => Some(Protocol::Zmq),
            b'H' if HTTP.starts_with(first.get(..HTTP.len()).unwrap_or(first)) => {
                Some(Protocol::Http)
            }
            _ => None,
        }
    }

    /// What an HTTP status says the server speaks, for an HTTP client: 426 Upgrade
    /// Required is a WebSocket server turning a plain request away.
    pub fn from_http_status(status: u16) -> Option<Protocol> {
        (status == 426).then_some(Protocol::Ws)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not `http`, `ws` or `zmq`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}: expected http, ws or zmq")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    /// Reads [`Protocol::name`] back.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Protocol::Http, Protocol::Ws, Protocol::Zmq]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zmtp_greeting_is_zmq_even_in_part() {
        let greeting = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 1];

        assert_eq!(Protocol::sniff(&greeting), Some(Protocol::Zmq));
        assert_eq!(Protocol::sniff(&greeting[..1]), Some(Protocol::Zmq));
        assert_eq!(Protocol::sniff(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7E]), None);
    }

    #[test]
    fn an_http_answer_is_http_even_in_part() {
        assert_eq!(
            Protocol::sniff(b"HTTP/1.1 400 Bad Request\r\n"),
            Some(Protocol::Http)
        );
        assert_eq!(Protocol::sniff(b"HTT"), Some(Protocol::Http));
        assert_eq!(Protocol::sniff(b"HTTX/1.1"), None);
    }

    #[test]
    fn anything_else_is_unknown() {
        for bytes in [&b""[..], b"{\"rid\"", b"\x81\x05hello", b"GET / HTTP/1.1"] {
            assert_eq!(Protocol::sniff(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn names_read_back_and_map_to_transports() {
        for p in [Protocol::Http, Protocol::Ws, Protocol::Zmq] {
            assert_eq!(p.name().parse(), Ok(p));
            assert_eq!(Protocol::of(p.rpc_transport()), p);
        }
        assert!("tcp".parse::<Protocol>().is_err());
    }

    #[test]
    fn only_426_names_a_websocket_server() {
        assert_eq!(Protocol::from_http_status(426), Some(Protocol::Ws));
        assert_eq!(Protocol::from_http_status(404), None);
        assert_eq!(Protocol::from_http_status(200), None);
    }
}
