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
        let packets: Vec<&str> = packets.collect();
        for p in &packets {
            one(p);
        }
        // The split is lossless...
        assert_eq!(packets.join("\x1e").as_bytes(), body);
        // ...and the encoder (which only ever gets non-empty packets) gives them back.
        let mut again = Vec::new();
        let full: Vec<&str> = packets.into_iter().filter(|p| !p.is_empty()).collect();
        for p in &full {
            push_packet(&mut again, p.as_bytes());
        }
        let back: Vec<&str> = match payload_packets(&again) {
            Ok(it) => it.collect(),
            Err(_) => unreachable!("the encoder keeps UTF-8"),
        };
        if full.is_empty() {
            assert_eq!(back, [""]);
        } else {
            assert_eq!(back, full);
        }
    }
});
