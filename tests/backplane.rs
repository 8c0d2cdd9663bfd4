//! Two wsgate instances sharing rooms through a real `redis-server` (started by each test on
//! a free loopback port): both directions, plain and Socket.IO, rooms apart, order and no
//! duplicates; Redis killed, restarted, paused; wrong password and wrong host.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::redis::Redis;
use common::{free_port, next_msg, next_text, raw, scrape, ws_connect, Gateway, Ws, WAIT};
use futures_lite::future;
use sio_common::plain;
use std::process::Command;
use std::time::{Duration, Instant};

/// Test-friendly backplane timings: a dead Redis is noticed within 2 s, retries every ≤ 500 ms.
const FAST: [&str; 6] = [
    "--redis-timeout",
    "1s",
    "--redis-backoff-min",
    "50ms",
    "--redis-backoff-max",
    "500ms",
];

/// A wsgate instance on `redis_url` with an admin listener.
fn node(redis_url: &str, extra: &[&str]) -> Gateway {
    node_env(redis_url, extra, &[])
}

fn node_env(redis_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
    let mut args = vec!["--redis", redis_url, "--admin-listen", "127.0.0.1:0"];
    args.extend(FAST);
    args.extend(extra);
    Gateway::start_env("127.0.0.1:0", &args, env)
}

/// The value of the sample `name` on `/metrics` (the whole page parsed strictly).
fn metric(gw: &Gateway, name: &str) -> u64 {
    let m = scrape(gw.admin_addr());
    assert!(m.0.contains_key(name), "no {name} in {m:?}");
    m.get(name) as u64
}

fn dropped(gw: &Gateway) -> u64 {
    metric(gw, "wsgate_backplane_dropped_total{reason=\"queue_full\"}")
        + metric(gw, "wsgate_backplane_dropped_total{reason=\"down\"}")
}

/// Waits until `metric` satisfies `pred`.
fn wait_metric(gw: &Gateway, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = metric(gw, name);
        if pred(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} = {v} did not change as expected within {WAIT:?}; logs:\n{}",
            gw.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_event(l: &str, event: &str) -> bool {
    l.split(' ').nth(2) == Some(event)
}

/// Waits until `gw` has logged `backplane_up` `n` times.
fn wait_up(gw: &Gateway, n: usize) {
    gw.wait_events("backplane_up", n);
}

fn health(gw: &Gateway) -> String {
    let resp = raw(gw.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(common::status(&resp), 200, "healthz stays 200");
    let text = String::from_utf8_lossy(&resp);
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Connects a raw Engine.IO v4 / Socket.IO v5 client to `room` and joins `/`.
async fn sio_connect(gw: &Gateway, room: &str) -> Ws {
    let path = format!("/socket.io/?EIO=4&transport=websocket&room={room}");
    let mut ws = ws_connect(gw.addr, &path, b"").await;
    assert!(next_text(&mut ws).await.starts_with("0{"), "Engine.IO open");
    send(&mut ws, "40").await;
    assert!(
        next_text(&mut ws).await.starts_with("40{"),
        "Socket.IO connect"
    );
    ws
}

#[test]
fn two_instances_share_rooms_in_order_without_duplicates() {
    let redis = Redis::start(free_port(), None);
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    wait_up(&a, 1);
    wait_up(&b, 1);
    assert_eq!(health(&a), "ok\nbackplane: up\n");
    smol::block_on(async {
        let mut a1 = ws_connect(a.addr, "/ws/lobby", b"").await;
        let mut b1 = ws_connect(b.addr, "/ws/lobby", b"").await;
        let mut a_other = ws_connect(a.addr, "/ws/other", b"").await;
        let mut b_other = ws_connect(b.addr, "/ws/other", b"").await;
        send(&mut a1, "from A").await;
        assert_eq!(next_text(&mut a1).await, "from A");
        assert_eq!(next_text(&mut b1).await, "from A");
        send(&mut b1, "from B ✓").await;
        assert_eq!(next_text(&mut b1).await, "from B ✓");
        assert_eq!(next_text(&mut a1).await, "from B ✓");
        let bin = vec![0u8, 1, b'\r', b'\n', 255];
        a1.send(Message::binary(bin.clone())).await.unwrap();
        for ws in [&mut a1, &mut b1] {
            assert_eq!(next_msg(ws).await, Message::binary(bin.clone()));
        }
        // 200 in order, each once, on both instances.
        for i in 0..200 {
            send(&mut a1, &format!("seq {i}")).await;
        }
        for ws in [&mut b1, &mut a1] {
            for i in 0..200 {
                assert_eq!(next_text(ws).await, format!("seq {i}"));
            }
        }
        // B's reply follows all of them through Redis; a copy of A's own messages coming back
        // (or a second one on B) would arrive before it.
        send(&mut b1, "end").await;
        assert_eq!(next_text(&mut b1).await, "end");
        assert_eq!(next_text(&mut a1).await, "end");
        // The other room saw none of it: its first message is its own.
        send(&mut b_other, "other room").await;
        assert_eq!(next_text(&mut b_other).await, "other room");
        assert_eq!(next_text(&mut a_other).await, "other room");
    });
    wait_metric(&a, "wsgate_backplane_published_total", |n| n == 202);
    // Counters move just after the delivery a client sees: wait for them.
    wait_metric(&b, "wsgate_backplane_received_total", |n| n == 202);
    wait_metric(&a, "wsgate_backplane_received_total", |n| n == 3);
    assert_eq!(dropped(&a) + dropped(&b), 0);
}

#[test]
fn socket_io_events_cross_instances_with_the_bridging_rules() {
    let redis = Redis::start(free_port(), None);
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    wait_up(&a, 1);
    wait_up(&b, 1);
    smol::block_on(async {
        let mut plain_b = ws_connect(b.addr, "/ws/mix", b"").await;
        let mut sio_b = sio_connect(&b, "mix").await;
        // sio_b's own `hi` has reached A (no one there yet) before sio_a joins.
        wait_metric(&a, "wsgate_backplane_received_total", |n| n == 1);
        let mut sio_a = sio_connect(&a, "mix").await;
        // The newcomer's `hi` goes to the others, on the other instance too.
        assert_eq!(plain(&next_text(&mut sio_b).await), r#"42["hi"]"#);
        let chat = r#"42["chat message","hé \"ü\" ✓"]"#;
        send(&mut sio_a, chat).await;
        assert_eq!(plain(&next_text(&mut sio_a).await), chat);
        assert_eq!(plain(&next_text(&mut sio_b).await), chat);
        // B recomputes the plain text from the arguments.
        assert_eq!(next_text(&mut plain_b).await, "hé \"ü\" ✓");
        // Other events stay among Socket.IO clients.
        send(&mut sio_a, r#"42["typing","x"]"#).await;
        assert_eq!(plain(&next_text(&mut sio_b).await), r#"42["typing","x"]"#);
        send(&mut plain_b, "plain from B").await;
        assert_eq!(next_text(&mut plain_b).await, "plain from B");
        let want = r#"42["chat message","plain from B"]"#;
        assert_eq!(plain(&next_text(&mut sio_b).await), want);
        loop {
            // sio_a's own `typing` comes first.
            let m = plain(&next_text(&mut sio_a).await);
            if m != r#"42["typing","x"]"# {
                assert_eq!(m, want);
                break;
            }
        }
    });
}

#[test]
fn redis_killed_then_restarted_local_rooms_keep_working_and_sharing_resumes() {
    let port = free_port();
    let mut redis = Redis::start(port, None);
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    wait_up(&a, 1);
    wait_up(&b, 1);
    smol::block_on(async {
        let mut a1 = ws_connect(a.addr, "/ws/r", b"").await;
        let mut a2 = ws_connect(a.addr, "/ws/r", b"").await;
        let mut b1 = ws_connect(b.addr, "/ws/r", b"").await;
        let mut b2 = ws_connect(b.addr, "/ws/r", b"").await;
        send(&mut a1, "before").await;
        for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
            assert_eq!(next_text(ws).await, "before");
        }

        redis.kill();
        for gw in [&a, &b] {
            // Both connections have seen the end (a publish written between Redis's FIN and
            // its noticing would be lost without being counted).
            wait_metric(gw, "wsgate_backplane_failures_total", |n| n >= 2);
            let down = gw.wait_log(|l| is_event(l, "backplane_down"));
            assert!(down.contains(&format!("redis=127.0.0.1:{port}")), "{down}");
            assert_eq!(health(gw), "ok\nbackplane: down\n");
            assert_eq!(metric(gw, "wsgate_backplane_up"), 0);
        }
        // Each instance still serves its own rooms.
        send(&mut a1, "local on A").await;
        assert_eq!(next_text(&mut a1).await, "local on A");
        assert_eq!(next_text(&mut a2).await, "local on A");
        send(&mut b2, "local on B").await;
        assert_eq!(next_text(&mut b1).await, "local on B");
        assert_eq!(next_text(&mut b2).await, "local on B");
        // A's publish while down is counted as dropped (just after its local delivery).
        wait_metric(&a, "wsgate_backplane_dropped_total{reason=\"down\"}", |n| {
            n >= 1
        });

        // Same port, no wsgate restart.
        let restarted = Instant::now();
        let _redis = Redis::start(port, None);
        wait_up(&a, 2);
        wait_up(&b, 2);
        let took = restarted.elapsed();
        assert!(took < Duration::from_secs(5), "reconnected after {took:?}");
        let up = a.events("backplane_up").pop().unwrap();
        assert!(up.contains("down_for="), "{up}");
        send(&mut a2, "after restart").await;
        assert_eq!(next_text(&mut a1).await, "after restart");
        assert_eq!(next_text(&mut a2).await, "after restart");
        // At-most-once: A's message from the outage was not delivered late; this is next.
        assert_eq!(next_text(&mut b1).await, "after restart");
        assert_eq!(next_text(&mut b2).await, "after restart");
        send(&mut b1, "and back").await;
        assert_eq!(next_text(&mut a1).await, "and back");
        // Logged once per change (and once per new reason), not once per retry.
        let downs = a.events("backplane_down");
        assert!(downs.len() <= 2, "{downs:#?}");
    });
}

#[test]
fn wrong_password_is_logged_and_retried_never_shown() {
    let port = free_port();
    let redis = Redis::start(port, Some("pw-zero-0a1b"));
    let url = redis.url();
    // From the environment; in the URL (which wins over the environment); none at all.
    let env = node_env(&url, &[], &[("WSGATE_REDIS_PASSWORD", "pw-one-2c3d")]);
    let in_url = format!("redis://:pw-one-2c3d@127.0.0.1:{port}");
    let both = node_env(&in_url, &[], &[("WSGATE_REDIS_PASSWORD", "pw-two-4e5f")]);
    let none = node(&url, &[]);
    for gw in [&env, &both] {
        let down = gw.wait_log(|l| is_event(l, "backplane_down"));
        assert!(
            down.contains("AUTH refused: WRONGPASS") && down.contains(&format!("127.0.0.1:{port}")),
            "{down}"
        );
        // It keeps retrying, logging nothing more for the same reason.
        let seen = metric(gw, "wsgate_backplane_failures_total");
        wait_metric(gw, "wsgate_backplane_failures_total", |n| n >= seen + 4);
        assert_eq!(gw.events("backplane_down").len(), 1);
    }
    let down = none.wait_log(|l| is_event(l, "backplane_down"));
    assert!(
        down.contains("NOAUTH") && down.contains("WSGATE_REDIS_PASSWORD"),
        "{down}"
    );
    wait_metric(&none, "wsgate_backplane_failures_total", |n| n >= 4);
    assert_eq!(none.events("backplane_down").len(), 1);
    // The operator fixes Redis's side: the instances come up without a restart.
    let reply = redis.command(
        "*2\r\n$4\r\nAUTH\r\n$12\r\npw-zero-0a1b\r\n\
         *4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$11\r\npw-one-2c3d\r\n",
        2,
    );
    assert_eq!(reply, "+OK\r\n+OK\r\n");
    wait_up(&env, 1);
    wait_up(&both, 1);
    assert_eq!(metric(&both, "wsgate_backplane_up"), 1);
    for gw in [&env, &both, &none] {
        for l in gw.logs() {
            assert!(!l.contains("pw-"), "a password in the log: {l}");
        }
    }
}

#[test]
fn wrong_host_is_logged_and_retried_until_redis_is_there() {
    let port = free_port(); // nobody listens here yet
    let url = format!("redis://127.0.0.1:{port}");
    let a = node(&url, &[]);
    let down = a.wait_log(|l| is_event(l, "backplane_down"));
    assert!(
        down.contains(&format!("redis=127.0.0.1:{port}")) && down.contains("connect:"),
        "{down}"
    );
    wait_metric(&a, "wsgate_backplane_failures_total", |n| n >= 6);
    assert_eq!(health(&a), "ok\nbackplane: down\n");
    // A name that does not resolve is a clear line too, not a crash.
    let nowhere = node("redis://nowhere.invalid:6379", &[]);
    let line = nowhere.wait_log(|l| is_event(l, "backplane_down"));
    assert!(line.contains("redis=nowhere.invalid:6379"), "{line}");
    wait_metric(&nowhere, "wsgate_backplane_failures_total", |n| n >= 4);
    // Redis appears: the retry finds it.
    let _redis = Redis::start(port, None);
    wait_up(&a, 1);
    assert_eq!(health(&a), "ok\nbackplane: up\n");
}

#[test]
fn without_history_a_paused_redis_does_not_stall_local_fanout_and_drops_are_counted() {
    // History off: plain pub/sub, local members first (no shared order to wait for).
    let redis = Redis::start(free_port(), None);
    let a = node(
        &redis.url(),
        &["--redis-queue", "64", "--recovery-window", "0"],
    );
    let b = node(&redis.url(), &["--recovery-window", "0"]);
    wait_up(&a, 1);
    wait_up(&b, 1);
    smol::block_on(async {
        let mut a1 = ws_connect(a.addr, "/ws/flood", b"").await;
        let mut a2 = ws_connect(a.addr, "/ws/flood", b"").await;
        redis.signal("-STOP");
        // 32 KiB messages until the kernel's socket buffers and the queue of 64 are full.
        let body = "x".repeat(32 * 1024);
        let started = Instant::now();
        let mut sent = 0;
        while dropped(&a) == 0 {
            assert!(sent < 20_000, "nothing dropped after {sent} messages");
            for _ in 0..64 {
                send(&mut a1, &format!("{sent} {body}")).await;
                let want = format!("{sent} {body}");
                // Both members get every message while Redis is stuck.
                let (m1, m2) = future::zip(next_text(&mut a1), next_text(&mut a2)).await;
                assert!(m1 == want && m2 == want, "message {sent} out of order");
                sent += 1;
            }
        }
        let took = started.elapsed();
        eprintln!("paused redis: {sent} local messages of 32 KiB in {took:?}, drops counted");
        // The stuck connection is noticed and reset.
        let down = a.wait_log(|l| is_event(l, "backplane_down"));
        assert!(down.contains("no reply from Redis"), "{down}");
        redis.signal("-CONT");
        wait_up(&a, 2);
        wait_metric(&a, "wsgate_backplane_up", |v| v == 1);
        wait_metric(&b, "wsgate_backplane_up", |v| v == 1);
        // Sharing works again.
        let mut a3 = ws_connect(a.addr, "/ws/after", b"").await;
        let mut b1 = ws_connect(b.addr, "/ws/after", b"").await;
        send(&mut a3, "resumed").await;
        assert_eq!(next_text(&mut b1).await, "resumed");
    });
}

#[test]
fn a_paused_redis_holds_the_shared_order_for_at_most_two_timeouts_then_rooms_go_on_here() {
    let redis = Redis::start(free_port(), None);
    let a = node(&redis.url(), &[]);
    wait_up(&a, 1);
    smol::block_on(async {
        let mut a1 = ws_connect(a.addr, "/ws/paused", b"").await;
        let mut a2 = ws_connect(a.addr, "/ws/paused", b"").await;
        send(&mut a1, "before").await;
        assert_eq!(next_text(&mut a1).await, "before");
        assert_eq!(next_text(&mut a2).await, "before");
        redis.signal("-STOP");
        let stopped = Instant::now();
        // Redis numbers every message of the room: while it is stuck, nobody gets one.
        send(&mut a1, "stuck").await;
        a.wait_log(|l| is_event(l, "backplane_down"));
        let held = stopped.elapsed();
        // `--redis-timeout 1s`: a PING after 1 s of silence, the reset after another.
        assert!(held < Duration::from_secs(4), "stalled for {held:?}");
        // Then the room goes on here, numbering its own messages.
        send(&mut a1, "local").await;
        assert_eq!(next_text(&mut a1).await, "local");
        assert_eq!(next_text(&mut a2).await, "local");
        // The message Redis never answered for is counted as not delivered.
        wait_metric(&a, "wsgate_backplane_dropped_total{reason=\"down\"}", |n| {
            n >= 1
        });
        redis.signal("-CONT");
        wait_up(&a, 2);
        wait_metric(&a, "wsgate_backplane_up", |v| v == 1);
        send(&mut a2, "shared again").await;
        for ws in [&mut a1, &mut a2] {
            let mut got = next_text(ws).await;
            // Bytes written before the reset may still be read by Redis once it runs again:
            // then "stuck" is numbered late, before what follows it.
            if got == "stuck" {
                got = next_text(ws).await;
            }
            assert_eq!(got, "shared again");
        }
        eprintln!("paused redis: room held for {held:?}");
    });
}

#[test]
fn load_tool_with_subscribers_on_one_instance_and_publishers_on_the_other() {
    let redis = Redis::start(free_port(), None);
    let a = node(&redis.url(), &[]);
    let b = node(&redis.url(), &[]);
    wait_up(&a, 1);
    wait_up(&b, 1);
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate-load"))
        .args(["fanout", "--url", &format!("ws://{}/ws/load", a.addr)])
        .args(["--publish-url", &format!("ws://{}/ws/load", b.addr)])
        .args(["--clients", "20", "--publishers", "2", "--rate", "200"])
        .args(["--duration", "1s", "--drain", "2s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let num = |key: &str| -> u64 {
        let at = json.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
        json[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    assert_eq!(num("connected"), 22, "{json}");
    assert!(num("sent") > 150, "{json}");
    // Every subscriber on A got every message published on B, once and in order.
    assert_eq!(num("deliveries"), num("sent") * 22, "{json}");
    for k in [
        "lost",
        "duplicated",
        "out_of_order",
        "foreign",
        "disconnected",
    ] {
        assert_eq!(num(k), 0, "{k}: {json}");
    }
    assert!(
        json.contains(&format!("\"publish_addr\":\"{}\"", b.addr)),
        "{json}"
    );
    wait_metric(&a, "wsgate_backplane_received_total", |n| n == num("sent"));
}
