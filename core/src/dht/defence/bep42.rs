//! BEP 42: a node id derived from the node's IP address, so that one host cannot pick ids
//! at will to surround a key.
//!
//! The id's first 21 bits are those of CRC-32C over the masked address with three random
//! bits `r`, which the id's last byte carries. We check ids of public addresses and prefer
//! verified ones; we never refuse the others, because Node Grapes choose random ids.

use std::net::IpAddr;

use super::subnet::is_exempt;
use crate::dht::id::NodeId;

const V4_MASK: [u8; 4] = [0x03, 0x0f, 0x3f, 0xff];
const V6_MASK: [u8; 8] = [0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff];

/// The first three bytes a BEP 42 id of `ip` with random byte `r` has (the third byte's
/// low 3 bits are `r`'s, free in the BEP).
pub fn bep42_id_prefix(ip: IpAddr, r: u8) -> [u8; 3] {
    let r = r & 0x7;
    let crc = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut bytes = masked(v4.octets(), V4_MASK);
            bytes[0] |= r << 5;
            crc32c(&bytes)
        }
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            let mut head = [0u8; 8];
            head.copy_from_slice(&octets[..8]);
            let mut bytes = masked(head, V6_MASK);
            bytes[0] |= r << 5;
            crc32c(&bytes)
        }
    };
    let [a, b, c, _] = crc.to_be_bytes();
    [a, b, (c & 0xf8) | r]
}

/// Whether `id` is a BEP 42 id for `ip`. Exempt addresses (loopback, private, link-local:
/// see [`is_exempt`](super::is_exempt)) always pass, as the BEP says.
pub fn is_bep42_id(id: &NodeId, ip: IpAddr) -> bool {
    if is_exempt(ip) {
        return true;
    }
    let want = bep42_id_prefix(ip, id.0[19]);
    id.0[0] == want[0] && id.0[1] == want[1] && (id.0[2] & 0xf8) == (want[2] & 0xf8)
}

fn masked<const N: usize>(mut bytes: [u8; N], mask: [u8; N]) -> [u8; N] {
    for (b, m) in bytes.iter_mut().zip(mask) {
        *b &= m;
    }
    bytes
}

/// CRC-32C (Castagnoli), bit by bit: it runs over at most 8 bytes per id checked.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::unhex;

    /// The test vectors of BEP 42: IP, r, and the id's first three bytes and last byte.
    const VECTORS: [(&str, u8, &str); 5] = [
        (
            "124.31.75.21",
            1,
            "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401",
        ),
        (
            "21.75.31.124",
            86,
            "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256",
        ),
        (
            "65.23.51.170",
            22,
            "a5d43220bc8f112a3d426c84764f8c2a1150e616",
        ),
        (
            "84.124.73.14",
            65,
            "1b0321dd1bb1fe518101ceef99462b947a01ff41",
        ),
        (
            "43.213.53.83",
            90,
            "e56f6cbf5b7c4be0237986d5243b87aa6d51305a",
        ),
    ];

    fn id(hex: &str) -> NodeId {
        let bytes = unhex(hex).expect("hex");
        NodeId(bytes.try_into().expect("20 bytes"))
    }

    #[test]
    fn crc32c_matches_its_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn the_beps_vectors_verify_and_give_their_prefix() {
        for (ip, r, hex) in VECTORS {
            let ip: IpAddr = ip.parse().expect("ip");
            let id = id(hex);
            let prefix = bep42_id_prefix(ip, r);

            assert_eq!(prefix[..2], id.0[..2], "{ip}");
            assert_eq!(prefix[2] & 0xf8, id.0[2] & 0xf8, "{ip}");
            assert!(is_bep42_id(&id, ip), "{ip}");
        }
    }

    #[test]
    fn an_id_of_another_address_or_a_random_one_does_not_verify() {
        let (_, _, hex) = VECTORS[0];
        let other: IpAddr = "124.31.75.22".parse().expect("ip");

        assert!(!is_bep42_id(&id(hex), "21.75.31.124".parse().expect("ip")));
        assert!(!is_bep42_id(&NodeId([0x42; 20]), other));
    }

    #[test]
    fn private_addresses_pass_whatever_the_id() {
        assert!(is_bep42_id(
            &NodeId([0x42; 20]),
            "10.0.0.7".parse().expect("ip")
        ));
        assert!(is_bep42_id(
            &NodeId([0x42; 20]),
            "127.0.0.1".parse().expect("ip")
        ));
    }
}
