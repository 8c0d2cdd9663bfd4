//! One Redis connection's life: connect (DNS, TCP, `AUTH`, `SELECT`, the first reply, all
//! within `timeout`), serve until it fails, back off, again, for ever. The publisher writes
//! batches from the queue and counts the replies; the subscriber hands messages to the hub.
//! Both `PING` after `timeout` of silence and give up after another `timeout`. Every failure
//! is a [`LinkError`].

use super::resp::{self, Owned, Parsed, RespError, Value};
use super::{count_publishes, scripts, Backplane, Role, Slot, SHRINK_ABOVE};
use crate::hub::Hub;
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt};
use smol::{Async, Timer};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// First size of a connection's read buffer; it grows to the largest reply (bounded by the
/// RESP limits) and shrinks back when the connection ends.
const READ_BUF: usize = 4096;
/// Least free space handed to a read; below it the buffer is compacted or grown.
const MIN_READ: usize = 1024;
/// Reads or writes in one poll before the task yields, so a flood from Redis cannot starve
/// the sessions on its executor thread.
const BUDGET: u32 = 64;
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Why a connection to Redis failed or was given up.
#[derive(Debug)]
pub enum LinkError {
    /// The host name did not resolve.
    Resolve(String, io::Error),
    /// No address accepted the connection.
    Connect(io::Error),
    /// Connecting and the first replies took longer than `timeout`.
    ConnectTimeout(Duration),
    /// A write failed.
    Write(io::Error),
    /// A read failed.
    Read(io::Error),
    /// Redis closed the connection.
    Closed,
    /// Redis wants a password and none was given.
    NoAuth(String),
    /// A handshake command was refused.
    Refused(&'static str, String),
    /// An error reply on an established connection.
    Redis(String),
    /// Nothing from Redis for this long, a `PING` included.
    Silent(Duration),
    /// Redis sent bytes that are not RESP, or a reply over the limits.
    Resp(RespError),
    /// A `pmessage` without its channel and payload.
    MalformedPmessage,
}

impl LinkError {
    /// Stable label: one outage logs each kind of failure once.
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkError::Resolve(..) => "resolve",
            LinkError::Connect(_) => "connect",
            LinkError::ConnectTimeout(_) => "connect_timeout",
            LinkError::Write(_) => "write",
            LinkError::Read(_) => "read",
            LinkError::Closed => "closed",
            LinkError::NoAuth(_) => "noauth",
            LinkError::Refused(..) => "refused",
            LinkError::Redis(_) => "redis_error",
            LinkError::Silent(_) => "silent",
            LinkError::Resp(_) => "resp",
            LinkError::MalformedPmessage => "malformed_pmessage",
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Resolve(host, e) => write!(f, "cannot resolve {host}: {e}"),
            LinkError::Connect(e) => write!(f, "connect: {e}"),
            LinkError::ConnectTimeout(t) => write!(f, "no connection and reply within {t:?}"),
            LinkError::Write(e) => write!(f, "write: {e}"),
            LinkError::Read(e) => write!(f, "read: {e}"),
            LinkError::Closed => f.write_str("connection closed by Redis"),
            LinkError::NoAuth(text) => write!(
                f,
                "Redis wants a password ({text}): set WSGATE_REDIS_PASSWORD or \
                 redis://:password@host"
            ),
            LinkError::Refused(cmd, text) => write!(f, "{cmd} refused: {text}"),
            LinkError::Redis(text) => write!(f, "Redis error: {text}"),
            LinkError::Silent(t) => write!(f, "no reply from Redis for {t:.1?}"),
            LinkError::Resp(e) => e.fmt(f),
            LinkError::MalformedPmessage => f.write_str("malformed pmessage"),
        }
    }
}

impl From<RespError> for LinkError {
    fn from(e: RespError) -> Self {
        LinkError::Resp(e)
    }
}

/// One connection's life, for ever: connect, serve until it fails, back off, again.
pub(super) async fn run(bp: Arc<Backplane>, hub: Arc<Hub>, role: Role) {
    let cfg = &bp.cfg;
    let mut delay = cfg.backoff_min;
    let mut rb = ReadBuf::default();
    let mut out = Vec::new();
    // What each command written and not answered yet is for, in order.
    let mut inflight = VecDeque::new();
    loop {
        let reason = match connect(&bp, role, &mut rb).await {
            Ok(mut stream) => {
                bp.report(role, Ok(()), delay);
                delay = cfg.backoff_min;
                let mut link = Link {
                    out: &mut out,
                    inflight: &mut inflight,
                    rb: &mut rb,
                };
                let reason = serve(&bp, &hub, role, &mut stream, &mut link).await;
                // What is still unwritten is dropped (at-most-once); reset rather than close
                // so the kernel does not deliver it late either.
                let _ =
                    rustix::net::sockopt::set_socket_linger(stream.get_ref(), Some(Duration::ZERO));
                reason
            }
            Err(reason) => reason,
        };
        // Commands not answered are not known to have reached Redis; whoever waits for
        // one hears that now.
        bp.stats
            .dropped_down
            .fetch_add(count_publishes(&inflight), Relaxed);
        inflight.clear();
        out.clear();
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
async fn connect(
    bp: &Backplane,
    role: Role,
    rb: &mut ReadBuf,
) -> Result<Async<TcpStream>, LinkError> {
    let cfg = &bp.cfg;
    let url = &cfg.redis;
    let work = async {
        let addrs = resolve(&url.host, url.port)
            .await
            .map_err(|e| LinkError::Resolve(url.host.clone(), e))?;
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
        let mut stream = stream.ok_or(LinkError::Connect(last))?;
        let _ = stream.get_ref().set_nodelay(true);
        let mut hello = Vec::new();
        // Each command's name, and the bulk string it must answer when that is checked.
        let mut expect: Vec<(&'static str, Option<&'static str>)> = Vec::new();
        if let Some(pass) = &url.password {
            match &url.username {
                Some(user) => {
                    resp::command(&mut hello, &[b"AUTH", user.as_bytes(), pass.as_bytes()])
                }
                None => resp::command(&mut hello, &[b"AUTH", pass.as_bytes()]),
            }
            expect.push(("AUTH", None));
        }
        if url.db != 0 {
            resp::command(&mut hello, &[b"SELECT", url.db.to_string().as_bytes()]);
            expect.push(("SELECT", None));
        }
        match role {
            Role::Publish => {
                hello.extend_from_slice(PING);
                expect.push(("PING", None));
                if bp.ordered() {
                    // The shared order's scripts, checked against the SHAs their calls use.
                    for (script, sha) in [
                        (scripts::PUBLISH, scripts::PUBLISH_SHA),
                        (scripts::FOLLOW, scripts::FOLLOW_SHA),
                    ] {
                        resp::command(&mut hello, &[b"SCRIPT", b"LOAD", script.as_bytes()]);
                        expect.push(("SCRIPT LOAD", Some(sha)));
                    }
                    // Which primary numbers the rooms now: a failover changes it, and the
                    // scripts then start each room's new epoch.
                    resp::command(&mut hello, &[b"INFO", b"replication"]);
                    expect.push(("INFO", None));
                }
            }
            Role::Subscribe => {
                resp::command(&mut hello, &[b"PSUBSCRIBE", &bp.pattern()]);
                expect.push(("PSUBSCRIBE", None));
            }
        }
        let sent = stream.write_all(&hello).await;
        hello.fill(0); // the password
        sent.map_err(LinkError::Write)?;
        for (cmd, want) in expect {
            let refusal = match read_one(bp, &mut stream, rb).await? {
                Owned::Error(text) => Some(text),
                Owned::Bytes(b) => match want {
                    Some(w) if b != w.as_bytes() => {
                        Some(format!("answered {}, not {w}", String::from_utf8_lossy(&b)))
                    }
                    _ if cmd == "INFO" => {
                        bp.set_replid(replid_of(&b).unwrap_or_default());
                        None
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(text) = refusal {
                // The same for both connections, whichever command met it first.
                if text.starts_with("NOAUTH") {
                    return Err(LinkError::NoAuth(text));
                }
                return Err(LinkError::Refused(cmd, text));
            }
        }
        Ok(stream)
    };
    work.or(async {
        Timer::after(cfg.timeout).await;
        Err(LinkError::ConnectTimeout(cfg.timeout))
    })
    .await
}

/// Reads one reply during the handshake, copied out of the buffer.
async fn read_one(
    bp: &Backplane,
    stream: &mut Async<TcpStream>,
    rb: &mut ReadBuf,
) -> Result<Owned, LinkError> {
    loop {
        if let Parsed::Complete { value, consumed } = resp::parse_with(rb.data(), &bp.limits)? {
            let reply = value.to_owned();
            rb.consume(consumed);
            return Ok(reply);
        }
        let n = future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, rb.spare()))
            .await
            .map_err(LinkError::Read)?;
        if n == 0 {
            return Err(LinkError::Closed);
        }
        rb.filled(n);
    }
}

/// `master_replid` from `INFO replication`'s text, pure.
pub(super) fn replid_of(info: &[u8]) -> Option<&[u8]> {
    info.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"master_replid:"))
        .map(|v| v.strip_suffix(b"\r").unwrap_or(v))
        .filter(|v| !v.is_empty() && v.len() <= 64)
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

/// One connection's buffers: what is being written, what each unanswered command is for,
/// and what was read.
struct Link<'a> {
    out: &'a mut Vec<u8>,
    inflight: &'a mut VecDeque<Slot>,
    rb: &'a mut ReadBuf,
}

/// Serves one connection until it fails, and returns why.
async fn serve(
    bp: &Backplane,
    hub: &Hub,
    role: Role,
    stream: &mut Async<TcpStream>,
    link: &mut Link<'_>,
) -> LinkError {
    let Link { out, inflight, rb } = link;
    let timeout = bp.cfg.timeout;
    let mut last_read = Instant::now();
    let mut pinged = false;
    let mut ping_due = false;
    let mut written = 0usize;
    // Re-armed only when it fires, so a busy connection does not touch the timer wheel.
    let mut timer = Timer::at(last_read + timeout);
    // Replies that arrived with the handshake's last one.
    if let Err(e) = handle_replies(bp, hub, role, rb, inflight) {
        return e;
    }
    future::poll_fn(|cx| {
        for _ in 0..BUDGET {
            let mut progress = false;
            match Pin::new(&mut *stream).poll_read(cx, rb.spare()) {
                Poll::Ready(Ok(0)) => return Poll::Ready(LinkError::Closed),
                Poll::Ready(Ok(n)) => {
                    rb.filled(n);
                    last_read = Instant::now();
                    pinged = false;
                    if let Err(e) = handle_replies(bp, hub, role, rb, inflight) {
                        return Poll::Ready(e);
                    }
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(LinkError::Read(e)),
                Poll::Pending => {}
            }
            if written < out.len() {
                match Pin::new(&mut *stream).poll_write(cx, &out[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(LinkError::Write(io::ErrorKind::WriteZero.into()))
                    }
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(LinkError::Write(e)),
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
                    if role == Role::Publish {
                        inflight.push_back(Slot::Quiet);
                    }
                    (ping_due, pinged) = (false, true);
                    progress = true;
                } else if role == Role::Publish && bp.poll_take(cx, out, inflight).is_ready() {
                    progress = true;
                }
            }
            if Pin::new(&mut timer).poll(cx).is_ready() {
                let silent = last_read.elapsed();
                if silent >= timeout * 2 {
                    return Poll::Ready(LinkError::Silent(silent));
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

/// Handles every complete reply in `rb`: the publisher's each answer the oldest command
/// in `inflight`.
fn handle_replies(
    bp: &Backplane,
    hub: &Hub,
    role: Role,
    rb: &mut ReadBuf,
    inflight: &mut VecDeque<Slot>,
) -> Result<(), LinkError> {
    loop {
        let (value, consumed) = match resp::parse_with(rb.data(), &bp.limits)? {
            Parsed::Complete { value, consumed } => (value, consumed),
            Parsed::Partial => return Ok(()),
        };
        let slot = match role {
            Role::Publish => inflight.pop_front(),
            Role::Subscribe => None,
        };
        match (role, value, slot) {
            (_, v, Some(Slot::Reply(tx))) => {
                // The waiter may have given up: nothing to do then.
                let _ = tx.try_send(v.to_owned());
            }
            (_, Value::Error(e), _) => {
                return Err(LinkError::Redis(String::from_utf8_lossy(e).into_owned()));
            }
            (Role::Publish, Value::Integer(_), Some(Slot::Publish)) => {
                bp.stats.published.fetch_add(1, Relaxed);
            }
            (Role::Subscribe, Value::Array(a), _) => {
                let mut items = a.iter();
                // `pong` and `psubscribe` confirmations need nothing.
                if items.next() == Some(Value::Bulk(b"pmessage")) {
                    let _pattern = items.next();
                    match (items.next(), items.next()) {
                        (Some(Value::Bulk(channel)), Some(Value::Bulk(message))) => {
                            bp.on_message(hub, channel, message);
                        }
                        _ => return Err(LinkError::MalformedPmessage),
                    }
                }
            }
            // PONG, and anything else harmless.
            _ => {}
        }
        rb.consume(consumed);
    }
}

/// A connection's read buffer: `buf[start..end]` is unparsed data.
#[derive(Debug, Default)]
pub(super) struct ReadBuf {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_replication_id_is_read_from_info() {
        let info = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\
            master_replid:8b5e7f0e3c1d2a4b6c8d0e2f4a6b8c0d2e4f6a8b\r\n\
            master_replid2:0000000000000000000000000000000000000000\r\n";
        assert_eq!(
            replid_of(info),
            Some(&b"8b5e7f0e3c1d2a4b6c8d0e2f4a6b8c0d2e4f6a8b"[..])
        );
        assert_eq!(replid_of(b"role:master\r\n"), None);
        assert_eq!(replid_of(b"master_replid:\r\n"), None);
    }

    #[test]
    fn link_errors_have_distinct_labels_and_hide_nothing_secret() {
        let e = LinkError::NoAuth("NOAUTH Authentication required.".into());
        assert_eq!(e.as_str(), "noauth");
        assert!(e.to_string().contains("WSGATE_REDIS_PASSWORD"));
        assert_eq!(
            LinkError::Resp(RespError::BulkTooLong(10)).to_string(),
            "RESP: bulk string of 10 bytes"
        );
    }
}
