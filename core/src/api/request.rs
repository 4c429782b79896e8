//! Parsing and validating Grape API requests into typed commands.
//!
//! Each check mirrors one in the Node.js Grape 1.0 (lib/Grape.js) or bittorrent-dht 10
//! (`put`), in the same order, with the same error string. Where the Node Grape would crash
//! (a port of 70000) or throw a `TypeError` from deep inside, we answer the nearest error
//! string of that command instead; see [`ApiError`] for the strings.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::dht::bep44::{MAX_SALT_LEN, MAX_V_LEN};
use crate::dht::id::{Key, unhex};

/// Deepest nesting of a `/put` value; serde_json's own limit (128) is the outer bound.
const MAX_V_DEPTH: usize = 32;

/// A Grape API command, named by the request path (`/lookup`) or the WebSocket `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommandKind {
    /// `announce`: `[name, port]`.
    Announce,
    /// `unannounce`: `[name, port]` (ours; the Node Grape has no such command).
    Unannounce,
    /// `lookup`: `name`.
    Lookup,
    /// `put`: `{v, k?, sig?, seq?, salt?, cas?}`.
    Put,
    /// `get`: `hash` or `{hash, salt?}`.
    Get,
}

impl CommandKind {
    /// All commands, in a fixed order (for metrics).
    pub const ALL: [CommandKind; 5] = [
        CommandKind::Announce,
        CommandKind::Lookup,
        CommandKind::Put,
        CommandKind::Get,
        CommandKind::Unannounce,
    ];

    /// Finds the command a request type names, as the Node Grape does.
    ///
    /// The Node Grape looks up the method `handlePeer` + `upperFirst(camelCase('-' + type))`,
    /// so `Lookup`, `lookup_` and `-lookup` work too, while `lookup?x=1` and `LOOKUP` do not.
    pub fn from_type(ty: &str) -> Option<Self> {
        // The common spellings first: this runs on every request.
        match ty {
            "lookup" => return Some(CommandKind::Lookup),
            "announce" => return Some(CommandKind::Announce),
            "put" => return Some(CommandKind::Put),
            "get" => return Some(CommandKind::Get),
            "unannounce" => return Some(CommandKind::Unannounce),
            _ => {}
        }
        match upper_first(&camel_case(&format!("-{ty}"))).as_str() {
            "Lookup" => Some(CommandKind::Lookup),
            "Announce" => Some(CommandKind::Announce),
            "Unannounce" => Some(CommandKind::Unannounce),
            "Put" => Some(CommandKind::Put),
            "Get" => Some(CommandKind::Get),
            _ => None,
        }
    }

    /// Finds the command an HTTP request target names: everything after its first character,
    /// query string included, as the Node Grape's `req.url.substr(1)`.
    pub fn from_path(path: &str) -> Option<Self> {
        let mut chars = path.chars();
        chars.next();
        Self::from_type(chars.as_str())
    }

    /// The lower-case name, as in the path.
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandKind::Announce => "announce",
            CommandKind::Unannounce => "unannounce",
            CommandKind::Lookup => "lookup",
            CommandKind::Put => "put",
            CommandKind::Get => "get",
        }
    }
}

/// A validated command, ready to run against the DHT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Announce a service under `name` at `port` on this host.
    Announce {
        /// Info-hash: the raw UTF-8 bytes of the service name (docs/protocol.md §4.2).
        name: Key,
        /// `None` for port 0, which the Node Grape replaces with its own DHT port: the same
        /// as BEP 5's `implied_port`.
        port: Option<u16>,
    },
    /// Withdraw an announce of `name` at `port` made through this Grape.
    Unannounce {
        /// Info-hash: the raw UTF-8 bytes of the service name.
        name: Key,
        /// The announced port (never 0).
        port: u16,
    },
    /// Find the peers of a service.
    Lookup {
        /// Info-hash: the raw UTF-8 bytes of the service name.
        name: Key,
    },
    /// Store a BEP 44 item.
    Put(PutRequest),
    /// Fetch a BEP 44 item.
    Get {
        /// The 20-byte target.
        target: [u8; 20],
        /// Salt of a mutable item, if any (at most 64 bytes).
        salt: Option<Vec<u8>>,
    },
}

/// A `/put` whose fields are checked but whose signature is not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRequest {
    /// `v`, bencoded (at most [`MAX_V_LEN`] bytes).
    pub v: Vec<u8>,
    /// The mutable-item fields, when `k` was given.
    pub mutable: Option<MutablePut>,
}

/// The mutable part of a `/put` (BEP 44).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutablePut {
    /// ed25519 public key.
    pub k: [u8; 32],
    /// ed25519 signature over `salt`, `seq` and `v`.
    pub sig: [u8; 64],
    /// Salt (empty when none), at most [`MAX_SALT_LEN`] bytes.
    pub salt: Vec<u8>,
    /// Sequence number.
    pub seq: i64,
    /// Compare-and-swap: the `seq` the stored item must have.
    pub cas: Option<i64>,
}

/// Reads an API body `{rid, data}` and returns `data` (`None` when absent).
///
/// The body is decoded as UTF-8 with replacement characters, as Node's `buf.toString()`.
///
/// # Errors
/// [`ApiError::PayloadInvalid`] when the body is not JSON, or is JSON `null` (on which the
/// Node Grape throws a `TypeError` and answers 500 too).
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let text = String::from_utf8_lossy(body);
    let msg: Value = serde_json::from_str(&text).map_err(|_| ApiError::PayloadInvalid)?;
    if msg.is_null() {
        return Err(ApiError::PayloadInvalid);
    }
    Ok(msg)
}

/// `msg.data` as JavaScript sees it: absent unless `msg` is an object with that key.
pub fn data_of(msg: &Value) -> Option<&Value> {
    msg.as_object()?.get("data")
}

/// Validates `data` for `kind`.
///
/// # Errors
/// The Node Grape's error for the first check that fails; see each command's parser.
pub fn parse_command(kind: CommandKind, data: Option<&Value>) -> Result<Command, ApiError> {
    match kind {
        CommandKind::Lookup => parse_lookup(data),
        CommandKind::Announce => parse_announce(data),
        CommandKind::Unannounce => parse_unannounce(data),
        CommandKind::Put => parse_put(data).map(Command::Put),
        CommandKind::Get => parse_get(data),
    }
}

/// `/lookup`: a non-empty string (Node: `!val || typeof val !== 'string'`), at most 256 bytes.
fn parse_lookup(data: Option<&Value>) -> Result<Command, ApiError> {
    let Some(Value::String(name)) = data else {
        return Err(ApiError::Lookup);
    };
    let name = Key::new(name.as_bytes()).ok_or(ApiError::Lookup)?;
    Ok(Command::Lookup { name })
}

/// `/announce`: an array, then an integer port, then the name (the Node Grape's order).
fn parse_announce(data: Option<&Value>) -> Result<Command, ApiError> {
    let (name, port) = name_and_port(data, ApiError::Announce)?;
    Ok(Command::Announce {
        name,
        port: (port != 0).then_some(port),
    })
}

/// `/unannounce`: as `/announce`, but port 0 (the DHT port) cannot be withdrawn: the
/// node does not know which port that was.
fn parse_unannounce(data: Option<&Value>) -> Result<Command, ApiError> {
    let (name, port) = name_and_port(data, ApiError::Unannounce)?;
    if port == 0 {
        return Err(ApiError::ServicePort);
    }
    Ok(Command::Unannounce { name, port })
}

/// `[name, port]`: an array, then an integer port, then the name, each failing with
/// `shape` or [`ApiError::ServicePort`].
fn name_and_port(data: Option<&Value>, shape: ApiError) -> Result<(Key, u16), ApiError> {
    let Some(Value::Array(items)) = data else {
        return Err(shape);
    };
    let port = items
        .get(1)
        .and_then(js_integer)
        .ok_or(ApiError::ServicePort)?;
    // The Node Grape crashes on ports outside 0..=65535; we refuse them instead.
    if !(0.0..=65535.0).contains(&port) {
        return Err(ApiError::ServicePort);
    }
    let Some(Value::String(name)) = items.first() else {
        return Err(shape);
    };
    let name = Key::new(name.as_bytes()).ok_or(shape)?;
    Ok((name, port as u16))
}

/// `/put`: bittorrent-dht's checks, in its order, after the Grape's conversions of `k`,
/// `sig` and `salt` from hex, byte arrays or strings.
fn parse_put(data: Option<&Value>) -> Result<PutRequest, ApiError> {
    let opts: Cow<'_, Map<String, Value>> = match data {
        // bittorrent-dht's put turns a bare string into `{v: string}`.
        Some(Value::String(s)) => {
            let mut m = Map::new();
            m.insert("v".into(), Value::String(s.clone()));
            Cow::Owned(m)
        }
        Some(Value::Object(m)) => Cow::Borrowed(m),
        _ => return Err(ApiError::ValueMissing),
    };
    let is_mutable = truthy(opts.get("k"));
    // The Grape converts salt before anything else; a salt that is neither a string nor bytes
    // throws a TypeError there (500).
    let salt = if is_mutable && truthy(opts.get("salt")) {
        let raw = opts.get("salt").ok_or(ApiError::PayloadInvalid)?;
        Some(str2buf(raw, Encoding::Utf8).ok_or(ApiError::PayloadInvalid)?)
    } else {
        None
    };

    let v = match opts.get("v") {
        None | Some(Value::Null) => return Err(ApiError::ValueMissing),
        Some(v) => v,
    };
    if js_length(v).is_some_and(|len| len >= MAX_V_LEN) {
        return Err(ApiError::ValueTooLong);
    }
    let mutable = if is_mutable {
        let cas = match opts.get("cas") {
            None => None,
            Some(c) => Some(js_i64(c).ok_or(ApiError::Cas)?),
        };
        let k = opts
            .get("k")
            .and_then(|k| str2buf(k, Encoding::Hex))
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or(ApiError::PublicKey)?;
        let sig = opts
            .get("sig")
            .filter(|s| truthy(Some(s)))
            .and_then(|s| str2buf(s, Encoding::Hex))
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .ok_or(ApiError::SignatureMissing)?;
        let salt = salt.unwrap_or_default();
        if salt.len() > MAX_SALT_LEN {
            return Err(ApiError::SaltTooLong);
        }
        let seq = opts.get("seq").ok_or(ApiError::SeqMissing)?;
        let seq = js_i64(seq).ok_or(ApiError::SeqNotInteger)?;
        Some(MutablePut {
            k,
            sig,
            salt,
            seq,
            cas,
        })
    } else {
        None
    };
    let mut encoded = Vec::new();
    bencode_json(v, &mut encoded, 0)?;
    if encoded.len() > MAX_V_LEN {
        return Err(ApiError::ValueTooLong);
    }
    Ok(PutRequest {
        v: encoded,
        mutable,
    })
}

/// `/get`: a hex string, or `{hash, salt?}`.
fn parse_get(data: Option<&Value>) -> Result<Command, ApiError> {
    match data {
        Some(s @ Value::String(_)) => {
            let target = str2buf(s, Encoding::Hex)
                .and_then(|t| <[u8; 20]>::try_from(t).ok())
                .ok_or(ApiError::HashFormat)?;
            Ok(Command::Get { target, salt: None })
        }
        Some(Value::Object(opts)) => {
            // As in /put, the Grape converts the salt first and a TypeError there is a 500.
            let salt = match opts.get("salt") {
                Some(s) if truthy(Some(s)) => {
                    Some(str2buf(s, Encoding::Utf8).ok_or(ApiError::PayloadInvalid)?)
                }
                _ => None,
            };
            let Some(Value::String(hash)) = opts.get("hash") else {
                return Err(ApiError::Generic);
            };
            let target = unhex(hash)
                .and_then(|t| <[u8; 20]>::try_from(t).ok())
                .ok_or(ApiError::HashFormat)?;
            if salt.as_ref().is_some_and(|s| s.len() > MAX_SALT_LEN) {
                return Err(ApiError::Generic);
            }
            Ok(Command::Get { target, salt })
        }
        _ => Err(ApiError::Generic),
    }
}

/// How a string turns into bytes when it is not JSON for bytes (Node's `Buffer.from(s, enc)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Hex,
    Utf8,
}

/// The Grape's `str2buf`: `Buffer.from(JSON.parse(val))`, else `Buffer.from(val, enc)`.
///
/// So a string may itself hold JSON for bytes (`"[1,2]"`, `"\"text\""`), and a JSON array of
/// bytes or Node's `{"type":"Buffer","data":[...]}` (what `JSON.stringify(buffer)` gives)
/// works as is. Unlike Node, malformed hex and out-of-range bytes are refused (`None`)
/// rather than silently truncated.
fn str2buf(val: &Value, enc: Encoding) -> Option<Vec<u8>> {
    match val {
        Value::String(s) => {
            if let Ok(parsed) = serde_json::from_str::<Value>(s)
                && let Some(bytes) = buffer_from(&parsed)
            {
                return Some(bytes);
            }
            match enc {
                Encoding::Hex => unhex(s),
                Encoding::Utf8 => Some(s.as_bytes().to_vec()),
            }
        }
        other => buffer_from(other),
    }
}

/// Node's `Buffer.from(value)` for the JSON values it accepts.
fn buffer_from(val: &Value) -> Option<Vec<u8>> {
    match val {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(items) => byte_array(items),
        Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("Buffer") => {
            byte_array(m.get("data")?.as_array()?)
        }
        _ => None,
    }
}

fn byte_array(items: &[Value]) -> Option<Vec<u8>> {
    items
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

/// JavaScript truthiness of an optional JSON value (`undefined` is `None`).
fn truthy(val: Option<&Value>) -> bool {
    match val {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// The value of a JSON number for which JavaScript's `Number.isInteger` holds.
fn js_integer(val: &Value) -> Option<f64> {
    let f = val.as_f64()?;
    (f.is_finite() && f.fract() == 0.0).then_some(f)
}

/// A JSON number that is an integer within i64.
fn js_i64(val: &Value) -> Option<i64> {
    if let Some(i) = val.as_i64() {
        return Some(i);
    }
    if val.is_u64() {
        return None;
    }
    let f = js_integer(val)?;
    // -2^63 is exact in f64; 2^63 is the first value past i64::MAX.
    (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0)
        .contains(&f)
        .then_some(f as i64)
}

/// JavaScript's `value.length`: UTF-16 units of a string, items of an array, else none.
fn js_length(val: &Value) -> Option<usize> {
    match val {
        Value::String(s) => Some(s.encode_utf16().count()),
        Value::Array(items) => Some(items.len()),
        _ => None,
    }
}

/// Bencodes a JSON value as the `bencode` package does for strings, integers, arrays and
/// objects (keys sorted by their UTF-8 bytes: serde_json keeps them in arrival order).
fn bencode_json(val: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_V_DEPTH || out.len() > MAX_V_LEN {
        return Err(ApiError::ValueTooLong);
    }
    match val {
        Value::String(s) => bencode_bytes(s.as_bytes(), out),
        Value::Number(_) => {
            let i = js_i64(val).ok_or(ApiError::ValueType)?;
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Array(items) => {
            out.push(b'l');
            for item in items {
                bencode_json(item, out, depth + 1)?;
            }
            out.push(b'e');
        }
        Value::Object(m) => {
            out.push(b'd');
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (k, v) in entries {
                bencode_bytes(k.as_bytes(), out);
                bencode_json(v, out, depth + 1)?;
            }
            out.push(b'e');
        }
        Value::Null | Value::Bool(_) => return Err(ApiError::ValueType),
    }
    Ok(())
}

fn bencode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// lodash-style `camelCase` as grenache-grape's lib/utils.js writes it: the regex
/// `/(?:^\w|[A-Z]|\b\w|-\w|_\w)/g` (lower-cased at index 0, upper-cased elsewhere), then
/// runs of whitespace, `_` and `-` removed. `\w` is ASCII only, as in JavaScript.
fn camel_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut replaced = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let prev_is_word = i > 0 && chars.get(i - 1).is_some_and(|&p| is_word(p));
        let next_is_word = chars.get(i + 1).is_some_and(|&n| is_word(n));
        let len =
            if (i == 0 && is_word(c)) || c.is_ascii_uppercase() || (is_word(c) && !prev_is_word) {
                1
            } else if (c == '-' || c == '_') && next_is_word {
                2
            } else {
                0
            };
        if len == 0 {
            replaced.push(c);
            i += 1;
            continue;
        }
        for &m in chars.iter().skip(i).take(len) {
            replaced.push(if i == 0 {
                m.to_ascii_lowercase()
            } else {
                m.to_ascii_uppercase()
            });
        }
        i += len;
    }
    replaced
        .chars()
        .filter(|&c| !(c.is_whitespace() || c == '\u{feff}' || c == '_' || c == '-'))
        .collect()
}

/// JavaScript's `s.charAt(0).toUpperCase() + s.slice(1)`.
fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(data: Value) -> Result<PutRequest, ApiError> {
        parse_put(Some(&data))
    }

    fn mutable_fields() -> Value {
        json!({
            "v": "hello",
            "k": "11".repeat(32),
            "sig": "22".repeat(64),
            "seq": 1,
        })
    }

    #[test]
    fn command_names_follow_the_node_grape_camel_case() {
        assert_eq!(CommandKind::from_path("/lookup"), Some(CommandKind::Lookup));
        assert_eq!(CommandKind::from_path("/Lookup"), Some(CommandKind::Lookup));
        assert_eq!(
            CommandKind::from_path("/lookup_"),
            Some(CommandKind::Lookup)
        );
        assert_eq!(
            CommandKind::from_path("/-announce"),
            Some(CommandKind::Announce)
        );
        assert_eq!(CommandKind::from_path("/LOOKUP"), None);
        assert_eq!(CommandKind::from_path("/look_up"), None);
        assert_eq!(CommandKind::from_path("/lookup?x=1"), None);
        assert_eq!(CommandKind::from_path("/lookupx"), None);
        assert_eq!(CommandKind::from_path(""), None);
        assert_eq!(CommandKind::from_path("/"), None);
    }

    #[test]
    fn camel_case_matches_lodash_examples() {
        assert_eq!(camel_case("-foo-bar"), "fooBar");
        assert_eq!(camel_case("-FOO"), "fOO");
        assert_eq!(camel_case("--get"), "Get");
        assert_eq!(camel_case("-a b"), "aB");
    }

    #[test]
    fn body_must_be_json_and_not_null() {
        assert_eq!(parse_body(b"garbage"), Err(ApiError::PayloadInvalid));
        assert_eq!(parse_body(b""), Err(ApiError::PayloadInvalid));
        assert_eq!(parse_body(b"null"), Err(ApiError::PayloadInvalid));
        assert_eq!(parse_body(b" 5 "), Ok(json!(5)));
    }

    #[test]
    fn body_with_invalid_utf8_is_read_lossily() {
        let body = b"{\"data\":\"a\xffb\"}";

        let msg = parse_body(body);

        assert_eq!(msg, Ok(json!({"data": "a\u{fffd}b"})));
    }

    #[test]
    fn data_is_undefined_unless_the_body_is_an_object() {
        assert_eq!(data_of(&json!({"data": 1})), Some(&json!(1)));
        assert_eq!(data_of(&json!([1])), None);
        assert_eq!(data_of(&json!("data")), None);
    }

    #[test]
    fn lookup_needs_a_non_empty_string_of_at_most_256_bytes() {
        let ok = parse_lookup(Some(&json!("rpc_test")));
        assert_eq!(
            ok,
            Ok(Command::Lookup {
                name: Key::new(b"rpc_test").expect("valid key")
            })
        );
        for bad in [
            json!(""),
            json!(5),
            json!(null),
            json!(["x"]),
            json!("x".repeat(257)),
        ] {
            assert_eq!(parse_lookup(Some(&bad)), Err(ApiError::Lookup), "{bad}");
        }
        assert_eq!(parse_lookup(None), Err(ApiError::Lookup));
    }

    #[test]
    fn announce_checks_array_then_port_then_name() {
        assert_eq!(parse_announce(Some(&json!("x"))), Err(ApiError::Announce));
        assert_eq!(parse_announce(None), Err(ApiError::Announce));
        assert_eq!(parse_announce(Some(&json!([]))), Err(ApiError::ServicePort));
        assert_eq!(
            parse_announce(Some(&json!([5, "1"]))),
            Err(ApiError::ServicePort)
        );
        assert_eq!(
            parse_announce(Some(&json!([5, 1]))),
            Err(ApiError::Announce)
        );
        assert_eq!(
            parse_announce(Some(&json!(["", 1]))),
            Err(ApiError::Announce)
        );
    }

    #[test]
    fn announce_refuses_ports_that_crash_the_node_grape() {
        for port in [
            json!(-1),
            json!(70000),
            json!(1e308),
            json!(1.5),
            json!(65536),
        ] {
            let got = parse_announce(Some(&json!(["svc", port])));

            assert_eq!(got, Err(ApiError::ServicePort), "{port}");
        }
    }

    #[test]
    fn announce_accepts_integral_floats_and_maps_port_zero_to_implied() {
        let name = Key::new(b"svc").expect("valid key");

        assert_eq!(
            parse_announce(Some(&json!(["svc", 1337.0]))),
            Ok(Command::Announce {
                name: name.clone(),
                port: Some(1337)
            })
        );
        assert_eq!(
            parse_announce(Some(&json!(["svc", 0]))),
            Ok(Command::Announce { name, port: None })
        );
    }

    #[test]
    fn immutable_put_bencodes_v() {
        let got = put(json!({"v": "hello"}));

        assert_eq!(
            got,
            Ok(PutRequest {
                v: b"5:hello".to_vec(),
                mutable: None
            })
        );
    }

    #[test]
    fn put_of_a_bare_string_is_immutable() {
        assert_eq!(put(json!("hi")).map(|p| p.v), Ok(b"2:hi".to_vec()));
    }

    #[test]
    fn put_bencodes_integers_lists_and_sorted_dicts() {
        let got = put(json!({"v": {"b": [1, "x"], "a": -2}}));

        assert_eq!(got.map(|p| p.v), Ok(b"d1:ai-2e1:bli1e1:xee".to_vec()));
    }

    #[test]
    fn put_refuses_values_without_a_bencoded_form() {
        assert_eq!(put(json!({"v": 1.5})), Err(ApiError::ValueType));
        assert_eq!(put(json!({"v": [true]})), Err(ApiError::ValueType));
    }

    #[test]
    fn put_without_v_is_refused() {
        assert_eq!(put(json!({})), Err(ApiError::ValueMissing));
        assert_eq!(put(json!({"v": null})), Err(ApiError::ValueMissing));
        assert_eq!(put(json!(5)), Err(ApiError::ValueMissing));
        assert_eq!(parse_put(None), Err(ApiError::ValueMissing));
    }

    #[test]
    fn put_refuses_long_values() {
        assert_eq!(
            put(json!({"v": "x".repeat(1000)})),
            Err(ApiError::ValueTooLong)
        );
        // 997 characters pass Node's check but bencode to 1001 bytes.
        assert_eq!(
            put(json!({"v": "x".repeat(997)})),
            Err(ApiError::ValueTooLong)
        );
        assert!(put(json!({"v": "x".repeat(995)})).is_ok());
    }

    #[test]
    fn mutable_put_reads_hex_fields() {
        let got = put(mutable_fields());

        let m = got.expect("valid put").mutable.expect("mutable");
        assert_eq!(m.k, [0x11; 32]);
        assert_eq!(m.sig, [0x22; 64]);
        assert_eq!(m.seq, 1);
        assert_eq!(m.salt, b"");
        assert_eq!(m.cas, None);
    }

    #[test]
    fn mutable_put_reads_node_buffer_json_and_string_salt() {
        let mut data = mutable_fields();
        data["k"] = json!({"type": "Buffer", "data": vec![7; 32]});
        data["sig"] = json!(vec![9; 64]);
        data["salt"] = json!("salty");
        data["cas"] = json!(4);

        let m = put(data).expect("valid put").mutable.expect("mutable");

        assert_eq!(m.k, [7; 32]);
        assert_eq!(m.sig, [9; 64]);
        assert_eq!(m.salt, b"salty");
        assert_eq!(m.cas, Some(4));
    }

    #[test]
    fn mutable_put_checks_in_bittorrent_dht_order() {
        let cases = [
            ("cas", json!("1"), ApiError::Cas),
            ("cas", json!(1.5), ApiError::Cas),
            ("k", json!("11"), ApiError::PublicKey),
            ("k", json!("zz".repeat(32)), ApiError::PublicKey),
            ("sig", json!(null), ApiError::SignatureMissing),
            ("sig", json!("22"), ApiError::SignatureMissing),
            ("salt", json!("s".repeat(65)), ApiError::SaltTooLong),
            ("salt", json!(5), ApiError::PayloadInvalid),
            ("seq", json!("1"), ApiError::SeqNotInteger),
            ("seq", json!(1e19), ApiError::SeqNotInteger),
            ("seq", json!(u64::MAX), ApiError::SeqNotInteger),
        ];
        for (field, value, want) in cases {
            let mut data = mutable_fields();
            data[field] = value;

            assert_eq!(put(data), Err(want.clone()), "{field}");
        }
        let mut data = mutable_fields();
        data.as_object_mut().map(|m| m.remove("seq"));
        assert_eq!(put(data), Err(ApiError::SeqMissing));
    }

    #[test]
    fn put_with_falsy_k_is_immutable() {
        let got = put(json!({"v": "x", "k": "", "seq": "junk"}));

        assert_eq!(got.map(|p| p.mutable), Ok(None));
    }

    #[test]
    fn get_reads_hex_or_hash_object() {
        let hex = "e28910ea0adb94dd45ced75fbff3e135c01bc437";
        let target: [u8; 20] = unhex(hex)
            .and_then(|t| t.try_into().ok())
            .expect("valid hex");

        assert_eq!(
            parse_get(Some(&json!(hex))),
            Ok(Command::Get { target, salt: None })
        );
        assert_eq!(
            parse_get(Some(&json!({"hash": hex, "salt": "s"}))),
            Ok(Command::Get {
                target,
                salt: Some(b"s".to_vec())
            })
        );
    }

    #[test]
    fn get_refuses_bad_hashes() {
        assert_eq!(parse_get(Some(&json!("abc"))), Err(ApiError::HashFormat));
        assert_eq!(
            parse_get(Some(&json!("zz".repeat(20)))),
            Err(ApiError::HashFormat)
        );
        assert_eq!(
            parse_get(Some(&json!({"hash": "ab"}))),
            Err(ApiError::HashFormat)
        );
        assert_eq!(parse_get(Some(&json!({"hash": 5}))), Err(ApiError::Generic));
        assert_eq!(parse_get(Some(&json!({}))), Err(ApiError::Generic));
        assert_eq!(parse_get(Some(&json!(5))), Err(ApiError::Generic));
        assert_eq!(parse_get(None), Err(ApiError::Generic));
    }

    #[test]
    fn str2buf_reads_json_inside_strings_like_node() {
        assert_eq!(str2buf(&json!("[1,2]"), Encoding::Utf8), Some(vec![1, 2]));
        assert_eq!(
            str2buf(&json!("\"ab\""), Encoding::Hex),
            Some(b"ab".to_vec())
        );
        assert_eq!(
            str2buf(&json!("abcd"), Encoding::Hex),
            Some(vec![0xab, 0xcd])
        );
        assert_eq!(
            str2buf(&json!("1234"), Encoding::Hex),
            Some(vec![0x12, 0x34])
        );
        assert_eq!(str2buf(&json!([256]), Encoding::Hex), None);
        assert_eq!(str2buf(&json!(true), Encoding::Hex), None);
    }
}
