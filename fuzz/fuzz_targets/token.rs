//! `token::verify` on any text, with a fixed key and clock: never panics, and accepts nothing
//! it could not have signed (every token the fuzzer finds valid would be a forgery).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::token::{base64url, verify, Rules};

fuzz_target!(|text: &str| {
    let _ = base64url(text);
    let rules = Rules {
        key: b"fuzzing key",
        now: 1_700_000_000,
        leeway: 5,
        audience: Some("wsgate"),
    };
    assert!(verify(text, &rules).is_err(), "a forged token was accepted: {text}");
});
