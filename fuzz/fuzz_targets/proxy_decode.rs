//! `proxy::decode` on arbitrary bytes: never panics, never claims more than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::prelude::proxy::{decode, Decoded};

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Complete { consumed, header }) = decode(data) {
        assert!(consumed <= data.len());
        header.tlvs().for_each(drop);
    }
});
