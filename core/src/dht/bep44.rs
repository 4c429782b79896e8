//! BEP-44 items: immutable values stored under their SHA-1, and mutable values signed
//! with ed25519 and stored under the SHA-1 of the public key and salt.
//!
//! Every constructor validates, so an [`Item`] in hand is always well-formed: `v` is one
//! canonical bencode value of at most [`MAX_V_LEN`] bytes, and a [`MutableItem`]'s
//! signature has been checked. The rules about replacing a stored item (`cas`, `seq`)
//! live in [`crate::dht::storage::ItemStore`]. See BEP 44 and docs/protocol.md §4.5.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha1::{Digest, Sha1};

use crate::dht::id::{Key, NodeId, hex};

/// Longest bencoded `v` a node stores (BEP 44 lets nodes refuse anything longer).
pub const MAX_V_LEN: usize = 1000;

/// Longest salt (BEP 44: "MUST NOT be longer than 64 bytes").
pub const MAX_SALT_LEN: usize = 64;

/// Where an item lives in the DHT: SHA-1 of `v`, or of `k` followed by the salt.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target(pub [u8; 20]);

impl Target {
    /// Reads a target from exactly 20 bytes; any other length is `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Target)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", hex(&self.0))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl From<Target> for Key {
    /// A target is routed like any 160-bit key.
    fn from(target: Target) -> Self {
        Key::from(NodeId(target.0))
    }
}

/// Why an item was refused, with the KRPC error code BEP 44 assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PutError {
    /// `v` is not exactly one canonical bencode value (e.g. unsorted dict keys, trailing
    /// bytes). Code 203; the sender must re-encode the value.
    #[error("invalid bencoding in v")]
    InvalidValue,
    /// `v` is longer than [`MAX_V_LEN`] bytes. Code 205; the value must shrink.
    #[error("message (v field) too big")]
    TooBig,
    /// The ed25519 signature does not match `k`, `salt`, `seq` and `v` (or `k` is not a
    /// usable public key). Code 206; the item must be dropped, it is forged or corrupt.
    #[error("invalid signature")]
    InvalidSignature,
    /// The salt is longer than [`MAX_SALT_LEN`] bytes. Code 207; use a shorter salt.
    #[error("salt (salt field) too big")]
    SaltTooBig,
    /// The `cas` given does not match the stored `seq`. Code 301; re-read the item and
    /// try again with its current `seq`.
    #[error("the CAS hash mismatched, re-read value and try again")]
    CasMismatch,
    /// `seq` is lower than the stored one, or equal with a different `v`. Code 302; the
    /// stored item is newer: re-read it and put with a higher `seq`.
    #[error("sequence number less than current")]
    SeqTooLow,
}

impl PutError {
    /// The KRPC error code to send back (BEP 5 and BEP 44).
    pub fn code(&self) -> i64 {
        match self {
            PutError::InvalidValue => 203,
            PutError::TooBig => 205,
            PutError::InvalidSignature => 206,
            PutError::SaltTooBig => 207,
            PutError::CasMismatch => 301,
            PutError::SeqTooLow => 302,
        }
    }
}

/// A stored value of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Stored under the SHA-1 of its value.
    Immutable(ImmutableItem),
    /// Stored under the SHA-1 of its public key and salt.
    Mutable(MutableItem),
}

impl Item {
    /// Where the item lives in the DHT.
    pub fn target(&self) -> Target {
        match self {
            Item::Immutable(item) => item.target(),
            Item::Mutable(item) => item.target(),
        }
    }

    /// The bencoded value.
    pub fn v(&self) -> &[u8] {
        match self {
            Item::Immutable(item) => item.v(),
            Item::Mutable(item) => item.v(),
        }
    }

    /// The sequence number of a mutable item; `None` for an immutable one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Item::Immutable(_) => None,
            Item::Mutable(item) => Some(item.seq()),
        }
    }
}

impl From<ImmutableItem> for Item {
    fn from(item: ImmutableItem) -> Self {
        Item::Immutable(item)
    }
}

impl From<MutableItem> for Item {
    fn from(item: MutableItem) -> Self {
        Item::Mutable(item)
    }
}

/// A value stored under its own SHA-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmutableItem {
    v: Vec<u8>,
    target: Target,
}

impl ImmutableItem {
    /// Wraps a bencoded value.
    ///
    /// # Errors
    /// [`PutError::TooBig`] over [`MAX_V_LEN`] bytes; [`PutError::InvalidValue`] when `v`
    /// is not exactly one canonical bencode value.
    pub fn new(v: Vec<u8>) -> Result<Self, PutError> {
        check_v(&v)?;
        let target = immutable_target(&v);
        Ok(ImmutableItem { v, target })
    }

    /// The bencoded value.
    pub fn v(&self) -> &[u8] {
        &self.v
    }

    /// SHA-1 of the value.
    pub fn target(&self) -> Target {
        self.target
    }
}

/// A signed value; only the holder of the secret key can publish a newer `seq`.
///
/// The fields are private and every constructor verifies the signature, so an
/// unverified mutable item cannot exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableItem {
    k: [u8; 32],
    salt: Vec<u8>,
    seq: i64,
    v: Vec<u8>,
    sig: [u8; 64],
    target: Target,
}

impl MutableItem {
    /// Checks a mutable item received from the network (or from an API user).
    ///
    /// Negative `seq` is accepted: BEP 44 allows refusing it but does not require to.
    ///
    /// # Errors
    /// In this order: [`PutError::TooBig`] (v over [`MAX_V_LEN`]), [`PutError::SaltTooBig`]
    /// (salt over [`MAX_SALT_LEN`]), [`PutError::InvalidValue`] (v not bencode),
    /// [`PutError::InvalidSignature`] (bad `k` or `sig`).
    pub fn new(
        k: [u8; 32],
        salt: Vec<u8>,
        seq: i64,
        v: Vec<u8>,
        sig: [u8; 64],
    ) -> Result<Self, PutError> {
        check_v_and_salt(&v, &salt)?;
        let key = VerifyingKey::from_bytes(&k).map_err(|_| PutError::InvalidSignature)?;
        // Strict verification refuses weak keys and malleable signatures; honest
        // signers never produce those.
        key.verify_strict(
            &signing_buffer(&salt, seq, &v),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| PutError::InvalidSignature)?;
        Ok(Self::assemble(k, salt, seq, v, sig))
    }

    /// Signs a value with the 32-byte ed25519 secret key (seed), for publishers.
    ///
    /// # Errors
    /// [`PutError::TooBig`], [`PutError::SaltTooBig`] or [`PutError::InvalidValue`], as
    /// for [`MutableItem::new`]; the signature itself cannot fail.
    pub fn sign(secret: &[u8; 32], salt: Vec<u8>, seq: i64, v: Vec<u8>) -> Result<Self, PutError> {
        check_v_and_salt(&v, &salt)?;
        let key = SigningKey::from_bytes(secret);
        let sig = key.sign(&signing_buffer(&salt, seq, &v)).to_bytes();
        Ok(Self::assemble(
            key.verifying_key().to_bytes(),
            salt,
            seq,
            v,
            sig,
        ))
    }

    /// The ed25519 public key.
    pub fn k(&self) -> &[u8; 32] {
        &self.k
    }

    /// The salt (empty when none was given).
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The sequence number.
    pub fn seq(&self) -> i64 {
        self.seq
    }

    /// The bencoded value.
    pub fn v(&self) -> &[u8] {
        &self.v
    }

    /// The ed25519 signature over [`signing_buffer`].
    pub fn sig(&self) -> &[u8; 64] {
        &self.sig
    }

    /// SHA-1 of `k` followed by the salt.
    pub fn target(&self) -> Target {
        self.target
    }

    fn assemble(k: [u8; 32], salt: Vec<u8>, seq: i64, v: Vec<u8>, sig: [u8; 64]) -> Self {
        let target = mutable_target(&k, &salt);
        MutableItem {
            k,
            salt,
            seq,
            v,
            sig,
            target,
        }
    }
}

/// The bytes a mutable item's signature covers (BEP 44, "Signature Verification").
///
/// `4:salt<len>:<salt>` only when the salt is non-empty, then `3:seqi<seq>e1:v` and the
/// bencoded value as is.
pub fn signing_buffer(salt: &[u8], seq: i64, v: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(salt.len() + v.len() + 48);
    if !salt.is_empty() {
        buf.extend_from_slice(format!("4:salt{}:", salt.len()).as_bytes());
        buf.extend_from_slice(salt);
    }
    buf.extend_from_slice(format!("3:seqi{seq}e1:v").as_bytes());
    buf.extend_from_slice(v);
    buf
}

/// Target of an immutable item: SHA-1 of the bencoded value.
pub fn immutable_target(v: &[u8]) -> Target {
    Target(Sha1::digest(v).into())
}

/// Target of a mutable item: SHA-1 of the public key followed by the salt.
pub fn mutable_target(k: &[u8; 32], salt: &[u8]) -> Target {
    let mut hasher = Sha1::new();
    hasher.update(k);
    hasher.update(salt);
    Target(hasher.finalize().into())
}

fn check_v_and_salt(v: &[u8], salt: &[u8]) -> Result<(), PutError> {
    if v.len() > MAX_V_LEN {
        return Err(PutError::TooBig);
    }
    if salt.len() > MAX_SALT_LEN {
        return Err(PutError::SaltTooBig);
    }
    check_v(v)
}

fn check_v(v: &[u8]) -> Result<(), PutError> {
    if v.len() > MAX_V_LEN {
        return Err(PutError::TooBig);
    }
    if !is_one_bencode_value(v) {
        return Err(PutError::InvalidValue);
    }
    Ok(())
}

/// Reports whether `bytes` is exactly one canonical bencode value, with nothing after it.
///
/// Canonical means what BEP 44 needs for hashes to agree: integers without leading
/// zeros or `-0`, string lengths without leading zeros, dict keys strictly ascending.
/// Nesting is tracked on a heap stack, never by recursion, so deep input cannot
/// overflow the call stack. (Self-contained on purpose; the crate's bencode codec may
/// replace it.)
fn is_one_bencode_value(bytes: &[u8]) -> bool {
    enum Frame<'a> {
        List,
        Dict { last_key: Option<&'a [u8]> },
    }
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pos = 0usize;
    loop {
        if let Some(top) = stack.last_mut() {
            if bytes.get(pos) == Some(&b'e') {
                stack.pop();
                pos += 1;
                if stack.is_empty() {
                    return pos == bytes.len();
                }
                continue;
            }
            if let Frame::Dict { last_key } = top {
                let Some((key, next)) = bencode_string(bytes, pos) else {
                    return false;
                };
                if last_key.is_some_and(|prev| key <= prev) {
                    return false;
                }
                *last_key = Some(key);
                pos = next;
            }
        }
        match bytes.get(pos) {
            Some(b'i') => match bencode_int_end(bytes, pos + 1) {
                Some(next) => pos = next,
                None => return false,
            },
            Some(b'l') => {
                stack.push(Frame::List);
                pos += 1;
                continue;
            }
            Some(b'd') => {
                stack.push(Frame::Dict { last_key: None });
                pos += 1;
                continue;
            }
            Some(b'0'..=b'9') => match bencode_string(bytes, pos) {
                Some((_, next)) => pos = next,
                None => return false,
            },
            _ => return false,
        }
        if stack.is_empty() {
            return pos == bytes.len();
        }
    }
}

/// Parses `<len>:<bytes>` at `pos`; returns the bytes and the position after them.
fn bencode_string(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = bytes.get(pos..)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let digits = rest.get(..colon)?;
    let len = canonical_digits(digits)?;
    let start = pos.checked_add(colon)?.checked_add(1)?;
    let end = start.checked_add(len)?;
    Some((bytes.get(start..end)?, end))
}

/// Parses `<digits>e` (after the `i`); returns the position after the `e`.
fn bencode_int_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let rest = bytes.get(pos..)?;
    let e = rest.iter().position(|&b| b == b'e')?;
    let body = rest.get(..e)?;
    let digits = match body.split_first() {
        Some((b'-', magnitude)) => {
            // `-0` and `-` alone are not canonical.
            if magnitude.first() == Some(&b'0') {
                return None;
            }
            magnitude
        }
        _ => body,
    };
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits.first() == Some(&b'0'))
    {
        return None;
    }
    pos.checked_add(e)?.checked_add(1)
}

/// Reads a non-negative decimal without leading zeros; `None` if it overflows `usize`.
fn canonical_digits(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::unhex;

    /// BEP 44 test vectors 1 and 2 share this key pair.
    const PUBLIC_KEY: &str = "77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548";

    fn bytes<const N: usize>(hex_str: &str) -> [u8; N] {
        let v = unhex(hex_str).unwrap_or_default();
        v.try_into().unwrap_or([0; N])
    }

    #[test]
    fn bep44_vector_1_mutable() {
        let sig = bytes::<64>(concat!(
            "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff",
            "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"
        ));

        let item = MutableItem::new(
            bytes(PUBLIC_KEY),
            Vec::new(),
            1,
            b"12:Hello World!".to_vec(),
            sig,
        );

        let item = item.expect("test vector 1 verifies");
        assert_eq!(
            item.target().to_string(),
            "4a533d47ec9c7d95b1ad75f576cffc641853b750"
        );
        assert_eq!(
            signing_buffer(b"", 1, b"12:Hello World!"),
            b"3:seqi1e1:v12:Hello World!"
        );
    }

    #[test]
    fn bep44_vector_2_mutable_with_salt() {
        let sig = bytes::<64>(concat!(
            "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d",
            "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"
        ));

        let item = MutableItem::new(
            bytes(PUBLIC_KEY),
            b"foobar".to_vec(),
            1,
            b"12:Hello World!".to_vec(),
            sig,
        );

        let item = item.expect("test vector 2 verifies");
        assert_eq!(
            item.target().to_string(),
            "411eba73b6f087ca51a3795d9c8c938d365e32c1"
        );
        assert_eq!(
            signing_buffer(b"foobar", 1, b"12:Hello World!"),
            b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
        );
    }

    #[test]
    fn bep44_vector_2_signature_does_not_fit_without_salt() {
        let sig = bytes::<64>(concat!(
            "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17d",
            "df9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"
        ));

        let result = MutableItem::new(
            bytes(PUBLIC_KEY),
            Vec::new(),
            1,
            b"12:Hello World!".to_vec(),
            sig,
        );

        assert_eq!(result, Err(PutError::InvalidSignature));
    }

    #[test]
    fn bep44_vector_3_immutable() {
        let item = ImmutableItem::new(b"12:Hello World!".to_vec());

        let item = item.expect("a bencoded string is a valid value");
        assert_eq!(
            item.target().to_string(),
            "e5f96f6f38320f0f33959cb4d3d656452117aadb"
        );
    }

    #[test]
    fn sign_then_new_round_trips() {
        let secret = [7u8; 32];
        let signed = MutableItem::sign(&secret, b"s".to_vec(), -3, b"li1ee".to_vec())
            .expect("valid inputs sign");

        let checked = MutableItem::new(
            *signed.k(),
            signed.salt().to_vec(),
            signed.seq(),
            signed.v().to_vec(),
            *signed.sig(),
        );

        assert_eq!(checked, Ok(signed.clone()));
        assert_eq!(signed.target(), mutable_target(signed.k(), b"s"));
    }

    #[test]
    fn tampered_fields_fail_signature() {
        let signed = MutableItem::sign(&[9u8; 32], b"salt".to_vec(), 5, b"3:abc".to_vec())
            .expect("valid inputs sign");
        let (k, sig) = (*signed.k(), *signed.sig());
        let mut bad_sig = sig;
        bad_sig[0] ^= 1;

        let cases = [
            MutableItem::new(k, b"salt".to_vec(), 6, b"3:abc".to_vec(), sig),
            MutableItem::new(k, b"salu".to_vec(), 5, b"3:abc".to_vec(), sig),
            MutableItem::new(k, Vec::new(), 5, b"3:abc".to_vec(), sig),
            MutableItem::new(k, b"salt".to_vec(), 5, b"3:abd".to_vec(), sig),
            MutableItem::new(k, b"salt".to_vec(), 5, b"3:abc".to_vec(), bad_sig),
            MutableItem::new([0; 32], b"salt".to_vec(), 5, b"3:abc".to_vec(), sig),
        ];

        for result in cases {
            assert_eq!(result.map(|_| ()), Err(PutError::InvalidSignature));
        }
    }

    #[test]
    fn size_limits_give_their_codes() {
        let big_v = [b"996:".as_slice(), &[b'x'; 996]].concat();
        let too_big_v = [b"997:".as_slice(), &[b'x'; 997]].concat();
        assert_eq!(big_v.len(), MAX_V_LEN);

        let ok = MutableItem::sign(&[1; 32], vec![0; MAX_SALT_LEN], 0, big_v);
        let v_err = MutableItem::sign(&[1; 32], Vec::new(), 0, too_big_v.clone());
        let salt_err = MutableItem::new(
            [0; 32],
            vec![0; MAX_SALT_LEN + 1],
            0,
            b"0:".to_vec(),
            [0; 64],
        );
        let imm_err = ImmutableItem::new(too_big_v);

        assert!(ok.is_ok());
        assert_eq!(v_err.map(|_| ()).map_err(|e| e.code()), Err(205));
        assert_eq!(salt_err.map(|_| ()).map_err(|e| e.code()), Err(207));
        assert_eq!(imm_err.map(|_| ()), Err(PutError::TooBig));
    }

    #[test]
    fn invalid_value_gives_203() {
        let result = ImmutableItem::new(b"d1:bi1e1:ai2ee".to_vec());

        let code = result.map(|_| ()).map_err(|e| e.code());

        assert_eq!(code, Err(203));
        assert_eq!(
            MutableItem::sign(&[1; 32], Vec::new(), 1, b"i1".to_vec()).map(|_| ()),
            Err(PutError::InvalidValue)
        );
    }

    #[test]
    fn error_codes_match_bep44() {
        let all = [
            (PutError::InvalidValue, 203),
            (PutError::TooBig, 205),
            (PutError::InvalidSignature, 206),
            (PutError::SaltTooBig, 207),
            (PutError::CasMismatch, 301),
            (PutError::SeqTooLow, 302),
        ];

        for (err, code) in all {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn bencode_check_accepts_canonical_values() {
        let good: &[&[u8]] = &[
            b"i0e",
            b"i-1e",
            b"i42e",
            b"i123456789012345678901234567890e",
            b"0:",
            b"4:spam",
            b"le",
            b"de",
            b"li1e4:spame",
            b"d1:ai1e1:bli2eee",
            b"d0:i0e1:adee",
            b"llleee",
            b"d1:ad1:bd1:cleeee",
        ];
        for v in good {
            assert!(is_one_bencode_value(v), "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn bencode_check_rejects_malformed_values() {
        let bad: &[&[u8]] = &[
            b"",
            b"i",
            b"ie",
            b"i-e",
            b"i-0e",
            b"i03e",
            b"i1.5e",
            b"i1",
            b"01:a",
            b"1:",
            b"5:abc",
            b"1a:b",
            b"99999999999999999999999:x",
            b"l",
            b"li1e",
            b"d",
            b"d1:a",
            b"di1ei2ee",
            b"d1:bi1e1:ai2ee",
            b"d1:ai1e1:ai2ee",
            b"i1ei2e",
            b"4:spamx",
            b"e",
            b"x",
            b"lee",
        ];
        for v in bad {
            assert!(!is_one_bencode_value(v), "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn bencode_check_survives_deep_nesting() {
        let deep = [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat();
        let open = vec![b'l'; 100_000];

        assert!(is_one_bencode_value(&deep));
        assert!(!is_one_bencode_value(&open));
    }

    #[test]
    fn target_converts_to_key_and_prints_hex() {
        let target = Target([0xab; 20]);

        let key = Key::from(target);

        assert_eq!(key.as_bytes(), &[0xab; 20]);
        assert_eq!(format!("{target}"), "ab".repeat(20));
        assert_eq!(
            format!("{target:?}"),
            format!("Target({})", "ab".repeat(20))
        );
        assert_eq!(Target::from_slice(&[1; 19]), None);
    }
}
