//! Recovery across instances (`--redis`), step by step, on a real `redis-server`: a room's
//! offsets are the same on every instance; a Socket.IO session whose instance was killed
//! with `-9` recovers on the other one (with and without an offset); a raw client resumes
//! there with `?since=`; an instance started after the messages fetches them from Redis;
//! Redis restarted without persistence, or a failover to a replica that missed the newest
//! writes, makes old offsets fail cleanly (`recovered` false, a new epoch, never a wrong or a
//! silently skipped message); bad `pid`s get a fresh session; session records lost by Redis
//! are written again.
mod common;
mod sio_common;
use common::redis::Redis;
use common::{free_port, next_text, ws_connect, Gateway, Ws};
use sio_common::{next_packet, send_text};

fn node(redis: &str) -> Gateway {
    let args = [
        "--redis",
        redis,
        "--redis-timeout",
        "1s",
        "--redis-backoff-min",
        "50ms",
        "--redis-backoff-max",
        "300ms",
    ];
    let gw = Gateway::start(&args);
    gw.wait_events("backplane_up", 1);
    gw
}

/// A `wsgate.offset` client of `room` (with `?since=`): its first frame, and the socket.
async fn raw(gw: &Gateway, room: &str, since: Option<&str>) -> (String, Ws) {
    let path = match since {
        Some(s) => format!("/ws/{room}?since={s}"),
        None => format!("/ws/{room}"),
    };
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{path}", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "wsgate.offset".parse().unwrap());
    let s = smol::Async::<std::net::TcpStream>::connect(gw.addr)
        .await
        .unwrap();
    let (mut ws, resp) = async_tungstenite::client_async(req, s).await.unwrap();
    assert_eq!(resp.status(), 101);
    let first = next_text(&mut ws).await;
    (first, ws)
}

/// `"offset":"…"` of a first frame.
fn offset_of(first: &str) -> String {
    let at = first.find("\"offset\":\"").expect("offset") + 10;
    first[at..].split('"').next().unwrap().to_string()
}

/// `<offset> <text>` frame → (offset, text).
fn split(frame: &str) -> (String, String) {
    let (o, t) = frame.split_once(' ').expect("offset prefix");
    (o.to_string(), t.to_string())
}

/// Publishes each text from a plain client on `gw` and waits for its echo.
async fn publish(gw: &Gateway, room: &str, texts: &[&str]) {
    let mut ws = ws_connect(gw.addr, &format!("/ws/{room}"), b"").await;
    for t in texts {
        send_text(&mut ws, t).await;
        assert_eq!(next_text(&mut ws).await, *t);
    }
}

/// A Socket.IO client (raw Engine.IO over WebSocket) of `room` that CONNECTs with `connect`;
/// returns the answer's packets up to and including the CONNECT answer, and the socket.
async fn sio(gw: &Gateway, room: &str, connect: &str) -> (Vec<String>, Ws) {
    let path = format!("/socket.io/?EIO=4&transport=websocket&room={room}");
    let mut ws = ws_connect(gw.addr, &path, b"").await;
    assert!(next_text(&mut ws).await.starts_with("0{"));
    send_text(&mut ws, connect).await;
    let mut got = Vec::new();
    loop {
        let p = next_packet(&mut ws).await;
        let done = p.starts_with("40");
        got.push(p);
        if done {
            return (got, ws);
        }
    }
}

/// `"key":"value"` of a CONNECT answer.
fn json_str(packet: &str, key: &str) -> String {
    let at = packet.find(&format!("\"{key}\":\"")).expect(key) + key.len() + 4;
    packet[at..].split('"').next().unwrap().to_string()
}

/// `42["chat message","text","<offset>"]` → (text, offset).
fn event(packet: &str) -> (String, String) {
    let body = packet
        .strip_prefix("42[\"chat message\",\"")
        .unwrap_or_else(|| panic!("{packet}"));
    let (text, rest) = body.split_once("\",\"").unwrap();
    (text.to_string(), rest.trim_end_matches("\"]").to_string())
}

#[test]
fn offsets_are_the_same_on_every_instance_and_a_raw_client_resumes_on_another() {
    let redis = Redis::start(free_port(), None);
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    smol::block_on(async {
        let (fa, mut ra) = raw(&a, "same", None).await;
        let (fb, mut rb) = raw(&b, "same", None).await;
        // A room nobody published in yet has one offset everywhere.
        assert_eq!(offset_of(&fa), offset_of(&fb), "{fa} {fb}");
        assert!(fa.contains("\"recovered\":false"));
        publish(&a, "same", &["one", "two"]).await;
        publish(&b, "same", &["three"]).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (x, y) = (next_text(&mut ra).await, next_text(&mut rb).await);
            assert_eq!(x, y, "the same frame, offset included, on both instances");
            seen.push(split(&x));
        }
        let texts: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        // A's client goes away after "one"; it comes back on B with A's offset.
        drop(ra);
        let (first, mut back) = raw(&b, "same", Some(&seen[0].0)).await;
        assert!(first.contains("\"recovered\":true"), "{first}");
        assert_eq!(offset_of(&first), seen[2].0);
        assert_eq!(next_text(&mut back).await, format!("{} two", seen[1].0));
        assert_eq!(next_text(&mut back).await, format!("{} three", seen[2].0));
    });
}

#[test]
fn a_session_whose_instance_was_killed_recovers_on_the_other_and_a_new_one_fetches_history() {
    let redis = Redis::start(free_port(), None);
    let mut a = node(&redis.url());
    let b = node(&redis.url());
    smol::block_on(async {
        // One client that got an event, one that never did.
        let (got, _c1) = sio(&a, "k", "40").await;
        let (sid1, pid1) = (json_str(&got[0], "sid"), json_str(&got[0], "pid"));
        let (got, _c2) = sio(&a, "k", "40").await;
        let (sid2, pid2) = (json_str(&got[0], "sid"), json_str(&got[0], "pid"));
        publish(&b, "k", &["seen"]).await;
        // Both get "seen" (c2 after `hi` of nobody: it joined last).
        let mut c1 = _c1;
        let seen = loop {
            let p = next_packet(&mut c1).await;
            if p.starts_with("42[\"chat message\"") {
                break event(&p);
            }
        };
        assert_eq!(seen.0, "seen");
        let _ = _c2;
        // c2 "never got an event": it recovers from its join.
        a.signal("KILL");
        a.wait_exit(common::WAIT);
        publish(&b, "k", &["missed 1", "missed 2"]).await;

        let back = format!(r#"40{{"pid":"{pid1}","offset":"{}"}}"#, seen.1);
        let (got, _) = sio(&b, "k", &back).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(event(&got[0]).0, "missed 1");
        assert_eq!(event(&got[1]).0, "missed 2");
        assert_eq!(json_str(&got[2], "sid"), sid1, "the same session");
        assert_eq!(json_str(&got[2], "pid"), pid1);

        // An instance started after all of it fetches what it never saw from Redis.
        let c = node(&redis.url());
        let back = format!(r#"40{{"pid":"{pid2}"}}"#);
        let (got, _) = sio(&c, "k", &back).await;
        // Everything after its join but its own `hi` (sent to the others only, on A, which
        // C knows from the member id the message carries): the three messages, then the
        // `hi` of c1's recovery.
        assert_eq!(got.len(), 5, "{got:?}");
        let texts: Vec<String> = got[..3].iter().map(|p| event(p).0).collect();
        assert_eq!(texts, ["seen", "missed 1", "missed 2"], "{got:?}");
        assert!(got[3].starts_with("42[\"hi\""), "{got:?}");
        assert_eq!(json_str(got.last().unwrap(), "sid"), sid2);
        let recovered = c.wait_log(|l| l.contains(" recovery "));
        assert!(recovered.contains("result=recovered"), "{recovered}");

        // A pid nobody handed out, or one of another room, gets a fresh session.
        for (room, packet) in [
            (
                "k",
                r#"40{"pid":"AAAAAAAAAAAAAAAAAAAAAA","offset":"1-1"}"#.to_string(),
            ),
            ("other", format!(r#"40{{"pid":"{pid1}"}}"#)),
            ("k", r#"40{"pid":"../../etc","offset":"1-1"}"#.to_string()),
        ] {
            let (got, _) = sio(&b, room, &packet).await;
            assert_eq!(got.len(), 1, "{got:?}");
            assert_ne!(json_str(&got[0], "pid"), pid1);
        }
    });
}

#[test]
fn redis_restarted_without_persistence_fails_old_offsets_cleanly_with_a_new_epoch() {
    let port = free_port();
    let mut redis = Redis::start(port, None);
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    smol::block_on(async {
        let (_, mut r) = raw(&a, "e", None).await;
        let (_, mut live) = raw(&b, "e", None).await;
        publish(&a, "e", &["old 1", "old 2"]).await;
        let (o1, _) = split(&next_text(&mut r).await);
        let (o2, _) = split(&next_text(&mut r).await);
        drop(r);
        redis.kill();
        redis = Redis::start(port, None);
        a.wait_events("backplane_up", 2);
        b.wait_events("backplane_up", 2);
        publish(&b, "e", &["new 1"]).await;
        // A member connected across the loss cannot know what it missed: told to reconnect
        // (1012), it resumes and learns `recovered: false`.
        for _ in 0..2 {
            let (_, t) = split(&next_text(&mut live).await);
            assert!(t.starts_with("old "), "{t}");
        }
        assert_eq!(common::close_code(&mut live).await, 1012);
        // The old epoch's offsets: never replayed across the loss, on either instance.
        for (i, (gw, since)) in [(&a, &o1), (&b, &o2)].into_iter().enumerate() {
            let (first, mut ws) = raw(gw, "e", Some(since)).await;
            assert!(first.contains("\"recovered\":false"), "{first}");
            let new = offset_of(&first);
            assert_ne!(
                new.split('-').next(),
                since.split('-').next(),
                "a new epoch"
            );
            // The new epoch's newest: "new 1", then the "after" of the round before.
            assert!(new.ends_with(&format!("-{}", i + 1)), "{new}");
            // Live from here: the next message, nothing before it.
            publish(&b, "e", &["after"]).await;
            let (_, text) = split(&next_text(&mut ws).await);
            assert_eq!(text, "after");
        }
        let _ = redis;
    });
}

#[test]
fn session_records_lost_by_redis_are_written_again_at_the_next_renewal() {
    let port = free_port();
    let mut redis = Redis::start(port, None);
    let url = redis.url();
    // A queue of 8, so a renewal of 40 records must wait for Redis between batches of 4.
    let args = [
        "--redis",
        &url,
        "--redis-queue",
        "8",
        "--recovery-window",
        "3s",
        "--redis-backoff-min",
        "50ms",
        "--redis-backoff-max",
        "300ms",
    ];
    let gw = Gateway::start(&args);
    gw.wait_events("backplane_up", 1);
    let count = |redis: &Redis| {
        let script = "return #redis.call('KEYS', ARGV[1])";
        let pattern = "wsgate:{burst}:p:*";
        let cmd = format!(
            "*4\r\n$4\r\nEVAL\r\n${}\r\n{script}\r\n$1\r\n0\r\n${}\r\n{pattern}\r\n",
            script.len(),
            pattern.len()
        );
        let reply = redis.command(&cmd, 1);
        reply
            .trim()
            .trim_start_matches(':')
            .parse::<usize>()
            .unwrap()
    };
    let wait_for = |redis: &Redis, n: usize| {
        let deadline = std::time::Instant::now() + common::WAIT;
        while count(redis) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} records",
                count(redis)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    smol::block_on(async {
        let mut held = Vec::new();
        for _ in 0..40 {
            held.push(sio(&gw, "burst", "40").await.1);
        }
        wait_for(&redis, 40);
        // Redis restarted without persistence: every record is gone...
        redis.kill();
        redis = Redis::start(port, None);
        gw.wait_events("backplane_up", 2);
        assert_eq!(count(&redis), 0);
        // ...and written again, whole, by the next renewal (every third of the 3 s window),
        // so these sessions can still recover on another instance.
        wait_for(&redis, 40);
        drop(held);
    });
}

/// `HGET key field` on `redis`, as text (empty for nil).
fn hget(redis: &Redis, key: &str, field: &str) -> String {
    let cmd = format!(
        "*3\r\n$4\r\nHGET\r\n${}\r\n{key}\r\n${}\r\n{field}\r\n",
        key.len(),
        field.len()
    );
    let reply = redis.command(&cmd, 1);
    if reply.starts_with("$-1") {
        return String::new();
    }
    // `$n\r\nvalue\r\n`: the value is on the second line.
    let reply = if reply.matches("\r\n").count() < 2 {
        redis.command(&cmd, 2)
    } else {
        reply
    };
    reply.split("\r\n").nth(1).unwrap_or_default().to_string()
}

/// Waits until `redis` has `want` as the room's newest seq.
fn wait_seq(redis: &Redis, room: &str, want: &str) {
    let key = format!("wsgate:{{{room}}}:m");
    let deadline = std::time::Instant::now() + common::WAIT;
    while hget(redis, &key, "q") != want {
        assert!(
            std::time::Instant::now() < deadline,
            "seq {want} never reached the replica"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_failover_to_a_replica_that_missed_writes_starts_a_new_epoch_never_a_silent_gap() {
    let primary = free_port();
    let mut a = Redis::start(primary, None);
    let gw = node(&a.url());
    smol::block_on(async {
        let (_, mut live) = raw(&gw, "f", None).await;
        publish(&gw, "f", &["one", "two"]).await;
        // A replica that has "one" and "two", then is cut off (it becomes a primary of its
        // own, as a failover would make it) before "three".
        let other = free_port();
        let b = Redis::start_replica(other, primary);
        wait_seq(&b, "f", "2");
        b.command("*3\r\n$9\r\nREPLICAOF\r\n$2\r\nNO\r\n$3\r\nONE\r\n", 1);
        publish(&gw, "f", &["three"]).await;
        let mut offsets = Vec::new();
        for want in ["one", "two", "three"] {
            let (o, t) = split(&next_text(&mut live).await);
            assert_eq!(t, want);
            offsets.push(o);
        }
        // The failover: the primary is gone, and the one that takes its address has the
        // replica's data, without "three".
        a.kill();
        let promoted = Redis::start_replica(primary, other);
        wait_seq(&promoted, "f", "2");
        promoted.command("*3\r\n$9\r\nREPLICAOF\r\n$2\r\nNO\r\n$3\r\nONE\r\n", 1);
        gw.wait_events("backplane_up", 2);
        // What the promoted primary holds: the room as it was at "two", written by the old one.
        assert_eq!(hget(&promoted, "wsgate:{f}:m", "q"), "2");
        assert!(!hget(&promoted, "wsgate:{f}:m", "r").is_empty());
        publish(&gw, "f", &["four"]).await;
        // "four" would be numbered 3 again, and skipped here as already seen: lost without a
        // word. The replication id makes it a new epoch instead: the live member is told to
        // resync, and a resume from "three" learns that it cannot be whole.
        assert_eq!(common::close_code(&mut live).await, 1012);
        let (first, _) = raw(&gw, "f", Some(&offsets[2])).await;
        assert!(first.contains("\"recovered\":false"), "{first}");
        let new = offset_of(&first);
        assert_ne!(
            new.split('-').next(),
            offsets[2].split('-').next(),
            "a new epoch"
        );
        assert!(new.ends_with("-1"), "{new}");
        drop((b, promoted));
    });
}
