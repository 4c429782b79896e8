//! Z85 (ZeroMQ RFC 32): the text form of CURVE keys, 40 characters for 32 bytes, as
//! libzmq's `zmq_z85_encode` and the `zeromq` npm package write them.

/// The 85 characters, in digit order.
const ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Why a Z85 text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Z85Error {
    /// Z85 encodes 4 bytes as 5 characters: the text length must be a multiple of 5.
    #[error("Z85: length {0} is not a multiple of 5")]
    Length(usize),
    /// A character outside the Z85 alphabet.
    #[error("Z85: {0:?} is not a Z85 character")]
    Character(char),
    /// Five characters worth more than 2^32 - 1.
    #[error("Z85: a group of five characters overflows 32 bits")]
    Overflow,
}

/// Encodes bytes whose length is a multiple of 4 (a CURVE key is 32); `None` otherwise.
pub fn encode(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut text = String::with_capacity(bytes.len() / 4 * 5);
    for chunk in bytes.chunks_exact(4) {
        let mut value = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut digits = [0u8; 5];
        for digit in digits.iter_mut().rev() {
            *digit = ALPHABET[(value % 85) as usize];
            value /= 85;
        }
        text.extend(digits.iter().map(|&d| char::from(d)));
    }
    Some(text)
}

/// Decodes Z85 text (length a multiple of 5) into bytes.
///
/// # Errors
/// A bad length, a character outside the alphabet, or a group over 32 bits.
pub fn decode(text: &str) -> Result<Vec<u8>, Z85Error> {
    if !text.len().is_multiple_of(5) {
        return Err(Z85Error::Length(text.len()));
    }
    let mut bytes = Vec::with_capacity(text.len() / 5 * 4);
    for group in text.as_bytes().chunks_exact(5) {
        let mut value: u64 = 0;
        for &c in group {
            let digit = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(Z85Error::Character(char::from(c)))?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).map_err(|_| Z85Error::Overflow)?;
        bytes.extend_from_slice(&value.to_be_bytes());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_32_test_vector() {
        // The example of RFC 32: 8 bytes, "HelloWorld".
        let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(encode(&bytes).as_deref(), Some("HelloWorld"));
        assert_eq!(decode("HelloWorld"), Ok(bytes.to_vec()));
    }

    #[test]
    fn libzmq_test_key_pair_round_trips() {
        // The server public key of libzmq's CURVE tests (tests/testutil_security).
        let text = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
        let bytes = decode(text).expect("valid");
        assert_eq!(bytes.len(), 32);
        assert_eq!(encode(&bytes).as_deref(), Some(text));
    }

    #[test]
    fn every_byte_value_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = encode(&bytes).expect("multiple of 4");
        assert_eq!(decode(&text), Ok(bytes));
        assert_eq!(encode(&[0xff; 4]).as_deref(), Some("%nSc0"));
    }

    #[test]
    fn bad_text_is_refused() {
        assert_eq!(encode(&[1, 2, 3]), None);
        assert_eq!(decode("abcd"), Err(Z85Error::Length(4)));
        assert_eq!(decode("abc d"), Err(Z85Error::Character(' ')));
        assert_eq!(decode("abc\"d"), Err(Z85Error::Character('"')));
        assert_eq!(decode("#####"), Err(Z85Error::Overflow));
        assert!(decode("é1234").is_err());
    }
}
