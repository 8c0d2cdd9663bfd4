//! Graceful shutdown with real signals sent to the real process. SIGTERM: `/healthz` answers
//! 503 at once (main port and admin listener) while clients are still served for
//! `--drain-delay`; then every client gets Close 1001, and the process exits 0 within
//! `--shutdown-timeout`. SIGINT, or a second SIGTERM, exits at once (130 / 143).
mod common;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::AsyncReadExt;
use std::time::{Duration, Instant};

/// Slack on top of the configured waits for a loaded 2-core machine: an upper bound that only
/// catches a process that does not exit, not a slow one.
const SLACK: Duration = Duration::from_secs(10);

#[test]
fn sigterm_fails_healthz_serves_through_the_drain_then_closes_1001_and_exits_0() {
    let drain = Duration::from_secs(3);
    let mut gw = Gateway::start(&[
        "--drain-delay",
        "3s",
        "--shutdown-timeout",
        "10s",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    assert_eq!(http_get(gw.addr, "/healthz").0, 200);
    assert_eq!(http_get(admin, "/healthz").0, 200);
    smol::block_on(async {
        let mut a = ws_connect(gw.addr, "/ws/d", b"").await;
        let mut b = ws_connect(gw.addr, "/ws/d", b"").await;
        let sent = Instant::now();
        gw.signal("TERM");
        gw.wait_log(|l| l.contains(" draining "));
        // The load balancer's next health check fails at once, on both listeners.
        assert_eq!(http_get(gw.addr, "/healthz"), (503, "draining\n".into()));
        assert_eq!(http_get(admin, "/healthz"), (503, "draining\n".into()));
        assert_eq!(scrape(admin).get("wsgate_draining"), 1.0);
        // Connected clients are still served during the drain delay.
        a.send(Message::text("during the drain")).await.unwrap();
        assert_eq!(next_text(&mut a).await, "during the drain");
        assert_eq!(next_text(&mut b).await, "during the drain");
        assert!(
            gw.events("closing_clients").is_empty(),
            "the drain delay ended before the test could chat; logs: {:?}",
            gw.logs()
        );
        // Then both get Close 1001, not before the drain delay is over.
        for ws in [&mut a, &mut b] {
            assert_eq!(
                close_frame(ws).await,
                (1001, "server going away".to_string())
            );
        }
        assert!(sent.elapsed() >= drain, "{:?}", sent.elapsed());
        // Dropping the clients ends their sessions; the gateway need not wait any longer.
    });
    let code = gw.wait_exit(drain + Duration::from_secs(10) + SLACK);
    assert_eq!(code, Some(0), "logs: {:?}", gw.logs());
    // `stopped` is the last line; once it is read, so are all before it.
    gw.wait_log(|l| l.contains(" stopped "));
    let order: Vec<_> = ["draining", "closing_clients", "stopped"]
        .iter()
        .map(|e| {
            let pos = gw.logs().iter().position(|l| l.contains(&format!(" {e} ")));
            pos.unwrap_or_else(|| panic!("no {e} line: {:?}", gw.logs()))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{:?}", gw.logs());
    let stopped = &gw.events("stopped")[0];
    assert!(stopped.contains("left_open=0"), "{stopped}");
    let closes = gw.events("close");
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert!(closes
        .iter()
        .all(|l| l.contains("reason=going_away") && l.contains("code=1001")));
}

#[test]
fn shutdown_timeout_bounds_the_wait_for_a_client_that_ignores_the_close() {
    // The client never reads and never closes; --close-timeout would let its session linger
    // for a minute. --shutdown-timeout caps the wait at 1 s, and the exit is still 0.
    let mut gw = Gateway::start(&["--shutdown-timeout", "1s", "--close-timeout", "60s"]);
    let _mute = smol::block_on(async {
        let (code, head, s) = upgrade(gw.addr, b"", "/ws", "").await;
        assert_eq!(code, 101, "{head}");
        s
    });
    gw.wait_log(|l| l.contains(" open "));
    let sent = Instant::now();
    gw.signal("TERM");
    let code = gw.wait_exit(Duration::from_secs(1) + SLACK);
    assert_eq!(code, Some(0), "logs: {:?}", gw.logs());
    assert!(sent.elapsed() >= Duration::from_secs(1), "did not wait");
    let stopped = gw.wait_log(|l| l.contains(" stopped "));
    assert!(stopped.contains("left_open=1"), "{stopped}");
}

#[test]
fn sigint_exits_at_once_with_130() {
    let mut gw = Gateway::start(&["--drain-delay", "60s", "--shutdown-timeout", "60s"]);
    let mut s = smol::block_on(async {
        let (code, head, s) = upgrade(gw.addr, b"", "/ws", "").await;
        assert_eq!(code, 101, "{head}");
        s
    });
    gw.signal("INT");
    // Far sooner than the minute of drain and timeout.
    assert_eq!(gw.wait_exit(SLACK), Some(130), "logs: {:?}", gw.logs());
    // `exit_now` is the last line; once it is read, so are all before it.
    let line = gw.wait_log(|l| l.contains(" exit_now "));
    assert!(line.contains("signal=Int"), "{line}");
    assert!(gw.events("draining").is_empty(), "{:?}", gw.logs());
    // The client's connection went with the process (EOF or reset, no 1001 handshake).
    let mut rest = Vec::new();
    let _ = smol::block_on(s.read_to_end(&mut rest));
    assert!(parse_frames(&rest).iter().all(|(op, _)| *op != 0x8));
}

#[test]
fn a_second_sigterm_during_the_drain_exits_at_once_with_143() {
    let mut gw = Gateway::start(&[
        "--drain-delay",
        "60s",
        "--shutdown-timeout",
        "60s",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    let _client = smol::block_on(ws_connect(gw.addr, "/ws", b""));
    gw.signal("TERM");
    gw.wait_log(|l| l.contains(" draining "));
    assert_eq!(http_get(admin, "/healthz").0, 503);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(SLACK), Some(143), "logs: {:?}", gw.logs());
    let line = gw.wait_log(|l| l.contains(" exit_now "));
    assert!(line.contains("signal=Term"), "{line}");
    assert!(gw.events("closing_clients").is_empty(), "{:?}", gw.logs());
}

#[test]
fn a_second_sigterm_while_waiting_for_closes_exits_at_once_with_143() {
    // Past the drain delay, while waiting up to a minute for a client that ignores the Close.
    let mut gw = Gateway::start(&["--shutdown-timeout", "60s", "--close-timeout", "60s"]);
    let _mute = smol::block_on(async { upgrade(gw.addr, b"", "/ws", "").await.2 });
    gw.wait_log(|l| l.contains(" open "));
    gw.signal("TERM");
    gw.wait_log(|l| l.contains(" closing_clients "));
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(SLACK), Some(143), "logs: {:?}", gw.logs());
    gw.wait_log(|l| l.contains(" exit_now "));
    assert!(gw.events("stopped").is_empty(), "{:?}", gw.logs());
}
