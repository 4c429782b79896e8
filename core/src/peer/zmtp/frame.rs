//! The ZMTP 3.0 wire format (RFC 23): the 64-byte greeting, frames, commands and the
//! metadata properties of READY.
//!
//! These are the pieces [`Connection`](crate::peer::zmtp::Connection) is built from; they are
//! public so tests and tools can write a peer's bytes by hand.

use crate::peer::zmtp::{Mechanism, SocketType, ZmtpError};

/// Length of a ZMTP 3 greeting.
pub const GREETING_LEN: usize = 64;
/// Frame flag: more frames of this message follow.
pub const FLAG_MORE: u8 = 0x01;
/// Frame flag: the size is 8 bytes, big-endian (else 1 byte).
pub const FLAG_LONG: u8 = 0x02;
/// Frame flag: the frame is a command, not message data.
pub const FLAG_COMMAND: u8 = 0x04;
/// Flag bits RFC 23 reserves; a peer setting them speaks something else.
const FLAGS_RESERVED: u8 = !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND);
/// Longest frame header: flags and an 8-byte size.
pub(crate) const MAX_HEADER_LEN: usize = 9;
/// The longest identity RFC 23 allows (`identity = 0*255OCTET`).
pub const MAX_IDENTITY_LEN: usize = 255;
/// A PING's context longer than this is cut (RFC 37; libzmq does the same).
pub const MAX_PING_CONTEXT_LEN: usize = 16;

/// Greeting offsets (RFC 23 §"Version Negotiation" and the `greeting` ABNF).
pub(crate) const SIGNATURE_END: usize = 9; // 0xFF, 8 padding bytes, then 0x7F at index 9
const MAJOR: usize = 10;
/// The first part of a greeting, sent before the peer's: its signature and major
/// version (RFC 23 lets a peer wait for the other's before it sends the rest; libzmq does).
pub const GREETING_HEAD_LEN: usize = MAJOR + 1;
const MINOR: usize = 11;
const MECHANISM: std::ops::Range<usize> = 12..32;
const AS_SERVER: usize = 32;

/// Our greeting with the NULL mechanism: ZMTP 3.0, not as server.
pub fn greeting() -> [u8; GREETING_LEN] {
    greeting_for(Mechanism::Null, false)
}

/// Our greeting: ZMTP 3.0, `mechanism`, and as-server set on a CURVE server.
///
/// We advertise minor version 0 on purpose: libzmq then talks 3.0 to us, so a SUB sends
/// its subscriptions as `0x01 ++ prefix` messages rather than 3.1 SUBSCRIBE commands.
pub fn greeting_for(mechanism: Mechanism, as_server: bool) -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xFF; // signature; bytes 1..9 are padding, zero as RFC 23 asks of a full greeting
    g[SIGNATURE_END] = 0x7F;
    g[MAJOR] = 3;
    g[MINOR] = 0;
    let name = mechanism.as_str().as_bytes();
    g[MECHANISM.start..MECHANISM.start + name.len()].copy_from_slice(name);
    g[AS_SERVER] = u8::from(as_server); // the rest is filler, zero
    g
}

/// The as-server bit of a complete greeting.
pub(crate) fn greeting_as_server(g: &[u8; GREETING_LEN]) -> bool {
    g[AS_SERVER] != 0
}

/// Checks what has arrived of a peer's greeting (`part` is its first bytes, any length up
/// to [`GREETING_LEN`]), failing as soon as a byte rules it out: libzmq sends its greeting
/// in pieces and waits for ours in between, and a ZMTP 2 peer stops after 12 bytes.
pub(crate) fn check_greeting(part: &[u8], ours: Mechanism) -> Result<(), ZmtpError> {
    // The padding (bytes 1..9) carries no meaning and must not be validated (RFC 23);
    // libzmq puts its identity length + 1 there for ZMTP 1.0 peers.
    if part.first().is_some_and(|&b| b != 0xFF)
        || part.get(SIGNATURE_END).is_some_and(|&b| b != 0x7F)
    {
        return Err(ZmtpError::BadGreeting);
    }
    if let Some(&major) = part.get(MAJOR)
        && major < 3
    {
        return Err(ZmtpError::UnsupportedVersion { major });
    }
    // Any minor is fine: 3.1 only adds commands, and we ignore those we do not use.
    if let Some(mechanism) = part.get(MECHANISM) {
        let name_len = mechanism
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(mechanism.len());
        let (name, pad) = mechanism.split_at(name_len);
        let peer = Mechanism::parse(name).filter(|_| pad.iter().all(|&b| b == 0));
        match peer {
            None => {
                return Err(ZmtpError::UnsupportedMechanism(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            Some(peer) if peer != ours => {
                return Err(ZmtpError::MechanismMismatch { ours, peer });
            }
            Some(_) => {}
        }
    }
    // as-server must be 0 for NULL, but libzmq does not check it and neither do we; for
    // CURVE the connection checks it against its role.
    Ok(())
}

/// Reads a frame header from its first bytes (at most [`MAX_HEADER_LEN`]): `Ok(None)`
/// while incomplete, else the flags and the announced body size. Bad flags fail on the
/// first byte, before any size is read.
pub(crate) fn decode_header(part: &[u8]) -> Result<Option<(u8, u64)>, ZmtpError> {
    let Some((&flags, size)) = part.split_first() else {
        return Ok(None);
    };
    if flags & FLAGS_RESERVED != 0 {
        return Err(ZmtpError::BadFrame("reserved flag bits set"));
    }
    if flags & FLAG_COMMAND != 0 && flags & FLAG_MORE != 0 {
        return Err(ZmtpError::BadFrame("command with the MORE flag"));
    }
    if flags & FLAG_LONG == 0 {
        return Ok(size.first().map(|&len| (flags, u64::from(len))));
    }
    Ok(size
        .first_chunk::<8>()
        .map(|len| (flags, u64::from_be_bytes(*len))))
}

/// Writes a frame header: the short form when the body fits in one size byte.
fn encode_header(out: &mut Vec<u8>, flags: u8, len: usize) {
    match u8::try_from(len) {
        Ok(short) => out.extend_from_slice(&[flags, short]),
        Err(_) => {
            out.push(flags | FLAG_LONG);
            // usize is at most 64 bits on every target Rust supports.
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends one message frame; `more` when more frames of the message follow.
pub fn encode_frame(out: &mut Vec<u8>, body: &[u8], more: bool) {
    encode_header(out, if more { FLAG_MORE } else { 0 }, body.len());
    out.extend_from_slice(body);
}

/// Appends a command frame: name-length, `name` (1 to 255 bytes; longer is cut), `data`.
pub fn encode_command(out: &mut Vec<u8>, name: &[u8], data: &[u8]) {
    let name = name.get(..255).unwrap_or(name);
    encode_header(out, FLAG_COMMAND, 1 + name.len() + data.len());
    out.push(name.len() as u8); // at most 255 by the cut above
    out.extend_from_slice(name);
    out.extend_from_slice(data);
}

/// Splits a command body into its name and data.
pub(crate) fn split_command(body: &[u8]) -> Result<(&[u8], &[u8]), ZmtpError> {
    let (&name_len, rest) = body
        .split_first()
        .ok_or(ZmtpError::BadCommand("empty command"))?;
    if name_len == 0 {
        return Err(ZmtpError::BadCommand("empty command name"));
    }
    rest.split_at_checked(usize::from(name_len))
        .ok_or(ZmtpError::BadCommand("command name past the end"))
}

/// Appends metadata properties as READY carries them: name-length (1), name, value-length
/// (4, big-endian), value. Names over 255 bytes are cut; values over 2^31-1 are not
/// expected here (RFC 23 caps them there).
pub fn encode_properties(out: &mut Vec<u8>, properties: &[Property<'_>]) {
    for &(name, value) in properties {
        let name = name.get(..255).unwrap_or(name);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(value);
    }
}

/// One metadata property: `(name, value)`.
pub type Property<'a> = (&'a [u8], &'a [u8]);

/// Reads READY's metadata into `(name, value)` pairs, in wire order. Names keep their
/// case; compare them with `eq_ignore_ascii_case` (RFC 23: case is not significant).
pub fn decode_properties(mut data: &[u8]) -> Result<Vec<Property<'_>>, ZmtpError> {
    const MALFORMED: ZmtpError = ZmtpError::BadCommand("malformed READY properties");
    let mut properties = Vec::new();
    while let Some((&name_len, rest)) = data.split_first() {
        if name_len == 0 {
            return Err(ZmtpError::BadCommand("empty property name"));
        }
        let (name, rest) = rest
            .split_at_checked(usize::from(name_len))
            .ok_or(MALFORMED)?;
        let (value_len, rest) = rest.split_first_chunk::<4>().ok_or(MALFORMED)?;
        let value_len = usize::try_from(u32::from_be_bytes(*value_len)).map_err(|_| MALFORMED)?;
        let (value, rest) = rest.split_at_checked(value_len).ok_or(MALFORMED)?;
        properties.push((name, value));
        data = rest;
    }
    Ok(properties)
}

/// The data of our READY: `Socket-Type`, and `Identity` when we have one.
pub(crate) fn ready_data(socket: SocketType, identity: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(32 + identity.len());
    encode_properties(&mut data, &[(b"Socket-Type", socket.as_str().as_bytes())]);
    if !identity.is_empty() {
        encode_properties(&mut data, &[(b"Identity", identity)]);
    }
    data
}

/// The data of an ERROR command: a reason of at most 255 bytes.
pub(crate) fn error_data(reason: &str) -> Vec<u8> {
    let reason = reason.as_bytes();
    let reason = reason.get(..255).unwrap_or(reason);
    let mut data = Vec::with_capacity(1 + reason.len());
    data.push(reason.len() as u8);
    data.extend_from_slice(reason);
    data
}

/// Reads an ERROR command's reason.
pub(crate) fn decode_error_reason(data: &[u8]) -> Result<String, ZmtpError> {
    let (&len, rest) = data
        .split_first()
        .ok_or(ZmtpError::BadCommand("ERROR without a reason length"))?;
    let reason = rest
        .get(..usize::from(len))
        .ok_or(ZmtpError::BadCommand("ERROR reason past the end"))?;
    Ok(String::from_utf8_lossy(reason).into_owned())
}

/// The context a PONG must echo: what follows PING's 2-byte TTL, at most 16 bytes.
pub(crate) fn ping_context(data: &[u8]) -> Result<&[u8], ZmtpError> {
    let context = data
        .get(2..)
        .ok_or(ZmtpError::BadCommand("PING without a TTL"))?;
    Ok(context.get(..MAX_PING_CONTEXT_LEN).unwrap_or(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_layout_follows_rfc_23() {
        let g = greeting();

        assert_eq!(g.len(), 64);
        assert_eq!(g[0], 0xFF, "signature starts with 0xFF");
        assert_eq!(&g[1..9], &[0; 8], "padding is zero");
        assert_eq!(g[9], 0x7F, "signature ends with 0x7F");
        assert_eq!(g[10], 3, "version-major");
        assert_eq!(
            g[11], 0,
            "version-minor: 3.0 keeps libzmq on 3.0 subscriptions"
        );
        assert_eq!(&g[12..16], b"NULL");
        assert_eq!(&g[16..32], &[0; 16], "mechanism is zero-padded to 20 bytes");
        assert_eq!(g[32], 0, "as-server");
        assert_eq!(&g[33..64], &[0; 31], "filler");
        assert_eq!(check_greeting(&g, Mechanism::Null), Ok(()));
        assert!(!greeting_as_server(&g));
        let curve = greeting_for(Mechanism::Curve, true);
        assert_eq!(&curve[12..17], b"CURVE");
        assert_eq!(&curve[17..32], &[0; 15]);
        assert!(greeting_as_server(&curve));
        assert_eq!(check_greeting(&curve, Mechanism::Curve), Ok(()));
    }

    #[test]
    fn greeting_check_fails_on_the_first_wrong_byte() {
        assert_eq!(
            check_greeting(&[0x00], Mechanism::Null),
            Err(ZmtpError::BadGreeting)
        );
        // The padding is not ours to judge: libzmq sends identity length + 1 there.
        let mut g = greeting();
        g[1..9].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(check_greeting(&g, Mechanism::Null), Ok(()));
        assert_eq!(check_greeting(&g[..10], Mechanism::Null), Ok(()));
        g[9] = 0x7E;
        assert_eq!(
            check_greeting(&g[..10], Mechanism::Null),
            Err(ZmtpError::BadGreeting)
        );

        let mut g = greeting();
        g[10] = 2;
        assert_eq!(
            check_greeting(&g[..11], Mechanism::Null),
            Err(ZmtpError::UnsupportedVersion { major: 2 })
        );
        g[10] = 4; // a future major: RFC 23 lets it talk down to us
        g[11] = 7;
        assert_eq!(check_greeting(&g, Mechanism::Null), Ok(()));

        let mut g = greeting();
        g[12..17].copy_from_slice(b"CURVE");
        assert_eq!(
            check_greeting(&g[..31], Mechanism::Null),
            Ok(()),
            "judged once all 20 bytes are in"
        );
        assert_eq!(
            check_greeting(&g[..32], Mechanism::Null),
            Err(ZmtpError::MechanismMismatch {
                ours: Mechanism::Null,
                peer: Mechanism::Curve
            })
        );
        assert_eq!(
            check_greeting(&greeting(), Mechanism::Curve),
            Err(ZmtpError::MechanismMismatch {
                ours: Mechanism::Curve,
                peer: Mechanism::Null
            })
        );
        let mut g = greeting();
        g[12..17].copy_from_slice(b"PLAIN");
        assert_eq!(
            check_greeting(&g, Mechanism::Null),
            Err(ZmtpError::UnsupportedMechanism("PLAIN".into()))
        );
        let mut g = greeting();
        g[20] = b'X'; // "NULL" then garbage in the padding
        assert!(matches!(
            check_greeting(&g, Mechanism::Null),
            Err(ZmtpError::UnsupportedMechanism(_))
        ));
    }

    #[test]
    fn frames_use_the_short_form_up_to_255_bytes() {
        let mut out = Vec::new();
        encode_frame(&mut out, b"hi", true);
        assert_eq!(out, [0x01, 2, b'h', b'i']);

        let mut out = Vec::new();
        encode_frame(&mut out, &[7; 255], false);
        assert_eq!(&out[..2], &[0x00, 255]);
        assert_eq!(out.len(), 2 + 255);

        let mut out = Vec::new();
        encode_frame(&mut out, &[7; 256], true);
        assert_eq!(&out[..9], &[0x03, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(out.len(), 9 + 256);

        let mut out = Vec::new();
        encode_frame(&mut out, b"", false);
        assert_eq!(out, [0, 0]);
    }

    #[test]
    fn headers_decode_short_and_long() {
        assert_eq!(decode_header(&[]), Ok(None));
        assert_eq!(decode_header(&[0x01]), Ok(None));
        assert_eq!(decode_header(&[0x01, 200]), Ok(Some((0x01, 200))));
        assert_eq!(decode_header(&[0x02, 0, 0, 0, 0, 0, 0, 1]), Ok(None));
        assert_eq!(
            decode_header(&[0x02, 0, 0, 0, 0, 0, 0, 1, 0]),
            Ok(Some((0x02, 256)))
        );
        // A long form for a small body is legal on the wire.
        assert_eq!(
            decode_header(&[0x06, 0, 0, 0, 0, 0, 0, 0, 5]),
            Ok(Some((0x06, 5)))
        );
        assert_eq!(
            decode_header(&[0x08]),
            Err(ZmtpError::BadFrame("reserved flag bits set"))
        );
        assert_eq!(
            decode_header(&[0x80]),
            Err(ZmtpError::BadFrame("reserved flag bits set"))
        );
        assert_eq!(
            decode_header(&[0x05]),
            Err(ZmtpError::BadFrame("command with the MORE flag"))
        );
    }

    #[test]
    fn commands_encode_name_then_data() {
        let mut out = Vec::new();
        encode_command(&mut out, b"PONG", b"ctx");
        assert_eq!(out, b"\x04\x08\x04PONGctx");

        assert_eq!(split_command(b"\x04PINGab"), Ok((&b"PING"[..], &b"ab"[..])));
        assert_eq!(split_command(b"\x05READY"), Ok((&b"READY"[..], &b""[..])));
        assert!(split_command(b"").is_err());
        assert!(split_command(b"\x00").is_err());
        assert!(split_command(b"\x06READY").is_err());
    }

    #[test]
    fn ready_properties_round_trip() {
        let data = ready_data(SocketType::Dealer, b"peer-1");
        assert_eq!(
            data,
            b"\x0bSocket-Type\x00\x00\x00\x06DEALER\x08Identity\x00\x00\x00\x06peer-1"
        );
        assert_eq!(
            decode_properties(&data),
            Ok(vec![
                (&b"Socket-Type"[..], &b"DEALER"[..]),
                (&b"Identity"[..], &b"peer-1"[..]),
            ])
        );
        // No identity, no property.
        assert_eq!(
            ready_data(SocketType::Router, b""),
            b"\x0bSocket-Type\x00\x00\x00\x06ROUTER"
        );
        assert_eq!(decode_properties(b""), Ok(vec![]));
        let mut zero_value = Vec::new();
        encode_properties(&mut zero_value, &[(b"X-Empty", b"")]);
        assert_eq!(
            decode_properties(&zero_value),
            Ok(vec![(&b"X-Empty"[..], &b""[..])])
        );
    }

    #[test]
    fn truncated_properties_are_refused() {
        let data = ready_data(SocketType::Dealer, b"peer-1");
        for cut in 1..data.len() {
            // Every cut that does not fall between two properties breaks one.
            if cut == 22 {
                assert!(decode_properties(&data[..cut]).is_ok());
            } else {
                assert!(decode_properties(&data[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(decode_properties(b"\x00\x00\x00\x00\x00").is_err());
        // A hostile value length must not be trusted.
        assert!(decode_properties(b"\x01X\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn error_and_ping_data() {
        assert_eq!(error_data("no"), b"\x02no");
        assert_eq!(error_data(&"x".repeat(300)).len(), 256);
        assert_eq!(decode_error_reason(b"\x02no"), Ok("no".into()));
        assert_eq!(decode_error_reason(b"\x00"), Ok(String::new()));
        assert!(decode_error_reason(b"").is_err());
        assert!(decode_error_reason(b"\x05no").is_err());

        assert_eq!(ping_context(b"\x00\x0a"), Ok(&b""[..]));
        assert_eq!(ping_context(b"\x00\x0actx"), Ok(&b"ctx"[..]));
        assert_eq!(ping_context(&[0; 40]), Ok(&[0u8; 16][..]));
        assert!(ping_context(b"\x00").is_err());
    }
}
