//! `[mode]` then bytes into `node::state::Snapshot::decode`, the warm-restart file reader.
//! With bit 0 of `mode` set the bytes are framed first (magic and a correct checksum, as
//! `state::seal` writes them), so the fuzzer reaches the dictionary past the checksum it
//! could never forge. It must never panic; what it accepts must survive encode then decode.
#![no_main]

use grenache_core::dht::state::{Snapshot, seal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 1 {
        seal(rest)
    } else {
        rest.to_vec()
    };
    if let Ok(snapshot) = Snapshot::decode(&file) {
        assert_eq!(Snapshot::decode(&snapshot.encode()), Ok(snapshot));
    }
});
