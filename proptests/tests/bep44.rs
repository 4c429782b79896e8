//! BEP-44 rules under random input: signatures cover every signed field, size limits
//! give their codes, and the item store never lets `seq` go backwards or changes on a
//! rejected put.

use std::time::{Duration, Instant};

use grenache_core::dht::bep44::{
    ImmutableItem, Item, MAX_SALT_LEN, MAX_V_LEN, MutableItem, PutError, mutable_target,
};
use grenache_core::dht::storage::ItemStore;
use proptest::prelude::*;

/// A bencoded string `<len>:<payload>`: always one valid value.
fn bencoded(payload: &[u8]) -> Vec<u8> {
    [format!("{}:", payload.len()).as_bytes(), payload].concat()
}

/// Length of the `<len>:` header of [`bencoded`].
fn header_len(payload: &[u8]) -> usize {
    payload.len().to_string().len() + 1
}

fn sign(secret: &[u8; 32], salt: &[u8], seq: i64, v: &[u8]) -> MutableItem {
    MutableItem::sign(secret, salt.to_vec(), seq, v.to_vec()).expect("inputs within limits")
}

fn check(item: &MutableItem) -> Result<MutableItem, PutError> {
    MutableItem::new(
        *item.k(),
        item.salt().to_vec(),
        item.seq(),
        item.v().to_vec(),
        *item.sig(),
    )
}

/// Which signed field a tampering test alters.
#[derive(Debug, Clone)]
enum Tamper {
    /// XOR a byte of v's payload (v stays valid bencode).
    Payload {
        index: usize,
        mask: u8,
    },
    Salt {
        index: usize,
        mask: u8,
    },
    Seq {
        mask: i64,
    },
    Sig {
        index: usize,
        mask: u8,
    },
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(index, mask)| Tamper::Payload { index, mask }),
        (any::<usize>(), 1..=255u8).prop_map(|(index, mask)| Tamper::Salt { index, mask }),
        any::<i64>()
            .prop_filter("a change", |m| *m != 0)
            .prop_map(|mask| Tamper::Seq { mask }),
        (0..64usize, 1..=255u8).prop_map(|(index, mask)| Tamper::Sig { index, mask }),
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=200)
}

fn salt() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=MAX_SALT_LEN)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signed_items_verify(secret in any::<[u8; 32]>(), salt in salt(), seq in any::<i64>(), payload in payload()) {
        let v = bencoded(&payload);

        let signed = sign(&secret, &salt, seq, &v);

        prop_assert_eq!(check(&signed), Ok(signed.clone()));
        prop_assert_eq!(signed.target(), mutable_target(signed.k(), &salt));
    }

    #[test]
    fn any_tampering_fails_with_206(secret in any::<[u8; 32]>(), salt in salt(), seq in any::<i64>(), payload in payload(), how in tamper()) {
        let v = bencoded(&payload);
        let signed = sign(&secret, &salt, seq, &v);
        let (k, mut salt, mut seq, mut v, mut sig) = (*signed.k(), salt, seq, v, *signed.sig());
        match how {
            Tamper::Payload { index, mask } => {
                prop_assume!(!payload.is_empty());
                let at = header_len(&payload) + index % payload.len();
                v[at] ^= mask;
            }
            Tamper::Salt { index, mask } => {
                prop_assume!(!salt.is_empty());
                let at = index % salt.len();
                salt[at] ^= mask;
            }
            Tamper::Seq { mask } => seq ^= mask,
            Tamper::Sig { index, mask } => sig[index] ^= mask,
        }

        let result = MutableItem::new(k, salt, seq, v, sig);

        prop_assert_eq!(result.map_err(|e| e.code()), Err(206));
    }

    #[test]
    fn dropping_or_adding_a_salt_fails_with_206(secret in any::<[u8; 32]>(), salt in salt(), seq in any::<i64>(), payload in payload()) {
        let v = bencoded(&payload);
        let signed = sign(&secret, &salt, seq, &v);
        let other_salt = if salt.is_empty() { b"x".to_vec() } else { Vec::new() };

        let result = MutableItem::new(*signed.k(), other_salt, seq, v, *signed.sig());

        prop_assert_eq!(result, Err(PutError::InvalidSignature));
    }

    #[test]
    fn oversized_v_fails_with_205(extra in 1..500usize, secret in any::<[u8; 32]>(), sig in prop::collection::vec(any::<u8>(), 64)) {
        let payload = vec![b'x'; MAX_V_LEN + extra];
        let v = bencoded(&payload);
        let sig: [u8; 64] = sig.try_into().expect("64 bytes");

        let signed = MutableItem::sign(&secret, Vec::new(), 1, v.clone());
        let checked = MutableItem::new([0; 32], Vec::new(), 1, v.clone(), sig);
        let immutable = ImmutableItem::new(v);

        prop_assert_eq!(signed.map_err(|e| e.code()), Err(205));
        prop_assert_eq!(checked.map_err(|e| e.code()), Err(205));
        prop_assert_eq!(immutable.map_err(|e| e.code()), Err(205));
    }

    #[test]
    fn oversized_salt_fails_with_207(len in MAX_SALT_LEN + 1..=300, secret in any::<[u8; 32]>(), payload in payload()) {
        let salt = vec![7u8; len];
        let v = bencoded(&payload);

        let signed = MutableItem::sign(&secret, salt.clone(), 1, v.clone());
        let checked = MutableItem::new([0; 32], salt, 1, v, [0; 64]);

        prop_assert_eq!(signed.map_err(|e| e.code()), Err(207));
        prop_assert_eq!(checked.map_err(|e| e.code()), Err(207));
    }

    #[test]
    fn immutable_target_is_sha1_of_v(payload in payload()) {
        let v = bencoded(&payload);

        let item = ImmutableItem::new(v.clone()).expect("valid bencode");

        prop_assert_eq!(item.target(), grenache_core::dht::bep44::immutable_target(&v));
        prop_assert_eq!(item.v(), &v[..]);
    }
}

/// One step of a store scenario against a single mutable target (plus an immutable one).
#[derive(Debug, Clone)]
enum Op {
    Put {
        seq: usize,
        value: usize,
        cas: Option<i64>,
    },
    PutImmutable {
        value: usize,
    },
    Advance {
        secs: u64,
    },
}

const SEQS: usize = 5;
const VALUES: usize = 2;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SEQS, 0..VALUES, prop::option::of(0..SEQS as i64))
            .prop_map(|(seq, value, cas)| Op::Put { seq, value, cas }),
        1 => (0..VALUES).prop_map(|value| Op::PutImmutable { value }),
        1 => (0..120u64).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// Every (seq, value) item, signed once: signing in a debug build is slow.
fn signed_pool() -> Vec<Vec<Item>> {
    (0..SEQS)
        .map(|seq| {
            (0..VALUES)
                .map(|value| {
                    let v = bencoded(format!("value-{value}").as_bytes());
                    Item::Mutable(sign(&[5; 32], b"slot", seq as i64, &v))
                })
                .collect()
        })
        .collect()
}

/// Any instant will do as the origin: only offsets from it matter.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_never_goes_backwards_and_rejects_cleanly(ops in prop::collection::vec(op(), 1..40)) {
        let pool = signed_pool();
        let target = pool[0][0].target();
        let mut store = ItemStore::new(8, Duration::from_secs(2 * 60 * 60));
        let mut now = epoch();
        // The model: what the one mutable slot must hold.
        let mut model: Option<(i64, usize)> = None;

        for op in ops {
            match op {
                Op::Put { seq, value, cas } => {
                    let before = store.clone();
                    let item = pool[seq][value].clone();
                    let seq = seq as i64;

                    let result = store.put(now, item.clone(), cas);

                    let expected = match model {
                        None => Ok(()),
                        Some((old, _)) if cas.is_some_and(|c| c != old) => Err(PutError::CasMismatch),
                        Some((old, _)) if seq < old => Err(PutError::SeqTooLow),
                        Some((old, old_value)) if seq == old && value != old_value => Err(PutError::SeqTooLow),
                        Some(_) => Ok(()),
                    };
                    prop_assert_eq!(result, expected);
                    if result.is_err() {
                        prop_assert_eq!(&store, &before);
                    } else {
                        model = Some((seq, value));
                    }
                    let stored_seq = store.get(now, &target).and_then(Item::seq);
                    prop_assert_eq!(stored_seq, model.map(|(s, _)| s));
                    let before_seq = before.get(now, &target).and_then(Item::seq);
                    prop_assert!(before_seq <= stored_seq, "seq went backwards");
                }
                Op::PutImmutable { value } => {
                    let item = Item::Immutable(
                        ImmutableItem::new(bencoded(format!("imm-{value}").as_bytes())).expect("valid"),
                    );

                    let result = store.put(now, item.clone(), Some(3));

                    prop_assert_eq!(result, Ok(()));
                    prop_assert_eq!(store.get(now, &item.target()), Some(&item));
                }
                Op::Advance { secs } => now += Duration::from_secs(secs),
            }
            prop_assert!(store.len() <= 8);
        }
    }
}
