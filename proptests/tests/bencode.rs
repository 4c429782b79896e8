//! Property tests for `grenache_core::dht::bencode`: round trips, canonical form, no panics.

use std::collections::BTreeMap;

use grenache_core::dht::bencode::{self, Value};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

/// An owned bencode tree, since `Value` borrows its byte strings.
#[derive(Clone, Debug)]
enum Owned {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Owned>),
    Dict(BTreeMap<Vec<u8>, Owned>),
}

impl Owned {
    fn borrow(&self) -> Value<'_> {
        match self {
            Owned::Int(n) => Value::Int(*n),
            Owned::Bytes(b) => Value::Bytes(b),
            Owned::List(items) => Value::List(items.iter().map(Owned::borrow).collect()),
            Owned::Dict(map) => Value::Dict(
                map.iter()
                    .map(|(k, v)| (k.as_slice(), v.borrow()))
                    .collect(),
            ),
        }
    }
}

/// Trees up to 6 levels deep: well inside `bencode::MAX_DEPTH`.
fn owned() -> impl Strategy<Value = Owned> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Owned::Int),
        vec(any::<u8>(), 0..24).prop_map(Owned::Bytes),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Owned::List),
            btree_map(vec(any::<u8>(), 0..8), inner, 0..8).prop_map(Owned::Dict),
        ]
    })
}

/// A small edit of a byte string: overwrite, insert or delete one byte.
#[derive(Clone, Debug)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len();
    match *edit {
        Edit::Set(i, b) if len > 0 => bytes[i % len] = b,
        Edit::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Edit::Delete(i) if len > 0 => {
            bytes.remove(i % len);
        }
        _ => {}
    }
}

/// What every accepted input must satisfy: it re-encodes to itself.
fn assert_canonical(input: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(value) = bencode::decode(input) {
        let mut out = Vec::new();
        bencode::encode(&value, &mut out);
        prop_assert_eq!(out, input);
    }
    Ok(())
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(tree in owned()) {
        let value = tree.borrow();
        let mut bytes = Vec::new();

        bencode::encode(&value, &mut bytes);

        prop_assert_eq!(bencode::decode(&bytes), Ok(value));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        assert_canonical(&bytes)?;
    }

    #[test]
    fn bencode_alphabet_never_panics(
        bytes in vec(prop::sample::select(b"0123456789-:ilde".to_vec()), 0..64),
    ) {
        // Mostly-bencode noise reaches far more decoder states than random bytes.
        assert_canonical(&bytes)?;
    }

    #[test]
    fn edited_encodings_never_panic(tree in owned(), edits in vec(edit(), 1..4)) {
        let mut bytes = Vec::new();
        bencode::encode(&tree.borrow(), &mut bytes);

        for edit in &edits {
            apply(&mut bytes, edit);
        }

        assert_canonical(&bytes)?;
    }
}
