//! Handshake tokens (`--jwt-secret-file`) and the publish API (`--api-key-file`), with tokens
//! minted by npm's `jsonwebtoken` (tests/node/mint_token.js), not by our own code: every
//! refusal and its status, the room prefix rule, the Bearer header, Socket.IO's `auth`, the
//! close at `exp`, read-only clients, API publishes to plain and Socket.IO clients, API errors,
//! and an API publish across two instances on a real redis-server.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::redis::Redis;
use common::{
    close_frame, free_port, next_msg, next_text, raw, scrape, status, upgrade, ws_connect, Gateway,
    TempDir, WAIT,
};
use sio_common::{chat_line, node_dir, require_node, SioClient};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "correct horse battery staple, 32+";
const API_KEY: &str = "api-key-0123456789";

/// Seconds since the epoch, `plus` from now.
fn at(plus: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + plus
}

/// A token signed by `jsonwebtoken` with `secret` and `alg`.
fn mint_with(secret: &str, claims: &str, alg: &str) -> String {
    require_node(&["jsonwebtoken"]);
    let out = Command::new("node")
        .arg(node_dir().join("mint_token.js"))
        .args([secret, claims, alg])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn mint(claims: &str) -> String {
    mint_with(SECRET, claims, "HS256")
}

/// A gateway that requires tokens and serves the API, with the keys in files.
struct Secured {
    gw: Gateway,
    _dir: TempDir,
}

fn secured(extra: &[&str]) -> Secured {
    let dir = TempDir::new("auth");
    let secret = dir.path().join("jwt.key");
    let api = dir.path().join("api.key");
    // Files as an operator writes them, with a trailing newline (dropped).
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::write(&api, format!("{API_KEY}\n")).unwrap();
    let (secret, api) = (secret.display().to_string(), api.display().to_string());
    let mut args = vec![
        "--jwt-secret-file",
        &secret,
        "--api-key-file",
        &api,
        "--admin-listen",
        "127.0.0.1:0",
        "--jwt-leeway",
        "0s",
    ];
    args.extend_from_slice(extra);
    let gw = Gateway::start(&args);
    Secured { gw, _dir: dir }
}

fn upgrade_status(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    let (code, head, _s) = smol::block_on(upgrade(addr, b"", path, extra));
    (code, head)
}

#[test]
fn plain_upgrades_need_a_valid_token_for_their_room() {
    let s = secured(&[]);
    let addr = s.gw.addr;
    let far = at(3600);
    let chat = mint(&format!(
        r#"{{"exp":{far},"sub":"ann","rooms":["chat.*","news"]}}"#
    ));
    // Allowed: the prefix rule and an exact name; by query and by Bearer header.
    for (path, extra) in [
        (format!("/ws/chat.general?token={chat}"), String::new()),
        (
            "/ws/chat.".to_string() + &format!("?token={chat}"),
            String::new(),
        ),
        (
            "/ws/news".to_string(),
            format!("Authorization: Bearer {chat}\r\n"),
        ),
    ] {
        assert_eq!(upgrade_status(addr, &path, &extra).0, 101, "{path}");
    }
    let open =
        s.gw.wait_log(|l| l.contains(" open ") && l.contains("room=chat.general"));
    assert!(open.contains("user=ann"), "{open}");
    // Refused: each with its status and reason.
    let refusals = [
        ("/ws/chat.general".to_string(), 401, "token_missing"),
        (format!("/ws/main?token={chat}"), 403, "room_forbidden"),
        (format!("/ws/chatroom?token={chat}"), 403, "room_forbidden"),
        (
            format!(
                "/ws/news?token={}",
                mint_with("another secret", &format!(r#"{{"exp":{far}}}"#), "HS256")
            ),
            401,
            "token_signature",
        ),
        (
            format!(
                "/ws/news?token={}",
                mint(&format!(r#"{{"exp":{}}}"#, at(-60)))
            ),
            401,
            "token_expired",
        ),
        (
            format!(
                "/ws/news?token={}",
                mint(&format!(r#"{{"exp":{far},"nbf":{}}}"#, at(600)))
            ),
            401,
            "token_not_yet_valid",
        ),
        (
            format!("/ws/news?token={}", mint(r#"{"sub":"no-exp"}"#)),
            401,
            "token_no_exp",
        ),
        (
            format!(
                "/ws/news?token={}",
                mint_with(SECRET, &format!(r#"{{"exp":{far}}}"#), "none")
            ),
            401,
            "token_algorithm",
        ),
        (
            format!(
                "/ws/news?token={}",
                mint_with(SECRET, &format!(r#"{{"exp":{far}}}"#), "HS384")
            ),
            401,
            "token_algorithm",
        ),
        (
            "/ws/news?token=not.a.token".to_string(),
            401,
            "token_malformed",
        ),
        (
            format!("/ws/news?token={}", "x".repeat(5000)),
            401,
            "token_too_long",
        ),
    ];
    for (path, want, reason) in &refusals {
        let (code, head) = upgrade_status(addr, path, "");
        assert_eq!(code, *want, "{reason}: {head}");
        if *want == 401 {
            assert!(head.contains("WWW-Authenticate: Bearer\r\n"), "{head}");
        }
        let line = s
            .gw
            .wait_log(|l| l.contains(" auth_refused ") && l.contains(&format!("reason={reason}")));
        assert!(line.contains("client=127.0.0.1:"), "{line}");
    }
    let m = scrape(s.gw.admin_addr());
    assert_eq!(
        m.get(r#"wsgate_auth_refused_total{reason="room_forbidden"}"#),
        2.0
    );
    assert_eq!(
        m.get(r#"wsgate_auth_refused_total{reason="token_algorithm"}"#),
        2.0
    );
    // The token is never logged.
    assert!(
        s.gw.logs().iter().all(|l| !l.contains(&chat[40..])),
        "a token was logged"
    );
}

#[test]
fn socketio_clients_authenticate_in_their_connect() {
    let s = secured(&[]);
    let url = format!("http://{}", s.gw.addr);
    let good = mint(&format!(
        r#"{{"exp":{},"sub":"bo","rooms":["main"]}}"#,
        at(3600)
    ));
    let old = mint(&format!(r#"{{"exp":{}}}"#, at(-60)));
    // `io({ auth: { token } })` on each transport, and `?token=` in the handshake.
    for opts in [
        format!(r#"{{"auth":{{"token":"{good}"}}}}"#),
        format!(r#"{{"transports":["polling"],"auth":{{"token":"{good}"}}}}"#),
        format!(r#"{{"query":{{"token":"{good}"}}}}"#),
    ] {
        let mut c = SioClient::spawn(&url, &opts);
        c.connected();
        c.chat("authorized");
        c.expect(&chat_line("authorized"));
    }
    let authorized = s.gw.wait_logs(3, WAIT, |l| {
        l.contains(" authorized ") && l.contains("user=bo")
    });
    assert_eq!(authorized.len(), 3);
    // Refusals are the client's `connect_error`, with the reason.
    for (opts, message) in [
        (r#"{}"#.to_string(), "no token"),
        (
            format!(r#"{{"auth":{{"token":"{old}"}}}}"#),
            "token expired",
        ),
        (
            format!(r#"{{"transports":["polling"],"auth":{{"token":"{old}"}}}}"#),
            "token expired",
        ),
        (
            format!(r#"{{"query":{{"room":"vip"}},"auth":{{"token":"{good}"}}}}"#),
            "the token does not allow this room",
        ),
    ] {
        let mut c = SioClient::spawn(&url, &opts);
        c.expect(&format!(r#"connect_error {{"message":"{message}"}}"#));
    }
    let m = scrape(s.gw.admin_addr());
    assert_eq!(
        m.get(r#"wsgate_auth_refused_total{reason="token_expired"}"#),
        2.0
    );
    assert_eq!(
        m.get(r#"wsgate_auth_refused_total{reason="token_missing"}"#),
        1.0
    );
}

#[test]
fn a_session_is_closed_when_its_token_expires() {
    let s = secured(&[]);
    let short = mint(&format!(r#"{{"exp":{},"sub":"brief"}}"#, at(2)));
    smol::block_on(async {
        let mut ws = ws_connect(s.gw.addr, &format!("/ws?token={short}"), b"").await;
        assert_eq!(close_frame(&mut ws).await, (1008, "token expired".into()));
    });
    let url = format!("http://{}", s.gw.addr);
    for transport in ["websocket", "polling"] {
        let short = mint(&format!(r#"{{"exp":{}}}"#, at(2)));
        let opts = format!(r#"{{"transports":["{transport}"],"auth":{{"token":"{short}"}}}}"#);
        let mut c = SioClient::spawn(&url, &opts);
        c.connected();
        let gone = c.next_within(WAIT).expect("a disconnect");
        assert!(gone.starts_with("disconnect "), "{gone}");
    }
    let closes = s.gw.wait_logs(3, WAIT, |l| {
        l.contains(" close ") && l.contains("reason=token_expired")
    });
    assert!(closes[0].contains("user=brief"), "{:?}", closes);
}

#[test]
fn read_only_clients_cannot_publish() {
    let s = secured(&[]);
    let far = at(3600);
    let reader = mint(&format!(r#"{{"exp":{far},"pub":false}}"#));
    let writer = mint(&format!(r#"{{"exp":{far}}}"#));
    smol::block_on(async {
        let mut listener = ws_connect(s.gw.addr, &format!("/ws?token={writer}"), b"").await;
        let mut ro = ws_connect(s.gw.addr, &format!("/ws?token={reader}"), b"").await;
        ro.send(Message::text("from a reader")).await.unwrap();
        assert_eq!(close_frame(&mut ro).await, (1008, "read-only token".into()));
        listener.send(Message::text("from a writer")).await.unwrap();
        // The reader's message never arrived: the writer's own is the first it gets.
        assert_eq!(next_text(&mut listener).await, "from a writer");
    });
    let url = format!("http://{}", s.gw.addr);
    let mut ro = SioClient::spawn(&url, &format!(r#"{{"auth":{{"token":"{reader}"}}}}"#));
    ro.connected();
    let mut rw = SioClient::spawn(&url, &format!(r#"{{"auth":{{"token":"{writer}"}}}}"#));
    rw.connected();
    ro.expect(r#"event {"name":"hi","args":[]}"#);
    ro.chat("sneaky");
    let gone = ro.next();
    assert!(gone.starts_with("disconnect "), "{gone}");
    rw.chat("allowed");
    rw.expect(&chat_line("allowed"));
    s.gw.wait_logs(2, WAIT, |l| l.contains("reason=publish_forbidden"));
}

/// An API request on the admin listener; returns the status and body.
fn api(
    admin: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    ctype: &str,
    body: &[u8],
) -> (u16, String) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: {ctype}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let resp = raw(admin, &req);
    let text = String::from_utf8_lossy(&resp).into_owned();
    (
        status(&resp),
        text.split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string(),
    )
}

#[test]
fn the_publish_api_reaches_plain_and_socketio_clients() {
    let s = secured(&[]);
    let admin = s.gw.admin_addr();
    let token = mint(&format!(r#"{{"exp":{}}}"#, at(3600)));
    let url = format!("http://{}", s.gw.addr);
    let mut sio = SioClient::spawn(
        &url,
        &format!(r#"{{"query":{{"room":"scores"}},"auth":{{"token":"{token}"}}}}"#),
    );
    sio.connected();
    smol::block_on(async {
        let mut plain = ws_connect(s.gw.addr, &format!("/ws/scores?token={token}"), b"").await;
        let publish = |ctype: &str, path: &str, body: &[u8]| {
            api(admin, "POST", path, Some(API_KEY), ctype, body)
        };
        let (code, body) = publish("text/plain", "/publish/scores", "goal! ✓".as_bytes());
        assert_eq!(
            (code, body.as_str()),
            (200, "{\"room\":\"scores\",\"delivered\":2}\n")
        );
        assert_eq!(next_text(&mut plain).await, "goal! ✓");
        sio.expect(&chat_line("goal! ✓"));
        let (code, body) = publish(
            "application/json",
            "/publish/scores?event=score",
            br#"[1, {"home":2}]"#,
        );
        assert_eq!(
            (code, body.as_str()),
            (200, "{\"room\":\"scores\",\"delivered\":1}\n")
        );
        sio.expect(r#"event {"name":"score","args":[1,{"home":2}]}"#);
        let (code, _) = publish(
            "application/octet-stream",
            "/publish/scores",
            &[0, 1, 2, 255],
        );
        assert_eq!(code, 200);
        assert_eq!(
            next_msg(&mut plain).await,
            Message::binary(vec![0u8, 1, 2, 255])
        );
        // Nobody there: delivered to none, not an error.
        assert_eq!(
            publish("text/plain", "/publish/empty", b"x").1,
            "{\"room\":\"empty\",\"delivered\":0}\n"
        );
        let (code, rooms) = api(admin, "GET", "/rooms", Some(API_KEY), "text/plain", b"");
        assert_eq!(
            (code, rooms.as_str()),
            (200, "{\"rooms\":[{\"name\":\"scores\",\"members\":2}]}\n")
        );
    });
    assert_eq!(scrape(admin).get("wsgate_api_publishes_total"), 4.0);
    let line =
        s.gw.wait_log(|l| l.contains(" api_publish ") && l.contains("room=scores"));
    assert!(
        line.contains("client=127.0.0.1:") && !line.contains(API_KEY),
        "{line}"
    );
}

#[test]
fn api_errors_are_specific() {
    let s = secured(&["--max-message-bytes", "1024"]);
    let admin = s.gw.admin_addr();
    // Method, path, key, body, status, reason.
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static [u8],
        u16,
        &'static str,
    );
    let cases: [Case; 8] = [
        ("POST", "/publish/main", None, b"x", 401, "api_key"),
        ("POST", "/publish/main", Some("wrong"), b"x", 401, "api_key"),
        (
            "POST",
            "/publish/no%20spaces",
            Some(API_KEY),
            b"x",
            400,
            "api_bad_room",
        ),
        (
            "POST",
            "/publish/main?event=score",
            Some(API_KEY),
            b"{not json",
            400,
            "api_bad_body",
        ),
        (
            "POST",
            "/publish/main?event=disconnect",
            Some(API_KEY),
            b"[]",
            400,
            "api_bad_body",
        ),
        (
            "POST",
            "/publish/main",
            Some(API_KEY),
            &[b'x'; 2000],
            413,
            "api_too_big",
        ),
        (
            "GET",
            "/publish/main",
            Some(API_KEY),
            b"",
            405,
            "api_method",
        ),
        ("POST", "/rooms", Some(API_KEY), b"", 405, "api_method"),
    ];
    for (method, path, key, body, want, reason) in cases {
        let (code, text) = api(admin, method, path, key, "text/plain", body);
        assert_eq!(code, want, "{method} {path}: {text}");
        s.gw.wait_log(|l| l.contains(" api_refused ") && l.contains(&format!("reason={reason}")));
    }
    assert!(
        s.gw.logs().iter().all(|l| !l.contains(API_KEY)),
        "the key was logged"
    );
    // Without --api-key-file the API is not there.
    let open = Gateway::start(&["--admin-listen", "127.0.0.1:0"]);
    let (code, _) = api(
        open.admin_addr(),
        "POST",
        "/publish/main",
        Some(API_KEY),
        "text/plain",
        b"x",
    );
    assert_eq!(code, 404);
}

#[test]
fn an_api_publish_reaches_every_instance() {
    let redis = Redis::start(free_port(), None);
    let url = redis.url();
    let a = secured(&["--redis", &url, "--redis-timeout", "1s"]);
    let b = secured(&["--redis", &url, "--redis-timeout", "1s"]);
    for g in [&a.gw, &b.gw] {
        g.wait_log(|l| l.contains(" backplane_up "));
    }
    let token = mint(&format!(r#"{{"exp":{}}}"#, at(3600)));
    smol::block_on(async {
        let mut on_b = ws_connect(b.gw.addr, &format!("/ws/live?token={token}"), b"").await;
        // Both subscriptions are up once a client message crosses.
        let mut on_a = ws_connect(a.gw.addr, &format!("/ws/live?token={token}"), b"").await;
        on_a.send(Message::text("warm-up")).await.unwrap();
        assert_eq!(next_text(&mut on_b).await, "warm-up");
        assert_eq!(next_text(&mut on_a).await, "warm-up");
        let (code, body) = api(
            a.gw.admin_addr(),
            "POST",
            "/publish/live",
            Some(API_KEY),
            "text/plain",
            b"from the backend",
        );
        // Answered once Redis has numbered it into the room's shared order.
        assert_eq!(code, 200);
        assert_eq!(body, "{\"room\":\"live\",\"shared\":true}\n");
        assert_eq!(next_text(&mut on_b).await, "from the backend");
        assert_eq!(next_text(&mut on_a).await, "from the backend");
        // Redis stuck: the publish is not confirmed, and the backend is told so.
        redis.signal("-STOP");
        let (code, body) = api(
            a.gw.admin_addr(),
            "POST",
            "/publish/live",
            Some(API_KEY),
            "text/plain",
            b"stuck",
        );
        redis.signal("-CONT");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("did not confirm"), "{body}");
        a.gw.wait_log(|l| l.contains("api_refused") && l.contains("reason=api_redis_unconfirmed"));
    });
}
