//! A real third-party client: Node's `ws` package (tests/node/chat.js) completes the
//! handshake, two of its clients chat in a room (sender included), a binary message
//! round-trips, and an oversize message gets Close 1009 while the other client carries on.
mod common;
use common::{field, node_dir, run_client_script, Gateway, WAIT};
use std::process::Command;
use std::time::Duration;

fn node_chat(gw: &Gateway, mode: &str, room: &str) -> String {
    let dir = node_dir(&["ws"]);
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg(dir.join("chat.js"))
        .arg(mode)
        .arg(format!("ws://{}/ws/{room}", gw.addr));
    run_client_script(gw, "node ws", cmd, 2, Duration::from_secs(60))
}

#[test]
fn node_ws_clients_chat_and_binary_round_trips() {
    let gw = Gateway::start(&[]);
    let ok = node_chat(&gw, "chat", "node");
    assert!(
        ok.contains("binary=1000 bytes") && ok.contains("close=1000,1000"),
        "{ok}"
    );
    for close in gw.wait_logs(2, WAIT, |l| l.split(' ').nth(2) == Some("close")) {
        assert_eq!(field(&close, "room"), Some("node"), "{close}");
        assert_eq!(field(&close, "code"), Some("1000"), "{close}");
    }
}

#[test]
fn node_ws_oversize_message_gets_1009() {
    let gw = Gateway::start(&["--max-message-bytes", "1KiB"]);
    let ok = node_chat(&gw, "oversize", "big");
    assert!(ok.contains("close=1009"), "{ok}");
    let line = gw.wait_log(|l| l.contains(" close ") && l.contains("code=1009"));
    assert_eq!(field(&line, "reason"), Some("message_too_big"), "{line}");
}
