//! Node ids, DHT keys and XOR distance (BEP 5).
//!
//! Grenache announces services under the raw UTF-8 bytes of their name, not a SHA-1
//! (docs/protocol.md §4.2), so a [`Key`] may have any length. Distance follows
//! bittorrent-dht: XOR over the common prefix, then `0xff` for each byte only the longer
//! side has. Node ids are always 160 bits, so between two nodes the padding is equal and
//! comparing the first [`ID_LEN`] bytes of the XOR is enough.

use std::cmp::Ordering;
use std::fmt;

use rand::Rng;

/// Length of a node id in bytes (160 bits).
pub const ID_LEN: usize = 20;

/// Longest key the node accepts; bounds what a peer can make us store per entry.
pub const MAX_KEY_LEN: usize = 256;

/// A 160-bit node id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; ID_LEN]);

impl NodeId {
    /// Reads an id from exactly [`ID_LEN`] bytes; any other length is `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(NodeId)
    }

    /// Draws a uniformly random id.
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; ID_LEN];
        rng.fill(&mut id);
        NodeId(id)
    }

    /// Draws a random id that shares exactly `prefix_len` leading bits with `self`
    /// (used to refresh the bucket at that depth). `prefix_len` is clamped to 159.
    pub fn random_in_bucket<R: Rng + ?Sized>(&self, prefix_len: usize, rng: &mut R) -> Self {
        let prefix_len = prefix_len.min(ID_LEN * 8 - 1);
        let mut id = NodeId::random(rng).0;
        for bit in 0..=prefix_len {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let own = self.0[byte] & mask;
            // Copy the shared prefix, then flip the first differing bit.
            let want = if bit == prefix_len { own ^ mask } else { own };
            id[byte] = (id[byte] & !mask) | want;
        }
        NodeId(id)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// Distance from this id to `key`.
    pub fn distance(&self, key: &[u8]) -> Distance {
        let mut d = [0xffu8; ID_LEN];
        for (i, (a, b)) in self.0.iter().zip(key).enumerate() {
            d[i] = a ^ b;
        }
        Distance(d)
    }

    /// Number of leading bits this id shares with `other` (160 when equal).
    pub fn shared_prefix_len(&self, other: &NodeId) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        ID_LEN * 8
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", hex(&self.0))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// Distance between a node id and a key; smaller is closer.
///
/// Two distances compare correctly when both were taken to the same key, which is the
/// only use the DHT has for them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance(pub [u8; ID_LEN]);

/// A DHT key: an info-hash (any length, see module docs) or a BEP-44 target (20 bytes).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Box<[u8]>);

impl Key {
    /// Wraps `bytes` if they are 1 to [`MAX_KEY_LEN`] bytes long.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (!bytes.is_empty() && bytes.len() <= MAX_KEY_LEN).then(|| Key(bytes.into()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Orders two node ids by their distance to this key.
    pub fn cmp_distance(&self, a: &NodeId, b: &NodeId) -> Ordering {
        a.distance(&self.0).cmp(&b.distance(&self.0))
    }
}

impl From<NodeId> for Key {
    fn from(id: NodeId) -> Self {
        Key(id.0.into())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) if s.chars().all(|c| !c.is_control()) && self.0.len() != ID_LEN => {
                write!(f, "Key({s:?})")
            }
            _ => write!(f, "Key({})", hex(&self.0)),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends `bytes` to `s` in lowercase hex, two digits a byte.
pub(crate) fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

/// Parses hex (either case); `None` on odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn distance_pads_short_keys_with_ff() {
        let id = NodeId([0x0f; ID_LEN]);
        let d = id.distance(b"\x0f\x00");
        assert_eq!(d.0[0], 0);
        assert_eq!(d.0[1], 0x0f);
        assert!(d.0[2..].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn random_in_bucket_has_exact_prefix() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let own = NodeId::random(&mut rng);
        for p in [0, 1, 7, 8, 63, 159] {
            let id = own.random_in_bucket(p, &mut rng);
            assert_eq!(own.shared_prefix_len(&id), p);
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&bytes)).as_deref(), Some(&bytes[..]));
        assert_eq!(unhex("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn key_length_is_bounded() {
        assert!(Key::new(b"").is_none());
        assert!(Key::new(&[0; MAX_KEY_LEN]).is_some());
        assert!(Key::new(&[0; MAX_KEY_LEN + 1]).is_none());
    }
}
