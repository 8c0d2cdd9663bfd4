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

use super::socketio::{Client, Reply};
use crate::frame::{self, Frame, Kind};
use crate::history::{Offset, Record, Resumes};
use crate::hub::{Member, Membership, Protocol};
use crate::lock::mutex as lock;
use crate::sio;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

/// The resumable sessions of this instance, and how long one may stay away.
#[derive(Debug)]
pub struct Recovery {
    table: Mutex<Resumes<Holder>>,
    window: Duration,
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
    generation: u64,
}

impl Held {
    fn new(pid: &str, sid: &str, generation: u64) -> Held {
        Held(Box::new(Registration {
            pid: pid.into(),
            sid: sid.into(),
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
    /// Recovery within `window`.
    pub fn new(window: Duration) -> Recovery {
        Recovery {
            table: Mutex::new(Resumes::default()),
            window,
        }
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
                    generation,
                }) => {
                    let n = frames.len();
                    for f in frames {
                        reply(Reply::Frame(f));
                    }
                    let ok = sio::connect_ok_pid(&sid, &pid);
                    reply(Reply::Frame(frame::encode(Kind::Text, ok.as_bytes())));
                    *membership = m;
                    *held = Some(Held::new(&pid, &sid, generation));
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
            expires: None,
        };
        let generation = lock(&self.table).open(&pid, record, now, self.window);
        reply(Reply::Text(sio::connect_ok_pid(c.sid, &pid)));
        *membership = m;
        *held = Some(Held::new(&pid, c.sid, generation));
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
            (r.joined_at, r.holder.as_ref().map(|h| h.id))
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
    generation: u64,
}

fn holder(m: &Membership) -> Holder {
    Holder {
        id: m.member().id(),
        member: m.handle(),
    }
}
