//! Property tests for `grenache_core::dht::krpc`: every message survives encode then decode,
//! and no input makes the decoder panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use grenache_core::dht::bencode::{self, Value};
use grenache_core::dht::krpc::{
    Body, ErrorReply, MAX_TID_LEN, Message, Method, NodeInfo, PutArgs, Query, Response,
};
use grenache_core::dht::{Key, MAX_KEY_LEN, NodeId};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 20]>().prop_map(NodeId)
}

fn key() -> impl Strategy<Value = Key> {
    // Mostly 20-byte hashes, sometimes a Grenache service name of any length.
    prop_oneof![
        any::<[u8; 20]>().prop_map(|b| Key::new(&b).expect("20 bytes is a valid key")),
        vec(any::<u8>(), 1..=MAX_KEY_LEN).prop_map(|b| Key::new(&b).expect("in range")),
    ]
}

fn v4() -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
}

fn v6() -> impl Strategy<Value = SocketAddr> {
    // Compact form has no flow label or scope id, so those stay zero.
    (any::<[u8; 16]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0).into())
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![v4(), v6()]
}

fn nodes(addr: impl Strategy<Value = SocketAddr>) -> impl Strategy<Value = Vec<NodeInfo>> {
    vec(
        (node_id(), addr).prop_map(|(id, addr)| NodeInfo { id, addr }),
        0..8,
    )
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// A BEP-44 `v`: some bencoded value, as its bytes.
fn raw_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| {
            let mut out = Vec::new();
            bencode::encode(&Value::Int(n), &mut out);
            out
        }),
        bytes(40).prop_map(|b| {
            let mut out = Vec::new();
            bencode::encode(&Value::Bytes(&b), &mut out);
            out
        }),
    ];
    // Lists and dicts of leaves, built as raw bytes to avoid borrowing trouble.
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|items| {
                let mut out = vec![b'l'];
                items.iter().for_each(|i| out.extend_from_slice(i));
                out.push(b'e');
                out
            }),
            proptest::collection::btree_map(bytes(6), inner, 0..6).prop_map(|map| {
                let mut out = vec![b'd'];
                for (k, v) in &map {
                    bencode::write_bytes(&mut out, k);
                    out.extend_from_slice(v);
                }
                out.push(b'e');
                out
            }),
        ]
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Ping),
        key().prop_map(|target| Method::FindNode { target }),
        key().prop_map(|info_hash| Method::GetPeers { info_hash }),
        (key(), any::<u16>(), any::<bool>(), bytes(40)).prop_map(
            |(info_hash, port, implied_port, token)| Method::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            }
        ),
        (key(), any::<u16>(), bytes(40)).prop_map(|(info_hash, port, token)| {
            Method::UnannouncePeer {
                info_hash,
                port,
                token,
            }
        }),
        (key(), option::of(any::<i64>())).prop_map(|(target, seq)| Method::Get { target, seq }),
        (
            bytes(40),
            raw_value(),
            option::of(any::<[u8; 32]>()),
            option::of(vec(any::<u8>(), 64)),
            option::of(any::<i64>()),
            option::of(bytes(80)),
            option::of(any::<i64>()),
        )
            .prop_map(|(token, v, k, sig, seq, salt, cas)| {
                Method::Put(PutArgs {
                    token,
                    v,
                    k,
                    sig: sig.map(|s| s.try_into().expect("64 bytes")),
                    seq,
                    salt,
                    cas,
                })
            }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    (
        (node_id(), nodes(v4()), nodes(v6()), vec(addr(), 0..8)),
        (
            option::of(bytes(40)),
            option::of(raw_value()),
            option::of(any::<[u8; 32]>()),
            option::of(vec(any::<u8>(), 64)),
            option::of(any::<i64>()),
            option::of(addr()),
        ),
    )
        .prop_map(
            |((id, nodes, nodes6, values), (token, v, k, sig, seq, ip))| {
                let mut r = Response::new(id);
                r.nodes = nodes;
                r.nodes6 = nodes6;
                r.values = values;
                r.token = token;
                r.v = v;
                r.k = k;
                r.sig = sig.map(|s| s.try_into().expect("64 bytes"));
                r.seq = seq;
                r.ip = ip;
                r
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (node_id(), method()).prop_map(|(id, method)| Body::Query(Query { id, method })),
        response().prop_map(Body::Response),
        (any::<i64>(), any::<String>())
            .prop_map(|(code, message)| Body::Error(ErrorReply { code, message })),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        bytes(MAX_TID_LEN),
        option::of(bytes(8)),
        any::<bool>(),
        body(),
    )
        .prop_map(|(tid, version, read_only, body)| Message {
            tid,
            version,
            read_only,
            body,
        })
}

/// What every accepted datagram must satisfy: its re-encoding decodes to the same message.
fn assert_stable(input: &[u8]) -> Result<(), TestCaseError> {
    match Message::decode(input) {
        Ok(message) => {
            let again = Message::decode(&message.encode());
            prop_assert_eq!(again, Ok(message));
        }
        Err(err) => {
            prop_assert!(!err.kind.as_str().is_empty());
            if let Some(reply) = err.reply() {
                prop_assert_eq!(Message::decode(&reply.encode()), Ok(reply));
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(message in message()) {
        let wire = message.encode();

        prop_assert_eq!(Message::decode(&wire), Ok(message));
    }

    #[test]
    fn encoding_is_canonical_bencode(message in message()) {
        let wire = message.encode();

        let value = bencode::decode(&wire).expect("canonical");
        let mut again = Vec::new();
        bencode::encode(&value, &mut again);

        prop_assert_eq!(again, wire);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        assert_stable(&bytes)?;
    }

    #[test]
    fn edited_messages_never_panic(
        message in message(),
        edits in vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        // Near-valid datagrams reach the field checks, which random bytes never do.
        let mut wire = message.encode();
        for (at, byte) in edits {
            let len = wire.len();
            wire[at % len] = byte;
        }

        assert_stable(&wire)?;
    }

    #[test]
    fn truncated_messages_never_panic(message in message(), cut in any::<usize>()) {
        let wire = message.encode();

        assert_stable(&wire[..cut % (wire.len() + 1)])?;
    }
}
