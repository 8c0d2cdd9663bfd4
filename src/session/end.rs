//! How a session ended: one variant per cause, and one table that gives each its close code,
//! its metric and log label, the reason sent in the Close frame, and who caused it.

use super::writer::CtrlFull;
use super::{Session, SessionCtx, Stats};
use crate::auth::Access;
use crate::hub::Signal;
use crate::log::{Level, Secs};
use crate::metrics::Family;
use crate::sio::SioError;
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use std::time::Instant;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent Close with this code (1005 when it sent none). Not an error.
    ClientClose(u16),
    /// The connection ended without a Close frame.
    Eof,
    /// A read or write failed (reset, broken pipe).
    IoError,
    /// No frame or Pong within `pong_timeout` after a Ping: 1008.
    PongTimeout,
    /// A message over `max_message_bytes`: 1009.
    TooBig,
    /// A frame that breaks RFC 6455: 1002.
    ProtocolError,
    /// A text message that is not UTF-8: 1007.
    InvalidUtf8,
    /// Control frames piled up past [`super::CTRL_CAP`]: 1008.
    ControlFlood,
    /// The outbox overflowed: 1008.
    SlowConsumer,
    /// More than `--max-messages-per-second`: 1008.
    RateLimited,
    /// Server shutdown: 1001.
    GoingAway,
    /// The Socket.IO client sent Engine.IO close (`1`): 1000.
    SioClose,
    /// A malformed Engine.IO / Socket.IO packet: 1008.
    SioBadPacket(SioError),
    /// Socket.IO binary events and attachments are not supported: 1003.
    SioBinary,
    /// A second poll (GET) came while one was held, as the reference refuses it: 1008.
    PollOverlap,
    /// A WebSocket meant to take over a polling session sent something other than the
    /// probe and the upgrade, its session was gone, or it did not finish in time: 1008.
    UpgradeFailed,
    /// The session's token reached its `exp`: 1008 (the client reconnects with a new one).
    TokenExpired,
    /// A read-only token's session tried to publish: 1008, and nothing of it was delivered.
    PublishForbidden,
    /// The client resumed this session on another connection (it looked alive, half-open
    /// after a cut): 1008, and the new connection keeps the session.
    Replaced,
    /// Messages of the room's shared order never reached this instance (its Redis
    /// subscription was lost, or Redis started the room anew): 1012, so that the client
    /// reconnects and resumes (or learns that it cannot).
    Resync,
}

/// One row of the table: what an [`End`] means on the wire, in metrics and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    /// The close code we send; `None` when the client closed or vanished.
    code: Option<u16>,
    /// Stable label for logs and metrics.
    label: &'static str,
    /// The Close frame's reason text.
    reason: &'static str,
    /// The client caused it: logged as WARN rather than INFO.
    client_fault: bool,
}

const fn row(code: u16, label: &'static str, reason: &'static str, fault: bool) -> Row {
    Row {
        code: if code == 0 { None } else { Some(code) },
        label,
        reason,
        client_fault: fault,
    }
}

impl End {
    /// The table. Codes: RFC 6455 section 7.4.1.
    fn row(self) -> Row {
        match self {
            End::ClientClose(_) => row(0, "client_close", "", false),
            End::Eof => row(0, "eof", "", false),
            End::IoError => row(0, "io_error", "", false),
            End::PongTimeout => row(1008, "pong_timeout", "pong timeout", true),
            End::TooBig => row(1009, "message_too_big", "message too big", true),
            End::ProtocolError => row(1002, "protocol_error", "protocol error", true),
            End::InvalidUtf8 => row(1007, "invalid_utf8", "invalid utf-8", true),
            End::ControlFlood => row(1008, "control_flood", "control frame flood", true),
            End::SlowConsumer => row(1008, "slow_consumer", "slow consumer", true),
            End::RateLimited => row(1008, "rate_limited", "rate limit", true),
            End::GoingAway => row(1001, "going_away", "server going away", false),
            End::SioClose => row(1000, "sio_close", "", false),
            End::SioBadPacket(e) => row(1008, e.as_str(), "bad socket.io packet", true),
            End::SioBinary => row(
                1003,
                "sio_binary_unsupported",
                "binary events not supported",
                true,
            ),
            End::PollOverlap => row(1008, "poll_overlap", "overlapping polls", true),
            End::UpgradeFailed => row(1008, "sio_upgrade_failed", "upgrade failed", true),
            End::TokenExpired => row(1008, "token_expired", "token expired", false),
            End::PublishForbidden => row(1008, "publish_forbidden", "read-only token", true),
            End::Replaced => row(1008, "replaced", "session resumed elsewhere", false),
            End::Resync => row(1012, "resync", "missed messages: reconnect", false),
        }
    }

    /// The close code we send (None when the client closed or vanished).
    pub fn code(self) -> Option<u16> {
        self.row().code
    }

    /// The code for the close log line: ours, the client's, or 1006 (no Close at all).
    pub fn logged_code(self) -> u16 {
        match self {
            End::ClientClose(c) => c,
            e => e.code().unwrap_or(1006),
        }
    }

    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        self.row().label
    }

    /// The reason text of our Close frame.
    pub fn reason_text(self) -> &'static str {
        self.row().reason
    }

    /// Whether the client caused it (logged as WARN) rather than a normal end.
    pub fn is_client_fault(self) -> bool {
        self.row().client_fault
    }
}

impl End {
    /// The end an outbox signal means, if any: an eviction or the shutdown.
    pub fn from_signal(s: Signal) -> Option<End> {
        match s {
            Signal::Frames => None,
            Signal::Evicted => Some(End::SlowConsumer),
            Signal::GoingAway => Some(End::GoingAway),
            Signal::Replaced => Some(End::Replaced),
            Signal::Resync => Some(End::Resync),
        }
    }
}

/// The end a tungstenite read error means.
pub(super) fn classify(e: &WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::TooBig,
        WsError::Capacity(_) => End::ProtocolError,
        WsError::Utf8(_) => End::InvalidUtf8,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Eof,
        WsError::Protocol(_) => End::ProtocolError,
        WsError::Io(e) if e.get_ref().is_some_and(|e| e.is::<CtrlFull>()) => End::ControlFlood,
        WsError::WriteBufferFull(_) => End::ControlFlood,
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Eof,
        _ => End::IoError,
    }
}

/// Counts a session's end by reason and writes its close line (WARN when the client caused
/// it): one format for both transports. `tcp` says how the connection ended (`fin`, `reset`),
/// or `-` for a polling session, which has no one connection.
pub fn log_close(
    ctx: &SessionCtx,
    who: &Session<'_>,
    opened: Instant,
    end: End,
    stats: &Stats,
    access: &Access,
) {
    ctx.metrics.count(Family::Closed, end.as_str());
    let level = if end.is_client_fault() {
        Level::Warn
    } else {
        Level::Info
    };
    let (transport, tcp) = match (stats.polling, stats.reset) {
        (true, _) => ("polling", "-"),
        (false, true) => ("websocket", "reset"),
        (false, false) => ("websocket", "fin"),
    };
    crate::log_at!(
        level,
        "close",
        conn = who.peer.conn,
        client = who.peer.client,
        room = who.room,
        user = access.user(),
        duration = Secs(opened.elapsed()),
        code = end.logged_code(),
        reason = end.as_str(),
        msgs_in = stats.msgs_in,
        frames_out = stats.frames_out,
        transport = transport,
        tcp = tcp
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let all = [
            End::ClientClose(1000),
            End::Eof,
            End::IoError,
            End::PongTimeout,
            End::TooBig,
            End::ProtocolError,
            End::InvalidUtf8,
            End::ControlFlood,
            End::SlowConsumer,
            End::RateLimited,
            End::GoingAway,
            End::SioClose,
            End::SioBadPacket(SioError::BadJson),
            End::SioBinary,
            End::PollOverlap,
            End::UpgradeFailed,
            End::TokenExpired,
            End::PublishForbidden,
            End::Replaced,
            End::Resync,
        ];
        let mut labels: Vec<_> = all.iter().map(|e| e.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), all.len(), "labels are distinct");
        for e in all {
            // Every code we send has a reason, except the normal 1000; every fault sends one.
            if let Some(c) = e.code() {
                assert!((1000..=1012).contains(&c), "{e:?}");
                assert_eq!(e.reason_text().is_empty(), c == 1000, "{e:?}");
            }
            if e.is_client_fault() {
                assert!(e.code().is_some(), "{e:?}");
            }
        }
        assert_eq!(End::ClientClose(4000).logged_code(), 4000);
        assert_eq!(End::Eof.logged_code(), 1006);
        assert_eq!(End::SlowConsumer.logged_code(), 1008);
        assert_eq!(
            End::SioBadPacket(SioError::BadJson).as_str(),
            "sio_bad_json"
        );
    }
}
