//! The Socket.IO side of a session: what each packet from a client does to its membership,
//! and what is answered. The packet format itself is [`crate::sio`], pure.
//!
//! * `40` (connect to `/`): answered `40{"sid":..}`; the lobby member joins its room, and the
//!   others there get `hi` (`socket.broadcast.emit('hi')`). With `--jwt-secret-file` the token
//!   (`auth.token` in the packet, else the handshake's) is checked first: refused, the client
//!   gets `44{"message":..}` (its `connect_error`) and stays out of every room.
//! * `42[..]` (an event): published to the whole room, sender included (`io.emit`); an ack id
//!   is answered `43<id>[]`.
//! * `41` (disconnect from `/`): back to the lobby. `1` (Engine.IO close): the session ends.
//! * `2` (ping from the client) is answered `3`; pongs, noops and acks need nothing.

use super::End;
use crate::auth::{Access, Auth};
use crate::hub::{Hub, Membership, Payload, Protocol};
use crate::metrics::{Family, Metrics};
use crate::sio::{self, Packet, SioError};
use std::sync::Arc;

/// One Socket.IO client, for the packets it sends.
#[derive(Debug)]
pub(super) struct Client<'a> {
    /// Its Engine.IO session id.
    pub(super) sid: &'a str,
    /// The room it joins when it connects to `/`.
    pub(super) room: &'a str,
    /// Where it joins.
    pub(super) hub: &'a Arc<Hub>,
    /// The token checker, when tokens are required.
    pub(super) auth: Option<&'a Auth>,
    /// Where refusals are counted.
    pub(super) metrics: &'a Metrics,
    /// Who it is, for the log lines of its refusals.
    pub(super) peer: &'a super::Peer,
}

impl Client<'_> {
    /// Handles one text packet. `reply` queues an answer to this client (on a WebSocket it
    /// lands at a frame boundary, through tungstenite) and says whether it was taken; a full
    /// control buffer is not this packet's error, the caller sees it on its own.
    pub(super) fn packet(
        &self,
        text: &str,
        membership: &mut Membership,
        access: &mut Access,
        reply: &mut impl FnMut(String) -> bool,
    ) -> Result<(), End> {
        match sio::parse(text) {
            Ok(Packet::Pong | Packet::Noop | Packet::Ack) => {}
            Ok(Packet::Ping) => {
                let _ = reply(sio::PONG.into());
            }
            Ok(Packet::Close) => return Err(End::SioClose),
            Ok(Packet::Binary) => return Err(End::SioBinary),
            Ok(Packet::Connect { ns: "/", data }) => {
                if let (Some(auth), Some(handshake)) = (self.auth, access.pending_token()) {
                    let token = sio::auth_token(data).or_else(|| handshake.map(str::to_owned));
                    match auth.admit(token.as_deref(), self.room) {
                        Ok(grant) => {
                            crate::info!(
                                "authorized",
                                conn = self.peer.conn,
                                client = self.peer.client,
                                room = self.room,
                                user = grant.user()
                            );
                            *access = Access::granted(grant);
                        }
                        Err(denied) => {
                            self.metrics.count(Family::AuthRefused, denied.as_str());
                            crate::warn!(
                                "auth_refused",
                                conn = self.peer.conn,
                                client = self.peer.client,
                                room = self.room,
                                reason = denied.as_str()
                            );
                            let _ = reply(sio::connect_refused(&denied.message()));
                            return Ok(());
                        }
                    }
                }
                let _ = reply(sio::connect_ok(self.sid));
                if membership.in_lobby() {
                    *membership = self.hub.join(self.room, Protocol::SocketIo);
                    // socket.broadcast.emit('hi'): everyone in the room but the newcomer.
                    let hi = Payload::SocketIo {
                        args: sio::HI_ARGS,
                        chat: None,
                    };
                    membership.publish_payload(hi, true);
                }
            }
            Ok(Packet::Connect { ns, .. }) => {
                let _ = reply(sio::connect_error(ns));
            }
            Ok(Packet::Disconnect { ns: "/" }) => {
                *membership = self.hub.join_lobby(Protocol::SocketIo);
            }
            Ok(Packet::Disconnect { .. }) => {}
            Ok(Packet::Event {
                ns,
                ack,
                args,
                name,
            }) => {
                if ns != "/" || membership.in_lobby() {
                    // An event for a namespace the client has not joined.
                    return Err(End::SioBadPacket(SioError::BadNamespace));
                }
                if !access.may_publish() {
                    return Err(End::PublishForbidden);
                }
                let chat = (name == "chat message")
                    .then(|| sio::chat_text(args))
                    .flatten();
                let payload = Payload::SocketIo {
                    args,
                    chat: chat.as_deref(),
                };
                membership.publish_payload(payload, false);
                if let Some(id) = ack {
                    let _ = reply(sio::ack(id));
                }
            }
            Err(e) => return Err(End::SioBadPacket(e)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use std::collections::VecDeque;
    use std::task::{Context, Waker};

    fn drain(m: &Membership) -> Vec<String> {
        let mut q: VecDeque<Frame> = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        let _ = m.member().poll_outbox(&mut cx, Some(&mut q));
        // Server frames of under 126 bytes: a 2-byte header, then the text.
        q.iter()
            .map(|f| String::from_utf8(f[2..].to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn connect_joins_the_room_and_greets_the_others_only() {
        let hub = Hub::new(16);
        let other = hub.join("main", Protocol::SocketIo);
        let mut me = hub.join_lobby(Protocol::SocketIo);
        let metrics = Metrics::default();
        let peer = super::super::Peer {
            conn: 1,
            client: "127.0.0.1:1".parse().unwrap(),
        };
        let c = Client {
            sid: "abc",
            room: "main",
            hub: &hub,
            auth: None,
            metrics: &metrics,
            peer: &peer,
        };
        let mut access = Access::open();
        let mut replies = Vec::new();
        let mut reply = |m: String| {
            replies.push(m);
            true
        };
        assert_eq!(c.packet("40", &mut me, &mut access, &mut reply), Ok(()));
        assert!(!me.in_lobby());
        assert_eq!(hub.members("main"), 2);
        assert_eq!(drain(&other), ["42[\"hi\"]"]);
        assert!(drain(&me).is_empty());
        // A second connect does not greet again.
        assert_eq!(c.packet("40", &mut me, &mut access, &mut reply), Ok(()));
        assert!(drain(&other).is_empty());
        // An event reaches everyone, the sender too, and its ack is answered.
        let ev = "427[\"chat message\",\"hey\"]";
        assert_eq!(c.packet(ev, &mut me, &mut access, &mut reply), Ok(()));
        assert_eq!(drain(&other), ["42[\"chat message\",\"hey\"]"]);
        assert_eq!(drain(&me), ["42[\"chat message\",\"hey\"]"]);
        assert_eq!(c.packet("2", &mut me, &mut access, &mut reply), Ok(()));
        // Disconnect puts it back in the lobby; events are then refused.
        assert_eq!(c.packet("41", &mut me, &mut access, &mut reply), Ok(()));
        assert!(me.in_lobby());
        assert_eq!(hub.members("main"), 1);
        assert_eq!(
            c.packet("42[\"x\"]", &mut me, &mut access, &mut reply),
            Err(End::SioBadPacket(SioError::BadNamespace))
        );
        assert_eq!(
            c.packet("1", &mut me, &mut access, &mut reply),
            Err(End::SioClose)
        );
        assert_eq!(
            replies,
            ["40{\"sid\":\"abc\"}", "40{\"sid\":\"abc\"}", "437[]", "3"]
        );
    }
}
