//! Rooms and their members. The hub never awaits a member.
//!
//! ```text
//! publish(room, frame) ── for each member ──> Outbox::push (try, never waits)
//!                                                 │ full: member is evicted (slow consumer)
//!                                                 ├─> wakes the member's session task
//!                                                 └─> or, inline (a quiet room, an idle
//!                                                     session): after the room's locks,
//!                                                     Member::flush sends it on the lent Sink
//! ```
//!
//! * **Inline delivery** (`--inline-gap`). A session with nothing to write lends its socket
//!   to its outbox ([`Sink`], [`Membership::arm`]) until it next runs ([`Member::disarm`]).
//!   A publish into a quiet room (its publishes at least `--inline-gap` apart on average and
//!   no closer than its last inline fan-out took, the executor not busy, no other inline
//!   fan-out of the room under way) then queues the frame without waking the session, and
//!   once the room's locks are released sends it itself under the outbox's lock
//!   ([`Member::flush`]): one `send` per delivery and no wake-up, task switch or second pass
//!   over the session. What the socket does not take whole (a full send buffer) stays queued
//!   with the bytes already written counted, and the session is woken to finish it, as it
//!   would have. A busy room's publishes queue for the sessions, which write everything
//!   queued in one `writev`.
//!
//! * A publish encodes its frame once ([`crate::frame`]); each delivery clones an `Arc`.
//! * Each member's [`Outbox`] is bounded by `outbox_frames`. **Full-policy: evict.** When a
//!   push finds it full, the member is marked [`Signal::Evicted`], its queue is dropped and its
//!   session closes it with 1008; the publisher and the other members go on at once.
//! * A queue's storage is a `VecDeque` whose capacity is kept, and the session swaps it with an
//!   equally kept local one, so steady-state delivery allocates nothing.
//! * `join` and `leave` take the room map lock; `publish` takes only the room's member lock
//!   (shared), so rooms publish in parallel on all executor threads.
//! * **History** (`--recovery-window`, on by default): each room keeps a log of its
//!   messages ([`crate::history::Ring`]), and every publish gets the room's next offset,
//!   carried by the frames of Socket.IO members (the event's last argument) and of raw members
//!   that asked for `wsgate.offset`. With history on, a room's publishes take its log's lock
//!   for the whole fan-out, so every member gets them in the log's order; rooms still publish
//!   in parallel. [`Hub::join_since`] joins and copies what came after an offset under the
//!   same lock: each publish is either in the copy or in the new member's outbox, never both
//!   and never neither. The log outlives the room's members for the window, so a client that
//!   was the last one out can still come back.
//! * Hooks for other protocols and a backplane: members carry a [`Protocol`], and
//!   [`Hub::publish`] encodes one frame per protocol present, on first need. A [`Relay`]
//!   (the Redis backplane) gets every publish made through a [`Membership`] after local
//!   delivery; what other instances send comes in through [`Hub::deliver`], which never
//!   relays, so nothing goes round twice.

use crate::config::HistoryConfig;
use crate::frame::{self, Frame, Kind};
use crate::history::{new_epoch, Gap, Offset, Place, Ring};
use crate::lock::{mutex as lock, read, write};
use crate::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A session's socket, lent to its outbox while the session is idle ([`Member::arm`]).
/// (No `Debug` bound: the trait object's table would keep the socket's `Debug`, and with it
/// the address lookups, in the binary.)
pub trait Sink: Send + Sync {
    /// Writes what the socket takes now, without waiting (a non-blocking `send`).
    fn send(&self, buf: &[u8]) -> std::io::Result<usize>;
}

/// A lent socket, in the outbox.
struct Lent(Arc<dyn Sink>);

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lent")
    }
}

impl std::fmt::Debug for dyn Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}

/// Wire protocols a member can speak; a publish encodes one frame per protocol present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain WebSocket text/binary frames.
    Raw,
    /// Plain frames, each `<offset> <message>` (the `wsgate.offset` subprotocol).
    RawOffset,
    /// Socket.IO v5 packets over Engine.IO v4 text frames.
    SocketIo,
}

/// Number of [`Protocol`] variants (size of per-publish frame caches).
const PROTOCOLS: usize = 3;

/// What was published, in the publisher's own protocol.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A plain WebSocket message.
    Raw { kind: Kind, data: &'a [u8] },
    /// A Socket.IO event: `args` is the JSON array `["name", ...]`; `chat` is the text when
    /// the event is `chat message` with exactly one string argument.
    SocketIo {
        args: &'a str,
        chat: Option<&'a str>,
    },
}

/// A message published into a room.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// What to deliver.
    pub payload: Payload<'a>,
    /// A member that must not receive it (`socket.broadcast.emit`), or `None` (`io.emit`).
    pub except: Option<u64>,
}

/// Why a session's outbox woke it besides new frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Frames are waiting.
    Frames,
    /// The outbox overflowed: close with 1008 (slow consumer).
    Evicted,
    /// The server is shutting down: close with 1001.
    GoingAway,
    /// Another connection resumed this member's session: close (1008).
    Replaced,
    /// The room's shared order jumped past messages this instance never got: close (1012),
    /// so that the client reconnects and resumes, or learns that it cannot.
    Resync,
}

/// What happened to one publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Members that got the frame queued.
    pub delivered: usize,
    /// Members evicted by this publish because their outbox was full.
    pub evicted: usize,
    /// Bytes of the frames queued: each member's frame in its own protocol.
    pub bytes: u64,
    /// Of `delivered`, frames left for the publisher to send inline.
    pub inline: usize,
}

/// Where publishes also go besides this instance's members: the backplane. (No `Debug`
/// bound: the vtable would keep the backplane's whole `Debug`, and every field's, in the
/// binary; `dyn Relay` prints as its name instead.)
pub trait Relay: Send + Sync {
    /// Called once per publish made through a [`Membership`], after local delivery. Must
    /// not wait: whatever cannot be taken at once is dropped (and counted) by the relay.
    fn relay(&self, room: &str, payload: &Payload<'_>);

    /// Offers a publish to the room's shared order (Redis numbers it and sends it to every
    /// instance, this one included, which then delivers it through [`Hub::deliver_at`]).
    /// Must not wait.
    fn share(&self, _room: &str, _payload: &Payload<'_>, _except: Option<u64>) -> Shared {
        Shared::Off
    }
}

/// What [`Relay::share`] did with a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// There is no shared order (no Redis, or history off): deliver here and relay.
    Off,
    /// The shared order is unreachable now: deliver here (the room numbers its own messages
    /// meanwhile) and relay (which drops it, counted).
    Down,
    /// Taken: it comes back numbered, for everyone here too.
    Taken,
    /// Refused (the queue to Redis is full): nobody gets it, counted.
    Dropped,
}

/// The shared rooms.
#[derive(Debug)]
pub struct Hub {
    rooms: Mutex<HashMap<Box<str>, Arc<Room>>>,
    relay: Option<Arc<dyn Relay>>,
    /// Where deliveries, frame bytes and evictions are counted, once per publish.
    metrics: Arc<Metrics>,
    outbox_frames: usize,
    next_member: AtomicU64,
    /// Set by [`Hub::going_away`]: members joining later are told at once.
    closing: AtomicBool,
    /// Members in no room yet (see [`Hub::join_lobby`]); not in `rooms`.
    lobby: Arc<Room>,
    /// Every room's log, by name, while the window keeps it; `None`: history is off.
    history: Option<History>,
    /// `--inline-gap` (zero: off).
    inline_gap: Duration,
    /// Tasks waiting to run on the executor: no inline fan-out while more than
    /// [`crate::executor::BATCH`] do (a busy machine batches; an inline fan-out, one thread's
    /// sends in a row, would make it busier).
    runnable: Option<Arc<AtomicUsize>>,
    /// What rooms' publish times count from.
    started: Instant,
}

/// The logs of all rooms and what they hold together.
#[derive(Debug)]
struct History {
    cfg: HistoryConfig,
    logs: Mutex<HashMap<Box<str>, Arc<Mutex<Log>>>>,
    /// Bytes held by every log (`--history-memory` caps it).
    bytes: AtomicUsize,
    /// Entries held by every log.
    entries: AtomicUsize,
    /// When the logs no room holds were last swept (at most every quarter window).
    swept: Mutex<Instant>,
}

type Log = Ring<Logged>;

/// What one kept message costs besides its bytes: its place in the room's ring (the entry's
/// number, time and size, and the [`Logged`] itself), counted so that `--history-memory`
/// bounds the memory the history takes, not only its payloads.
const ENTRY_COST: usize = std::mem::size_of::<Logged>() + 32;
/// What each shared frame or copy costs besides its bytes: its reference counts, and the
/// allocator's rounding, about.
const ARC_COST: usize = 32;

/// One logged message: what was published, and its frames as encoded so far.
#[derive(Debug)]
struct Logged {
    offset: Offset,
    except: Option<u64>,
    payload: Stored,
    /// Per protocol: `None` not encoded yet, `Some(None)` no form in that protocol.
    frames: [Option<Option<Frame>>; PROTOCOLS],
}

/// A publish's payload, kept for members that ask for it later: read back from the frame
/// made for the publisher's own form when there is one (no copy), else copied.
#[derive(Debug)]
enum Stored {
    /// A plain message: `frame`'s payload from `skip` on (a raw frame, or a `wsgate.offset`
    /// one after its prefix).
    Plain {
        frame: Frame,
        skip: usize,
        kind: Kind,
    },
    /// A Socket.IO event: its frame, `42[..,"<offset>"]`.
    Event { frame: Frame },
    /// A copy of a plain message no raw member was sent.
    Raw { kind: Kind, data: Arc<[u8]> },
    /// A copy of an event no Socket.IO member was sent.
    SocketIo { args: Arc<str> },
}

impl Stored {
    /// What `payload` is kept as, given the frames its delivery made.
    fn new(p: &Payload<'_>, frames: &[Option<Option<Frame>>; PROTOCOLS]) -> Stored {
        let made = |protocol: Protocol| frames[protocol as usize].clone().flatten();
        match *p {
            Payload::Raw { kind, data } => {
                if let Some(frame) = made(Protocol::Raw) {
                    let skip = 0;
                    return Stored::Plain { frame, skip, kind };
                }
                if let Some(frame) = made(Protocol::RawOffset) {
                    let skip = frame::payload(&frame).len() - data.len();
                    return Stored::Plain { frame, skip, kind };
                }
                Stored::Raw {
                    kind,
                    data: data.into(),
                }
            }
            Payload::SocketIo { args, .. } => match made(Protocol::SocketIo) {
                Some(frame) => Stored::Event { frame },
                None => Stored::SocketIo { args: args.into() },
            },
        }
    }

    /// Bytes it holds besides the frames already counted.
    fn copied(&self) -> usize {
        match self {
            Stored::Plain { .. } | Stored::Event { .. } => 0,
            Stored::Raw { data, .. } => data.len() + ARC_COST,
            Stored::SocketIo { args } => args.len() + ARC_COST,
        }
    }

    /// Calls `f` with the payload again (a replay in a form nobody was sent at publish).
    fn with_payload<R>(&self, offset: Offset, f: impl FnOnce(&Payload<'_>) -> R) -> R {
        let args: String;
        let args = match self {
            Stored::Plain { frame, skip, kind } => {
                return f(&Payload::Raw {
                    kind: *kind,
                    data: &frame::payload(frame)[*skip..],
                })
            }
            Stored::Raw { kind, data } => return f(&Payload::Raw { kind: *kind, data }),
            Stored::SocketIo { args } => &**args,
            Stored::Event { frame } => {
                // `42[..,"<offset>"]` -> `[..]`: the event's own arguments.
                let text = std::str::from_utf8(frame::payload(frame)).unwrap_or("42[]");
                let tail = format!(",\"{offset}\"]");
                let body = text[2..].strip_suffix(tail.as_str()).unwrap_or("[");
                args = format!("{body}]");
                &args
            }
        };
        let chat = crate::sio::chat_text(args);
        f(&Payload::SocketIo {
            args,
            chat: chat.as_deref(),
        })
    }
}

/// What a member that joins after an offset gets besides its place.
#[derive(Debug)]
pub struct Resume {
    /// The room's newest offset when it joined.
    pub top: Offset,
    /// Every message after the asked offset, as frames in its protocol, oldest first; or
    /// why that cannot be served whole. `None` when no offset was asked.
    pub replay: Option<Result<Vec<Frame>, Gap>>,
}

/// One room: its members, shared-locked by publishers.
#[derive(Debug)]
pub struct Room {
    name: Box<str>,
    members: RwLock<Vec<Arc<Member>>>,
    /// When the last publish came (nanoseconds after the hub started; 0: never).
    published: AtomicU64,
    /// The mean time between its publishes (nanoseconds; each new gap weighs 1/8): a
    /// publish goes inline when this is at least `--inline-gap`.
    mean_gap: AtomicU64,
    /// A publish is sending inline now: the next ones queue for the sessions meanwhile, so
    /// a room never has two inline fan-outs (one thread's sends each) piling up.
    sending: AtomicBool,
    /// How long its last inline fan-out took (nanoseconds): the next goes inline only if the
    /// mean gap is at least that, so that one thread's sends in a row end before the next
    /// publish, on average.
    sent_in: AtomicU64,
    /// The members that publish queued a frame for inline, to send once the room's other
    /// locks are released (only the publish that set `sending` uses it). Its capacity is
    /// kept.
    to_send: Mutex<Vec<Arc<Member>>>,
    /// Its log (shared with the hub's table, which keeps it for the window after the last
    /// member leaves); `None` when history is off.
    log: Option<Arc<Mutex<Log>>>,
}

/// One member of a room: an id and a bounded outbox.
#[derive(Debug)]
pub struct Member {
    id: u64,
    protocol: Protocol,
    outbox: Mutex<Outbox>,
}

#[derive(Debug)]
struct Outbox {
    queue: VecDeque<Frame>,
    cap: usize,
    /// `Evicted` or `GoingAway` once the member must close; nothing is queued after it.
    end: Option<Signal>,
    waker: Option<Waker>,
    /// The session's socket while it is lent ([`Member::arm`]): publishers may write whole
    /// frames to it, under this lock.
    lent: Option<Lent>,
    /// Bytes of `queue[0]` already sent inline (a send the socket took in part).
    written: usize,
    /// Frames sent inline.
    sent: u64,
}

/// A member's place in a room; leaving happens when it is dropped, on every exit path.
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    room: Arc<Room>,
    member: Arc<Member>,
}

impl Hub {
    /// A hub whose member outboxes hold at most `outbox_frames` frames each, counting into
    /// metrics of its own; no history.
    pub fn new(outbox_frames: usize) -> Arc<Hub> {
        Hub::with(outbox_frames, None, Arc::default())
    }

    /// A hub with history on (`cfg`), counting into metrics of its own.
    pub fn with_history(outbox_frames: usize, cfg: HistoryConfig) -> Arc<Hub> {
        Hub::build(
            outbox_frames,
            None,
            Arc::default(),
            cfg,
            Duration::ZERO,
            None,
        )
    }

    /// A hub that also hands every member's publish to `relay`, and counts into `metrics`;
    /// no history.
    pub fn with(
        outbox_frames: usize,
        relay: Option<Arc<dyn Relay>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Hub> {
        let off = HistoryConfig {
            window: std::time::Duration::ZERO,
            ..HistoryConfig::default()
        };
        Hub::build(outbox_frames, relay, metrics, off, Duration::ZERO, None)
    }

    /// A hub with every part given; history is on unless `history.window` is 0, inline
    /// delivery unless `inline_gap` is.
    pub fn build(
        outbox_frames: usize,
        relay: Option<Arc<dyn Relay>>,
        metrics: Arc<Metrics>,
        history: HistoryConfig,
        inline_gap: Duration,
        runnable: Option<Arc<AtomicUsize>>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            relay,
            metrics,
            outbox_frames: outbox_frames.max(1),
            // Random per process, so that a member id carried to other instances (the
            // member that must not get a message, `socket.broadcast.emit`) names no member
            // there.
            next_member: AtomicU64::new(fastrand::u64(1..1 << 62)),
            closing: AtomicBool::new(false),
            lobby: Arc::new(Room {
                name: "".into(),
                members: RwLock::new(Vec::new()),
                published: AtomicU64::new(0),
                mean_gap: AtomicU64::new(0),
                sending: AtomicBool::new(false),
                sent_in: AtomicU64::new(0),
                to_send: Mutex::new(Vec::new()),
                log: None,
            }),
            history: history.enabled().then(|| History {
                cfg: history,
                logs: Mutex::new(HashMap::new()),
                bytes: AtomicUsize::new(0),
                entries: AtomicUsize::new(0),
                swept: Mutex::new(Instant::now()),
            }),
            inline_gap,
            runnable,
            started: Instant::now(),
        })
    }

    /// Adds a member that is in no room yet: a Socket.IO client before it connects to `/`
    /// (or after it left). Nothing is ever published to the lobby; it is there so that a
    /// shutdown reaches every session.
    pub fn join_lobby(self: &Arc<Self>, protocol: Protocol) -> Membership {
        let member = self.new_member(protocol);
        write(&self.lobby.members).push(member.clone());
        self.admitted(self.lobby.clone(), member)
    }

    fn new_member(&self, protocol: Protocol) -> Arc<Member> {
        Arc::new(Member {
            id: self.next_member.fetch_add(1, Ordering::Relaxed),
            protocol,
            outbox: Mutex::new(Outbox {
                queue: VecDeque::new(),
                cap: self.outbox_frames,
                end: None,
                waker: None,
                lent: None,
                written: 0,
                sent: 0,
            }),
        })
    }

    /// Adds a new member to `room`, creating the room on first use.
    pub fn join(self: &Arc<Self>, room: &str, protocol: Protocol) -> Membership {
        self.join_since(room, protocol, None, None).0
    }

    /// Adds a new member to `room` and, with `since`, copies every message published after
    /// that offset in the member's protocol (but those that `skip`, a former member of the
    /// same session, sent to the others only). The copy and the join happen under the
    /// room's log lock, so no publish is missed or doubled between them.
    pub fn join_since(
        self: &Arc<Self>,
        room: &str,
        protocol: Protocol,
        since: Option<Offset>,
        skip: Option<u64>,
    ) -> (Membership, Resume) {
        let member = self.new_member(protocol);
        let mut rooms = lock(&self.rooms);
        let room = match rooms.get(room) {
            Some(r) => r.clone(),
            None => {
                let r = Arc::new(Room {
                    name: room.into(),
                    members: RwLock::new(Vec::new()),
                    published: AtomicU64::new(0),
                    mean_gap: AtomicU64::new(0),
                    sending: AtomicBool::new(false),
                    sent_in: AtomicU64::new(0),
                    to_send: Mutex::new(Vec::new()),
                    log: self.log_for(room),
                });
                rooms.insert(room.into(), r.clone());
                r
            }
        };
        let mut members = write(&room.members);
        drop(rooms);
        let resume = match &room.log {
            None => Resume {
                top: Offset { epoch: 0, seq: 0 },
                replay: since.map(|_| Err(Gap::Epoch)),
            },
            Some(log) => {
                let mut log = lock(log);
                self.expire(&mut log, Instant::now());
                let top = log.top();
                let replay = since.map(|s| {
                    log.since(s).map(|entries| {
                        entries
                            .filter(|e| e.except.is_none() || e.except != skip)
                            .filter_map(|e| e.frame(protocol))
                            .collect()
                    })
                });
                Resume { top, replay }
            }
        };
        members.push(member.clone());
        drop(members);
        (self.admitted(room, member), resume)
    }

    /// The log of room `name`: the one the window still keeps, or a new one.
    fn log_for(&self, name: &str) -> Option<Arc<Mutex<Log>>> {
        let h = self.history.as_ref()?;
        let mut logs = lock(&h.logs);
        let now = Instant::now();
        // Forget the logs no room holds whose newest message is past the window: a pass over
        // all of them, so at most once per quarter window, not at every new room.
        let due = {
            let mut swept = lock(&h.swept);
            let due = now.saturating_duration_since(*swept) >= h.cfg.window / 4;
            if due {
                *swept = now;
            }
            due
        };
        if due {
            let window = h.cfg.window;
            logs.retain(|_, l| {
                Arc::strong_count(l) > 1 || {
                    let mut l = lock(l);
                    self.expire(&mut l, now);
                    !l.is_empty() || l.used_within(now, window)
                }
            });
        }
        let log = logs
            .entry(name.into())
            .or_insert_with(|| Arc::new(Mutex::new(Ring::new(new_epoch(), h.cfg.room_entries))));
        Some(log.clone())
    }

    /// Drops `log`'s entries older than the window.
    fn expire(&self, log: &mut Log, now: Instant) {
        if let Some(h) = &self.history {
            let before = log.len();
            let freed = log.expire(now, h.cfg.window);
            h.forget(before - log.len(), freed);
        }
    }

    /// Entries and bytes all rooms' history holds now.
    pub fn history_held(&self) -> (usize, usize) {
        self.history.as_ref().map_or((0, 0), |h| {
            (
                h.entries.load(Ordering::Relaxed),
                h.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// The history settings, when history is on.
    pub fn history(&self) -> Option<&HistoryConfig> {
        self.history.as_ref().map(|h| &h.cfg)
    }

    fn admitted(self: &Arc<Self>, room: Arc<Room>, member: Arc<Member>) -> Membership {
        if self.closing.load(Ordering::SeqCst) {
            member.signal(Signal::GoingAway);
        }
        Membership {
            hub: self.clone(),
            room,
            member,
        }
    }

    fn leave(&self, room: &Arc<Room>, id: u64) {
        let mut rooms = lock(&self.rooms);
        let mut members = write(&room.members);
        if let Some(i) = members.iter().position(|m| m.id == id) {
            members.swap_remove(i);
        }
        if members.is_empty() {
            drop(members);
            if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
                rooms.remove(&room.name);
            }
            // The last member left: the room's offsets stay valid for a window from now.
            if let Some(log) = &room.log {
                lock(log).touch(std::time::Instant::now());
            }
        }
    }

    /// Queues `msg` for every member of `room` (but `msg.except`). Never waits: a member
    /// whose outbox is full is evicted instead.
    pub fn publish(&self, room: &Room, msg: &Message<'_>) -> Delivery {
        let inline = self.inline(room).then_some(room);
        let members = read(&room.members);
        let d = match &room.log {
            None => self.fan_out(&members, msg, None, &mut Default::default(), inline),
            Some(log) => self.logged(log, &members, msg, None, inline),
        };
        drop(members);
        self.count(&d);
        self.send_inline(inline);
        d
    }

    /// Whether a publish into `room` now goes inline: the room's publishes come at least
    /// `--inline-gap` apart on average, and no closer than its last inline fan-out took, the
    /// executor is not busy, and no other publish of the room is sending inline. When it
    /// does, the room is marked sending until [`Hub::send_inline`].
    fn inline(&self, room: &Room) -> bool {
        if self.inline_gap.is_zero() {
            return false;
        }
        // (At least 1: 0 is a room that never had a publish.)
        let now = (self.started.elapsed().as_nanos() as u64).max(1);
        let before = room.published.swap(now, Ordering::Relaxed);
        let gap = now.saturating_sub(before);
        let mean = match room.mean_gap.load(Ordering::Relaxed) {
            _ if before == 0 => self.inline_gap.as_nanos() as u64,
            0 => gap,
            m => m - m / 8 + gap / 8,
        };
        room.mean_gap.store(mean, Ordering::Relaxed);
        let busy = self
            .runnable
            .as_ref()
            .is_some_and(|r| r.load(Ordering::Relaxed) > crate::executor::BATCH);
        mean >= self.inline_gap.as_nanos() as u64
            && mean >= room.sent_in.load(Ordering::Relaxed)
            && !busy
            && room
                .sending
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Sends what the publish left for inline delivery (the room's other locks are released
    /// by now), then lets the room's next publish go inline again.
    fn send_inline(&self, inline: Option<&Room>) {
        let Some(room) = inline else { return };
        let began = Instant::now();
        let mut members = lock(&room.to_send);
        for m in members.drain(..) {
            m.flush();
        }
        drop(members);
        let took = began.elapsed().as_nanos() as u64;
        room.sent_in.store(took, Ordering::Relaxed);
        room.sending.store(false, Ordering::Release);
    }

    /// The room's order: under its log's lock, `msg` gets its offset (the log's next, or
    /// `at`, the number the shared order gave it), is queued for `members`, and the log keeps
    /// it. So every member's outbox and the log have the same order.
    fn logged(
        &self,
        log: &Mutex<Log>,
        members: &[Arc<Member>],
        msg: &Message<'_>,
        at: Option<Offset>,
        inline: Option<&Room>,
    ) -> Delivery {
        let mut log = lock(log);
        let now = Instant::now();
        self.expire(&mut log, now);
        let held = log.len();
        let (offset, freed) = match at {
            // Numbered here, in an epoch of this log's own: the shared order is out of reach.
            None if !log.own() => (None, log.make_own(new_epoch())),
            None => (None, 0),
            Some(at) => {
                let (place, freed) = log.place(at);
                match place {
                    Place::Old => return Delivery::default(),
                    Place::Next => {}
                    // Members holding offsets missed messages: they reconnect and resume.
                    Place::Jump => members
                        .iter()
                        .filter(|m| m.protocol != Protocol::Raw)
                        .for_each(|m| m.signal(Signal::Resync)),
                }
                (Some(at), freed)
            }
        };
        if let Some(h) = &self.history {
            h.forget(held - log.len(), freed);
        }
        let offset = offset.unwrap_or_else(|| log.next());
        let mut frames = Default::default();
        let d = self.fan_out(members, msg, Some(offset), &mut frames, inline);
        self.keep(&mut log, msg, offset, frames, now);
        d
    }

    /// Queues `msg` (at `offset`) for every member but `msg.except`. `frames` caches one
    /// encoding per protocol present, made on first need; `Some(None)` means the payload has
    /// no form in that protocol (e.g. binary to Socket.IO).
    fn fan_out(
        &self,
        members: &[Arc<Member>],
        msg: &Message<'_>,
        offset: Option<Offset>,
        frames: &mut [Option<Option<Frame>>; PROTOCOLS],
        inline: Option<&Room>,
    ) -> Delivery {
        let mut d = Delivery::default();
        let mut sends = inline.map(|r| lock(&r.to_send));
        for m in members.iter() {
            if Some(m.id) == msg.except {
                continue;
            }
            let Some(f) = frames[m.protocol as usize]
                .get_or_insert_with(|| encode(m.protocol, &msg.payload, offset))
                .clone()
            else {
                continue;
            };
            let len = f.len() as u64;
            match m.push(f, sends.is_some()) {
                Push::Queued => {
                    d.delivered += 1;
                    d.bytes += len;
                }
                Push::Inline => {
                    d.delivered += 1;
                    d.inline += 1;
                    d.bytes += len;
                    if let Some(v) = &mut sends {
                        v.push(m.clone());
                    }
                }
                Push::Evicted => d.evicted += 1,
                Push::Closed => {}
            }
        }
        d
    }

    /// Appends a publish to its room's log, within the room's count and all rooms' bytes.
    fn keep(
        &self,
        log: &mut Log,
        msg: &Message<'_>,
        offset: Offset,
        frames: [Option<Option<Frame>>; PROTOCOLS],
        now: Instant,
    ) {
        let Some(h) = &self.history else { return };
        let payload = Stored::new(&msg.payload, &frames);
        let bytes = ENTRY_COST
            + payload.copied()
            + frames
                .iter()
                .flatten()
                .flatten()
                .map(|f| f.len() + ARC_COST)
                .sum::<usize>();
        // Room for it: this room's oldest messages go first.
        while h.bytes.load(Ordering::Relaxed) + bytes > h.cfg.max_bytes {
            let Some(b) = log.pop_oldest() else { break };
            h.forget(1, b);
        }
        if h.bytes.load(Ordering::Relaxed) + bytes > h.cfg.max_bytes {
            // Other rooms hold it all: this message is counted, not kept.
            let held = log.len();
            let freed = log.bytes();
            log.skip();
            h.forget(held, freed);
            return;
        }
        let before = log.len();
        let freed = log.push(
            Logged {
                offset,
                except: msg.except,
                payload,
                frames,
            },
            bytes,
            now,
        );
        h.entries.fetch_add(1, Ordering::Relaxed);
        h.bytes.fetch_add(bytes, Ordering::Relaxed);
        h.forget(before + 1 - log.len(), freed);
    }

    /// Adds one publish's delivery to the metrics: three atomic adds, whatever the room size.
    fn count(&self, d: &Delivery) {
        let m = &self.metrics;
        if d.delivered > 0 {
            m.messages_out
                .fetch_add(d.delivered as u64, Ordering::Relaxed);
            m.bytes_out.fetch_add(d.bytes, Ordering::Relaxed);
        }
        if d.inline > 0 {
            m.messages_inline
                .fetch_add(d.inline as u64, Ordering::Relaxed);
        }
        if d.evicted > 0 {
            m.evictions.fetch_add(d.evicted as u64, Ordering::Relaxed);
        }
    }

    /// Delivers a message from another instance to this instance's members of `room` (if
    /// any). It is not relayed again.
    pub fn deliver(&self, room: &str, payload: Payload<'_>) -> Delivery {
        let Some(room) = lock(&self.rooms).get(room).cloned() else {
            // No member here now, but the room's log may still be kept for the window: what
            // is published meanwhile goes in it, so a member that comes back misses nothing.
            if let Some(log) = self.kept_log(room) {
                let msg = Message {
                    payload,
                    except: None,
                };
                self.logged(&log, &[], &msg, None, None);
            }
            return Delivery::default();
        };
        self.publish(
            &room,
            &Message {
                payload,
                except: None,
            },
        )
    }

    /// Delivers a message of the room's shared order (numbered `at` by Redis) to the members
    /// here but `except` (one of them, when it came from here with `socket.broadcast.emit`),
    /// and keeps it in the room's log, which follows that order ([`Ring::place`]).
    pub fn deliver_at(
        &self,
        room: &str,
        payload: Payload<'_>,
        at: Offset,
        except: Option<u64>,
    ) -> Delivery {
        let msg = Message { payload, except };
        let found = lock(&self.rooms).get(room).cloned();
        let Some(r) = found else {
            // No member here, but the log may be kept for the window: it follows too.
            if let Some(log) = self.kept_log(room) {
                self.logged(&log, &[], &msg, Some(at), None);
            }
            return Delivery::default();
        };
        let inline = self.inline(&r).then_some(&*r);
        let members = read(&r.members);
        let d = match &r.log {
            Some(log) => self.logged(log, &members, &msg, Some(at), inline),
            None => self.fan_out(&members, &msg, None, &mut Default::default(), inline),
        };
        drop(members);
        self.count(&d);
        self.send_inline(inline);
        d
    }

    /// The log the window keeps for `room`, if any.
    fn kept_log(&self, room: &str) -> Option<Arc<Mutex<Log>>> {
        self.history
            .as_ref()
            .and_then(|h| lock(&h.logs).get(room).cloned())
    }

    /// Whether `room`'s log follows the shared order already (so its offsets are the ones
    /// every instance hands out).
    pub fn follows(&self, room: &str) -> bool {
        self.kept_log(room).is_some_and(|l| !lock(&l).own())
    }

    /// Makes `room`'s log (made now if there is none) follow the shared order, whose newest
    /// offset is `top`. Members holding offsets of another order are told to resync.
    pub fn follow(&self, room: &str, top: Offset) {
        let Some(log) = self.log_for(room) else {
            return;
        };
        let found = lock(&self.rooms).get(room).cloned();
        let members = found.as_ref().map(|r| read(&r.members));
        let mut l = lock(&log);
        let now = Instant::now();
        self.expire(&mut l, now);
        l.touch(now);
        let held = l.len();
        let next = Offset {
            epoch: top.epoch,
            seq: top.seq + 1,
        };
        let (place, freed) = l.place(next);
        if place == Place::Jump {
            for m in members.iter().flat_map(|m| m.iter()) {
                if m.protocol != Protocol::Raw {
                    m.signal(Signal::Resync);
                }
            }
        }
        if let Some(h) = &self.history {
            h.forget(held - l.len(), freed);
        }
    }

    /// Whether a member joining `room` now could resume after `since` from what is kept here.
    pub fn can_resume(&self, room: &str, since: Offset) -> bool {
        self.kept_log(room).is_some_and(|l| {
            let mut l = lock(&l);
            self.expire(&mut l, Instant::now());
            let ok = l.since(since).is_ok();
            ok
        })
    }

    /// Puts back messages of `room`'s shared order fetched from Redis (`(seq, payload, the
    /// member it was not for)`,
    /// oldest first, up to `top`), so that resumes from before what this instance kept can
    /// be served: the log follows `top`, then takes each message just before its oldest,
    /// newest first, within its count and all rooms' bytes.
    pub fn fill(&self, room: &str, top: Offset, entries: &[(u64, Payload<'_>, Option<u64>)]) {
        self.follow(room, top);
        let (Some(h), Some(log)) = (&self.history, self.kept_log(room)) else {
            return;
        };
        let mut l = lock(&log);
        let now = Instant::now();
        for (seq, p, except) in entries.iter().rev() {
            if l.epoch() != top.epoch || *seq > l.floor() {
                continue;
            }
            let payload = match *p {
                Payload::Raw { kind, data } => Stored::Raw {
                    kind,
                    data: data.into(),
                },
                Payload::SocketIo { args, .. } => Stored::SocketIo { args: args.into() },
            };
            let bytes = ENTRY_COST + payload.copied();
            if h.bytes.load(Ordering::Relaxed) + bytes > h.cfg.max_bytes {
                break;
            }
            let offset = Offset {
                epoch: top.epoch,
                seq: *seq,
            };
            let entry = Logged {
                offset,
                except: *except,
                payload,
                frames: Default::default(),
            };
            if !l.prepend(*seq, entry, bytes, now) {
                break;
            }
            h.entries.fetch_add(1, Ordering::Relaxed);
            h.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Tells every member the server is going away (they close with 1001).
    pub fn going_away(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let mut rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        rooms.push(self.lobby.clone());
        for room in rooms {
            for m in read(&room.members).iter() {
                m.signal(Signal::GoingAway);
            }
        }
    }

    /// Number of rooms with at least one member.
    pub fn rooms(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Every room and its member count now, by name.
    pub fn room_list(&self) -> Vec<(String, usize)> {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        let mut list: Vec<(String, usize)> = rooms
            .iter()
            .map(|r| (r.name.to_string(), read(&r.members).len()))
            .collect();
        list.sort();
        list
    }

    /// Publishes `payload` into `room` from outside any session (the publish API): to every
    /// member here, and through the relay (the backplane) to every other instance.
    /// Returns what happened here and whether it went to the shared order (then its
    /// deliveries here come later, from Redis's echo).
    pub fn publish_from_outside(&self, room: &str, payload: Payload<'_>) -> (Delivery, Shared) {
        let msg = Message {
            payload,
            except: None,
        };
        self.send(room, None, &msg)
    }

    /// A publish from this instance: through the room's shared order when there is one
    /// (delivered here when it comes back numbered), else to the members here and the relay.
    /// (`here`: the room, when the caller holds it, so the room map is not locked.)
    fn send(&self, room: &str, here: Option<&Room>, msg: &Message<'_>) -> (Delivery, Shared) {
        let shared = self
            .relay
            .as_ref()
            .map_or(Shared::Off, |r| r.share(room, &msg.payload, msg.except));
        if matches!(shared, Shared::Taken | Shared::Dropped) {
            return (Delivery::default(), shared);
        }
        let d = match here {
            Some(r) => self.publish(r, msg),
            None => self.deliver(room, msg.payload),
        };
        if let Some(relay) = &self.relay {
            relay.relay(room, &msg.payload);
        }
        (d, shared)
    }

    /// Members in `room` now (0 if it does not exist).
    pub fn members(&self, room: &str) -> usize {
        lock(&self.rooms)
            .get(room)
            .map_or(0, |r| read(&r.members).len())
    }
}

/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;

/// Whether `name` is an acceptable room name: `[A-Za-z0-9_.-]{1,64}`. Checked wherever a
/// name comes from outside (a request path, a Redis channel).
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The frame a member of `protocol` gets for `payload` (at `offset`, when history is on), if
/// it has one.
///
/// Bridging: a plain text message reaches Socket.IO members as `chat message`; a Socket.IO
/// `chat message` with one string reaches plain members as that text. Plain binary messages
/// and other Socket.IO events stay within their protocol. Socket.IO events carry the offset
/// as their last argument (what the stock client keeps for its recovery); `wsgate.offset`
/// members get `<offset> ` before the message.
fn encode(protocol: Protocol, payload: &Payload<'_>, offset: Option<Offset>) -> Option<Frame> {
    // The plain form: (kind, bytes) of the message a raw member sees.
    let plain = || match *payload {
        Payload::Raw { kind, data } => Some((kind, data)),
        Payload::SocketIo { chat, .. } => chat.map(|t| (Kind::Text, t.as_bytes())),
    };
    match protocol {
        Protocol::Raw => plain().map(|(kind, data)| frame::encode(kind, data)),
        Protocol::RawOffset => {
            let (kind, data) = plain()?;
            let Some(offset) = offset else {
                return Some(frame::encode(kind, data));
            };
            let mut prefix = [0u8; crate::history::MAX_OFFSET_LEN + 1];
            let n = write_offset(&mut prefix, offset);
            prefix[n] = b' ';
            let prefix = &prefix[..=n];
            Some(frame::encode_with(kind, prefix.len() + data.len(), |out| {
                out[..prefix.len()].copy_from_slice(prefix);
                out[prefix.len()..].copy_from_slice(data);
            }))
        }
        Protocol::SocketIo => {
            let chat;
            let args = match *payload {
                Payload::SocketIo { args, .. } => args,
                Payload::Raw {
                    kind: Kind::Text,
                    data,
                } => {
                    chat = crate::sio::chat_args(std::str::from_utf8(data).ok()?);
                    &chat
                }
                Payload::Raw {
                    kind: Kind::Binary, ..
                } => return None,
            };
            Some(sio_event(args, offset))
        }
    }
}

/// `42<args>`, with `,"<offset>"` as the last argument when there is one.
fn sio_event(args: &str, offset: Option<Offset>) -> Frame {
    let mut buf = [0u8; crate::history::MAX_OFFSET_LEN];
    let n = offset.map_or(0, |o| write_offset(&mut buf, o));
    let off = &buf[..n];
    // `["a"]` -> `["a","<offset>"]`: the closing bracket goes after the offset.
    let body = &args.as_bytes()[..args.len() - 1];
    let extra = if off.is_empty() { 0 } else { off.len() + 3 };
    frame::encode_with(Kind::Text, 2 + args.len() + extra, |out| {
        out[..2].copy_from_slice(b"42");
        out[2..2 + body.len()].copy_from_slice(body);
        let mut at = 2 + body.len();
        if !off.is_empty() {
            out[at..at + 2].copy_from_slice(b",\"");
            out[at + 2..at + 2 + off.len()].copy_from_slice(off);
            out[at + 2 + off.len()] = b'"';
            at += extra;
        }
        out[at] = b']';
    })
}

/// Writes `o` as text into `buf` without allocating; returns its length.
fn write_offset(buf: &mut [u8], o: Offset) -> usize {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(buf);
    let _ = write!(cur, "{o}");
    cur.position() as usize
}

impl History {
    /// Counts entries and bytes that left the logs.
    fn forget(&self, entries: usize, bytes: usize) {
        if entries > 0 {
            self.entries.fetch_sub(entries, Ordering::Relaxed);
        }
        if bytes > 0 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

impl Logged {
    /// Its frame in `protocol`, encoded on first need.
    fn frame(&mut self, protocol: Protocol) -> Option<Frame> {
        let (payload, offset) = (&self.payload, self.offset);
        self.frames[protocol as usize]
            .get_or_insert_with(|| {
                payload.with_payload(offset, |p| encode(protocol, p, Some(offset)))
            })
            .clone()
    }
}

enum Push {
    Queued,
    /// Queued without waking the session, which lent its socket: the publisher sends it
    /// ([`Member::flush`]) once the room's locks are released.
    Inline,
    Evicted,
    Closed,
}

impl Member {
    /// This member's id (unique for the hub's lifetime).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues `frame`; with `inline`, a frame for an idle session that lent its socket is
    /// left for [`Member::flush`] instead of waking it.
    fn push(&self, frame: Frame, inline: bool) -> Push {
        let mut o = lock(&self.outbox);
        if o.end.is_some() {
            return Push::Closed;
        }
        let result = if o.queue.len() >= o.cap {
            // Full-policy: evict. Drop what is queued: the session will only send a Close
            // (after the rest of a frame sent inline in part, which must be finished first).
            if o.written > 0 {
                o.queue.truncate(1);
            } else {
                o.queue = VecDeque::new();
            }
            o.end = Some(Signal::Evicted);
            Push::Evicted
        } else {
            o.queue.push_back(frame);
            if inline && o.lent.is_some() && o.queue.len() == 1 {
                return Push::Inline;
            }
            Push::Queued
        };
        let waker = o.waker.take();
        drop(o);
        if let Some(w) = waker {
            w.wake();
        }
        result
    }

    /// The session is idle (nothing of its own to write) and lends its socket: until
    /// [`Member::disarm`], a publish may send frames to it inline. Returns whether it is lent
    /// (not when frames wait already, or the member is ending: the session runs for those).
    pub fn arm(&self, sink: &Arc<dyn Sink>) -> bool {
        let mut o = lock(&self.outbox);
        if !o.queue.is_empty() || o.end.is_some() {
            return false;
        }
        if o.lent.is_none() {
            o.lent = Some(Lent(sink.clone()));
        }
        true
    }

    /// The session runs again: it takes its socket back. Frames queued meanwhile (one a
    /// publisher may have sent in part) move to `into` (empty), and the bytes of the first
    /// already written are returned, so the session finishes it before anything else.
    pub fn disarm(&self, into: &mut VecDeque<Frame>) -> usize {
        let mut o = lock(&self.outbox);
        o.lent = None;
        if !o.queue.is_empty() && into.is_empty() {
            std::mem::swap(&mut o.queue, into);
        }
        std::mem::take(&mut o.written)
    }

    /// Sends what is queued to the lent socket, whole frames under the outbox's lock (the
    /// session takes it back under the same lock, so their writes never interleave). What
    /// the socket does not take (a full send buffer, an error) stays queued, its written
    /// bytes counted, the socket is given back and the session woken to go on as it would
    /// have.
    pub fn flush(&self) {
        let mut o = lock(&self.outbox);
        let o = &mut *o;
        let Some(Lent(sink)) = &o.lent else {
            // Taken back: the session has the frames.
            return;
        };
        while let Some(f) = o.queue.front() {
            match sink.send(&f[o.written..]) {
                Ok(n) if o.written + n == f.len() => {
                    o.written = 0;
                    o.sent += 1;
                    o.queue.pop_front();
                }
                Ok(n) => {
                    o.written += n;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if o.queue.is_empty() {
            return;
        }
        o.lent = None;
        if let Some(w) = o.waker.take() {
            w.wake();
        }
    }

    /// Frames sent inline so far.
    pub fn sent_inline(&self) -> u64 {
        lock(&self.outbox).sent
    }

    /// Another connection resumed this member's session: it closes (its queue is handed out
    /// first, as with a shutdown).
    pub fn retire(&self) {
        self.signal(Signal::Replaced);
    }

    /// Ends the member's service with `s`; frames already queued are still handed out first
    /// (except after an eviction, which dropped them).
    fn signal(&self, s: Signal) {
        let mut o = lock(&self.outbox);
        if o.end.is_some() {
            return;
        }
        o.end = Some(s);
        let waker = o.waker.take();
        drop(o);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits for frames or a signal. With `into`, queued frames are appended to it (by
    /// swapping storage when it is empty, so no allocation happens) and `Frames` is returned.
    /// Without it (the session is still writing earlier frames) only the end signals are
    /// looked at, so that an eviction is seen even while the socket is blocked.
    pub fn poll_outbox(
        &self,
        cx: &mut Context<'_>,
        into: Option<&mut VecDeque<Frame>>,
    ) -> Poll<Signal> {
        let mut o = lock(&self.outbox);
        if let Some(into) = into.filter(|_| !o.queue.is_empty()) {
            if into.is_empty() {
                std::mem::swap(&mut o.queue, into);
            } else {
                into.append(&mut o.queue);
            }
            return Poll::Ready(Signal::Frames);
        }
        // Frames queued before a shutdown still go out before its Close.
        if let Some(end) = o.end.filter(|_| o.queue.is_empty()) {
            return Poll::Ready(end);
        }
        match &mut o.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Membership {
    /// The room joined.
    pub fn room(&self) -> &Room {
        &self.room
    }

    /// Whether this is a lobby place (see [`Hub::join_lobby`]) rather than a room.
    pub fn in_lobby(&self) -> bool {
        Arc::ptr_eq(&self.room, &self.hub.lobby)
    }

    /// The member.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// [`Member::arm`], when the room is quiet enough for inline delivery (its publishes come
    /// at least `--inline-gap` apart on average): a session in a busy room does not lend its
    /// socket, and so never has to take it back (two outbox locks a pass saved).
    pub fn arm(&self, sink: &Arc<dyn Sink>) -> bool {
        let gap = self.hub.inline_gap.as_nanos() as u64;
        gap > 0 && self.room.mean_gap.load(Ordering::Relaxed) >= gap && self.member.arm(sink)
    }

    /// Leaves the room now (dropping the membership later does nothing more), so that
    /// nothing is queued for a member that is closing.
    pub fn leave(&self) {
        self.hub.leave(&self.room, self.member.id);
    }

    /// A handle that can retire the member later, without keeping it alive.
    pub fn handle(&self) -> Weak<Member> {
        Arc::downgrade(&self.member)
    }

    /// Publishes a plain message into this member's room, to everyone (sender included).
    pub fn publish(&self, kind: Kind, data: &[u8]) -> Delivery {
        self.publish_payload(Payload::Raw { kind, data }, false)
    }

    /// Publishes `payload` into this member's room; with `others_only`, not to itself
    /// (`socket.broadcast.emit`), otherwise to everyone (`io.emit`). The hub's [`Relay`], if
    /// any, gets it too (other instances have no such member, so there it reaches everyone).
    pub fn publish_payload(&self, payload: Payload<'_>, others_only: bool) -> Delivery {
        let except = others_only.then_some(self.member.id);
        let msg = Message { payload, except };
        self.hub.send(&self.room.name, Some(&self.room), &msg).0
    }
}

impl Room {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.room, self.member.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn drain(m: &Membership) -> (Poll<Signal>, Vec<Vec<u8>>) {
        let waker = Waker::from(Arc::new(Count(Default::default())));
        let mut cx = Context::from_waker(&waker);
        let mut q = VecDeque::new();
        let p = m.member().poll_outbox(&mut cx, Some(&mut q));
        (p, q.iter().map(|f| f.to_vec()).collect())
    }

    #[test]
    fn bytes_out_counts_each_members_own_frame_in_a_mixed_room() {
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::with(8, None, metrics.clone());
        let raw = hub.join("mixed", Protocol::Raw);
        let sio = hub.join("mixed", Protocol::SocketIo);
        // "hi": 2 + 2 bytes as a plain frame; `42["chat message","hi"]` (23) + 2 for Socket.IO.
        let d = raw.publish(Kind::Text, b"hi");
        assert_eq!((d.delivered, d.bytes), (2, 4 + 25));
        assert_eq!(metrics.messages_out.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.bytes_out.load(Ordering::Relaxed), 29);
        // A Socket.IO event other than `chat message` has no plain form: one delivery.
        let d = sio.publish_payload(
            Payload::SocketIo {
                args: "[\"x\",1]",
                chat: None,
            },
            false,
        );
        assert_eq!((d.delivered, d.bytes), (1, 2 + 9));
        assert_eq!(metrics.bytes_out.load(Ordering::Relaxed), 40);
    }

    #[test]
    fn broadcast_includes_sender_and_keeps_rooms_apart() {
        let hub = Hub::new(8);
        let a = hub.join("r1", Protocol::Raw);
        let b = hub.join("r1", Protocol::Raw);
        let c = hub.join("r2", Protocol::Raw);
        assert_eq!(a.publish(Kind::Text, b"hi").delivered, 2);
        assert_eq!(drain(&a).1, vec![b"\x81\x02hi".to_vec()]);
        assert_eq!(drain(&b).1, vec![b"\x81\x02hi".to_vec()]);
        assert_eq!(drain(&c).0, Poll::Pending);
        assert_eq!(hub.rooms(), 2);
        drop(c);
        assert_eq!(hub.rooms(), 1);
        drop((a, b));
        assert_eq!(hub.rooms(), 0);
    }

    #[test]
    fn one_encoding_shared_by_all_members() {
        let hub = Hub::new(8);
        let ms: Vec<_> = (0..3).map(|_| hub.join("r", Protocol::Raw)).collect();
        ms[0].publish(Kind::Binary, b"xyz");
        let waker = Waker::from(Arc::new(Count(Default::default())));
        let mut cx = Context::from_waker(&waker);
        let mut qs: Vec<VecDeque<Frame>> = (0..3).map(|_| VecDeque::new()).collect();
        for (m, q) in ms.iter().zip(&mut qs) {
            let _ = m.member().poll_outbox(&mut cx, Some(q));
        }
        assert!(Arc::ptr_eq(&qs[0][0], &qs[1][0]) && Arc::ptr_eq(&qs[1][0], &qs[2][0]));
    }

    #[test]
    fn except_skips_one_member() {
        let hub = Hub::new(8);
        let a = hub.join("r", Protocol::Raw);
        let b = hub.join("r", Protocol::Raw);
        let msg = Message {
            payload: Payload::Raw {
                kind: Kind::Text,
                data: b"hi",
            },
            except: Some(a.member().id()),
        };
        assert_eq!(hub.publish(a.room(), &msg).delivered, 1);
        assert_eq!(drain(&a).0, Poll::Pending);
        assert_eq!(drain(&b).0, Poll::Ready(Signal::Frames));
    }

    #[test]
    fn full_outbox_evicts_only_that_member_and_wakes_it() {
        let hub = Hub::new(2);
        let slow = hub.join("r", Protocol::Raw);
        let fast = hub.join("r", Protocol::Raw);
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut q = VecDeque::new();
        assert_eq!(
            slow.member().poll_outbox(&mut cx, Some(&mut q)),
            Poll::Pending
        );
        for i in 0..3u8 {
            let d = fast.publish(Kind::Text, &[b'0' + i]);
            assert_eq!(d.evicted, usize::from(i == 2), "publish {i}");
            let (_, got) = drain(&fast);
            assert_eq!(got, vec![vec![0x81, 1, b'0' + i]]);
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(drain(&slow).0, Poll::Ready(Signal::Evicted));
        // Once evicted, nothing more is queued for it.
        assert_eq!(fast.publish(Kind::Text, b"x").delivered, 1);
    }

    #[test]
    fn order_per_publisher_is_kept() {
        let hub = Hub::new(1000);
        let a = hub.join("r", Protocol::Raw);
        for i in 0..500u16 {
            a.publish(Kind::Binary, &i.to_be_bytes());
        }
        let (_, got) = drain(&a);
        let seqs: Vec<u16> = got
            .iter()
            .map(|f| u16::from_be_bytes([f[2], f[3]]))
            .collect();
        assert_eq!(seqs, (0..500).collect::<Vec<_>>());
    }

    #[test]
    fn bridging_between_plain_and_socket_io_members() {
        let hub = Hub::new(8);
        let raw = hub.join("r", Protocol::Raw);
        let sio = hub.join("r", Protocol::SocketIo);
        raw.publish(Kind::Text, b"plain \"hi\"");
        assert_eq!(drain(&raw).1, vec![b"\x81\x0aplain \"hi\"".to_vec()]);
        let (_, got) = drain(&sio);
        assert_eq!(&got[0][2..], b"42[\"chat message\",\"plain \\\"hi\\\"\"]");
        // Binary stays with plain members.
        assert_eq!(raw.publish(Kind::Binary, b"\x00").delivered, 1);
        let _ = drain(&raw);
        let args = "[\"chat message\",\"from sio\"]";
        sio.publish_payload(
            Payload::SocketIo {
                args,
                chat: Some("from sio"),
            },
            false,
        );
        assert_eq!(&drain(&raw).1[0][2..], b"from sio");
        assert_eq!(&drain(&sio).1[0][2..], format!("42{args}").as_bytes());
        // Other events stay with Socket.IO members; `hi` goes to the others only.
        let d = sio.publish_payload(
            Payload::SocketIo {
                args: "[\"hi\"]",
                chat: None,
            },
            true,
        );
        assert_eq!(d.delivered, 0);
        assert_eq!(drain(&raw).0, Poll::Pending);
    }

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(String, String)>>);
    impl Relay for Recorder {
        fn relay(&self, room: &str, payload: &Payload<'_>) {
            lock(&self.0).push((room.into(), format!("{payload:?}")));
        }
    }

    #[test]
    fn member_publishes_are_relayed_once_and_deliveries_are_not() {
        let rec = Arc::new(Recorder::default());
        let hub = Hub::with(8, Some(rec.clone()), Arc::default());
        let a = hub.join("r", Protocol::Raw);
        let sio = hub.join("r", Protocol::SocketIo);
        let other = hub.join("q", Protocol::Raw);
        a.publish(Kind::Text, b"local");
        sio.publish_payload(
            Payload::SocketIo {
                args: "[\"hi\"]",
                chat: None,
            },
            true,
        );
        assert_eq!(
            *lock(&rec.0),
            [
                (
                    "r".into(),
                    "Raw { kind: Text, data: [108, 111, 99, 97, 108] }".into()
                ),
                (
                    "r".into(),
                    "SocketIo { args: \"[\\\"hi\\\"]\", chat: None }".into()
                ),
            ]
        );
        let _ = (drain(&a), drain(&sio));
        // From another instance: everyone in the room, bridged as usual, and not relayed.
        let remote = Payload::SocketIo {
            args: "[\"chat message\",\"x\"]",
            chat: Some("x"),
        };
        assert_eq!(hub.deliver("r", remote).delivered, 2);
        assert_eq!(drain(&a).1, vec![b"\x81\x01x".to_vec()]);
        assert_eq!(&drain(&sio).1[0][2..], b"42[\"chat message\",\"x\"]");
        assert_eq!(drain(&other).0, Poll::Pending);
        assert_eq!(hub.deliver("nobody-here", remote), Delivery::default());
        assert_eq!(lock(&rec.0).len(), 2);
    }

    #[test]
    fn going_away_reaches_everyone() {
        let hub = Hub::new(4);
        let a = hub.join("x", Protocol::Raw);
        let b = hub.join("y", Protocol::Raw);
        a.publish(Kind::Text, b"queued before shutdown");
        hub.going_away();
        assert_eq!(drain(&a).0, Poll::Ready(Signal::Frames));
        assert_eq!(drain(&a).0, Poll::Ready(Signal::GoingAway));
        assert_eq!(a.publish(Kind::Text, b"after").delivered, 0);
        assert_eq!(drain(&b).0, Poll::Ready(Signal::GoingAway));
    }

    #[test]
    fn the_lobby_is_no_room_but_hears_the_shutdown() {
        let hub = Hub::new(4);
        let waiting = hub.join_lobby(Protocol::SocketIo);
        assert!(waiting.in_lobby());
        assert_eq!(hub.rooms(), 0);
        let joined = hub.join("r", Protocol::SocketIo);
        assert!(!joined.in_lobby());
        hub.going_away();
        assert_eq!(drain(&waiting).0, Poll::Ready(Signal::GoingAway));
        drop(waiting);
        assert_eq!(hub.rooms(), 1);
    }

    fn history(entries: usize, bytes: usize) -> Arc<Hub> {
        let cfg = HistoryConfig {
            window: std::time::Duration::from_secs(120),
            room_entries: entries,
            max_bytes: bytes,
        };
        // Outboxes that hold everything a test publishes, so that no member is evicted.
        Hub::with_history(4096, cfg)
    }

    fn texts(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(frame::payload(f)).into_owned())
            .collect()
    }

    fn pending(m: &Membership) -> Vec<String> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut q = VecDeque::new();
        let _ = m.member().poll_outbox(&mut cx, Some(&mut q));
        texts(&Vec::from(q))
    }

    #[test]
    fn every_publish_gets_the_rooms_next_offset_in_each_protocols_frame() {
        let hub = history(100, 1 << 20);
        let raw = hub.join("r", Protocol::Raw);
        let (off, resume) = hub.join_since("r", Protocol::RawOffset, None, None);
        let sio = hub.join("r", Protocol::SocketIo);
        let e = resume.top.epoch;
        assert_eq!(resume.top, Offset { epoch: e, seq: 0 });
        raw.publish(Kind::Text, b"x");
        raw.publish(Kind::Text, b"y z");
        assert_eq!(pending(&raw), ["x", "y z"]);
        assert_eq!(
            pending(&off),
            [format!("{e:x}-1 x"), format!("{e:x}-2 y z")]
        );
        assert_eq!(
            pending(&sio),
            [
                format!("42[\"chat message\",\"x\",\"{e:x}-1\"]"),
                format!("42[\"chat message\",\"y z\",\"{e:x}-2\"]"),
            ]
        );
        // Binary keeps its opcode for raw members, offset first; Socket.IO has no form of it.
        raw.publish(Kind::Binary, &[0, 1]);
        let mut cx = Context::from_waker(Waker::noop());
        let mut q = VecDeque::new();
        let _ = off.member().poll_outbox(&mut cx, Some(&mut q));
        assert_eq!(q[0][0], 0x82);
        assert_eq!(
            frame::payload(&q[0]),
            [format!("{e:x}-3 ").as_bytes(), &[0, 1]].concat()
        );
        assert!(pending(&sio).is_empty());
        assert_eq!(hub.history_held().0, 3);
    }

    #[test]
    fn join_since_replays_exactly_what_came_after_and_then_goes_on_live() {
        let hub = history(100, 1 << 20);
        let a = hub.join("r", Protocol::Raw);
        for i in 1..=5u8 {
            a.publish(Kind::Text, &[b'0' + i]);
        }
        let (_, r) = hub.join_since("r", Protocol::Raw, None, None);
        let e = r.top.epoch;
        let (b, r) = hub.join_since(
            "r",
            Protocol::RawOffset,
            Some(Offset { epoch: e, seq: 2 }),
            None,
        );
        assert_eq!(r.top.seq, 5);
        let replay = r.replay.unwrap().unwrap();
        assert_eq!(
            texts(&replay),
            [
                format!("{e:x}-3 3"),
                format!("{e:x}-4 4"),
                format!("{e:x}-5 5")
            ]
        );
        a.publish(Kind::Text, b"6");
        assert_eq!(
            pending(&b),
            [format!("{e:x}-6 6")],
            "live after the replay, nothing twice"
        );
        // The newest offset: nothing to replay; another epoch or a future offset: refused.
        let at = |seq| Some(Offset { epoch: e, seq });
        assert_eq!(
            hub.join_since("r", Protocol::Raw, at(6), None)
                .1
                .replay
                .unwrap()
                .unwrap()
                .len(),
            0
        );
        let other = Some(Offset {
            epoch: e + 1,
            seq: 1,
        });
        assert_eq!(
            hub.join_since("r", Protocol::Raw, other, None)
                .1
                .replay
                .unwrap()
                .unwrap_err(),
            Gap::Epoch
        );
        assert_eq!(
            hub.join_since("r", Protocol::Raw, at(7), None)
                .1
                .replay
                .unwrap()
                .unwrap_err(),
            Gap::Unknown
        );
    }

    #[test]
    fn the_log_outlives_the_last_member_and_keeps_what_is_published_meanwhile() {
        let hub = history(100, 1 << 20);
        let (a, r) = hub.join_since("r", Protocol::Raw, None, None);
        a.publish(Kind::Text, b"1");
        drop(a);
        assert_eq!(hub.rooms(), 0);
        // Published while nobody is here (another instance, the API): logged all the same.
        hub.publish_from_outside(
            "r",
            Payload::Raw {
                kind: Kind::Text,
                data: b"2",
            },
        );
        let since = Some(Offset {
            epoch: r.top.epoch,
            seq: 1,
        });
        let (_b, r) = hub.join_since("r", Protocol::Raw, since, None);
        assert_eq!(texts(&r.replay.unwrap().unwrap()), ["2"]);
    }

    #[test]
    fn a_resume_over_what_the_caps_dropped_is_refused_whole() {
        // Three per room: a resume from before the oldest kept fails, never half-served.
        let hub = history(3, 1 << 20);
        let (a, r) = hub.join_since("r", Protocol::Raw, None, None);
        let e = r.top.epoch;
        for i in 0..5u8 {
            a.publish(Kind::Text, &[b'a' + i]);
        }
        let at = |seq| Some(Offset { epoch: e, seq });
        let gap = hub
            .join_since("r", Protocol::Raw, at(1), None)
            .1
            .replay
            .unwrap();
        assert_eq!(gap.unwrap_err(), Gap::TooOld);
        let ok = hub
            .join_since("r", Protocol::Raw, at(2), None)
            .1
            .replay
            .unwrap();
        assert_eq!(texts(&ok.unwrap()), ["c", "d", "e"]);
        // Memory: what does not fit is not kept; resumes across it fail, later ones work.
        // 42 bytes each (the frame it went out as, which is all that is kept of it), and
        // what its entry and the frame's reference counts cost.
        let one = 42 + ENTRY_COST + ARC_COST;
        let small = history(100, one + 20);
        let (m, r) = small.join_since("q", Protocol::Raw, None, None);
        let e = r.top.epoch;
        m.publish(Kind::Text, &[b'x'; 40]);
        m.publish(Kind::Text, &[b'y'; 40]);
        assert_eq!(small.history_held(), (1, one), "the older one made room");
        m.publish(Kind::Text, &[b'z'; 100]);
        assert_eq!(small.history_held(), (0, 0));
        let at = |seq| Some(Offset { epoch: e, seq });
        let gap = small
            .join_since("q", Protocol::Raw, at(2), None)
            .1
            .replay
            .unwrap();
        assert_eq!(gap.unwrap_err(), Gap::TooOld);
        assert!(small
            .join_since("q", Protocol::Raw, at(3), None)
            .1
            .replay
            .unwrap()
            .is_ok());
    }

    #[test]
    fn a_replay_in_a_form_nobody_was_sent_is_made_from_the_kept_frame() {
        let hub = history(100, 1 << 20);
        // Only raw members when these were published: the kept frames are raw ones.
        let (raw, r) = hub.join_since("r", Protocol::Raw, None, None);
        let e = r.top.epoch;
        raw.publish(Kind::Text, b"plain \"q\"");
        let (sio, _) = hub.join_since("s", Protocol::SocketIo, None, None);
        for (args, chat) in [
            ("[\"chat message\",\"from sio\"]", Some("from sio")),
            ("[\"other\",1]", None),
        ] {
            sio.publish_payload(Payload::SocketIo { args, chat }, false);
        }
        let at = Some(Offset { epoch: e, seq: 0 });
        let got = hub
            .join_since("r", Protocol::SocketIo, at, None)
            .1
            .replay
            .unwrap()
            .unwrap();
        assert_eq!(
            texts(&got),
            [format!(
                "42[\"chat message\",\"plain \\\"q\\\"\",\"{e:x}-1\"]"
            )]
        );
        let (_, r) = hub.join_since("s", Protocol::Raw, None, None);
        let at = Some(Offset {
            epoch: r.top.epoch,
            seq: 0,
        });
        let got = hub
            .join_since("s", Protocol::RawOffset, at, None)
            .1
            .replay
            .unwrap()
            .unwrap();
        // The chat message in its plain form; the other event has none.
        assert_eq!(texts(&got), [format!("{:x}-1 from sio", r.top.epoch)]);
    }

    #[test]
    fn logs_no_room_holds_are_forgotten_once_their_window_passed() {
        let cfg = HistoryConfig {
            window: std::time::Duration::from_millis(40),
            room_entries: 10,
            max_bytes: 1 << 20,
        };
        let hub = Hub::with_history(16, cfg);
        let logs = |hub: &Hub| lock(&hub.history.as_ref().unwrap().logs).len();
        let a = hub.join("a", Protocol::Raw);
        a.publish(Kind::Text, b"x");
        drop(a);
        // Kept while the window lasts, so that the last member can come back.
        let _b = hub.join("b", Protocol::Raw);
        assert_eq!(logs(&hub), 2);
        // A room whose entries aged out but whose last member left just now: its offsets
        // are still good (a quiet client may come back), so the sweep keeps it.
        let q = hub.join("q", Protocol::Raw);
        q.publish(Kind::Text, b"x");
        std::thread::sleep(std::time::Duration::from_millis(60));
        drop(q);
        let _d = hub.join("d", Protocol::Raw);
        assert!(lock(&hub.history.as_ref().unwrap().logs).get("q").is_some());
        assert!(lock(&hub.history.as_ref().unwrap().logs).get("a").is_none());
        std::thread::sleep(std::time::Duration::from_millis(60));
        let _c = hub.join("c", Protocol::Raw);
        // `q`'s window passed and nobody holds it; `b`, `c` and `d` are held by their rooms.
        assert_eq!(logs(&hub), 3);
        assert!(lock(&hub.history.as_ref().unwrap().logs).get("q").is_none());
        assert_eq!(hub.history_held(), (0, 0));
    }

    #[test]
    fn concurrent_publishers_reach_every_member_in_the_logs_order() {
        let hub = history(10_000, 1 << 24);
        let watcher = hub.join("r", Protocol::RawOffset);
        let pubs: Vec<_> = (0..2).map(|_| hub.join("r", Protocol::Raw)).collect();
        std::thread::scope(|s| {
            for p in &pubs {
                s.spawn(|| {
                    for _ in 0..1000 {
                        p.publish(Kind::Text, b"m");
                    }
                });
            }
            // Drain as they come; the outbox holds them all, so the loop ends.
            let mut seqs = Vec::new();
            let deadline = Instant::now() + std::time::Duration::from_secs(20);
            while seqs.len() < 2000 && Instant::now() < deadline {
                for t in pending(&watcher) {
                    let off: Offset = t.split(' ').next().unwrap().parse().unwrap();
                    seqs.push(off.seq);
                }
            }
            assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
        });
    }
}
