//! Property tests for the Grape API (`grenache_core::api`): any HTTP body to any path and
//! any WebSocket message gets exactly one reply, which is a result or one of the Node
//! Grape's errors with its status (docs/protocol.md §3), exactly as the public
//! decoders (`parse_body`, `parse_command`) predict; and garbage never loses stored data.
//! The dashboard's `GET` paths (`/`, `/ui`, `/status`, anything else, overlong targets)
//! answer the page, the snapshot or a JSON error, and change no state.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use crate::common;

use grenache_core::MutableItem;
use grenache_core::api::{
    ApiError, CONTENT_TYPE_HTML, CONTENT_TYPE_JSON, CONTENT_TYPE_METRICS, CONTENT_TYPE_TEXT,
    CommandKind, Grape, GrapeConfig, HttpBody, MAX_GET_TARGET, Reply, RequestId, WsConn, data_of,
    parse_body, parse_command,
};
use grenache_core::dht::hex;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

/// Where API requests come from: loopback, which the API limits exempt by default.
const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

/// A lone Grape (no bootstrap nodes): it answers every command from its own store, at once.
struct Api {
    grape: Grape,
    now: Instant,
    next: u64,
}

impl Api {
    fn lone() -> Api {
        let now = Instant::now();
        let mut grape = Grape::new(GrapeConfig::default(), [7; 32], now);
        grape.bootstrap(now, &[]);
        while grape.poll_transmit().is_some() {}
        Api {
            grape,
            now,
            next: 0,
        }
    }

    /// Hands a request to the Grape as an adapter does, without waiting for the reply.
    fn send(&mut self, req: &Input) -> RequestId {
        self.next += 1;
        let id = RequestId(self.next);
        match req {
            Input::Http { method, path, body } => {
                // An adapter stops reading one byte past max_payload.
                let body = if body.len() > self.grape.max_payload() {
                    HttpBody::TooLarge
                } else {
                    HttpBody::Complete(body)
                };
                self.grape
                    .handle_http(self.now, CLIENT, id, method, path, body);
            }
            Input::Ws(text) => self.grape.handle_ws(self.now, WsConn(0), CLIENT, id, text),
        }
        id
    }

    /// Collects replies until every id in `sent` has exactly one, running timers if needed.
    fn collect(&mut self, sent: &[RequestId]) -> Result<Vec<Reply>, TestCaseError> {
        let mut replies: Vec<Option<Reply>> = vec![None; sent.len()];
        for _ in 0..1000 {
            while self.grape.poll_transmit().is_some() {}
            while let Some(r) = self.grape.poll_reply() {
                let at = sent.iter().position(|&s| s == r.req);
                prop_assert!(at.is_some(), "reply to a request never sent: {:?}", r);
                let slot = &mut replies[at.unwrap_or_default()];
                prop_assert!(slot.is_none(), "second reply to {:?}", r.req);
                *slot = Some(r);
            }
            if replies.iter().all(Option::is_some) {
                prop_assert_eq!(self.grape.inflight(), 0);
                return Ok(replies.into_iter().flatten().collect());
            }
            let Some(at) = self.grape.poll_timeout() else {
                break;
            };
            self.now = self.now.max(at);
            self.grape.handle_timeout(self.now);
        }
        Err(TestCaseError::fail("a request got no reply"))
    }

    fn call(&mut self, req: &Input) -> Result<Reply, TestCaseError> {
        let id = self.send(req);
        let mut replies = self.collect(&[id])?;
        Ok(replies.remove(0))
    }
}

/// One API request as an adapter receives it.
#[derive(Clone, Debug)]
enum Input {
    Http {
        method: &'static str,
        path: String,
        body: Vec<u8>,
    },
    Ws(Vec<u8>),
}

fn post(path: &str, body: Vec<u8>) -> Input {
    Input::Http {
        method: "POST",
        path: path.to_owned(),
        body,
    }
}

fn api_body(data: &Value) -> Vec<u8> {
    json!({"rid": "r", "data": data}).to_string().into_bytes()
}

// ---- Strategies ---------------------------------------------------------------------

fn json() -> BoxedStrategy<Value> {
    common::json(3, 24, 5)
}

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        Just("svc".to_owned()),
        "[a-z_:]{1,12}",
        any::<String>(),
        "x{250,260}",
    ]
    .boxed()
}

/// Numbers where the API expects integers (ports, seq, cas), and things that are not.
fn int_ish() -> BoxedStrategy<Value> {
    let floats = prop_oneof![
        Just(1.5),
        Just(1e19),
        Just(-0.0),
        Just(65536.0),
        Just(1337.0)
    ]
    .prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number));
    prop_oneof![
        3 => (0u16..=u16::MAX).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => floats,
        1 => "[0-9]{1,5}".prop_map(Value::from),
        1 => json(),
    ]
    .boxed()
}

/// Hex strings of the right and wrong lengths, byte arrays, Node's Buffer JSON.
fn bytes_ish() -> BoxedStrategy<Value> {
    prop_oneof![
        "[0-9a-f]{40}".prop_map(Value::from),
        "[0-9a-f]{64}".prop_map(Value::from),
        "[0-9a-f]{128}".prop_map(Value::from),
        "[0-9a-fA-Fz\"\\[\\],]{0,130}".prop_map(Value::from),
        vec(0u16..300, 0..70).prop_map(|b| json!(b)),
        vec(any::<u8>(), 0..70).prop_map(|b| json!({"type": "Buffer", "data": b})),
        json(),
    ]
    .boxed()
}

fn put_object() -> BoxedStrategy<Value> {
    (
        option::of(prop_oneof![
            "[a-z]{0,20}".prop_map(Value::from),
            "x{990,1000}".prop_map(Value::from),
            json()
        ]),
        option::of(bytes_ish()),
        option::of(bytes_ish()),
        option::of(int_ish()),
        option::of(prop_oneof![
            "[a-z]{0,70}".prop_map(Value::from),
            bytes_ish()
        ]),
        option::of(int_ish()),
    )
        .prop_map(|(v, k, sig, seq, salt, cas)| {
            let mut m = Map::new();
            for (key, val) in [
                ("v", v),
                ("k", k),
                ("sig", sig),
                ("seq", seq),
                ("salt", salt),
                ("cas", cas),
            ] {
                if let Some(val) = val {
                    m.insert(key.into(), val);
                }
            }
            Value::Object(m)
        })
        .boxed()
}

/// A mutable put that verifies: k, sig, seq and salt as a client would send them.
fn signed_put() -> BoxedStrategy<Value> {
    (-3i64..5, "[a-z]{0,12}", "[a-z]{0,4}", option::of(-1i64..5))
        .prop_map(|(seq, v, salt, cas)| {
            let bencoded = format!("{}:{v}", v.len()).into_bytes();
            let item = MutableItem::sign(&[5; 32], salt.clone().into_bytes(), seq, bencoded)
                .expect("a short value signs");
            let mut data = json!({
                "v": v,
                "k": hex(item.k()),
                "sig": hex(item.sig()),
                "seq": seq,
                "salt": salt,
            });
            if let Some(cas) = cas {
                data["cas"] = json!(cas);
            }
            data
        })
        .boxed()
}

/// `data` for any command: arbitrary JSON, or shaped like one of the four commands.
fn data() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => json(),
        2 => name().prop_map(Value::from),
        2 => (name(), int_ish()).prop_map(|(n, p)| json!([n, p])),
        1 => (json(), int_ish()).prop_map(|(n, p)| json!([n, p])),
        2 => put_object(),
        2 => signed_put(),
        1 => bytes_ish(),
        1 => "[0-9a-f]{40}".prop_map(Value::from),
        1 => (
            bytes_ish(),
            option::of(prop_oneof!["[a-z]{0,70}".prop_map(Value::from), json()])
        )
            .prop_map(|(hash, salt)| match salt {
                Some(salt) => json!({"hash": hash, "salt": salt}),
                None => json!({ "hash": hash }),
            }),
    ]
    .boxed()
}

/// An HTTP body: random bytes, any JSON, an API body around any data, or one too large.
fn body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..128),
        json().prop_map(|v| v.to_string().into_bytes()),
        (json(), data())
            .prop_map(|(rid, data)| json!({"rid": rid, "data": data}).to_string().into_bytes()),
        data().prop_map(|d| api_body(&d)),
        data().prop_map(|d| api_body(&d)),
        Just(vec![b' '; 8193]),
    ]
    .boxed()
}

fn path() -> BoxedStrategy<String> {
    prop_oneof![
        Just("/announce".to_owned()),
        Just("/unannounce".to_owned()),
        Just("/lookup".to_owned()),
        Just("/put".to_owned()),
        Just("/get".to_owned()),
        Just("/Lookup".to_owned()),
        Just("/-get".to_owned()),
        Just("/lookupx".to_owned()),
        Just("/".to_owned()),
        Just(String::new()),
        any::<String>(),
        "/[a-zA-Z_\\- ?]{0,10}",
    ]
    .boxed()
}

/// A target the dashboard serves, or one it must refuse (unknown, overlong).
fn dashboard_path() -> BoxedStrategy<String> {
    prop_oneof![
        Just("/".to_owned()),
        Just("/ui".to_owned()),
        Just("/ui/".to_owned()),
        Just("/status".to_owned()),
        "/status\\?[a-z=&]{0,12}",
        "/(ui|status)/[a-z.]{0,8}",
        "/favicon\\.ico|/index\\.html|/robots\\.txt",
        (1usize..4).prop_map(|n| format!("/status?{}", "q".repeat(n * MAX_GET_TARGET))),
        (0usize..3).prop_map(|n| format!("/{}", "p".repeat(MAX_GET_TARGET - 1 + n))),
    ]
    .boxed()
}

fn command_type() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!("announce")),
        Just(json!("unannounce")),
        Just(json!("lookup")),
        Just(json!("put")),
        Just(json!("get")),
        Just(json!("Lookup")),
        Just(json!("nope")),
        json(),
    ]
    .boxed()
}

/// A WebSocket message: random bytes, any JSON, or `[rid, type, data]` / `{rid, type, data}`.
fn ws_text() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..128),
        json().prop_map(|v| v.to_string().into_bytes()),
        (json(), command_type(), data(), 0usize..4).prop_map(|(rid, ty, data, n)| {
            let mut items = vec![rid, ty, data];
            items.truncate(n);
            Value::Array(items).to_string().into_bytes()
        }),
        (json(), command_type(), data()).prop_map(|(rid, ty, data)| {
            json!({"rid": rid, "type": ty, "data": data})
                .to_string()
                .into_bytes()
        }),
        Just(vec![b' '; 8193]),
    ]
    .boxed()
}

fn input() -> BoxedStrategy<Input> {
    prop_oneof![
        4 => (path(), body()).prop_map(|(path, body)| Input::Http { method: "POST", path, body }),
        1 => (
            prop_oneof![Just("GET"), Just("HEAD"), Just("PUT")],
            prop_oneof![
                Just("/health".to_owned()),
                Just("/metrics?x".to_owned()),
                dashboard_path(),
                path(),
            ],
            body(),
        )
            .prop_map(|(method, path, body)| Input::Http { method, path, body }),
        3 => ws_text().prop_map(Input::Ws),
    ]
    .boxed()
}

// ---- What a reply may be -------------------------------------------------------------

/// Every error string a command can answer with status 200 (a JSON string body).
fn command_errors() -> BTreeSet<String> {
    [
        ApiError::NotFound,
        ApiError::Lookup,
        ApiError::Announce,
        ApiError::Unannounce,
        ApiError::NotAnnounced,
        ApiError::ServicePort,
        ApiError::HashFormat,
        ApiError::Generic,
        ApiError::ValueMissing,
        ApiError::ValueTooLong,
        ApiError::ValueType,
        ApiError::Cas,
        ApiError::PublicKey,
        ApiError::SignatureMissing,
        ApiError::SignatureInvalid,
        ApiError::SaltTooLong,
        ApiError::SeqMissing,
        ApiError::SeqNotInteger,
        ApiError::NoNodes,
        ApiError::AllFailed,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// A BEP 44 refusal a put may answer with its KRPC code as the status: 301 or 302.
fn is_remote(status: u16, msg: &str) -> bool {
    matches!(status, 301 | 302) && msg.starts_with(&format!("{status} "))
}

fn is_hex_target(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// What a validated command may answer on a lone Grape (as JSON, `None` for undefined).
fn check_result(kind: CommandKind, result: Option<&Value>) -> Result<(), TestCaseError> {
    match (kind, result) {
        (CommandKind::Lookup, Some(Value::Array(peers))) => {
            for p in peers {
                let addr = p.as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                prop_assert!(addr.is_some(), "lookup peer {}", p);
            }
        }
        (CommandKind::Announce | CommandKind::Unannounce, Some(Value::Number(n))) => {
            prop_assert!(n.is_u64());
        }
        (CommandKind::Put, Some(Value::String(s))) => prop_assert!(is_hex_target(s), "{}", s),
        (CommandKind::Get, None) => {}
        (CommandKind::Get, Some(Value::Object(item))) => {
            prop_assert!(item.get("id").is_some_and(Value::is_string), "{:?}", item);
            prop_assert!(item.get("v").is_some_and(Value::is_string), "{:?}", item);
        }
        (kind, other) => prop_assert!(false, "{:?} answered {:?}", kind, other),
    }
    Ok(())
}

/// The error strings a validated command may still end with (lone Grape, signed put).
fn check_late_error(kind: CommandKind, status: u16, msg: &str) -> Result<(), TestCaseError> {
    let late: &[ApiError] = match kind {
        CommandKind::Announce => &[ApiError::NoNodes],
        CommandKind::Unannounce => &[ApiError::NoNodes, ApiError::NotAnnounced],
        CommandKind::Put => &[
            ApiError::NoNodes,
            ApiError::SignatureInvalid,
            ApiError::ValueType,
            ApiError::ValueTooLong,
            ApiError::SaltTooLong,
        ],
        CommandKind::Lookup | CommandKind::Get => &[],
    };
    let ok = late.iter().any(|e| e.to_string() == msg && status == 200)
        || (kind == CommandKind::Put && is_remote(status, msg));
    prop_assert!(ok, "{:?} ended with {} {:?}", kind, status, msg);
    Ok(())
}

/// An HTTP reply to a command that passed validation.
fn check_http_command(kind: CommandKind, reply: &Reply) -> Result<(), TestCaseError> {
    prop_assert_eq!(reply.content_type, CONTENT_TYPE_JSON);
    if reply.body.is_empty() {
        prop_assert_eq!(reply.status, 200);
        return check_result(kind, None);
    }
    let value: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| TestCaseError::fail(format!("reply body is not JSON: {e}")))?;
    if let Value::String(msg) = &value
        && (reply.status != 200 || command_errors().contains(msg))
    {
        return check_late_error(kind, reply.status, msg);
    }
    prop_assert_eq!(reply.status, 200);
    check_result(kind, Some(&value))
}

/// The one reply to an HTTP request, against what the public decoders predict.
fn check_http(method: &str, path: &str, body: &[u8], reply: &Reply) -> Result<(), TestCaseError> {
    if matches!(method, "GET" | "HEAD") {
        let route = path.split('?').next();
        if path.len() > MAX_GET_TARGET {
            return check_json_error(reply, 414, "ERR_GRAPE_URI_TOO_LONG");
        }
        if matches!(route, Some("/" | "/ui" | "/ui/")) {
            prop_assert_eq!(reply.status, 200);
            prop_assert_eq!(reply.content_type, CONTENT_TYPE_HTML);
            prop_assert!(reply.body.starts_with(b"<!doctype html>"));
            return Ok(());
        }
        if route == Some("/status") {
            prop_assert_eq!(reply.status, 200);
            prop_assert_eq!(reply.content_type, CONTENT_TYPE_JSON);
            let status: Value = serde_json::from_slice(&reply.body).expect("status is JSON");
            prop_assert!(status["id"].is_string(), "{}", status);
            prop_assert!(status["now_ms"].is_u64(), "{}", status);
            return Ok(());
        }
        if route == Some("/watch") {
            // The watch property tests live in the core; here only one reply matters.
            return Ok(());
        }
        if !matches!(route, Some("/health" | "/metrics")) && CommandKind::from_path(path).is_none()
        {
            return check_json_error(reply, 404, "ERR_GRAPE_NOT_FOUND");
        }
        if route == Some("/health") {
            prop_assert_eq!(reply.status, 200);
            prop_assert_eq!(reply.content_type, CONTENT_TYPE_JSON);
            let health: Value = serde_json::from_slice(&reply.body).expect("health is JSON");
            prop_assert_eq!(&health["status"], "ok");
            return Ok(());
        }
        if route == Some("/metrics") {
            prop_assert_eq!(reply.status, 200);
            prop_assert_eq!(reply.content_type, CONTENT_TYPE_METRICS);
            return Ok(());
        }
    }
    let expected_err = if body.len() > GrapeConfig::default().max_payload {
        Some(ApiError::PayloadSize)
    } else {
        match parse_body(body) {
            Err(e) => Some(e),
            Ok(msg) => match CommandKind::from_path(path) {
                None => Some(ApiError::NotFound),
                Some(kind) => match parse_command(kind, data_of(&msg)) {
                    Err(e) => Some(e),
                    Ok(_) => return check_http_command(kind, reply),
                },
            },
        }
    };
    if let Some(e) = expected_err {
        prop_assert_eq!(reply.status, e.status(), "{}", e);
        prop_assert_eq!(&reply.body, &e.http_body());
        let ct = if e.is_plain_text() {
            CONTENT_TYPE_TEXT
        } else {
            CONTENT_TYPE_JSON
        };
        prop_assert_eq!(reply.content_type, ct);
    }
    Ok(())
}

/// A dashboard refusal: `status`, and a JSON body naming `error` with a message.
fn check_json_error(reply: &Reply, status: u16, error: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(reply.status, status);
    prop_assert_eq!(reply.content_type, CONTENT_TYPE_JSON);
    let body: Value = serde_json::from_slice(&reply.body).expect("the error is JSON");
    prop_assert_eq!(&body["error"], error);
    prop_assert!(body["message"].is_string(), "{}", body);
    Ok(())
}

/// What the WebSocket API must answer to `text`: `(rid, error)`, `error` `None` when the
/// command passed validation (then `Some(kind)` says which).
fn expected_ws(text: &[u8]) -> (Value, Result<CommandKind, ApiError>) {
    if text.len() > GrapeConfig::default().max_payload {
        return (Value::Null, Err(ApiError::PayloadSize));
    }
    let Ok(msg) = serde_json::from_str::<Value>(&String::from_utf8_lossy(text)) else {
        return (Value::Null, Err(ApiError::PayloadInvalid));
    };
    let (rid, ty, data) = match msg {
        Value::Array(items) => {
            let mut it = items.into_iter();
            (it.next(), it.next(), it.next())
        }
        Value::Object(mut m) => (m.remove("rid"), m.remove("type"), m.remove("data")),
        _ => return (Value::Null, Err(ApiError::PayloadInvalid)),
    };
    let rid = rid.unwrap_or(Value::Null);
    let Some(Value::String(ty)) = ty else {
        return (rid, Err(ApiError::PayloadInvalid));
    };
    let Some(kind) = CommandKind::from_type(&ty) else {
        return (rid, Err(ApiError::NotFound));
    };
    match parse_command(kind, data.as_ref()) {
        Ok(_) => (rid, Ok(kind)),
        Err(e) => (rid, Err(e)),
    }
}

/// The one reply to a WebSocket message: `[rid, err, result]` as predicted.
fn check_ws(text: &[u8], reply: &Reply) -> Result<(), TestCaseError> {
    prop_assert_eq!(reply.status, 200);
    prop_assert_eq!(reply.content_type, CONTENT_TYPE_JSON);
    let frame: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| TestCaseError::fail(format!("WS reply is not JSON: {e}")))?;
    let Value::Array(items) = frame else {
        return Err(TestCaseError::fail("WS reply is not an array"));
    };
    prop_assert_eq!(items.len(), 3);
    let (rid, expected) = expected_ws(text);
    prop_assert_eq!(&items[0], &rid, "rid not echoed");
    match (expected, &items[1]) {
        (Err(e), err) => {
            prop_assert_eq!(err, &Value::from(e.to_string()));
            prop_assert_eq!(&items[2], &Value::Null);
        }
        (Ok(kind), Value::Null) => {
            let result = (!items[2].is_null()).then_some(&items[2]);
            check_result(kind, result)?;
        }
        (Ok(kind), Value::String(msg)) => {
            prop_assert_eq!(&items[2], &Value::Null);
            // A 3xx refusal travels as its message; the status is HTTP's alone.
            let status = msg.get(..3).and_then(|s| s.parse().ok()).unwrap_or(200);
            check_late_error(kind, status, msg)?;
        }
        (Ok(_), other) => prop_assert!(false, "WS err is {}", other),
    }
    Ok(())
}

fn check(req: &Input, reply: &Reply) -> Result<(), TestCaseError> {
    match req {
        Input::Http { method, path, body } => check_http(method, path, body, reply),
        Input::Ws(text) => check_ws(text, reply),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_body_to_any_command_is_a_result_or_a_node_error(path in path(), body in body()) {
        let mut api = Api::lone();
        let req = post(&path, body);

        let reply = api.call(&req)?;

        check(&req, &reply)?;
    }

    #[test]
    fn any_data_to_each_command_is_a_result_or_a_node_error(data in data()) {
        let mut api = Api::lone();
        for path in ["/announce", "/unannounce", "/lookup", "/put", "/get"] {
            let req = post(path, api_body(&data));

            let reply = api.call(&req)?;

            check(&req, &reply)?;
        }
    }

    #[test]
    fn any_ws_message_gets_one_rid_err_result_frame(text in ws_text()) {
        let mut api = Api::lone();
        let req = Input::Ws(text);

        let reply = api.call(&req)?;

        check(&req, &reply)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dashboard_gets_change_no_state(
        port in 1u16..=u16::MAX,
        paths in vec(prop_oneof![dashboard_path(), path()], 1..16),
        head in any::<bool>(),
    ) {
        let mut api = Api::lone();
        api.call(&post("/announce", api_body(&json!(["svc", port]))))?;
        api.call(&post("/lookup", api_body(&json!("svc"))))?;
        let before = api.grape.render_metrics();

        let method = if head { "HEAD" } else { "GET" };
        // Commands and watches are meant to act; everything else a GET reaches must not.
        let reads = paths
            .iter()
            .filter(|p| CommandKind::from_path(p).is_none() && !p.starts_with("/watch"));
        for path in reads {
            let req = Input::Http { method, path: path.clone(), body: Vec::new() };
            let reply = api.call(&req)?;
            check(&req, &reply)?;
        }

        prop_assert_eq!(api.grape.render_metrics(), before);
    }

    #[test]
    fn garbage_never_loses_an_announce(
        port in 1u16..=u16::MAX,
        garbage in vec(input(), 0..24),
    ) {
        let mut api = Api::lone();
        let announced = api.call(&post("/announce", api_body(&json!(["svc", port]))))?;
        prop_assert_eq!(announced.status, 200);
        let start = api.now;

        // All in flight at once, as on a busy socket: each still gets exactly one reply.
        let sent: Vec<RequestId> = garbage.iter().map(|g| api.send(g)).collect();
        let replies = api.collect(&sent)?;
        for (g, reply) in garbage.iter().zip(&replies) {
            check(g, reply)?;
        }
        let found = api.call(&post("/lookup", api_body(&json!("svc"))))?;

        prop_assert!(api.now.duration_since(start).as_secs() < 60, "garbage took timers");
        let peers: Value = serde_json::from_slice(&found.body).expect("lookup is JSON");
        let want = Value::from(format!("127.0.0.1:{port}"));
        prop_assert!(
            peers.as_array().is_some_and(|p| p.contains(&want)),
            "announced {} but lookup says {}", want, peers
        );
    }
}
