//! Limits that protect everyone else: oversize messages get 1009, slow consumers are evicted
//! with 1008, and the other clients keep receiving everything, in order.
mod common;
use async_tungstenite::tungstenite::Message;
use common::{close_code, next_text, ws_connect, Gateway};
use futures_lite::StreamExt;

#[test]
fn oversize_message_gets_1009_and_others_carry_on() {
    let gw = Gateway::start(&["--max-message-bytes", "1KiB"]);
    smol::block_on(async {
        let mut big = ws_connect(gw.addr, "/ws", b"").await;
        let mut a = ws_connect(gw.addr, "/ws", b"").await;
        let mut b = ws_connect(gw.addr, "/ws", b"").await;
        gw.wait_log(|l| l.contains(" open ") && l.contains("conn=3"));
        big.send(Message::text("x".repeat(64 * 1024)))
            .await
            .unwrap();
        assert_eq!(close_code(&mut big).await, 1009);
        a.send(Message::text("next")).await.unwrap();
        assert_eq!(next_text(&mut a).await, "next");
        assert_eq!(next_text(&mut b).await, "next");
        // Exactly at the limit is fine.
        a.send(Message::text("y".repeat(1024))).await.unwrap();
        assert_eq!(next_text(&mut b).await.len(), 1024);
    });
    let line = gw.wait_log(|l| l.contains("reason=message_too_big"));
    assert!(
        line.contains("code=1009") && line.contains("client=127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn slow_consumer_is_evicted_while_others_get_everything_in_order() {
    // `slow` reads its Close only after all 600 messages; a close that has not flushed within
    // --close-timeout is reset (tests/slow_consumer.rs), so give it the whole run.
    let gw = Gateway::start(&[
        "--outbox-frames",
        "8",
        "--max-message-bytes",
        "64KiB",
        "--close-timeout",
        "30s",
    ]);
    smol::block_on(async {
        // `slow` never reads: its socket buffers fill, then its outbox, then it is evicted.
        let mut slow = ws_connect(gw.addr, "/ws/s", b"").await;
        let mut fast = ws_connect(gw.addr, "/ws/s", b"").await;
        let publisher = ws_connect(gw.addr, "/ws/s", b"").await;
        gw.wait_log(|l| l.contains(" open ") && l.contains("conn=3"));
        // The publisher is a member too (it gets its own messages): drain them alongside.
        // It runs at most WINDOW messages ahead of what `fast` and its own drain have read:
        // fewer than the 8-frame outbox, so only a client that does not read at all (`slow`)
        // can fall behind by a full outbox, however the machine schedules the readers. (Unpaced,
        // a busy 2-core machine let `fast` lag by 8 frames and get evicted too.)
        const WINDOW: usize = 4;
        let (fast_read, fast_credit) = async_channel::bounded::<()>(WINDOW);
        let (own_read, own_credit) = async_channel::bounded::<()>(WINDOW);
        for _ in 0..WINDOW {
            fast_read.try_send(()).unwrap();
            own_read.try_send(()).unwrap();
        }
        let (mut tx, mut rx) = publisher.split();
        let n = 600u32;
        let payload = "z".repeat(60_000);
        let send = smol::spawn(async move {
            for i in 0..n {
                fast_credit.recv().await.unwrap();
                own_credit.recv().await.unwrap();
                tx.send(Message::text(format!("{i} {payload}")))
                    .await
                    .unwrap();
            }
            tx
        });
        let drain = smol::spawn(async move {
            for _ in 0..n {
                rx.next().await.unwrap().unwrap();
                let _ = own_read.try_send(());
            }
            rx
        });
        for i in 0..n {
            let t = next_text(&mut fast).await;
            assert_eq!(
                t[..t.find(' ').unwrap()].parse::<u32>().unwrap(),
                i,
                "order"
            );
            let _ = fast_read.try_send(());
        }
        let _keep = (send.await, drain.await);
        // The evicted client finds a 1008 Close after whatever was already in its buffers.
        assert_eq!(close_code(&mut slow).await, 1008);
        // Having read it, the client closes (the server lingers for that, up to
        // --close-timeout, before its close line).
        drop(slow);
        let line = gw.wait_log(|l| l.contains(" close ") && l.contains("reason=slow_consumer"));
        assert!(
            line.contains("code=1008") && line.contains("client=127.0.0.1:"),
            "{line}"
        );
        // Only the slow one was closed, and the others are still served.
        assert_eq!(gw.events("close").len(), 1, "{:?}", gw.events("close"));
        fast.send(Message::text("after")).await.unwrap();
        assert_eq!(next_text(&mut fast).await, "after");
    });
}
