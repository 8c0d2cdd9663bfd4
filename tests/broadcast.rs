//! The hub through real sockets: everyone in a room gets every message, sender included;
//! rooms are apart; binary stays binary; order per publisher is kept.
mod common;
use async_tungstenite::tungstenite::Message;
use common::{next_msg, next_text, ws_connect, Gateway};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::Async;
use std::net::TcpStream;

#[test]
fn three_clients_all_receive_including_sender() {
    let gw = Gateway::start(&[]);
    smol::block_on(async {
        let mut a = ws_connect(gw.addr, "/ws", b"").await;
        let mut b = ws_connect(gw.addr, "/ws", b"").await;
        let mut c = ws_connect(gw.addr, "/ws/main", b"").await;
        gw.wait_log(|l| l.matches(" open ").count() == 1 && l.contains("conn=3"));
        a.send(Message::text("hello from a")).await.unwrap();
        for ws in [&mut a, &mut b, &mut c] {
            assert_eq!(next_text(ws).await, "hello from a");
        }
        c.send(Message::text("héllo ✓ from c")).await.unwrap();
        for ws in [&mut a, &mut b, &mut c] {
            assert_eq!(next_text(ws).await, "héllo ✓ from c");
        }
    });
    let open = gw.wait_log(|l| l.contains(" open ") && l.contains("conn=1"));
    assert!(
        open.contains("room=main") && open.contains("client=127.0.0.1:"),
        "{open}"
    );
    let close = gw.wait_log(|l| l.contains(" close "));
    for key in [
        "client=127.0.0.1:",
        "room=main",
        "duration=",
        "code=",
        "reason=",
    ] {
        assert!(close.contains(key), "{key} missing in {close}");
    }
}

#[test]
fn rooms_are_isolated_and_binary_stays_binary() {
    let gw = Gateway::start(&[]);
    smol::block_on(async {
        let mut red1 = ws_connect(gw.addr, "/ws/red", b"").await;
        let mut red2 = ws_connect(gw.addr, "/ws/red", b"").await;
        let mut blue = ws_connect(gw.addr, "/ws/blue", b"").await;
        gw.wait_log(|l| l.contains(" open ") && l.contains("conn=3"));
        red1.send(Message::binary(vec![0u8, 159, 146, 150]))
            .await
            .unwrap();
        blue.send(Message::text("blue only")).await.unwrap();
        assert_eq!(
            next_msg(&mut red2).await,
            Message::binary(vec![0u8, 159, 146, 150])
        );
        assert_eq!(
            next_msg(&mut red1).await,
            Message::binary(vec![0u8, 159, 146, 150])
        );
        assert_eq!(next_text(&mut blue).await, "blue only");
        // Nothing from blue reaches red: the next thing red2 sees is red1's next message.
        red1.send(Message::text("red again")).await.unwrap();
        assert_eq!(next_text(&mut red2).await, "red again");
    });
}

#[test]
fn order_per_publisher_is_kept() {
    let gw = Gateway::start(&[]);
    smol::block_on(async {
        let mut p1 = ws_connect(gw.addr, "/ws/o", b"").await;
        let mut p2 = ws_connect(gw.addr, "/ws/o", b"").await;
        let mut sub = ws_connect(gw.addr, "/ws/o", b"").await;
        gw.wait_log(|l| l.contains(" open ") && l.contains("conn=3"));
        // Both bursts together (2n frames) fit one outbox (--outbox-frames, 256): the
        // subscriber reads only after the last send, and a session that the machine's load
        // kept from running meanwhile must not be evicted as a slow consumer.
        let n = 120;
        for i in 0..n {
            p1.send(Message::text(format!("p1 {i}"))).await.unwrap();
            p2.send(Message::text(format!("p2 {i}"))).await.unwrap();
        }
        let (mut next1, mut next2) = (0, 0);
        while next1 < n || next2 < n {
            let t = next_text(&mut sub).await;
            let (who, i) = t.split_once(' ').unwrap();
            let i: u32 = i.parse().unwrap();
            let next = if who == "p1" { &mut next1 } else { &mut next2 };
            assert_eq!(i, *next, "{who} out of order");
            *next += 1;
        }
    });
}

#[test]
fn bytes_after_the_head_are_not_dropped() {
    // The upgrade request and the first (masked) frame arrive in one segment.
    let gw = Gateway::start(&[]);
    smol::block_on(async {
        let mut s = Async::<TcpStream>::connect(gw.addr).await.unwrap();
        let mut req =
            b"GET /ws/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                .to_vec();
        let mask = [1u8, 2, 3, 4];
        req.extend_from_slice(&[0x81, 0x80 | 2]);
        req.extend_from_slice(&mask);
        req.extend(b"hi".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        s.write_all(&req).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"\x81\x02hi") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(String::from_utf8_lossy(&got)
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    });
}
