//! Inline delivery (`--inline-gap`): a publish into a quiet room is sent by the publisher to
//! each idle session's socket itself. Against the real gateway and real sockets:
//! * a client that stops reading, so that sends are taken in part and handed back to its
//!   session while the session queues pings of its own, still gets every frame once, whole
//!   and in order, with the pings only between frames;
//! * `--inline-gap 0ms` turns it off (nothing counted inline), and delivery is the same.

mod common;

use async_tungstenite::tungstenite::Message;
use common::*;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Messages published, each `SIZE` bytes and numbered, far enough apart to go inline.
const MESSAGES: usize = 40;
const SIZE: usize = 16 * 1024;

fn payload(i: usize) -> String {
    format!("{i:04}{}", "x".repeat(SIZE - 4))
}

/// Publishes the numbered messages `gap` apart from a client of the room, reading each back.
fn publish_all(gw: &Gateway, gap: Duration) {
    smol::block_on(async {
        let mut ws = ws_connect(gw.addr, "/ws/inline", b"").await;
        for i in 0..MESSAGES {
            ws.send(Message::text(payload(i))).await.unwrap();
            assert_eq!(next_text(&mut ws).await, payload(i));
            smol::Timer::after(gap).await;
        }
    });
}

/// Reads `member` until it has every message, and checks what it got: the messages in
/// order, each whole, and nothing but pings between them.
fn read_all(member: &mut TcpStream) {
    member
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let frames = parse_frames(&bytes);
        let texts: Vec<&Vec<u8>> = frames
            .iter()
            .filter(|(op, _)| *op == 0x1)
            .map(|(_, p)| p)
            .collect();
        if texts.len() == MESSAGES {
            for (op, _) in &frames {
                assert!(*op == 0x1 || *op == 0x9, "opcode {op:#x} in the stream");
            }
            for (i, t) in texts.iter().enumerate() {
                assert!(**t == payload(i).into_bytes(), "message {i} is not whole");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {MESSAGES} messages",
            texts.len()
        );
        match member.read(&mut chunk) {
            Ok(0) => panic!("the gateway closed the connection"),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_client_that_reads_late_gets_every_inline_frame_whole_and_in_order() {
    let gw = Gateway::start(&[
        "--inline-gap",
        "1ms",
        "--socket-send-buffer",
        "4096",
        "--ping-interval",
        "1s",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let mut late = raw_upgrade(gw.addr, "/ws/inline", None);
    // (Its receive buffer stays as it is: shrunk to a few KiB, loopback TCP crawls at one
    // segment per retransmission timeout, 200 ms.)
    // 40 x 16 KiB, 50 ms apart: about 640 KiB over 2 s, far more than the socket holds, so
    // sends are taken in part and the session finishes them, its pings queued meanwhile.
    publish_all(&gw, Duration::from_millis(50));
    read_all(&mut late);
    let m = scrape(gw.admin_addr());
    assert!(
        m.get("wsgate_messages_inline_total") > 0.0,
        "nothing was sent inline"
    );
    assert!(m.get("wsgate_pings_sent_total") > 0.0, "no ping went out");
}

#[test]
fn inline_gap_zero_queues_everything_for_the_sessions() {
    let gw = Gateway::start(&["--inline-gap", "0ms", "--admin-listen", "127.0.0.1:0"]);
    let mut member = raw_upgrade(gw.addr, "/ws/inline", None);
    publish_all(&gw, Duration::from_millis(10));
    read_all(&mut member);
    let m = scrape(gw.admin_addr());
    assert_eq!(m.get("wsgate_messages_inline_total"), 0.0);
    assert_eq!(m.get("wsgate_messages_out_total"), (2 * MESSAGES) as f64);
}
