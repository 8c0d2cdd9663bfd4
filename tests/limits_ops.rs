//! Operator limits on the real binary: `--max-connections` (503, health checks still answer),
//! `--max-connections-per-ip` (429, per real client address from PROXY), `--max-messages-per-
//! second` (close 1008 "rate limit") and `--allowed-origins` (403). Each refusal is counted in
//! `/metrics` and logged once with the real client address.
mod common;
use async_tungstenite::tungstenite::Message;
use common::*;
use std::net::SocketAddr;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn max_connections_answers_503_while_healthz_still_answers() {
    let gw = Gateway::start(&["--max-connections", "2", "--admin-listen", "127.0.0.1:0"]);
    let admin = gw.admin_addr();
    smol::block_on(async {
        let mut a = ws_connect(gw.addr, "/ws", b"").await;
        let _b = ws_connect(gw.addr, "/ws", b"").await;
        let (code, head, _s) = upgrade(gw.addr, b"", "/ws", "").await;
        assert_eq!(code, 503, "{head}");
        assert!(head.contains("Retry-After: "), "{head}");
        // The load balancer's health check is not a session: it still answers.
        assert_eq!(http_get(gw.addr, "/healthz"), (200, "ok\n".into()));
        assert_eq!(http_get(admin, "/healthz").0, 200);
        let m = scrape(admin);
        assert_eq!(
            m.get(r#"wsgate_connections_refused_total{limit="max_connections"}"#),
            1.0
        );
        assert_eq!(m.get("wsgate_connections_open"), 2.0);
        // The permit is given back when a session ends: a new client fits again.
        let who = client_of(&a);
        a.close(None).await.unwrap();
        drop(a);
        gw.wait_log(|l| l.contains(" close ") && l.contains(&who));
        // The session gives its permit back just after its close line.
        wait_metric(admin, "wsgate_connections_open", 1.0);
        let (code, head, _c) = upgrade(gw.addr, b"", "/ws", "").await;
        assert_eq!(code, 101, "{head}");
    });
    let line = gw.wait_log(|l| l.contains("upgrade_refused"));
    assert!(
        line.contains("WARN")
            && line.contains("client=127.0.0.1:")
            && line.contains("status=503")
            && line.contains("reason=max_connections"),
        "{line}"
    );
    assert_eq!(gw.events("upgrade_refused").len(), 1);
}

#[test]
fn per_ip_limit_counts_the_real_client_address_from_proxy() {
    // Every TCP peer is 127.0.0.1 (a trusted proxy); the PROXY headers name the clients.
    let gw = Gateway::start(&[
        "--proxy-protocol",
        "required",
        "--max-connections-per-ip",
        "2",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    let dst = sa("10.0.0.1:80");
    smol::block_on(async {
        let h1 = proxy_v1(sa("203.0.113.7:1001"), dst);
        let h2 = proxy_v2(sa("203.0.113.7:1002"), dst, &[]);
        let h3 = proxy_v1(sa("203.0.113.7:1003"), dst);
        let mut first = ws_connect(gw.addr, "/ws", &h1).await;
        let _second = ws_connect(gw.addr, "/ws", &h2).await;
        let (code, head, _s) = upgrade(gw.addr, &h3, "/ws", "").await;
        assert_eq!(code, 429, "{head}");
        // Another client behind the same proxy is not affected.
        let other = proxy_v1(sa("198.51.100.9:2001"), dst);
        let (code, head, _o) = upgrade(gw.addr, &other, "/ws", "").await;
        assert_eq!(code, 101, "{head}");
        let m = scrape(admin);
        assert_eq!(
            m.get(r#"wsgate_connections_refused_total{limit="max_connections_per_ip"}"#),
            1.0
        );
        assert_eq!(m.get("wsgate_connections_open"), 3.0);
        // When one of the two ends, the address has room for one again.
        first.close(None).await.unwrap();
        drop(first);
        gw.wait_log(|l| l.contains(" close ") && l.contains("client=203.0.113.7:1001"));
        // The session gives its permit back (gauge, then the address's count) just after its
        // close line: retry while that is under way.
        let again = proxy_v1(sa("203.0.113.7:1004"), dst);
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (code, head, s) = upgrade(gw.addr, &again, "/ws", "").await;
            if code == 101 {
                drop(s);
                break;
            }
            assert_eq!(code, 429, "{head}");
            assert!(
                std::time::Instant::now() < deadline,
                "the address stays full"
            );
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
    });
    let line = gw.wait_log(|l| l.contains("upgrade_refused"));
    assert!(
        line.contains("client=203.0.113.7:1003")
            && line.contains("status=429")
            && line.contains("reason=max_connections_per_ip"),
        "{line}"
    );
    assert_eq!(gw.events("upgrade_refused").len(), 1);
}

#[test]
fn a_flooding_client_is_closed_1008_while_its_room_keeps_receiving() {
    let gw = Gateway::start(&[
        "--max-messages-per-second",
        "20",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    smol::block_on(async {
        let mut flood = ws_connect(gw.addr, "/ws/r", b"").await;
        let mut calm = ws_connect(gw.addr, "/ws/r", b"").await;
        let mut other = ws_connect(gw.addr, "/ws/r", b"").await;
        // 200 messages at once: far past a burst of one second's worth (20).
        for i in 0..200 {
            if flood.send(Message::text(format!("f{i}"))).await.is_err() {
                break;
            }
        }
        let (code, reason) = close_frame(&mut flood).await;
        assert_eq!((code, reason.as_str()), (1008, "rate limit"));
        gw.wait_log(|l| l.contains(" close ") && l.contains("reason=rate_limited"));
        // The room is still served: the others see what the flooder got in (a prefix of its
        // messages, in order, no more than the burst plus refill), then carry on.
        calm.send(Message::text("after")).await.unwrap();
        for ws in [&mut calm, &mut other] {
            let mut seen = 0;
            loop {
                let t = next_text(ws).await;
                if t == "after" {
                    break;
                }
                assert_eq!(t, format!("f{seen}"), "flooder's messages in order");
                seen += 1;
            }
            assert!((1..=40).contains(&seen), "{seen} flood messages delivered");
        }
        // The flooder's session is counted out just after its close line.
        let m = wait_metric(admin, "wsgate_connections_open", 2.0);
        assert_eq!(
            m.get(r#"wsgate_connections_closed_total{reason="rate_limited"}"#),
            1.0
        );
        // Only the flooder was closed (the others are still connected here).
        let closes = gw.events("close");
        assert_eq!(closes.len(), 1, "{closes:?}");
        let line = &closes[0];
        assert!(
            line.contains("WARN")
                && line.contains("reason=rate_limited")
                && line.contains("code=1008")
                && line.contains("client=127.0.0.1:"),
            "{line}"
        );
    });
}

#[test]
fn allowed_origins_refuse_others_with_403_and_allow_no_origin() {
    let gw = Gateway::start(&[
        "--allowed-origins",
        "https://chat.example.com, https://b.example",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    smol::block_on(async {
        let (code, head, _s) =
            upgrade(gw.addr, b"", "/ws", "Origin: https://evil.example\r\n").await;
        assert_eq!(code, 403, "{head}");
        // A look-alike is not the allowed origin.
        let evil = "Origin: https://chat.example.com.evil.example\r\n";
        let (code, head, _s) = upgrade(gw.addr, b"", "/ws", evil).await;
        assert_eq!(code, 403, "{head}");
        for ok in [
            "Origin: https://chat.example.com\r\n",
            "Origin: https://b.example\r\n",
            // Non-browser clients send no Origin: allowed (documented).
            "",
        ] {
            let (code, head, _s) = upgrade(gw.addr, b"", "/ws", ok).await;
            assert_eq!(code, 101, "{ok:?}: {head}");
        }
    });
    let m = scrape(admin);
    assert_eq!(
        m.get(r#"wsgate_connections_refused_total{limit="origin"}"#),
        2.0
    );
    let refused = gw.wait_events("upgrade_refused", 2);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("client=127.0.0.1:")
            && refused[0].contains("status=403")
            && refused[0].contains("reason=origin")
            && refused[0].contains("origin=https://evil.example"),
        "{}",
        refused[0]
    );
}
