//! `sio::parse` on any text, the chat bridge on every event it accepts, and the polling
//! payload format (`\x1e`-separated packets in a POST body, any bytes) split and parsed
//! packet by packet, then encoded back: never panics, and the split is lossless.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::sio::{chat_text, parse, payload_packets, push_packet, Packet};

fn one(text: &str) {
    if let Ok(Packet::Event { args, .. }) = parse(text) {
        let _ = chat_text(args);
    }
}

fuzz_target!(|body: &[u8]| {
    if let Ok(text) = std::str::from_utf8(body) {
        one(text);
    }
    if let Ok(packets) = payload_packets(body) {
        let mut again = Vec::new();
        for p in packets {
            one(p);
            push_packet(&mut again, p.as_bytes());
        }
        // An empty body is one empty packet: encoding it back gives the empty body again.
        assert_eq!(again, body);
    }
});
