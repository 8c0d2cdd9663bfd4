//! `sio::parse` on any text, and the chat bridge on every event it accepts: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::sio::{chat_text, parse, Packet};

fuzz_target!(|text: &str| {
    if let Ok(Packet::Event { args, .. }) = parse(text) {
        let _ = chat_text(args);
    }
});
