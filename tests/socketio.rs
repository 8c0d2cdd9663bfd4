//! The stock `socket.io-client` 4.x (npm, on Node) with `transports: ['websocket']` against
//! wsgate: connect, `hi` to the others, `chat message` to everyone, order, heartbeat, rooms,
//! acks, namespaces, disconnect; plus a raw Engine.IO client that stops answering pings and
//! what a polling client gets.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::{next_text, Gateway, WAIT};
use futures_lite::{FutureExt, StreamExt};
use sio_common::{chat_line, event_line, plain, raw_sio, send_text, url, SioClient};
use smol::Timer;
use std::time::{Duration, Instant};

const HI: &str = r#"event {"name":"hi","args":[]}"#;

#[test]
fn connects_with_the_configured_open_packet() {
    let gw = Gateway::start(&[
        "--ping-interval",
        "1500ms",
        "--pong-timeout",
        "700ms",
        "--max-message-bytes",
        "4096",
    ]);
    let mut a = SioClient::spawn(&url(gw.addr, ""), "{}");
    a.connected();
    let line = gw.wait_log(|l| l.contains(" open ") && l.contains("room=main"));
    assert!(line.contains("client=127.0.0.1:"), "{line}");
    // `auth` data rides on the `40` packet; it is accepted (and not used).
    let opts = r#"{"auth":{"token":"abc","n":[1,2]}}"#;
    let mut b = SioClient::spawn(&url(gw.addr, ""), opts);
    b.connected();
    a.expect(HI);
    // The same handshake byte by byte.
    smol::block_on(async {
        let mut ws =
            common::ws_connect(gw.addr, "/socket.io/?EIO=4&transport=websocket", b"").await;
        let open = next_text(&mut ws).await;
        let sid = &open[9..29];
        assert_eq!(
            open,
            format!(
                "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":1500,\
                 \"pingTimeout\":700,\"maxPayload\":4096}}"
            )
        );
        send_text(&mut ws, "40").await;
        assert_eq!(
            plain(&next_text(&mut ws).await),
            format!("40{{\"sid\":\"{sid}\"}}")
        );
    });
}

#[test]
fn hi_goes_to_the_others_and_not_to_the_newcomer() {
    let gw = Gateway::start(&[]);
    let u = url(gw.addr, "");
    let mut a = SioClient::spawn(&u, "{}");
    a.connected();
    let mut b = SioClient::spawn(&u, "{}");
    b.connected();
    a.expect(HI);
    let mut c = SioClient::spawn(&u, "{}");
    c.connected();
    a.expect(HI);
    b.expect(HI);
    // The newcomer's first event is this chat message, not a `hi`.
    c.chat("sync");
    for x in [&mut a, &mut b, &mut c] {
        x.expect(&chat_line("sync"));
    }
}

#[test]
fn chat_message_reaches_everyone_including_the_sender() {
    let gw = Gateway::start(&[]);
    let u = url(gw.addr, "");
    let mut a = SioClient::spawn(&u, "{}");
    a.connected();
    let mut b = SioClient::spawn(&u, "{}");
    b.connected();
    a.expect(HI);
    a.chat("from a");
    a.expect(&chat_line("from a"));
    b.expect(&chat_line("from a"));
    let tricky = "quote \" backslash \\ newline \n tab \t </script>";
    b.chat(tricky);
    a.expect(&chat_line(tricky));
    b.expect(&chat_line(tricky));
}

#[test]
fn a_hundred_non_ascii_messages_arrive_in_order() {
    let gw = Gateway::start(&[]);
    let u = url(gw.addr, "");
    let mut a = SioClient::spawn(&u, "{}");
    a.connected();
    let mut b = SioClient::spawn(&u, "{}");
    b.connected();
    a.expect(HI);
    let prefix = "héllo wörld ✓ 日本語 😀 #";
    a.send(&format!(
        r#"{{"op":"chat_many","prefix":{},"n":100}}"#,
        sio_common::json_str(prefix)
    ));
    for i in 0..100 {
        let want = chat_line(&format!("{prefix}{i}"));
        a.expect(&want);
        b.expect(&want);
    }
}

#[test]
fn a_client_stays_connected_through_many_ping_intervals() {
    let gw = Gateway::start(&["--ping-interval", "200ms", "--pong-timeout", "300ms"]);
    let mut a = SioClient::spawn(&url(gw.addr, ""), "{}");
    a.connected();
    // Seven intervals: only Engine.IO pings may arrive (the client answers each).
    a.quiet_for(Duration::from_millis(1400));
    assert!(a.pings >= 4, "only {} pings in 1.4 s", a.pings);
    a.chat("still here");
    a.expect(&chat_line("still here"));
    assert!(gw.events("close").is_empty(), "{:?}", gw.events("close"));
}

#[test]
fn a_client_that_stops_answering_pings_is_closed_after_the_ping_timeout() {
    let gw = Gateway::start(&["--ping-interval", "200ms", "--pong-timeout", "300ms"]);
    let start = Instant::now();
    let (pings, code, reason) = smol::block_on(async {
        // A raw Engine.IO client that connects properly, then never sends `3`.
        let mut ws = raw_sio(gw.addr, "").await;
        let mut pings = 0;
        loop {
            let m = ws
                .next()
                .or(async {
                    Timer::after(WAIT).await;
                    panic!("not closed within {WAIT:?}")
                })
                .await
                .expect("a Close frame before the end")
                .expect("no read error");
            match m {
                Message::Text(t) if t.as_str() == "2" => pings += 1,
                Message::Close(Some(f)) => break (pings, u16::from(f.code), f.reason.to_string()),
                m => panic!("unexpected {m:?}"),
            }
        }
    });
    // The first ping comes after 200 ms, the close 300 ms after it at the earliest.
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(pings >= 1);
    assert_eq!((code, reason.as_str()), (1008, "pong timeout"));
    let line = gw.wait_log(|l| l.contains(" close ") && l.contains("reason=pong_timeout"));
    assert!(line.contains("code=1008"), "{line}");
}

#[test]
fn rooms_by_query_are_isolated() {
    let gw = Gateway::start(&[]);
    let mut main = SioClient::spawn(&url(gw.addr, ""), "{}");
    main.connected();
    let mut red = SioClient::spawn(&url(gw.addr, ""), r#"{"query":{"room":"red"}}"#);
    red.connected();
    // The two spellings: the `query` option and `?room=` in the URL.
    let mut blue1 = SioClient::spawn(&url(gw.addr, ""), r#"{"query":{"room":"blue"}}"#);
    blue1.connected();
    let mut blue2 = SioClient::spawn(&url(gw.addr, "/?room=blue"), "{}");
    blue2.connected();
    blue1.expect(HI);
    blue2.chat("blue only");
    blue1.expect(&chat_line("blue only"));
    blue2.expect(&chat_line("blue only"));
    // Neither `hi` nor the blue message reached the others: their first line is their own.
    main.chat("main only");
    main.expect(&chat_line("main only"));
    red.chat("red only");
    red.expect(&chat_line("red only"));
    blue1.chat("blue again");
    blue2.expect(&chat_line("blue again"));
    assert_eq!(
        gw.events("open")
            .iter()
            .filter(|l| l.contains("room=blue"))
            .count(),
        2
    );
}

#[test]
fn an_unknown_transport_gets_the_engine_io_error() {
    let gw = Gateway::start(&[]);
    let resp = common::raw(
        gw.addr,
        b"GET /socket.io/?EIO=4&transport=flashsocket&t=abc HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(common::status(&resp), 400);
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.contains("\r\nContent-Type: application/json\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n{\"code\":0,\"message\":\"Transport unknown\"}"),
        "{text}"
    );
    gw.wait_log(|l| l.contains(" handshake_rejected ") && l.contains("reason=engine_io_error"));
}

#[test]
fn another_namespace_gets_the_error_packet() {
    let gw = Gateway::start(&[]);
    let mut admin = SioClient::spawn(&url(gw.addr, "/admin"), "{}");
    admin.expect(r#"connect_error {"message":"Invalid namespace"}"#);
    smol::block_on(async {
        let mut ws =
            common::ws_connect(gw.addr, "/socket.io/?EIO=4&transport=websocket", b"").await;
        assert!(next_text(&mut ws).await.starts_with("0{"));
        send_text(&mut ws, "40/admin,").await;
        assert_eq!(
            next_text(&mut ws).await,
            "44/admin,{\"message\":\"Invalid namespace\"}"
        );
        // The transport stays usable for the main namespace.
        send_text(&mut ws, "40").await;
        assert!(next_text(&mut ws).await.starts_with("40{\"sid\":"));
    });
}

#[test]
fn acks_are_answered_with_no_arguments_and_other_events_are_relayed() {
    let gw = Gateway::start(&[]);
    let u = url(gw.addr, "");
    let mut a = SioClient::spawn(&u, "{}");
    a.connected();
    let mut b = SioClient::spawn(&u, "{}");
    b.connected();
    a.expect(HI);
    a.send(r#"{"op":"emit_ack","id":7,"name":"chat message","args":["acked"]}"#);
    let mut got = [a.next(), a.next()];
    got.sort();
    assert_eq!(
        got,
        [r#"ack {"id":7,"args":[]}"#.to_string(), chat_line("acked")]
    );
    b.expect(&chat_line("acked"));
    a.send(r#"{"op":"emit","name":"typing","args":[1,{"who":"ä","on":true},null]}"#);
    let want = event_line("typing", r#"[1,{"who":"ä","on":true},null]"#);
    b.expect(&want);
    a.expect(&want);
}

#[test]
fn disconnect_and_engine_io_close_end_the_session() {
    let gw = Gateway::start(&[]);
    let u = url(gw.addr, "");
    let mut a = SioClient::spawn(&u, "{}");
    a.connected();
    let mut b = SioClient::spawn(&u, "{}");
    b.connected();
    a.expect(HI);
    b.send(r#"{"op":"disconnect"}"#);
    b.expect(r#"disconnect {"reason":"io client disconnect"}"#);
    gw.wait_log(|l| l.contains(" close ") && l.contains("room=main"));
    a.chat("after b left");
    a.expect(&chat_line("after b left"));
    // Engine.IO close packet `1`: the server closes with 1000.
    let code = smol::block_on(async {
        let mut ws = raw_sio(gw.addr, "").await;
        send_text(&mut ws, "1").await;
        common::close_code(&mut ws).await
    });
    assert_eq!(code, 1000);
    gw.wait_log(|l| l.contains(" close ") && l.contains("reason=sio_close"));
    a.expect(HI);
    a.quiet_for(Duration::from_millis(200));
}

#[test]
fn a_client_with_retries_gets_its_acks_and_sends_each_message_once() {
    let gw = Gateway::start(&[]);
    let u = url(gw.addr, "");
    let mut b = SioClient::spawn(&u, "{}");
    b.connected();
    // With `retries`, socket.io-client asks an ack for every emit and sends the same packet
    // again when none comes within `ackTimeout`.
    let mut a = SioClient::spawn(&u, r#"{"retries":3,"ackTimeout":300}"#);
    a.connected();
    b.expect(HI);
    a.chat("once");
    a.chat("then");
    b.expect(&chat_line("once"));
    b.expect(&chat_line("then"));
    // Several ack timeouts later: no resend arrived.
    b.quiet_for(Duration::from_millis(1000));
}
