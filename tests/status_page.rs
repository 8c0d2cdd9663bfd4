//! The admin listener's status page in headless Chromium (tests/node/status_page.js): behind
//! the API key, it shows the gateway's numbers and they change as clients connect and chat.
//! A screenshot is kept under target/ as an artifact of the run.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::{next_text, ws_connect, Gateway, TempDir};
use sio_common::{require_node, SioClient};
use std::path::Path;

const CHROMIUM: &str = "/usr/bin/chromium";
const KEY: &str = "status-key-42";

/// A `numbers` line's field, as a number.
fn field(line: &str, key: &str) -> f64 {
    let rest = line
        .split_once(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        .1;
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap()
}

#[test]
fn the_status_page_shows_the_numbers_and_they_change() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} not found: run make test-deps"
    );
    require_node(&["playwright-core"]);
    let dir = TempDir::new("status");
    let key_file = dir.path().join("api.key");
    std::fs::write(&key_file, KEY).unwrap();
    let gw = Gateway::start(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--api-key-file",
        key_file.to_str().unwrap(),
    ]);
    let admin = gw.admin_addr();
    let mut page = SioClient::spawn_script("status_page.js", &[&format!("http://{admin}/")]);
    // The key is asked for first; then the page reads the status.
    page.expect("login {}");
    page.send(&format!(r#"{{"op":"key","key":"{KEY}"}}"#));
    let before = page.next();
    assert!(before.starts_with("numbers "), "{before}");
    assert_eq!(field(&before, "open"), 0.0);
    assert!(
        field(&before, "settings") > 40.0,
        "the flags in force: {before}"
    );
    assert!(before.contains(r#""backplane":"off""#), "{before}");

    smol::block_on(async {
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(ws_connect(gw.addr, "/ws/lobby", b"").await);
        }
        for i in 0..20 {
            clients[i % 3]
                .send(Message::text(format!("m{i}")))
                .await
                .unwrap();
            for c in clients.iter_mut() {
                next_text(c).await;
            }
        }
        let _sio = SioClient::spawn(
            &format!("http://{}", gw.addr),
            r#"{"transports":["polling"]}"#,
        );
        page.send(r#"{"op":"until","open":4,"messages_in":20}"#);
        let after = page.next();
        assert_eq!(field(&after, "open"), 4.0, "{after}");
        assert_eq!(field(&after, "polling"), 1.0, "{after}");
        assert!(field(&after, "messages_in") >= 20.0, "{after}");
        assert!(after.contains(r#""top":[["lobby",3]"#), "{after}");
        let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
        page.send(&format!(r#"{{"op":"shot","path":"{}"}}"#, shot.display()));
        page.expect(&format!(r#"shot {{"path":"{}"}}"#, shot.display()));
        let png = std::fs::read(&shot).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        drop(clients);
    });
    // The page is behind the key: without it, the status is refused.
    let resp = common::raw(
        admin,
        b"GET /status.json HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(common::status(&resp), 401);
    assert!(
        page.seen.iter().all(|l| !l.starts_with("page_error")),
        "{:?}",
        page.seen
    );
}
