//! Arbitrary bytes into `bencode::decode`: it must never panic, and whatever it accepts
//! must re-encode to exactly the input (canonical form).
#![no_main]

use grenache_core::dht::bencode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = bencode::decode(data) {
        let mut out = Vec::with_capacity(data.len());
        bencode::encode(&value, &mut out);
        assert_eq!(out, data, "encode(decode(x)) != x");
    }
});
