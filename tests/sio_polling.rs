//! Engine.IO's polling transport against real clients: the stock `socket.io-client` with its
//! default transports (starts on polling, then upgrades) and polling only, a plain WebSocket
//! client bridged into the same room, and raw HTTP on kept-alive connections for what a stock
//! client will not do (bad sids, overlapping GETs, malformed and oversize bodies).
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::{next_text, scrape, wait_metric, ws_connect, Gateway, WAIT};
use sio_common::{chat_line, SioClient};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One HTTP/1.1 connection, kept alive across requests.
struct Conn(TcpStream);

/// A response: status, head (lower-cased), body.
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        Conn(s)
    }

    fn send(&mut self, method: &str, path: &str, extra: &str, body: &[u8]) {
        let len = if method == "POST" {
            format!("Content-Length: {}\r\n", body.len())
        } else {
            String::new()
        };
        let head = format!("{method} {path} HTTP/1.1\r\nHost: chat.example\r\n{len}{extra}\r\n");
        self.0.write_all(head.as_bytes()).unwrap();
        self.0.write_all(body).unwrap();
    }

    /// Reads one response (by its Content-Length).
    fn read(&mut self) -> Resp {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.0.read(&mut b).expect("response head");
            assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        Resp { status, head, body }
    }

    fn req(&mut self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.send(method, path, "", body);
        self.read()
    }

    /// Whether the server closed the connection (EOF within [`WAIT`]).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

const EIO: &str = "/socket.io/?EIO=4&transport=polling";

/// The handshake on `c`: returns the sid, and checks the open packet.
fn handshake(c: &mut Conn) -> String {
    let r = c.req("GET", EIO, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let open = r.text();
    assert!(open.starts_with("0{\"sid\":\""), "{open}");
    assert!(open.contains("\"upgrades\":[\"websocket\"]"), "{open}");
    assert!(open.contains("\"pingInterval\":"), "{open}");
    assert!(open.contains("\"maxPayload\":"), "{open}");
    open[9..29].to_string()
}

fn sid_path(sid: &str) -> String {
    format!("{EIO}&sid={sid}")
}

#[test]
fn a_default_client_starts_on_polling_gets_hi_chats_and_upgrades() {
    let gw = Gateway::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = gw.admin_addr();
    let url = format!("http://{}", gw.addr);
    let mut plain = smol::block_on(ws_connect(gw.addr, "/ws", b""));
    // socket.io-client's own default transports.
    let mut a = SioClient::spawn(&url, r#"{"transports":["polling","websocket"]}"#);
    a.connected_then_upgraded();
    let mut b = SioClient::spawn(&url, r#"{"transports":["polling"]}"#);
    assert!(b.connected().contains(r#""transport":"polling""#));
    a.expect(r#"event {"name":"hi","args":[]}"#);
    for (i, who) in ["a", "b"].iter().enumerate() {
        let text = format!("from {who} ✓ {i}");
        if i == 0 { &mut a } else { &mut b }.chat(&text);
        a.expect(&chat_line(&text));
        b.expect(&chat_line(&text));
        assert_eq!(smol::block_on(next_text(&mut plain)), text);
    }
    smol::block_on(plain.send(Message::text("from the plain client"))).unwrap();
    a.expect(&chat_line("from the plain client"));
    b.expect(&chat_line("from the plain client"));
    // Both opened on polling, one upgraded, and the log says so with the real client.
    let m = scrape(admin);
    assert_eq!(
        m.get(r#"wsgate_socketio_sessions_total{transport="polling"}"#),
        2.0
    );
    assert_eq!(m.get("wsgate_socketio_upgrades_total"), 1.0);
    assert_eq!(m.get("wsgate_socketio_polling_sessions"), 1.0);
    assert_eq!(m.get("wsgate_connections_open"), 3.0);
    let opens = gw.wait_logs(2, WAIT, |l| {
        l.contains(" open ") && l.contains("transport=polling")
    });
    assert!(
        opens.iter().all(|l| l.contains("client=127.0.0.1:")),
        "{opens:?}"
    );
    let up = gw.wait_log(|l| l.contains(" upgrade "));
    assert!(
        up.contains("client=127.0.0.1:") && up.contains("ws_conn="),
        "{up}"
    );
    drop((a, b));
    // Both sessions end and give their admissions back: only the plain client is left.
    wait_metric(admin, "wsgate_connections_open", 1.0);
    wait_metric(admin, "wsgate_socketio_polling_sessions", 0.0);
}

#[test]
fn a_polling_only_client_gets_200_messages_in_order_across_ping_intervals() {
    let gw = Gateway::start(&["--ping-interval", "300ms", "--pong-timeout", "1s"]);
    let url = format!("http://{}", gw.addr);
    let mut c = SioClient::spawn(&url, r#"{"transports":["polling"]}"#);
    c.connected();
    let mut plain = smol::block_on(ws_connect(gw.addr, "/ws", b""));
    smol::block_on(async {
        for i in 0..200 {
            plain.send(Message::text(format!("m{i}"))).await.unwrap();
        }
    });
    for i in 0..200 {
        c.expect(&chat_line(&format!("m{i}")));
    }
    // Several ping intervals pass; the client answers each ping over POST and stays.
    c.quiet_for(Duration::from_millis(1800));
    assert!(c.pings >= 4, "pings seen: {}", c.pings);
    c.chat("still here");
    c.expect(&chat_line("still here"));
    assert!(gw.events("close").is_empty(), "{:?}", gw.events("close"));
}

#[test]
fn requests_share_one_kept_alive_connection_until_its_request_limit() {
    let gw = Gateway::start(&["--keepalive-requests", "4"]);
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    let r = c.req("POST", &sid_path(&sid), b"40");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(!r.head.contains("connection: close"), "{}", r.head);
    let r = c.req("GET", &sid_path(&sid), b"");
    assert_eq!(
        sio_common::plain(&r.text()),
        format!("40{{\"sid\":\"{sid}\"}}")
    );
    // Two packets in one body; the event comes back to the sender (io.emit).
    let r = c.req("POST", &sid_path(&sid), b"42[\"chat message\",\"x\"]\x1e3");
    assert!(
        r.head.contains("connection: close"),
        "the 4th request is the last"
    );
    assert!(c.closed());
    let mut d = Conn::open(gw.addr);
    let r = d.req("GET", &sid_path(&sid), b"");
    assert_eq!(sio_common::plain(&r.text()), "42[\"chat message\",\"x\"]");
}

#[test]
fn bad_requests_get_the_reference_errors_and_other_clients_lose_nothing() {
    let gw = Gateway::start(&["--max-message-bytes", "1024"]);
    let mut plain = smol::block_on(ws_connect(gw.addr, "/ws", b""));
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    assert_eq!(c.req("POST", &sid_path(&sid), b"40").status, 200);
    assert_eq!(c.req("GET", &sid_path(&sid), b"").status, 200);
    let err = |path: &str, method: &str, body: &[u8]| {
        let mut c = Conn::open(gw.addr);
        let r = c.req(method, path, body);
        assert!(c.closed(), "an error closes the connection");
        (r.status, r.text())
    };
    let json = |code: u8, msg: &str| format!("{{\"code\":{code},\"message\":\"{msg}\"}}");
    assert_eq!(
        err(&sid_path("nope"), "GET", b""),
        (400, json(1, "Session ID unknown"))
    );
    assert_eq!(
        err(&sid_path("nope"), "POST", b"40"),
        (400, json(1, "Session ID unknown"))
    );
    assert_eq!(
        err("/socket.io/?EIO=4&transport=carrier-pigeon", "GET", b""),
        (400, json(0, "Transport unknown"))
    );
    assert_eq!(
        err(EIO, "POST", b"40"),
        (400, json(2, "Bad handshake method"))
    );
    assert_eq!(
        err("/socket.io/?EIO=3&transport=polling", "GET", b""),
        (400, json(5, "Unsupported protocol version"))
    );
    // Over --max-message-bytes: 413, and the session goes on.
    let (status, _) = err(&sid_path(&sid), "POST", &vec![b'x'; 2000]);
    assert_eq!(status, 413);
    assert_eq!(
        c.req("POST", &sid_path(&sid), b"42[\"chat message\",\"ok\"]")
            .status,
        200
    );
    assert_eq!(
        sio_common::plain(&c.req("GET", &sid_path(&sid), b"").text()),
        "42[\"chat message\",\"ok\"]"
    );
    assert_eq!(smol::block_on(next_text(&mut plain)), "ok");

    // A second GET while one is held ends the session: the held one gets the close packet.
    c.send("GET", &sid_path(&sid), "", b"");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        err(&sid_path(&sid), "GET", b""),
        (400, json(3, "Bad request"))
    );
    assert_eq!(c.read().text(), "1");
    let close = gw.wait_log(|l| l.contains(" close ") && l.contains("reason=poll_overlap"));
    assert!(close.contains("client=127.0.0.1:"), "{close}");
    assert_eq!(
        err(&sid_path(&sid), "GET", b""),
        (400, json(1, "Session ID unknown"))
    );

    // Malformed bodies end their session with the reason logged; binary is refused clearly.
    for (body, reason) in [
        (&b"42["[..], "sio_bad_json"),
        (b"", "sio_bad_engine_type"),
        (b"bAQID", "sio_binary_unsupported"),
        (b"42[\"\xff\"]", "sio_bad_payload"),
        (b"42[\"disconnect\"]", "sio_reserved_event"),
    ] {
        let mut c = Conn::open(gw.addr);
        let sid = handshake(&mut c);
        assert_eq!(c.req("POST", &sid_path(&sid), b"40").status, 200);
        let r = c.req("POST", &sid_path(&sid), body);
        assert_eq!(
            (r.status, r.text()),
            (400, json(3, "Bad request")),
            "{reason}"
        );
        gw.wait_log(|l| l.contains(" close ") && l.contains(&format!("reason={reason}")));
    }
    // A chunked body, both framings (smuggling), and a GET with a body never reach a session.
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    for (method, framing) in [
        ("POST", "Transfer-Encoding: chunked\r\n"),
        ("GET", "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n"),
        ("GET", "Content-Length: 2\r\n"),
    ] {
        let mut c = Conn::open(gw.addr);
        c.send(method, &sid_path(&sid), framing, b"");
        assert_eq!(c.read().status, 400, "{method} {framing}");
        assert!(c.closed());
    }
    assert_eq!(
        c.req("POST", &sid_path(&sid), b"40").status,
        200,
        "still open"
    );

    // Through all of it the plain client lost nothing and is still connected.
    smol::block_on(plain.send(Message::text("after"))).unwrap();
    assert_eq!(smol::block_on(next_text(&mut plain)), "after");
    assert!(gw.logs().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn cors_for_allowed_origins_and_403_for_others() {
    let gw = Gateway::start(&["--allowed-origins", "https://app.example"]);
    let mut c = Conn::open(gw.addr);
    c.send(
        "OPTIONS",
        EIO,
        "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type\r\n",
        b"",
    );
    let r = c.read();
    assert_eq!(r.status, 204);
    for h in [
        "access-control-allow-origin: https://app.example\r\n",
        "access-control-allow-credentials: true\r\n",
        "access-control-allow-methods: get, post, options\r\n",
        "access-control-allow-headers: content-type\r\n",
    ] {
        assert!(r.head.contains(h), "{h} missing from {}", r.head);
    }
    c.send("GET", EIO, "Origin: https://app.example\r\n", b"");
    let r = c.read();
    assert_eq!(r.status, 200);
    assert!(r
        .head
        .contains("access-control-allow-origin: https://app.example\r\n"));
    let mut other = Conn::open(gw.addr);
    other.send("GET", EIO, "Origin: https://evil.example\r\n", b"");
    let r = other.read();
    assert_eq!(
        (r.status, r.text()),
        (403, r#"{"code":4,"message":"Forbidden"}"#.to_string())
    );
    // Same-origin requests (no Origin) need nothing.
    let mut same = Conn::open(gw.addr);
    handshake(&mut same);
}

#[test]
fn sessions_count_against_the_limits_and_a_silent_one_times_out() {
    let gw = Gateway::start(&[
        "--admin-listen",
        "127.0.0.1:0",
        "--max-connections-per-ip",
        "1",
        "--ping-interval",
        "200ms",
        "--pong-timeout",
        "300ms",
    ]);
    let admin = gw.admin_addr();
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    assert_eq!(scrape(admin).get("wsgate_connections_open"), 1.0);
    let mut d = Conn::open(gw.addr);
    assert_eq!(d.req("GET", EIO, b"").status, 429);
    // No more GETs: it never sees its ping, so it is closed within interval + timeout.
    let started = Instant::now();
    let close = gw.wait_log(|l| l.contains(" close "));
    assert!(close.contains("reason=pong_timeout"), "{close}");
    assert!(close.contains("transport=polling"), "{close}");
    assert!(started.elapsed() < WAIT);
    wait_metric(admin, "wsgate_connections_open", 0.0);
    assert_eq!(
        c.req("GET", &sid_path(&sid), b"").text(),
        r#"{"code":1,"message":"Session ID unknown"}"#
    );
    let mut e = Conn::open(gw.addr);
    handshake(&mut e);
}

#[test]
fn sigterm_answers_the_held_get_with_close_and_exits() {
    let mut gw = Gateway::start(&["--shutdown-timeout", "5s"]);
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    assert_eq!(c.req("POST", &sid_path(&sid), b"40").status, 200);
    assert_eq!(c.req("GET", &sid_path(&sid), b"").status, 200);
    c.send("GET", &sid_path(&sid), "", b"");
    std::thread::sleep(Duration::from_millis(200));
    gw.signal("TERM");
    assert_eq!(c.read().text(), "1");
    assert_eq!(gw.wait_exit(WAIT), Some(0));
    let close = gw.wait_log(|l| l.contains(" close ") && l.contains("transport=polling"));
    assert!(close.contains("reason=going_away"), "{close}");
}

#[test]
fn a_websocket_probe_hands_over_queued_messages_in_order() {
    let gw = Gateway::start(&[]);
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    assert_eq!(c.req("POST", &sid_path(&sid), b"40").status, 200);
    assert_eq!(c.req("GET", &sid_path(&sid), b"").status, 200);
    // Messages that arrive while the client switches wait in its outbox, not in a response.
    let mut plain = smol::block_on(ws_connect(gw.addr, "/ws", b""));
    smol::block_on(async {
        let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
        let mut ws = ws_connect(gw.addr, &path, b"").await;
        c.send("GET", &sid_path(&sid), "", b"");
        sio_common::send_text(&mut ws, "2probe").await;
        assert_eq!(sio_common::next_packet(&mut ws).await, "3probe");
        // The held GET is let go with a noop.
        assert_eq!(c.read().text(), "6");
        for i in 0..5 {
            plain.send(Message::text(format!("q{i}"))).await.unwrap();
            assert_eq!(next_text(&mut plain).await, format!("q{i}"));
        }
        sio_common::send_text(&mut ws, "5").await;
        for i in 0..5 {
            let want = format!("42[\"chat message\",\"q{i}\"]");
            assert_eq!(
                sio_common::plain(&sio_common::next_packet(&mut ws).await),
                want
            );
        }
        sio_common::send_text(&mut ws, "42[\"chat message\",\"over ws\"]").await;
        assert_eq!(next_text(&mut plain).await, "over ws");
        ws.close(None).await.ok();
    });
    // Polling that session now is a bad request.
    let r = Conn::open(gw.addr).req("GET", &sid_path(&sid), b"");
    assert_eq!(r.status, 400);
}

#[test]
fn a_probe_that_does_not_switch_in_time_leaves_the_session_on_polling() {
    let gw = Gateway::start(&["--upgrade-timeout", "300ms"]);
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    assert_eq!(c.req("POST", &sid_path(&sid), b"40").status, 200);
    assert_eq!(c.req("GET", &sid_path(&sid), b"").status, 200);
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
    smol::block_on(async {
        // Silent after the probe: closed at the deadline.
        let mut ws = ws_connect(gw.addr, &path, b"").await;
        sio_common::send_text(&mut ws, "2probe").await;
        assert_eq!(sio_common::next_packet(&mut ws).await, "3probe");
        assert_eq!(common::close_code(&mut ws).await, 1008);
        // Anything but the probe and the switch: closed at once.
        let mut ws = ws_connect(gw.addr, &path, b"").await;
        sio_common::send_text(&mut ws, "42[\"chat message\",\"sneaky\"]").await;
        assert_eq!(common::close_code(&mut ws).await, 1008);
    });
    let fails = gw.wait_logs(2, WAIT, |l| l.contains("reason=sio_upgrade_failed"));
    assert_eq!(fails.len(), 2);
    // The session itself goes on polling, and its GETs are held again (not let go with `6`).
    c.send("GET", &sid_path(&sid), "", b"");
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Conn::open(gw.addr);
    let r = d.req(
        "POST",
        &sid_path(&sid),
        b"42[\"chat message\",\"still polling\"]",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        sio_common::plain(&c.read().text()),
        "42[\"chat message\",\"still polling\"]"
    );
}

#[test]
fn a_client_closing_its_session_is_answered_ok() {
    let gw = Gateway::start(&[]);
    let mut c = Conn::open(gw.addr);
    let sid = handshake(&mut c);
    assert_eq!(c.req("POST", &sid_path(&sid), b"40").status, 200);
    // Engine.IO close, as socket.close() sends it on polling.
    let r = c.req("POST", &sid_path(&sid), b"1");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let close = gw.wait_log(|l| l.contains(" close ") && l.contains("reason=sio_close"));
    assert!(close.contains(" INFO "), "not the client's fault: {close}");
    let r = c.req("GET", &sid_path(&sid), b"");
    assert_eq!(r.text(), r#"{"code":1,"message":"Session ID unknown"}"#);
}
