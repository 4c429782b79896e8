//! Compact node and peer info (BEP 5, BEP 32): fixed-size big-endian records.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::dht::id::{ID_LEN, NodeId};

use super::NodeInfo;

/// Compact IPv4 peer: 4-byte address and 2-byte port.
pub const PEER_V4_LEN: usize = 6;
/// Compact IPv6 peer: 16-byte address and 2-byte port.
pub const PEER_V6_LEN: usize = 18;
/// Compact IPv4 node: 20-byte id then a compact IPv4 peer.
pub const NODE_V4_LEN: usize = ID_LEN + PEER_V4_LEN;
/// Compact IPv6 node: 20-byte id then a compact IPv6 peer.
pub const NODE_V6_LEN: usize = ID_LEN + PEER_V6_LEN;

/// Appends the compact form of `addr`: 6 bytes for IPv4, 18 for IPv6.
pub fn encode_addr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Reads a compact address of exactly 6 or 18 bytes; any other length is `None`.
pub fn decode_addr(bytes: &[u8]) -> Option<SocketAddr> {
    match bytes.len() {
        PEER_V4_LEN => {
            let (ip, port) = bytes.split_first_chunk::<4>()?;
            let port = u16::from_be_bytes(port.try_into().ok()?);
            Some(SocketAddrV4::new(Ipv4Addr::from(*ip), port).into())
        }
        PEER_V6_LEN => {
            let (ip, port) = bytes.split_first_chunk::<16>()?;
            let port = u16::from_be_bytes(port.try_into().ok()?);
            Some(SocketAddrV6::new(Ipv6Addr::from(*ip), port, 0, 0).into())
        }
        _ => None,
    }
}

/// The compact `nodes` string of the IPv4 entries of `nodes` (IPv6 entries are skipped).
pub fn encode_nodes(nodes: &[NodeInfo]) -> Vec<u8> {
    encode_family(nodes, SocketAddr::is_ipv4, NODE_V4_LEN)
}

/// The compact `nodes6` string of the IPv6 entries of `nodes` (IPv4 entries are skipped).
pub fn encode_nodes6(nodes: &[NodeInfo]) -> Vec<u8> {
    encode_family(nodes, SocketAddr::is_ipv6, NODE_V6_LEN)
}

/// Reads a `nodes` string; `None` unless its length is a multiple of 26.
pub fn decode_nodes(bytes: &[u8]) -> Option<Vec<NodeInfo>> {
    decode_family(bytes, NODE_V4_LEN)
}

/// Reads a `nodes6` string; `None` unless its length is a multiple of 38.
pub fn decode_nodes6(bytes: &[u8]) -> Option<Vec<NodeInfo>> {
    decode_family(bytes, NODE_V6_LEN)
}

fn encode_family(nodes: &[NodeInfo], keep: fn(&SocketAddr) -> bool, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len().saturating_mul(len));
    for node in nodes.iter().filter(|n| keep(&n.addr)) {
        out.extend_from_slice(node.id.as_bytes());
        encode_addr(&node.addr, &mut out);
    }
    out
}

fn decode_family(bytes: &[u8], len: usize) -> Option<Vec<NodeInfo>> {
    let records = bytes.chunks_exact(len);
    if !records.remainder().is_empty() {
        return None;
    }
    records
        .map(|record| {
            let (id, addr) = record.split_first_chunk::<ID_LEN>()?;
            Some(NodeInfo {
                id: NodeId(*id),
                addr: decode_addr(addr)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(byte: u8, addr: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId([byte; ID_LEN]),
            addr: addr.parse().expect("test address"),
        }
    }

    #[test]
    fn addr_v4_is_six_bytes_big_endian() {
        let addr: SocketAddr = "1.2.3.4:6881".parse().expect("addr");
        let mut out = Vec::new();

        encode_addr(&addr, &mut out);

        assert_eq!(out, [1, 2, 3, 4, 0x1a, 0xe1]);
        assert_eq!(decode_addr(&out), Some(addr));
    }

    #[test]
    fn addr_v6_is_eighteen_bytes() {
        let addr: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
        let mut out = Vec::new();

        encode_addr(&addr, &mut out);

        assert_eq!(out.len(), PEER_V6_LEN);
        assert_eq!(out[..2], [0x20, 0x01]);
        assert_eq!(out[16..], [0x01, 0xbb]);
        assert_eq!(decode_addr(&out), Some(addr));
    }

    #[test]
    fn addr_of_other_lengths_is_rejected() {
        for len in [0, 5, 7, 17, 19] {
            assert_eq!(decode_addr(&vec![0; len]), None, "{len}");
        }
    }

    #[test]
    fn nodes_round_trip_and_skip_other_family() {
        let nodes = [
            node(1, "10.0.0.1:1"),
            node(2, "[::1]:2"),
            node(3, "10.0.0.3:65535"),
        ];

        let v4 = encode_nodes(&nodes);
        let v6 = encode_nodes6(&nodes);

        assert_eq!(v4.len(), 2 * NODE_V4_LEN);
        assert_eq!(v6.len(), NODE_V6_LEN);
        assert_eq!(decode_nodes(&v4), Some(vec![nodes[0], nodes[2]]));
        assert_eq!(decode_nodes6(&v6), Some(vec![nodes[1]]));
    }

    #[test]
    fn nodes_record_layout_is_id_ip_port() {
        let bytes = encode_nodes(&[node(0xab, "127.0.0.1:20001")]);

        assert_eq!(bytes[..ID_LEN], [0xab; ID_LEN]);
        assert_eq!(bytes[ID_LEN..], [127, 0, 0, 1, 0x4e, 0x21]);
    }

    #[test]
    fn nodes_of_partial_length_are_rejected() {
        assert_eq!(decode_nodes(&[0; NODE_V4_LEN + 1]), None);
        assert_eq!(decode_nodes(&[0; NODE_V4_LEN - 1]), None);
        assert_eq!(decode_nodes6(&[0; NODE_V4_LEN]), None);
        assert_eq!(decode_nodes(&[]), Some(vec![]));
    }
}
