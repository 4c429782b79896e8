//! ZeroMQ socket types as the `Socket-Type` property names them, and which pairs may talk.

use std::fmt;

/// A ZeroMQ socket type: ours, or the one a peer announces in its READY command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// Exclusive pair (RFC 31).
    Pair,
    /// Publisher (RFC 29).
    Pub,
    /// Subscriber (RFC 29).
    Sub,
    /// Request (RFC 28).
    Req,
    /// Reply (RFC 28).
    Rep,
    /// Asynchronous request, round robin (RFC 28).
    Dealer,
    /// Asynchronous reply, routed by identity (RFC 28).
    Router,
    /// Pipeline sink (RFC 30).
    Pull,
    /// Pipeline source (RFC 30).
    Push,
    /// Publisher that sees subscriptions (RFC 29).
    XPub,
    /// Subscriber that sends subscriptions as messages (RFC 29).
    XSub,
}

impl SocketType {
    /// Every type, in libzmq's numbering order (`ZMQ_PAIR` = 0 ... `ZMQ_XSUB` = 10).
    pub const ALL: [SocketType; 11] = [
        SocketType::Pair,
        SocketType::Pub,
        SocketType::Sub,
        SocketType::Req,
        SocketType::Rep,
        SocketType::Dealer,
        SocketType::Router,
        SocketType::Pull,
        SocketType::Push,
        SocketType::XPub,
        SocketType::XSub,
    ];

    /// The name on the wire (`"DEALER"`, `"XPUB"`, ...), upper case as RFC 23 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Pair => "PAIR",
            SocketType::Pub => "PUB",
            SocketType::Sub => "SUB",
            SocketType::Req => "REQ",
            SocketType::Rep => "REP",
            SocketType::Dealer => "DEALER",
            SocketType::Router => "ROUTER",
            SocketType::Pull => "PULL",
            SocketType::Push => "PUSH",
            SocketType::XPub => "XPUB",
            SocketType::XSub => "XSUB",
        }
    }

    /// Reads a `Socket-Type` value. Exact match only: libzmq compares case-sensitively,
    /// so a lower-case name would not interoperate anyway.
    pub fn parse(name: &[u8]) -> Option<SocketType> {
        SocketType::ALL
            .into_iter()
            .find(|t| t.as_str().as_bytes() == name)
    }

    /// Whether a socket of this type may talk to a `peer` of that type (the RFC 23 table,
    /// which libzmq enforces the same way). Symmetric.
    pub fn compatible_with(self, peer: SocketType) -> bool {
        use SocketType::*;
        match self {
            Dealer => matches!(peer, Router | Dealer | Rep),
            Router => matches!(peer, Dealer | Router | Req),
            Req => matches!(peer, Rep | Router),
            Rep => matches!(peer, Req | Dealer),
            Pub | XPub => matches!(peer, Sub | XSub),
            Sub | XSub => matches!(peer, Pub | XPub),
            Pair => peer == Pair,
            Push => peer == Pull,
            Pull => peer == Push,
        }
    }

    /// PUB and XPUB receive only subscriptions from their peers.
    pub(crate) fn is_publisher(self) -> bool {
        matches!(self, SocketType::Pub | SocketType::XPub)
    }

    /// SUB and XSUB send subscriptions.
    pub(crate) fn is_subscriber(self) -> bool {
        matches!(self, SocketType::Sub | SocketType::XSub)
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_exact() {
        for t in SocketType::ALL {
            assert_eq!(SocketType::parse(t.as_str().as_bytes()), Some(t));
        }
        assert_eq!(SocketType::parse(b"dealer"), None);
        assert_eq!(SocketType::parse(b"DEALER\0"), None);
        assert_eq!(SocketType::parse(b"STREAM"), None);
        assert_eq!(SocketType::parse(b""), None);
    }

    #[test]
    fn compatibility_is_symmetric_and_matches_the_table() {
        use SocketType::*;
        for a in SocketType::ALL {
            for b in SocketType::ALL {
                assert_eq!(a.compatible_with(b), b.compatible_with(a), "{a} vs {b}");
            }
        }
        let compatible = SocketType::ALL
            .into_iter()
            .flat_map(|a| SocketType::ALL.into_iter().map(move |b| (a, b)))
            .filter(|&(a, b)| a.compatible_with(b))
            .count();
        // DEALER-{ROUTER,DEALER,REP}, ROUTER-{ROUTER,REQ}, REQ-REP, {PUB,XPUB}x{SUB,XSUB},
        // PAIR-PAIR, PUSH-PULL: 12 unordered pairs, 3 of them a type with itself → 21.
        assert_eq!(compatible, 21);
        assert!(Dealer.compatible_with(Router));
        assert!(XPub.compatible_with(Sub));
        assert!(!Dealer.compatible_with(Pub));
        assert!(!Req.compatible_with(Req));
        assert!(!Push.compatible_with(Push));
    }
}
