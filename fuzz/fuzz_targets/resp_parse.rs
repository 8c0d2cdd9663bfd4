//! `resp::parse` on arbitrary bytes: never panics, never claims more than it was given, and
//! an array's items iterate to exactly its length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::backplane::resp::{parse, Parsed, Value};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete { value, consumed }) = parse(data) {
        assert!(consumed <= data.len());
        if let Value::Array(a) = value {
            assert_eq!(a.iter().count(), a.len());
        }
    }
});
