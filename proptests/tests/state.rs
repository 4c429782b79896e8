//! Property tests for `grenache_core::dht::state`, the warm-restart file: a snapshot
//! survives encode then decode, no bytes make the decoder panic, and a cut or a flipped bit
//! is an error rather than another snapshot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use grenache_core::dht::NodeId;
use grenache_core::dht::bencode;
use grenache_core::dht::krpc::NodeInfo;
use grenache_core::dht::state::{MAGIC, MAX_FILE_LEN, Snapshot, seal};
use proptest::collection::vec;
use proptest::prelude::*;

/// A node of either family (the flag picks IPv6), at any address and port.
fn node() -> impl Strategy<Value = NodeInfo> {
    (
        any::<[u8; 20]>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<u16>(),
    )
        .prop_map(|(id, six, ip, port)| {
            let ip = if six {
                IpAddr::V6(Ipv6Addr::from(ip))
            } else {
                IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
            };
            NodeInfo {
                id: NodeId(id),
                addr: SocketAddr::new(ip, port),
            }
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (any::<[u8; 20]>(), vec(node(), 0..40)).prop_map(|(id, nodes)| Snapshot::new(NodeId(id), nodes))
}

/// Mostly `n` records of `record` bytes each (a well-formed list), sometimes any bytes.
fn records(record: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0..10usize).prop_flat_map(move |n| vec(any::<u8>(), n * record)),
        1 => vec(any::<u8>(), 0..300),
    ]
}

/// A bencoded dictionary that looks like a state: each key present or not, its value
/// mostly well formed (so the decoder gets past its checks), sometimes not.
fn state_like_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(records(20)),
        prop::option::of(records(26)),
        prop::option::of(records(38)),
        prop::option::of(prop_oneof![3 => Just(1i64), 1 => any::<i64>()]),
    )
        .prop_map(|(id, nodes, nodes6, v)| {
            let mut out = Vec::new();
            bencode::write_dict(&mut out, |d| {
                if let Some(id) = &id {
                    d.bytes(b"id", id);
                }
                if let Some(nodes) = &nodes {
                    d.bytes(b"nodes", nodes);
                }
                if let Some(nodes6) = &nodes6 {
                    d.bytes(b"nodes6", nodes6);
                }
                if let Some(v) = v {
                    d.int(b"v", v);
                }
            });
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn snapshot_round_trips(s in snapshot()) {
        let bytes = s.encode();

        prop_assert!(bytes.len() <= MAX_FILE_LEN);
        prop_assert_eq!(Snapshot::decode(&bytes), Ok(s));
    }

    #[test]
    fn decoder_never_panics_on_any_bytes(
        bytes in vec(any::<u8>(), 0..2048),
        behind_magic in any::<bool>(),
    ) {
        let bytes = if behind_magic { [MAGIC, &bytes].concat() } else { bytes };

        let _ = Snapshot::decode(&bytes);
    }

    #[test]
    fn checksummed_content_decodes_to_a_snapshot_or_an_error_never_a_panic(
        body in prop_oneof![state_like_body(), vec(any::<u8>(), 0..512)],
    ) {
        let decoded = Snapshot::decode(&seal(&body));

        if let Ok(s) = decoded {
            prop_assert!(s.nodes().len() <= 18, "more nodes than the lists held");
            // What decodes is a snapshot we could have written.
            prop_assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
        }
    }

    #[test]
    fn every_truncation_is_an_error(s in snapshot(), cut in any::<prop::sample::Index>()) {
        let bytes = s.encode();
        let len = cut.index(bytes.len());

        prop_assert!(Snapshot::decode(&bytes[..len]).is_err());
    }

    #[test]
    fn every_bit_flip_is_an_error(
        s in snapshot(),
        at in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let mut bytes = s.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;

        prop_assert!(Snapshot::decode(&bytes).is_err(), "flip of bit {} of byte {}", bit, i);
    }
}
