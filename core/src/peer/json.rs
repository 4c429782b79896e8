//! Payload JSON as JavaScript reads and writes it (docs/protocol.md §8).
//!
//! A Grenache peer carries other people's data, and many of them hash or sign the text
//! they send, so a payload must leave as it came. Three rules make that so for any text
//! `JSON.stringify` writes:
//! * object keys keep their order (serde_json's `preserve_order`, set for the workspace);
//! * numbers are written as `JSON.stringify` writes them ([`push_json`]): `1e+21`, not
//!   `1e21`; `0.000001`, not `1e-6`. Integers keep all their digits;
//! * JSON that `JSON.parse` accepts but a [`Value`] cannot hold (a lone UTF-16 surrogate
//!   such as `"\ud800"`, a number past `f64`, nesting deeper than 128) is refused with a
//!   [`PayloadError`] that says which, never turned into some other value.

use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Why a payload that Node's `JSON.parse` accepts is refused: we could not pass it on
/// unchanged. The message is what the peer at the other end receives as the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// A string holds half of a UTF-16 surrogate pair (`"\ud800"`): JavaScript strings
    /// can, Rust strings cannot, and replacing it would change the value.
    #[error("ERR_PAYLOAD_LONE_SURROGATE")]
    LoneSurrogate,
    /// A number too large for a double (`1e400`; JavaScript reads `Infinity`).
    #[error("ERR_PAYLOAD_NUMBER_RANGE")]
    NumberRange,
    /// Arrays and objects nested deeper than serde_json's 128 levels.
    #[error("ERR_PAYLOAD_TOO_DEEP")]
    TooDeep,
}

/// Why [`read_json`] gave no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON at all.
    NotJson,
    /// JSON, but refused.
    Refused(PayloadError),
}

/// Reads one JSON text into a [`Value`], or says why not.
///
/// The fast path is serde_json alone; only a text it refuses is looked at again, to tell
/// JSON we cannot hold from bytes that are not JSON.
pub(crate) fn read_json(bytes: &[u8]) -> Result<Value, JsonError> {
    serde_json::from_slice(bytes).map_err(|e| classify(bytes, &e))
}

/// The items of a JSON array, each as its raw text, when `bytes` is well-formed JSON by
/// a reader that does not hold strings or numbers (it takes lone surrogates and `1e400`).
pub(crate) fn raw_items(bytes: &[u8]) -> Option<Vec<&RawValue>> {
    serde_json::from_slice(bytes).ok()
}

fn classify(bytes: &[u8], err: &serde_json::Error) -> JsonError {
    if serde_json::from_slice::<&RawValue>(bytes).is_err() {
        return JsonError::NotJson;
    }
    if has_lone_surrogate(bytes) {
        return JsonError::Refused(PayloadError::LoneSurrogate);
    }
    // serde_json gives these two no error category of their own; its messages are pinned
    // by the tests below.
    let msg = err.to_string();
    if msg.starts_with("recursion limit exceeded") {
        JsonError::Refused(PayloadError::TooDeep)
    } else if msg.starts_with("number out of range") {
        JsonError::Refused(PayloadError::NumberRange)
    } else {
        tracing::debug!(error = %err, "JSON refused for a reason not classified");
        JsonError::NotJson
    }
}

/// Whether a JSON text has a `\uD800`–`\uDFFF` escape that is not half of a pair.
///
/// Backslashes occur only inside strings in well-formed JSON, so escapes can be read
/// without tracking where strings start and end.
fn has_lone_surrogate(bytes: &[u8]) -> bool {
    let mut i = 0;
    while let Some(off) = bytes
        .get(i..)
        .and_then(|b| b.iter().position(|&c| c == b'\\'))
    {
        i += off;
        match bytes.get(i + 1) {
            Some(b'u') => match surrogate_at(bytes, i) {
                Some(Surrogate::High) if surrogate_at(bytes, i + 6) == Some(Surrogate::Low) => {
                    i += 12;
                }
                Some(_) => return true,
                None => i += 6,
            },
            _ => i += 2,
        }
    }
    false
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Surrogate {
    High,
    Low,
}

/// The surrogate half escaped as `\uXXXX` at `at`, if that is what is there.
fn surrogate_at(bytes: &[u8], at: usize) -> Option<Surrogate> {
    let esc = bytes.get(at..at + 6)?;
    if esc.get(..2)? != b"\\u" {
        return None;
    }
    let hex = std::str::from_utf8(esc.get(2..)?).ok()?;
    match u16::from_str_radix(hex, 16).ok()? {
        0xD800..=0xDBFF => Some(Surrogate::High),
        0xDC00..=0xDFFF => Some(Surrogate::Low),
        _ => None,
    }
}

/// `v` as the JSON text our peers send for it: compact, keys in their order, numbers as
/// `JSON.stringify` writes them. A caller who signs or hashes a payload should use this,
/// not serde_json's `to_string` (which writes `1e21` where we send `1e+21`).
pub fn payload_text(v: &Value) -> String {
    let mut out = Vec::new();
    push_json(&mut out, v);
    crate::peer::framing::json_text(out)
}

/// Appends `v` as compact JSON, with numbers as `JSON.stringify` writes them.
///
/// The same bytes as serde_json's serializer with [`JsFormatter`], but strings are
/// escaped a word at a time: serde_json looks at each byte on its own, and for payloads
/// of kilobytes of text that was a quarter of an echo server's CPU.
pub(crate) fn push_json(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => push_json_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(out, key);
                out.push(b':');
                push_json(out, item);
            }
            out.push(b'}');
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {
            let mut ser = serde_json::Serializer::with_formatter(&mut *out, JsFormatter);
            // Serializing a `Value` into a Vec cannot fail.
            if let Err(e) = v.serialize(&mut ser) {
                tracing::error!(error = %e, "serializing a JSON value failed");
            }
        }
    }
}

/// Appends `s` as a JSON string, escaped as serde_json (and `JSON.stringify`) escape it.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(at) = first_to_escape(rest) {
        let (run, tail) = rest.split_at(at);
        out.extend_from_slice(run);
        let Some((&byte, tail)) = tail.split_first() else {
            break;
        };
        push_escape(out, byte);
        rest = tail;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// The index of the first byte JSON must escape: a control character, `"` or `\`.
/// Eight bytes at a time, with the usual word tricks; a word that may hold one is then
/// looked at byte by byte.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const fn has_zero_byte(w: u64) -> bool {
        w.wrapping_sub(ONES) & !w & HIGHS != 0
    }
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let w = u64::from_ne_bytes(<[u8; 8]>::try_from(word).unwrap_or([0; 8]));
        // A byte below 0x20 (high bit clear, and below after subtracting 0x20), or one
        // equal to `"` or `\\`.
        let below = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
        let maybe = below
            || has_zero_byte(w ^ (ONES * u64::from(b'"')))
            || has_zero_byte(w ^ (ONES * u64::from(b'\\')));
        if maybe && let Some(i) = word.iter().position(|&b| special(b)) {
            return Some(at + i);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| special(b))
        .map(|i| at + i)
}

/// The escape of one byte that [`first_to_escape`] stopped at.
fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// serde_json's compact output, except floats, laid out as JavaScript's `Number#toString`.
struct JsFormatter;

impl serde_json::ser::Formatter for JsFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write_js_number(writer, value)
    }
}

/// [`write_js_number`] into a new string.
#[cfg(test)]
fn js_number(value: f64) -> String {
    let mut out = Vec::new();
    let _ = write_js_number(&mut out, value);
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes a double as `JSON.stringify` does (ECMAScript `Number::toString`): the shortest
/// digits that read back to the same double, in plain notation from 1e-6 up to 1e21 and
/// as `d.ddde±x` outside that; what is not finite is `null`. One departure: `-0` stays
/// `-0` (JavaScript writes `0`), so a value read from `-0` leaves unchanged; Node itself
/// never writes `-0`. No allocation: payloads can hold thousands of numbers.
fn write_js_number<W: ?Sized + io::Write>(w: &mut W, value: f64) -> io::Result<()> {
    const ZEROS: &[u8] = b"000000000000000000000";
    if !value.is_finite() {
        return w.write_all(b"null");
    }
    if value == 0.0 {
        return w.write_all(if value.is_sign_negative() {
            b"-0"
        } else {
            b"0"
        });
    }
    let mut buf = zmij::Buffer::new();
    let text = buf.format_finite(value).as_bytes();
    // zmij writes plain notation for 1e-5 <= |x| < 1e16, inside JavaScript's range (1e-6 to
    // 1e21), and the same digits; only an integral value's ".0" differs. The common case.
    if !text.contains(&b'e') {
        return w.write_all(text.strip_suffix(b".0").unwrap_or(text));
    }
    let mut digits = [0u8; 32];
    let (k, n) = shortest_digits(text.strip_prefix(b"-").unwrap_or(text), &mut digits);
    let digits = digits.get(..k).unwrap_or_default();
    let k = i64::try_from(k).unwrap_or(i64::MAX);
    let zeros = |count: i64| {
        ZEROS
            .get(..usize::try_from(count).unwrap_or(0))
            .unwrap_or_default()
    };
    if value < 0.0 {
        w.write_all(b"-")?;
    }
    if k <= n && n <= 21 {
        w.write_all(digits)?;
        w.write_all(zeros(n - k))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(usize::try_from(n).unwrap_or(0));
        w.write_all(int)?;
        w.write_all(b".")?;
        w.write_all(frac)
    } else if -6 < n && n <= 0 {
        w.write_all(b"0.")?;
        w.write_all(zeros(-n))?;
        w.write_all(digits)
    } else {
        let (first, rest) = digits.split_at(1);
        w.write_all(first)?;
        if !rest.is_empty() {
            w.write_all(b".")?;
            w.write_all(rest)?;
        }
        let sign = if n > 0 { '+' } else { '-' };
        write!(w, "e{sign}{}", (n - 1).abs())
    }
}

/// The digits of `text`, a positive double as zmij (serde_json's float writer) writes it
/// with the shortest digits that read back to it, without leading or trailing zeros, into
/// `out`; returns how many and `n` with `value = 0.DIGITS × 10^n`. Any layout is read, so
/// whether zmij writes `1e21` or `1e+21` does not matter.
fn shortest_digits(text: &[u8], out: &mut [u8; 32]) -> (usize, i64) {
    let e_at = text.iter().position(|c| matches!(c, b'e' | b'E'));
    let (mantissa, exp) = match e_at {
        Some(at) => text.split_at(at),
        None => (text, &b""[..]),
    };
    let exp: i64 = std::str::from_utf8(exp.get(1..).unwrap_or_default())
        .ok()
        .and_then(|e| e.trim_start_matches('+').parse().ok())
        .unwrap_or(0);
    let int_len = mantissa
        .iter()
        .position(|&c| c == b'.')
        .unwrap_or(mantissa.len());
    let mut n = i64::try_from(int_len).unwrap_or(0) + exp;
    let mut k = 0;
    for &c in mantissa.iter().filter(|c| c.is_ascii_digit()) {
        if k == 0 && c == b'0' {
            n -= 1; // a leading zero: 0.05 is 0.5 × 10^-1
            continue;
        }
        if let Some(d) = out.get_mut(k) {
            *d = c;
            k += 1;
        }
    }
    while k > 1 && out.get(k - 1) == Some(&b'0') {
        k -= 1;
    }
    (k, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(v: &Value) -> String {
        payload_text(v)
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        // Every ASCII byte, alone and at every offset of a word (the scan reads eight at a
        // time), and a few multi-byte characters around them.
        for byte in 0u8..0x80 {
            let c = char::from(byte);
            for at in 0..20 {
                let mut text: String = "abcdefghijklmnopqrstu".chars().take(at).collect();
                text.push(c);
                text.push_str("é€😀xyz");
                let v = Value::from(text.clone());
                let expected = serde_json::to_string(&v).unwrap_or_default();
                assert_eq!(written(&v), expected, "{text:?}");
                let key = serde_json::json!({ text.clone(): [text.clone(), 1, null, true] });
                let expected = serde_json::to_string(&key).unwrap_or_default();
                assert_eq!(written(&key), expected, "{text:?} as a key");
            }
        }
    }

    #[test]
    fn numbers_are_written_as_json_stringify_does() {
        // Each pair: the double, and what Node 20's JSON.stringify writes for it (but -0).
        let cases: [(f64, &str); 16] = [
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (1.5, "1.5"),
            (-0.0, "-0"),
            (0.000_001, "0.000001"),
            (1e-7, "1e-7"),
            (-1.5e-7, "-1.5e-7"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.234_567_890_123_456_8e25, "1.2345678901234568e+25"),
            (2.0, "2"),
            (-12.5, "-12.5"),
            (0.5, "0.5"),
            (123.456e-5, "0.00123456"),
        ];
        for (value, want) in cases {
            assert_eq!(js_number(value), want, "{value:e}");
        }
        assert_eq!(js_number(f64::NAN), "null");
    }

    #[test]
    fn texts_node_writes_come_back_byte_for_byte() {
        let texts = [
            r#"{"z":1,"a":2,"m":3,"B":4,"é":5,"10":6,"9":7}"#,
            r#"[1e+21,1.5e-7,0.000001,100000000000000000000,-0.5,18446744073709552000]"#,
            "{\"s\":\"\\u0000\\u001f\\\"\\\\\\n\\t\\b\\f\\r /\u{7f}\u{2028}😀\"}",
            r#"{"b":{"y":[true,false,null],"x":{}},"a":[]}"#,
        ];
        for text in texts {
            let value = read_json(text.as_bytes()).expect("JSON");
            assert_eq!(written(&value), text);
        }
    }

    #[test]
    fn json_we_cannot_hold_is_refused_with_the_reason() {
        let refused = |t: &str| read_json(t.as_bytes()).err();
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));

        assert_eq!(
            refused(r#"{"s":"\ud800 x"}"#),
            Some(JsonError::Refused(PayloadError::LoneSurrogate))
        );
        assert_eq!(
            refused(r#"["\udc00"]"#),
            Some(JsonError::Refused(PayloadError::LoneSurrogate))
        );
        assert_eq!(
            refused(r#""\ud83d\ud83d""#),
            Some(JsonError::Refused(PayloadError::LoneSurrogate))
        );
        assert_eq!(
            refused("1e400"),
            Some(JsonError::Refused(PayloadError::NumberRange))
        );
        assert_eq!(
            refused(&deep),
            Some(JsonError::Refused(PayloadError::TooDeep))
        );
        assert_eq!(refused(r#"{"s":"\ud83d\ude00"}"#), None, "a pair is fine");
        assert_eq!(refused(r#"{"s":"\\ud800"}"#), None, "an escaped backslash");
        assert_eq!(refused("{\"s\":"), Some(JsonError::NotJson));
        assert_eq!(refused("hello"), Some(JsonError::NotJson));
    }
}
