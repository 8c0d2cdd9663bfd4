//! One WebSocket session's state while it runs, and the steps of its loop. [`super::run`]
//! calls them in this order:
//!
//! ```text
//! open ─> loop { poll_event ─> on_message | on_tick | signal | read error } ─> close
//!             on_message ─> (probing) on_probe ─> 3probe | 5: take the polling session over
//!                        ─> inbound::account ─> raw publish | socketio::Client::packet
//!             on_tick    ─> upgrade / token deadlines ─> Keepalive::tick ─> ping | pong timeout
//! ```

use super::inbound::{account, TokenBucket};
use super::keepalive::{Keepalive, Tick};
use super::resume::Held;
use super::socketio::{Client, Reply};
use super::writer::{linger, queue, Io, Writer};
use super::{ws_config, End, Peer, Polling, Session, SessionCtx, Stats, Transport};
use crate::auth::Access;
use crate::config::SessionConfig;
use crate::frame::Frame;
use crate::frame::Kind;
use crate::hub::{Membership, Protocol, Signal, Sink};
use crate::sio;
use async_tungstenite::tungstenite::error::Error as WsError;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{future, FutureExt, StreamExt};
use smol::Timer;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What woke the loop.
pub(super) enum Event {
    Read(Option<Result<Message, WsError>>),
    Signal(Signal),
    Tick,
    WriteFailed,
}

/// What a step decided.
pub(super) enum Flow {
    /// Go on.
    Continue,
    /// The client sent Close with this code; its reply still has to reach `ctrl`.
    ClientClose(u16),
    /// End the session.
    End(End),
}

/// A running session: its socket (through tungstenite), writer, membership and clocks.
pub(super) struct Live<'a, S: Transport> {
    ws: WebSocketStream<Io<S>>,
    w: Writer,
    membership: Membership,
    /// Until the client sends `5`, a WebSocket that takes over a polling session only
    /// probes (within `--upgrade-timeout`, which the polling session keeps).
    probing: Option<&'a Polling>,
    room: &'a str,
    protocol: Protocol,
    peer: &'a Peer,
    /// The Engine.IO session id (empty for plain clients).
    sid: String,
    /// Its Socket.IO recovery registration, once connected (history on).
    held: Option<Held>,
    ctx: &'a SessionCtx,
    access: &'a mut Access,
    keepalive: Keepalive,
    bucket: TokenBucket,
    timer: Timer,
    /// The socket, lent to the outbox while the session is idle (`--inline-gap`).
    sink: Option<Arc<dyn Sink>>,
    /// Lent now: the session must take it back ([`Writer::take_back`]) before it writes.
    lent: bool,
}

impl<'a, S: Transport> Live<'a, S> {
    /// Wraps the socket (with what the prelude read past the head) for tungstenite.
    /// (Boxed: this one-off future would otherwise widen every session's state machine, which
    /// is as large as its largest await point, for the connection's whole life.)
    pub(super) async fn socket(
        socket: S,
        leftover: Vec<u8>,
        cfg: &SessionConfig,
    ) -> WebSocketStream<Io<S>> {
        let io = Io {
            socket,
            ctrl: Vec::new(),
            drained: false,
            read_now: false,
        };
        let config = Some(ws_config(cfg));
        Box::pin(WebSocketStream::from_partially_read(
            io,
            leftover,
            Role::Server,
            config,
        ))
        .await
    }

    /// [`Live::socket`] then [`Live::open`].
    pub(super) async fn start(
        wire: super::Wire<S>,
        membership: Membership,
        who: Session<'a>,
        ctx: &'a SessionCtx,
        access: &'a mut Access,
    ) -> Live<'a, S> {
        let super::Wire {
            socket,
            leftover,
            preamble,
        } = wire;
        let ws = Self::socket(socket, leftover, &ctx.cfg).await;
        Self::open(ws, preamble, membership, who, ctx, access)
    }

    /// The session over `ws`: sends a Socket.IO client its open packet, queues `preamble`
    /// first, and arms the clocks.
    pub(super) fn open(
        ws: WebSocketStream<Io<S>>,
        preamble: Vec<Frame>,
        membership: Membership,
        who: Session<'a>,
        ctx: &'a SessionCtx,
        access: &'a mut Access,
    ) -> Live<'a, S> {
        let probing = who.upgrade;
        if let Some(p) = probing {
            p.probe_started();
        }
        let cfg = &ctx.cfg;
        let sink = match cfg.inline_gap.is_zero() {
            true => None,
            false => ws.get_ref().socket.sink(),
        };
        let mut live = Live {
            ws,
            w: Writer::default(),
            membership,
            probing,
            room: who.room,
            protocol: who.protocol,
            peer: who.peer,
            sid: String::new(),
            held: None,
            ctx,
            access,
            keepalive: Keepalive::new(Instant::now(), cfg),
            bucket: TokenBucket::new(ctx.max_messages_per_second),
            timer: Timer::never(),
            sink,
            lent: false,
        };
        live.sid = match (who.protocol, probing) {
            (Protocol::Raw | Protocol::RawOffset, _) => String::new(),
            (Protocol::SocketIo, Some(p)) => p.sid.to_string(),
            (Protocol::SocketIo, None) => {
                let sid = sio::new_sid();
                let open = super::open_packet(cfg, &sid, false);
                let _ = queue(&mut live.ws, Message::text(open));
                sid
            }
        };
        // A raw resume's first frame and replay go before anything from the outbox.
        live.w.out.extend(preamble);
        live.rearm();
        live
    }

    /// One pass: write what is pending, refill from the outbox once everything taken before
    /// is written, read at most one message, check the timer. Reading goes on while a write
    /// is blocked, so pongs and Close frames from the client are always seen.
    ///
    /// The socket is lent to the outbox only between a pass that found nothing to do and the
    /// next pass: whatever a pass does (write, handle a message, close), it does with the
    /// socket taken back.
    pub(super) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.lent {
            self.lent = false;
            self.w.take_back(self.membership.member());
        }
        loop {
            let io = self.ws.get_mut();
            if !self.w.is_idle(&io.ctrl) {
                // Pending leaves frames queued; the outbox is still polled below.
                if let Poll::Ready(Err(_)) = self.w.poll_write(&mut io.socket, &mut io.ctrl, cx) {
                    return Poll::Ready(Event::WriteFailed);
                }
            }
            // Refill only once everything taken before is written: the local queue never
            // grows past one outbox's worth.
            let into = if self.w.out.is_empty() {
                Some(&mut self.w.out)
            } else {
                None
            };
            match self.membership.member().poll_outbox(cx, into) {
                Poll::Ready(Signal::Frames) => continue,
                Poll::Ready(s) => return Poll::Ready(Event::Signal(s)),
                Poll::Pending => {}
            }
            break;
        }
        // A ping is unanswered and its deadline has come: a pong may be in the kernel's
        // buffer, unreported yet, so read before the timer judges it. (The clock is read only
        // while a pong is awaited, not at every wake-up.)
        if self
            .keepalive
            .awaiting_pong()
            .is_some_and(|d| d <= Instant::now())
        {
            self.ws.get_mut().read_now = true;
        }
        if let Poll::Ready(m) = self.ws.poll_next(cx) {
            return Poll::Ready(Event::Read(m));
        }
        if Pin::new(&mut self.timer).poll(cx).is_ready() {
            return Poll::Ready(Event::Tick);
        }
        // Nothing of its own to write: publishers may send to the socket until the next pass.
        if let Some(sink) = &self.sink {
            if self.w.is_idle(&self.ws.get_ref().ctrl) {
                self.lent = self.membership.arm(sink);
            }
        }
        Poll::Pending
    }

    /// The room it is for.
    pub(super) fn room(&self) -> &'a str {
        self.room
    }

    /// `msg`, when it is a Socket.IO CONNECT from a client not connected yet: what
    /// [`super::Recovery::prepare`] looks at before it is handled.
    pub(super) fn connect_packet<'m>(&self, msg: &'m Message) -> Option<&'m str> {
        match msg {
            Message::Text(t)
                if self.protocol == Protocol::SocketIo
                    && self.probing.is_none()
                    && self.membership.in_lobby()
                    && t.starts_with("40") =>
            {
                Some(t.as_str())
            }
            _ => None,
        }
    }

    /// A message from the client: the probe and the switch while probing, else counted,
    /// limited, and published (plain) or dispatched (Socket.IO).
    pub(super) fn on_message(&mut self, msg: Message, stats: &mut Stats) -> Flow {
        self.keepalive.heard();
        let (kind, payload): (Kind, &[u8]) = match &msg {
            Message::Text(t) => (Kind::Text, t.as_bytes()),
            Message::Binary(b) => (Kind::Binary, b),
            Message::Close(frame) => {
                return Flow::ClientClose(frame.as_ref().map_or(1005, |f| u16::from(f.code)))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Flow::Continue,
        };
        if let Some(p) = self.probing {
            return self.on_probe(p, &msg);
        }
        let who = Session {
            room: self.room,
            protocol: self.protocol,
            peer: self.peer,
            upgrade: None,
        };
        if let Err(end) = account(self.ctx, stats, &mut self.bucket, &who, kind, payload) {
            return Flow::End(end);
        }
        match (self.protocol, kind) {
            (Protocol::Raw | Protocol::RawOffset, _) if !self.access.may_publish() => {
                Flow::End(End::PublishForbidden)
            }
            (Protocol::Raw | Protocol::RawOffset, _) => {
                self.membership.publish(kind, payload);
                Flow::Continue
            }
            (Protocol::SocketIo, Kind::Binary) => Flow::End(End::SioBinary),
            (Protocol::SocketIo, Kind::Text) => {
                let text = std::str::from_utf8(payload).unwrap_or_default();
                self.on_socketio(text)
            }
        }
    }

    /// One Socket.IO packet, through the handler both transports share. Text answers go
    /// through tungstenite (`ctrl`); whole frames (a recovery's events and the answer after
    /// them) join the frames waiting for the socket, in order.
    fn on_socketio(&mut self, text: &str) -> Flow {
        let (ws, out) = (&mut self.ws, &mut self.w.out);
        let mut reply = |r: Reply| match r {
            Reply::Text(m) => queue(ws, Message::text(m)).is_ok(),
            Reply::Frame(f) => {
                out.push_back(f);
                true
            }
        };
        let client = Client::of(self.ctx, &self.sid, self.room, self.peer);
        let ends = self.access.ends();
        let held = &mut self.held;
        if let Err(end) = client.packet(text, &mut self.membership, self.access, held, &mut reply) {
            return Flow::End(end);
        }
        if self.access.ends() != ends {
            // Granted at its CONNECT: the grant's end joins the timer.
            self.timer.set_at(Instant::now());
        }
        Flow::Continue
    }

    /// A WebSocket taking over a polling session: only the probe and the switch, as the
    /// reference server allows.
    fn on_probe(&mut self, p: &'a Polling, msg: &Message) -> Flow {
        match msg {
            Message::Text(t) if t.as_str() == sio::PROBE_PING => {
                let _ = queue(&mut self.ws, Message::text(sio::PROBE_PONG));
                p.probe();
                Flow::Continue
            }
            Message::Text(t) if t.as_str() == sio::UPGRADE => {
                let Some(taken) = p.switch(self.peer.conn) else {
                    return Flow::End(End::UpgradeFailed);
                };
                let ctrl = taken.ctrl;
                self.membership = taken.membership;
                *self.access = taken.access;
                self.held = taken.held;
                // Frames a GET had not taken yet (a recovery's) go before the outbox's.
                self.w.out.extend(taken.pending);
                // Its grant's end joins the timer at the next tick, now.
                self.timer.set_at(Instant::now());
                // What the polling transport had not sent yet goes first.
                let packets = ctrl.split(|b| *b == sio::RECORD_SEPARATOR);
                for packet in packets.filter(|p| !p.is_empty()) {
                    let text = String::from_utf8_lossy(packet).into_owned();
                    let _ = queue(&mut self.ws, Message::text(text));
                }
                self.probing = None;
                Flow::Continue
            }
            _ => Flow::End(End::UpgradeFailed),
        }
    }

    /// The timer fired: the upgrade and token deadlines, then the keepalive clock.
    pub(super) fn on_tick(&mut self, now: Instant) -> Flow {
        if self.probing.is_some_and(|p| p.upgrade_expired(now)) {
            return Flow::End(End::UpgradeFailed);
        }
        if self.access.ends().is_some_and(|e| now >= e) {
            return Flow::End(End::TokenExpired);
        }
        let metrics = &self.ctx.metrics;
        match self.keepalive.tick(now, &self.ctx.cfg) {
            Tick::PongTimeout => {
                metrics.pong_timeouts.fetch_add(1, Relaxed);
                return Flow::End(End::PongTimeout);
            }
            Tick::Ping => {
                // Socket.IO clients expect Engine.IO's text ping; others a WebSocket Ping.
                let ping = match self.protocol {
                    Protocol::Raw | Protocol::RawOffset => Message::Ping(Default::default()),
                    Protocol::SocketIo => Message::text(sio::PING),
                };
                if queue(&mut self.ws, ping).is_err() {
                    return Flow::End(End::ControlFlood);
                }
                metrics.pings.fetch_add(1, Relaxed);
            }
            Tick::Idle => {}
        }
        self.rearm();
        Flow::Continue
    }

    /// Sets the timer to the first of the keepalive clock, the probe's and the grant's end.
    fn rearm(&mut self) {
        let at = [
            self.probing.and_then(Polling::upgrade_deadline),
            self.access.ends(),
        ]
        .into_iter()
        .flatten()
        .fold(self.keepalive.next_at(), Instant::min);
        self.timer.set_at(at);
    }

    /// The client's Close: tungstenite queued the reply; one more read moves it into `ctrl`
    /// and ends the stream (a server side terminates after replying).
    pub(super) async fn take_close_reply(&mut self) {
        let _ = future::poll_once(self.ws.next()).await;
    }

    /// Ends the session: a probe that never switched leaves its polling session as it was,
    /// the member leaves, our Close frame goes out after any partly written frame, and the
    /// connection lingers for the client's last bytes (reset when that takes too long).
    /// (It borrows: taking `self` would keep a second copy of the session in the task's
    /// state while it lingers.)
    pub(super) async fn close(&mut self, end: End, stats: &mut Stats) {
        stats.frames_out = self.w.frames_out + self.membership.member().sent_inline();
        if let Some(p) = self.probing {
            // It never switched: the session stays on polling, and its GETs are held again.
            p.probe_failed();
        }
        self.membership.leave();
        if let (Some(r), Some(h)) = (&self.ctx.recovery, &self.held) {
            // Resumable whatever the end (Engine.IO's `1` is Node's recoverable "transport
            // close"); only `41`, `socket.disconnect()`, forgets it, in `socketio.rs`.
            r.ended(h, false);
        }
        if let Some(code) = end.code() {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: end.reason_text().into(),
            };
            let _ = queue(&mut self.ws, Message::Close(Some(frame)));
        }
        if end == End::IoError {
            return;
        }
        let io = self.ws.get_mut();
        if !Box::pin(linger(io, self.w.partial(), self.ctx.cfg.close_timeout)).await {
            io.socket.abort();
            self.ctx.metrics.close_aborts.fetch_add(1, Relaxed);
            stats.reset = true;
        }
    }
}
