//! The chaos test of recovery across instances: two wsgate instances on one real
//! `redis-server`, behind HAProxy round robin (TCP, PROXY v2, with `/healthz` checks), with stock
//! `socket.io-client`s (polling then WebSocket, WebSocket only, polling only), raw `ws`
//! clients resuming with `wsgate.offset`, and one publisher of numbered messages, all in one
//! room (tests/node/chaos.js). Meanwhile one instance is killed with `-9` and started again,
//! the other is drained (SIGTERM) and started again, and every client connection is cut.
//!
//! It asserts that every client ends with exactly the messages that anyone received, each
//! once and in order, that every client reconnected, and that every reconnect recovered.
mod common;
use common::haproxy::Haproxy;
use common::redis::Redis;
use common::{free_port, node_dir, Gateway, Proc, WAIT};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

const ROOM: &str = "chaos";

/// One instance's arguments: Redis, an address for polling requests forwarded to it, a short
/// drain, test-friendly Redis timings and a quick ping so a dead peer is noticed soon.
fn args(redis: &str, advertise: &str) -> Vec<String> {
    [
        "--redis",
        redis,
        "--advertise",
        advertise,
        "--proxy-protocol",
        "optional",
        "--announce-interval",
        "300ms",
        "--drain-delay",
        "300ms",
        "--shutdown-timeout",
        "3s",
        "--redis-timeout",
        "1s",
        "--redis-backoff-min",
        "50ms",
        "--redis-backoff-max",
        "300ms",
        "--ping-interval",
        "2s",
        "--pong-timeout",
        "2s",
    ]
    .map(String::from)
    .to_vec()
}

fn start(port: u16, redis: &str) -> Gateway {
    let listen = format!("127.0.0.1:{port}");
    let args = args(redis, &listen);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = Gateway::start_on(&listen, &args);
    gw.wait_events("backplane_up", 1);
    gw
}

/// HAProxy in TCP mode: each connection to the next instance in turn, instances checked on
/// `/healthz` every 100 ms (a draining one answers 503 and gets no new connections), failed
/// connects sent to the other; a runtime socket to cut every connection.
fn balancer(servers: [u16; 2], sock: &std::path::Path) -> Haproxy {
    let sock = sock.display().to_string();
    Haproxy::start_with(move |listen| {
        format!(
            "\
global
    stats socket {sock} level admin

defaults
    mode tcp
    timeout connect 500ms
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch

listen lb
    bind {listen}
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host lb
    server gw0 127.0.0.1:{} send-proxy-v2 check inter 100ms fall 1 rise 1
    server gw1 127.0.0.1:{} send-proxy-v2 check inter 100ms fall 1 rise 1
",
            servers[0], servers[1]
        )
    })
}

/// Sends one command to HAProxy's runtime API.
fn haproxy_command(sock: &std::path::Path, cmd: &str) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("haproxy stats socket");
    writeln!(s, "{cmd}").unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
}

#[test]
fn kill_drain_and_cut_lose_nothing_and_every_reconnect_recovers() {
    let redis = Redis::start(free_port(), None);
    let ports = [free_port(), free_port()];
    let mut a = start(ports[0], &redis.url());
    let mut b = start(ports[1], &redis.url());
    let dir = common::TempDir::new("chaos");
    let sock = dir.path().join("haproxy.sock");
    let lb = balancer(ports, &sock);
    let node = node_dir(&["socket.io-client", "ws"]);
    let mut cmd = Command::new("node");
    cmd.arg(node.join("chaos.js"))
        .arg(format!("http://{}", lb.addr))
        .arg(ROOM);
    let mut clients = Proc::spawn("chaos.js", cmd);
    clients.wait_stdout(WAIT, |l| l == "ready" || l.starts_with('{'));
    assert!(
        clients.stdout().iter().any(|l| l == "ready"),
        "{}",
        clients.transcript()
    );
    let started = Instant::now();
    let pause = |d: u64| std::thread::sleep(Duration::from_millis(d));

    // 1. An instance dies without a word, and comes back.
    pause(2000);
    a.signal("KILL");
    a.wait_exit(WAIT);
    pause(500);
    a = start(ports[0], &redis.url());

    // 2. The other is drained (its clients get 1001 after their sessions are saved) and
    //    comes back.
    pause(2500);
    b.signal("TERM");
    assert_eq!(b.wait_exit(WAIT), Some(0), "{}", b.logs().join("\n"));
    let saved = b.events("sessions_saved");
    assert!(
        saved.iter().any(|l| l.contains("acknowledged=true")),
        "{saved:?}"
    );
    b = start(ports[1], &redis.url());

    // 3. Every connection through the balancer is cut.
    pause(2500);
    haproxy_command(&sock, "shutdown sessions server lb/gw0");
    haproxy_command(&sock, "shutdown sessions server lb/gw1");
    pause(2500);

    clients.send_line("stop");
    clients.wait_stdout(Duration::from_secs(30), |l| l.starts_with('{'));
    let line = clients
        .stdout()
        .into_iter()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no result\n{}", clients.transcript()));
    let took = started.elapsed();
    let report = Report::parse(&line);
    let context = || {
        format!(
            "{line}\nclients:\n{}\nA:\n{}\nB:\n{}",
            clients.stderr().join("\n"),
            a.logs().join("\n"),
            b.logs().join("\n")
        )
    };
    assert!(report.error.is_none(), "{}", context());

    // Everything anyone got, in the order of the numbers (the publisher's order).
    let union: BTreeSet<u64> = report.clients.iter().flat_map(|c| c.got.clone()).collect();
    let union: Vec<u64> = union.into_iter().collect();
    assert!(
        union.len() as u64 >= report.published / 2,
        "only {} of {} published messages reached anyone\n{}",
        union.len(),
        report.published,
        context()
    );
    for c in &report.clients {
        assert!(
            c.got.windows(2).all(|w| w[0] < w[1]),
            "{}: a message twice or out of order\n{}",
            c.name,
            context()
        );
        if c.got != union {
            let have: BTreeSet<u64> = c.got.iter().copied().collect();
            let missing: Vec<u64> = union
                .iter()
                .filter(|n| !have.contains(n))
                .copied()
                .collect();
            panic!("{}: missed {missing:?}\n{}", c.name, context());
        }
        assert!(
            c.reconnects >= 1,
            "{} never reconnected\n{}",
            c.name,
            context()
        );
        assert!(
            c.failures.is_empty() && c.recovered == c.reconnects,
            "{}: {:?}\n{}",
            c.name,
            c.failures,
            context()
        );
    }
    let reconnects: u64 = report.clients.iter().map(|c| c.reconnects).sum();
    eprintln!(
        "chaos: {} published, {} delivered to each of {} clients, {reconnects} reconnects \
         all recovered, in {took:?}",
        report.published,
        union.len(),
        report.clients.len()
    );
    drop(lb);
}

/// What chaos.js printed.
struct Report {
    error: Option<String>,
    published: u64,
    clients: Vec<Client>,
}

struct Client {
    name: String,
    got: Vec<u64>,
    reconnects: u64,
    recovered: u64,
    failures: Vec<String>,
}

impl Report {
    /// A small reader for chaos.js's one JSON line (flat objects, arrays of numbers and
    /// strings without escapes).
    fn parse(line: &str) -> Report {
        let field = |obj: &str, key: &str| -> Option<String> {
            let at = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
            let rest = &obj[at..];
            let end = match rest.as_bytes()[0] {
                b'[' => rest.find(']')? + 1,
                b'"' => rest[1..].find('"')? + 2,
                _ => rest.find([',', '}'])?,
            };
            Some(rest[..end].to_string())
        };
        let error = field(line, "error");
        let published = field(line, "published").map_or(0, |v| v.parse().unwrap());
        let mut clients = Vec::new();
        if let Some(at) = line.find("\"clients\":[") {
            for obj in line[at + 11..].split("{\"name\":").skip(1) {
                let obj = format!("{{\"name\":{obj}");
                let list = |k: &str| field(&obj, k).unwrap_or_default();
                let numbers = list("got");
                clients.push(Client {
                    name: field(&obj, "name").unwrap().trim_matches('"').to_string(),
                    got: numbers
                        .trim_matches(['[', ']'])
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().unwrap())
                        .collect(),
                    reconnects: list("reconnects").parse().unwrap(),
                    recovered: list("recovered").parse().unwrap(),
                    failures: list("failures")
                        .trim_matches(['[', ']'])
                        .split("\",\"")
                        .map(|s| s.trim_matches('"').to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                });
            }
        }
        Report {
            error,
            published,
            clients,
        }
    }
}
