//! The resume inputs a client controls: an offset (`?since=`, a Socket.IO `offset`) parsed by
//! `history::Offset`, and the `pid`/`offset` fields of a CONNECT's auth object. Never panics;
//! an offset that parses prints back as the same text, and a ring answers any offset with
//! entries or a gap, never with a part of one. Also what a Redis subscriber reads of the
//! shared order (`<offset> <envelope>`), and a log following that order: a message placed
//! after a jump leaves the log at it, and older entries put back keep it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use wsgate::backplane::envelope;
use wsgate::history::{Offset, Place, Ring};
use wsgate::sio::{parse, resume_request, Packet, MAX_PID_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some((at, env)) = envelope::split_ordered(data) {
        let _ = envelope::decode(env);
        let mut ring: Ring<u64> = Ring::new(7, 4);
        let now = Instant::now();
        ring.push(1, 1, now);
        let (place, _) = ring.place(at);
        if place != Place::Old {
            ring.push(at.seq, 1, now);
            assert_eq!(ring.top(), at);
            // Put back what came before, newest first: the log serves from its floor.
            let mut seq = ring.floor();
            while seq > 0 && ring.prepend(seq, seq, 1, now) {
                seq -= 1;
            }
            let floor = Offset { epoch: at.epoch, seq: ring.floor() };
            let n = ring.since(floor).map(|e| e.count() as u64);
            assert_eq!(n, Ok(at.seq - floor.seq));
        }
    }
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
