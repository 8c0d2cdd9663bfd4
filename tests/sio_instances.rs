//! Polling sessions across two instances with a real `redis-server` and no stickiness: each
//! request of one session may land on either instance, and the one that does not own it
//! passes it to the one that does (PROXY v2 with the real client and a hop TLV). First by
//! hand, request by request, then a stock `socket.io-client` behind HAProxy balancing every
//! HTTP request round robin.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::haproxy::Haproxy;
use common::redis::Redis;
use common::{
    field, free_port, next_text, proxy_v2, scrape, wait_metric, ws_connect, Gateway, WAIT,
};
use sio_common::{chat_line, next_packet, plain, send_text, SioClient};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An instance on a port known in advance (it advertises it), on `redis`, with this
/// `--proxy-protocol` mode.
fn instance(redis: &Redis, proxy: &str) -> Gateway {
    instance_every(redis, proxy, "200ms")
}

/// The same, announcing itself every `every`.
fn instance_every(redis: &Redis, proxy: &str, every: &str) -> Gateway {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = redis.url();
    let args = [
        "--redis",
        &url,
        "--proxy-protocol",
        proxy,
        "--advertise",
        &listen,
        "--announce-interval",
        every,
        "--admin-listen",
        "127.0.0.1:0",
    ];
    Gateway::start_on(&listen, &args)
}

/// Waits until each instance has heard of the other.
fn introduce(a: &Gateway, b: &Gateway) {
    for g in [a, b] {
        g.wait_log(|l| l.contains(" peer_seen "));
        g.wait_log(|l| l.contains(" backplane_up "));
    }
}

/// The tag an instance puts in front of its sessions' ids.
fn tag(g: &Gateway) -> String {
    let line = g.wait_log(|l| l.contains(" peer_advertise "));
    field(&line, "peer").unwrap().to_string()
}

/// One request on its own connection, optionally after a PROXY v2 header from `client`.
fn request(
    to: SocketAddr,
    client: Option<SocketAddr>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    if let Some(c) = client {
        s.write_all(&proxy_v2(c, to, &[])).unwrap();
    }
    let len = if method == "POST" {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: chat.example\r\n{len}Connection: close\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

const EIO: &str = "/socket.io/?EIO=4&transport=polling";

#[test]
fn one_session_alternating_between_instances_connects_chats_upgrades_and_loses_nothing() {
    let redis = Redis::start(free_port(), None);
    let a = instance(&redis, "optional");
    let b = instance(&redis, "optional");
    introduce(&a, &b);
    let client: SocketAddr = "198.51.100.7:5555".parse().unwrap();
    // The handshake lands on A: the session is A's, and its id says so.
    let (status, open) = request(a.addr, Some(client), "GET", EIO, "");
    assert_eq!(status, 200, "{open}");
    let sid = open[9..29].to_string();
    assert!(sid.starts_with(&tag(&a)), "{sid} names A");
    let path = format!("{EIO}&sid={sid}");
    // Then its requests alternate: B passes them to A.
    assert_eq!(
        request(b.addr, Some(client), "POST", &path, "40"),
        (200, "ok".into())
    );
    assert_eq!(
        plain(&request(a.addr, Some(client), "GET", &path, "").1),
        format!("40{{\"sid\":\"{sid}\"}}")
    );
    let fwd = b.wait_log(|l| l.contains(" forward ") && l.contains(&sid));
    assert!(fwd.contains("client=198.51.100.7:5555"), "{fwd}");
    // A plain client on B and the session chat both ways (the backplane carries the rooms).
    let mut raw = smol::block_on(ws_connect(b.addr, "/ws", b""));
    let post = r#"42["chat message","from polling"]"#;
    assert_eq!(
        request(b.addr, Some(client), "POST", &path, post),
        (200, "ok".into())
    );
    assert_eq!(smol::block_on(next_text(&mut raw)), "from polling");
    assert_eq!(
        plain(&request(b.addr, Some(client), "GET", &path, "").1),
        post
    );
    smol::block_on(raw.send(Message::text("one"))).unwrap();
    assert_eq!(smol::block_on(next_text(&mut raw)), "one");
    assert_eq!(
        plain(&request(b.addr, Some(client), "GET", &path, "").1),
        r#"42["chat message","one"]"#
    );

    // The upgrade arrives at B too; the WebSocket is A's session, through B.
    smol::block_on(async {
        let ws_path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
        let mut ws = ws_connect(b.addr, &ws_path, &proxy_v2(client, b.addr, &[])).await;
        send_text(&mut ws, "2probe").await;
        assert_eq!(next_packet(&mut ws).await, "3probe");
        // Sent while it switches: waits in its outbox on A, then arrives on the WebSocket.
        for i in 0..10 {
            raw.send(Message::text(format!("during {i}")))
                .await
                .unwrap();
            assert_eq!(next_text(&mut raw).await, format!("during {i}"));
        }
        send_text(&mut ws, "5").await;
        for i in 0..10 {
            let want = format!(r#"42["chat message","during {i}"]"#);
            assert_eq!(plain(&next_packet(&mut ws).await), want);
        }
        send_text(&mut ws, r#"42["chat message","over the websocket"]"#).await;
        assert_eq!(next_text(&mut raw).await, "over the websocket");
        assert_eq!(
            plain(&next_packet(&mut ws).await),
            r#"42["chat message","over the websocket"]"#
        );
    });
    // A served it with the real client address, and counted the upgrade.
    let open_ws = a.wait_log(|l| l.contains(" open ") && l.contains(&format!("upgrade={sid}")));
    assert!(open_ws.contains("client=198.51.100.7:5555"), "{open_ws}");
    assert_eq!(
        scrape(a.admin_addr()).get("wsgate_socketio_upgrades_total"),
        1.0
    );
    let m = scrape(b.admin_addr());
    assert!(m.get("wsgate_peer_forwards_total") >= 5.0, "{:?}", m.0);
    assert_eq!(m.get("wsgate_backplane_peers"), 1.0);
}

#[test]
fn unknown_and_stale_sessions_are_not_forwarded_in_circles() {
    let redis = Redis::start(free_port(), None);
    let a = instance(&redis, "optional");
    let b = instance(&redis, "optional");
    introduce(&a, &b);
    let unknown = r#"{"code":1,"message":"Session ID unknown"}"#;
    // A sid with A's tag that A does not have: B passes it once, A answers.
    let sid = format!("{}{}", tag(&a), "x".repeat(12));
    let (status, body) = request(b.addr, None, "GET", &format!("{EIO}&sid={sid}"), "");
    assert_eq!((status, body.as_str()), (400, unknown));
    // A request that already made its hop is answered where it lands.
    let mut s = TcpStream::connect(a.addr).unwrap();
    let hop = [
        common::V2_SIG.as_slice(),
        &[
            0x21, 0x11, 0, 15, 198, 51, 100, 7, 127, 0, 0, 1, 0x15, 0xb3, 0, 80, 0xE1, 0, 0,
        ],
    ]
    .concat();
    s.write_all(&hop).unwrap();
    let other = format!("{}{}", tag(&b), "y".repeat(12));
    write!(
        s,
        "GET {EIO}&sid={other} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 400 ") && out.ends_with(unknown),
        "{out}"
    );
    assert!(a.events("forward").is_empty(), "{:?}", a.events("forward"));
    // An instance that went away: its sessions' requests get 502 while it is remembered.
    let b_tag = tag(&b);
    drop(b);
    std::thread::sleep(Duration::from_millis(100));
    let gone = format!("{b_tag}{}", "z".repeat(12));
    let (status, _) = request(a.addr, None, "GET", &format!("{EIO}&sid={gone}"), "");
    assert!(status == 502 || status == 400, "{status}");
    if status == 502 {
        a.wait_log(|l| l.contains("reason=peer_unreachable") && l.contains(&gone));
    }
}

#[test]
fn a_stock_client_behind_a_round_robin_balancer_connects_chats_and_upgrades() {
    let redis = Redis::start(free_port(), None);
    let a = instance(&redis, "required");
    let b = instance(&redis, "required");
    introduce(&a, &b);
    let lb = Haproxy::start_http_round_robin(&[a.addr, b.addr], "send-proxy-v2");
    let url = format!("http://{}", lb.addr);
    let mut c = SioClient::spawn(&url, r#"{"transports":["polling","websocket"]}"#);
    c.connected_then_upgraded();
    let mut p = SioClient::spawn(&url, r#"{"transports":["polling"]}"#);
    p.connected();
    c.expect(r#"event {"name":"hi","args":[]}"#);
    for i in 0..20 {
        let text = format!("round {i}");
        if i % 2 == 0 { &mut c } else { &mut p }.chat(&text);
        c.expect(&chat_line(&text));
        p.expect(&chat_line(&text));
    }
    // Requests of one session did land on both instances.
    let forwards = a.events("forward").len() + b.events("forward").len();
    assert!(forwards > 0, "no request was forwarded");
    for g in [&a, &b] {
        assert!(
            g.logs()
                .iter()
                .all(|l| !l.contains(" ERROR ") && !l.contains("reason=poll_overlap")),
            "{:?}",
            g.logs()
        );
    }
}

#[test]
fn a_new_instance_learns_the_others_at_once_not_after_an_announce_interval() {
    let redis = Redis::start(free_port(), None);
    // A minute between announcements: only the answer to a newcomer can be seen in time.
    let a = instance_every(&redis, "optional", "60s");
    a.wait_log(|l| l.contains(" backplane_up "));
    let b = instance_every(&redis, "optional", "60s");
    b.wait_log(|l| l.contains(" backplane_up "));
    // Each has heard of the other well within WAIT (10 s), so a polling request for A's
    // session that reaches B in its first seconds is passed to A, not refused.
    for g in [&a, &b] {
        wait_metric(g.admin_addr(), "wsgate_backplane_peers", 1.0);
    }
    let client: SocketAddr = "198.51.100.8:6000".parse().unwrap();
    let (status, open) = request(a.addr, Some(client), "GET", EIO, "");
    assert_eq!(status, 200, "{open}");
    let sid = &open[9..29];
    let path = format!("{EIO}&sid={sid}");
    assert_eq!(
        request(b.addr, Some(client), "POST", &path, "40"),
        (200, "ok".into())
    );
}
