//! A Socket.IO session on Engine.IO's HTTP long-polling transport: what a page that calls
//! plain `io()` starts with. The HTTP side (requests, keep-alive, CORS) is
//! `crate::routes` (`routes/polling.rs`); this is the session those requests share.
//!
//! ```text
//! GET  (no sid)  -> open: 0{"sid":..,"upgrades":["websocket"],..}; the session joins the lobby
//! POST packets   -> each packet as on the WebSocket transport (40 joins the room, 42 publishes)
//! GET  (held)    <- control packets, then the member's outbox, `\x1e`-joined, in one response
//! keeper task    -> pings every `ping_interval` (carried by the next GET); no pong: closed
//! WebSocket sid  -> 2probe/3probe, the held GET gets 6, then 5 moves the member over
//! ```
//!
//! * **Bounded.** Broadcasts stay in the member's hub outbox (bounded, full-policy: evict)
//!   until a GET takes them; control packets (connect answers, acks, pings) wait in `ctrl`,
//!   capped at [`CTRL_CAP`] bytes (past it: closed, `control_flood`).
//! * **One GET at a time.** A second GET while one is held ends the session (`poll_overlap`),
//!   as the reference server does; the held one gets the close packet.
//! * **Liveness.** A client that stops polling never sees its ping, so it is closed
//!   `ping_interval + pong_timeout` after its last pong, as a WebSocket client would be.
//! * **The switch.** The WebSocket probe answers `3probe` and makes the held GET answer `6`
//!   (noop), so the client pauses polling; its `5` then hands the member (with whatever its
//!   outbox holds) and the unsent control packets to the WebSocket session. Nothing was taken
//!   from the outbox that a GET did not deliver, so nothing is lost or sent twice, and order
//!   is kept.

use super::inbound::{account, TokenBucket};
use super::keepalive::{Keepalive, Tick};
use super::resume::Held as Registered;
use super::socketio::{Client, Reply};
use super::{End, Peer, Session, SessionCtx, Stats, CTRL_CAP};
use crate::admission::SessionPermit;
use crate::auth::Access;
use crate::frame::{self, Frame, Kind};
use crate::hub::{Membership, Protocol, Signal};
use crate::lock::mutex as lock;
use crate::log::Secs;
use crate::metrics::Family;
use crate::sio;
use smol::Timer;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Instant;

/// The polling sessions of this instance, by `sid`.
#[derive(Debug, Default)]
pub struct Registry {
    map: Mutex<HashMap<Box<str>, Arc<Polling>>>,
}

impl Registry {
    /// The live session with this id.
    pub fn get(&self, sid: &str) -> Option<Arc<Polling>> {
        lock(&self.map).get(sid).cloned()
    }

    /// Sessions open on the polling transport now.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, sid: &str) {
        lock(&self.map).remove(sid);
    }
}

/// One polling session, shared by the requests that carry it and its keeper task.
#[derive(Debug)]
pub struct Polling {
    /// Its Engine.IO session id.
    pub sid: Box<str>,
    /// The room it joins when it connects to `/`.
    pub room: Box<str>,
    /// Who it is, for log lines.
    pub peer: Peer,
    opened: Instant,
    ctx: Arc<SessionCtx>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Its place in the lobby or its room; `None` once ended or moved to a WebSocket.
    membership: Option<Membership>,
    /// Its admission; given back when it ends, or when the WebSocket that took it over does.
    permit: Option<SessionPermit>,
    /// Packets for this client that are not broadcasts, `\x1e`-joined.
    ctrl: Vec<u8>,
    /// Whole frames that keep their order before the outbox's: a recovery's events and the
    /// CONNECT answer after them (at most `--history-size` and one).
    pending: VecDeque<Frame>,
    /// Its Socket.IO recovery registration, once connected (history on).
    resume: Option<Registered>,
    /// A GET is held.
    held: bool,
    get_waker: Option<Waker>,
    keeper_waker: Option<Waker>,
    /// The ping schedule and the pong deadline.
    keepalive: Keepalive,
    /// When a WebSocket began to probe: it must switch within `--upgrade-timeout`.
    probe_deadline: Option<Instant>,
    /// A WebSocket has probed: an empty held GET answers `6`.
    upgrading: bool,
    /// Moved to a WebSocket (`5`).
    upgraded: bool,
    /// Why it ended.
    end: Option<End>,
    bucket: TokenBucket,
    stats: Stats,
    /// What its token allows (`--jwt-secret-file`).
    access: Access,
}

/// Why a GET or POST for a known `sid` is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The session has ended (Engine.IO's `Session ID unknown`).
    Gone,
    /// It was upgraded to a WebSocket: polling it is a `Bad request`, as the reference says.
    Upgraded,
    /// This request ended it: a second held GET, or a POST whose packets were refused.
    Ended(End),
}

impl Polling {
    /// Opens a session for an admitted client and registers it. Returns it with its open
    /// packet (the handshake GET's body); the caller spawns [`Polling::keep`].
    pub fn open(
        ctx: &Arc<SessionCtx>,
        room: &str,
        peer: Peer,
        permit: SessionPermit,
        access: Access,
    ) -> (Arc<Polling>, String) {
        let cfg = &ctx.cfg;
        let sid = sio::new_sid_after(&ctx.sid_prefix);
        let open = super::open_packet(cfg, &sid, true);
        let now = Instant::now();
        let p = Arc::new(Polling {
            sid: sid.into(),
            room: room.into(),
            peer,
            opened: now,
            ctx: ctx.clone(),
            state: Mutex::new(State {
                membership: Some(ctx.hub.join_lobby(Protocol::SocketIo)),
                permit: Some(permit),
                ctrl: Vec::new(),
                pending: VecDeque::new(),
                resume: None,
                held: false,
                get_waker: None,
                keeper_waker: None,
                keepalive: Keepalive::new(now, cfg),
                probe_deadline: None,
                upgrading: false,
                upgraded: false,
                end: None,
                bucket: TokenBucket::new(ctx.max_messages_per_second),
                stats: Stats {
                    polling: true,
                    ..Stats::default()
                },
                access,
            }),
        });
        lock(&ctx.polling.map).insert(p.sid.clone(), p.clone());
        crate::info!(
            "open",
            conn = p.peer.conn,
            client = p.peer.client,
            room = room,
            protocol = "socket.io",
            transport = "polling",
            sid = p.sid
        );
        ctx.metrics.count(Family::SioTransport, "polling");
        (p, open)
    }

    /// One GET: waits until there is something for the client and returns the payload. A
    /// session that ends meanwhile answers the close packet `1`.
    pub async fn poll(&self) -> Result<Vec<u8>, Refused> {
        {
            let mut st = lock(&self.state);
            if st.upgraded {
                return Err(Refused::Upgraded);
            }
            if st.end.is_some() {
                return Err(Refused::Gone);
            }
            if st.held {
                self.finish(&mut st, End::PollOverlap);
                return Err(Refused::Ended(End::PollOverlap));
            }
            st.held = true;
        }
        let _held = Held(self);
        let mut frames: VecDeque<Frame> = VecDeque::new();
        std::future::poll_fn(|cx| {
            let mut st = lock(&self.state);
            if st.upgraded {
                return Poll::Ready(Ok(sio::NOOP.into()));
            }
            if st.end.is_some() {
                return Poll::Ready(Ok(sio::CLOSE.into()));
            }
            let signal = match &st.membership {
                Some(m) => m.member().poll_outbox(cx, Some(&mut frames)),
                None => Poll::Pending,
            };
            match signal {
                Poll::Ready(Signal::Evicted) => {
                    self.finish(&mut st, End::SlowConsumer);
                    return Poll::Ready(Ok(sio::CLOSE.into()));
                }
                Poll::Ready(s @ (Signal::GoingAway | Signal::Replaced | Signal::Resync)) => {
                    self.finish(&mut st, End::from_signal(s).unwrap_or(End::GoingAway));
                    return Poll::Ready(Ok(sio::CLOSE.into()));
                }
                Poll::Ready(Signal::Frames) | Poll::Pending => {}
            }
            if st.ctrl.is_empty() && st.pending.is_empty() && frames.is_empty() {
                if st.upgrading {
                    return Poll::Ready(Ok(sio::NOOP.into()));
                }
                st.get_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let mut out = std::mem::take(&mut st.ctrl);
            let pending = std::mem::take(&mut st.pending);
            for f in pending.iter().chain(frames.iter()) {
                sio::push_packet(&mut out, frame::payload(f));
                st.stats.frames_out += 1;
            }
            frames.clear();
            Poll::Ready(Ok(out))
        })
        .await
    }

    /// Before a POST is handled: a CONNECT in it from a client not connected yet is
    /// [`super::Recovery::prepare`]d (what it needs from Redis, read without the session's
    /// lock held).
    pub async fn prepare(&self, body: &[u8]) {
        let Some(r) = &self.ctx.recovery else { return };
        let in_lobby = lock(&self.state)
            .membership
            .as_ref()
            .is_some_and(|m| m.in_lobby());
        if !in_lobby {
            return;
        }
        let Ok(packets) = sio::payload_packets(body) else {
            return;
        };
        for text in packets.into_iter().filter(|t| t.starts_with("40")) {
            r.prepare(&self.ctx.hub, &self.room, text).await;
        }
    }

    /// One POST: handles its packets in order, as the WebSocket transport handles frames.
    pub fn post(&self, body: &[u8]) -> Result<(), Refused> {
        let mut st = lock(&self.state);
        if st.upgraded {
            return Err(Refused::Upgraded);
        }
        if st.end.is_some() {
            return Err(Refused::Gone);
        }
        let ends = st.access.ends();
        let result = self.packets(&mut st, body);
        if !st.ctrl.is_empty() || !st.pending.is_empty() {
            if let Some(w) = st.get_waker.take() {
                w.wake();
            }
        }
        if st.access.ends() != ends {
            // Granted at its CONNECT: the keeper times the grant's end too.
            if let Some(w) = st.keeper_waker.take() {
                w.wake();
            }
        }
        match result {
            Ok(()) => Ok(()),
            // The client closing its own session (`1`) is no error: answered `ok`.
            Err(End::SioClose) => {
                self.finish(&mut st, End::SioClose);
                Ok(())
            }
            Err(end) => {
                self.finish(&mut st, end);
                Err(Refused::Ended(end))
            }
        }
    }

    fn packets(&self, st: &mut State, body: &[u8]) -> Result<(), End> {
        let packets = sio::payload_packets(body).map_err(End::SioBadPacket)?;
        let who = Session {
            room: &self.room,
            protocol: Protocol::SocketIo,
            peer: &self.peer,
            upgrade: None,
        };
        let client = Client::of(&self.ctx, &self.sid, &self.room, &self.peer);
        let State {
            membership,
            ctrl,
            pending,
            resume,
            bucket,
            stats,
            keepalive,
            access,
            ..
        } = st;
        let membership = membership.as_mut().ok_or(End::Eof)?;
        for text in packets {
            // Any packet shows the client is alive, as any frame does on a WebSocket.
            keepalive.heard();
            account(&self.ctx, stats, bucket, &who, Kind::Text, text.as_bytes())?;
            let mut flood = false;
            let mut reply = |r: Reply| match r {
                Reply::Text(m) => {
                    let taken = push_ctrl(ctrl, m.as_bytes());
                    flood |= !taken;
                    taken
                }
                Reply::Frame(f) => {
                    pending.push_back(f);
                    true
                }
            };
            client.packet(text, membership, access, resume, &mut reply)?;
            if flood {
                return Err(End::ControlFlood);
            }
        }
        Ok(())
    }

    /// Keeps the session's time while no request does: queues a ping every `ping_interval`
    /// (the next GET carries it), closes it when a pong is late, and watches the member's
    /// end signals (shutdown, eviction) while no GET is held. Ends with the session.
    pub async fn keep(self: Arc<Self>) {
        let cfg = &self.ctx.cfg;
        let mut timer = Timer::never();
        std::future::poll_fn(|cx| loop {
            let mut st = lock(&self.state);
            if st.end.is_some() || st.upgraded {
                return Poll::Ready(());
            }
            let now = Instant::now();
            if st.access.ends().is_some_and(|e| now >= e) {
                self.finish(&mut st, End::TokenExpired);
                return Poll::Ready(());
            }
            match st.keepalive.tick(now, cfg) {
                Tick::PongTimeout => {
                    self.ctx.metrics.pong_timeouts.fetch_add(1, Relaxed);
                    self.finish(&mut st, End::PongTimeout);
                    return Poll::Ready(());
                }
                Tick::Ping => {
                    if !push_ctrl(&mut st.ctrl, sio::PING.as_bytes()) {
                        self.finish(&mut st, End::ControlFlood);
                        return Poll::Ready(());
                    }
                    self.ctx.metrics.pings.fetch_add(1, Relaxed);
                    if let Some(w) = st.get_waker.take() {
                        w.wake();
                    }
                }
                Tick::Idle => {}
            }
            if !st.held {
                let signal = match &st.membership {
                    Some(m) => m.member().poll_outbox(cx, None),
                    None => Poll::Pending,
                };
                let end = match signal {
                    Poll::Ready(s) => End::from_signal(s),
                    Poll::Pending => None,
                };
                if let Some(end) = end {
                    self.finish(&mut st, end);
                    return Poll::Ready(());
                }
            }
            st.keeper_waker = Some(cx.waker().clone());
            let at = st
                .access
                .ends()
                .map_or(st.keepalive.next_at(), |e| e.min(st.keepalive.next_at()));
            timer.set_at(at);
            drop(st);
            if Pin::new(&mut timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
        })
        .await
    }

    /// A WebSocket with this session's id is open: it has `--upgrade-timeout` to switch.
    pub fn probe_started(&self) {
        let deadline = Instant::now() + self.ctx.cfg.upgrade_timeout;
        lock(&self.state).probe_deadline = Some(deadline);
    }

    /// When the probing WebSocket must have switched by.
    pub fn upgrade_deadline(&self) -> Option<Instant> {
        lock(&self.state).probe_deadline
    }

    /// Whether the probing WebSocket is past its deadline.
    pub fn upgrade_expired(&self, now: Instant) -> bool {
        self.upgrade_deadline().is_some_and(|d| now >= d)
    }

    /// The probing WebSocket ended without switching: GETs are held again.
    pub fn probe_failed(&self) {
        let mut st = lock(&self.state);
        st.upgrading = false;
        st.probe_deadline = None;
    }

    /// The WebSocket probe arrived: an empty held GET answers `6` from now on, so that the
    /// client can pause polling and switch.
    pub fn probe(&self) {
        let mut st = lock(&self.state);
        st.upgrading = true;
        if let Some(w) = st.get_waker.take() {
            w.wake();
        }
    }

    /// The client switched (`5`) on the WebSocket connection `ws_conn`: hands over the
    /// member, with whatever its outbox holds, the control packets not yet sent
    /// (`\x1e`-joined), and its grant. `None` if the session ended meanwhile. Its admission
    /// stays here until [`Polling::release`].
    pub(crate) fn switch(&self, ws_conn: u64) -> Option<Taken> {
        let mut st = lock(&self.state);
        if st.end.is_some() || st.upgraded {
            return None;
        }
        let membership = st.membership.take()?;
        st.upgraded = true;
        self.ctx.polling.remove(&self.sid);
        self.ctx.metrics.sio_upgrades.fetch_add(1, Relaxed);
        crate::info!(
            "upgrade",
            conn = self.peer.conn,
            client = self.peer.client,
            sid = self.sid,
            ws_conn = ws_conn,
            after = Secs(self.opened.elapsed())
        );
        for w in [st.get_waker.take(), st.keeper_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
        Some(Taken {
            membership,
            ctrl: std::mem::take(&mut st.ctrl),
            pending: std::mem::take(&mut st.pending),
            access: std::mem::take(&mut st.access),
            held: st.resume.take(),
        })
    }

    /// Whether [`Polling::switch`] moved this session to a WebSocket.
    pub fn is_upgraded(&self) -> bool {
        lock(&self.state).upgraded
    }

    /// The WebSocket session that took this one over has ended: its admission goes back.
    pub fn release(&self) {
        let permit = lock(&self.state).permit.take();
        drop(permit);
    }

    /// The client's connection dropped while its GET was held: the transport is closed, as
    /// the reference closes it.
    pub fn client_gone(&self) {
        let mut st = lock(&self.state);
        self.finish(&mut st, End::Eof);
    }

    /// Ends the session once: unregisters it, logs its close line, leaves its room, gives
    /// its admission back, and wakes a held GET (which answers `1`) and the keeper.
    fn finish(&self, st: &mut State, end: End) {
        if st.end.is_some() || st.upgraded {
            return;
        }
        st.end = Some(end);
        self.ctx.polling.remove(&self.sid);
        drop(st.membership.take());
        if let (Some(r), Some(h)) = (&self.ctx.recovery, &st.resume) {
            // Resumable whatever the end (Engine.IO's `1` is Node's recoverable "transport
            // close"); only `41`, `socket.disconnect()`, forgets it, in `socketio.rs`.
            r.ended(h, false);
        }
        let who = Session {
            room: &self.room,
            protocol: Protocol::SocketIo,
            peer: &self.peer,
            upgrade: None,
        };
        super::log_close(&self.ctx, &who, self.opened, end, &st.stats, &st.access);
        // After the close line: the drain waits for the last permit.
        drop(st.permit.take());
        for w in [st.get_waker.take(), st.keeper_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }
}

/// What a WebSocket takes over at the switch (`5`).
#[derive(Debug)]
pub(crate) struct Taken {
    /// The member, with whatever its outbox holds.
    pub membership: Membership,
    /// The control packets not sent yet, `\x1e`-joined.
    pub ctrl: Vec<u8>,
    /// Whole frames not sent yet (a recovery's), before the outbox's.
    pub pending: VecDeque<Frame>,
    /// Its grant.
    pub access: Access,
    /// Its recovery registration.
    pub held: Option<Registered>,
}

/// Appends a packet to `ctrl` unless that passes [`CTRL_CAP`].
fn push_ctrl(ctrl: &mut Vec<u8>, packet: &[u8]) -> bool {
    if ctrl.len() + packet.len() + 1 > CTRL_CAP {
        return false;
    }
    sio::push_packet(ctrl, packet);
    true
}

/// Marks the held GET as gone when its request ends, however it ends, and lets the keeper
/// watch the outbox again.
struct Held<'a>(&'a Polling);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.held = false;
        st.get_waker = None;
        if let Some(w) = st.keeper_waker.take() {
            w.wake();
        }
    }
}
