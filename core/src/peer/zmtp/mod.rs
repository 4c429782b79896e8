//! ZMTP 3.0 (RFC 23, with the 3.1 commands of RFC 37 understood), sans-IO: the ZeroMQ
//! wire protocol under Grenache's ZeroMQ transport, enough to talk to libzmq 4.3 (what
//! the `zeromq` npm package bundles) with the NULL security mechanism.
//!
//! A [`Connection`] is one TCP stream's worth of protocol: it writes our greeting and
//! READY, checks the peer's (version, mechanism, socket type), then turns bytes into
//! multipart messages and back. Socket semantics (ROUTER's identity routing, DEALER's
//! round robin, PUB's topic filtering) live above it; PUB/SUB subscriptions are decoded
//! here because they are part of the wire protocol.
//!
//! ```
//! use grenache_core::peer::zmtp::{Connection, Limits, SocketType, ZmtpEvent};
//!
//! let mut dealer = Connection::new(SocketType::Dealer, b"client-1".to_vec(), Limits::default());
//! let mut router = Connection::new(SocketType::Router, Vec::new(), Limits::default());
//! dealer.send(&[b"", b"hello"]).unwrap(); // held until the handshake ends
//! // What one side writes, the other reads (a TCP socket in between, in real life).
//! for _ in 0..2 {
//!     router.handle_input(&dealer.take_output()).unwrap();
//!     dealer.handle_input(&router.take_output()).unwrap();
//! }
//! assert_eq!(
//!     router.poll_event(),
//!     Some(ZmtpEvent::Ready { peer: SocketType::Dealer, identity: b"client-1".to_vec() })
//! );
//! assert_eq!(router.poll_event(), Some(ZmtpEvent::Message(vec![b"".to_vec(), b"hello".to_vec()])));
//! ```
//!
//! Security: NULL, or CURVE ([`Security`], RFC 25/26; see `curve.rs` for the handshake),
//! chosen when the connection is made ([`Connection::secure`]). Heartbeats: the
//! connection answers PING with PONG; [`Heartbeat`] says when to send a PING and when a
//! silent peer is gone (servers and clients both run one per connection).
//!
//! What is not here: ZMTP 1.0/2.0 downgrades (libzmq 3.x and older), and the PLAIN and
//! GSSAPI mechanisms.

mod conn;
mod curve;
mod error;
pub mod frame;
mod heartbeat;
mod socket;
pub mod z85;

pub use conn::{Connection, Limits, ZmtpEvent};
pub use curve::{
    CurveClientConfig, CurveError, CurveKeyError, CurveKeyPair, CurvePublicKey, CurveServerConfig,
    Mechanism, Security,
};
pub use error::ZmtpError;
pub use heartbeat::{Heartbeat, HeartbeatConfig};
pub use socket::SocketType;

#[cfg(test)]
mod tests;
