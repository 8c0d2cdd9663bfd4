//! Nothing a client sends reaches the log raw: control characters (C0, DEL, C1) in message
//! text, header values, Socket.IO packets and paths are escaped in both formats, and long
//! values are cut and marked.

mod common;

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::AsyncWriteExt;
use smol::Async;
use std::net::TcpStream;

const EVIL: &str = "abc\rFAKE\x1b[2K\x7f\u{85}\u{9b}end\nNEXT";

fn run(format: &str) {
    let gw = Gateway::start(&[
        "--log-messages",
        "--log-format",
        format,
        "--allowed-origins",
        "https://ok.example",
        "--log-value-bytes",
        "200",
    ]);
    smol::block_on(async {
        // Message text, and one long message.
        let mut ws = ws_connect(gw.addr, "/ws/inj", b"").await;
        ws.send(Message::text(EVIL)).await.unwrap();
        assert_eq!(next_text(&mut ws).await, EVIL, "delivered as sent");
        ws.send(Message::text("y".repeat(5000))).await.unwrap();
        assert_eq!(next_text(&mut ws).await.len(), 5000);
        // A refused Origin with a C1 control character (valid in a header value).
        let (code, _, _) = upgrade(
            gw.addr,
            b"",
            "/ws/inj",
            "Origin: https://e\u{9b}[2K.example\r\n",
        )
        .await;
        assert_eq!(code, 403);
        // A Socket.IO event whose name holds DEL and NEL (valid inside a JSON string).
        let mut sio = ws_connect(gw.addr, "/socket.io/?EIO=4&transport=websocket", b"").await;
        assert!(next_text(&mut sio).await.starts_with("0{"));
        sio.send(Message::text("40")).await.unwrap();
        assert!(next_text(&mut sio).await.starts_with("40{"));
        sio.send(Message::text("42[\"ev\u{7f}\u{85}\",\"\u{9b}x\"]"))
            .await
            .unwrap();
        assert!(next_text(&mut sio).await.starts_with("42[\"ev"));
        // Paths: percent-encoded controls, and a raw NEL.
        for path in ["/%1b%0d", "/\u{85}x"] {
            let mut s = Async::<TcpStream>::connect(gw.addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut resp = Vec::new();
            let _ = futures_lite::AsyncReadExt::read_to_end(&mut s, &mut resp).await;
            assert!(status(&resp) >= 400, "{path}");
        }
    });
    // Each of them was logged...
    gw.wait_logs(2, WAIT, |l| {
        l.contains("\"message\"") || l.contains(" message ")
    });
    gw.wait_log(|l| l.contains("upgrade_refused"));
    gw.wait_logs(2, WAIT, |l| {
        l.contains("http_error") || l.contains("prelude_rejected")
    });
    gw.wait_log(|l| l.contains("ev\\u007f\\u0085"));
    // ...and no line holds a raw control character or was split by one.
    for l in gw.logs() {
        assert!(
            !l.chars().any(|c| c.is_control()),
            "{format}: raw control in {l:?}"
        );
        let starts = if format == "json" {
            l.starts_with("{\"ts\":")
        } else {
            l.starts_with("20")
        };
        assert!(
            starts,
            "{format}: a line that does not start a record: {l:?}"
        );
    }
    let logs = gw.logs().join("\n");
    assert!(
        logs.contains(r"abc\rFAKE\u001b[2K\u007f\u0085\u009bend\nNEXT"),
        "{format}: the escaped text is there: {logs}"
    );
    assert!(
        logs.contains(r"https://e\u009b[2K.example"),
        "{format}: {logs}"
    );
    // The long message: 200 bytes, then the mark.
    assert!(
        logs.contains(&format!("{}...[+4800 bytes]", "y".repeat(200))),
        "{format}: {logs}"
    );
}

#[test]
fn text_format_escapes_every_control_character() {
    run("text");
}

#[test]
fn json_format_escapes_every_control_character() {
    run("json");
}
