//! Test harness: runs the real `wsgate` binary on a free loopback port and talks to it with
//! raw bytes and the async-tungstenite client.
//!
//! `WSGATE_BIN` overrides the binary (e.g. the aarch64 build) and `WSGATE_RUNNER` prefixes
//! it (e.g. `qemu-aarch64-static`), so the same tests prove a cross-built binary.
#![allow(dead_code)]

pub mod haproxy;
pub mod redis;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use smol::{Async, Timer};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Generous upper bound for anything a test waits for; tests assert behaviour, not speed.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running gateway: a [`Proc`] (the one process harness) whose stderr is its log, and the
/// address it listens on.
pub struct Gateway {
    proc: Proc,
    pub addr: SocketAddr,
}

pub fn binary() -> String {
    std::env::var("WSGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsgate").to_string())
}

impl Gateway {
    /// Starts `wsgate --listen 127.0.0.1:0 ARGS...` and waits for its `listening` line.
    pub fn start(args: &[&str]) -> Gateway {
        Self::start_on("127.0.0.1:0", args)
    }

    pub fn start_on(listen: &str, args: &[&str]) -> Gateway {
        Self::start_env(listen, args, &[])
    }

    /// [`Gateway::start_on`] with extra environment variables.
    pub fn start_env(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Self::start_wrapped(&[], listen, args, env)
    }

    /// Starts it through `wrapper` (a program and its arguments, which must end by running
    /// the rest of its command line, e.g. `bash -c 'ulimit -Sn 256 && exec "$@"' sh`).
    pub fn start_wrapped(
        wrapper: &[&str],
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let runner = std::env::var("WSGATE_RUNNER")
            .ok()
            .filter(|r| !r.is_empty());
        let mut chain: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        chain.extend(runner);
        chain.push(binary());
        let mut cmd = Command::new(&chain[0]);
        cmd.args(&chain[1..]);
        cmd.arg("--listen")
            .arg(listen)
            .args(args)
            .envs(env.iter().copied());
        let mut proc = Proc::spawn("wsgate", cmd);
        // A test's gateway is killed at the end, not drained.
        proc.term_on_drop = false;
        let mut gw = Gateway {
            proc,
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        // Text (`... INFO listening addr=...`) or JSON (`{"ts":...,"event":"listening",...}`).
        let line = gw.wait_log(is_listening_line);
        let addr = field(&line, "addr")
            .or_else(|| json_field(&line, "addr"))
            .expect("addr= in listening line");
        gw.addr = addr.parse().expect("listening address");
        gw
    }

    /// The admin listener's address (`admin=` in the listening line; `--admin-listen` given).
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_log(is_listening_line);
        field(&line, "admin")
            .or_else(|| json_field(&line, "admin"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line}"))
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.proc.stderr()
    }

    /// Waits up to [`WAIT`] for a log line matching `pred`, and returns it.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        self.proc.wait_stderr(WAIT, pred)
    }

    /// Waits up to `within` until `n` log lines match `pred`, and returns them.
    pub fn wait_logs(
        &self,
        n: usize,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        self.proc.wait_lines(true, n, within, pred)
    }

    /// Waits up to [`WAIT`] until at least `n` lines for `event` were logged (lines reach the
    /// test through a reader thread, a little after the server wrote them), and returns them.
    pub fn wait_events(&self, event: &str, n: usize) -> Vec<String> {
        self.wait_logs(n, WAIT, |l| l.split(' ').nth(2) == Some(event))
    }

    /// Log lines for `event` (the third word).
    pub fn events(&self, event: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.split(' ').nth(2) == Some(event))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        self.proc.wait_exit(within).code()
    }
}

fn is_listening_line(l: &str) -> bool {
    l.contains(" listening ") || l.contains(r#""event":"listening""#)
}

/// The value of `"key":"value"` in a JSON log line (values without escapes only).
pub fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The value of `key=value` in a log line (unquoted values only).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Sends `bytes` on a fresh connection and returns everything read until the server closes.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    smol::block_on(async {
        let mut s = Async::<TcpStream>::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).or(timeout_err()).await;
        out
    })
}

/// A raw WebSocket client of `path` that reads only when its test does: connects (with a
/// receive buffer of `recv_buffer` bytes when given, set before the upgrade), upgrades, and
/// reads exactly the 101 response.
pub fn raw_upgrade(addr: SocketAddr, path: &str, recv_buffer: Option<usize>) -> TcpStream {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    if let Some(n) = recv_buffer {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&s, n);
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 129];
    s.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    s
}

/// Sends `bytes`, closes the write side (FIN) and returns what the server sent back.
pub fn raw_then_close(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    smol::block_on(async {
        let mut s = Async::<TcpStream>::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).or(timeout_err()).await;
        out
    })
}

async fn timeout_err<T>() -> std::io::Result<T> {
    Timer::after(WAIT).await;
    Err(std::io::ErrorKind::TimedOut.into())
}

/// The status code of a raw HTTP response.
pub fn status(resp: &[u8]) -> u16 {
    let s = std::str::from_utf8(&resp[..resp.len().min(12)]).unwrap_or("");
    s.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {:?}", String::from_utf8_lossy(resp)))
}

pub type Ws = WebSocketStream<Async<TcpStream>>;

/// Connects a WebSocket client to `path`, sending `prefix` (e.g. a PROXY header) first.
pub async fn ws_connect(addr: SocketAddr, path: &str, prefix: &[u8]) -> Ws {
    let mut s = Async::<TcpStream>::connect(addr).await.unwrap();
    if !prefix.is_empty() {
        s.write_all(prefix).await.unwrap();
    }
    let url = format!("ws://{addr}{path}");
    let (ws, resp) = async_tungstenite::client_async_with_config(
        url,
        s,
        Some(WebSocketConfig::default().max_message_size(Some(16 << 20))),
    )
    .await
    .expect("WebSocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// How the gateway's log lines name this client: `client=127.0.0.1:PORT ` (conn numbers are
/// given when a session task starts, so they need not follow the order of connects).
pub fn client_of(ws: &Ws) -> String {
    format!("client={} ", ws.get_ref().get_ref().local_addr().unwrap())
}

/// Next data message (skipping pings/pongs), or panics after [`WAIT`].
pub async fn next_msg(ws: &mut Ws) -> Message {
    loop {
        let m = ws
            .next()
            .or(async {
                Timer::after(WAIT).await;
                panic!("no message within {WAIT:?}")
            })
            .await
            .expect("stream ended")
            .expect("read error");
        match m {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next_msg(ws).await {
        Message::Text(t) => t.to_string(),
        m => panic!("expected text, got {m:?}"),
    }
}

/// Reads until the server's Close frame and returns its code.
pub async fn close_code(ws: &mut Ws) -> u16 {
    close_frame(ws).await.0
}

/// A PROXY v1 header.
pub fn proxy_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// The v2 signature.
pub const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY v2 PROXY-command header over TCP with the given TLVs appended.
pub fn proxy_v2(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x21);
    let mut addrs = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            addrs.extend_from_slice(&s.ip().octets());
            addrs.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            addrs.extend_from_slice(&s.ip().octets());
            addrs.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed families"),
    }
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    addrs.extend_from_slice(tlvs);
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(&addrs);
    h
}

/// A v2 LOCAL header (what an NLB health check sends) with `len` bytes of skipped block.
pub fn proxy_v2_local(len: u16) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x20);
    h.push(0x00);
    h.extend_from_slice(&len.to_be_bytes());
    h.extend(std::iter::repeat_n(0xAB, len as usize));
    h
}

/// The AWS VPC endpoint TLV (0xEA, subtype 0x01).
pub fn tlv_vpce(id: &str) -> Vec<u8> {
    let mut t = vec![0xEA];
    t.extend_from_slice(&((id.len() + 1) as u16).to_be_bytes());
    t.push(0x01);
    t.extend_from_slice(id.as_bytes());
    t
}

/// Splits unmasked server frames into `(opcode, payload)`; stops at a truncated frame.
pub fn parse_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let op = b[0] & 0x0F;
        let (len, hl) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n @ 0..=125 => (n as usize, 2),
            _ => break,
        };
        if b.len() < hl + len {
            break;
        }
        out.push((op, b[hl..hl + len].to_vec()));
        b = &b[hl + len..];
    }
    out
}

/// `GET path` on a fresh connection; returns the status and the body (responses carry
/// `Connection: close`, so the body is everything after the head).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    );
    let body = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |i| &resp[i + 4..]);
    (status(&resp), String::from_utf8_lossy(body).into_owned())
}

/// One `/metrics` scrape: every sample by its full name, labels included, as written
/// (`wsgate_connections_refused_total{limit="origin"}`).
#[derive(Debug, Clone)]
pub struct Scrape(pub std::collections::BTreeMap<String, f64>);

impl Scrape {
    /// A sample's value; a labelled counter that was never counted is absent, which is 0.
    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

/// Scrapes `/metrics` on the admin listener and parses the Prometheus text format strictly:
/// `# HELP` / `# TYPE` comments, and every other line `name{labels} value`, where each sample
/// belongs to a family declared by a `# TYPE` line before it. Panics on anything else.
pub fn scrape(admin: SocketAddr) -> Scrape {
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200, "{body}");
    parse_prometheus(&body)
}

/// Scrapes until `key` reads `want` (a counter bumped just after the event a test can see,
/// e.g. `messages_out` after the publish that delivered the message), or panics after [`WAIT`].
pub fn wait_metric(admin: SocketAddr, key: &str, want: f64) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = scrape(admin);
        let got = m.get(key);
        if got == want {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{key} is {got}, not {want}, after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The parser behind [`scrape`].
pub fn parse_prometheus(text: &str) -> Scrape {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed = std::collections::HashSet::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            let mut w = c.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("HELP"), Some(n), Some(_)) => assert!(valid_name(n), "{line}"),
                (Some("TYPE"), Some(n), Some(t)) => {
                    assert!(valid_name(n), "{line}");
                    assert!(["counter", "gauge"].contains(&t), "{line}");
                    typed.insert(n.to_string());
                }
                _ => panic!("bad comment line: {line:?}"),
            }
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let name = match key.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line:?}"));
                for pair in labels.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line:?}"));
                    assert!(valid_name(k), "{line}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
                name
            }
            None => key,
        };
        assert!(valid_name(name), "{line}");
        assert!(typed.contains(name), "sample before its # TYPE: {line:?}");
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "duplicate sample: {line:?}"
        );
    }
    Scrape(samples)
}

/// Sends an upgrade request for `path` (after `prefix`, e.g. a PROXY header) with `extra`
/// header lines, and reads the response head. Returns the status, the head and the socket,
/// which stays open after a 101.
pub async fn upgrade(
    addr: SocketAddr,
    prefix: &[u8],
    path: &str,
    extra: &str,
) -> (u16, String, Async<TcpStream>) {
    let mut s = Async::<TcpStream>::connect(addr).await.unwrap();
    let mut req = prefix.to_vec();
    req.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .as_bytes(),
    );
    s.write_all(&req).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).or(timeout_err()).await.unwrap();
        assert!(n == 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (status(&head), String::from_utf8(head).unwrap(), s)
}

/// Reads until the server's Close frame and returns its code and reason.
pub async fn close_frame(ws: &mut Ws) -> (u16, String) {
    loop {
        let m = ws
            .next()
            .or(async {
                Timer::after(WAIT).await;
                panic!("no close within {WAIT:?}")
            })
            .await;
        match m {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error instead of a close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Third-party programs (HAProxy, Python, Node, Chromium) as bounded, killed-on-drop children.

/// What to do when a third-party test dependency is missing: the tests fail, never skip.
pub const DEPS_HINT: &str = "run `make test-deps` (`make test` does it for you)";

/// The full path of `program` on `PATH`; panics with [`DEPS_HINT`] when it is not there.
pub fn require_program(program: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| panic!("`{program}` is not installed: {DEPS_HINT}"))
}

/// The crate's `tests/` directory (scripts live under it).
pub fn tests_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// `tests/node`, checked to have `packages` installed in its `node_modules`.
pub fn node_dir(packages: &[&str]) -> std::path::PathBuf {
    require_program("node");
    let dir = tests_dir().join("node");
    for p in packages {
        assert!(
            dir.join("node_modules")
                .join(p)
                .join("package.json")
                .is_file(),
            "node package `{p}` is not installed in {}: {DEPS_HINT}",
            dir.display()
        );
    }
    dir
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A fresh directory under the system temp dir, removed with its contents on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "wsgate-{tag}-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Output {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Pipes (stdout, stderr) that reached end of file.
    closed: u8,
}

/// A third-party program run in its own process group, with stdin piped and stdout/stderr
/// collected line by line. Dropping it ends the whole group: SIGTERM (so e.g. Playwright can
/// close its browser), a short grace period, then SIGKILL.
pub struct Proc {
    /// Whether dropping it sends SIGTERM and waits a moment before SIGKILL (default), or
    /// kills at once.
    pub term_on_drop: bool,
    name: String,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    output: Arc<(Mutex<Output>, Condvar)>,
}

impl Proc {
    /// Spawns `cmd`; `name` labels its output in failure messages (and with `WSGATE_TEST_ECHO`).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}; {DEPS_HINT}"));
        let output: Arc<(Mutex<Output>, Condvar)> = Default::default();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        Self::collect(name, stdout, output.clone(), false);
        Self::collect(name, stderr, output.clone(), true);
        Proc {
            term_on_drop: true,
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            output,
        }
    }

    fn collect(
        name: &str,
        pipe: impl std::io::Read + Send + 'static,
        sink: Arc<(Mutex<Output>, Condvar)>,
        is_stderr: bool,
    ) {
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("WSGATE_TEST_ECHO").is_some() {
                    eprintln!("[{name}] {line}");
                }
                let mut out = sink.0.lock().unwrap();
                if is_stderr {
                    out.stderr.push(line);
                } else {
                    out.stdout.push(line);
                }
                sink.1.notify_all();
            }
            sink.0.lock().unwrap().closed += 1;
            sink.1.notify_all();
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        let out = self.output.0.lock().unwrap();
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            out.stdout.join("\n"),
            self.name,
            out.stderr.join("\n")
        )
    }

    pub fn stdout(&self) -> Vec<String> {
        self.output.0.lock().unwrap().stdout.clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.output.0.lock().unwrap().stderr.clone()
    }

    /// Waits up to `within` for a stdout line matching `pred` and returns it; panics with the
    /// transcript if the program ends its output or the time runs out first.
    pub fn wait_stdout(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(false, within, pred)
    }

    /// [`Proc::wait_stdout`] for stderr (where e.g. HAProxy logs with `log stderr`).
    pub fn wait_stderr(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(true, within, pred)
    }

    fn wait_line(&self, stderr: bool, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_lines(stderr, 1, within, pred).swap_remove(0)
    }

    /// Waits up to `within` until `n` lines of stdout (or stderr) match `pred`, and returns
    /// them; panics with the transcript if the program ends its output or the time runs out
    /// first.
    pub fn wait_lines(
        &self,
        stderr: bool,
        n: usize,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = self.output.0.lock().unwrap();
        loop {
            let lines = if stderr { &out.stderr } else { &out.stdout };
            let found: Vec<String> = lines.iter().filter(|l| pred(l)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || out.closed == 2 {
                drop(out);
                panic!(
                    "{}: {} of {n} matching {} lines ({})\n{}",
                    self.name,
                    found.len(),
                    if stderr { "stderr" } else { "stdout" },
                    if left.is_zero() {
                        format!("waited {within:?}")
                    } else {
                        "it closed its output".to_string()
                    },
                    self.transcript()
                );
            }
            out = self.output.1.wait_timeout(out, left).unwrap().0;
        }
    }

    /// Writes one line to its stdin.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin still open");
        let res = writeln!(stdin, "{line}").and_then(|_| stdin.flush());
        if let Err(e) = res {
            panic!("{}: write to stdin: {e}\n{}", self.name, self.transcript());
        }
    }

    /// SIGKILL, at once, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `within` for it to exit, and for its output to be fully read.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}\n{}",
                self.name,
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes close when the last holder exits; a left-over grandchild could keep them
        // open, so this wait is bounded too.
        let mut out = self.output.0.lock().unwrap();
        while out.closed < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            out = self.output.1.wait_timeout(out, left).unwrap().0;
        }
        status
    }

    fn kill_group(&self, sig: &str) {
        // The group id is the child's pid (`process_group(0)`).
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.term_on_drop && self.running() {
            self.kill_group("-TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Also whatever it left behind in its group.
        self.kill_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to [`WAIT`] until `addr` accepts TCP connections, while `proc` keeps running.
pub fn wait_accepting(proc: &mut Proc, addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(
            proc.running(),
            "{} exited before accepting on {addr}\n{}",
            proc.name,
            proc.transcript()
        );
        assert!(
            Instant::now() < deadline,
            "{addr} not accepting within {WAIT:?}\n{}",
            proc.transcript()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a client script that connects `members` WebSockets to `gw`, prints `ready`, waits for
/// `go` on stdin, then does its checks, prints `ok ...` and exits 0 (or `FAIL: ...` and
/// non-zero). `go` is sent once wsgate has logged `members` opens: a member joins its room
/// before its open line, so no message can race a join. Returns the `ok` line.
pub fn run_client_script(
    gw: &Gateway,
    name: &str,
    cmd: Command,
    members: usize,
    within: Duration,
) -> String {
    let mut client = Proc::spawn(name, cmd);
    client.wait_stdout(within, |l| l == "ready" || l.starts_with("FAIL"));
    assert!(
        client.stdout().iter().any(|l| l == "ready"),
        "{name} did not get ready\n{}\nwsgate:\n{}",
        client.transcript(),
        gw.logs().join("\n")
    );
    gw.wait_logs(members, WAIT, |l| l.split(' ').nth(2) == Some("open"));
    client.send_line("go");
    let status = client.wait_exit(within);
    let ok = client.stdout().into_iter().find(|l| l.starts_with("ok "));
    match (status.success(), ok) {
        (true, Some(ok)) => ok,
        _ => panic!(
            "{name} failed ({status})\n{}\nwsgate:\n{}",
            client.transcript(),
            gw.logs().join("\n")
        ),
    }
}

/// A TCP relay on 127.0.0.1 in front of `to`, standing in for what cuts connections in real
/// life (a load balancer's idle timeout, a phone changing networks, a dead NAT entry):
/// `cut` resets every connection it carries; `freeze` stops passing bytes on them but leaves
/// them open (half-open: neither end learns anything), while new connections work as usual.
#[allow(dead_code)]
pub struct CutProxy {
    pub addr: SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<(std::net::TcpStream, std::net::TcpStream)>>>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicU64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[allow(dead_code)]
impl CutProxy {
    pub fn start(to: SocketAddr) -> CutProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<_>>> = Arc::default();
        // Connections numbered below this are frozen.
        let frozen = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (c2, f2, a2) = (conns.clone(), frozen.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                let n = a2.fetch_add(1, Ordering::SeqCst);
                c2.lock()
                    .unwrap()
                    .push((client.try_clone().unwrap(), server.try_clone().unwrap()));
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = f2.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(k) = from.read(&mut buf) {
                            if k == 0 {
                                break;
                            }
                            if n < f.load(Ordering::SeqCst) {
                                // Frozen: the bytes go nowhere and nobody is told.
                                continue;
                            }
                            if into.write_all(&buf[..k]).is_err() {
                                break;
                            }
                        }
                        if n >= f.load(Ordering::SeqCst) {
                            let _ = into.shutdown(std::net::Shutdown::Write);
                        }
                    });
                }
            }
        });
        CutProxy {
            addr,
            conns,
            frozen,
            accepted,
        }
    }

    /// Resets every connection carried so far (`SO_LINGER` 0, then close), both sides.
    pub fn cut(&self) {
        for (a, b) in self.conns.lock().unwrap().drain(..) {
            for s in [a, b] {
                let _ = rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO));
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Stops passing bytes on every connection carried so far, without closing any.
    pub fn freeze(&self) {
        use std::sync::atomic::Ordering;
        let n = self.accepted.load(Ordering::SeqCst);
        self.frozen.store(n, Ordering::SeqCst);
    }
}
