//! Headless Chromium (the system /usr/bin/chromium, through playwright-core) on the classic
//! Socket.IO chat page served by `wsgate --static`: the page and the `socket.io.min.js`
//! bundle (copied from the npm package at test time, never committed) come from a temp dir.
//! Two pages chat with each other and with a plain WebSocket client in room `main`.
//!
//! Missing Chromium or npm modules fail the test with "run make test-deps": never a skip.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::{next_text, raw, status, ws_connect, Gateway, TempDir};
use sio_common::{json_str, node_dir, require_node, SioClient};
use std::fs;
use std::path::{Path, PathBuf};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The committed page: the classic app's client with `transports: ['websocket']`.
fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/static/socketio-chat/index.html")
}

/// A temp site: the page at `/`, the npm bundle where the Node server used to serve it.
fn site() -> TempDir {
    let dir = TempDir::new("browser-sio");
    fs::copy(template(), dir.path().join("index.html")).unwrap();
    let bundle = node_dir().join("node_modules/socket.io-client/dist/socket.io.min.js");
    fs::create_dir(dir.path().join("socket.io")).unwrap();
    fs::copy(&bundle, dir.path().join("socket.io/socket.io.js"))
        .unwrap_or_else(|e| panic!("{}: {e}: run make test-deps", bundle.display()));
    dir
}

#[test]
fn two_chromium_pages_and_a_plain_client_chat_in_one_room() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} not found: run make test-deps"
    );
    require_node(&["playwright-core", "socket.io-client"]);
    let site = site();
    let gw = Gateway::start(&["--static", site.path().to_str().unwrap()]);

    // The files as the browser gets them.
    let js = raw(
        gw.addr,
        b"GET /socket.io/socket.io.js HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status(&js), 200);
    let head = String::from_utf8_lossy(&js[..200]).into_owned();
    assert!(head.contains("text/javascript"), "{head}");

    let mut plain = smol::block_on(ws_connect(gw.addr, "/ws", b""));
    let page_url = format!("http://{}/", gw.addr);
    let mut b = SioClient::spawn_script("sio_browser.js", &[&page_url]);
    b.expect(r#"ready {"pages":2}"#);

    let texts = [
        "hello from page 1 ✓",
        "<b>page 2</b> & ünïcödé 😀",
        "from the plain client",
    ];
    for (page, text) in texts[..2].iter().enumerate() {
        b.send(&format!(
            r#"{{"op":"send","page":{page},"text":{}}}"#,
            json_str(text)
        ));
        b.expect(&format!(r#"seen {{"text":{}}}"#, json_str(text)));
        assert_eq!(smol::block_on(next_text(&mut plain)), *text);
    }
    smol::block_on(plain.send(Message::text(texts[2]))).unwrap();
    assert_eq!(smol::block_on(next_text(&mut plain)), texts[2]);
    b.send(&format!(
        r#"{{"op":"expect","text":{}}}"#,
        json_str(texts[2])
    ));
    b.expect(&format!(r#"seen {{"text":{}}}"#, json_str(texts[2])));

    // Each page shows exactly the three messages, in order.
    let items = format!("[{}]", texts.map(json_str).join(","));
    b.send(r#"{"op":"messages"}"#);
    for page in 0..2 {
        b.expect(&format!(r#"messages {{"page":{page},"items":{items}}}"#));
    }
    let opens = gw.events("open");
    let sio = opens.iter().filter(|l| l.contains("protocol=socket.io"));
    assert_eq!(sio.count(), 2, "{opens:?}");
    assert!(opens.iter().all(|l| l.contains("room=main")), "{opens:?}");
}

/// The classic app's own page, byte for byte (its plain `io()` starts on polling), with the
/// client bundle put where the app's server used to serve it by the README's one step,
/// `make socketio-client SITE=DIR`: no app behind wsgate at all.
#[test]
fn the_classic_page_unchanged_connects_with_plain_io_and_chats() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} not found: run make test-deps"
    );
    require_node(&["playwright-core", "socket.io-client"]);
    let dir = TempDir::new("browser-classic");
    let classic =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/socketio-chat/index.html");
    fs::copy(&classic, dir.path().join("index.html")).unwrap();
    assert!(
        fs::read_to_string(&classic)
            .unwrap()
            .contains("io(room ? { query: { room } } : {})"),
        "the page must not name a transport"
    );
    let make = std::process::Command::new("make")
        .args(["-s", "socketio-client"])
        .arg(format!("SITE={}", dir.path().display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run make");
    assert!(make.success(), "make socketio-client failed");
    let gw = Gateway::start(&["--static", dir.path().to_str().unwrap()]);
    let js = raw(
        gw.addr,
        b"GET /socket.io/socket.io.js HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status(&js), 200);
    let url = format!("http://{}", gw.addr);
    let mut other = SioClient::spawn(&url, r#"{"transports":["polling"]}"#);
    other.connected();
    let mut b = SioClient::spawn_script("sio_browser.js", &[&format!("{url}/")]);
    b.expect(r#"ready {"pages":2}"#);
    // Both pages opened their sessions on polling.
    let polls = gw.wait_logs(3, common::WAIT, |l| {
        l.contains(" open ") && l.contains("transport=polling")
    });
    assert_eq!(polls.len(), 3, "{polls:?}");
    let text = "typed into the classic form";
    b.send(&format!(
        r#"{{"op":"send","page":0,"text":{}}}"#,
        json_str(text)
    ));
    b.expect(&format!(r#"seen {{"text":{}}}"#, json_str(text)));
    // Each page greeted the room when it joined (`socket.broadcast.emit('hi')`).
    for _ in 0..2 {
        other.expect(r#"event {"name":"hi","args":[]}"#);
    }
    other.expect(&sio_common::chat_line(text));
    other.chat("from another client");
    b.send(r#"{"op":"expect","text":"from another client"}"#);
    b.expect(r#"seen {"text":"from another client"}"#);
    // And each upgraded to a WebSocket; nothing went wrong but the browser's own favicon.
    assert_eq!(gw.wait_events("upgrade", 2).len(), 2);
    let bad = gw.logs().into_iter().filter(|l| {
        (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("path=/favicon.ico")
    });
    assert_eq!(bad.collect::<Vec<_>>(), Vec::<String>::new());
}
