//! No message lost across a reconnect, with real clients: the stock `socket.io-client`
//! recovers its session (`socket.recovered`) and gets exactly the events it missed, on the
//! websocket transport and on polling-then-upgrade; the client that never got an event, the
//! quiet client whose offset aged out, and the half-open takeover; raw clients resume with
//! `wsgate.offset` and `?since=` (Node `ws`, Python `websockets`). Connections are cut by a
//! TCP relay in front of the gateway, as a load balancer's idle timeout or a network change
//! would cut them.
mod common;
mod sio_common;
use common::{field, require_program, tests_dir, CutProxy, Gateway, Proc, WAIT};
use futures_lite::StreamExt;
use sio_common::{chat_line, require_node, send_text, url, SioClient};
use std::process::Command;
use std::time::Duration;

/// Publishes `texts` into `room` from a plain WebSocket client (each reaches Socket.IO
/// members as `chat message`), and waits for its own echoes, so that each was published.
fn publish(gw: &Gateway, room: &str, texts: &[&str]) {
    smol::block_on(async {
        let mut ws = common::ws_connect(gw.addr, &format!("/ws/{room}"), b"").await;
        for t in texts {
            send_text(&mut ws, t).await;
        }
        for t in texts {
            assert_eq!(common::next_text(&mut ws).await, *t);
        }
        let _ = ws.close(None).await;
        while ws.next().await.is_some() {}
    });
}

/// Client options: reconnection on, with a fixed delay long enough for the test to publish
/// while the client is away.
const RECONNECT: &str = r#""reconnection":true,"reconnectionDelay":1500,"randomizationFactor":0"#;

/// The `connect` line of a recovery: the missed events come first (the client buffers them
/// until its CONNECT arrives, then emits them before `connect`).
fn expect_recovered(c: &mut SioClient, missed: &[&str]) {
    for m in missed {
        c.expect(&chat_line(m));
    }
    let connect = c.next();
    assert!(
        connect.starts_with("connect {") && connect.contains(r#""recovered":true"#),
        "{connect}"
    );
}

fn expect_disconnect(c: &mut SioClient) {
    let l = c.next();
    assert!(l.starts_with("disconnect {"), "{l}");
}

#[test]
fn a_stock_client_cut_on_websocket_recovers_exactly_the_missed_events() {
    require_node(&["socket.io-client"]);
    let gw = Gateway::start(&["--admin-listen", "127.0.0.1:0"]);
    let lb = CutProxy::start(gw.addr);
    let mut a = SioClient::spawn(&url(lb.addr, "/"), &format!("{{{RECONNECT}}}"));
    let first = a.connected();
    assert!(first.contains(r#""recovered":false"#), "{first}");
    publish(&gw, "main", &["m1", "m2"]);
    a.expect(&chat_line("m1"));
    a.expect(&chat_line("m2"));
    // The stock client keeps the offset of the last event.
    a.send(r#"{"op":"offset"}"#);
    let offset = a.next();
    assert!(offset.starts_with(r#"offset {"offset":""#), "{offset}");
    lb.cut();
    expect_disconnect(&mut a);
    publish(&gw, "main", &["m3", "m4"]);
    expect_recovered(&mut a, &["m3", "m4"]);
    publish(&gw, "main", &["m5"]);
    a.expect(&chat_line("m5"));
    a.quiet_for(Duration::from_millis(300));
    let line = gw.wait_log(|l| l.contains(" recovery ") && l.contains("result=recovered"));
    assert_eq!(field(&line, "replayed"), Some("2"), "{line}");
    assert!(
        field(&line, "client").is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{line}"
    );
}

#[test]
fn a_stock_client_on_polling_then_websocket_recovers_too() {
    require_node(&["socket.io-client"]);
    let gw = Gateway::start(&[]);
    let lb = CutProxy::start(gw.addr);
    let opts = format!(r#"{{"transports":["polling","websocket"],{RECONNECT}}}"#);
    let mut a = SioClient::spawn(&url(lb.addr, "/"), &opts);
    a.connected_then_upgraded();
    publish(&gw, "main", &["p1"]);
    a.expect(&chat_line("p1"));
    lb.cut();
    expect_disconnect(&mut a);
    publish(&gw, "main", &["p2", "p3"]);
    // It comes back on polling (where the CONNECT and the replay travel), then upgrades.
    let mut lines = vec![a.next(), a.next(), a.next(), a.next()];
    let upgrade = lines.iter().position(|l| l.starts_with("upgrade "));
    let upgrade = lines.remove(upgrade.expect("an upgrade line"));
    assert_eq!(upgrade, r#"upgrade {"transport":"websocket"}"#);
    assert_eq!(lines[..2], [chat_line("p2"), chat_line("p3")], "{lines:?}");
    // (The upgrade line proves the new connection began on polling: Engine.IO upgrades only
    // from it, and the CONNECT is the first thing a new connection sends.)
    assert!(lines[2].contains(r#""recovered":true"#), "{lines:?}");
    publish(&gw, "main", &["p4"]);
    a.expect(&chat_line("p4"));
}

#[test]
fn a_client_that_never_got_an_event_recovers_what_it_missed() {
    require_node(&["socket.io-client"]);
    let gw = Gateway::start(&[]);
    let lb = CutProxy::start(gw.addr);
    let mut a = SioClient::spawn(&url(lb.addr, "/"), &format!("{{{RECONNECT}}}"));
    a.connected();
    // No event yet: the client has a pid and no offset (socket.io issues 4968, 5538).
    lb.cut();
    expect_disconnect(&mut a);
    publish(&gw, "main", &["z1"]);
    expect_recovered(&mut a, &["z1"]);
}

#[test]
fn a_quiet_client_whose_offset_aged_out_still_recovers() {
    require_node(&["socket.io-client"]);
    // A short window: the one event it got is dropped from the history before it is cut.
    let gw = Gateway::start(&["--recovery-window", "2s"]);
    let lb = CutProxy::start(gw.addr);
    let mut a = SioClient::spawn(&url(lb.addr, "/"), &format!("{{{RECONNECT}}}"));
    a.connected();
    publish(&gw, "main", &["q1"]);
    a.expect(&chat_line("q1"));
    a.quiet_for(Duration::from_secs(3));
    lb.cut();
    expect_disconnect(&mut a);
    // Its offset is still the room's newest: nothing was missed (socket.io issue 5282).
    expect_recovered(&mut a, &[]);
    publish(&gw, "main", &["q2"]);
    a.expect(&chat_line("q2"));
}

#[test]
fn a_client_back_before_its_old_connection_died_takes_the_session_over() {
    require_node(&["socket.io-client"]);
    let gw = Gateway::start(&[]);
    let lb = CutProxy::start(gw.addr);
    let mut a = SioClient::spawn(&url(lb.addr, "/"), &format!("{{{RECONNECT}}}"));
    a.connected();
    publish(&gw, "main", &["h1"]);
    a.expect(&chat_line("h1"));
    // Half-open: the old connection carries nothing more, and neither end is told. The
    // client gives up on it and reconnects through a fresh connection.
    lb.freeze();
    a.send(r#"{"op":"drop"}"#);
    expect_disconnect(&mut a);
    publish(&gw, "main", &["h2"]);
    expect_recovered(&mut a, &["h2"]);
    // The old connection was retired for the new one (socket.io issue 4880).
    let close = gw.wait_log(|l| l.contains(" close ") && l.contains("reason=replaced"));
    assert_eq!(field(&close, "code"), Some("1008"), "{close}");
    publish(&gw, "main", &["h3"]);
    a.expect(&chat_line("h3"));
    // Cut again: the session is still this client's, and recovers again.
    lb.cut();
    expect_disconnect(&mut a);
    publish(&gw, "main", &["h4"]);
    expect_recovered(&mut a, &["h4"]);
}

#[test]
fn recovery_off_gives_a_fresh_session_and_events_carry_no_offset() {
    require_node(&["socket.io-client"]);
    let gw = Gateway::start(&["--recovery-window", "0"]);
    let lb = CutProxy::start(gw.addr);
    let mut a = SioClient::spawn(&url(lb.addr, "/"), &format!("{{{RECONNECT}}}"));
    a.connected();
    publish(&gw, "main", &["o1"]);
    a.expect(&chat_line("o1"));
    a.send(r#"{"op":"offset"}"#);
    assert_eq!(a.next(), "offset {}", "no pid, so no offset");
    lb.cut();
    expect_disconnect(&mut a);
    // A new session: the client never had a pid, so `recovered` is not even set.
    let again = a.next();
    assert!(
        again.starts_with("connect {") && !again.contains("recovered"),
        "{again}"
    );
}

/// Runs a raw-resume client script (Node `ws` or Python `websockets`) against `gw`; it
/// prints `ok ...` on success.
fn run_resume_script(gw: &Gateway, mut cmd: Command, what: &str) -> String {
    cmd.arg(format!("ws://{}", gw.addr));
    let p = Proc::spawn(what, cmd);
    let ok = p.wait_stdout(Duration::from_secs(30), |l| {
        l.starts_with("ok") || l.starts_with("fail")
    });
    assert!(ok.starts_with("ok"), "{ok}\n{}", p.transcript());
    ok
}

#[test]
fn node_ws_resumes_with_since_and_gets_each_missed_message_once() {
    require_node(&["ws"]);
    let gw = Gateway::start(&[]);
    let mut cmd = Command::new("node");
    cmd.arg(tests_dir().join("node/raw_resume.js"));
    let ok = run_resume_script(&gw, cmd, "node raw resume");
    assert!(ok.contains("replayed=r3,r4 live=r5"), "{ok}");
    let line = gw.wait_log(|l| l.contains(" recovery ") && l.contains("protocol=ws"));
    assert_eq!(field(&line, "result"), Some("recovered"), "{line}");
    assert_eq!(field(&line, "replayed"), Some("2"), "{line}");
}

#[test]
fn python_websockets_resumes_with_since() {
    let python = require_program("python3");
    let gw = Gateway::start(&[]);
    let mut cmd = Command::new(python);
    cmd.arg(tests_dir().join("clients/resume.py"));
    let ok = run_resume_script(&gw, cmd, "python raw resume");
    assert!(ok.contains("replayed=y2,y3"), "{ok}");
    assert!(ok.contains("unrecoverable=false"), "{ok}");
}

#[test]
fn bad_since_values_get_a_400_and_raw_clients_without_the_subprotocol_see_no_change() {
    let gw = Gateway::start(&[]);
    // The response head, and the first frame after a 101 (the connection stays open).
    let upgrade = |path: &str, protocol: &str| {
        use std::io::{Read, Write};
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        );
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) if out.windows(4).any(|w| w == b"\r\n\r\n") => break,
                Err(_) => {}
            }
        }
        out
    };
    let offered = "Sec-WebSocket-Protocol: wsgate.offset\r\n";
    for bad in ["x", "1-", "-1", "1-1-1", "ABC-1", "%31-1", &"9".repeat(100)] {
        let resp = upgrade(&format!("/ws/main?since={bad}"), offered);
        assert_eq!(common::status(&resp), 400, "since={bad}");
    }
    let line = gw.wait_log(|l| l.contains("reason=bad_since"));
    assert!(line.contains(" WARN "), "{line}");
    // Without the subprotocol `since` means nothing: a plain upgrade, no subprotocol chosen.
    let resp = upgrade("/ws/main?since=x", "");
    assert_eq!(common::status(&resp), 101);
    assert!(!String::from_utf8_lossy(&resp).contains("Sec-WebSocket-Protocol"));
    // With it, the 101 names it and the first frame says where the room is.
    let resp = upgrade("/ws/main", offered);
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.contains("Sec-WebSocket-Protocol: wsgate.offset\r\n"),
        "{text}"
    );
    let body = &resp[resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let frames = common::parse_frames(body);
    let first = String::from_utf8_lossy(&frames[0].1).into_owned();
    assert!(
        first.starts_with(r#"{"offset":""#) && first.ends_with(r#"","recovered":false}"#),
        "{first}"
    );
}
