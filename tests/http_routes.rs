//! Plain HTTP on the gateway port: the page, health checks and every refusal, as raw bytes.
mod common;
use common::{raw, status, Gateway};

#[test]
fn serves_page_and_health() {
    let gw = Gateway::start(&[]);
    let page = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&page), 200);
    let text = String::from_utf8_lossy(&page);
    assert!(text.contains("Content-Type: text/html"));
    assert!(
        text.contains("new WebSocket("),
        "page uses the browser WebSocket"
    );
    assert!(
        !text.contains("<script src"),
        "page loads no external script"
    );
    let health = raw(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&health), 200);
    assert!(health.ends_with(b"\r\n\r\nok\n"));
    let head = raw(gw.addr, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&head), 200);
    assert!(head.ends_with(b"\r\n\r\n"), "HEAD has no body");
}

#[test]
fn refusals_have_specific_statuses() {
    let gw = Gateway::start(&["--max-head-bytes", "1024"]);
    let cases: &[(&[u8], u16, &str)] = &[
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not found"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            405,
            "method",
        ),
        (
            b"DELETE /ws HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            "method on ws",
        ),
        (
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
            400,
            "malformed header",
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            400,
            "TLS on plain port",
        ),
        (b"GET / HTTP/1.0\r\n\r\n", 400, "HTTP/1.0"),
        (
            b"GET /ws/bad%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "bad room",
        ),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
            426,
            "upgrade required",
        ),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
            400,
            "missing key",
        ),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
            "invalid key",
        ),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426,
            "wrong version",
        ),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
            "connection without upgrade",
        ),
    ];
    for (req, want, what) in cases {
        let resp = raw(gw.addr, req);
        assert_eq!(
            status(&resp),
            *want,
            "{what}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    let resp = raw(
        gw.addr,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&resp).contains("Sec-WebSocket-Version: 13"));
    // Each refusal is logged with its reason and the client address.
    let line = gw.wait_log(|l| l.contains("reason=invalid_key"));
    assert!(line.contains("client=127.0.0.1:"), "{line}");
    gw.wait_log(|l| l.contains("reason=unsupported_version"));
}

#[test]
fn oversize_head_gets_431() {
    let gw = Gateway::start(&["--max-head-bytes", "1024"]);
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 2000));
    req.extend_from_slice(b"\r\n\r\n");
    let resp = raw(gw.addr, &req);
    assert_eq!(status(&resp), 431);
    let line = gw.wait_log(|l| l.contains("reason=head_too_large"));
    assert!(line.contains("status=431"), "{line}");
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(status(&raw(gw.addr, &many)), 431);
}

/// A connection that sends nothing (browsers open spare ones) is logged quietly; one that
/// stops halfway through its head is a client's fault, a WARN with its address.
#[test]
fn an_empty_connection_is_quiet_and_a_half_head_is_a_refusal() {
    let gw = common::Gateway::start(&[]);
    drop(std::net::TcpStream::connect(gw.addr).unwrap());
    let quiet = gw.wait_log(|l| l.contains(" prelude_closed "));
    assert!(
        quiet.contains(" INFO ") && quiet.contains("reason=closed_before_request"),
        "{quiet}"
    );
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTT").unwrap();
    drop(s);
    let warn = gw.wait_log(|l| l.contains(" prelude_rejected "));
    assert!(
        warn.contains(" WARN ")
            && warn.contains("reason=closed_before_request")
            && warn.contains("bytes=9")
            && warn.contains("client=127.0.0.1:"),
        "{warn}"
    );
}
