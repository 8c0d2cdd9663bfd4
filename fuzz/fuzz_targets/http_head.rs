//! `http::parse_head`, then `route::route` and `handshake::check` on what it returns: never
//! panics, never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::http::{parse_head, Head};

fuzz_target!(|data: &[u8]| {
    if let Ok(Head::Complete { len, request }) = parse_head(data) {
        assert!(len <= data.len());
        let _ = wsgate::prelude::route::route(request.method, request.target);
        let _ = wsgate::prelude::handshake::check(&request);
    }
});
