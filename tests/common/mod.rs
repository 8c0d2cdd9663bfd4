//! Test harness: runs the real `wsgate` binary on a free loopback port and talks to it with
//! raw bytes and the async-tungstenite client.
//!
//! `WSGATE_BIN` overrides the binary (e.g. the aarch64 build) and `WSGATE_RUNNER` prefixes
//! it (e.g. `qemu-aarch64-static`), so the same tests prove a cross-built binary.
#![allow(dead_code)]

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

/// A running gateway whose stderr is collected line by line.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
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
        let runner = std::env::var("WSGATE_RUNNER")
            .ok()
            .filter(|r| !r.is_empty());
        let mut cmd = match &runner {
            Some(r) => {
                let mut c = Command::new(r);
                c.arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.arg("--listen").arg(listen).args(args);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsgate");
        let logs: Arc<(Mutex<Vec<String>>, Condvar)> = Default::default();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("WSGATE_TEST_ECHO").is_some() {
                    eprintln!("[wsgate] {line}");
                }
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        let mut gw = Gateway {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            logs,
        };
        let line = gw.wait_log(|l| l.contains(" listening "));
        let addr = field(&line, "addr").expect("addr= in listening line");
        gw.addr = addr.parse().expect("listening address");
        gw
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.0.lock().unwrap().clone()
    }

    /// Waits up to [`WAIT`] for a log line matching `pred`, and returns it.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut lines = self.logs.0.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no matching log line within {WAIT:?}; logs:\n{}",
                lines.join("\n")
            );
            lines = self.logs.1.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Log lines for `event` (the third word).
    pub fn events(&self, event: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.split(' ').nth(2) == Some(event))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "wsgate did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    loop {
        let m = ws
            .next()
            .or(async {
                Timer::after(WAIT).await;
                panic!("no close within {WAIT:?}")
            })
            .await;
        match m {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error instead of a close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
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

/// A fresh directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "wsgate-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let p = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
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
