//! Socket.IO connection state recovery, byte-compatible with the stock `socket.io-client`
//! (4.6+), on both transports. The only file that knows what a `pid` means.
//!
//! ```text
//! 40 or 40{..}               -> fresh: join the room, 40{"sid":S,"pid":P}; the session is
//!                               registered (P -> room, S, the room's offset at the join)
//! 40{"pid":P,"offset":O,..}  -> P known, in the window, same room, and every event after O
//!                               still kept: those events (each with its offset), then
//!                               40{"sid":S,"pid":P} with the same ids: `socket.recovered`
//!                            -> otherwise a fresh session (new S and P): recovered stays false
//! ```
//!
//! Beyond the Node server (`../shared/research/recovery-anchors.md` §1.5):
//! * a client with `pid` but no `offset` (it never got an event) resumes from the room's
//!   offset at its join (socket.io issues 4968, 5538);
//! * a quiet client whose offset is still the room's newest resumes, even when that entry
//!   aged out (socket.io issue 5282; [`crate::history::Ring::since`]);
//! * a client that comes back while its old connection still looks alive takes the session
//!   over: the old member is retired (closed, `replaced`), and the old connection's later end
//!   does not touch the new one (socket.io issue 4880; generations in
//!   [`crate::history::Resumes`]);
//! * the session is registered when it connects, not when it drops.
//!
//! Across instances (`--redis`, [`crate::backplane`]): a room's offsets are the shared
//! order's, the same on every instance. A session's record (`sid`, the offset at its join)
//! is written to Redis when it connects, written again every third of a window while it
//! lives, and given a whole window when it ends (and at a drain, before the `1001`s), so an instance
//! killed with `-9` loses nothing a client needs. A CONNECT is [`Recovery::prepare`]d first:
//! the room follows the shared order, a `pid` this instance does not know is read back from
//! Redis, and the messages after the client's offset that this instance never kept are
//! fetched from the room's stream ([`catch_up`]). Then the CONNECT is handled as here.

use super::socketio::{Client, Reply};
use crate::backplane::{envelope, Backplane};
use crate::frame::{self, Frame, Kind};
use crate::history::{Offset, Record, Resumes};
use crate::hub::{Hub, Member, Membership, Payload, Protocol};
use crate::lock::mutex as lock;
use crate::sio;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The resumable sessions of this instance, and how long one may stay away.
#[derive(Debug)]
pub struct Recovery {
    table: Mutex<Resumes<Holder>>,
    window: Duration,
    /// The shared order (`--redis`), where records are kept for other instances.
    shared: Option<Arc<Backplane>>,
}

/// Who holds a session now: the member's id (its own `socket.broadcast.emit`s are not
/// replayed to it) and a handle to retire it.
#[derive(Debug, Clone)]
pub struct Holder {
    id: u64,
    member: Weak<Member>,
}

/// What a connected Socket.IO session keeps of its registration.
#[derive(Debug)]
/// (Boxed, so that a session without one, every raw one, pays a pointer.)
pub(crate) struct Held(Box<Registration>);

#[derive(Debug)]
struct Registration {
    pid: Box<str>,
    sid: Box<str>,
    room: Box<str>,
    generation: u64,
}

impl Held {
    fn new(pid: &str, sid: &str, room: &str, generation: u64) -> Held {
        Held(Box::new(Registration {
            pid: pid.into(),
            sid: sid.into(),
            room: room.into(),
            generation,
        }))
    }

    /// The private recovery id.
    pub(crate) fn pid(&self) -> &str {
        &self.0.pid
    }

    /// The public Socket.IO id (kept across recoveries).
    pub(crate) fn sid(&self) -> &str {
        &self.0.sid
    }
}

impl Recovery {
    /// Recovery within `window`; with `shared`, across the instances on its Redis.
    pub fn new(window: Duration, shared: Option<Arc<Backplane>>) -> Recovery {
        Recovery {
            table: Mutex::new(Resumes::default()),
            window,
            shared: shared.filter(|b| b.ordered()),
        }
    }

    /// What a CONNECT (`packet`) to `room` needs from Redis before it is handled: the room
    /// follows the shared order; a `pid` unknown here is read back from Redis; what came
    /// after its offset and is not kept here is fetched. Whatever Redis cannot answer in
    /// time is left out, and the CONNECT then gets what this instance alone can give.
    pub(crate) async fn prepare(&self, hub: &Hub, room: &str, packet: &str) {
        let Some(bp) = &self.shared else { return };
        let Ok(sio::Packet::Connect { ns: "/", data }) = sio::parse(packet) else {
            return;
        };
        follow(hub, bp, room).await;
        let (Some(pid), offset) = sio::resume_request(data) else {
            return;
        };
        if !sio::valid_pid(&pid) {
            return;
        }
        let now = Instant::now();
        let known = lock(&self.table).get(&pid, now).map(|r| r.joined_at);
        let joined_at = match known {
            Some(at) => at,
            None => {
                let Some(Some(value)) = bp.session(room, &pid).await else {
                    return;
                };
                let Some((sid, joined_at, former)) = parse_record(&value) else {
                    return;
                };
                let record = Record {
                    room: room.into(),
                    sid: sid.into(),
                    joined_at,
                    generation: 0,
                    holder: None,
                    former,
                    expires: None,
                };
                lock(&self.table).adopt(&pid, record, now, self.window);
                joined_at
            }
        };
        let since = match offset.map(|o| o.parse::<Offset>()) {
            None => joined_at,
            Some(Ok(o)) => o,
            Some(Err(_)) => return,
        };
        catch_up(hub, bp, room, since).await;
    }

    /// Writes again the records of the sessions held here, and renews their rooms' keys, in
    /// Redis: every third of a window, and at a drain (for a whole window from then). A
    /// record is written whole (`SET`), so one that a full queue dropped at its connect is
    /// there after the next renewal. In batches ([`Backplane::batch`]), each acknowledged by
    /// Redis before the next, so that the queue's bound never drops a renewal.
    pub async fn renew(&self, hub: &Hub) -> bool {
        let Some(bp) = &self.shared else { return true };
        let held: Vec<(String, String, String)> = lock(&self.table)
            .held()
            .map(|(pid, r)| {
                let member = r.holder.as_ref().map_or(0, |h| h.id);
                let value = record_value(&r.sid, r.joined_at, member);
                (r.room.to_string(), pid.to_owned(), value)
            })
            .collect();
        let mut acknowledged = true;
        let batch = bp.batch();
        for chunk in held.chunks(batch) {
            for (room, pid, value) in chunk {
                bp.save_session(room, pid, value);
            }
            acknowledged &= bp.flushed().await;
        }
        // (Two commands a room.)
        for chunk in hub.room_list().chunks(batch.div_ceil(2)) {
            for (room, _) in chunk {
                bp.renew_room(room);
            }
            acknowledged &= bp.flushed().await;
        }
        acknowledged
    }

    /// How often [`Recovery::renew`] runs: a third of the window.
    pub fn renew_every(&self) -> Option<Duration> {
        self.shared.as_ref().map(|_| self.window / 3)
    }

    /// Sessions registered now (connected, or gone within the window).
    pub fn sessions(&self) -> usize {
        lock(&self.table).len()
    }

    /// The CONNECT to `/` of a client in the lobby: recovered when it asks and can be,
    /// else a fresh session. Replies through `reply`; the member joins `c.room`.
    pub(super) fn connect(
        &self,
        c: &Client<'_>,
        data: &str,
        membership: &mut Membership,
        held: &mut Option<Held>,
        reply: &mut impl FnMut(Reply) -> bool,
    ) {
        let now = Instant::now();
        let (pid, offset) = sio::resume_request(data);
        if let Some(pid) = pid {
            match self.recover(c, &pid, offset.as_deref(), now) {
                Ok(Recovered {
                    membership: m,
                    frames,
                    sid,
                    joined_at,
                    generation,
                }) => {
                    let n = frames.len();
                    for f in frames {
                        reply(Reply::Frame(f));
                    }
                    let ok = sio::connect_ok_pid(&sid, &pid);
                    reply(Reply::Frame(frame::encode(Kind::Text, ok.as_bytes())));
                    self.save(c.room, &pid, &sid, joined_at, m.member().id());
                    *membership = m;
                    *held = Some(Held::new(&pid, &sid, c.room, generation));
                    self.count(c, "recovered", n);
                    return;
                }
                Err(result) => self.count(c, result, 0),
            }
        }
        let (m, resume) = c.hub.join_since(c.room, Protocol::SocketIo, None, None);
        let pid = sio::new_pid();
        let record = Record {
            room: c.room.into(),
            sid: c.sid.into(),
            joined_at: resume.top,
            generation: 0,
            holder: Some(holder(&m)),
            former: None,
            expires: None,
        };
        let generation = lock(&self.table).open(&pid, record, now, self.window);
        reply(Reply::Text(sio::connect_ok_pid(c.sid, &pid)));
        self.save(c.room, &pid, c.sid, resume.top, m.member().id());
        *membership = m;
        *held = Some(Held::new(&pid, c.sid, c.room, generation));
    }

    /// Writes a session's record to Redis, for the other instances.
    fn save(&self, room: &str, pid: &str, sid: &str, joined_at: Offset, member: u64) {
        if let Some(bp) = &self.shared {
            bp.save_session(room, pid, &record_value(sid, joined_at, member));
        }
    }

    /// The session `pid` back, with the events it missed, or why not (a metric label).
    fn recover(
        &self,
        c: &Client<'_>,
        pid: &str,
        offset: Option<&str>,
        now: Instant,
    ) -> Result<Recovered, &'static str> {
        let (joined_at, former) = {
            let table = lock(&self.table);
            let r = table.get(pid, now).ok_or("unknown")?;
            if &*r.room != c.room {
                return Err("unknown");
            }
            (r.joined_at, r.holder.as_ref().map(|h| h.id).or(r.former))
        };
        let since = match offset {
            None => joined_at,
            Some(o) => o.parse::<Offset>().map_err(|_| "unknown")?,
        };
        let (m, resume) = c
            .hub
            .join_since(c.room, Protocol::SocketIo, Some(since), former);
        let frames = match resume.replay {
            Some(Ok(frames)) => frames,
            Some(Err(gap)) => return Err(gap.as_str()),
            None => return Err("off"),
        };
        let (was, generation) = lock(&self.table)
            .take_over(pid, holder(&m), now)
            .ok_or("unknown")?;
        // A connection that still holds it (half-open after a cut) is retired.
        if let Some(old) = was.holder.and_then(|h| h.member.upgrade()) {
            old.retire();
        }
        Ok(Recovered {
            membership: m,
            frames,
            sid: was.sid,
            joined_at,
            generation,
        })
    }

    /// The connection that held `held` has ended: resumable for the window, unless the
    /// client left on purpose (Socket.IO `41`, what `socket.disconnect()` sends).
    pub(crate) fn ended(&self, held: &Held, on_purpose: bool) {
        let mut table = lock(&self.table);
        let h = &held.0;
        if on_purpose {
            table.forget(&h.pid, h.generation);
        } else {
            table.closed(&h.pid, h.generation, Instant::now(), self.window);
        }
        drop(table);
        if let Some(bp) = &self.shared {
            if on_purpose {
                bp.forget_session(&h.room, &h.pid);
            } else {
                bp.renew_session(&h.room, &h.pid);
            }
        }
    }

    fn count(&self, c: &Client<'_>, result: &'static str, replayed: usize) {
        c.metrics.recovery(result, replayed);
        crate::info!(
            "recovery",
            conn = c.peer.conn,
            client = c.peer.client,
            room = c.room,
            protocol = "socket.io",
            result = result,
            replayed = replayed
        );
    }
}

/// A session given back: its new place, the events it missed, its public id, and the
/// generation of this connection's hold on it.
struct Recovered {
    membership: Membership,
    frames: Vec<Frame>,
    sid: Box<str>,
    joined_at: Offset,
    generation: u64,
}

/// A session's record in Redis: `<sid> <offset at the join> <member id>`.
fn record_value(sid: &str, joined_at: Offset, member: u64) -> String {
    format!("{sid} {joined_at} {member}")
}

/// A record as [`record_value`] writes it.
fn parse_record(value: &[u8]) -> Option<(&str, Offset, Option<u64>)> {
    let mut parts = std::str::from_utf8(value).ok()?.split(' ');
    let (sid, at) = (parts.next()?, parts.next()?.parse().ok()?);
    Some((sid, at, parts.next().and_then(|m| m.parse().ok())))
}

/// Makes `room`'s log follow the shared order (one round trip, the first time a room is
/// used here, or after its log expired), so that the offsets handed out here are the ones
/// every instance knows.
pub async fn follow(hub: &Hub, bp: &Backplane, room: &str) {
    if bp.ordered() && !hub.follows(room) {
        if let Some(p) = bp.position(room, None).await {
            hub.follow(room, p.top);
        }
    }
}

/// Fetches from `room`'s stream what came after `since` when this instance does not keep it
/// (it was started later, or its subscription missed it), and puts it in the room's log.
pub async fn catch_up(hub: &Hub, bp: &Backplane, room: &str, since: Offset) {
    if hub.can_resume(room, since) {
        return;
    }
    let Some(p) = bp.position(room, Some(since.seq)).await else {
        return;
    };
    if p.top.epoch != since.epoch {
        // Redis started the room anew: the resume fails with `epoch`, as it must.
        hub.follow(room, p.top);
        return;
    }
    let entries: Vec<(u64, Payload<'_>, Option<u64>)> = p
        .entries
        .iter()
        .filter_map(|(seq, env)| {
            let env = envelope::decode(env).ok()?;
            let payload = match env.body {
                envelope::Body::Text(t) => Payload::Raw {
                    kind: Kind::Text,
                    data: t.as_bytes(),
                },
                envelope::Body::Binary(data) => Payload::Raw {
                    kind: Kind::Binary,
                    data,
                },
                envelope::Body::SocketIo(args) => Payload::SocketIo { args, chat: None },
                envelope::Body::Peer(_) => return None,
            };
            Some((*seq, payload, env.except))
        })
        .collect();
    hub.fill(room, p.top, &entries);
}

fn holder(m: &Membership) -> Holder {
    Holder {
        id: m.member().id(),
        member: m.handle(),
    }
}
