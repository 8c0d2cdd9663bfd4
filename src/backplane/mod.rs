//! The Redis pub/sub backplane (`--redis`): several instances behind one load balancer share
//! their rooms.
//!
//! ```text
//! session ─> Membership::publish_payload ─> this instance's members, at once
//!                                       └─> Backplane::relay ─> queue (bounded: full -> drop newest)
//!     publisher task: one connection, queue ─> pipelined PUBLISH {prefix}:{room} <envelope>
//!     subscriber task: one connection, PSUBSCRIBE {prefix}:* ─> not our node id? ─> Hub::deliver
//! ```
//!
//! * **Envelope** (the PUBLISH payload, binary-safe): `[version=1][kind][node id: 16 bytes]
//!   [data]`; kind `t` plain text, `b` plain binary, `s` Socket.IO event arguments (the JSON
//!   array `["name", ...]`). The node id is random per process; every instance skips its own
//!   messages (they were delivered locally already), so nothing arrives twice.
//! * **Order per publisher** is kept: one publishing connection written in queue order, and
//!   Redis delivers one connection's publishes in order; the subscriber hands them to the hub
//!   in the order read.
//! * **Never in the way of local delivery.** [`Backplane::relay`] only appends the encoded
//!   `PUBLISH` to a byte buffer under a lock; the publisher swaps that buffer with its own
//!   (capacities are kept), so relaying allocates nothing once warm. **Full-policy: drop the
//!   newest** and count it (`queue_full`); while the publisher is not connected, publishes are
//!   dropped at once (`down`).
//! * **At-most-once**, as Socket.IO's Redis adapter: what is published while Redis is
//!   unreachable, or still queued when a connection is lost, is not delivered to other
//!   instances and is never sent twice. Local members always get it.
//! * **Faults.** Every connection is (re)made with DNS, TCP, `AUTH`, `SELECT` and a first
//!   reply within `timeout`, then watched: after `timeout` without a byte from Redis a `PING`
//!   goes out, after another `timeout` the connection is reset (a paused or vanished Redis is
//!   not noticed by TCP). Reconnects back off from `backoff_min` doubling to `backoff_max`.
//!   The state is logged once per change (`backplane_up`, `backplane_down` with the reason and
//!   `host:port`, never the password), shown on `/healthz` and in `/metrics`.

pub mod resp;

use crate::config::BackplaneConfig;
use crate::frame;
use crate::hub::{Payload, Relay};
use crate::lock::mutex as lock;
use crate::metrics;
use crate::server::Gateway;
use crate::{error, info};
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt};
use resp::{Parsed, Value};
use smol::{Async, Timer};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Envelope format version; messages of another version are counted as invalid and skipped.
pub const VERSION: u8 = 1;
/// Bytes of the random per-process node id.
pub const NODE_ID_LEN: usize = 16;
/// Bytes before the data: version, kind, node id.
pub const HEADER_LEN: usize = 2 + NODE_ID_LEN;
const KIND_TEXT: u8 = b't';
const KIND_BINARY: u8 = b'b';
const KIND_SOCKETIO: u8 = b's';

/// First size of a connection's read buffer; it grows to the largest reply and shrinks back
/// when the connection ends.
const READ_BUF: usize = 4096;
/// Least free space handed to a read; below it the buffer is compacted or grown.
const MIN_READ: usize = 1024;
/// A write batch that grew past this is shrunk back after a burst.
const SHRINK_ABOVE: usize = 1 << 20;
/// Reads or writes in one poll before the task yields, so a flood from Redis cannot starve
/// the sessions on its executor thread.
const BUDGET: u32 = 64;
/// Distinct failure reasons logged during one outage; later ones are only counted.
const MAX_REASONS_LOGGED: usize = 8;
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// One instance's side of the backplane: the queue to Redis, the node id, state and counters.
#[derive(Debug)]
pub struct Backplane {
    cfg: BackplaneConfig,
    node: [u8; NODE_ID_LEN],
    queue: Mutex<Queue>,
    /// Whether the subscriber connection is subscribed (the publisher's is `Queue::up`).
    sub_up: AtomicBool,
    log: Mutex<StateLog>,
    stats: Stats,
}

/// `PUBLISH` commands encoded back to back, waiting for the publisher task.
#[derive(Debug, Default)]
struct Queue {
    buf: Vec<u8>,
    /// Messages in `buf`.
    entries: usize,
    /// Whether the publisher is connected; while not, publishes are dropped, not queued.
    up: bool,
    waker: Option<Waker>,
}

/// What has been logged, so that each change is logged once.
#[derive(Debug, Default)]
struct StateLog {
    /// `None` before the first connection or failure.
    up: Option<bool>,
    /// When the current outage began.
    down_since: Option<Instant>,
    /// Reasons already logged in the current outage.
    reasons: Vec<String>,
}

#[derive(Debug, Default)]
struct Stats {
    published: AtomicU64,
    received: AtomicU64,
    dropped_full: AtomicU64,
    dropped_down: AtomicU64,
    failures: AtomicU64,
    invalid: AtomicU64,
}

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publish,
    Subscribe,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::Subscribe => "subscribe",
        }
    }
}

impl Backplane {
    /// The backplane for `cfg`, with a fresh random node id. Nothing connects until
    /// [`start`].
    pub fn new(cfg: BackplaneConfig) -> Arc<Backplane> {
        Arc::new(Backplane {
            cfg,
            node: fastrand::u128(..).to_be_bytes(),
            queue: Mutex::new(Queue::default()),
            sub_up: AtomicBool::new(false),
            log: Mutex::new(StateLog::default()),
            stats: Stats::default(),
        })
    }

    /// Whether both connections are up.
    pub fn is_up(&self) -> bool {
        lock(&self.queue).up && self.sub_up.load(Relaxed)
    }

    /// The `/healthz` detail line.
    pub fn health_line(&self) -> &'static str {
        if self.is_up() {
            "backplane: up\n"
        } else {
            "backplane: down\n"
        }
    }

    /// This process's node id in hex, for the logs.
    pub fn node_id(&self) -> String {
        self.node.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Appends the backplane's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let queued = lock(&self.queue).entries;
        let s = &self.stats;
        let mut w = metrics::Text(out);
        w.gauge(
            "wsgate_backplane_up",
            "1 while both Redis connections (publish, subscribe) are up.",
            u64::from(self.is_up()),
        );
        w.gauge(
            "wsgate_backplane_queued",
            "Messages waiting to be written to Redis.",
            queued as u64,
        );
        w.counter(
            "wsgate_backplane_published_total",
            "Messages PUBLISHed to Redis and acknowledged.",
            s.published.load(Relaxed),
        );
        w.counter(
            "wsgate_backplane_received_total",
            "Messages from other instances delivered to this instance's rooms.",
            s.received.load(Relaxed),
        );
        w.counter(
            "wsgate_backplane_invalid_total",
            "Messages on our channels that were not a valid envelope, skipped.",
            s.invalid.load(Relaxed),
        );
        w.counter(
            "wsgate_backplane_failures_total",
            "Redis connection attempts that failed and connections lost.",
            s.failures.load(Relaxed),
        );
        w.labelled(
            "wsgate_backplane_dropped_total",
            "counter",
            "Messages not sent to other instances (local members got them), by reason.",
            "reason",
            [
                ("queue_full", s.dropped_full.load(Relaxed)),
                ("down", s.dropped_down.load(Relaxed)),
            ],
        );
    }

    /// The pattern the subscriber listens to: the prefix with glob characters escaped.
    fn pattern(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.cfg.channel_prefix.len() + 2);
        for &b in self.cfg.channel_prefix.as_bytes() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                p.push(b'\\');
            }
            p.push(b);
        }
        p.extend_from_slice(b":*");
        p
    }

    /// Moves the queued commands into `out` (empty), or registers for a wake-up.
    fn poll_take(&self, cx: &mut Context<'_>, out: &mut Vec<u8>) -> Poll<usize> {
        let mut q = lock(&self.queue);
        if q.entries == 0 {
            match &mut q.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        std::mem::swap(&mut q.buf, out);
        Poll::Ready(std::mem::take(&mut q.entries))
    }

    /// Records that a connection came up (`Ok`) or failed (`Err(reason)`), and logs a change
    /// of the overall state once.
    fn report(&self, role: Role, result: Result<(), &str>, retry_in: Duration) {
        let up = result.is_ok();
        match role {
            Role::Publish => {
                let mut q = lock(&self.queue);
                q.up = up;
                if !up {
                    // At-most-once: what was not written is not sent on the next connection.
                    self.stats.dropped_down.fetch_add(q.entries as u64, Relaxed);
                    q.entries = 0;
                    q.buf.clear();
                    if q.buf.capacity() > SHRINK_ABOVE {
                        q.buf = Vec::new();
                    }
                }
            }
            Role::Subscribe => self.sub_up.store(up, Relaxed),
        }
        let all_up = self.is_up();
        let mut log = lock(&self.log);
        match result {
            Ok(()) if all_up && log.up != Some(true) => {
                match log.down_since {
                    Some(t) => info!(
                        "backplane_up",
                        redis = self.cfg.redis,
                        down_for = format!("{:.3}s", t.elapsed().as_secs_f64())
                    ),
                    None => info!("backplane_up", redis = self.cfg.redis),
                }
                *log = StateLog {
                    up: Some(true),
                    ..StateLog::default()
                };
            }
            Ok(()) => {}
            Err(reason) => {
                self.stats.failures.fetch_add(1, Relaxed);
                let first = log.up != Some(false);
                if first {
                    log.up = Some(false);
                    log.down_since = Some(Instant::now());
                }
                if first
                    || (log.reasons.len() < MAX_REASONS_LOGGED
                        && !log.reasons.iter().any(|r| r == reason))
                {
                    log.reasons.push(reason.to_string());
                    error!(
                        "backplane_down",
                        redis = self.cfg.redis,
                        conn = role.as_str(),
                        reason = reason,
                        retry_in = format!("{}ms", retry_in.as_millis())
                    );
                }
            }
        }
    }

    /// Handles one message from the subscription.
    fn on_message(&self, gw: &Gateway, channel: &[u8], message: &[u8]) {
        let room = channel
            .strip_prefix(self.cfg.channel_prefix.as_bytes())
            .and_then(|r| r.strip_prefix(b":"))
            .and_then(|r| std::str::from_utf8(r).ok())
            .filter(|r| crate::prelude::route::valid_room(r));
        let (Some(room), Ok(env)) = (room, decode(message)) else {
            self.stats.invalid.fetch_add(1, Relaxed);
            return;
        };
        if *env.node == self.node {
            return; // ours: delivered locally when it was published
        }
        let chat;
        let (payload, len) = match env.body {
            Body::Text(t) => (
                Payload::Raw {
                    kind: frame::Kind::Text,
                    data: t.as_bytes(),
                },
                t.len(),
            ),
            Body::Binary(b) => (
                Payload::Raw {
                    kind: frame::Kind::Binary,
                    data: b,
                },
                b.len(),
            ),
            Body::SocketIo(args) => {
                chat = crate::sio::chat_text(args);
                (
                    Payload::SocketIo {
                        args,
                        chat: chat.as_deref(),
                    },
                    args.len(),
                )
            }
        };
        let d = gw.hub.deliver(room, payload);
        self.stats.received.fetch_add(1, Relaxed);
        let m = &gw.metrics;
        m.messages_out.fetch_add(d.delivered as u64, Relaxed);
        m.bytes_out.fetch_add(
            d.delivered as u64 * (frame::header_len(len) + len) as u64,
            Relaxed,
        );
        if d.evicted > 0 {
            m.evictions.fetch_add(d.evicted as u64, Relaxed);
        }
    }
}

impl Relay for Backplane {
    /// Appends `PUBLISH {prefix}:{room} <envelope>` to the queue, or drops it (counted).
    fn relay(&self, room: &str, payload: &Payload<'_>) {
        let (kind, data) = parts(payload);
        let prefix = self.cfg.channel_prefix.as_bytes();
        let len = resp::array_header_len(3)
            + resp::bulk_len(7)
            + resp::bulk_len(prefix.len() + 1 + room.len())
            + resp::bulk_len(HEADER_LEN + data.len());
        let mut q = lock(&self.queue);
        if !q.up {
            drop(q);
            self.stats.dropped_down.fetch_add(1, Relaxed);
            return;
        }
        // Full-policy: drop the newest. One message bigger than the byte cap still goes
        // through an empty queue.
        if q.entries >= self.cfg.queue_messages
            || (q.entries > 0 && q.buf.len() + len > self.cfg.queue_bytes)
        {
            drop(q);
            self.stats.dropped_full.fetch_add(1, Relaxed);
            return;
        }
        let buf = &mut q.buf;
        resp::array_header(buf, 3);
        resp::bulk(buf, &[b"PUBLISH"]);
        resp::bulk(buf, &[prefix, b":", room.as_bytes()]);
        resp::bulk(buf, &[&[VERSION, kind], &self.node, data]);
        q.entries += 1;
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Starts the publisher and subscriber tasks on the gateway's executor (when `--redis`).
pub fn start(gw: &Arc<Gateway>) {
    let Some(bp) = gw.backplane.clone() else {
        return;
    };
    let cfg = &bp.cfg;
    info!(
        "backplane_starting",
        redis = cfg.redis,
        db = cfg.redis.db,
        auth = if cfg.redis.password.is_some() {
            "password"
        } else {
            "none"
        },
        channels = format!("{}:{{room}}", cfg.channel_prefix),
        node = bp.node_id(),
        queue = cfg.queue_messages
    );
    for role in [Role::Publish, Role::Subscribe] {
        let (gw2, bp2) = (gw.clone(), bp.clone());
        gw.executor.spawn(connection(gw2, bp2, role)).detach();
    }
}

/// One connection's life: connect, serve until it fails, back off, again; forever.
async fn connection(gw: Arc<Gateway>, bp: Arc<Backplane>, role: Role) {
    let cfg = &bp.cfg;
    let mut delay = cfg.backoff_min;
    let mut rb = ReadBuf::default();
    let mut out = Vec::new();
    loop {
        let reason = match connect(&bp, role, &mut rb).await {
            Ok(mut stream) => {
                bp.report(role, Ok(()), delay);
                delay = cfg.backoff_min;
                let reason = serve(&bp, &gw, role, &mut stream, &mut rb, &mut out).await;
                // What is still unwritten is dropped (at-most-once); reset rather than close
                // so the kernel does not deliver it late either.
                let _ =
                    rustix::net::sockopt::set_socket_linger(stream.get_ref(), Some(Duration::ZERO));
                reason
            }
            Err(reason) => reason,
        };
        // A batch the connection did not finish is not known to have reached Redis.
        if !out.is_empty() {
            let messages = count_publishes(&out);
            bp.stats.dropped_down.fetch_add(messages, Relaxed);
            out.clear();
        }
        if out.capacity() > SHRINK_ABOVE {
            out = Vec::new();
        }
        rb.reset();
        // Full jitter in [delay/2, delay], so instances do not reconnect in lockstep.
        let wait = delay.mul_f64(0.5 + fastrand::f64() / 2.0);
        bp.report(role, Err(&reason), wait);
        Timer::after(wait).await;
        delay = (delay * 2).min(cfg.backoff_max).max(cfg.backoff_min);
    }
}

/// Connects and sends `AUTH`, `SELECT` and `PING` (publisher) or `PSUBSCRIBE` (subscriber),
/// all within `timeout`.
async fn connect(bp: &Backplane, role: Role, rb: &mut ReadBuf) -> Result<Async<TcpStream>, String> {
    let cfg = &bp.cfg;
    let url = &cfg.redis;
    let work = async {
        let addrs = resolve(&url.host, url.port)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for a in addrs {
            match Async::<TcpStream>::connect(a).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or_else(|| format!("connect: {last}"))?;
        let _ = stream.get_ref().set_nodelay(true);
        let mut hello = Vec::new();
        let mut expect: Vec<&'static str> = Vec::new();
        if let Some(pass) = &url.password {
            match &url.username {
                Some(user) => {
                    resp::command(&mut hello, &[b"AUTH", user.as_bytes(), pass.as_bytes()])
                }
                None => resp::command(&mut hello, &[b"AUTH", pass.as_bytes()]),
            }
            expect.push("AUTH");
        }
        if url.db != 0 {
            resp::command(&mut hello, &[b"SELECT", url.db.to_string().as_bytes()]);
            expect.push("SELECT");
        }
        match role {
            Role::Publish => {
                hello.extend_from_slice(PING);
                expect.push("PING");
            }
            Role::Subscribe => {
                resp::command(&mut hello, &[b"PSUBSCRIBE", &bp.pattern()]);
                expect.push("PSUBSCRIBE");
            }
        }
        let sent = stream.write_all(&hello).await;
        hello.fill(0); // the password
        sent.map_err(|e| format!("write: {e}"))?;
        for cmd in expect {
            let refusal = read_reply(&mut stream, rb).await?;
            if let Some(text) = refusal {
                // The same for both connections, whichever command met it first.
                if text.starts_with("NOAUTH") {
                    return Err(format!(
                        "Redis wants a password ({text}): set WSGATE_REDIS_PASSWORD or \
                         redis://:password@host"
                    ));
                }
                return Err(format!("{cmd} refused: {text}"));
            }
        }
        Ok(stream)
    };
    work.or(async {
        Timer::after(cfg.timeout).await;
        Err(format!("no connection and reply within {:?}", cfg.timeout))
    })
    .await
}

/// Reads one reply during the handshake: `Ok(None)` for success, `Ok(Some(text))` for an
/// error reply.
async fn read_reply(
    stream: &mut Async<TcpStream>,
    rb: &mut ReadBuf,
) -> Result<Option<String>, String> {
    loop {
        match resp::parse(rb.data()) {
            Ok(Parsed::Complete { value, consumed }) => {
                let refusal = match value {
                    Value::Error(e) => Some(String::from_utf8_lossy(e).into_owned()),
                    _ => None,
                };
                rb.consume(consumed);
                return Ok(refusal);
            }
            Ok(Parsed::Partial) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, rb.spare()))
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by Redis".into());
        }
        rb.filled(n);
    }
}

/// Host names are resolved on a short-lived thread (`getaddrinfo` blocks); IP addresses
/// need no lookup.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = async_channel::bounded(1);
    let host = host.to_string();
    std::thread::Builder::new()
        .name("wsgate-resolve".into())
        .spawn(move || {
            let r = (host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            let _ = tx.try_send(r); // capacity 1, one send: never full
        })?;
    rx.recv()
        .await
        .map_err(|_| io::Error::other("resolver thread ended"))?
}

/// Serves one connection until it fails, and returns why. The publisher writes batches from
/// the queue and counts the replies; the subscriber delivers messages. Both send a `PING`
/// after `timeout` of silence and give up after another `timeout`.
async fn serve(
    bp: &Backplane,
    gw: &Gateway,
    role: Role,
    stream: &mut Async<TcpStream>,
    rb: &mut ReadBuf,
    out: &mut Vec<u8>,
) -> String {
    let timeout = bp.cfg.timeout;
    let mut last_read = Instant::now();
    let mut pinged = false;
    let mut ping_due = false;
    let mut written = 0usize;
    // Re-armed only when it fires, so a busy connection does not touch the timer wheel.
    let mut timer = Timer::at(last_read + timeout);
    // Replies that arrived with the handshake's last one.
    if let Err(e) = handle_replies(bp, gw, role, rb) {
        return e;
    }
    future::poll_fn(|cx| {
        for _ in 0..BUDGET {
            let mut progress = false;
            match Pin::new(&mut *stream).poll_read(cx, rb.spare()) {
                Poll::Ready(Ok(0)) => return Poll::Ready("connection closed by Redis".into()),
                Poll::Ready(Ok(n)) => {
                    rb.filled(n);
                    last_read = Instant::now();
                    pinged = false;
                    if let Err(e) = handle_replies(bp, gw, role, rb) {
                        return Poll::Ready(e);
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(format!("read: {e}")),
                Poll::Pending => {}
            }
            if written < out.len() {
                match Pin::new(&mut *stream).poll_write(cx, &out[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready("write: wrote 0 bytes".into()),
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(format!("write: {e}")),
                    Poll::Pending => {}
                }
            }
            if written == out.len() {
                if !out.is_empty() {
                    out.clear();
                    written = 0;
                    if out.capacity() > SHRINK_ABOVE {
                        out.shrink_to(SHRINK_ABOVE / 4);
                    }
                }
                if ping_due {
                    out.extend_from_slice(PING);
                    (ping_due, pinged) = (false, true);
                    progress = true;
                } else if role == Role::Publish && bp.poll_take(cx, out).is_ready() {
                    progress = true;
                }
            }
            if Pin::new(&mut timer).poll(cx).is_ready() {
                let silent = last_read.elapsed();
                if silent >= timeout * 2 {
                    return Poll::Ready(format!("no reply from Redis for {silent:.1?}"));
                }
                if silent >= timeout && !pinged {
                    ping_due = true;
                }
                let wait = if pinged || ping_due {
                    timeout * 2
                } else {
                    timeout
                };
                timer.set_at(last_read + wait);
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Out of budget with work left: let the other tasks on this thread run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Handles every complete reply in `rb`.
fn handle_replies(
    bp: &Backplane,
    gw: &Gateway,
    role: Role,
    rb: &mut ReadBuf,
) -> Result<(), String> {
    loop {
        let (value, consumed) = match resp::parse(rb.data()) {
            Ok(Parsed::Complete { value, consumed }) => (value, consumed),
            Ok(Parsed::Partial) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        match (role, value) {
            (_, Value::Error(e)) => {
                return Err(format!("Redis error: {}", String::from_utf8_lossy(e)));
            }
            (Role::Publish, Value::Integer(_)) => {
                bp.stats.published.fetch_add(1, Relaxed);
            }
            (Role::Subscribe, Value::Array(a)) => {
                let mut items = a.iter();
                // `pong` and `psubscribe` confirmations need nothing.
                if items.next() == Some(Value::Bulk(b"pmessage")) {
                    let _pattern = items.next();
                    match (items.next(), items.next()) {
                        (Some(Value::Bulk(channel)), Some(Value::Bulk(message))) => {
                            bp.on_message(gw, channel, message);
                        }
                        _ => return Err("malformed pmessage".into()),
                    }
                }
            }
            // PONG, and anything else harmless.
            _ => {}
        }
        rb.consume(consumed);
    }
}

/// `PUBLISH` commands in a batch (each starts with `*3\r\n`; a `PING` starts with `*1`).
fn count_publishes(mut buf: &[u8]) -> u64 {
    let mut n = 0;
    while let Ok(Parsed::Complete { value, consumed }) = resp::parse(buf) {
        if matches!(value, Value::Array(a) if a.len() == 3) {
            n += 1;
        }
        buf = &buf[consumed..];
    }
    n
}

/// A connection's read buffer: `buf[start..end]` is unparsed data.
#[derive(Debug, Default)]
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Free space for the next read: at least [`MIN_READ`] bytes, made by moving unparsed
    /// data to the front or, when a reply is bigger than the buffer, by growing it.
    fn spare(&mut self) -> &mut [u8] {
        if self.buf.len() - self.end < MIN_READ {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.buf.len() - self.end < MIN_READ {
                let len = (self.buf.len() * 2).max(READ_BUF);
                self.buf.resize(len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Empties it for the next connection, giving back what a large reply made it grow to.
    fn reset(&mut self) {
        (self.start, self.end) = (0, 0);
        if self.buf.len() > SHRINK_ABOVE {
            self.buf = Vec::new();
        }
    }
}

/// An envelope read back from a `PUBLISH` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The publishing process.
    pub node: &'a [u8; NODE_ID_LEN],
    /// What was published.
    pub body: Body<'a>,
}

/// The message kinds an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// A plain WebSocket text message.
    Text(&'a str),
    /// A plain WebSocket binary message.
    Binary(&'a [u8]),
    /// A Socket.IO event's arguments, `["name", ...]`.
    SocketIo(&'a str),
}

/// Why a payload on our channels is not an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Shorter than [`HEADER_LEN`].
    Short(usize),
    /// Another format version.
    Version(u8),
    /// An unknown kind byte.
    Kind(u8),
    /// Text or Socket.IO arguments that are not UTF-8.
    NotUtf8,
    /// Socket.IO arguments that are not a JSON array.
    NotArgs,
}

/// The kind byte and data of a payload.
fn parts<'a>(payload: &Payload<'a>) -> (u8, &'a [u8]) {
    match *payload {
        Payload::Raw {
            kind: frame::Kind::Text,
            data,
        } => (KIND_TEXT, data),
        Payload::Raw {
            kind: frame::Kind::Binary,
            data,
        } => (KIND_BINARY, data),
        Payload::SocketIo { args, .. } => (KIND_SOCKETIO, args.as_bytes()),
    }
}

/// Encodes an envelope (the relay writes the same bytes straight into its queue).
pub fn encode(node: &[u8; NODE_ID_LEN], payload: &Payload<'_>) -> Vec<u8> {
    let (kind, data) = parts(payload);
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(node);
    out.extend_from_slice(data);
    out
}

/// Decodes an envelope, pure.
pub fn decode(b: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if b.len() < HEADER_LEN {
        return Err(EnvelopeError::Short(b.len()));
    }
    if b[0] != VERSION {
        return Err(EnvelopeError::Version(b[0]));
    }
    let node: &[u8; NODE_ID_LEN] = b[2..HEADER_LEN].try_into().expect("length checked");
    let data = &b[HEADER_LEN..];
    let text = || std::str::from_utf8(data).map_err(|_| EnvelopeError::NotUtf8);
    let body = match b[1] {
        KIND_TEXT => Body::Text(text()?),
        KIND_BINARY => Body::Binary(data),
        KIND_SOCKETIO => {
            let args = text()?;
            if !(args.starts_with('[') && args.ends_with(']')) {
                return Err(EnvelopeError::NotArgs);
            }
            Body::SocketIo(args)
        }
        k => return Err(EnvelopeError::Kind(k)),
    };
    Ok(Envelope { node, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisUrl;
    use std::task::Wake;

    const NODE: [u8; NODE_ID_LEN] = *b"0123456789abcdef";

    #[test]
    fn envelopes_round_trip_byte_by_byte() {
        let text = Payload::Raw {
            kind: frame::Kind::Text,
            data: "hé".as_bytes(),
        };
        let e = encode(&NODE, &text);
        assert_eq!(e, b"\x01t0123456789abcdefh\xc3\xa9");
        assert_eq!(
            decode(&e),
            Ok(Envelope {
                node: &NODE,
                body: Body::Text("hé")
            })
        );
        let bin = Payload::Raw {
            kind: frame::Kind::Binary,
            data: b"\0\xff\r\n",
        };
        let e = encode(&NODE, &bin);
        assert_eq!(&e[..2], b"\x01b");
        assert_eq!(decode(&e).unwrap().body, Body::Binary(b"\0\xff\r\n"));
        let sio = Payload::SocketIo {
            args: r#"["chat message","x"]"#,
            chat: Some("x"),
        };
        let e = encode(&NODE, &sio);
        assert_eq!(&e[..2], b"\x01s");
        assert_eq!(
            decode(&e).unwrap().body,
            Body::SocketIo(r#"["chat message","x"]"#)
        );
        // Empty data is fine.
        let empty = encode(
            &NODE,
            &Payload::Raw {
                kind: frame::Kind::Text,
                data: b"",
            },
        );
        assert_eq!(empty.len(), HEADER_LEN);
        assert_eq!(decode(&empty).unwrap().body, Body::Text(""));
    }

    #[test]
    fn bad_envelopes_are_refused() {
        assert_eq!(decode(b"\x01t0123"), Err(EnvelopeError::Short(6)));
        assert_eq!(
            decode(b"\x02t0123456789abcdefhi"),
            Err(EnvelopeError::Version(2))
        );
        assert_eq!(
            decode(b"\x01x0123456789abcdefhi"),
            Err(EnvelopeError::Kind(b'x'))
        );
        assert_eq!(
            decode(b"\x01t0123456789abcdef\xff"),
            Err(EnvelopeError::NotUtf8)
        );
        assert_eq!(
            decode(b"\x01s0123456789abcdef{}"),
            Err(EnvelopeError::NotArgs)
        );
    }

    struct Count(AtomicU64);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn backplane(queue_messages: usize, queue_bytes: usize) -> Arc<Backplane> {
        let mut cfg = BackplaneConfig::new(RedisUrl::default());
        cfg.queue_messages = queue_messages;
        cfg.queue_bytes = queue_bytes;
        Backplane::new(cfg)
    }

    fn text(s: &str) -> Payload<'_> {
        Payload::Raw {
            kind: frame::Kind::Text,
            data: s.as_bytes(),
        }
    }

    #[test]
    fn relay_queues_publish_commands_and_drops_the_newest_when_full() {
        let bp = backplane(2, 1 << 20);
        // Not connected: dropped at once, not kept for later.
        bp.relay("main", &text("early"));
        assert_eq!(bp.stats.dropped_down.load(Relaxed), 1);
        lock(&bp.queue).up = true;
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert_eq!(bp.poll_take(&mut cx, &mut out), Poll::Pending);
        bp.relay("main", &text("one"));
        assert_eq!(count.0.load(Relaxed), 1, "the publisher is woken");
        bp.relay("room-2", &text("two"));
        bp.relay("main", &text("three"));
        assert_eq!(bp.stats.dropped_full.load(Relaxed), 1);
        assert_eq!(bp.poll_take(&mut cx, &mut out), Poll::Ready(2));
        let mut want = Vec::new();
        for (room, msg) in [("main", "one"), ("room-2", "two")] {
            resp::command(
                &mut want,
                &[
                    b"PUBLISH",
                    format!("wsgate:{room}").as_bytes(),
                    &encode(&bp.node, &text(msg)),
                ],
            );
        }
        assert_eq!(out, want);
        assert_eq!(count_publishes(&out), 2);
        // The byte cap: a second message that does not fit is dropped; a first always fits.
        let bp = backplane(100, 10);
        lock(&bp.queue).up = true;
        bp.relay("main", &text("bigger than ten bytes"));
        bp.relay("main", &text("x"));
        assert_eq!(lock(&bp.queue).entries, 1);
        assert_eq!(bp.stats.dropped_full.load(Relaxed), 1);
    }

    #[test]
    fn losing_the_publisher_drops_what_is_queued() {
        let bp = backplane(10, 1 << 20);
        bp.report(Role::Publish, Ok(()), Duration::ZERO);
        bp.report(Role::Subscribe, Ok(()), Duration::ZERO);
        assert!(bp.is_up());
        bp.relay("main", &text("a"));
        bp.relay("main", &text("b"));
        bp.report(Role::Publish, Err("test"), Duration::ZERO);
        assert!(!bp.is_up());
        assert_eq!(bp.stats.dropped_down.load(Relaxed), 2);
        assert_eq!(bp.stats.failures.load(Relaxed), 1);
        assert_eq!(lock(&bp.queue).entries, 0);
        bp.relay("main", &text("c"));
        assert_eq!(bp.stats.dropped_down.load(Relaxed), 3);
        let mut m = String::new();
        bp.render_metrics(&mut m);
        assert!(m.contains("\nwsgate_backplane_up 0\n"), "{m}");
        assert!(
            m.contains("wsgate_backplane_dropped_total{reason=\"down\"} 3\n"),
            "{m}"
        );
        assert!(m.contains("wsgate_backplane_failures_total 1\n"), "{m}");
    }

    #[test]
    fn the_pattern_escapes_glob_characters() {
        let mut cfg = BackplaneConfig::new(RedisUrl::default());
        cfg.channel_prefix = "a*b?[c]\\".into();
        assert_eq!(Backplane::new(cfg).pattern(), b"a\\*b\\?\\[c\\]\\\\:*");
        assert_eq!(backplane(1, 1).pattern(), b"wsgate:*");
    }

    #[test]
    fn read_buffer_compacts_and_grows() {
        let mut rb = ReadBuf::default();
        assert_eq!(rb.spare().len(), READ_BUF);
        rb.spare()[..4].copy_from_slice(b"+OK\r");
        rb.filled(4);
        assert_eq!(resp::parse(rb.data()), Ok(Parsed::Partial));
        // Fill it to the brim: it grows for the rest of a big reply.
        let n = rb.spare().len();
        rb.filled(n);
        assert!(rb.spare().len() >= MIN_READ);
        rb.consume(4);
        assert_eq!(rb.data().len(), n);
        rb.reset();
        assert!(rb.data().is_empty());
    }
}
