//! One session after the handshake: a WebSocket connection's task ([`serve`], [`run`]), or a
//! Socket.IO session on the polling transport ([`polling`]). A session sees a
//! [`SessionCtx`] (its settings, the hub, the metrics, the token checker) and its [`Start`],
//! never the gateway.
//!
//! ```text
//! serve: open line ─> run ─> close line ─> permit dropped (the drain waits for the last one)
//! run:   live::Live::open ─> loop { poll_event ─> step } ─> close
//! files: live.rs (the loop's steps), keepalive.rs (ping clock, pure), inbound.rs (count,
//!        rate limit), socketio.rs (one packet), writer.rs (writev, ctrl), end.rs (End table)
//! ```
//!
//! # Design
//! * **One task, one poll loop.** Each pass (1) writes whatever is pending, (2) refills the
//!   local queue from the hub outbox once the local queue is fully written, (3) reads at most
//!   one message, (4) checks the ping timer. Reading goes on while a write is blocked, so
//!   pongs and Close frames from the client are always seen.
//! * **All socket writes are ours.** tungstenite runs over `writer::Io`, whose writes append to a
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

use crate::admission::SessionPermit;
use crate::auth::{Access, Auth};
use crate::config::SessionConfig;
use crate::frame::Frame;
use crate::hub::{Hub, Membership, Protocol, Sink};
use crate::metrics::{Family, Metrics};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use smol::Async;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

mod end;
mod inbound;
mod keepalive;
mod live;
pub mod polling;
mod resume;
mod socketio;
mod writer;

pub use end::{log_close, End};
use live::{Event, Flow, Live};
pub use polling::{Polling, Registry};
pub use resume::{catch_up, follow, Recovery};

/// Most bytes of control frames (Pong, Ping, Close) that may wait for the socket. A Pong is
/// at most 127 bytes and tungstenite keeps only the newest one pending, so this is only
/// reached by a client that floods pings while not reading.
pub const CTRL_CAP: usize = 4096;
/// Consecutive ready events before the task yields to the executor, so that one flooding
/// client cannot starve the others on its thread.
const BUDGET: u32 = 64;

/// What a session runs over: a connected byte stream that can also be torn down at once.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether the reactor has seen the socket become readable since it was last found
    /// empty; registers for that otherwise. Answered from the reactor's state, without a
    /// syscall.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Sends a FIN after what was written (`shutdown(SHUT_WR)`); reading goes on.
    fn shutdown_write(&self) -> io::Result<()>;
    /// Makes the next close a reset (`SO_LINGER` 0), so that whatever the kernel still holds
    /// for a peer that stopped reading is freed at once rather than trickled out.
    fn abort(&self) {}
    /// The socket as a [`Sink`] the session can lend its outbox while idle (inline delivery,
    /// `--inline-gap`); `None`: this transport is never lent.
    fn sink(&self) -> Option<Arc<dyn Sink>> {
        None
    }
}

impl Sink for Async<TcpStream> {
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        // `send(2)` with MSG_NOSIGNAL on the non-blocking socket.
        std::io::Write::write(&mut self.get_ref(), buf)
    }
}

/// A TCP socket shared by its session and, while the session is idle, its outbox
/// ([`Transport::sink`]): the transport of every WebSocket session.
#[derive(Debug, Clone)]
pub struct Lendable(Arc<Async<TcpStream>>);

impl Lendable {
    /// Wraps an accepted connection.
    pub fn new(stream: Async<TcpStream>) -> Lendable {
        Lendable(Arc::new(stream))
    }
}

impl AsyncRead for Lendable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lendable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write_vectored(cx, bufs)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

impl Transport for Lendable {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_readable(cx)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.0.shutdown_write()
    }
    fn abort(&self) {
        self.0.abort()
    }
    fn sink(&self) -> Option<Arc<dyn Sink>> {
        Some(self.0.clone())
    }
}

impl Transport for Async<TcpStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_readable(self, cx)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.get_ref().shutdown(Shutdown::Write)
    }
    fn abort(&self) {
        let _ = rustix::net::sockopt::set_socket_linger(self.get_ref(), Some(Duration::ZERO));
    }
}

impl Transport for Async<UnixStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_readable(self, cx)
    }
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
    /// Socket.IO connection state recovery; `None` when history is off
    /// (`--recovery-window 0`).
    pub recovery: Option<Recovery>,
}

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

/// Whose admission a WebSocket session runs under: exactly one of them.
#[derive(Debug)]
pub enum Admitted {
    /// Its own permit.
    Own(SessionPermit),
    /// It takes over this polling session once the client switches, and shares its permit.
    TakeOver(Arc<Polling>),
}

/// What a WebSocket session task starts from.
#[derive(Debug)]
pub struct Start {
    /// The room asked for (Socket.IO sessions join it when they connect to `/`).
    pub room: String,
    /// What the client speaks.
    pub protocol: Protocol,
    /// Who it is.
    pub peer: Peer,
    /// Its admission.
    pub admitted: Admitted,
    /// What its token allows.
    pub access: Access,
    /// Frames to send before anything else: a raw resume's first frame and its replay.
    pub preamble: Vec<Frame>,
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

/// What a session runs over: the socket, what the prelude read past the head, and frames
/// to send before anything else (a raw resume's first frame and replay).
#[derive(Debug)]
pub struct Wire<S> {
    /// The connection.
    pub socket: S,
    /// Bytes read after the HTTP head: the client's first frames.
    pub leftover: Vec<u8>,
    /// Frames to send first.
    pub preamble: Vec<Frame>,
}

/// The Engine.IO open packet for session `sid` with these settings; a polling session
/// offers the upgrade to a WebSocket.
pub(crate) fn open_packet(cfg: &SessionConfig, sid: &str, polling: bool) -> String {
    crate::sio::open_packet(
        sid,
        polling,
        cfg.ping_interval.as_millis(),
        cfg.pong_timeout.as_millis(),
        cfg.max_message_bytes,
    )
}

/// One session's identity, handed to [`run`].
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

/// A WebSocket session's life after its open line (which the route writes): [`run`], its
/// close line, and its admission given back last (the drain waits for the last permit, so
/// every close line is written before the process exits).
/// The task's future is this function's own: the arguments go in a box that is unpacked at
/// once, because an async fn keeps its arguments for its whole life besides what they are
/// moved into (216 bytes per session, for as long as it lives).
pub fn serve<S: Transport>(
    socket: S,
    leftover: Vec<u8>,
    membership: Membership,
    start: Start,
    ctx: Arc<SessionCtx>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    serve_task(Box::new(Task {
        socket,
        leftover,
        membership,
        start,
        ctx,
    }))
}

/// Moves a value out of its box and frees the box now. (`let .. = *b;` in an async fn frees
/// the allocation only when `b` goes out of scope, at the session's end: the box would be
/// kept for the whole session, 216 and 153 bytes with the two below.)
#[allow(clippy::boxed_local)] // the box is what the caller has; freeing it here is the point
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// What [`serve`] starts from.
struct Task<S> {
    socket: S,
    leftover: Vec<u8>,
    membership: Membership,
    start: Start,
    ctx: Arc<SessionCtx>,
}

async fn serve_task<S: Transport>(task: Box<Task<S>>) {
    let Task {
        socket,
        leftover,
        membership,
        start:
            Start {
                room,
                protocol,
                peer,
                admitted,
                mut access,
                preamble,
            },
        ctx,
    } = unbox(task);
    let ctx = &*ctx;
    let upgrade = match &admitted {
        Admitted::Own(_) => None,
        Admitted::TakeOver(p) => Some(&**p),
    };
    let opened = Instant::now();
    let sio = protocol == Protocol::SocketIo;
    if sio {
        if upgrade.is_none() {
            ctx.metrics.count(Family::SioTransport, "websocket");
        }
        ctx.metrics.sio_websocket_open.fetch_add(1, Relaxed);
    }
    let mut stats = Stats::default();
    let who = Session {
        room: &room,
        protocol,
        peer: &peer,
        upgrade,
    };
    let wire = Wire {
        socket,
        leftover,
        preamble,
    };
    let end = run(wire, membership, who, ctx, &mut stats, &mut access).await;
    let who = Session {
        room: &room,
        protocol,
        peer: &peer,
        upgrade,
    };
    log_close(ctx, &who, opened, end, &stats, &access);
    if sio {
        ctx.metrics.sio_websocket_open.fetch_sub(1, Relaxed);
    }
    match admitted {
        Admitted::Own(permit) => drop(permit),
        // A session taken over from polling holds the polling session's permit.
        Admitted::TakeOver(p) if p.is_upgraded() => p.release(),
        Admitted::TakeOver(_) => {}
    }
}

/// A CONNECT after [`Recovery::prepare`]. (Boxed, owning the message: the rare wait for
/// Redis must not widen every session's future.)
fn prepared<'a>(
    r: &'a Recovery,
    ctx: &'a SessionCtx,
    room: &'a str,
    msg: async_tungstenite::tungstenite::Message,
) -> std::pin::Pin<
    Box<impl std::future::Future<Output = async_tungstenite::tungstenite::Message> + 'a>,
> {
    Box::pin(async move {
        if let async_tungstenite::tungstenite::Message::Text(text) = &msg {
            r.prepare(&ctx.hub, room, text.as_str()).await;
        }
        msg
    })
}

/// Runs a session to its end and returns how it ended. Plain sessions arrive as members of
/// their room (joined before the 101 went out); Socket.IO sessions arrive in the hub's lobby,
/// get the Engine.IO open packet, and join their room when they connect to `/`.
/// (Its arguments go in a box unpacked at once, as [`serve`]'s do: 152 bytes fewer per
/// session.)
pub fn run<'a, S: Transport>(
    wire: Wire<S>,
    membership: Membership,
    who: Session<'a>,
    ctx: &'a SessionCtx,
    stats: &'a mut Stats,
    access: &'a mut Access,
) -> impl std::future::Future<Output = End> + Send + 'a {
    run_boxed(Box::new(RunArgs {
        wire,
        membership,
        who,
        ctx,
        stats,
        access,
    }))
}

/// What [`run`] starts from.
struct RunArgs<'a, S> {
    wire: Wire<S>,
    membership: Membership,
    who: Session<'a>,
    ctx: &'a SessionCtx,
    stats: &'a mut Stats,
    access: &'a mut Access,
}

async fn run_boxed<S: Transport>(args: Box<RunArgs<'_, S>>) -> End {
    let RunArgs {
        wire,
        membership,
        who,
        ctx,
        stats,
        access,
    } = unbox(args);
    // (Boxed: what it starts from is not kept beside the running session's state.)
    let mut live = Box::pin(Live::start(wire, membership, who, ctx, access)).await;
    let mut budget = BUDGET;
    let end = loop {
        if budget == 0 {
            budget = BUDGET;
            future::yield_now().await;
        }
        budget -= 1;
        // A CONNECT that waits for Redis first is handled after the match, so the event is
        // not kept across that wait.
        let mut prepare = None;
        let mut flow = match future::poll_fn(|cx| live.poll_event(cx)).await {
            Event::Read(Some(Ok(msg))) => match &ctx.recovery {
                Some(r) if live.connect_packet(&msg).is_some() => {
                    prepare = Some(prepared(r, ctx, live.room(), msg));
                    Flow::Continue
                }
                _ => live.on_message(msg, stats),
            },
            Event::Read(Some(Err(e))) => Flow::End(end::classify(&e)),
            Event::Read(None) => Flow::End(End::Eof),
            Event::Signal(s) => End::from_signal(s).map_or(Flow::Continue, Flow::End),
            Event::WriteFailed => Flow::End(End::IoError),
            Event::Tick => live.on_tick(Instant::now()),
        };
        if let Some(p) = prepare {
            let msg = p.await;
            flow = live.on_message(msg, stats);
        }
        match flow {
            Flow::Continue => {}
            Flow::ClientClose(code) => {
                live.take_close_reply().await;
                break End::ClientClose(code);
            }
            Flow::End(end) => break end,
        }
    };
    live.close(end, stats).await;
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

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

    fn wire<S>(socket: S) -> Wire<S> {
        Wire {
            socket,
            leftover: Vec::new(),
            preamble: Vec::new(),
        }
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
            recovery: None,
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
            let session_a = run(wire(server_a), ma, who(&pa), &ctx, &mut sa, &mut xa);
            let session_b = run(wire(server_b), mb, who(&pb), &ctx, &mut sb, &mut xb);
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
}
