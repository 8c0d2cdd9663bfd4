//! Rooms and their members. The hub never sees a socket and never awaits a member.
//!
//! ```text
//! publish(room, frame) ── for each member ──> Outbox::push (try, never waits)
//!                                                 │ full: member is evicted (slow consumer)
//!                                                 └─> wakes the member's session task
//! ```
//!
//! * A publish encodes its frame once ([`crate::frame`]); each delivery clones an `Arc`.
//! * Each member's [`Outbox`] is bounded by `outbox_frames`. **Full-policy: evict.** When a
//!   push finds it full, the member is marked [`Signal::Evicted`], its queue is dropped and its
//!   session closes it with 1008; the publisher and the other members go on at once.
//! * A queue's storage is a `VecDeque` whose capacity is kept, and the session swaps it with an
//!   equally kept local one, so steady-state delivery allocates nothing.
//! * `join` and `leave` take the room map lock; `publish` takes only the room's member lock
//!   (shared), so rooms publish in parallel on all executor threads.
//! * Hooks for other protocols and a backplane: members carry a [`Protocol`], and
//!   [`Hub::publish`] encodes one frame per protocol present, on first need. A [`Relay`]
//!   (the Redis backplane) gets every publish made through a [`Membership`] after local
//!   delivery; what other instances send comes in through [`Hub::deliver`], which never
//!   relays, so nothing goes round twice.

use crate::frame::{self, Frame, Kind};
use crate::lock::{mutex as lock, read, write};
use crate::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};

/// Wire protocols a member can speak; a publish encodes one frame per protocol present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain WebSocket text/binary frames.
    Raw,
    /// Socket.IO v5 packets over Engine.IO v4 text frames.
    SocketIo,
}

/// Number of [`Protocol`] variants (size of per-publish frame caches).
const PROTOCOLS: usize = 2;

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
}

/// Where publishes also go besides this instance's members: the backplane.
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// Called once per publish made through a [`Membership`], after local delivery. Must
    /// not wait: whatever cannot be taken at once is dropped (and counted) by the relay.
    fn relay(&self, room: &str, payload: &Payload<'_>);
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
}

/// One room: its members, shared-locked by publishers.
#[derive(Debug)]
pub struct Room {
    name: Box<str>,
    members: RwLock<Vec<Arc<Member>>>,
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
    /// metrics of its own.
    pub fn new(outbox_frames: usize) -> Arc<Hub> {
        Hub::with(outbox_frames, None, Arc::default())
    }

    /// A hub that also hands every member's publish to `relay`, and counts into `metrics`.
    pub fn with(
        outbox_frames: usize,
        relay: Option<Arc<dyn Relay>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            relay,
            metrics,
            outbox_frames: outbox_frames.max(1),
            next_member: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            lobby: Arc::new(Room {
                name: "".into(),
                members: RwLock::new(Vec::new()),
            }),
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
            }),
        })
    }

    /// Adds a new member to `room`, creating the room on first use.
    pub fn join(self: &Arc<Self>, room: &str, protocol: Protocol) -> Membership {
        let member = self.new_member(protocol);
        let mut rooms = lock(&self.rooms);
        let room = rooms
            .entry(room.into())
            .or_insert_with(|| {
                Arc::new(Room {
                    name: room.into(),
                    members: RwLock::new(Vec::new()),
                })
            })
            .clone();
        write(&room.members).push(member.clone());
        drop(rooms);
        self.admitted(room, member)
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
        }
    }

    /// Queues `msg` for every member of `room` (but `msg.except`). Never waits: a member
    /// whose outbox is full is evicted instead.
    pub fn publish(&self, room: &Room, msg: &Message<'_>) -> Delivery {
        // One encoding per protocol present, made on first need; `Some(None)` means this
        // payload has no form in that protocol (e.g. binary to Socket.IO).
        let mut frames: [Option<Option<Frame>>; PROTOCOLS] = Default::default();
        let mut d = Delivery::default();
        let members = read(&room.members);
        for m in members.iter() {
            if Some(m.id) == msg.except {
                continue;
            }
            let Some(f) = frames[m.protocol as usize]
                .get_or_insert_with(|| encode(m.protocol, &msg.payload))
                .clone()
            else {
                continue;
            };
            let len = f.len() as u64;
            match m.push(f) {
                Push::Queued => {
                    d.delivered += 1;
                    d.bytes += len;
                }
                Push::Evicted => d.evicted += 1,
                Push::Closed => {}
            }
        }
        drop(members);
        self.count(&d);
        d
    }

    /// Adds one publish's delivery to the metrics: three atomic adds, whatever the room size.
    fn count(&self, d: &Delivery) {
        let m = &self.metrics;
        if d.delivered > 0 {
            m.messages_out
                .fetch_add(d.delivered as u64, Ordering::Relaxed);
            m.bytes_out.fetch_add(d.bytes, Ordering::Relaxed);
        }
        if d.evicted > 0 {
            m.evictions.fetch_add(d.evicted as u64, Ordering::Relaxed);
        }
    }

    /// Delivers a message from another instance to this instance's members of `room` (if
    /// any). It is not relayed again.
    pub fn deliver(&self, room: &str, payload: Payload<'_>) -> Delivery {
        let Some(room) = lock(&self.rooms).get(room).cloned() else {
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
    pub fn publish_from_outside(&self, room: &str, payload: Payload<'_>) -> Delivery {
        let d = self.deliver(room, payload);
        if let Some(relay) = &self.relay {
            relay.relay(room, &payload);
        }
        d
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

/// The frame a member of `protocol` gets for `payload`, if it has one.
///
/// Bridging: a plain text message reaches Socket.IO members as `chat message`; a Socket.IO
/// `chat message` with one string reaches plain members as that text. Plain binary messages
/// and other Socket.IO events stay within their protocol.
fn encode(protocol: Protocol, payload: &Payload<'_>) -> Option<Frame> {
    match (protocol, *payload) {
        (Protocol::Raw, Payload::Raw { kind, data }) => Some(frame::encode(kind, data)),
        (Protocol::Raw, Payload::SocketIo { chat, .. }) => {
            chat.map(|t| frame::encode(Kind::Text, t.as_bytes()))
        }
        (Protocol::SocketIo, Payload::SocketIo { args, .. }) => {
            Some(frame::encode_with(Kind::Text, 2 + args.len(), |out| {
                out[..2].copy_from_slice(b"42");
                out[2..].copy_from_slice(args.as_bytes());
            }))
        }
        (
            Protocol::SocketIo,
            Payload::Raw {
                kind: Kind::Text,
                data,
            },
        ) => {
            let text = std::str::from_utf8(data).ok()?;
            Some(frame::encode(
                Kind::Text,
                crate::sio::chat_packet(text).as_bytes(),
            ))
        }
        (
            Protocol::SocketIo,
            Payload::Raw {
                kind: Kind::Binary, ..
            },
        ) => None,
    }
}

enum Push {
    Queued,
    Evicted,
    Closed,
}

impl Member {
    /// This member's id (unique for the hub's lifetime).
    pub fn id(&self) -> u64 {
        self.id
    }

    fn push(&self, frame: Frame) -> Push {
        let mut o = lock(&self.outbox);
        if o.end.is_some() {
            return Push::Closed;
        }
        let result = if o.queue.len() >= o.cap {
            // Full-policy: evict. Drop what is queued: the session will only send a Close.
            o.queue = VecDeque::new();
            o.end = Some(Signal::Evicted);
            Push::Evicted
        } else {
            o.queue.push_back(frame);
            Push::Queued
        };
        let waker = o.waker.take();
        drop(o);
        if let Some(w) = waker {
            w.wake();
        }
        result
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

    /// Publishes a plain message into this member's room, to everyone (sender included).
    pub fn publish(&self, kind: Kind, data: &[u8]) -> Delivery {
        self.publish_payload(Payload::Raw { kind, data }, false)
    }

    /// Publishes `payload` into this member's room; with `others_only`, not to itself
    /// (`socket.broadcast.emit`), otherwise to everyone (`io.emit`). The hub's [`Relay`], if
    /// any, gets it too (other instances have no such member, so there it reaches everyone).
    pub fn publish_payload(&self, payload: Payload<'_>, others_only: bool) -> Delivery {
        let except = others_only.then_some(self.member.id);
        let d = self.hub.publish(&self.room, &Message { payload, except });
        if let Some(relay) = &self.hub.relay {
            relay.relay(&self.room.name, &payload);
        }
        d
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
}
