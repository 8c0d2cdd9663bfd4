//! `framing::Chunked` on arbitrary bytes, whole and split at every fifth byte: never panics,
//! never ends past its input, and finds the same end however the bytes arrive. Then
//! `framing::request_body` on the headers of whatever parses as a request head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::http::framing::{request_body, Chunked};

fuzz_target!(|data: &[u8]| {
    let whole = Chunked::default().feed(data);
    if let Ok(Some(n)) = whole {
        assert!(n <= data.len());
    }
    let mut c = Chunked::default();
    let mut split = Ok(None);
    let mut at = 0;
    for piece in data.chunks(5) {
        match c.feed(piece) {
            Ok(Some(n)) => {
                split = Ok(Some(at + n));
                break;
            }
            Ok(None) => at += piece.len(),
            Err(e) => {
                split = Err(e);
                break;
            }
        }
    }
    assert_eq!(whole, split);
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut hs);
    if let Ok(httparse::Status::Complete(_)) = req.parse(data) {
        let _ = request_body(req.headers);
    }
});
