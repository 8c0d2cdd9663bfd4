//! The resume inputs a client controls: an offset (`?since=`, a Socket.IO `offset`) parsed by
//! `history::Offset`, and the `pid`/`offset` fields of a CONNECT's auth object. Never panics;
//! an offset that parses prints back as the same text, and a ring answers any offset with
//! entries or a gap, never with a part of one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use wsgate::history::{Offset, Ring};
use wsgate::sio::{parse, resume_request, Packet, MAX_PID_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(o) = text.parse::<Offset>() {
        // Round trip, up to leading zeros, which the parser takes and the printer drops.
        assert_eq!(o.to_string().parse::<Offset>(), Ok(o));
        let mut ring = Ring::new(o.epoch, 8);
        let now = Instant::now();
        for i in 0..(o.seq % 13) {
            ring.push(i, 1, now);
        }
        let top = ring.top().seq;
        let served = ring.since(o).map(|entries| entries.count() as u64);
        if let Ok(n) = served {
            // Exactly what came after it: nothing skipped inside the kept entries.
            assert_eq!(n, top - o.seq);
        }
    }
    if let Ok(Packet::Connect { data, .. }) = parse(text) {
        let (pid, offset) = resume_request(data);
        assert!(pid.is_none_or(|p| !p.is_empty() && p.len() <= MAX_PID_LEN));
        if let Some(o) = offset {
            let _ = o.parse::<Offset>();
        }
    }
});
