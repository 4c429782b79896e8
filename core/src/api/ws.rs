//! Framing of the Grape WebSocket API (docs/protocol.md §3b).
//!
//! A text message is `[rid, type, data]` (the old Grape's form) or `{rid, type, data}`; the
//! answer is `[rid, err, result]`. Many calls may be in flight on one socket, matched by
//! `rid`, which is echoed back verbatim (any JSON value).

use serde_json::Value;

use super::request::CommandKind;

/// One WebSocket API call, framed but not yet validated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WsCall {
    /// The caller's `rid` as JSON text, to echo back.
    pub(crate) rid: String,
    /// The command, or `None` when `type` names none (answered `ERR_REQ_NOTFOUND`).
    pub(crate) kind: Option<CommandKind>,
    /// The argument (`None` when absent).
    pub(crate) data: Option<Value>,
    /// `watch` or `unwatch`, which are not commands: they outlive one answer.
    pub(crate) watch: Option<WatchVerb>,
}

/// The WebSocket calls that start or end a watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatchVerb {
    Watch,
    Unwatch,
}

/// Reads one text message.
///
/// # Errors
/// The `rid` to answer `ERR_GRAPE_PAYLOAD_INVALID` to (`null` when none could be read) when
/// the message is not JSON, is neither an array nor an object, or has no string `type`.
pub(crate) fn parse_call(text: &[u8]) -> Result<WsCall, String> {
    let null = || "null".to_owned();
    let text = String::from_utf8_lossy(text);
    let msg: Value = serde_json::from_str(&text).map_err(|_| null())?;
    let (rid, ty, data) = match msg {
        Value::Array(items) => {
            let mut items = items.into_iter();
            (items.next(), items.next(), items.next())
        }
        Value::Object(mut m) => (m.remove("rid"), m.remove("type"), m.remove("data")),
        _ => return Err(null()),
    };
    let rid = rid.map_or_else(null, |r| r.to_string());
    let Some(Value::String(ty)) = ty else {
        return Err(rid);
    };
    let watch = match ty.as_str() {
        "watch" => Some(WatchVerb::Watch),
        "unwatch" => Some(WatchVerb::Unwatch),
        _ => None,
    };
    Ok(WsCall {
        kind: CommandKind::from_type(&ty),
        rid,
        data,
        watch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_array_form() {
        let call = parse_call(br#"["r1","lookup","svc"]"#);

        assert_eq!(
            call,
            Ok(WsCall {
                rid: "\"r1\"".into(),
                kind: Some(CommandKind::Lookup),
                data: Some(json!("svc")),
                watch: None,
            })
        );
    }

    #[test]
    fn reads_the_object_form() {
        let call = parse_call(br#"{"type":"announce","rid":5,"data":["svc",1]}"#);

        assert_eq!(
            call,
            Ok(WsCall {
                rid: "5".into(),
                kind: Some(CommandKind::Announce),
                data: Some(json!(["svc", 1])),
                watch: None,
            })
        );
    }

    #[test]
    fn unknown_type_is_not_malformed() {
        let call = parse_call(br#"["r","nope",1]"#).expect("framed");

        assert_eq!(call.kind, None);
    }

    #[test]
    fn malformed_messages_keep_the_rid_when_they_can() {
        assert_eq!(parse_call(b"garbage"), Err("null".into()));
        assert_eq!(parse_call(b"5"), Err("null".into()));
        assert_eq!(parse_call(br#"["r1"]"#), Err("\"r1\"".into()));
        assert_eq!(
            parse_call(br#"{"rid":"r2","type":5}"#),
            Err("\"r2\"".into())
        );
        assert_eq!(parse_call(b"[]"), Err("null".into()));
    }
}
