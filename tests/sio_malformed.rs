//! Malformed Engine.IO / Socket.IO input closes that one client with a close code and a
//! logged reason (WARN, with its address), and harms no one else: a stock socket.io-client
//! in the same room keeps receiving after every case.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::{close_code, next_text, ws_connect, Gateway, Ws};
use sio_common::{chat_line, next_packet, plain, raw_sio, send_text, url, SioClient};

const HI: &str = r#"event {"name":"hi","args":[]}"#;

/// `(text packet, close code, logged reason)`, each sent after a proper `40`.
const BAD: &[(&str, u16, &str)] = &[
    ("", 1008, "sio_bad_engine_type"),
    ("9", 1008, "sio_bad_engine_type"),
    ("x42[]", 1008, "sio_bad_engine_type"),
    ("47", 1008, "sio_bad_socket_type"),
    (r#"42["chat message","#, 1008, "sio_bad_json"),
    (r#"42{"a":1}"#, 1008, "sio_bad_json"),
    ("42[1,2]", 1008, "sio_bad_json"),
    (r#"42["x"]x"#, 1008, "sio_bad_json"),
    (r#"42["\q"]"#, 1008, "sio_bad_json"),
    ("40{oops", 1008, "sio_bad_json"),
    ("40[1]", 1008, "sio_bad_json"),
    ("41{}", 1008, "sio_bad_json"),
    ("431{}", 1008, "sio_bad_json"),
    (r#"4299999999999999999999["x"]"#, 1008, "sio_bad_ack_id"),
    (r#"42/admin["x"]"#, 1008, "sio_bad_namespace"),
    (r#"42/admin,["x"]"#, 1008, "sio_bad_namespace"),
    // Relayed, these would make every stock client in the room drop its connection.
    (r#"42["disconnect"]"#, 1008, "sio_reserved_event"),
    (r#"42["dis\u0063onnect"]"#, 1008, "sio_reserved_event"),
    (r#"421["connect_error",{}]"#, 1008, "sio_reserved_event"),
    (
        r#"451-["up",{"_placeholder":true,"num":0}]"#,
        1003,
        "sio_binary_unsupported",
    ),
    (
        r#"461-[{"_placeholder":true,"num":0}]"#,
        1003,
        "sio_binary_unsupported",
    ),
];

/// `--max-message-bytes` for these tests.
const MAX: usize = 1024;

fn port(ws: &Ws) -> u16 {
    ws.get_ref().get_ref().local_addr().unwrap().port()
}

/// Sends `bad` on a connection that has joined (`40`) or not, and returns the close code.
async fn refused(gw: &Gateway, joined: bool, bad: Message) -> (u16, u16) {
    let mut ws = if joined {
        raw_sio(gw.addr, "").await
    } else {
        let path = "/socket.io/?EIO=4&transport=websocket";
        let mut ws = ws_connect(gw.addr, path, b"").await;
        assert!(next_text(&mut ws).await.starts_with("0{"));
        ws
    };
    let p = port(&ws);
    ws.send(bad).await.expect("send");
    (close_code(&mut ws).await, p)
}

#[test]
fn each_malformed_packet_closes_only_its_sender() {
    let max = MAX.to_string();
    let gw = Gateway::start(&["--max-message-bytes", &max]);
    let mut bystander = SioClient::spawn(&url(gw.addr, ""), "{}");
    bystander.connected();
    let deep = format!("42[\"x\",{}{}]", "[".repeat(100), "]".repeat(100));
    let oversize = format!("42[\"chat message\",\"{}\"]", "x".repeat(MAX));
    // `(what, after 40?, frame, close code, logged reason)`
    let mut cases: Vec<(String, bool, Message, u16, &str)> = BAD
        .iter()
        .map(|&(p, code, reason)| (format!("{p:?}"), true, Message::text(p), code, reason))
        .collect();
    cases.extend([
        (
            "too deep".into(),
            true,
            Message::text(deep),
            1008,
            "sio_bad_json",
        ),
        (
            "event before 40".into(),
            false,
            Message::text("42[\"chat message\",\"x\"]"),
            1008,
            "sio_bad_namespace",
        ),
        (
            "binary frame".into(),
            true,
            Message::binary(vec![4u8, 1, 2]),
            1003,
            "sio_binary_unsupported",
        ),
        (
            "over max-message-bytes".into(),
            true,
            Message::text(oversize),
            1009,
            "message_too_big",
        ),
    ]);
    let n = cases.len();
    smol::block_on(async {
        // A well-behaved raw client publishes after each case.
        let mut good = raw_sio(gw.addr, "").await;
        bystander.expect(HI);
        for (name, joined, bad, want_code, want_reason) in cases {
            let (code, p) = refused(&gw, joined, bad).await;
            assert_eq!(code, want_code, "{name}");
            let line = gw.wait_log(|l| {
                l.contains(" close ") && l.contains(&format!(" client=127.0.0.1:{p} "))
            });
            assert!(
                line.contains(" WARN ")
                    && line.contains(&format!(" code={want_code} "))
                    && line.contains(&format!(" reason={want_reason} ")),
                "{name}: {line}"
            );
            if joined {
                bystander.expect(HI);
            }
            let after = format!("still here after {name}");
            let packet = format!("42[\"chat message\",{}]", sio_common::json_str(&after));
            send_text(&mut good, &packet).await;
            bystander.expect(&chat_line(&after));
            // The publisher gets its own message too (and skips the `hi`s).
            loop {
                let t = plain(&next_packet(&mut good).await);
                if t != "42[\"hi\"]" {
                    assert_eq!(t, packet);
                    break;
                }
            }
        }
    });
    assert!(gw.events("close").len() >= n, "{:?}", gw.events("close"));
}

#[test]
fn a_flood_of_bad_clients_leaves_a_stock_client_working() {
    let gw = Gateway::start(&[]);
    let mut a = SioClient::spawn(&url(gw.addr, ""), "{}");
    a.connected();
    smol::block_on(async {
        for i in 0..20 {
            let mut ws = raw_sio(gw.addr, "").await;
            // Bad connect, disconnect, event and ack data in turn.
            send_text(&mut ws, &format!("4{}{{{{", i % 4)).await;
            let _ = close_code(&mut ws).await;
        }
    });
    for _ in 0..20 {
        a.expect(HI);
    }
    a.chat("fine");
    a.expect(&chat_line("fine"));
}
