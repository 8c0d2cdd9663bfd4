//! A WebSocket upgrade that passed every check (`handshake::check`, the origin, the token,
//! admission): join, answer 101, and hand the socket with every byte after the head to a
//! session task of its own.

use crate::auth::Access;
use crate::frame::{self, Frame, Kind};
use crate::gateway::Gateway;
use crate::history::Offset;
use crate::hub::{Membership, Protocol};
use crate::prelude::{handshake, Buf, Prelude};
use crate::session::{self, Admitted, Peer, Start};
use futures_lite::AsyncWriteExt;
use smol::Async;
use std::borrow::Cow;
use std::net::TcpStream;
use std::sync::Arc;

/// What an upgrade carries from the router to [`start`].
pub(super) struct Upgrade<'a> {
    pub room: Cow<'a, str>,
    pub protocol: Protocol,
    pub accept: [u8; 28],
    /// Its own permit, or the polling session it takes over (whose admission it shares).
    pub admitted: Admitted,
    /// What its token allows.
    pub access: Access,
    /// A raw resume's `?since=` (with `wsgate.offset`).
    pub since: Option<Offset>,
}

impl Upgrade<'_> {
    /// The same, owning its room name, so that the request buffer can go.
    pub(super) fn into_owned(self) -> Upgrade<'static> {
        Upgrade {
            room: Cow::Owned(self.room.into_owned()),
            protocol: self.protocol,
            accept: self.accept,
            admitted: self.admitted,
            access: self.access,
            since: self.since,
        }
    }
}

/// Joins, writes the 101, and spawns the session. Plain clients join before the 101 goes
/// out: a client that saw its upgrade succeed is already in the room and gets the next
/// message sent there. Socket.IO clients wait in the lobby (where shutdown still reaches
/// them) until they connect.
pub(super) async fn start(
    mut stream: Async<TcpStream>,
    buf: &mut Buf,
    body_start: usize,
    pre: &Prelude,
    gw: &Arc<Gateway>,
    up: Upgrade<'static>,
) {
    if let (Protocol::RawOffset, Some(bp)) = (up.protocol, &gw.backplane) {
        // The room's offsets are the shared order's; a resume from before what this
        // instance keeps is fetched from Redis first.
        session::follow(&gw.hub, bp, &up.room).await;
        if let Some(since) = up.since {
            session::catch_up(&gw.hub, bp, &up.room, since).await;
        }
    }
    let (membership, preamble) = match up.protocol {
        Protocol::Raw => (gw.hub.join(&up.room, up.protocol), Vec::new()),
        Protocol::RawOffset => resume(gw, &up, pre),
        Protocol::SocketIo => (gw.hub.join_lobby(up.protocol), Vec::new()),
    };
    let leftover = buf.data[body_start..pre.filled].to_vec();
    buf.data = Vec::new();
    let written = match up.protocol {
        Protocol::RawOffset => {
            let head = handshake::response_101_offset(&up.accept);
            stream.write_all(&head).await
        }
        _ => stream.write_all(&handshake::response_101(&up.accept)).await,
    };
    if written.is_err() {
        return;
    }
    let peer = Peer {
        conn: gw.next_conn(),
        client: pre.client,
    };
    crate::info!(
        "open",
        conn = peer.conn,
        client = peer.client,
        room = up.room,
        protocol = match up.protocol {
            Protocol::Raw | Protocol::RawOffset => "ws",
            Protocol::SocketIo => "socket.io",
        },
        transport = "websocket",
        upgrade = match &up.admitted {
            Admitted::TakeOver(p) => &p.sid,
            Admitted::Own(_) => "-",
        },
        user = up.access.user(),
        proxy = pre.proxy.version.unwrap_or("none"),
        vpce = pre.proxy.vpce.as_deref().unwrap_or("-")
    );
    let start = Start {
        room: up.room.into_owned(),
        protocol: up.protocol,
        peer,
        admitted: up.admitted,
        access: up.access,
        preamble,
    };
    // A fresh task keeps the prelude's buffers out of the long-lived future.
    let ctx = gw.sessions.clone();
    gw.executor
        .spawn(session::serve(
            session::Lendable::new(stream),
            leftover,
            membership,
            start,
            ctx,
        ))
        .detach();
}

/// A `wsgate.offset` client's join: its first frame, `{"offset":..,"recovered":..}`, and with
/// `?since=` every message after it, or none at all and `recovered: false` when that cannot
/// be whole.
fn resume(gw: &Gateway, up: &Upgrade<'_>, pre: &Prelude) -> (Membership, Vec<Frame>) {
    let (membership, resume) = gw
        .hub
        .join_since(&up.room, Protocol::RawOffset, up.since, None);
    let (recovered, replay) = match resume.replay {
        Some(Ok(frames)) => (true, frames),
        Some(Err(gap)) => {
            count(gw, up, pre, gap.as_str(), 0);
            (false, Vec::new())
        }
        None => (false, Vec::new()),
    };
    if recovered {
        count(gw, up, pre, "recovered", replay.len());
    }
    let first = format!(
        "{{\"offset\":\"{}\",\"recovered\":{recovered}}}",
        resume.top
    );
    let mut frames = Vec::with_capacity(1 + replay.len());
    frames.push(frame::encode(Kind::Text, first.as_bytes()));
    frames.extend(replay);
    (membership, frames)
}

fn count(gw: &Gateway, up: &Upgrade<'_>, pre: &Prelude, result: &'static str, replayed: usize) {
    gw.metrics.recovery(result, replayed);
    crate::info!(
        "recovery",
        client = pre.client,
        room = up.room,
        protocol = "ws",
        result = result,
        replayed = replayed
    );
}
