//! Server pings: they come every `--ping-interval`; a client that never answers is closed
//! after `--pong-timeout`; a client that answers stays through many intervals.
mod common;
use async_tungstenite::tungstenite::Message;
use common::{ws_connect, Gateway, WAIT};
use futures_lite::{AsyncReadExt, FutureExt, StreamExt};
use smol::{Async, Timer};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn pings_arrive_within_the_interval() {
    let gw = Gateway::start(&["--ping-interval", "200ms", "--pong-timeout", "5s"]);
    smol::block_on(async {
        let mut ws = ws_connect(gw.addr, "/ws", b"").await;
        let start = Instant::now();
        let mut pings = Vec::new();
        while pings.len() < 3 {
            match ws
                .next()
                .or(async {
                    Timer::after(WAIT).await;
                    None
                })
                .await
            {
                Some(Ok(Message::Ping(_))) => pings.push(start.elapsed()),
                Some(Ok(m)) => panic!("unexpected {m:?}"),
                other => panic!("no ping: {other:?}"),
            }
        }
        // Three pings at a 200 ms interval: the third cannot come before 600 ms, and must
        // not take many intervals either (generous bound: this asserts behaviour, not speed).
        assert!(pings[2] >= Duration::from_millis(550), "{pings:?}");
        assert!(pings[2] < Duration::from_secs(3), "{pings:?}");
    });
}

#[test]
fn a_client_that_never_answers_is_closed_after_the_pong_timeout() {
    let gw = Gateway::start(&["--ping-interval", "200ms", "--pong-timeout", "300ms"]);
    // A raw client that writes nothing after the handshake: no pong, ever. It reads until the
    // server shuts its side, then walks the frames it got.
    let bytes = common::raw(gw.addr, UPGRADE);
    let body = &bytes[bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let frames = common::parse_frames(body);
    let pings = frames.iter().filter(|(op, _)| *op == 0x9).count();
    assert!(pings >= 1, "{frames:?}");
    let (op, payload) = frames.last().unwrap();
    assert_eq!(*op, 0x8, "last frame is a Close: {frames:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    assert_eq!(&payload[2..], b"pong timeout");
    let line = gw.wait_log(|l| l.contains(" close ") && l.contains("reason=pong_timeout"));
    assert!(
        line.contains("code=1008") && line.contains("client=127.0.0.1:"),
        "{line}"
    );
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn a_client_that_answers_stays_connected() {
    let gw = Gateway::start(&["--ping-interval", "100ms", "--pong-timeout", "150ms"]);
    smol::block_on(async {
        let mut ws = ws_connect(gw.addr, "/ws", b"").await;
        let mut pings = 0;
        // Reading answers each ping with a pong (tungstenite does it while reading).
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let m = ws
                .next()
                .or(async {
                    Timer::after(Duration::from_millis(50)).await;
                    Some(Ok(Message::Pong(Default::default())))
                })
                .await;
            match m {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Pong(_))) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
        assert!(pings >= 5, "only {pings} pings in 1.5 s at 100 ms");
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(common::next_text(&mut ws).await, "still here");
    });
    assert!(gw
        .events("close")
        .iter()
        .all(|l| !l.contains("pong_timeout")));
}

#[test]
fn raw_ping_frames_go_out_on_an_idle_connection() {
    // Byte-level check of the server's ping: FIN + opcode 0x9, no mask, empty payload.
    let gw = Gateway::start(&["--ping-interval", "100ms"]);
    smol::block_on(async {
        let mut s = Async::<TcpStream>::connect(gw.addr).await.unwrap();
        futures_lite::AsyncWriteExt::write_all(&mut s, UPGRADE)
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.windows(2).any(|w| w == [0x89, 0x00]) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    });
}
