//! Every error the Grape API can answer, with the exact string and status the Node.js
//! Grape 1.0 answers (docs/protocol.md §3).
//!
//! Most command errors go out with status 200 and a JSON string body, because that is what
//! the Node Grape does: `rep.end(JSON.stringify(err.message))`. A Node client therefore
//! treats them as results. Only transport-level failures (bad body, body too large, and our
//! own overload and timeout answers) use a non-2xx status and a plain-text body, so that
//! grenache-nodejs-link turns them into errors and retries.

/// Why a Grape API request was not answered with a result.
///
/// `Display` gives the exact message a client sees (the Node Grape's string where one exists).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body was not JSON (or was JSON `null`): fix the client's encoding.
    #[error("ERR_GRAPE_PAYLOAD_INVALID")]
    PayloadInvalid,
    /// The body was larger than the configured `max_payload`: send less.
    #[error("ERR_GRAPE_PAYLOAD_SIZE")]
    PayloadSize,
    /// The path names no command (`/announce`, `/lookup`, `/put`, `/get`).
    #[error("ERR_REQ_NOTFOUND")]
    NotFound,
    /// `/lookup` data was not a non-empty string of at most 256 bytes.
    #[error("ERR_GRAPE_LOOKUP")]
    Lookup,
    /// `/announce` data was not an array `[name, port]`, or its name was not a string of 1 to
    /// 256 bytes.
    #[error("ERR_GRAPE_ANNOUNCE")]
    Announce,
    /// `/unannounce` data was not an array `[name, port]`, or its name was not a string of 1
    /// to 256 bytes.
    #[error("ERR_GRAPE_UNANNOUNCE")]
    Unannounce,
    /// `/unannounce` named a name and port not announced through this Grape (or expired).
    #[error("ERR_GRAPE_NOT_ANNOUNCED")]
    NotAnnounced,
    /// `/announce` port was not an integer in 0..=65535 (0 means "my DHT port"), or an
    /// `/unannounce` port was not one in 1..=65535.
    #[error("ERR_GRAPE_SERVICE_PORT")]
    ServicePort,
    /// `/get` hash was not 40 hex digits (a 20-byte target).
    #[error("ERR_GRAPE_HASH_FORMAT")]
    HashFormat,
    /// `/get` data was neither a hex string nor `{hash, salt?}` with a string hash, or the
    /// salt was not usable.
    #[error("ERR_GRAPE_GENERIC")]
    Generic,
    /// `/put` data had no `v` (or was not an object or string).
    #[error("opts.v not given")]
    ValueMissing,
    /// `/put` `v` was 1000 characters or longer (the Node Grape's own check), or its bencoded
    /// form is over BEP 44's 1000 bytes.
    #[error("v must be less than 1000 bytes in put()")]
    ValueTooLong,
    /// `/put` `v` (or something nested in it) has no bencoded form: only strings, integers,
    /// arrays and objects of them can be stored.
    #[error("opts.v must be a string, an integer, or an array or object of them")]
    ValueType,
    /// Mutable `/put`: `cas` was given but is not an integer within i64.
    #[error("opts.cas must be an integer if provided")]
    Cas,
    /// Mutable `/put`: `k` is not a 32-byte ed25519 public key (64 hex digits or a byte array).
    #[error("opts.k ed25519 public key must be 32 bytes")]
    PublicKey,
    /// Mutable `/put`: `sig` is missing or not 64 bytes (128 hex digits or a byte array).
    #[error("opts.sign function or options.sig signature is required for mutable put")]
    SignatureMissing,
    /// Mutable `/put`: the signature does not verify against `k`, `salt`, `seq` and `v`: sign
    /// the BEP 44 buffer again.
    #[error("invalid signature")]
    SignatureInvalid,
    /// Mutable `/put`: `salt` is over 64 bytes.
    #[error("opts.salt is > 64 bytes long")]
    SaltTooLong,
    /// Mutable `/put`: `seq` is missing.
    #[error("opts.seq not provided for a mutable update")]
    SeqMissing,
    /// Mutable `/put`: `seq` is not an integer within i64.
    #[error("opts.seq not an integer")]
    SeqNotInteger,
    /// The local store refused the item (a BEP 44 rule); the message says which.
    #[error("{0}")]
    Rejected(String),
    /// The DHT had no node to send the announce to, and nothing was stored (an announce of
    /// port 0, whose port only a receiving node can tell).
    #[error("No nodes to query")]
    NoNodes,
    /// The DHT had no node to send the announce or put to (a lone Grape), so it is stored on
    /// this Grape only: its own lookups and gets find it. Node's answer, kept because
    /// clients expect it; counted as `outcome="local"`, not as a failure.
    #[error("No nodes to query")]
    StoredHereOnly,
    /// Every node asked failed to store the announce or put (or did not answer).
    #[error("All queries failed")]
    AllFailed,
    /// A node refused a put with a KRPC 3xx error (301: `cas` mismatch, 302: `seq` too
    /// low). As in the Node Grape, the HTTP status is the KRPC code: re-read and retry.
    #[error("{code} {message}")]
    Remote {
        /// KRPC error code, 300..=399.
        code: u16,
        /// The remote node's message.
        message: String,
    },
    /// Our own bound on a request ran out before the DHT answered: retry later.
    #[error("ERR_GRAPE_TIMEOUT")]
    Timeout,
    /// Too many requests are in flight: back off and retry.
    #[error("ERR_GRAPE_BUSY")]
    Busy,
    /// `/watch` `wait` is not a duration such as `30s`, `5m`, `1m30s` or `250ms`.
    #[error("ERR_GRAPE_WATCH_WAIT")]
    WatchWait,
    /// `/watch` `index` is not a non-negative integer.
    #[error("ERR_GRAPE_WATCH_INDEX")]
    WatchIndex,
    /// Too many watches on this Grape, or on this WebSocket connection: end some first.
    #[error("ERR_GRAPE_WATCH_LIMIT")]
    WatchLimit,
    /// This client went over its requests per second (`--api-rate-limit`): slow down.
    #[error("ERR_GRAPE_RATE_LIMIT")]
    RateLimited,
    /// This client already holds its cap of open connections (`--api-connections-per-client`):
    /// reuse them. Never sent: the connection is closed unread (see `Grape::api_connected`).
    #[error("ERR_GRAPE_CONNECTION_LIMIT")]
    ConnectionLimit,
    /// The request head (request line and headers) is longer than the server reads: send
    /// shorter headers or move data into the body.
    #[error("ERR_GRAPE_HEAD_TOO_LARGE")]
    HeadTooLarge,
}

impl ApiError {
    /// HTTP status the Node Grape would use (200 for command errors, see the module docs).
    pub fn status(&self) -> u16 {
        match self {
            ApiError::PayloadInvalid => 500,
            ApiError::PayloadSize => 413,
            ApiError::Remote { code, .. } => *code,
            ApiError::Timeout => 504,
            ApiError::Busy => 503,
            ApiError::WatchWait | ApiError::WatchIndex => 400,
            ApiError::WatchLimit | ApiError::RateLimited | ApiError::ConnectionLimit => 429,
            ApiError::HeadTooLarge => 431,
            _ => 200,
        }
    }

    /// Whether the HTTP body is the bare message (plain text) rather than a JSON string.
    pub fn is_plain_text(&self) -> bool {
        matches!(
            self,
            ApiError::PayloadInvalid | ApiError::PayloadSize | ApiError::Timeout | ApiError::Busy
        )
    }

    /// The HTTP body: the message as a JSON string, or bare for plain-text errors.
    pub fn http_body(&self) -> Vec<u8> {
        let msg = self.to_string();
        if self.is_plain_text() {
            msg.into_bytes()
        } else {
            json_string(&msg).into_bytes()
        }
    }
}

/// `msg` as a JSON string literal.
pub(crate) fn json_string(msg: &str) -> String {
    serde_json::Value::from(msg).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_errors_are_json_strings_with_status_200() {
        let err = ApiError::Lookup;

        let body = err.http_body();

        assert_eq!(err.status(), 200);
        assert_eq!(body, b"\"ERR_GRAPE_LOOKUP\"");
    }

    #[test]
    fn payload_errors_are_plain_text() {
        assert_eq!(ApiError::PayloadInvalid.status(), 500);
        assert_eq!(
            ApiError::PayloadInvalid.http_body(),
            b"ERR_GRAPE_PAYLOAD_INVALID"
        );
        assert_eq!(ApiError::PayloadSize.status(), 413);
        assert_eq!(ApiError::PayloadSize.http_body(), b"ERR_GRAPE_PAYLOAD_SIZE");
    }

    #[test]
    fn limit_errors_are_json_strings_with_their_own_status() {
        assert_eq!(ApiError::RateLimited.status(), 429);
        assert_eq!(
            ApiError::RateLimited.http_body(),
            b"\"ERR_GRAPE_RATE_LIMIT\""
        );
        assert_eq!(ApiError::HeadTooLarge.status(), 431);
        assert_eq!(
            ApiError::HeadTooLarge.http_body(),
            b"\"ERR_GRAPE_HEAD_TOO_LARGE\""
        );
    }

    #[test]
    fn remote_errors_carry_the_krpc_code_as_status() {
        let err = ApiError::Remote {
            code: 302,
            message: "sequence number less than current".into(),
        };

        assert_eq!(err.status(), 302);
        assert_eq!(
            err.http_body(),
            b"\"302 sequence number less than current\""
        );
    }

    #[test]
    fn messages_match_the_node_grape() {
        assert_eq!(ApiError::ValueMissing.to_string(), "opts.v not given");
        assert_eq!(
            ApiError::SeqMissing.to_string(),
            "opts.seq not provided for a mutable update"
        );
        assert_eq!(ApiError::NotFound.http_body(), b"\"ERR_REQ_NOTFOUND\"");
        assert_eq!(ApiError::NoNodes.http_body(), b"\"No nodes to query\"");
        assert_eq!(
            ApiError::StoredHereOnly.http_body(),
            b"\"No nodes to query\""
        );
    }
}
