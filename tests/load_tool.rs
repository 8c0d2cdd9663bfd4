//! End to end: the `wsgate-load` binary against a small broadcast server started here on
//! 127.0.0.1:0. The server decodes PROXY headers with the `ppp` crate (an independent decoder),
//! records who connected, can speak the Socket.IO handshake, and can drop or duplicate every
//! n-th broadcast so the tool's loss and duplicate counts are checked against known faults.
//! Each test asserts on the JSON line the tool prints last. Nothing here asserts on speed.

use std::{
    net::{SocketAddr, TcpListener},
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use async_tungstenite::{
    tungstenite::{
        handshake::server::{Request, Response},
        Message,
    },
    WebSocketStream,
};
use futures_lite::{AsyncReadExt, StreamExt};
use smol::{Async, Timer};

/// How the test server behaves.
#[derive(Clone, Copy, Default)]
struct Opts {
    /// Expect a PROXY v1 or v2 header first and decode it with `ppp`.
    proxy: bool,
    /// Speak the Engine.IO/Socket.IO handshake and ping every 100 ms.
    socketio: bool,
    /// Drop every n-th broadcast (0: never).
    drop_every: u64,
    /// Send every n-th broadcast twice (0: never).
    dup_every: u64,
}

/// One accepted connection as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    peer: SocketAddr,
    /// Source and destination from the PROXY header.
    proxy: Option<(SocketAddr, SocketAddr)>,
    path: String,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    pongs: Arc<AtomicU64>,
}

type Outbox = async_channel::Sender<Message>;

fn start(opts: Opts) -> Server {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pongs = Arc::new(AtomicU64::new(0));
    let members: Arc<Mutex<Vec<Outbox>>> = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    let (s, p) = (seen.clone(), pongs.clone());
    smol::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let (seen, pongs, members, counter) =
                (s.clone(), p.clone(), members.clone(), counter.clone());
            smol::spawn(async move {
                let _ = serve(stream, peer, opts, seen, pongs, members, counter).await;
            })
            .detach();
        }
    })
    .detach();
    Server { addr, seen, pongs }
}

/// Reads a PROXY header byte-exactly (so the HTTP request stays in the socket) and decodes it.
async fn read_proxy(stream: &mut Async<std::net::TcpStream>) -> (SocketAddr, SocketAddr) {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await.unwrap();
    if first[0] == b'P' {
        let mut line = vec![first[0]];
        while !line.ends_with(b"\r\n") {
            stream.read_exact(&mut first).await.unwrap();
            line.push(first[0]);
        }
        let h = ppp::v1::Header::try_from(std::str::from_utf8(&line).unwrap()).unwrap();
        match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => (
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            other => panic!("unexpected v1 addresses {other:?}"),
        }
    } else {
        let mut head = vec![0u8; 16];
        head[0] = first[0];
        stream.read_exact(&mut head[1..]).await.unwrap();
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        head.resize(16 + len, 0);
        stream.read_exact(&mut head[16..]).await.unwrap();
        let h = ppp::v2::Header::try_from(&head[..]).unwrap();
        match h.addresses {
            ppp::v2::Addresses::IPv4(a) => (
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            ),
            other => panic!("unexpected v2 addresses {other:?}"),
        }
    }
}

#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
async fn serve(
    mut stream: Async<std::net::TcpStream>,
    peer: SocketAddr,
    opts: Opts,
    seen: Arc<Mutex<Vec<Seen>>>,
    pongs: Arc<AtomicU64>,
    members: Arc<Mutex<Vec<Outbox>>>,
    counter: Arc<AtomicU64>,
) -> Option<()> {
    let proxy = if opts.proxy {
        Some(read_proxy(&mut stream).await)
    } else {
        None
    };
    let path = Arc::new(Mutex::new(String::new()));
    let p = path.clone();
    let ws: WebSocketStream<_> =
        async_tungstenite::accept_hdr_async(stream, move |req: &Request, resp: Response| {
            *p.lock().unwrap() = req.uri().to_string();
            Ok(resp)
        })
        .await
        .ok()?;
    let path = path.lock().unwrap().clone();
    seen.lock().unwrap().push(Seen { peer, proxy, path });

    let (out, outbox) = async_channel::unbounded::<Message>();
    members.lock().unwrap().push(out.clone());
    let (mut tx, mut rx) = ws.split();
    let writer = smol::spawn(async move {
        while let Ok(m) = outbox.recv().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let pinger = opts.socketio.then(|| {
        let out = out.clone();
        smol::spawn(async move {
            out.send(Message::text(r#"0{"sid":"t","upgrades":[],"pingInterval":100,"pingTimeout":1000,"maxPayload":1000000}"#)).await.ok();
            loop {
                Timer::after(Duration::from_millis(100)).await;
                if out.send(Message::text("2")).await.is_err() {
                    break;
                }
            }
        })
    });
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(text) = msg else { continue };
        if opts.socketio {
            match text.as_str() {
                "40" => {
                    out.send(Message::text(r#"40{"sid":"s"}"#)).await.ok()?;
                    continue;
                }
                "3" => {
                    pongs.fetch_add(1, Relaxed);
                    continue;
                }
                _ => {}
            }
        }
        let n = counter.fetch_add(1, Relaxed) + 1;
        if opts.drop_every > 0 && n % opts.drop_every == 0 {
            continue;
        }
        let times = if opts.dup_every > 0 && n % opts.dup_every == 0 {
            2
        } else {
            1
        };
        let all: Vec<Outbox> = members.lock().unwrap().clone();
        for _ in 0..times {
            for m in &all {
                let _ = m.try_send(Message::Text(text.clone()));
            }
        }
    }
    drop(pinger);
    drop(writer);
    Some(())
}

/// Runs the tool with `args`; returns its exit code and its last stdout line.
fn load(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate-load"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap_or("").to_owned();
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not JSON: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), last)
}

/// The unsigned integer value of `"key":` at the top level of `json` (first occurrence).
fn field(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a count in {json}"))
}

#[test]
fn fanout_counts_every_delivery_once_and_in_order() {
    let s = start(Opts::default());
    let url = format!("ws://{}/ws", s.addr);
    let (code, j) = load(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "20",
        "--publishers",
        "2",
        "--rate",
        "100,200",
        "--duration",
        "1s",
        "--drain",
        "1s",
    ]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(field(&j, "connected"), 22);
    // The top level is the best step; every step expects each message at all 22 members.
    assert!(field(&j, "sent") > 150, "{j}");
    assert_eq!(field(&j, "expected"), field(&j, "sent") * 22, "{j}");
    assert_eq!(field(&j, "deliveries"), field(&j, "expected"), "{j}");
    assert!(
        j.contains(r#""steps":[{"rate":100,"#) && j.contains(r#"},{"rate":200,"#),
        "{j}"
    );
    for k in [
        "lost",
        "duplicated",
        "out_of_order",
        "disconnected",
        "foreign",
    ] {
        assert_eq!(field(&j, k), 0, "{k}: {j}");
    }
    assert!(
        !j.contains("\"lost\":1") && j.contains("\"latency_ms\":{\"p50\":"),
        "{j}"
    );
}

#[test]
fn fanout_reports_what_the_server_dropped_and_duplicated() {
    // About 300 messages to 10 members: every 50th dropped, every 70th sent twice.
    let s = start(Opts {
        drop_every: 50,
        dup_every: 70,
        ..Opts::default()
    });
    let url = format!("ws://{}/ws", s.addr);
    let (code, j) = load(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "9",
        "--publishers",
        "1",
        "--rate",
        "300",
        "--duration",
        "1s",
        "--drain",
        "500ms",
    ]);
    assert_eq!(code, 0, "{j}");
    let sent = field(&j, "sent");
    assert!(sent > 250, "{j}");
    assert_eq!(field(&j, "expected"), sent * 10, "{j}");
    assert_eq!(field(&j, "lost"), sent / 50 * 10, "{j}");
    assert_eq!(field(&j, "duplicated"), sent / 70 * 10, "{j}");
    assert_eq!(field(&j, "out_of_order"), 0, "{j}");
    assert!(j.contains("\"keeping_up\":false"), "{j}");
}

#[test]
fn proxy_v1_headers_carry_distinct_synthetic_clients() {
    let s = start(Opts {
        proxy: true,
        ..Opts::default()
    });
    let url = format!("ws://{}/ws", s.addr);
    let (code, j) = load(&[
        "idle",
        "--url",
        &url,
        "--clients",
        "5",
        "--hold",
        "100ms",
        "--proxy",
        "v1",
    ]);
    assert_eq!((code, field(&j, "connected")), (0, 5), "{j}");
    let mut seen = s.seen.lock().unwrap().clone();
    seen.sort_by_key(|c| c.proxy.map(|p| p.0));
    let sources: Vec<String> = seen
        .iter()
        .map(|c| c.proxy.unwrap().0.to_string())
        .collect();
    assert_eq!(
        sources,
        [
            "198.18.0.1:1024",
            "198.18.0.2:1025",
            "198.18.0.3:1026",
            "198.18.0.4:1027",
            "198.18.0.5:1028"
        ]
    );
    assert!(seen
        .iter()
        .all(|c| c.proxy.unwrap().1 == s.addr && c.path == "/ws"));
}

#[test]
fn proxy_v2_headers_decode_and_fanout_works_behind_them() {
    let s = start(Opts {
        proxy: true,
        ..Opts::default()
    });
    let url = format!("ws://{}/ws", s.addr);
    let (code, j) = load(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "5",
        "--rate",
        "50",
        "--duration",
        "500ms",
        "--proxy",
        "v2",
    ]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(field(&j, "lost"), 0, "{j}");
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    assert!(seen
        .iter()
        .all(|c| c.proxy.unwrap().0.to_string().starts_with("198.18.0.")
            && c.proxy.unwrap().1 == s.addr));
}

#[test]
fn source_ips_spread_connections_round_robin() {
    let s = start(Opts::default());
    let url = format!("ws://{}/ws", s.addr);
    let (code, j) = load(&[
        "idle",
        "--url",
        &url,
        "--clients",
        "6",
        "--hold",
        "100ms",
        "--source-ips",
        "127.0.0.2-127.0.0.4",
    ]);
    assert_eq!((code, field(&j, "connected")), (0, 6), "{j}");
    let mut ips: Vec<String> = s
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.peer.ip().to_string())
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        [
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.4"
        ]
    );
}

#[test]
fn rooms_are_paths_for_raw() {
    let s = start(Opts::default());
    let url = format!("ws://{}/ws", s.addr);
    // This server ignores rooms, so members see other rooms' messages: counted as foreign.
    let (code, j) = load(&[
        "fanout",
        "--url",
        &url,
        "--clients",
        "4",
        "--publishers",
        "2",
        "--rooms",
        "2",
        "--rate",
        "20",
        "--duration",
        "500ms",
    ]);
    assert_eq!(code, 0, "{j}");
    let mut paths: Vec<String> = s
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.path.clone())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/ws/room-0",
            "/ws/room-0",
            "/ws/room-0",
            "/ws/room-1",
            "/ws/room-1",
            "/ws/room-1"
        ]
    );
    assert_eq!(field(&j, "lost"), 0, "{j}");
    assert_eq!(field(&j, "foreign"), field(&j, "deliveries"), "{j}");
}

#[test]
fn socketio_handshake_pongs_and_events() {
    let s = start(Opts {
        socketio: true,
        ..Opts::default()
    });
    let url = format!("ws://{}/", s.addr);
    let (code, j) = load(&[
        "fanout",
        "--url",
        &url,
        "--protocol",
        "socketio",
        "--clients",
        "5",
        "--rate",
        "40",
        "--duration",
        "1s",
    ]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(field(&j, "expected"), field(&j, "sent") * 6, "{j}");
    assert_eq!(field(&j, "deliveries"), field(&j, "expected"), "{j}");
    assert_eq!(field(&j, "lost"), 0, "{j}");
    assert!(
        s.pongs.load(Relaxed) >= 6,
        "pings at 100 ms must be answered"
    );
    assert!(s
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|c| c.path == "/socket.io/?EIO=4&transport=websocket"));
}

#[test]
fn churn_closes_every_cycle_cleanly() {
    let s = start(Opts::default());
    let url = format!("ws://{}/ws", s.addr);
    let pid = std::process::id().to_string();
    let (code, j) = load(&[
        "churn", "--url", &url, "--rate", "200", "--cycles", "40", "--settle", "100ms", "--pid",
        &pid,
    ]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(
        (field(&j, "cycles"), field(&j, "ok"), field(&j, "errors")),
        (40, 40, 0),
        "{j}"
    );
    assert!(
        field(&j, "fds_before") > 0 && field(&j, "rss_kb_after") > 0,
        "{j}"
    );
    assert_eq!(s.seen.lock().unwrap().len(), 40);
}

#[test]
fn refuses_a_target_off_this_machine() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate-load"))
        .args(["idle", "--url", "ws://192.0.2.1:80/ws", "--clients", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
    assert!(out.stdout.is_empty());
}

#[test]
fn reports_failures_by_reason() {
    // A port with nothing listening: every connect is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let (code, j) = load(&["idle", "--url", &url, "--clients", "3", "--hold", "0s"]);
    assert_eq!(code, 2, "{j}");
    assert!(j.contains("connect: Connection refused=3"), "{j}");
}
