//! HAProxy (Debian `haproxy`) in TCP mode as the load balancer in front of wsgate: with
//! `send-proxy` it speaks PROXY v1 like an AWS Classic Load Balancer, with `send-proxy-v2` it
//! speaks v2 like a Network Load Balancer. Clients chat through it, wsgate logs their real
//! addresses, and HAProxy's own health checks (TCP with a PROXY header; `GET /healthz` after a
//! v2 LOCAL header) pass without a warning in wsgate's log.
mod common;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use common::haproxy::Haproxy;
use common::{field, next_msg, next_text, raw, status, Gateway, Ws, WAIT};
use futures_lite::{FutureExt, StreamExt};
use smol::{Async, Timer};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connects a WebSocket client through `lb` on a socket we opened ourselves, and returns it
/// with the socket's local address: what HAProxy sees as the client, and so what wsgate must log.
async fn connect_via(gw: &Gateway, lb: SocketAddr, path: &str) -> (Ws, SocketAddr) {
    let s = Async::<TcpStream>::connect(lb)
        .await
        .expect("connect haproxy");
    let local = s.get_ref().local_addr().unwrap();
    let (ws, resp) = async_tungstenite::client_async(format!("ws://{lb}{path}"), s)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "WebSocket handshake through haproxy: {e}\nwsgate:\n{}",
                gw.logs().join("\n")
            )
        });
    assert_eq!(resp.status(), 101);
    (ws, local)
}

/// Sends Close 1000 and reads until the server's reply and its end of the connection.
async fn close_normally(mut ws: Ws) {
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.close(Some(bye)).await.unwrap();
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    drain
        .or(async {
            Timer::after(WAIT).await;
            panic!("the close handshake did not finish within {WAIT:?}")
        })
        .await;
}

/// Two clients chat through HAProxy; wsgate's open lines carry their addresses and `proxy=`.
fn chat_through_haproxy(server_opts: &str, version: &str, extra: &str) {
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    let lb = Haproxy::start(gw.addr, server_opts, extra);
    smol::block_on(async {
        let (mut a, a_addr) = connect_via(&gw, lb.addr, "/ws/lb").await;
        let (mut b, b_addr) = connect_via(&gw, lb.addr, "/ws/lb").await;
        for client in [a_addr, b_addr] {
            let client = client.to_string();
            let open = gw.wait_log(|l| l.contains(" open ") && field(l, "client") == Some(&client));
            assert_eq!(field(&open, "proxy"), Some(version), "{open}");
            assert_eq!(field(&open, "room"), Some("lb"), "{open}");
        }
        a.send(Message::text(format!("hello via {server_opts}")))
            .await
            .unwrap();
        for ws in [&mut a, &mut b] {
            assert_eq!(next_text(ws).await, format!("hello via {server_opts}"));
        }
        let bytes: Vec<u8> = (0..=255).collect();
        b.send(Message::binary(bytes.clone())).await.unwrap();
        for ws in [&mut a, &mut b] {
            assert_eq!(next_msg(ws).await, Message::binary(bytes.clone()));
        }
        close_normally(a).await;
        close_normally(b).await;
        for client in [a_addr, b_addr] {
            let client = client.to_string();
            let close =
                gw.wait_log(|l| l.contains(" close ") && field(l, "client") == Some(&client));
            assert_eq!(field(&close, "code"), Some("1000"), "{close}");
        }
    });
    let noisy: Vec<_> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(noisy.is_empty(), "unexpected warnings: {noisy:#?}");
}

#[test]
fn clb_like_send_proxy_v1_chat_logs_the_real_client() {
    chat_through_haproxy("send-proxy", "v1", "");
}

#[test]
fn nlb_like_send_proxy_v2_chat_logs_the_real_client() {
    chat_through_haproxy("send-proxy-v2", "v2", "");
}

/// Real v2 headers carry TLVs (an NLB adds 0xEA for PrivateLink); HAProxy adds a CRC32C
/// checksum and a unique id, which wsgate must step over.
#[test]
fn nlb_like_send_proxy_v2_with_tlvs_chat_logs_the_real_client() {
    chat_through_haproxy(
        "send-proxy-v2 proxy-v2-options crc32c,unique-id",
        "v2",
        "    unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt\n",
    );
}

/// What load balancers do to a target: TCP checks that send a PROXY header and hang up, and
/// HTTP checks of `/healthz`. Both pass, and wsgate logs no WARN or ERROR for them.
fn health_checks_through_haproxy(server_opts: &str) {
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    // HAProxy's own checks, every 100 ms: a TCP connect with a PROXY header on the `lb` server
    // (a CLB's TCP check), and `GET /healthz` after a v2 LOCAL header (an NLB's HTTP check).
    let nlb_http_check = format!(
        "
backend nlb_http_check
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host lb
    http-check expect status 200
    server gw {} send-proxy-v2 check check-send-proxy inter 100ms rise 1 fall 1
",
        gw.addr
    );
    let lb = Haproxy::start(
        gw.addr,
        &format!("{server_opts} check check-send-proxy inter 100ms rise 1 fall 1"),
        &nlb_http_check,
    );
    for (server, passed) in [
        ("lb/gw", "Layer4 check passed"),
        ("nlb_http_check/gw", "Layer7 check passed, code: 200"),
    ] {
        let prefix = format!("Health check for server {server} ");
        let first = lb.proc.wait_stderr(WAIT, |l| l.starts_with(&prefix));
        assert!(
            first.contains("succeeded") && first.contains(passed),
            "{first}\nwsgate:\n{}",
            gw.logs().join("\n")
        );
    }

    // A TCP connect-and-close through the frontend. HAProxy only opens its side (and sends the
    // header) if we stay long enough; its session log shows that it did (connect time >= 0).
    let mut reached = false;
    for wait_ms in [50, 200, 500, 1000, 2000] {
        let s = TcpStream::connect(lb.addr).unwrap();
        let port = s.local_addr().unwrap().port();
        std::thread::sleep(Duration::from_millis(wait_ms));
        drop(s);
        let session = lb.session_log(port);
        let timers = session.split_whitespace().nth(4).unwrap_or("");
        if timers.split('/').nth(1).is_some_and(|tc| tc != "-1") {
            reached = true;
            break;
        }
    }
    assert!(
        reached,
        "haproxy never connected to wsgate\n{}",
        lb.proc.transcript()
    );

    let resp = raw(lb.addr, b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n");
    assert_eq!(status(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert!(resp.ends_with(b"\r\n\r\nok\n"), "{resp:?}");

    // Let a few more checks run, then nothing in wsgate's log may be a warning or an error.
    std::thread::sleep(Duration::from_millis(500));
    let failed: Vec<_> = lb
        .proc
        .stderr()
        .into_iter()
        .filter(|l| l.contains("Health check") && !l.contains("succeeded"))
        .collect();
    assert!(failed.is_empty(), "failed health checks: {failed:#?}");
    let noisy: Vec<_> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(noisy.is_empty(), "health checks were logged as: {noisy:#?}");
}

#[test]
fn clb_like_health_checks_pass_quietly() {
    health_checks_through_haproxy("send-proxy");
}

#[test]
fn nlb_like_health_checks_pass_quietly() {
    health_checks_through_haproxy("send-proxy-v2");
}
