//! A Socket.IO session that has not connected to "/" yet (no `40`) is in the hub's lobby, so
//! SIGTERM reaches it: Close 1001 at once, not a reset after --shutdown-timeout.
mod common;
use common::*;
use futures_lite::{FutureExt, StreamExt};
use std::time::{Duration, Instant};

#[test]
fn socketio_session_without_namespace_gets_1001_on_sigterm() {
    let mut gw = Gateway::start(&["--shutdown-timeout", "5s"]);
    let mut ws = smol::block_on(ws_connect(
        gw.addr,
        "/socket.io/?EIO=4&transport=websocket",
        b"",
    ));
    smol::block_on(next_text(&mut ws)); // Engine.IO open packet; we never send "40"
    gw.wait_log(|l| l.contains(" open "));
    let t = Instant::now();
    gw.signal("TERM");
    let got = smol::block_on(async {
        loop {
            let m = ws
                .next()
                .or(async {
                    smol::Timer::after(Duration::from_secs(8)).await;
                    None
                })
                .await;
            match m {
                Some(Ok(async_tungstenite::tungstenite::Message::Close(f))) => {
                    break format!("{f:?}")
                }
                Some(Ok(_)) => continue,
                other => break format!("{other:?}"),
            }
        }
    });
    // Observed on main 60516cf: got = Some(Err(Protocol(ResetWithoutClosingHandshake))) after 5.0 s
    assert!(got.contains("Away"), "{got} after {:?}", t.elapsed());
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0));
}
