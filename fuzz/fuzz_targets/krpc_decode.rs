//! Arbitrary bytes into `Message::decode`: it must never panic; an accepted message must
//! survive encode then decode unchanged, and so must the error reply to a rejected query.
#![no_main]

use grenache_core::dht::bencode::MAX_INPUT_LEN;
use grenache_core::dht::krpc::Message;
use libfuzzer_sys::fuzz_target;

fn assert_round_trip(message: &Message) {
    let wire = message.encode();
    // Re-encoding may grow a message (lossy UTF-8, an added `implied_port`); past one
    // datagram the decoder rightly refuses it.
    if wire.len() > MAX_INPUT_LEN {
        return;
    }
    let again = Message::decode(&wire).expect("an encoded message decodes");
    assert_eq!(&again, message);
}

fuzz_target!(|data: &[u8]| {
    match Message::decode(data) {
        Ok(message) => assert_round_trip(&message),
        Err(err) => {
            let _label = err.kind.as_str();
            if let Some(reply) = err.reply() {
                assert_round_trip(&reply);
            }
        }
    }
});
