//! A WebSocket upgrade that passed every check (`handshake::check`, the origin, the token,
//! admission): join, answer 101, and hand the socket with every byte after the head to a
//! session task of its own.

use crate::auth::Access;
use crate::gateway::Gateway;
use crate::hub::Protocol;
use crate::prelude::{handshake, Buf, Prelude};
use crate::session::{self, Admitted, Peer, Start, Via};
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
    let membership = match up.protocol {
        Protocol::Raw => gw.hub.join(&up.room, up.protocol),
        Protocol::SocketIo => gw.hub.join_lobby(up.protocol),
    };
    let leftover = buf.data[body_start..pre.filled].to_vec();
    buf.data = Vec::new();
    if stream
        .write_all(&handshake::response_101(&up.accept))
        .await
        .is_err()
    {
        return;
    }
    let start = Start {
        room: up.room.into_owned(),
        protocol: up.protocol,
        peer: Peer {
            conn: gw.next_conn(),
            client: pre.client,
        },
        via: Via {
            proxy: pre.proxy.version,
            vpce: pre.proxy.vpce.clone(),
        },
        admitted: up.admitted,
        access: up.access,
    };
    // A fresh task keeps the prelude's buffers out of the long-lived future.
    let ctx = gw.sessions.clone();
    gw.executor
        .spawn(async move { session::serve(stream, leftover, membership, start, &ctx).await })
        .detach();
}
