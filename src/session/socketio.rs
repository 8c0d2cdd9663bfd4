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

use super::resume::{Held, Recovery};
use super::{End, SessionCtx};
use crate::auth::{Access, Auth};
use crate::frame::Frame;
use crate::hub::{Hub, Membership, Payload, Protocol};
use crate::metrics::{Family, Metrics};
use crate::sio::{self, Packet, SioError};
use std::sync::Arc;

/// An answer to one client.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A packet, written at the next frame boundary (on a WebSocket through tungstenite).
    Text(String),
    /// A whole frame that keeps its place among the frames queued after it: the events of
    /// a recovery and the CONNECT answer that follows them.
    Frame(Frame),
}

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
    /// Connection state recovery, when history is on.
    pub(super) recovery: Option<&'a Recovery>,
}

impl<'a> Client<'a> {
    /// The client `sid` of a session with context `ctx`.
    pub(super) fn of(
        ctx: &'a SessionCtx,
        sid: &'a str,
        room: &'a str,
        peer: &'a super::Peer,
    ) -> Self {
        Client {
            sid,
            room,
            hub: &ctx.hub,
            auth: ctx.auth.as_ref(),
            metrics: &ctx.metrics,
            peer,
            recovery: ctx.recovery.as_ref(),
        }
    }

    /// Handles one text packet. `reply` queues an answer to this client (on a WebSocket it
    /// lands at a frame boundary, through tungstenite) and says whether it was taken; a full
    /// control buffer is not this packet's error, the caller sees it on its own.
    pub(super) fn packet(
        &self,
        text: &str,
        membership: &mut Membership,
        access: &mut Access,
        held: &mut Option<Held>,
        reply: &mut impl FnMut(Reply) -> bool,
    ) -> Result<(), End> {
        match sio::parse(text) {
            Ok(Packet::Pong | Packet::Noop | Packet::Ack) => {}
            Ok(Packet::Ping) => {
                let _ = reply(Reply::Text(sio::PONG.into()));
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
                            let _ = reply(Reply::Text(sio::connect_refused(&denied.message())));
                            return Ok(());
                        }
                    }
                }
                if !membership.in_lobby() {
                    // Connected already: the same answer again.
                    let _ = reply(Reply::Text(match held {
                        Some(h) => sio::connect_ok_pid(h.sid(), h.pid()),
                        None => sio::connect_ok(self.sid),
                    }));
                    return Ok(());
                }
                match self.recovery {
                    Some(r) => r.connect(self, data, membership, held, reply),
                    None => {
                        let _ = reply(Reply::Text(sio::connect_ok(self.sid)));
                        *membership = self.hub.join(self.room, Protocol::SocketIo);
                    }
                }
                // socket.broadcast.emit('hi'): everyone in the room but the newcomer.
                let hi = Payload::SocketIo {
                    args: sio::HI_ARGS,
                    chat: None,
                };
                membership.publish_payload(hi, true);
            }
            Ok(Packet::Connect { ns, .. }) => {
                let _ = reply(Reply::Text(sio::connect_error(ns)));
            }
            Ok(Packet::Disconnect { ns: "/" }) => {
                *membership = self.hub.join_lobby(Protocol::SocketIo);
                // `socket.disconnect()`: on purpose, so not resumable.
                if let (Some(r), Some(h)) = (self.recovery, held.take()) {
                    r.ended(&h, true);
                }
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
                    let _ = reply(Reply::Text(sio::ack(id)));
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
    use std::collections::VecDeque;
    use std::task::{Context, Waker};

    fn peer(conn: u64) -> super::super::Peer {
        super::super::Peer {
            conn,
            client: format!("127.0.0.1:{conn}").parse().unwrap(),
        }
    }

    /// A client of room `main` with no token checker.
    fn client<'a>(
        hub: &'a Arc<Hub>,
        metrics: &'a Metrics,
        peer: &'a super::super::Peer,
        sid: &'a str,
        recovery: Option<&'a Recovery>,
    ) -> Client<'a> {
        Client {
            sid,
            room: "main",
            hub,
            auth: None,
            metrics,
            peer,
            recovery,
        }
    }

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
        let peer = peer(1);
        let c = client(&hub, &metrics, &peer, "abc", None);
        let mut access = Access::open();
        let mut held = None;
        let mut replies = Vec::new();
        let mut reply = |m: Reply| {
            replies.push(match m {
                Reply::Text(t) => t,
                Reply::Frame(f) => format!("frame {f:?}"),
            });
            true
        };
        assert_eq!(
            c.packet("40", &mut me, &mut access, &mut held, &mut reply),
            Ok(())
        );
        assert!(!me.in_lobby());
        assert_eq!(hub.members("main"), 2);
        assert_eq!(drain(&other), ["42[\"hi\"]"]);
        assert!(drain(&me).is_empty());
        // A second connect does not greet again.
        assert_eq!(
            c.packet("40", &mut me, &mut access, &mut held, &mut reply),
            Ok(())
        );
        assert!(drain(&other).is_empty());
        // An event reaches everyone, the sender too, and its ack is answered.
        let ev = "427[\"chat message\",\"hey\"]";
        assert_eq!(
            c.packet(ev, &mut me, &mut access, &mut held, &mut reply),
            Ok(())
        );
        assert_eq!(drain(&other), ["42[\"chat message\",\"hey\"]"]);
        assert_eq!(drain(&me), ["42[\"chat message\",\"hey\"]"]);
        assert_eq!(
            c.packet("2", &mut me, &mut access, &mut held, &mut reply),
            Ok(())
        );
        // Disconnect puts it back in the lobby; events are then refused.
        assert_eq!(
            c.packet("41", &mut me, &mut access, &mut held, &mut reply),
            Ok(())
        );
        assert!(me.in_lobby());
        assert_eq!(hub.members("main"), 1);
        assert_eq!(
            c.packet("42[\"x\"]", &mut me, &mut access, &mut held, &mut reply),
            Err(End::SioBadPacket(SioError::BadNamespace))
        );
        assert_eq!(
            c.packet("1", &mut me, &mut access, &mut held, &mut reply),
            Err(End::SioClose)
        );
        assert_eq!(
            replies,
            ["40{\"sid\":\"abc\"}", "40{\"sid\":\"abc\"}", "437[]", "3"]
        );
    }

    /// A client of `hub` with recovery on, and what it was answered.
    struct Conn {
        member: Membership,
        held: Option<Held>,
        access: Access,
        replies: Vec<String>,
    }

    fn connect(
        hub: &Arc<Hub>,
        recovery: &Recovery,
        metrics: &Metrics,
        sid: &str,
        packet: &str,
    ) -> Conn {
        let peer = peer(1);
        let c = client(hub, metrics, &peer, sid, Some(recovery));
        let mut conn = Conn {
            member: hub.join_lobby(Protocol::SocketIo),
            held: None,
            access: Access::open(),
            replies: Vec::new(),
        };
        let mut replies = Vec::new();
        let mut reply = |m: Reply| {
            replies.push(match m {
                Reply::Text(t) => t,
                // A whole frame: its text (frames here are under 126 bytes).
                Reply::Frame(f) => String::from_utf8(f[2..].to_vec()).unwrap(),
            });
            true
        };
        let r = c.packet(
            packet,
            &mut conn.member,
            &mut conn.access,
            &mut conn.held,
            &mut reply,
        );
        assert_eq!(r, Ok(()));
        conn.replies = replies;
        conn
    }

    /// A first connect as `sidA`, and the pid it was given.
    fn fresh(hub: &Arc<Hub>, rec: &Recovery, metrics: &Metrics) -> (Conn, String) {
        let a = connect(hub, rec, metrics, "sidA", "40");
        let pid = pid_of(&a.replies[0]);
        (a, pid)
    }

    fn pid_of(connect_reply: &str) -> String {
        let json = connect_reply.strip_prefix("40").unwrap();
        crate::json::members(json)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "pid")
            .and_then(|(_, v)| crate::json::as_string(v))
            .unwrap()
    }

    fn say(hub: &Arc<Hub>, from: &Membership, text: &str) {
        let args = format!("[\"chat message\",\"{text}\"]");
        let chat = Some(text);
        let _ = hub;
        from.publish_payload(Payload::SocketIo { args: &args, chat }, false);
    }

    fn history_hub() -> (Arc<Hub>, Recovery) {
        let cfg = crate::config::HistoryConfig::default();
        (Hub::with_history(64, cfg), Recovery::new(cfg.window, None))
    }

    #[test]
    fn a_cut_client_gets_exactly_the_missed_events_then_the_same_ids() {
        let (hub, rec) = history_hub();
        let metrics = Metrics::default();
        let other = hub.join("main", Protocol::Raw);
        let (a, pid) = fresh(&hub, &rec, &metrics);
        assert_eq!(
            a.replies,
            [format!("40{{\"sid\":\"sidA\",\"pid\":\"{pid}\"}}")]
        );
        assert_eq!(pid.len(), 22);
        say(&hub, &other, "one");
        let got = drain(&a.member);
        // `hi` from its own connect went to the others only; `one` carries its offset.
        assert_eq!(got.len(), 1);
        let offset = got[0].rsplit('"').nth(1).unwrap().to_owned();
        assert!(
            got[0].starts_with("42[\"chat message\",\"one\",\""),
            "{got:?}"
        );
        // The connection drops; two more events come meanwhile.
        rec.ended(a.held.as_ref().unwrap(), false);
        drop(a);
        say(&hub, &other, "two");
        say(&hub, &other, "three");
        let back = format!("40{{\"pid\":\"{pid}\",\"offset\":\"{offset}\"}}");
        let b = connect(&hub, &rec, &metrics, "sidB", &back);
        assert_eq!(b.replies.len(), 3, "{:?}", b.replies);
        assert!(b.replies[0].starts_with("42[\"chat message\",\"two\","));
        assert!(b.replies[1].starts_with("42[\"chat message\",\"three\","));
        // The same public id and pid: the stock client sets `socket.recovered`.
        assert_eq!(
            b.replies[2],
            format!("40{{\"sid\":\"sidA\",\"pid\":\"{pid}\"}}")
        );
        assert_eq!(metrics.get(Family::Recovery, "recovered"), 1);
        assert_eq!(
            metrics.replayed.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        say(&hub, &other, "four");
        assert_eq!(drain(&b.member).len(), 1, "live after the replay");
    }

    #[test]
    fn a_client_that_never_got_an_event_and_a_quiet_one_recover_too() {
        let (hub, rec) = history_hub();
        let metrics = Metrics::default();
        let other = hub.join("main", Protocol::Raw);
        // Zero events: `pid` but no `offset`. It resumes from where it joined.
        let (a, pid) = fresh(&hub, &rec, &metrics);
        rec.ended(a.held.as_ref().unwrap(), false);
        drop(a);
        say(&hub, &other, "missed");
        let b = connect(
            &hub,
            &rec,
            &metrics,
            "sidB",
            &format!("40{{\"pid\":\"{pid}\"}}"),
        );
        assert_eq!(b.replies.len(), 2, "{:?}", b.replies);
        assert!(b.replies[0].contains("\"missed\""));
        assert!(b.replies[1].contains(&pid));
        // Quiet: its offset is the room's newest; nothing to replay, and still recovered.
        let offset = b.replies[0].rsplit('"').nth(1).unwrap().to_owned();
        rec.ended(b.held.as_ref().unwrap(), false);
        drop(b);
        let back = format!("40{{\"pid\":\"{pid}\",\"offset\":\"{offset}\"}}");
        let c = connect(&hub, &rec, &metrics, "sidC", &back);
        assert_eq!(
            c.replies,
            [format!("40{{\"sid\":\"sidA\",\"pid\":\"{pid}\"}}")]
        );
        assert_eq!(metrics.get(Family::Recovery, "recovered"), 2);
    }

    #[test]
    fn a_half_open_connection_is_taken_over_and_its_late_end_changes_nothing() {
        let (hub, rec) = history_hub();
        let metrics = Metrics::default();
        let (a, pid) = fresh(&hub, &rec, &metrics);
        // The client is back while `a` still looks alive.
        let b = connect(
            &hub,
            &rec,
            &metrics,
            "sidB",
            &format!("40{{\"pid\":\"{pid}\"}}"),
        );
        assert!(b.replies.last().unwrap().contains(&pid));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(
            a.member.member().poll_outbox(&mut cx, None),
            std::task::Poll::Ready(crate::hub::Signal::Replaced)
        );
        // `a` ends late: `b` still holds the session, so a later recovery of `b` works.
        rec.ended(a.held.as_ref().unwrap(), false);
        drop(a);
        rec.ended(b.held.as_ref().unwrap(), false);
        drop(b);
        let c = connect(
            &hub,
            &rec,
            &metrics,
            "sidC",
            &format!("40{{\"pid\":\"{pid}\"}}"),
        );
        assert!(c
            .replies
            .last()
            .unwrap()
            .contains(&format!("\"sid\":\"sidA\",\"pid\":\"{pid}\"")));
        assert_eq!(metrics.get(Family::Recovery, "recovered"), 2);
    }

    #[test]
    fn bad_or_unknown_ids_and_offsets_get_a_fresh_session() {
        let (hub, rec) = history_hub();
        let metrics = Metrics::default();
        let (a, pid) = fresh(&hub, &rec, &metrics);
        rec.ended(a.held.as_ref().unwrap(), false);
        let fresh = |r: &Conn| {
            let p = pid_of(&r.replies[0]);
            r.replies.len() == 1 && p != pid && r.replies[0].contains("\"sid\":\"sidX\"")
        };
        for packet in [
            "40{\"pid\":\"nope\"}".to_owned(),
            format!("40{{\"pid\":\"{pid}\",\"offset\":\"zzz\"}}"),
            format!("40{{\"pid\":\"{pid}\",\"offset\":\"1-1\"}}"),
            format!("40{{\"pid\":\"{pid}\",\"offset\":\"{}\"}}", "9".repeat(200)),
            "40{\"pid\":{\"x\":1},\"offset\":3}".to_owned(),
        ] {
            let r = connect(&hub, &rec, &metrics, "sidX", &packet);
            assert!(fresh(&r), "{packet}: {:?}", r.replies);
        }
        assert_eq!(metrics.get(Family::Recovery, "recovered"), 0);
        assert_eq!(metrics.get(Family::Recovery, "unknown"), 3);
        assert_eq!(metrics.get(Family::Recovery, "epoch"), 1);
        // A client that leaves on purpose (`41`, `socket.disconnect()`) is not resumable.
        let mut b = connect(&hub, &rec, &metrics, "sidB", "40");
        let pid_b = pid_of(&b.replies[0]);
        let peer = peer(2);
        let c = client(&hub, &metrics, &peer, "sidB", Some(&rec));
        let mut sink = |_: Reply| true;
        assert_eq!(
            c.packet("41", &mut b.member, &mut b.access, &mut b.held, &mut sink),
            Ok(())
        );
        assert!(b.held.is_none());
        let again = connect(
            &hub,
            &rec,
            &metrics,
            "sidX",
            &format!("40{{\"pid\":\"{pid_b}\"}}"),
        );
        assert!(!again.replies[0].contains(&pid_b));
    }
}
