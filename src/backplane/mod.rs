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

pub mod envelope;
mod link;
pub mod resp;
pub mod scripts;

use crate::config::{BackplaneConfig, HistoryConfig};
use crate::executor::Executor;
use crate::frame;
use crate::history::Offset;
use crate::hub::{Hub, Payload, Relay, Shared};
use crate::lock::mutex as lock;
use crate::metrics;
use crate::{error, info};
use envelope::{decode, parts, Body, Envelope, HEADER_LEN, NODE_ID_LEN, ORDERED_HEADER_LEN};
use link::LinkError;
use resp::Owned;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A write batch that grew past this is shrunk back after a burst.
pub(crate) const SHRINK_ABOVE: usize = 1 << 20;
/// Distinct failure reasons logged during one outage; later ones are only counted.
const MAX_REASONS_LOGGED: usize = 8;
/// Bytes a channel name may add to a message in a `pmessage`: the prefix, `:`, a room name,
/// and the pattern, with room to spare. Part of the RESP bulk limit.
const CHANNEL_SLACK: usize = 1024;
/// Items in the largest reply the backplane expects (`pmessage`, pattern, channel, message).
const MAX_REPLY_ITEMS: usize = 8;
/// The channel suffix of peer announcements: `{prefix}:!peers`, which no room name can be.
const PEERS_CHANNEL: &str = "!peers";
/// Characters of an instance's tag, the start of its polling sessions' ids.
pub const TAG_LEN: usize = 8;
/// A peer not heard from for this many announce intervals is forgotten.
const PEER_LIFETIMES: u32 = 3;

/// The backplane's plain counters: name and help, in the order of `render_metrics`'s values.
const COUNTERS: [(&str, &str); 4] = [
    (
        "wsgate_backplane_published_total",
        "Messages PUBLISHed to Redis and acknowledged.",
    ),
    (
        "wsgate_backplane_received_total",
        "Messages from other instances delivered to this instance's rooms.",
    ),
    (
        "wsgate_backplane_invalid_total",
        "Messages on our channels that were not a valid envelope, skipped.",
    ),
    (
        "wsgate_backplane_failures_total",
        "Redis connection attempts that failed and connections lost.",
    ),
];

/// One instance's side of the backplane: the queue to Redis, the node id, state and counters.
#[derive(Debug)]
pub struct Backplane {
    cfg: BackplaneConfig,
    /// The largest reply accepted from Redis: a message of `--max-message-bytes` in its
    /// envelope, with its channel name. Anything larger is not ours, and drops the connection
    /// before a byte of it is buffered.
    limits: resp::Limits,
    node: [u8; NODE_ID_LEN],
    queue: Mutex<Queue>,
    /// Whether the subscriber connection is subscribed (the publisher's is `Queue::up`).
    sub_up: AtomicBool,
    log: Mutex<StateLog>,
    stats: Stats,
    /// This instance's tag: [`TAG_LEN`] base64url characters of its node id.
    tag: String,
    /// Other instances by tag: where they take forwarded requests, and when they last said so.
    peers: Mutex<HashMap<String, (SocketAddr, Instant)>>,
    /// The rooms' shared order, when history is on: `None` is plain at-most-once pub/sub.
    order: Option<Order>,
}

/// The shared order's settings, from the history's.
#[derive(Debug, Clone, Copy)]
struct Order {
    /// How long a Socket.IO session's record lives after its connection.
    window: Duration,
    /// Stream entries kept per room (`MAXLEN ~`), and the most a resume fetches.
    entries: usize,
}

impl Order {
    /// How long a room's keys live without use: twice the window.
    fn room_ttl_ms(&self) -> String {
        (self.window.as_millis() * 2).to_string()
    }
}

/// What a command's reply is for, in the order the commands were queued.
#[derive(Debug)]
pub(crate) enum Slot {
    /// A message to other instances: counted when acknowledged.
    Publish,
    /// Nobody waits for it (a session record, a TTL, a `PING`).
    Quiet,
    /// Somebody does.
    Reply(async_channel::Sender<Owned>),
}

/// A room's shared order as Redis has it, and (when asked) its messages after a seq.
#[derive(Debug)]
pub struct Position {
    /// The room's newest offset.
    pub top: Offset,
    /// `(seq, envelope)` of the stream entries asked for, oldest first.
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// Commands encoded back to back, waiting for the publisher task.
#[derive(Debug, Default)]
struct Queue {
    buf: Vec<u8>,
    /// Commands in `buf`.
    entries: usize,
    /// What each command's reply is for, in order.
    slots: VecDeque<Slot>,
    /// The Redis primary's replication id (`master_replid`), read when the publisher
    /// connected: the shared order's scripts start a room's new epoch when it changes.
    replid: Vec<u8>,
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
    /// Kinds of failure already logged in the current outage.
    reasons: Vec<&'static str>,
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
pub(crate) enum Role {
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
    pub fn new(
        cfg: BackplaneConfig,
        max_message_bytes: usize,
        history: &HistoryConfig,
    ) -> Arc<Backplane> {
        let max_bulk = ORDERED_HEADER_LEN + max_message_bytes + CHANNEL_SLACK;
        let node = fastrand::u128(..).to_be_bytes();
        let order = history.enabled().then_some(Order {
            window: history.window,
            entries: history.room_entries.max(1),
        });
        Arc::new(Backplane {
            limits: resp::Limits {
                max_bulk,
                // A resume's fetch: one item per stream entry.
                max_items: MAX_REPLY_ITEMS.max(order.map_or(0, |o| o.entries)),
            },
            order,
            cfg,
            tag: tag_of(&node),
            node,
            queue: Mutex::new(Queue::default()),
            sub_up: AtomicBool::new(false),
            log: Mutex::new(StateLog::default()),
            stats: Stats::default(),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// This instance's tag, which starts the id of every polling session it owns when it
    /// has an `--advertise` address (empty otherwise: its sessions cannot be forwarded to).
    pub fn sid_prefix(&self) -> &str {
        if self.cfg.advertise.is_some() {
            &self.tag
        } else {
            ""
        }
    }

    /// The live instance, other than this one, that owns the polling session `sid`, and
    /// where it takes forwarded requests.
    pub fn owner_of(&self, sid: &str) -> Option<SocketAddr> {
        let tag = sid.get(..TAG_LEN)?;
        if tag == self.tag {
            return None;
        }
        let ttl = self.cfg.announce_interval * PEER_LIFETIMES;
        let peers = lock(&self.peers);
        peers
            .get(tag)
            .filter(|(_, seen)| seen.elapsed() < ttl)
            .map(|(addr, _)| *addr)
    }

    /// Instances heard from within their lifetime.
    pub fn live_peers(&self) -> usize {
        let ttl = self.cfg.announce_interval * PEER_LIFETIMES;
        lock(&self.peers)
            .values()
            .filter(|(_, seen)| seen.elapsed() < ttl)
            .count()
    }

    /// Queues this instance's announcement, if it has an address to announce.
    fn announce(&self) {
        if let Some(addr) = self.cfg.advertise {
            let text = addr.to_string();
            self.publish(PEERS_CHANNEL, envelope::KIND_PEER, text.as_bytes());
        }
    }

    /// Records another instance's announcement.
    fn on_peer(&self, node: &[u8; NODE_ID_LEN], addr: &str) -> bool {
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            return false;
        };
        let tag = tag_of(node);
        let new = lock(&self.peers)
            .insert(tag.clone(), (addr, Instant::now()))
            .is_none_or(|(old, _)| old != addr);
        if new {
            info!("peer_seen", peer = tag, addr = addr);
            // A newcomer learns this instance at once, not after one announce interval:
            // until then, its polling requests for sessions here would get `Session ID
            // unknown`. (Once per new peer, so instances answer each other only once.)
            self.announce();
        }
        true
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
            "wsgate_backplane_peers",
            "Other instances heard from recently (polling requests for their sessions are forwarded).",
            self.live_peers() as u64,
        );
        w.gauge(
            "wsgate_backplane_queued",
            "Messages waiting to be written to Redis.",
            queued as u64,
        );
        let values = [&s.published, &s.received, &s.invalid, &s.failures];
        for ((name, help), v) in COUNTERS.iter().zip(values) {
            w.counter(name, help, v.load(Relaxed));
        }
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

    /// Moves the queued commands into `out` (empty) and their slots to the end of `slots`,
    /// or registers for a wake-up.
    fn poll_take(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        slots: &mut VecDeque<Slot>,
    ) -> Poll<usize> {
        let mut q = lock(&self.queue);
        if q.entries == 0 {
            match &mut q.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        std::mem::swap(&mut q.buf, out);
        slots.append(&mut q.slots);
        Poll::Ready(std::mem::take(&mut q.entries))
    }

    /// Records that a connection came up (`Ok`) or failed (`Err(reason)`), and logs a change
    /// of the overall state once, and each kind of failure once per outage.
    fn report(&self, role: Role, result: Result<(), &LinkError>, retry_in: Duration) {
        let up = result.is_ok();
        match role {
            Role::Publish => {
                let mut q = lock(&self.queue);
                q.up = up;
                if !up {
                    // At-most-once: what was not written is not sent on the next connection.
                    let lost = count_publishes(&q.slots);
                    self.stats.dropped_down.fetch_add(lost, Relaxed);
                    q.entries = 0;
                    q.slots.clear();
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
                        down_for = crate::log::Secs(t.elapsed())
                    ),
                    None => info!("backplane_up", redis = self.cfg.redis),
                }
                *log = StateLog {
                    up: Some(true),
                    ..StateLog::default()
                };
                drop(log);
                // Both connections are up: the announcement goes out, and the answers of the
                // others (each answers a new peer at once) can be heard.
                self.announce();
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
                        && !log.reasons.contains(&reason.as_str()))
                {
                    log.reasons.push(reason.as_str());
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
    fn on_message(&self, hub: &Hub, channel: &[u8], message: &[u8]) {
        let suffix = channel
            .strip_prefix(self.cfg.channel_prefix.as_bytes())
            .and_then(|r| r.strip_prefix(b":"))
            .and_then(|r| std::str::from_utf8(r).ok());
        if suffix == Some(PEERS_CHANNEL) {
            let ok = match decode(message) {
                Ok(env) if *env.node == self.node => true,
                Ok(Envelope {
                    node,
                    body: Body::Peer(addr),
                    ..
                }) => self.on_peer(node, addr),
                _ => false,
            };
            if !ok {
                self.stats.invalid.fetch_add(1, Relaxed);
            }
            return;
        }
        let room = suffix.filter(|r| crate::hub::valid_room(r));
        // A message of the shared order: `<offset> <envelope>`, ours included.
        let ordered = match message.first() {
            Some(c) if c.is_ascii_hexdigit() => envelope::split_ordered(message),
            _ => None,
        };
        let (at, message) = match ordered {
            Some((at, env)) => (Some(at), env),
            None => (None, message),
        };
        let (Some(room), Ok(env)) = (room, decode(message)) else {
            self.stats.invalid.fetch_add(1, Relaxed);
            return;
        };
        let own = *env.node == self.node;
        if own && at.is_none() {
            return; // ours: delivered locally when it was published
        }
        let chat;
        let payload = match env.body {
            Body::Text(t) => Payload::Raw {
                kind: frame::Kind::Text,
                data: t.as_bytes(),
            },
            Body::Binary(b) => Payload::Raw {
                kind: frame::Kind::Binary,
                data: b,
            },
            Body::SocketIo(args) => {
                chat = crate::sio::chat_text(args);
                Payload::SocketIo {
                    args,
                    chat: chat.as_deref(),
                }
            }
            // Announcements travel on their own channel only.
            Body::Peer(_) => {
                self.stats.invalid.fetch_add(1, Relaxed);
                return;
            }
        };
        match at {
            // (Member ids are random per process: another instance's names no member here.)
            Some(at) => {
                hub.deliver_at(room, payload, at, env.except);
            }
            None => {
                hub.deliver(room, payload);
            }
        }
        if !own {
            self.stats.received.fetch_add(1, Relaxed);
        }
    }
}

impl Backplane {
    /// Appends `PUBLISH {prefix}:{suffix} <envelope>` to the queue, or drops it (counted).
    fn publish(&self, suffix: &str, kind: u8, data: &[u8]) {
        let prefix = self.cfg.channel_prefix.as_bytes();
        let len = resp::array_header_len(3)
            + resp::bulk_len(7)
            + resp::bulk_len(prefix.len() + 1 + suffix.len())
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
        resp::bulk(buf, &[prefix, b":", suffix.as_bytes()]);
        resp::bulk(buf, &[&envelope::header(&self.node, kind), data]);
        q.push(Slot::Publish);
    }

    /// Records the Redis primary's replication id, read when the publisher connected.
    fn set_replid(&self, replid: &[u8]) {
        let mut q = lock(&self.queue);
        q.replid.clear();
        q.replid.extend_from_slice(replid);
    }

    /// Whether room messages go through the shared order (history on).
    pub fn ordered(&self) -> bool {
        self.order.is_some()
    }

    /// Queues a command nobody waits for, if the publisher is connected and the queue has
    /// room (full-policy: drop it; what it does is renewed later, or is lost with the
    /// instance anyway).
    fn quiet(&self, args: &[&[u8]]) {
        let mut q = lock(&self.queue);
        if q.up && q.entries < self.cfg.queue_messages {
            resp::command(&mut q.buf, args);
            q.push(Slot::Quiet);
        }
    }

    /// Sends one command and waits for its reply, at most `--redis-timeout`; `None` when
    /// the publisher is not connected, the connection is lost first, or time runs out.
    async fn query(&self, args: &[&[u8]]) -> Option<Owned> {
        let (tx, rx) = async_channel::bounded(1);
        {
            let mut q = lock(&self.queue);
            if !q.up {
                return None;
            }
            resp::command(&mut q.buf, args);
            q.push(Slot::Reply(tx));
        }
        let timeout = async {
            smol::Timer::after(self.cfg.timeout).await;
            Err(async_channel::RecvError)
        };
        futures_lite::FutureExt::or(rx.recv(), timeout).await.ok()
    }

    /// Waits until everything queued so far was acknowledged by Redis (or could not be),
    /// at most `--redis-timeout`: a `PING` queued now is answered after all of it.
    pub async fn flushed(&self) -> bool {
        self.query(&[b"PING"]).await.is_some()
    }

    /// The room's shared order (made if the room has none yet) and, with `after`, its
    /// messages after that seq that the stream still holds; `None` when Redis cannot say now.
    pub async fn position(&self, room: &str, after: Option<u64>) -> Option<Position> {
        let order = self.order?;
        let prefix = self.cfg.channel_prefix.as_str();
        let (meta, stream) = (
            scripts::key(prefix, room, "m").concat(),
            scripts::key(prefix, room, "s").concat(),
        );
        let (epoch, len) = scripts::hex(crate::history::new_epoch());
        let start = after.map_or("+".to_owned(), |a| format!("{}-0", a + 1));
        let replid = lock(&self.queue).replid.clone();
        let reply = self
            .query(&[
                b"EVALSHA",
                scripts::FOLLOW_SHA.as_bytes(),
                b"2",
                &meta,
                &stream,
                &epoch[..len],
                order.room_ttl_ms().as_bytes(),
                start.as_bytes(),
                order.entries.to_string().as_bytes(),
                &replid,
            ])
            .await?;
        let parsed = position_of(&reply);
        if parsed.is_none() {
            error!(
                "backplane_reply",
                command = "follow",
                reply = format!("{reply:?}")
            );
        }
        parsed
    }

    /// A Socket.IO session's key: `{prefix}:{room}:p:<pid>`.
    fn session_key(&self, room: &str, pid: &str) -> Vec<u8> {
        let mut key = scripts::key(&self.cfg.channel_prefix, room, "p:").concat();
        key.extend_from_slice(pid.as_bytes());
        key
    }

    /// Records a Socket.IO session: `value` under its room and `pid`, for the window.
    pub fn save_session(&self, room: &str, pid: &str, value: &str) {
        let Some(order) = self.order else { return };
        let key = self.session_key(room, pid);
        let ttl = order.window.as_millis().to_string();
        self.quiet(&[b"SET", &key, value.as_bytes(), b"PX", ttl.as_bytes()]);
    }

    /// How many commands a caller that queues many at once (a renewal) should queue before
    /// it waits for [`Backplane::flushed`]: half the queue's bound, at most 512, so that the
    /// full-policy never drops them.
    pub fn batch(&self) -> usize {
        (self.cfg.queue_messages / 2).clamp(1, 512)
    }

    /// Renews a Socket.IO session's record for a window from now.
    pub fn renew_session(&self, room: &str, pid: &str) {
        let Some(order) = self.order else { return };
        let key = self.session_key(room, pid);
        let ttl = order.window.as_millis().to_string();
        self.quiet(&[b"PEXPIRE", &key, ttl.as_bytes()]);
    }

    /// Forgets a Socket.IO session (its client left on purpose).
    pub fn forget_session(&self, room: &str, pid: &str) {
        let key = self.session_key(room, pid);
        self.quiet(&[b"DEL", &key]);
    }

    /// A Socket.IO session's record, if Redis has it: `Some(None)` when it has not, `None`
    /// when Redis cannot say now.
    pub async fn session(&self, room: &str, pid: &str) -> Option<Option<Vec<u8>>> {
        let key = self.session_key(room, pid);
        match self.query(&[b"GET", &key]).await? {
            Owned::Bytes(b) => Some(Some(b)),
            Owned::Nil => Some(None),
            _ => None,
        }
    }

    /// Renews a room's keys (its epoch and stream) for twice the window.
    pub fn renew_room(&self, room: &str) {
        let Some(order) = self.order else { return };
        let prefix = self.cfg.channel_prefix.as_str();
        let ttl = order.room_ttl_ms();
        for suffix in ["m", "s"] {
            let key = scripts::key(prefix, room, suffix).concat();
            self.quiet(&[b"PEXPIRE", &key, ttl.as_bytes()]);
        }
    }
}

impl Queue {
    /// Counts a command just encoded into `buf`, and wakes the publisher.
    fn push(&mut self, slot: Slot) {
        self.slots.push_back(slot);
        self.entries += 1;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Messages to other instances among `slots`.
pub(crate) fn count_publishes(slots: &VecDeque<Slot>) -> u64 {
    slots.iter().filter(|s| matches!(s, Slot::Publish)).count() as u64
}

/// Reads FOLLOW's answer: `[epoch, seq, [[id, [field, value, ..]], ..]]`.
fn position_of(reply: &Owned) -> Option<Position> {
    let [e, q, entries] = reply.list()? else {
        return None;
    };
    let text = |o: &Owned| std::str::from_utf8(o.bytes()?).ok().map(str::to_owned);
    let epoch = u64::from_str_radix(&text(e)?, 16).ok()?;
    let seq = text(q)?.parse().ok()?;
    let mut out = Vec::new();
    for entry in entries.list()? {
        let [id, fields] = entry.list()? else {
            return None;
        };
        let id = text(id)?;
        let seq = id.strip_suffix("-0")?.parse().ok()?;
        let data = fields.list()?.get(1)?.bytes()?.to_vec();
        out.push((seq, data));
    }
    Some(Position {
        top: Offset { epoch, seq },
        entries: out,
    })
}

impl Relay for Backplane {
    /// Appends `PUBLISH {prefix}:{room} <envelope>` to the queue, or drops it (counted).
    /// With the shared order, only what it could not take comes here: dropped, counted.
    fn relay(&self, room: &str, payload: &Payload<'_>) {
        if self.order.is_some() {
            self.stats.dropped_down.fetch_add(1, Relaxed);
            return;
        }
        let (kind, data) = parts(payload);
        self.publish(room, kind, data);
    }

    /// Appends the PUBLISH script's call for this message to the queue: Redis numbers it
    /// and sends it to every instance, this one included.
    fn share(&self, room: &str, payload: &Payload<'_>, except: Option<u64>) -> Shared {
        let Some(order) = self.order else {
            return Shared::Off;
        };
        if !self.sub_up.load(Relaxed) {
            return Shared::Down;
        }
        let (kind, data) = parts(payload);
        let prefix = self.cfg.channel_prefix.as_bytes();
        let mut q = lock(&self.queue);
        if !q.up {
            return Shared::Down;
        }
        // Full-policy: drop the newest, for everyone (the order has no place for it).
        if q.entries >= self.cfg.queue_messages
            || (q.entries > 0 && q.buf.len() + data.len() > self.cfg.queue_bytes)
        {
            drop(q);
            self.stats.dropped_full.fetch_add(1, Relaxed);
            return Shared::Dropped;
        }
        let p = self.cfg.channel_prefix.as_str();
        let (epoch, len) = scripts::hex(crate::history::new_epoch());
        let mut n = [0u8; 20];
        let entries = write_decimal(&mut n, order.entries as u64);
        let mut t = [0u8; 20];
        let ttl = write_decimal(&mut t, order.window.as_millis() as u64 * 2);
        let Queue { buf, replid, .. } = &mut *q;
        resp::array_header(buf, 11);
        resp::bulk(buf, &[b"EVALSHA"]);
        resp::bulk(buf, &[scripts::PUBLISH_SHA.as_bytes()]);
        resp::bulk(buf, &[b"2"]);
        resp::bulk(buf, &scripts::key(p, room, "m"));
        resp::bulk(buf, &scripts::key(p, room, "s"));
        resp::bulk(buf, &[prefix, b":", room.as_bytes()]);
        resp::bulk(buf, &[&epoch[..len]]);
        resp::bulk(buf, &[entries]);
        resp::bulk(buf, &[ttl]);
        resp::bulk(
            buf,
            &[&envelope::ordered_header(&self.node, kind, except), data],
        );
        resp::bulk(buf, &[replid]);
        q.push(Slot::Publish);
        Shared::Taken
    }
}

/// Writes `n` in decimal into `buf`, without allocating; returns the digits.
fn write_decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// An instance's tag: the first 48 bits of its node id in base64url.
fn tag_of(node: &[u8; NODE_ID_LEN]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = node[..6]
        .iter()
        .fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    (0..TAG_LEN)
        .map(|i| A[(bits >> (42 - 6 * i) & 63) as usize] as char)
        .collect()
}

/// Starts the publisher and subscriber tasks on the gateway's executor (when `--redis`).
pub fn start(backplane: &Option<Arc<Backplane>>, hub: &Arc<Hub>, executor: &Executor) {
    let Some(bp) = backplane.clone() else {
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
        executor
            .spawn(link::run(bp.clone(), hub.clone(), role))
            .detach();
    }
    if let Some(addr) = cfg.advertise {
        info!(
            "peer_advertise",
            peer = bp.tag,
            addr = addr,
            every = crate::config::format_duration(cfg.announce_interval)
        );
        // The first announcement goes out when both connections are up (`report`), where
        // the answers can be heard; then every interval.
        let bp = bp.clone();
        executor
            .spawn(async move {
                loop {
                    smol::Timer::after(bp.cfg.announce_interval).await;
                    bp.announce();
                }
            })
            .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisUrl;
    use resp::{Parsed, Value};
    use std::task::Wake;

    /// History off: plain pub/sub, no shared order.
    fn off() -> HistoryConfig {
        HistoryConfig {
            window: Duration::ZERO,
            ..HistoryConfig::default()
        }
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
        Backplane::new(cfg, 64 * 1024, &off())
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
        let mut slots = VecDeque::new();
        assert_eq!(bp.poll_take(&mut cx, &mut out, &mut slots), Poll::Pending);
        bp.relay("main", &text("one"));
        assert_eq!(count.0.load(Relaxed), 1, "the publisher is woken");
        bp.relay("room-2", &text("two"));
        bp.relay("main", &text("three"));
        assert_eq!(bp.stats.dropped_full.load(Relaxed), 1);
        assert_eq!(bp.poll_take(&mut cx, &mut out, &mut slots), Poll::Ready(2));
        let mut want = Vec::new();
        for (room, msg) in [("main", "one"), ("room-2", "two")] {
            resp::command(
                &mut want,
                &[
                    b"PUBLISH",
                    format!("wsgate:{room}").as_bytes(),
                    &envelope::encode(&bp.node, &text(msg)),
                ],
            );
        }
        assert_eq!(out, want);
        assert_eq!(count_publishes(&slots), 2);
        // The byte cap: a second message that does not fit is dropped; a first always fits.
        let bp = backplane(100, 10);
        lock(&bp.queue).up = true;
        bp.relay("main", &text("bigger than ten bytes"));
        bp.relay("main", &text("x"));
        assert_eq!(lock(&bp.queue).entries, 1);
        assert_eq!(bp.stats.dropped_full.load(Relaxed), 1);
    }

    #[test]
    fn with_history_a_publish_is_offered_to_the_shared_order_through_the_script() {
        let cfg = BackplaneConfig::new(RedisUrl::default());
        let bp = Backplane::new(cfg, 1024, &HistoryConfig::default());
        // Not subscribed: the room must go on here.
        lock(&bp.queue).up = true;
        assert_eq!(bp.share("main", &text("x"), None), Shared::Down);
        bp.sub_up.store(true, Relaxed);
        assert_eq!(bp.share("main", &text("hi"), Some(7)), Shared::Taken);
        // What the hub hands the relay after a local fallback is not published plainly.
        bp.relay("main", &text("late"));
        assert_eq!(bp.stats.dropped_down.load(Relaxed), 1);
        let q = std::mem::take(&mut *lock(&bp.queue));
        assert_eq!(count_publishes(&q.slots), 1);
        let Ok(Parsed::Complete { value, .. }) = resp::parse(&q.buf) else {
            panic!("one command");
        };
        let Value::Array(a) = value else { panic!() };
        let args: Vec<&[u8]> = a
            .iter()
            .map(|v| match v {
                Value::Bulk(b) => b,
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            args[..6],
            [
                &b"EVALSHA"[..],
                scripts::PUBLISH_SHA.as_bytes(),
                b"2",
                b"wsgate:{main}:m",
                b"wsgate:{main}:s",
                b"wsgate:main",
            ]
        );
        assert_eq!(args[7], b"1000", "MAXLEN ~ the history size");
        assert_eq!(args[8], b"240000", "twice the window, in ms");
        let env = decode(args[9]).unwrap();
        assert_eq!((env.except, env.body), (Some(7), Body::Text("hi")));
        assert_eq!(args[10], b"", "the primary's replication id, unknown here");
    }

    #[test]
    fn the_follow_scripts_answer_is_read_strictly() {
        let b = |s: &[u8]| Owned::Bytes(s.to_vec());
        let entry =
            |id: &[u8], d: &[u8]| Owned::List(vec![b(id), Owned::List(vec![b(b"d"), b(d)])]);
        let reply = Owned::List(vec![
            b(b"ab"),
            b(b"3"),
            Owned::List(vec![entry(b"2-0", b"two"), entry(b"3-0", b"three")]),
        ]);
        let p = position_of(&reply).unwrap();
        assert_eq!(
            p.top,
            Offset {
                epoch: 0xab,
                seq: 3
            }
        );
        assert_eq!(
            p.entries,
            vec![(2, b"two".to_vec()), (3, b"three".to_vec())]
        );
        for bad in [
            Owned::List(vec![b(b"zz"), b(b"3"), Owned::List(vec![])]),
            Owned::List(vec![b(b"ab"), b(b"x"), Owned::List(vec![])]),
            Owned::List(vec![
                b(b"ab"),
                b(b"3"),
                Owned::List(vec![entry(b"2-1", b"x")]),
            ]),
            Owned::List(vec![b(b"ab"), b(b"3")]),
            Owned::Error("NOSCRIPT".into()),
        ] {
            assert!(position_of(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn losing_the_publisher_drops_what_is_queued() {
        let bp = backplane(10, 1 << 20);
        bp.report(Role::Publish, Ok(()), Duration::ZERO);
        bp.report(Role::Subscribe, Ok(()), Duration::ZERO);
        assert!(bp.is_up());
        bp.relay("main", &text("a"));
        bp.relay("main", &text("b"));
        bp.report(Role::Publish, Err(&LinkError::Closed), Duration::ZERO);
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
    fn peers_are_learnt_from_announcements_and_forgotten() {
        let mut cfg = BackplaneConfig::new(RedisUrl::default());
        cfg.advertise = Some("10.0.0.1:80".parse().unwrap());
        cfg.announce_interval = Duration::from_millis(40);
        let me = Backplane::new(cfg.clone(), 1024, &off());
        cfg.advertise = Some("10.0.0.2:80".parse().unwrap());
        let other = Backplane::new(cfg, 1024, &off());
        assert_eq!(me.sid_prefix().len(), TAG_LEN);
        assert_ne!(me.sid_prefix(), other.sid_prefix());
        // What `other` publishes, as the subscriber reads it.
        lock(&other.queue).up = true;
        other.announce();
        let queued = std::mem::take(&mut lock(&other.queue).buf);
        let mut env = envelope::header(&other.node, envelope::KIND_PEER).to_vec();
        env.extend_from_slice(b"10.0.0.2:80");
        let mut want = Vec::new();
        resp::command(&mut want, &[b"PUBLISH", b"wsgate:!peers", &env]);
        assert_eq!(queued, want);
        let hub = Hub::new(4);
        me.on_message(&hub, b"wsgate:!peers", &env);
        let sid = crate::sio::new_sid_after(other.sid_prefix());
        assert_eq!(me.owner_of(&sid), Some("10.0.0.2:80".parse().unwrap()));
        assert_eq!(me.live_peers(), 1);
        // Its own sessions, and ids too short to carry a tag, are nobody else's.
        assert_eq!(
            me.owner_of(&crate::sio::new_sid_after(me.sid_prefix())),
            None
        );
        assert_eq!(me.owner_of("abc"), None);
        // A bad address, or an announcement on a room's channel, is invalid and changes nothing.
        let mut bad = envelope::header(&other.node, envelope::KIND_PEER).to_vec();
        bad.extend_from_slice(b"not an address");
        me.on_message(&hub, b"wsgate:!peers", &bad);
        me.on_message(&hub, b"wsgate:main", &env);
        assert_eq!(me.stats.invalid.load(Relaxed), 2);
        // Not heard from for three intervals: forgotten.
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(me.owner_of(&sid), None);
        assert_eq!(me.live_peers(), 0);
    }

    #[test]
    fn the_pattern_escapes_glob_characters() {
        let mut cfg = BackplaneConfig::new(RedisUrl::default());
        cfg.channel_prefix = "a*b?[c]\\".into();
        assert_eq!(
            Backplane::new(cfg, 64 * 1024, &off()).pattern(),
            b"a\\*b\\?\\[c\\]\\\\:*"
        );
        assert_eq!(backplane(1, 1).pattern(), b"wsgate:*");
    }
}
