//! Socket.IO test helpers: the stock `socket.io-client` under Node, driven line by line
//! through tests/node/sio_driver.js, and a raw Engine.IO client (async-tungstenite) for what
//! a stock client will not do (stay silent, send malformed packets).
//!
//! Missing Node or npm modules fail the test with "run make test-deps": never a skip.
#![allow(dead_code)]

use crate::common::{next_text, ws_connect, Ws, WAIT};
use async_tungstenite::tungstenite::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// tests/node: the npm packages and the scripts that use them.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("node")
}

/// Panics (fails the test) unless `node` runs and every npm `module` is installed.
pub fn require_node(modules: &[&str]) {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        node.is_ok_and(|s| s.success()),
        "`node` is not installed: run make test-deps"
    );
    for m in modules {
        let p = node_dir().join("node_modules").join(m).join("package.json");
        assert!(
            p.is_file(),
            "npm module {m} missing ({} not found): run make test-deps",
            p.display()
        );
    }
}

/// One socket.io-client in its own Node process; killed on drop.
pub struct SioClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Engine.IO pings seen so far (they are not returned as lines).
    pub pings: usize,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl SioClient {
    /// `io(url, {transports: ['websocket'], reconnection: false, ...opts})`.
    pub fn spawn(url: &str, opts: &str) -> SioClient {
        require_node(&["socket.io-client"]);
        Self::spawn_script("sio_driver.js", &[url, opts])
    }

    /// Runs `node tests/node/<script> ARGS...` with the same line protocol.
    pub fn spawn_script(script: &str, args: &[&str]) -> SioClient {
        let mut child = Command::new("node")
            .arg(node_dir().join(script))
            .args(args)
            .current_dir(node_dir())
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        SioClient {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            pings: 0,
            seen: Vec::new(),
        }
    }

    /// Sends one JSON command line.
    pub fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}").expect("write to node");
        stdin.flush().unwrap();
    }

    /// `socket.emit('chat message', text)`.
    pub fn chat(&mut self, text: &str) {
        self.send(&format!(
            r#"{{"op":"emit","name":"chat message","args":[{}]}}"#,
            json_str(text)
        ));
    }

    /// The next line that is not a ping, or a failure after `within`.
    pub fn next_within(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("ping ") => self.pings += 1,
                Ok(l) => {
                    self.seen.push(l.clone());
                    return Some(l);
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    panic!(
                        "node exited; lines: {:?}\nstderr:\n{}",
                        self.seen,
                        self.stderr.lock().unwrap()
                    );
                }
            }
        }
    }

    /// The next line that is not a ping; fails after [`WAIT`].
    pub fn next(&mut self) -> String {
        match self.next_within(WAIT) {
            Some(l) => l,
            None => panic!(
                "no line from node within {WAIT:?}; lines so far: {:?}\nstderr:\n{}",
                self.seen,
                self.stderr.lock().unwrap()
            ),
        }
    }

    /// Asserts that the next line is exactly `want`.
    pub fn expect(&mut self, want: &str) {
        let got = self.next();
        assert_eq!(got, want, "lines so far: {:?}", self.seen);
    }

    /// Waits for the `connect` line and returns it.
    pub fn connected(&mut self) -> String {
        let l = self.next();
        assert!(l.starts_with("connect {\"id\":"), "{l}; {:?}", self.seen);
        l
    }

    /// For a client with the default transports: waits for both its `connect` and its
    /// `upgrade` to a WebSocket (they race each other), and returns the `connect` line. The
    /// upgrade is the proof that it started on polling: Engine.IO upgrades only from it.
    pub fn connected_then_upgraded(&mut self) -> String {
        let mut first_two = [self.next(), self.next()];
        first_two.sort();
        let [connected, upgraded] = first_two;
        assert!(
            connected.starts_with("connect {"),
            "{connected}; {:?}",
            self.seen
        );
        assert_eq!(
            upgraded, r#"upgrade {"transport":"websocket"}"#,
            "{:?}",
            self.seen
        );
        connected
    }

    /// Reads lines (pings counted) for `d`; fails on any other line.
    pub fn quiet_for(&mut self, d: Duration) {
        if let Some(l) = self.next_within(d) {
            panic!("unexpected line {l}; lines so far: {:?}", self.seen);
        }
    }
}

impl Drop for SioClient {
    /// Closes stdin so the script can clean up (a browser, its profile), then kills it if
    /// it has not exited within [`EXIT_GRACE`].
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a driver script gets to exit after its input closes.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// `s` as JSON.stringify writes it.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The driver's line for an event: `event {"name":..,"args":ARGS}` (ARGS already JSON).
pub fn event_line(name: &str, args: &str) -> String {
    format!("event {{\"name\":{},\"args\":{args}}}", json_str(name))
}

/// The driver's line for `chat message` with one string.
pub fn chat_line(text: &str) -> String {
    event_line("chat message", &format!("[{}]", json_str(text)))
}

/// The Socket.IO endpoint for the driver: `http://ADDR` plus `suffix`.
pub fn url(addr: SocketAddr, suffix: &str) -> String {
    format!("http://{addr}{suffix}")
}

/// A raw Engine.IO v4 client: upgrade, read the open packet, send `40`, read `40{sid}`.
/// `query` is appended to `/socket.io/?EIO=4&transport=websocket`.
pub async fn raw_sio(addr: SocketAddr, query: &str) -> Ws {
    let path = format!("/socket.io/?EIO=4&transport=websocket{query}");
    let mut ws = ws_connect(addr, &path, b"").await;
    let open = next_text(&mut ws).await;
    assert!(open.starts_with("0{\"sid\":"), "{open}");
    send_text(&mut ws, "40").await;
    let ok = next_text(&mut ws).await;
    assert!(ok.starts_with("40{\"sid\":"), "{ok}");
    ws
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Next text packet that is not an Engine.IO ping (answered with `3` on the way).
pub async fn next_packet(ws: &mut Ws) -> String {
    loop {
        let t = next_text(ws).await;
        if t == "2" {
            send_text(ws, "3").await;
            continue;
        }
        return t;
    }
}

/// A packet (or a polling body of `\x1e`-joined packets) as it was before recovery: the
/// offset that ends every event (`42[..,"<epoch>-<seq>"]`) and the `pid` of a CONNECT
/// answer left out, each checked to be there and well formed. Tests of other behaviour
/// compare the rest exactly; tests/recovery.rs checks the offsets themselves.
#[allow(dead_code)]
pub fn plain(text: &str) -> String {
    text.split('\u{1e}')
        .map(|p| {
            if let Some(rest) = p.strip_prefix("40{") {
                let (head, pid) = rest
                    .rsplit_once(",\"pid\":\"")
                    .unwrap_or_else(|| panic!("no pid in {p}"));
                assert!(pid.len() == 24 && pid.ends_with("\"}"), "pid in {p}");
                return format!("40{{{head}}}");
            }
            if p.starts_with("42[") {
                let body = p
                    .strip_suffix("\"]")
                    .unwrap_or_else(|| panic!("no offset in {p}"));
                let (args, offset) = body
                    .rsplit_once(",\"")
                    .unwrap_or_else(|| panic!("no offset in {p}"));
                let ok = offset.split_once('-').is_some_and(|(e, s)| {
                    !e.is_empty()
                        && e.bytes().all(|b| b.is_ascii_hexdigit())
                        && !s.is_empty()
                        && s.bytes().all(|b| b.is_ascii_digit())
                });
                assert!(ok, "offset {offset:?} in {p}");
                return format!("{args}]");
            }
            p.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\u{1e}")
}
