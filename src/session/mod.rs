//! One WebSocket connection after the handshake: one task that reads frames, writes the
//! member's outbox, pings, and closes with a code that says why.
//!
//! # Design
//! * **One task, one poll loop.** Each pass (1) writes whatever is pending, (2) refills the
//!   local queue from the hub outbox once the local queue is fully written, (3) reads at most
//!   one message, (4) checks the ping timer. Reading goes on while a write is blocked, so
//!   pongs and Close frames from the client are always seen.
//! * **All socket writes are ours.** tungstenite runs over [`Io`], whose writes append to a
//!   small `ctrl` buffer (Pong, Ping, Close frames) instead of the socket. The loop writes
//!   `ctrl` and the shared, pre-encoded broadcast frames with one `writev`, always at frame
//!   boundaries, so a Pong never lands inside a data frame and every queued frame of a
//!   connection goes out in one syscall.
//! * **Bounded everywhere.** The hub outbox is bounded (full-policy: evict, see
//!   [`crate::hub`]); the local queue is only refilled when empty; `ctrl` is capped at
//!   [`CTRL_CAP`] bytes (a ping flood past it closes the connection with 1008).
//! * **Keepalive.** A Ping every `ping_interval`; any frame from the client clears the
//!   pong deadline; none within `pong_timeout` closes the connection.
//! * **Close.** The Close frame goes out through `ctrl`, then the write side is shut, and the
//!   rest of the client's bytes are read and dropped until EOF or `close_timeout`, so that the
//!   kernel does not answer unread bytes with a RST that would destroy the Close frame.

use crate::config::SessionConfig;
use crate::frame::{self, Frame, Kind};
use crate::hub::{Delivery, Membership, Payload, Protocol, Signal};
use crate::server::Gateway;
use crate::sio::{self, Packet, SioError};
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use smol::{Async, Timer};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Most bytes of control frames (Pong, Ping, Close) that may wait for the socket. A Pong is
/// at most 127 bytes and tungstenite keeps only the newest one pending, so this is only
/// reached by a client that floods pings while not reading.
pub const CTRL_CAP: usize = 4096;
/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;
/// Consecutive ready events before the task yields to the executor, so that one flooding
/// client cannot starve the others on its thread.
const BUDGET: u32 = 64;

/// The stream tungstenite runs over: reads come from the socket, writes go to `ctrl`.
#[derive(Debug)]
pub(crate) struct Io {
    socket: Async<TcpStream>,
    ctrl: Vec<u8>,
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.ctrl.len() + buf.len() > CTRL_CAP {
            return Poll::Ready(Err(io::Error::other(CtrlFull)));
        }
        self.ctrl.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The error [`Io`] returns when `ctrl` would pass [`CTRL_CAP`].
#[derive(Debug)]
struct CtrlFull;

impl std::fmt::Display for CtrlFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {CTRL_CAP} bytes of control frames waiting")
    }
}

impl std::error::Error for CtrlFull {}

/// Who a session is, for its log lines.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Connection number, unique per process.
    pub conn: u64,
    /// The real client address (from PROXY when present).
    pub client: SocketAddr,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent Close with this code (1005 when it sent none).
    ClientClose(u16),
    /// The connection ended without a Close frame.
    Eof,
    /// A read or write failed (reset, broken pipe).
    IoError,
    /// No frame or Pong within `pong_timeout` after a Ping: 1008.
    PongTimeout,
    /// A message over `max_message_bytes`: 1009.
    TooBig,
    /// A frame that breaks RFC 6455: 1002.
    ProtocolError,
    /// A text message that is not UTF-8: 1007.
    InvalidUtf8,
    /// Control frames piled up past [`CTRL_CAP`]: 1008.
    ControlFlood,
    /// The outbox overflowed: 1008.
    SlowConsumer,
    /// More than `--max-messages-per-second`: 1008.
    RateLimited,
    /// Server shutdown: 1001.
    GoingAway,
    /// The Socket.IO client sent Engine.IO close (`1`): 1000.
    SioClose,
    /// A malformed Engine.IO / Socket.IO packet: 1008.
    SioBadPacket(SioError),
    /// Socket.IO binary events and attachments are not supported: 1003.
    SioBinary,
}

impl End {
    /// The close code we send (None when the client closed or vanished).
    pub fn code(self) -> Option<u16> {
        match self {
            End::ClientClose(_) | End::Eof | End::IoError => None,
            End::PongTimeout | End::ControlFlood | End::SlowConsumer | End::RateLimited => {
                Some(1008)
            }
            End::TooBig => Some(1009),
            End::ProtocolError => Some(1002),
            End::InvalidUtf8 => Some(1007),
            End::GoingAway => Some(1001),
            End::SioClose => Some(1000),
            End::SioBadPacket(_) => Some(1008),
            End::SioBinary => Some(1003),
        }
    }

    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            End::ClientClose(_) => "client_close",
            End::Eof => "eof",
            End::IoError => "io_error",
            End::PongTimeout => "pong_timeout",
            End::TooBig => "message_too_big",
            End::ProtocolError => "protocol_error",
            End::InvalidUtf8 => "invalid_utf8",
            End::ControlFlood => "control_flood",
            End::SlowConsumer => "slow_consumer",
            End::RateLimited => "rate_limited",
            End::GoingAway => "going_away",
            End::SioClose => "sio_close",
            End::SioBadPacket(e) => e.as_str(),
            End::SioBinary => "sio_binary_unsupported",
        }
    }

    fn reason_text(self) -> &'static str {
        match self {
            End::PongTimeout => "pong timeout",
            End::TooBig => "message too big",
            End::ProtocolError => "protocol error",
            End::InvalidUtf8 => "invalid utf-8",
            End::ControlFlood => "control frame flood",
            End::SlowConsumer => "slow consumer",
            End::RateLimited => "rate limit",
            End::GoingAway => "server going away",
            End::SioBadPacket(_) => "bad socket.io packet",
            End::SioBinary => "binary events not supported",
            _ => "",
        }
    }

    /// Whether the client caused it (logged as WARN) rather than a normal end.
    pub fn is_client_fault(self) -> bool {
        matches!(
            self,
            End::PongTimeout
                | End::TooBig
                | End::ProtocolError
                | End::InvalidUtf8
                | End::ControlFlood
                | End::SlowConsumer
                | End::RateLimited
                | End::SioBadPacket(_)
                | End::SioBinary
        )
    }
}

/// Counts for the close log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Messages received from the client.
    pub msgs_in: u64,
    /// Frames written to the client.
    pub frames_out: u64,
}

/// The tungstenite settings for a session: small buffers, our limits.
pub(crate) fn ws_config(cfg: &SessionConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(CTRL_CAP)
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_message_bytes))
}

enum Event {
    Read(Option<Result<Message, WsError>>),
    Signal(Signal),
    Tick,
    WriteFailed,
}

/// Runs a session to its end and returns how it ended. Plain sessions arrive as members of
/// `room` (joined before the 101 went out); Socket.IO sessions get the Engine.IO open packet
/// and join when they connect to `/`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    socket: Async<TcpStream>,
    leftover: Vec<u8>,
    mut membership: Option<Membership>,
    room: &str,
    protocol: Protocol,
    gw: &Gateway,
    peer: &Peer,
    stats: &mut Stats,
) -> End {
    let cfg = &gw.config.session;
    let metrics = &gw.metrics;
    let mut bucket = TokenBucket::new(gw.config.limits.max_messages_per_second);
    let io = Io {
        socket,
        ctrl: Vec::new(),
    };
    // Boxed: these one-off futures would otherwise widen every session's state machine
    // (it is as large as its largest await point) for the connection's whole life.
    let mut ws = Box::pin(WebSocketStream::from_partially_read(
        io,
        leftover,
        Role::Server,
        Some(ws_config(cfg)),
    ))
    .await;
    let sid = match protocol {
        Protocol::Raw => String::new(),
        Protocol::SocketIo => {
            // In the lobby until it connects to `/`: no messages, but shutdown reaches it.
            membership = Some(gw.hub.join_lobby(protocol));
            let sid = sio::new_sid();
            let open = sio::open_packet(
                &sid,
                cfg.ping_interval.as_millis(),
                cfg.pong_timeout.as_millis(),
                cfg.max_message_bytes,
            );
            let _ = queue(&mut ws, Message::text(open));
            sid
        }
    };
    let mut out: VecDeque<Frame> = VecDeque::new();
    let mut offset = 0usize;
    let mut next_ping = Instant::now() + cfg.ping_interval;
    let mut pong_deadline: Option<Instant> = None;
    let mut timer = Timer::at(next_ping);
    let mut budget = BUDGET;

    let end = loop {
        if budget == 0 {
            budget = BUDGET;
            future::yield_now().await;
        }
        budget -= 1;
        let event = future::poll_fn(|cx| {
            loop {
                if !out.is_empty() || !ws.get_ref().ctrl.is_empty() {
                    // Pending leaves frames in `out`; the outbox is still polled below.
                    if let Poll::Ready(Err(_)) =
                        poll_write_out(ws.get_mut(), &mut out, &mut offset, stats, cx)
                    {
                        return Poll::Ready(Event::WriteFailed);
                    }
                }
                let Some(m) = &membership else { break };
                // Refill only once everything taken before is written: the local queue
                // never grows past one outbox's worth.
                let into = if out.is_empty() { Some(&mut out) } else { None };
                match m.member().poll_outbox(cx, into) {
                    Poll::Ready(Signal::Frames) => continue,
                    Poll::Ready(s) => return Poll::Ready(Event::Signal(s)),
                    Poll::Pending => {}
                }
                break;
            }
            if let Poll::Ready(m) = ws.poll_next(cx) {
                return Poll::Ready(Event::Read(m));
            }
            if Pin::new(&mut timer).poll(cx).is_ready() {
                return Poll::Ready(Event::Tick);
            }
            Poll::Pending
        })
        .await;

        match event {
            Event::Read(Some(Ok(msg))) => {
                pong_deadline = None;
                let (kind, payload): (Kind, &[u8]) = match &msg {
                    Message::Text(t) => (Kind::Text, t.as_bytes()),
                    Message::Binary(b) => (Kind::Binary, b),
                    Message::Close(frame) => {
                        let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                        // tungstenite queued the reply; one more read moves it into `ctrl`
                        // and ends the stream (a server side terminates after replying).
                        let _ = future::poll_once(ws.next()).await;
                        break End::ClientClose(code);
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                };
                // Engine.IO's own packets (pong `3`, ping `2`, noop `6`) are not messages:
                // they are neither counted nor rate limited.
                let is_message = protocol == Protocol::Raw || payload.first() == Some(&b'4');
                if is_message {
                    stats.msgs_in += 1;
                    metrics.messages_in.fetch_add(1, Relaxed);
                    metrics.bytes_in.fetch_add(payload.len() as u64, Relaxed);
                    if !bucket.take(Instant::now()) {
                        break End::RateLimited;
                    }
                }
                if cfg.log_messages && is_message {
                    crate::info!(
                        "message",
                        conn = peer.conn,
                        client = peer.client,
                        room = room,
                        bytes = payload.len(),
                        text = Printable(kind, payload)
                    );
                }
                let d = match (protocol, kind) {
                    (Protocol::Raw, _) => {
                        let m = membership.as_ref().expect("plain sessions are members");
                        m.publish(kind, payload)
                    }
                    (Protocol::SocketIo, Kind::Binary) => break End::SioBinary,
                    (Protocol::SocketIo, Kind::Text) => {
                        let text = std::str::from_utf8(payload).unwrap_or_default();
                        match socket_io_packet(&mut ws, text, &sid, room, &mut membership, gw) {
                            Ok(d) => d,
                            Err(end) => break end,
                        }
                    }
                };
                let frame_len = (frame::header_len(payload.len()) + payload.len()) as u64;
                metrics.messages_out.fetch_add(d.delivered as u64, Relaxed);
                metrics
                    .bytes_out
                    .fetch_add(d.delivered as u64 * frame_len, Relaxed);
                if d.evicted > 0 {
                    metrics.evictions.fetch_add(d.evicted as u64, Relaxed);
                }
            }
            Event::Read(Some(Err(e))) => break classify(&e),
            Event::Read(None) => break End::Eof,
            Event::Signal(Signal::Evicted) => break End::SlowConsumer,
            Event::Signal(Signal::GoingAway) => break End::GoingAway,
            Event::Signal(Signal::Frames) => {}
            Event::WriteFailed => break End::IoError,
            Event::Tick => {
                let now = Instant::now();
                if pong_deadline.is_some_and(|d| now >= d) {
                    metrics.pong_timeouts.fetch_add(1, Relaxed);
                    break End::PongTimeout;
                }
                if now >= next_ping {
                    // Socket.IO clients expect Engine.IO's text ping; others a WebSocket Ping.
                    let ping = match protocol {
                        Protocol::Raw => Message::Ping(Default::default()),
                        Protocol::SocketIo => Message::text("2"),
                    };
                    if queue(&mut ws, ping).is_err() {
                        break End::ControlFlood;
                    }
                    metrics.pings.fetch_add(1, Relaxed);
                    // The deadline runs from the first unanswered ping.
                    pong_deadline.get_or_insert(now + cfg.pong_timeout);
                    next_ping = now + cfg.ping_interval;
                }
                timer.set_at(pong_deadline.map_or(next_ping, |d| d.min(next_ping)));
            }
        }
    };

    drop(membership);
    if let Some(code) = end.code() {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: end.reason_text().into(),
        };
        let _ = queue(&mut ws, Message::Close(Some(frame)));
    }
    if end != End::IoError {
        let partial = out.front().filter(|_| offset > 0).map(|f| &f[offset..]);
        Box::pin(linger(ws.get_mut(), partial, cfg.close_timeout)).await;
    }
    end
}

/// Hands `msg` to tungstenite, which encodes it into `ctrl` at once: [`Io`] never blocks a
/// write, so the send completes in one poll. (Doing it without an `.await` keeps the send
/// future out of the session's state machine.)
fn queue(ws: &mut WebSocketStream<Io>, msg: Message) -> Result<(), WsError> {
    let mut send = std::pin::pin!(ws.send(msg));
    match send
        .as_mut()
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(r) => r,
        Poll::Pending => Err(WsError::Io(io::Error::other(CtrlFull))),
    }
}

/// Handles one Socket.IO text packet. Replies (connect answers, acks, pongs) go out through
/// tungstenite, so they land in `ctrl` at a frame boundary.
fn socket_io_packet(
    ws: &mut WebSocketStream<Io>,
    text: &str,
    sid: &str,
    room: &str,
    membership: &mut Option<Membership>,
    gw: &Gateway,
) -> Result<Delivery, End> {
    let reply = |s: String| Message::text(s);
    match sio::parse(text) {
        Ok(Packet::Pong | Packet::Noop | Packet::Ack) => {}
        Ok(Packet::Ping) => {
            let _ = queue(ws, reply("3".into()));
        }
        Ok(Packet::Close) => return Err(End::SioClose),
        Ok(Packet::Binary) => return Err(End::SioBinary),
        Ok(Packet::Connect { ns: "/" }) => {
            let _ = queue(ws, reply(sio::connect_ok(sid)));
            if membership.as_ref().is_none_or(Membership::in_lobby) {
                let m = gw.hub.join(room, Protocol::SocketIo);
                // socket.broadcast.emit('hi'): everyone in the room but the newcomer.
                let d = m.publish_payload(
                    Payload::SocketIo {
                        args: "[\"hi\"]",
                        chat: None,
                    },
                    true,
                );
                *membership = Some(m);
                return Ok(d);
            }
        }
        Ok(Packet::Connect { ns }) => {
            let _ = queue(ws, reply(sio::connect_error(ns)));
        }
        Ok(Packet::Disconnect { ns: "/" }) => {
            *membership = Some(gw.hub.join_lobby(Protocol::SocketIo));
        }
        Ok(Packet::Disconnect { .. }) => {}
        Ok(Packet::Event {
            ns,
            ack,
            args,
            name,
        }) => {
            let Some(m) = membership.as_ref().filter(|m| ns == "/" && !m.in_lobby()) else {
                // An event for a namespace the client has not joined.
                return Err(End::SioBadPacket(SioError::BadNamespace));
            };
            let chat = (name == "chat message")
                .then(|| sio::chat_text(args))
                .flatten();
            let d = m.publish_payload(
                Payload::SocketIo {
                    args,
                    chat: chat.as_deref(),
                },
                false,
            );
            if let Some(id) = ack {
                let _ = queue(ws, reply(sio::ack(id)));
            }
            return Ok(d);
        }
        Err(e) => return Err(End::SioBadPacket(e)),
    }
    Ok(Delivery::default())
}

/// Finishes a partly written frame (a Close must not land inside one), writes `ctrl`, shuts
/// the write side, then reads and drops the client's bytes until EOF or the deadline.
async fn linger(io: &mut Io, partial: Option<&[u8]>, close_timeout: Duration) {
    let work = async {
        if let Some(rest) = partial {
            io.socket.write_all(rest).await?;
        }
        io.socket.write_all(&io.ctrl).await?;
        io.ctrl.clear();
        io.socket.get_ref().shutdown(Shutdown::Write)?;
        let mut sink = [0u8; 512];
        while io.socket.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    let _ = work
        .or(async {
            Timer::after(close_timeout).await;
            Ok(())
        })
        .await;
}

/// Writes `ctrl` and the queued frames with `writev` until done or the socket blocks.
fn poll_write_out(
    io: &mut Io,
    out: &mut VecDeque<Frame>,
    offset: &mut usize,
    stats: &mut Stats,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        let ctrl_len = io.ctrl.len();
        if ctrl_len == 0 && out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // Order: the rest of a partly written frame, then control frames, then the queue, so
        // a control frame never lands inside a data frame.
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        let partial = *offset > 0;
        if partial {
            iov[0] = IoSlice::new(&out[0][*offset..]);
            n = 1;
        }
        if ctrl_len > 0 {
            iov[n] = IoSlice::new(&io.ctrl);
            n += 1;
        }
        for f in out.iter().skip(usize::from(partial)).take(MAX_IOV - n) {
            iov[n] = IoSlice::new(f);
            n += 1;
        }
        let mut written = match Pin::new(&mut io.socket).poll_write_vectored(cx, &iov[..n]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(w)) => w,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        if partial {
            let left = out[0].len() - *offset;
            if written < left {
                *offset += written;
                continue;
            }
            written -= left;
            *offset = 0;
            out.pop_front();
            stats.frames_out += 1;
        }
        if ctrl_len > 0 {
            let c = written.min(ctrl_len);
            io.ctrl.drain(..c);
            written -= c;
            if c < ctrl_len {
                continue;
            }
        }
        while written > 0 {
            let front_left = out[0].len() - *offset;
            if written >= front_left {
                written -= front_left;
                *offset = 0;
                out.pop_front();
                stats.frames_out += 1;
            } else {
                *offset += written;
                written = 0;
            }
        }
    }
}

fn classify(e: &WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::TooBig,
        WsError::Capacity(_) => End::ProtocolError,
        WsError::Utf8(_) => End::InvalidUtf8,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Eof,
        WsError::Protocol(_) => End::ProtocolError,
        WsError::Io(e) if e.get_ref().is_some_and(|e| e.is::<CtrlFull>()) => End::ControlFlood,
        WsError::WriteBufferFull(_) => End::ControlFlood,
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Eof,
        _ => End::IoError,
    }
}

/// A per-connection token bucket holding one second's worth of messages, refilled
/// continuously. A rate of 0 means no limit.
#[derive(Debug)]
struct TokenBucket {
    rate: u32,
    /// Tokens in thousandths, so that refills need no floating point.
    milli: u64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate,
            milli: u64::from(rate) * 1000,
            last: Instant::now(),
        }
    }

    /// Takes one token; false when none is left.
    fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let cap = u64::from(self.rate) * 1000;
        let elapsed_us = now.saturating_duration_since(self.last).as_micros() as u64;
        // rate tokens per second = rate * 1000 milli-tokens per 1e6 us.
        let refill = elapsed_us.saturating_mul(u64::from(self.rate)) / 1000;
        if refill > 0 {
            self.milli = (self.milli + refill).min(cap);
            self.last = now;
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// A message for the log: text as is (escaped by the logger), binary as its length.
struct Printable<'a>(Kind, &'a [u8]);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Kind::Text => f.write_str(std::str::from_utf8(self.1).unwrap_or("")),
            Kind::Binary => write!(f, "<{} binary bytes>", self.1.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_a_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10);
        b.last = t0;
        assert!((0..10).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // Long idle refills to the cap, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| b.take(t2)).count(), 10);
        let mut off = TokenBucket::new(0);
        assert!((0..10_000).all(|_| off.take(t0)));
    }
}
