//! End-to-end smoke test of whichever binary `WSGATE_BIN` names (by default the one cargo
//! built), optionally under `WSGATE_RUNNER` (`qemu-aarch64-static` for the Graviton build):
//! a PROXY v2 header from an NLB, the handshake, two clients chatting, and `/healthz`.
mod common;
use async_tungstenite::tungstenite::Message;
use common::*;

#[test]
fn proxy_v2_handshake_chat_and_health() {
    let gw = Gateway::start(&["--proxy-protocol", "required"]);
    let nlb = |port: u16| {
        proxy_v2(
            format!("198.51.100.1:{port}").parse().unwrap(),
            "10.0.0.10:80".parse().unwrap(),
            &tlv_vpce("vpce-smoke"),
        )
    };
    smol::block_on(async {
        let mut a = ws_connect(gw.addr, "/ws/smoke", &nlb(1111)).await;
        let mut b = ws_connect(gw.addr, "/ws/smoke", &nlb(2222)).await;
        gw.wait_log(|l| l.contains(" open ") && l.contains("client=198.51.100.1:2222"));
        a.send(Message::text("from a")).await.unwrap();
        assert_eq!(next_text(&mut a).await, "from a");
        assert_eq!(next_text(&mut b).await, "from a");
        b.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(next_msg(&mut a).await, Message::binary(vec![1u8, 2, 3]));
    });
    let open = gw.wait_log(|l| l.contains(" open ") && l.contains("client=198.51.100.1:1111"));
    assert!(
        open.contains("proxy=v2") && open.contains("vpce=vpce-smoke"),
        "{open}"
    );
    let mut health = proxy_v2_local(0);
    health.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let resp = raw(gw.addr, &health);
    assert_eq!(status(&resp), 200);
    assert!(resp.ends_with(b"ok\n"));
}
