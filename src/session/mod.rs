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
//!   kernel does not answer unread bytes with a RST that would destroy the Close frame. A
//!   connection that has not flushed and closed by then (a client that stopped reading) is
//!   reset (`SO_LINGER` 0): its send buffer is freed at once instead of trickling out.

use crate::auth::{Access, Auth};
use crate::config::SessionConfig;
use crate::frame::Kind;
use crate::hub::{Hub, Membership, Protocol, Signal};
use crate::log::{Level, Secs};
use crate::metrics::{Family, Metrics};
use crate::sio;
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use smol::{Async, Timer};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

mod end;
pub mod polling;
mod socketio;
mod writer;

pub use end::End;
pub use polling::{Polling, Registry};
use writer::Writer;

/// Most bytes of control frames (Pong, Ping, Close) that may wait for the socket. A Pong is
/// at most 127 bytes and tungstenite keeps only the newest one pending, so this is only
/// reached by a client that floods pings while not reading.
pub const CTRL_CAP: usize = 4096;
/// Consecutive ready events before the task yields to the executor, so that one flooding
/// client cannot starve the others on its thread.
const BUDGET: u32 = 64;

/// What a session runs over: a connected byte stream that can also be torn down at once.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Sends a FIN after what was written (`shutdown(SHUT_WR)`); reading goes on.
    fn shutdown_write(&self) -> io::Result<()>;
    /// Makes the next close a reset (`SO_LINGER` 0), so that whatever the kernel still holds
    /// for a peer that stopped reading is freed at once rather than trickled out.
    fn abort(&self) {}
}

impl Transport for Async<TcpStream> {
    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(Shutdown::Write)
    }
    fn abort(&self) {
        let _ = rustix::net::sockopt::set_socket_linger(self.get_ref(), Some(Duration::ZERO));
    }
}

impl Transport for Async<UnixStream> {
    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(Shutdown::Write)
    }
}

/// What every session shares: its settings, the hub and the metrics. Built once by the
/// gateway; a session sees nothing else of it.
#[derive(Debug)]
pub struct SessionCtx {
    /// Per-session settings.
    pub cfg: SessionConfig,
    /// `--max-messages-per-second` (0 = off).
    pub max_messages_per_second: u32,
    /// Rooms and members.
    pub hub: Arc<Hub>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Socket.IO sessions on the polling transport, by `sid`.
    pub polling: Registry,
    /// The token checker (`--jwt-secret-file`); `None`: tokens are off.
    pub auth: Option<Auth>,
    /// What starts the id of every polling session opened here: this instance's backplane
    /// tag when other instances may forward its requests here (`--advertise`), else empty.
    pub sid_prefix: String,
}

/// The stream tungstenite runs over: reads come from the socket, writes go to `ctrl`.
#[derive(Debug)]
pub(crate) struct Io<S> {
    socket: S,
    ctrl: Vec<u8>,
}

impl<S: Transport> AsyncRead for Io<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<S: Transport> AsyncWrite for Io<S> {
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
pub struct Peer {
    /// Connection number, unique per process.
    pub conn: u64,
    /// The real client address (from PROXY when present).
    pub client: SocketAddr,
}

/// Counts for the close log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Messages received from the client.
    pub msgs_in: u64,
    /// Frames written to the client.
    pub frames_out: u64,
    /// The close did not finish within `close_timeout` and the connection was reset.
    pub reset: bool,
    /// A session on the polling transport.
    pub polling: bool,
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

/// One session's identity and counters, handed to [`run`].
#[derive(Debug)]
pub struct Session<'a> {
    /// The room asked for (Socket.IO sessions join it when they connect to `/`).
    pub room: &'a str,
    /// What the client speaks.
    pub protocol: Protocol,
    /// Who it is, for log lines.
    pub peer: &'a Peer,
    /// The polling session this WebSocket takes over, once the client probes and switches
    /// (`sid` in its query).
    pub upgrade: Option<&'a Polling>,
}

/// Runs a session to its end and returns how it ended. Plain sessions arrive as members of
/// their room (joined before the 101 went out); Socket.IO sessions arrive in the hub's lobby,
/// get the Engine.IO open packet, and join their room when they connect to `/`.
pub async fn run<S: Transport>(
    socket: S,
    leftover: Vec<u8>,
    mut membership: Membership,
    who: Session<'_>,
    ctx: &SessionCtx,
    stats: &mut Stats,
    access: &mut Access,
) -> End {
    // Taken apart: the session's state machine keeps only what it uses.
    let Session {
        room,
        protocol,
        peer,
        upgrade,
    } = who;
    // Until the client sends `5`, a WebSocket that takes over a polling session only probes
    // (within `--upgrade-timeout`, which the polling session keeps).
    let mut probing = upgrade;
    if let Some(p) = probing {
        p.probe_started();
    }
    let cfg = &ctx.cfg;
    let metrics = &ctx.metrics;
    let mut bucket = TokenBucket::new(ctx.max_messages_per_second);
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
    let sid = match (protocol, probing) {
        (Protocol::Raw, _) => String::new(),
        (Protocol::SocketIo, Some(p)) => p.sid.to_string(),
        (Protocol::SocketIo, None) => {
            let sid = sio::new_sid();
            let open = sio::open_packet(
                &sid,
                false,
                cfg.ping_interval.as_millis(),
                cfg.pong_timeout.as_millis(),
                cfg.max_message_bytes,
            );
            let _ = queue(&mut ws, Message::text(open));
            sid
        }
    };
    let mut w = Writer::default();
    let mut next_ping = Instant::now() + cfg.ping_interval;
    let mut pong_deadline: Option<Instant> = None;
    let first = [probing.and_then(Polling::upgrade_deadline), access.ends()];
    let mut timer = Timer::at(first.into_iter().flatten().fold(next_ping, Instant::min));
    let mut budget = BUDGET;

    let end = loop {
        if budget == 0 {
            budget = BUDGET;
            future::yield_now().await;
        }
        budget -= 1;
        let event = future::poll_fn(|cx| {
            loop {
                let io = ws.get_mut();
                if !w.is_idle(&io.ctrl) {
                    // Pending leaves frames queued; the outbox is still polled below.
                    if let Poll::Ready(Err(_)) = w.poll_write(&mut io.socket, &mut io.ctrl, cx) {
                        return Poll::Ready(Event::WriteFailed);
                    }
                }
                // Refill only once everything taken before is written: the local queue
                // never grows past one outbox's worth.
                let into = if w.out.is_empty() {
                    Some(&mut w.out)
                } else {
                    None
                };
                match membership.member().poll_outbox(cx, into) {
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
                if let Some(p) = probing {
                    // A WebSocket taking over a polling session: only the probe and the
                    // switch, as the reference server allows.
                    match (&msg, p) {
                        (Message::Text(t), _) if t.as_str() == sio::PROBE_PING => {
                            let _ = queue(&mut ws, Message::text(sio::PROBE_PONG));
                            p.probe();
                            continue;
                        }
                        (Message::Text(t), _) if t.as_str() == sio::UPGRADE => {
                            let Some((taken, ctrl, grant)) = p.switch(peer.conn) else {
                                break End::UpgradeFailed;
                            };
                            membership = taken;
                            *access = grant;
                            // Its grant's end joins the timer at the next tick, now.
                            timer.set_at(Instant::now());
                            // What the polling transport had not sent yet goes first.
                            let packets = ctrl.split(|b| *b == sio::RECORD_SEPARATOR);
                            for packet in packets.filter(|p| !p.is_empty()) {
                                let text = String::from_utf8_lossy(packet).into_owned();
                                let _ = queue(&mut ws, Message::text(text));
                            }
                            probing = None;
                            continue;
                        }
                        _ => break End::UpgradeFailed,
                    }
                }
                let who = Session {
                    room,
                    protocol,
                    peer,
                    upgrade: None,
                };
                if let Err(end) = account(ctx, stats, &mut bucket, &who, kind, payload) {
                    break end;
                }
                match (protocol, kind) {
                    (Protocol::Raw, _) if !access.may_publish() => break End::PublishForbidden,
                    (Protocol::Raw, _) => {
                        membership.publish(kind, payload);
                    }
                    (Protocol::SocketIo, Kind::Binary) => break End::SioBinary,
                    (Protocol::SocketIo, Kind::Text) => {
                        let text = std::str::from_utf8(payload).unwrap_or_default();
                        let mut reply = |m: String| queue(&mut ws, Message::text(m));
                        let sio = socketio::Client {
                            sid: &sid,
                            room,
                            hub: &ctx.hub,
                            auth: ctx.auth.as_ref(),
                            metrics: &ctx.metrics,
                            peer,
                        };
                        let ends = access.ends();
                        if let Err(end) = sio.packet(text, &mut membership, access, &mut reply) {
                            break end;
                        }
                        if access.ends() != ends {
                            // Granted at its CONNECT: the grant's end joins the timer.
                            timer.set_at(Instant::now());
                        }
                    }
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
                if probing.is_some_and(|p| p.upgrade_expired(now)) {
                    break End::UpgradeFailed;
                }
                if access.ends().is_some_and(|e| now >= e) {
                    break End::TokenExpired;
                }
                if pong_deadline.is_some_and(|d| now >= d) {
                    metrics.pong_timeouts.fetch_add(1, Relaxed);
                    break End::PongTimeout;
                }
                if now >= next_ping {
                    // Socket.IO clients expect Engine.IO's text ping; others a WebSocket Ping.
                    let ping = match protocol {
                        Protocol::Raw => Message::Ping(Default::default()),
                        Protocol::SocketIo => Message::text(sio::PING),
                    };
                    if queue(&mut ws, ping).is_err() {
                        break End::ControlFlood;
                    }
                    metrics.pings.fetch_add(1, Relaxed);
                    // The deadline runs from the first unanswered ping.
                    pong_deadline.get_or_insert(now + cfg.pong_timeout);
                    next_ping = now + cfg.ping_interval;
                }
                let mut at = pong_deadline.map_or(next_ping, |d| d.min(next_ping));
                for d in [probing.and_then(Polling::upgrade_deadline), access.ends()]
                    .into_iter()
                    .flatten()
                {
                    at = at.min(d);
                }
                timer.set_at(at);
            }
        }
    };

    stats.frames_out = w.frames_out;
    if let Some(p) = probing {
        // It never switched: the session stays on polling, and its GETs are held again.
        p.probe_failed();
    }
    drop(membership);
    if let Some(code) = end.code() {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: end.reason_text().into(),
        };
        let _ = queue(&mut ws, Message::Close(Some(frame)));
    }
    if end != End::IoError {
        let io = ws.get_mut();
        if !Box::pin(linger(io, w.partial(), cfg.close_timeout)).await {
            io.socket.abort();
            metrics.close_aborts.fetch_add(1, Relaxed);
            stats.reset = true;
        }
    }
    end
}

/// Hands `msg` to tungstenite, which encodes it into `ctrl` at once: [`Io`] never blocks a
/// write, so the send completes in one poll. (Doing it without an `.await` keeps the send
/// future out of the session's state machine.)
fn queue<S: Transport>(ws: &mut WebSocketStream<Io<S>>, msg: Message) -> Result<(), WsError> {
    let mut send = std::pin::pin!(ws.send(msg));
    match send
        .as_mut()
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(r) => r,
        Poll::Pending => Err(WsError::Io(io::Error::other(CtrlFull))),
    }
}

/// Finishes a partly written frame (a Close must not land inside one), writes `ctrl`, shuts
/// the write side, then reads and drops the client's bytes until EOF or the deadline.
/// Returns whether all of that happened in time (false: reset the connection).
async fn linger<S: Transport>(
    io: &mut Io<S>,
    partial: Option<&[u8]>,
    close_timeout: Duration,
) -> bool {
    let work = async {
        if let Some(rest) = partial {
            io.socket.write_all(rest).await?;
        }
        io.socket.write_all(&io.ctrl).await?;
        io.ctrl.clear();
        // A FIN after the Close frame.
        io.socket.shutdown_write()?;
        let mut sink = [0u8; 512];
        while io.socket.read(&mut sink).await? > 0 {}
        Ok::<bool, io::Error>(true)
    };
    work.or(async {
        Timer::after(close_timeout).await;
        Ok(false)
    })
    .await
    // A write or read error: the peer is gone (reset), nothing is left to free.
    .unwrap_or(true)
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

/// Counts a session's end by reason and writes its close line (WARN when the client caused
/// it): one format for both transports. `tcp` says how the connection ended (`fin`, `reset`),
/// or `-` for a polling session, which has no one connection.
pub fn log_close(
    ctx: &SessionCtx,
    who: &Session<'_>,
    opened: Instant,
    end: End,
    stats: &Stats,
    access: &Access,
) {
    ctx.metrics.count(Family::Closed, end.as_str());
    let level = if end.is_client_fault() {
        Level::Warn
    } else {
        Level::Info
    };
    let (transport, tcp) = match (stats.polling, stats.reset) {
        (true, _) => ("polling", "-"),
        (false, true) => ("websocket", "reset"),
        (false, false) => ("websocket", "fin"),
    };
    crate::log_at!(
        level,
        "close",
        conn = who.peer.conn,
        client = who.peer.client,
        room = who.room,
        user = access.user(),
        duration = Secs(opened.elapsed().as_secs_f64()),
        code = end.logged_code(),
        reason = end.as_str(),
        msgs_in = stats.msgs_in,
        frames_out = stats.frames_out,
        transport = transport,
        tcp = tcp
    );
}

/// Counts one packet from a client, logs it when `--log-messages` asks, and takes a token
/// from the rate limit. Engine.IO's own packets (pong `3`, ping `2`, noop `6`) are not
/// messages: they are neither counted nor limited.
fn account(
    ctx: &SessionCtx,
    stats: &mut Stats,
    bucket: &mut TokenBucket,
    who: &Session<'_>,
    kind: Kind,
    payload: &[u8],
) -> Result<(), End> {
    if who.protocol == Protocol::SocketIo && payload.first() != Some(&b'4') {
        return Ok(());
    }
    stats.msgs_in += 1;
    ctx.metrics.messages_in.fetch_add(1, Relaxed);
    ctx.metrics
        .bytes_in
        .fetch_add(payload.len() as u64, Relaxed);
    if !bucket.take(Instant::now()) {
        return Err(End::RateLimited);
    }
    if ctx.cfg.log_messages {
        crate::info!(
            "message",
            conn = who.peer.conn,
            client = who.peer.client,
            room = who.room,
            bytes = payload.len(),
            text = Printable(kind, payload)
        );
    }
    Ok(())
}

/// A per-connection token bucket holding one second's worth of messages, refilled
/// continuously. A rate of 0 means no limit.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: u32,
    /// Tokens in thousandths, so that refills need no floating point.
    milli: u64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: u32) -> Self {
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

    /// A client frame: FIN, `opcode`, masked with 0 (a mask is required, its value is not).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    async fn read_exact(s: &mut Async<UnixStream>, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        s.read_exact(&mut b).await.unwrap();
        b
    }

    /// Two sessions over socket pairs, with nothing but a [`SessionCtx`]: no listener, no
    /// TCP, no gateway. What one publishes reaches both, counted once in the hub's metrics.
    #[test]
    fn sessions_run_on_any_transport_with_only_their_context() {
        let metrics = Arc::new(Metrics::default());
        let ctx = SessionCtx {
            cfg: SessionConfig::default(),
            max_messages_per_second: 0,
            hub: Hub::with(8, None, metrics.clone()),
            metrics: metrics.clone(),
            polling: Registry::default(),
            sid_prefix: String::new(),
            auth: None,
        };
        let peer = |conn| Peer {
            conn,
            client: "203.0.113.9:4000".parse().unwrap(),
        };
        let (pa, pb) = (peer(1), peer(2));
        smol::block_on(async {
            let (server_a, mut a) = Async::<UnixStream>::pair().unwrap();
            let (server_b, mut b) = Async::<UnixStream>::pair().unwrap();
            let (ma, mb) = (
                ctx.hub.join("r", Protocol::Raw),
                ctx.hub.join("r", Protocol::Raw),
            );
            let who = |peer| Session {
                room: "r",
                protocol: Protocol::Raw,
                peer,
                upgrade: None,
            };
            let (mut sa, mut sb) = (Stats::default(), Stats::default());
            let (mut xa, mut xb) = (Access::open(), Access::open());
            let session_a = run(server_a, Vec::new(), ma, who(&pa), &ctx, &mut sa, &mut xa);
            let session_b = run(server_b, Vec::new(), mb, who(&pb), &ctx, &mut sb, &mut xb);
            let clients = async {
                a.write_all(&client_frame(0x1, b"hello")).await.unwrap();
                assert_eq!(read_exact(&mut a, 7).await, b"\x81\x05hello");
                assert_eq!(read_exact(&mut b, 7).await, b"\x81\x05hello");
                for c in [&mut a, &mut b] {
                    c.write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
                        .await
                        .unwrap();
                    // The Close reply, then EOF (the session shut its write side).
                    let mut rest = Vec::new();
                    c.read_to_end(&mut rest).await.unwrap();
                    assert_eq!(rest, b"\x88\x02\x03\xe8");
                }
            };
            let ((end_a, end_b), ()) =
                future::zip(future::zip(session_a, session_b), clients).await;
            assert_eq!(
                (end_a, end_b),
                (End::ClientClose(1000), End::ClientClose(1000))
            );
        });
        assert_eq!(metrics.messages_in.load(Relaxed), 1);
        assert_eq!(metrics.messages_out.load(Relaxed), 2);
        assert_eq!(metrics.bytes_out.load(Relaxed), 14);
        assert_eq!(ctx.hub.rooms(), 0, "both left");
    }

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
