//! Bencode (BEP 3) over bendy's low-level decoder: zero-copy, canonical, bounded.
//!
//! [`decode`] accepts only canonical bencode: dictionary keys strictly ascending (so no
//! duplicates), no leading zeros or `-0` in integers or lengths. bendy enforces this and
//! we keep it, because canonical input is what makes `encode(decode(x)) == x` hold; that
//! in turn lets a BEP-44 `v` be stored and re-sent byte for byte and hashed to its target.
//! **A peer that sends unsorted keys is dropped.** Real DHTs (libtorrent, bittorrent-dht
//! through the `bencode` npm package) always sort, so this costs nothing in practice.
//!
//! Input is bounded twice: at most [`MAX_INPUT_LEN`] bytes (one UDP datagram) and at most
//! [`MAX_DEPTH`] nested lists or dictionaries, so a hostile packet can neither make us
//! allocate much nor recurse deeply.
//!
//! For building messages without a [`Value`] tree, [`write_dict`] writes straight into a
//! buffer.

use bendy::decoding::{Decoder, Object};

/// Largest input [`decode`] looks at: one UDP datagram (64 KiB).
pub const MAX_INPUT_LEN: usize = 64 * 1024;

/// Deepest nesting of lists and dictionaries [`decode`] accepts.
///
/// A KRPC message needs 3 levels (message, `a`/`r`, `values`); a BEP-44 `v` starts at
/// level 3 and is free-form, so 16 leaves it 14 levels. That is plenty for real values
/// (at most 1000 bytes each) while keeping the recursion shallow.
pub const MAX_DEPTH: usize = 16;

/// A decoded bencode value borrowing its byte strings from the input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value<'a> {
    /// An integer (`i42e`); bencode integers beyond `i64` are rejected.
    Int(i64),
    /// A byte string (`4:spam`), not necessarily UTF-8.
    Bytes(&'a [u8]),
    /// A list (`l...e`).
    List(Vec<Value<'a>>),
    /// A dictionary (`d...e`), in canonical key order.
    Dict(Dict<'a>),
}

/// A dictionary's entries in canonical order: keys strictly ascending, none twice.
///
/// A sorted vector rather than a tree: a KRPC message's dictionaries hold a handful of
/// short keys, so one allocation and a binary search cost less than a B-tree's nodes,
/// and every datagram decodes at least one (issue 16: decoding was a fifth of the core's
/// work per lookup). The order is the type's invariant, kept by its only constructors:
/// the decoder (which rejects unsorted input) and [`FromIterator`] (which sorts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dict<'a>(Vec<(&'a [u8], Value<'a>)>);

impl<'a> Dict<'a> {
    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        let at = self.0.binary_search_by(|(k, _)| (*k).cmp(key)).ok()?;
        self.0.get(at).map(|(_, v)| v)
    }

    /// The entries, keys ascending.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &Value<'a>)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sorts the entries; of two with the same key the later wins, as a map insert would.
impl<'a> FromIterator<(&'a [u8], Value<'a>)> for Dict<'a> {
    fn from_iter<I: IntoIterator<Item = (&'a [u8], Value<'a>)>>(entries: I) -> Self {
        let mut entries: Vec<_> = entries.into_iter().collect();
        // Stable, so equal keys keep their arrival order and the last of them is kept.
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut kept: Vec<(&'a [u8], Value<'a>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match kept.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => kept.push(entry),
            }
        }
        Dict(kept)
    }
}

impl<'a> Value<'a> {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The list items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(map) => Some(map),
            _ => None,
        }
    }

    /// The value under `key`, if this is a dictionary that has it.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.as_dict()?.get(key)
    }

    /// The canonical encoding of this value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode(self, &mut out);
        out
    }
}

/// Why [`decode`] rejected its input.
///
/// For the caller every variant means the same thing: the bytes are not a value we
/// accept, so drop them (and count the drop under [`BencodeError::as_str`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BencodeError {
    /// The input is longer than [`MAX_INPUT_LEN`]; it was not read at all.
    #[error("input of {len} bytes exceeds the {MAX_INPUT_LEN}-byte limit")]
    TooLarge {
        /// Length of the rejected input.
        len: usize,
    },
    /// The input is empty.
    #[error("empty input")]
    Empty,
    /// The input ends in the middle of a value (truncated datagram or bogus length).
    #[error("unexpected end of input")]
    UnexpectedEof,
    /// Dictionary keys are not strictly ascending: the sender's encoder is not canonical.
    #[error("dictionary keys unsorted or duplicated")]
    UnsortedKeys,
    /// Lists and dictionaries nest deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// An integer does not fit in an `i64`.
    #[error("integer out of i64 range")]
    IntegerOverflow,
    /// Bytes follow the first complete value.
    #[error("trailing bytes after the value")]
    TrailingBytes,
    /// Anything else that is not canonical bencode (bad token, `i03e`, `01:`, ...).
    #[error("malformed bencode")]
    Syntax,
}

impl BencodeError {
    /// A short stable label, fit for a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            BencodeError::TooLarge { .. } => "bencode_too_large",
            BencodeError::Empty => "bencode_empty",
            BencodeError::UnexpectedEof => "bencode_eof",
            BencodeError::UnsortedKeys => "bencode_unsorted_keys",
            BencodeError::TooDeep => "bencode_too_deep",
            BencodeError::IntegerOverflow => "bencode_int_overflow",
            BencodeError::TrailingBytes => "bencode_trailing_bytes",
            BencodeError::Syntax => "bencode_syntax",
        }
    }
}

/// Decodes exactly one canonical bencode value spanning all of `bytes`.
///
/// # Errors
/// [`BencodeError`] when the input is too large, too deep, not canonical, truncated, or
/// followed by trailing bytes.
pub fn decode(bytes: &[u8]) -> Result<Value<'_>, BencodeError> {
    if bytes.len() > MAX_INPUT_LEN {
        return Err(BencodeError::TooLarge { len: bytes.len() });
    }
    let mut decoder = Decoder::new(bytes).with_max_depth(MAX_DEPTH);
    let value = match decoder.next_object().map_err(classify)? {
        Some(object) => from_object(object)?,
        None => return Err(BencodeError::Empty),
    };
    // bendy happily stops after the first value (`i1eGARBAGE` decodes as 1).
    match decoder.next_object() {
        Ok(None) => Ok(value),
        Ok(Some(_)) | Err(_) => Err(BencodeError::TrailingBytes),
    }
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Int(n) => write_int(out, *n),
        Value::Bytes(b) => write_bytes(out, b),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(map) => {
            out.push(b'd');
            for (key, item) in map.iter() {
                write_bytes(out, key);
                encode(item, out);
            }
            out.push(b'e');
        }
    }
}

/// Appends `i<n>e`.
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.push(b'e');
}

/// Appends `<len>:<bytes>`.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// Appends a dictionary whose entries `f` writes through a [`DictWriter`].
pub fn write_dict(out: &mut Vec<u8>, f: impl FnOnce(&mut DictWriter<'_>)) {
    out.push(b'd');
    let mut writer = DictWriter { out, last: None };
    f(&mut writer);
    writer.out.push(b'e');
}

/// Writes dictionary entries straight into a buffer, without building a [`Value`].
///
/// Keys are `'static` (message field names) and must be written in strictly ascending
/// byte order, as canonical bencode requires; debug builds assert it.
#[derive(Debug)]
pub struct DictWriter<'o> {
    out: &'o mut Vec<u8>,
    last: Option<&'static [u8]>,
}

impl DictWriter<'_> {
    /// Writes an integer entry.
    pub fn int(&mut self, key: &'static [u8], n: i64) -> &mut Self {
        self.key(key);
        write_int(self.out, n);
        self
    }

    /// Writes a byte-string entry.
    pub fn bytes(&mut self, key: &'static [u8], bytes: &[u8]) -> &mut Self {
        self.key(key);
        write_bytes(self.out, bytes);
        self
    }

    /// Writes an entry whose value is already bencoded (`encoded` is copied verbatim).
    pub fn raw(&mut self, key: &'static [u8], encoded: &[u8]) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(encoded);
        self
    }

    /// Writes a nested dictionary entry.
    pub fn dict(&mut self, key: &'static [u8], f: impl FnOnce(&mut DictWriter<'_>)) -> &mut Self {
        self.key(key);
        write_dict(self.out, f);
        self
    }

    /// Writes a list entry whose items `f` appends with [`write_int`], [`write_bytes`] or
    /// [`encode`].
    pub fn list(&mut self, key: &'static [u8], f: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        self.out.push(b'l');
        f(self.out);
        self.out.push(b'e');
        self
    }

    fn key(&mut self, key: &'static [u8]) {
        debug_assert!(
            self.last.is_none_or(|last| last < key),
            "bencode dict keys out of order: {:?} after {:?}",
            String::from_utf8_lossy(key),
            self.last.map(String::from_utf8_lossy),
        );
        self.last = Some(key);
        write_bytes(self.out, key);
    }
}

/// Builds a [`Value`] from a bendy object, walking nested containers to the end.
fn from_object<'ser>(object: Object<'_, 'ser>) -> Result<Value<'ser>, BencodeError> {
    match object {
        // bendy has already checked the digits are canonical; only the range remains.
        Object::Integer(digits) => digits
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| BencodeError::IntegerOverflow),
        Object::Bytes(bytes) => Ok(Value::Bytes(bytes)),
        Object::List(mut list) => {
            let mut items = Vec::new();
            while let Some(item) = list.next_object().map_err(classify)? {
                items.push(from_object(item)?);
            }
            Ok(Value::List(items))
        }
        Object::Dict(mut dict) => {
            let mut entries = Vec::new();
            // bendy rejects a key not strictly above the one before it, so pushing in
            // arrival order keeps `Dict`'s invariant.
            while let Some((key, item)) = dict.next_pair().map_err(classify)? {
                entries.push((key, from_object(item)?));
            }
            Ok(Value::Dict(Dict(entries)))
        }
    }
}

/// Maps a bendy error onto ours.
///
/// bendy keeps its structural error type private, so the kind is read from the text of
/// the error's source. The unit tests pin every mapping, so a bendy upgrade that rewords
/// them fails loudly instead of silently turning into [`BencodeError::Syntax`].
fn classify(err: bendy::decoding::Error) -> BencodeError {
    let Some(source) = std::error::Error::source(&err) else {
        return BencodeError::Syntax;
    };
    match source.to_string().as_str() {
        "Keys were not sorted" => BencodeError::UnsortedKeys,
        "Maximum nesting depth exceeded" => BencodeError::TooDeep,
        "Reached EOF in the middle of a message" => BencodeError::UnexpectedEof,
        _ => BencodeError::Syntax,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut bytes = vec![b'l'; depth];
        bytes.extend(std::iter::repeat_n(b'e', depth));
        bytes
    }

    #[test]
    fn decodes_every_type_zero_copy() {
        let input = b"d3:bari-7e3:fooli1e4:spamee";

        let value = decode(input).expect("valid bencode");

        assert_eq!(value.get(b"bar").and_then(Value::as_int), Some(-7));
        let list = value.get(b"foo").and_then(Value::as_list).expect("a list");
        assert_eq!(list, [Value::Int(1), Value::Bytes(b"spam")]);
        // The byte string points into the input, not a copy.
        let spam = list[1].as_bytes().expect("bytes");
        assert!(input.as_ptr_range().contains(&spam.as_ptr()));
    }

    #[test]
    fn accessors_reject_other_types() {
        let value = Value::Int(3);

        assert_eq!(value.as_bytes(), None);
        assert_eq!(value.as_list(), None);
        assert_eq!(value.as_dict(), None);
        assert_eq!(value.get(b"x"), None);
        assert_eq!(Value::Bytes(b"x").as_int(), None);
    }

    #[test]
    fn round_trips_canonical_input_byte_for_byte() {
        let inputs: [&[u8]; 7] = [
            b"i0e",
            b"i-9223372036854775808e",
            b"0:",
            b"le",
            b"de",
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
            b"l4:spami42ed1:xleee",
        ];
        for input in inputs {
            let value = decode(input).expect("valid bencode");

            let mut out = Vec::new();
            encode(&value, &mut out);

            assert_eq!(out, input, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn rejects_unsorted_and_duplicate_keys() {
        // Peers that do not sort their keys are dropped (module docs).
        assert_eq!(decode(b"d1:bi1e1:ai2ee"), Err(BencodeError::UnsortedKeys));
        assert_eq!(decode(b"d1:ai1e1:ai2ee"), Err(BencodeError::UnsortedKeys));
        assert_eq!(decode(b"ld1:bi1e1:ai2eee"), Err(BencodeError::UnsortedKeys));
    }

    #[test]
    fn rejects_non_canonical_numbers() {
        for input in [&b"i03e"[..], b"i-0e", b"01:a", b"i+1e", b"ie", b"-1:a"] {
            assert_eq!(decode(input), Err(BencodeError::Syntax), "{input:?}");
        }
    }

    #[test]
    fn rejects_integers_beyond_i64() {
        assert_eq!(
            decode(b"i9223372036854775808e"),
            Err(BencodeError::IntegerOverflow)
        );
        assert_eq!(
            decode(b"li1ei99999999999999999999ee"),
            Err(BencodeError::IntegerOverflow)
        );
    }

    #[test]
    fn rejects_trailing_bytes() {
        assert_eq!(decode(b"i1eGARBAGE"), Err(BencodeError::TrailingBytes));
        assert_eq!(decode(b"i1ei2e"), Err(BencodeError::TrailingBytes));
        assert_eq!(decode(b"dee"), Err(BencodeError::TrailingBytes));
    }

    #[test]
    fn rejects_truncated_input() {
        assert_eq!(decode(b""), Err(BencodeError::Empty));
        assert_eq!(decode(b"d1:a"), Err(BencodeError::UnexpectedEof));
        assert_eq!(decode(b"5:ab"), Err(BencodeError::UnexpectedEof));
        assert_eq!(decode(b"99999999999:x"), Err(BencodeError::UnexpectedEof));
        assert_eq!(decode(b"l"), Err(BencodeError::UnexpectedEof));
    }

    #[test]
    fn rejects_non_string_keys_and_missing_values() {
        assert_eq!(decode(b"di1ei2ee"), Err(BencodeError::Syntax));
        assert_eq!(decode(b"d1:ae"), Err(BencodeError::Syntax));
        assert_eq!(decode(b"e"), Err(BencodeError::Syntax));
        assert_eq!(decode(b"x"), Err(BencodeError::Syntax));
    }

    #[test]
    fn limits_depth() {
        assert!(decode(&nested_lists(MAX_DEPTH)).is_ok());

        assert_eq!(
            decode(&nested_lists(MAX_DEPTH + 1)),
            Err(BencodeError::TooDeep)
        );
        assert_eq!(decode(&nested_lists(30_000)), Err(BencodeError::TooDeep));
    }

    #[test]
    fn limits_input_size() {
        let mut big = format!("{}:", MAX_INPUT_LEN - 6).into_bytes();
        big.resize(MAX_INPUT_LEN, b'x');
        assert!(decode(&big).is_ok());

        big.push(b'x');

        assert_eq!(
            decode(&big),
            Err(BencodeError::TooLarge {
                len: MAX_INPUT_LEN + 1
            })
        );
    }

    #[test]
    fn a_dict_built_from_entries_is_canonical_and_the_last_duplicate_wins() {
        let dict: Dict<'_> = [
            (&b"y"[..], Value::Int(1)),
            (&b"a"[..], Value::Int(2)),
            (&b"y"[..], Value::Int(3)),
        ]
        .into_iter()
        .collect();

        assert_eq!(dict.len(), 2);
        assert_eq!(dict.get(b"y"), Some(&Value::Int(3)));
        assert_eq!(dict.get(b"b"), None);
        let value = Value::Dict(dict);
        assert_eq!(value.to_bytes(), b"d1:ai2e1:yi3ee");
        assert_eq!(decode(b"d1:ai2e1:yi3ee"), Ok(value));
    }

    #[test]
    fn dict_lookups_find_every_key_of_a_decoded_dict() {
        let value = decode(b"d1:ai1e2:bbi2e1:ci3e3:zzzi4ee").expect("canonical");
        for (key, n) in [(&b"a"[..], 1), (b"bb", 2), (b"c", 3), (b"zzz", 4)] {
            assert_eq!(value.get(key), Some(&Value::Int(n)), "{key:?}");
        }
        for missing in [&b""[..], b"b", b"bbb", b"d", b"zz"] {
            assert_eq!(value.get(missing), None, "{missing:?}");
        }
    }

    #[test]
    fn dict_writer_writes_canonical_dicts() {
        let mut out = Vec::new();

        write_dict(&mut out, |d| {
            d.dict(b"a", |a| {
                a.bytes(b"id", b"abcdefghij0123456789");
            })
            .bytes(b"q", b"ping")
            .bytes(b"t", b"aa")
            .bytes(b"y", b"q");
        });

        assert_eq!(
            out,
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
        );
    }

    #[test]
    fn dict_writer_handles_lists_ints_and_raw() {
        let mut out = Vec::new();

        write_dict(&mut out, |d| {
            d.list(b"e", |l| {
                write_int(l, 201);
                write_bytes(l, b"x");
            })
            .int(b"n", -3)
            .raw(b"v", b"le");
        });

        assert_eq!(out, b"d1:eli201e1:xe1:ni-3e1:vlee");
    }

    #[test]
    #[should_panic(expected = "out of order")]
    #[cfg(debug_assertions)]
    fn dict_writer_asserts_key_order() {
        let mut out = Vec::new();
        write_dict(&mut out, |d| {
            d.int(b"b", 1).int(b"a", 2);
        });
    }

    #[test]
    fn to_bytes_matches_encode() {
        let value = Value::List(vec![Value::Int(1), Value::Bytes(b"ab")]);

        assert_eq!(value.to_bytes(), b"li1e2:abe");
    }
}
