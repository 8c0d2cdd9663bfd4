//! A real third-party client: Python `websockets` (tests/clients/chat.py) completes the
//! handshake, two of its clients chat in a room (sender included), a fragmented message
//! arrives whole, a binary message round-trips, and both close with 1000.
mod common;
use common::{field, require_program, run_client_script, tests_dir, Gateway, WAIT};
use std::process::Command;
use std::time::Duration;

#[test]
fn python_websockets_clients_chat_and_binary_round_trips() {
    let python = require_program("python3");
    let gw = Gateway::start(&[]);
    let mut cmd = Command::new(python);
    cmd.arg(tests_dir().join("clients/chat.py"))
        .arg(format!("ws://{}/ws/py", gw.addr));
    let ok = run_client_script(&gw, "python websockets", cmd, 2, Duration::from_secs(60));
    assert!(
        ok.contains("fragmented=3")
            && ok.contains("binary=1024 bytes")
            && ok.contains("close=1000,1000"),
        "{ok}"
    );
    for open in gw.events("open") {
        assert_eq!(field(&open, "room"), Some("py"), "{open}");
        assert_eq!(field(&open, "proxy"), Some("none"), "{open}");
    }
    for close in gw.wait_logs(2, WAIT, |l| l.split(' ').nth(2) == Some("close")) {
        assert_eq!(field(&close, "code"), Some("1000"), "{close}");
        assert!(close.contains(" INFO "), "{close}");
    }
}
