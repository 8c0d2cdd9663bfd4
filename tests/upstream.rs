//! `--upstream`: wsgate in nginx's place. The classic chat app (express + socket.io from
//! npm, unchanged) behind HAProxy `send-proxy` and wsgate, with the stock socket.io-client
//! starting on polling and upgrading; and an echo upstream for headers, bodies, faults and
//! the request-smuggling checks.
mod common;
mod sio_common;

use common::haproxy::Haproxy;
use common::*;
use sio_common::SioClient;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A Node app on a free port: `(process, address)` once it printed `listening port=N`.
fn node_app(dir: &std::path::Path, script: &str) -> (Proc, SocketAddr) {
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).current_dir(dir).env("PORT", "0");
    let proc = Proc::spawn(script, cmd);
    let line = proc.wait_stdout(WAIT, |l| l.starts_with("listening port="));
    let port: u16 = line["listening port=".len()..].trim().parse().unwrap();
    (proc, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn classic_app() -> (Proc, SocketAddr) {
    let dir = tests_dir().join("peers").join("socketio-chat");
    assert!(
        dir.join("node_modules").join("socket.io").exists(),
        "tests/peers/socketio-chat has no node_modules: {DEPS_HINT}"
    );
    node_app(&dir, "index.js")
}

fn echo_app() -> (Proc, SocketAddr) {
    node_app(&tests_dir().join("node"), "echo_upstream.js")
}

/// `PROXY TCP4 <src> <dst>` then `req`, on a fresh connection; returns the whole answer.
fn via_proxy(gw: SocketAddr, src: &str, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(gw).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let (ip, port) = src.split_once(':').unwrap();
    write!(s, "PROXY TCP4 {ip} 10.0.0.1 {port} 443\r\n").unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn body(resp: &[u8]) -> String {
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    String::from_utf8_lossy(&resp[at..]).into_owned()
}

#[test]
fn the_classic_app_behind_haproxy_and_wsgate_with_default_transports() {
    let (_app, app) = classic_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--proxy-protocol", "required", "--upstream", &upstream]);
    let lb = Haproxy::start(gw.addr, "send-proxy", "");
    let url = format!("http://{}", lb.addr);
    // The app's own page, through both.
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = Vec::new();
    s.read_to_end(&mut page).unwrap();
    assert_eq!(status(&page), 200);
    assert!(body(&page).contains("socket.io.js"), "the app's index.html");
    // The default `io()`: polling first, then the upgrade.
    let mut a = SioClient::spawn(&url, r#"{"transports":["polling","websocket"]}"#);
    a.connected_then_upgraded();
    // A polling-only client gets the app's `hi` and everyone's chat.
    let mut b = SioClient::spawn(&url, r#"{"transports":["polling"]}"#);
    assert!(b.connected().contains(r#""transport":"polling""#));
    a.expect(r#"event {"name":"hi","args":[]}"#);
    a.chat("through nginx's place");
    let chat = sio_common::chat_line("through nginx's place");
    a.expect(&chat);
    b.expect(&chat);
    for i in 0..20 {
        b.chat(&format!("poll {i}"));
    }
    for i in 0..20 {
        let line = sio_common::chat_line(&format!("poll {i}"));
        a.expect(&line);
        b.expect(&line);
    }
    // The upgraded WebSocket is a tunnel, and wsgate logged it with the real client.
    let open = gw.wait_log(|l| l.contains(" tunnel_open "));
    assert!(open.contains("client=127.0.0.1:"), "{open}");
    assert!(
        gw.logs().iter().all(|l| !l.contains(" ERROR ")),
        "{:?}",
        gw.logs()
    );
}

#[test]
fn forwarded_headers_are_the_real_client_and_cannot_be_spoofed() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--proxy-protocol", "required", "--upstream", &upstream]);
    let resp = via_proxy(
        gw.addr,
        "198.51.100.7:5555",
        b"GET /echo?x=1 HTTP/1.1\r\nHost: chat.example\r\nX-Forwarded-For: 6.6.6.6\r\n\
          X-Real-IP: 6.6.6.6\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\
          Keep-Alive: 5\r\nCookie: a=b\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    let b = body(&resp);
    assert!(b.contains(r#""x-forwarded-for":"198.51.100.7""#), "{b}");
    assert!(b.contains(r#""x-real-ip":"198.51.100.7""#), "{b}");
    assert!(b.contains(r#""x-forwarded-host":"chat.example""#), "{b}");
    assert!(b.contains(r#""host":"chat.example""#), "{b}");
    assert!(b.contains(r#""x-forwarded-proto":"http""#), "{b}");
    assert!(b.contains(r#""x-forwarded-port":"443""#), "{b}");
    assert!(b.contains(r#""cookie":"a=b""#), "{b}");
    assert!(b.contains(r#""url":"/echo?x=1""#), "{b}");
    for gone in ["6.6.6.6", "x-hop", "keep-alive\":\"5"] {
        assert!(!b.contains(gone), "{gone} passed on: {b}");
    }
}

#[test]
fn bodies_pass_byte_exact_by_length_and_chunked_with_keep_alive() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--upstream", &upstream]);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        binary.len()
    )
    .into_bytes();
    req.extend_from_slice(&binary);
    // Then, pipelined on the same connection, a chunked body with a trailer.
    req.extend_from_slice(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    s.write_all(&req).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    // Heads and chunk lines are ASCII; the echoed JSON is UTF-8.
    let text = String::from_utf8_lossy(&all).into_owned();
    let heads: Vec<&str> = text.matches("HTTP/1.1 200 OK").collect();
    assert_eq!(heads.len(), 3, "three responses on one connection: {text}");
    assert!(text.contains("\"bodyLength\":20000"), "{text}");
    let expected: String = binary.iter().map(|&b| b as char).collect();
    let expected = sio_common::json_str(&expected);
    assert!(
        text.contains(&expected),
        "the binary body came back byte for byte"
    );
    assert!(text.contains(r#""body":"hello, world""#), "{text}");
    // The chunked response stays chunked, and the connection closes as asked.
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(
        text.contains("part one;") && text.ends_with("0\r\n\r\n"),
        "{text}"
    );
}

/// An answer to HEAD has no body, but its Content-Length (the size of the GET's) is passed on.
#[test]
fn a_head_answer_keeps_its_content_length() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--upstream", &upstream]);
    let get = raw(
        gw.addr,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let head = raw(
        gw.addr,
        b"HEAD /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&head).into_owned();
    assert_eq!(status(&head), 200, "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after a HEAD answer: {text}"
    );
    // The same size as the GET's body (whose JSON differs only in `method`: GET vs HEAD).
    let n = body(&get).len() + 1;
    assert!(
        text.contains(&format!("Content-Length: {n}\r\n")),
        "{n}: {text}"
    );
}

#[test]
fn smuggling_attempts_get_400_and_are_never_forwarded() {
    let (app_proc, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--upstream", &upstream, "--admin-listen", "127.0.0.1:0"]);
    for (req, reason) in [
        (
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "length_and_chunked",
        ),
        (
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            "differing_lengths",
        ),
        (
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_encoding",
        ),
        (
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "bad_content_length",
        ),
        (
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            "upgrade_not_websocket",
        ),
    ] {
        let resp = raw(gw.addr, req.as_bytes());
        assert_eq!(status(&resp), 400, "{reason}: {}", String::from_utf8_lossy(&resp));
        let line = gw.wait_log(|l| l.contains(&format!("reason={reason}")));
        assert!(line.contains("client=127.0.0.1:"), "{line}");
    }
    // An oversized head is 431, as without --upstream.
    let big = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(status(&raw(gw.addr, big.as_bytes())), 431);
    // None of them reached the app: it saw no request at all.
    let m = scrape(gw.admin_addr());
    assert_eq!(
        m.get(r#"wsgate_upstream_responses_total{class="2xx"}"#),
        0.0
    );
    drop(app_proc);
}

#[test]
fn upstream_faults_get_502_and_504_with_the_reason_logged() {
    // Down: nothing listens on a port we just freed.
    let down = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&["--upstream", &down, "--upstream-connect-timeout", "1s"]);
    let resp = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&resp), 502, "{}", String::from_utf8_lossy(&resp));
    let line = gw.wait_log(|l| l.contains("upstream_error"));
    assert!(
        line.contains("reason=upstream_connect_failed") && line.contains("client=127.0.0.1:"),
        "{line}"
    );
    // Slow and cut: the echo app.
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--upstream", &upstream, "--upstream-timeout", "500ms"]);
    let t0 = Instant::now();
    let resp = raw(gw.addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&resp), 504);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered at the timeout"
    );
    gw.wait_log(|l| l.contains("reason=upstream_timeout") && l.contains(&app.to_string()));
    // Cut mid-response: the client gets the 10 bytes that came, then the close; no 502
    // made up after a head was already sent.
    let resp = raw(gw.addr, b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&resp), 200);
    assert_eq!(body(&resp), "0123456789");
}

#[test]
fn a_websocket_upgrade_becomes_a_tunnel_and_other_upgrades_do_not() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&[
        "--upstream",
        &upstream,
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream-timeout",
        "200ms",
    ]);
    let (mut s, head) = raw_upgrade(gw.addr);
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(head.contains("X-Seen-Forwarded-For: 127.0.0.1"), "{head}");
    // Idle longer than --upstream-timeout: a tunnel has no idle timeout.
    std::thread::sleep(Duration::from_millis(600));
    let payload = vec![7u8; 10_000];
    s.write_all(&payload).unwrap();
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, payload, "the echo came back through the tunnel");
    let m = scrape(gw.admin_addr());
    assert_eq!(m.get("wsgate_upstream_tunnels_open"), 1.0);
    assert_eq!(
        m.get(r#"wsgate_upstream_responses_total{class="1xx"}"#),
        1.0
    );
    drop(s);
    let m = wait_metric(gw.admin_addr(), "wsgate_upstream_tunnels_open", 0.0);
    assert!(m.get("wsgate_upstream_bytes_out_total") >= 10_000.0);
    gw.wait_log(|l| l.contains(" tunnel_close ") && l.contains("bytes_up=10000"));
}

/// A client that stops reading while the app keeps echoing: every buffer between them fills,
/// its tunnel stops at one read, and another tunnel, copied by the same set, goes on.
#[test]
fn a_tunnel_whose_client_stops_reading_does_not_hold_up_another() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--upstream", &upstream, "--admin-listen", "127.0.0.1:0"]);
    let (stuck, _) = raw_upgrade(gw.addr);
    let (mut live, _) = raw_upgrade(gw.addr);
    let mut w = stuck.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![1u8; 64 * 1024];
    let mut sent = 0usize;
    // Until nothing more is taken for half a second: everything on the way is full.
    while let Ok(n) = w.write(&chunk) {
        sent += n;
        assert!(sent < 512 << 20, "never backed up");
    }
    assert!(sent > 64 * 1024, "backed up after {sent} bytes");
    for i in 0..20u8 {
        let msg = [i; 100];
        live.write_all(&msg).unwrap();
        let mut back = [0u8; 100];
        live.read_exact(&mut back).unwrap();
        assert_eq!(back, msg, "the other tunnel's echo, round {i}");
    }
    // The stuck client goes (unread bytes: a reset); only its tunnel closes.
    drop((stuck, w));
    gw.wait_log(|l| l.contains(" tunnel_close "));
    wait_metric(gw.admin_addr(), "wsgate_upstream_tunnels_open", 1.0);
    live.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    live.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
}

/// A raw WebSocket upgrade to the echo app's `/ws` (which never pings) through `addr`:
/// the socket after the 101, and the 101's head.
fn raw_upgrade(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    (s, head)
}

const IDLE_LB: &str = "    timeout client 1s\n    timeout server 1s\n";

#[test]
fn upstream_ping_keeps_a_quiet_client_past_the_load_balancers_idle_timeout() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    // Without --upstream-ping the load balancer cuts the quiet tunnel.
    let gw = Gateway::start(&["--upstream", &upstream]);
    let lb = Haproxy::start(gw.addr, "", IDLE_LB);
    let (mut s, _) = raw_upgrade(lb.addr);
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    assert_eq!(
        s.read(&mut buf).unwrap_or(0),
        0,
        "closed by the idle timeout"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop((s, lb, gw));

    // With it, the client gets our pings, answers them, and stays.
    let gw = Gateway::start(&["--upstream", &upstream, "--upstream-ping", "300ms"]);
    let lb = Haproxy::start(gw.addr, "", IDLE_LB);
    let (mut s, _) = raw_upgrade(lb.addr);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut pings = 0;
    let mut got = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        match s.read(&mut buf) {
            Ok(0) => panic!("closed after {:?} with {pings} pings", started.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        while got.len() >= 6 {
            assert_eq!(
                &got[..6],
                b"\x89\x04wsg1",
                "only our Ping reaches the client: {got:?}"
            );
            got.drain(..6);
            pings += 1;
            // The client's Pong, masked as a client must: swallowed, never echoed back.
            let mask = [0x11u8, 0x22, 0x33, 0x44];
            let mut pong = vec![0x8A, 0x84];
            pong.extend_from_slice(&mask);
            pong.extend(b"wsg1".iter().zip(mask).map(|(b, m)| b ^ m));
            s.write_all(&pong).unwrap();
        }
    }
    assert!(pings >= 4, "{pings} pings in 2.5 s at 300 ms");
    // Still connected, past the 1 s idle timeout twice over: the echo works.
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    s.read_exact(&mut back).unwrap();
    assert_eq!(
        &back, b"still here",
        "echoed, and no Pong was passed to the app"
    );
}

/// The app's own page, unchanged (its default `io()`, its `/socket.io/socket.io.js` from the
/// app), in two headless Chromium pages through HAProxy and wsgate; a `socket.io-client`
/// on polling sees their chat.
#[test]
fn the_apps_own_page_chats_in_chromium_through_haproxy_and_wsgate() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium not found: {DEPS_HINT}"
    );
    sio_common::require_node(&["playwright-core", "socket.io-client"]);
    let (_app, app) = classic_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--proxy-protocol", "required", "--upstream", &upstream]);
    let lb = Haproxy::start(gw.addr, "send-proxy", "");
    let url = format!("http://{}/", lb.addr);
    let mut browser = SioClient::spawn_script("sio_browser.js", &[&url]);
    browser.expect(r#"ready {"pages":2}"#);
    let mut watcher = SioClient::spawn(&url, r#"{"transports":["polling"]}"#);
    watcher.connected();
    browser.send(r#"{"op":"send","page":0,"text":"typed in chromium"}"#);
    browser.expect(r#"seen {"text":"typed in chromium"}"#);
    watcher.expect(&sio_common::chat_line("typed in chromium"));
    // Both pages' sockets upgraded to WebSocket tunnels through wsgate.
    gw.wait_logs(2, WAIT, |l| l.contains(" tunnel_open "));
}

/// SIGTERM with `--upstream`: an idle kept-alive connection is closed at once, a request in
/// flight gets its answer, an open tunnel keeps working until `--shutdown-timeout`, then the
/// process exits 0.
#[test]
fn sigterm_lets_requests_finish_and_closes_tunnels_after_the_shutdown_timeout() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let mut gw = Gateway::start(&["--upstream", &upstream, "--shutdown-timeout", "4s"]);
    let (mut tunnel, _) = raw_upgrade(gw.addr);
    // A kept-alive connection, idle after its first answer, is closed when the drain starts.
    let mut kept = TcpStream::connect(gw.addr).unwrap();
    kept.set_read_timeout(Some(WAIT)).unwrap();
    kept.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // /slow answers after 3 s: in flight when the signal comes.
    let addr = gw.addr;
    let slow = std::thread::spawn(move || raw(addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(200));
    gw.signal("TERM");
    gw.wait_log(|l| l.contains(" draining "));
    let mut rest = Vec::new();
    let t0 = Instant::now();
    kept.read_to_end(&mut rest).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "idle keep-alive closed at the drain"
    );
    // The tunnel still carries data during the drain...
    tunnel.write_all(b"during the drain").unwrap();
    let mut back = [0u8; 16];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"during the drain");
    // ...until the shutdown timeout, when the process exits and the tunnel closes.
    let t0 = Instant::now();
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(t0.elapsed() <= Duration::from_secs(5), "{:?}", t0.elapsed());
    let line = gw.wait_log(|l| l.contains(" stopped "));
    assert!(line.contains("left_open="), "{line}");
    // The request in flight (3 s, begun 0.2 s before the signal) finished within the drain.
    let resp = slow.join().unwrap();
    assert_eq!(status(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(body(&resp), "late");
    let mut rest = Vec::new();
    let _ = tunnel.read_to_end(&mut rest);
}

/// The app closes its idle kept-alive connections (as Node does after its 5 s
/// `keepAliveTimeout`): the next request, bodiless or not, must not get a 502 from a pooled
/// connection that is already closed.
#[test]
fn a_pooled_connection_the_app_closed_is_not_used() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--upstream", &upstream, "--admin-listen", "127.0.0.1:0"]);
    let get = b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let post =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let close_idle = b"GET /close-idle HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let port = |resp: &[u8]| {
        let b = body(resp);
        let at = b.find("\"peerPort\":").expect("peerPort") + 11;
        b[at..].trim_end_matches('}').to_string()
    };
    // Back to back, the second request reuses the first one's upstream connection.
    let (a, b) = (raw(gw.addr, get), raw(gw.addr, get));
    assert_eq!(port(&a), port(&b), "the pool is used");
    for (round, req) in [get.as_slice(), post, get, post].into_iter().enumerate() {
        // The pooled connection is closed by the app while idle...
        assert_eq!(status(&raw(gw.addr, close_idle)), 200);
        std::thread::sleep(Duration::from_millis(300));
        // ...and the next request still gets its answer.
        let resp = raw(gw.addr, req);
        assert_eq!(
            status(&resp),
            200,
            "round {round}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    assert!(
        gw.logs().iter().all(|l| !l.contains("upstream_error")),
        "{:?}",
        gw.logs()
    );
}

/// An HTTP/1.0 answer (no length: its body ends at the close) is passed on, as nginx does.
#[test]
fn an_http10_response_is_passed_on() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req).unwrap();
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold but fine")
            .unwrap();
    });
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&["--upstream", &upstream]);
    let resp = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    server.join().unwrap();
    assert_eq!(status(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(body(&resp), "old but fine");
    assert!(String::from_utf8_lossy(&resp).contains("Connection: close"));
}

/// `--max-connections` counts an open tunnel; and the prelude's header deadline covers the
/// second head of a kept-alive connection too.
#[test]
fn limits_count_tunnels_and_every_head_has_the_deadline() {
    let (_app, app) = echo_app();
    let upstream = format!("http://{app}");
    let gw = Gateway::start(&[
        "--upstream",
        &upstream,
        "--max-connections",
        "1",
        "--header-timeout",
        "500ms",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let (tunnel, _) = raw_upgrade(gw.addr);
    let resp = raw(gw.addr, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&resp), 503, "{}", String::from_utf8_lossy(&resp));
    gw.wait_log(|l| l.contains("upgrade_refused") && l.contains("reason=max_connections"));
    drop(tunnel);
    // The permit is given back just after the close line (so a drain waits for the line).
    gw.wait_log(|l| l.contains(" tunnel_close "));
    wait_metric(gw.admin_addr(), "wsgate_connections_open", 0.0);
    // A first request answered, then half a second head: cut at the deadline.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHo")
        .unwrap();
    let t0 = Instant::now();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(status(&all), 200);
    assert_eq!(
        String::from_utf8_lossy(&all).matches("HTTP/1.1 ").count(),
        1
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    gw.wait_log(|l| l.contains("reason=header_timeout"));
}
