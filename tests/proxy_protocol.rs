//! PROXY v1/v2 in front of the WebSocket: the real client address reaches the logs, load
//! balancer health checks behave, and bad or untrusted headers are refused with a reason.
mod common;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Timer};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Connects through `header`, chats once, and returns the gateway's `open` line for it.
fn chat_through(gw: &Gateway, header: &[u8], conn: u64) -> String {
    smol::block_on(async {
        let mut ws = ws_connect(gw.addr, "/ws/p", header).await;
        ws.send(Message::text("through the proxy")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "through the proxy");
    });
    gw.wait_log(|l| l.contains(" open ") && l.contains(&format!("conn={conn} ")))
}

#[test]
fn v1_tcp4_tcp6_and_unknown() {
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    let line = chat_through(&gw, &proxy_v1(sa("203.0.113.7:4711"), sa("10.0.0.1:80")), 1);
    assert!(
        line.contains("client=203.0.113.7:4711") && line.contains("proxy=v1"),
        "{line}"
    );
    let line = chat_through(
        &gw,
        &proxy_v1(sa("[2001:db8::7]:4712"), sa("[2001:db8::1]:80")),
        2,
    );
    assert!(line.contains("client=[2001:db8::7]:4712"), "{line}");
    // UNKNOWN: the socket address is used.
    let line = chat_through(&gw, b"PROXY UNKNOWN\r\n", 3);
    assert!(
        line.contains("client=127.0.0.1:") && line.contains("proxy=v1"),
        "{line}"
    );
}

#[test]
fn v2_tcp4_tcp6_and_vpc_endpoint_tlv() {
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    let line = chat_through(
        &gw,
        &proxy_v2(sa("198.51.100.9:5000"), sa("10.0.0.1:80"), &[]),
        1,
    );
    assert!(
        line.contains("client=198.51.100.9:5000") && line.contains("proxy=v2"),
        "{line}"
    );
    let line = chat_through(
        &gw,
        &proxy_v2(sa("[2001:db8::9]:5001"), sa("[2001:db8::1]:80"), &[]),
        2,
    );
    assert!(line.contains("client=[2001:db8::9]:5001"), "{line}");
    // An unrelated TLV (0x04, NOOP) before the AWS one must be skipped.
    let mut tlvs = vec![0x04, 0x00, 0x03, 0, 0, 0];
    tlvs.extend(tlv_vpce("vpce-0a1b2c3d4e5f67890"));
    let line = chat_through(
        &gw,
        &proxy_v2(sa("198.51.100.10:5002"), sa("10.0.0.1:80"), &tlvs),
        3,
    );
    assert!(line.contains("vpce=vpce-0a1b2c3d4e5f67890"), "{line}");
    assert!(line.contains("client=198.51.100.10:5002"), "{line}");
}

#[test]
fn v2_local_health_check_gets_200() {
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    for len in [0u16, 12] {
        let mut req = proxy_v2_local(len);
        req.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let resp = raw(gw.addr, &req);
        assert_eq!(status(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    }
}

#[test]
fn header_then_close_is_quiet() {
    // What a CLB TCP health check does (v1) and an NLB TCP check (v2 LOCAL).
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    assert!(raw_then_close(gw.addr, &proxy_v1(sa("203.0.113.1:1"), sa("10.0.0.1:80"))).is_empty());
    assert!(raw_then_close(gw.addr, &proxy_v2_local(0)).is_empty());
    // A follow-up request proves the gateway handled both before we look at the logs.
    assert_eq!(
        status(&raw(
            gw.addr,
            b"PROXY UNKNOWN\r\nGET /healthz HTTP/1.1\r\n\r\n"
        )),
        200
    );
    std::thread::sleep(Duration::from_millis(100));
    let noisy: Vec<_> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(noisy.is_empty(), "{noisy:?}");
}

#[test]
fn header_split_across_reads() {
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    let mut tlvs = tlv_vpce("vpce-split");
    tlvs.extend([0x04, 0x00, 0x01, 0]);
    for header in [
        proxy_v1(sa("203.0.113.20:20"), sa("10.0.0.1:80")),
        proxy_v2(sa("203.0.113.21:21"), sa("10.0.0.1:80"), &tlvs),
    ] {
        let mut req = header.clone();
        req.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let resp = smol::block_on(async {
            let mut s = Async::<TcpStream>::connect(gw.addr).await.unwrap();
            // One byte at a time through the header, then the rest.
            for b in &req[..header.len()] {
                s.write_all(&[*b]).await.unwrap();
                s.flush().await.unwrap();
                Timer::after(Duration::from_millis(2)).await;
            }
            s.write_all(&req[header.len()..]).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            out
        });
        assert_eq!(status(&resp), 200);
    }
}

#[test]
fn bad_headers_are_closed_with_a_logged_reason() {
    let gw = Gateway::start(&["--proxy-protocol", "required", "--header-timeout", "300ms"]);
    // Garbage where a header must be.
    assert!(raw(gw.addr, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    gw.wait_log(|l| l.contains("reason=missing_proxy_header") && l.contains("peer=127.0.0.1:"));
    // A v1 line with a bad family.
    assert!(raw(gw.addr, b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n").is_empty());
    // Oversize v1: no CRLF within 107 bytes.
    let mut long = b"PROXY TCP4 ".to_vec();
    long.extend(std::iter::repeat_n(b'1', 120));
    assert!(raw(gw.addr, &long).is_empty());
    // v2 with a bad version nibble.
    let mut v2 = V2_SIG.to_vec();
    v2.extend_from_slice(&[0x31, 0x11, 0, 12]);
    v2.extend_from_slice(&[0; 12]);
    assert!(raw(gw.addr, &v2).is_empty());
    // Truncated, then stalled: cut at --header-timeout.
    let truncated = &proxy_v2(sa("203.0.113.5:5"), sa("10.0.0.1:80"), &[])[..20];
    assert!(raw(gw.addr, truncated).is_empty());
    gw.wait_log(|l| l.contains("reason=header_timeout"));
    let rejected = gw.events("prelude_rejected");
    assert!(rejected.len() >= 5, "{rejected:#?}");
    for l in &rejected {
        assert!(
            l.contains("peer=127.0.0.1:") && l.contains("reason="),
            "{l}"
        );
    }
}

#[test]
fn optional_mode_refuses_headers_from_untrusted_sources() {
    // 127.0.0.1 is not in the trusted list here.
    let gw = Gateway::start(&[
        "--proxy-protocol",
        "optional",
        "--trusted-proxies",
        "10.0.0.0/8",
    ]);
    let spoofed = proxy_v1(sa("203.0.113.66:6666"), sa("10.0.0.1:80"));
    let mut req = spoofed.clone();
    req.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert!(
        raw(gw.addr, &req).is_empty(),
        "spoofed header must be refused"
    );
    let line = gw.wait_log(|l| l.contains("reason=untrusted_proxy"));
    assert!(
        line.contains("peer=127.0.0.1:") && !line.contains("203.0.113.66"),
        "{line}"
    );
    // Without a header the socket address is used and the request is served.
    assert_eq!(status(&raw(gw.addr, b"GET /healthz HTTP/1.1\r\n\r\n")), 200);
    smol::block_on(async {
        let mut ws = ws_connect(gw.addr, "/ws", b"").await;
        ws.send(Message::text("plain")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "plain");
    });
    let open = gw.wait_log(|l| l.contains(" open "));
    assert!(
        open.contains("client=127.0.0.1:") && open.contains("proxy=none"),
        "{open}"
    );
}

#[test]
fn required_mode_refuses_untrusted_sources_outright() {
    let gw = Gateway::start(&[
        "--proxy-protocol",
        "required",
        "--trusted-proxies",
        "10.0.0.0/8",
    ]);
    let mut req = proxy_v1(sa("203.0.113.66:6666"), sa("10.0.0.1:80"));
    req.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert!(raw(gw.addr, &req).is_empty());
    gw.wait_log(|l| l.contains("reason=untrusted_proxy"));
}
