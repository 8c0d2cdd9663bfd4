//! The backplane's envelope: the binary-safe `PUBLISH` payload that carries one message
//! between instances. Pure.
//!
//! ```text
//! [version = 1][kind: t | b | s | p][node id: 16 bytes][data]                 (PUBLISH)
//! [version = 2][kind: t | b | s][node id: 16 bytes][except: u64 BE][data]    (the shared order)
//! <offset> SP [version 2 envelope]                   (what the publish script PUBLISHes)
//! ```
//! Kind `t` is plain text, `b` plain binary, `s` Socket.IO event arguments (the JSON array
//! `["name", ...]`), `p` a peer announcement (the address where the publishing instance takes
//! forwarded polling requests, on the channel `{prefix}:!peers`, which no room can be). The
//! node id is random per process, so every instance can skip its own messages.

use crate::frame;
use crate::history::{Offset, MAX_OFFSET_LEN};
use crate::hub::Payload;

/// Envelope format version; messages of another version are counted as invalid and skipped.
pub const VERSION: u8 = 1;
/// The version of a message in a room's shared order: it carries the member that must not
/// get it (`socket.broadcast.emit`; 0 for none). Member ids are random per process, so the
/// id names that member on every instance, and a session recovered elsewhere skips it too.
pub const VERSION_ORDERED: u8 = 2;
/// Bytes before the data of a version 2 envelope.
pub const ORDERED_HEADER_LEN: usize = HEADER_LEN + 8;
/// Bytes of the random per-process node id.
pub const NODE_ID_LEN: usize = 16;
/// Bytes before the data: version, kind, node id.
pub const HEADER_LEN: usize = 2 + NODE_ID_LEN;
const KIND_TEXT: u8 = b't';
const KIND_BINARY: u8 = b'b';
const KIND_SOCKETIO: u8 = b's';
/// The kind of a peer announcement (see [`Body::Peer`]).
pub const KIND_PEER: u8 = b'p';

/// An envelope read back from a `PUBLISH` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The publishing process.
    pub node: &'a [u8; NODE_ID_LEN],
    /// The member that must not get it (version 2 only).
    pub except: Option<u64>,
    /// What was published.
    pub body: Body<'a>,
}

/// The message kinds an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// A plain WebSocket text message.
    Text(&'a str),
    /// A plain WebSocket binary message.
    Binary(&'a [u8]),
    /// A Socket.IO event's arguments, `["name", ...]`.
    SocketIo(&'a str),
    /// An instance's announcement of the address (`host:port`) it takes forwarded requests on.
    Peer(&'a str),
}

/// Why a payload on our channels is not an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Shorter than [`HEADER_LEN`].
    Short(usize),
    /// Another format version.
    Version(u8),
    /// An unknown kind byte.
    Kind(u8),
    /// Text or Socket.IO arguments that are not UTF-8.
    NotUtf8,
    /// Socket.IO arguments that are not a JSON array.
    NotArgs,
}

/// The kind byte and data of a payload.
pub fn parts<'a>(payload: &Payload<'a>) -> (u8, &'a [u8]) {
    match *payload {
        Payload::Raw {
            kind: frame::Kind::Text,
            data,
        } => (KIND_TEXT, data),
        Payload::Raw {
            kind: frame::Kind::Binary,
            data,
        } => (KIND_BINARY, data),
        Payload::SocketIo { args, .. } => (KIND_SOCKETIO, args.as_bytes()),
    }
}

/// The bytes before the data: version, kind, node id. The one layout: [`encode`] and the
/// relay (which writes the envelope straight into its queue) both start with it.
pub fn header(node: &[u8; NODE_ID_LEN], kind: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = VERSION;
    h[1] = kind;
    h[2..].copy_from_slice(node);
    h
}

/// The bytes before the data of a version 2 envelope.
pub fn ordered_header(
    node: &[u8; NODE_ID_LEN],
    kind: u8,
    except: Option<u64>,
) -> [u8; ORDERED_HEADER_LEN] {
    let mut h = [0u8; ORDERED_HEADER_LEN];
    h[..HEADER_LEN].copy_from_slice(&header(node, kind));
    h[0] = VERSION_ORDERED;
    h[HEADER_LEN..].copy_from_slice(&except.unwrap_or(0).to_be_bytes());
    h
}

/// Splits what the publish script sends, `<offset> <envelope>`, pure.
pub fn split_ordered(b: &[u8]) -> Option<(Offset, &[u8])> {
    let sp = b.iter().take(MAX_OFFSET_LEN + 1).position(|&c| c == b' ')?;
    let offset = std::str::from_utf8(&b[..sp]).ok()?.parse().ok()?;
    Some((offset, &b[sp + 1..]))
}

/// Encodes an envelope.
pub fn encode(node: &[u8; NODE_ID_LEN], payload: &Payload<'_>) -> Vec<u8> {
    let (kind, data) = parts(payload);
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header(node, kind));
    out.extend_from_slice(data);
    out
}

/// Decodes an envelope, pure.
pub fn decode(b: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if b.len() < HEADER_LEN {
        return Err(EnvelopeError::Short(b.len()));
    }
    let (except, data) = match b[0] {
        VERSION => (None, &b[HEADER_LEN..]),
        VERSION_ORDERED if b.len() >= ORDERED_HEADER_LEN => {
            let e = u64::from_be_bytes(b[HEADER_LEN..ORDERED_HEADER_LEN].try_into().expect("8"));
            ((e != 0).then_some(e), &b[ORDERED_HEADER_LEN..])
        }
        VERSION_ORDERED => return Err(EnvelopeError::Short(b.len())),
        v => return Err(EnvelopeError::Version(v)),
    };
    let node: &[u8; NODE_ID_LEN] = b[2..HEADER_LEN].try_into().expect("length checked");
    let text = || std::str::from_utf8(data).map_err(|_| EnvelopeError::NotUtf8);
    let body = match b[1] {
        KIND_TEXT => Body::Text(text()?),
        KIND_BINARY => Body::Binary(data),
        KIND_SOCKETIO => {
            let args = text()?;
            if !(args.starts_with('[') && args.ends_with(']')) {
                return Err(EnvelopeError::NotArgs);
            }
            Body::SocketIo(args)
        }
        KIND_PEER if b[0] == VERSION => Body::Peer(text()?),
        k => return Err(EnvelopeError::Kind(k)),
    };
    Ok(Envelope { node, except, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: [u8; NODE_ID_LEN] = *b"0123456789abcdef";

    #[test]
    fn envelopes_round_trip_byte_by_byte() {
        let text = Payload::Raw {
            kind: frame::Kind::Text,
            data: "hé".as_bytes(),
        };
        let e = encode(&NODE, &text);
        assert_eq!(e, b"\x01t0123456789abcdefh\xc3\xa9");
        assert_eq!(
            decode(&e),
            Ok(Envelope {
                node: &NODE,
                except: None,
                body: Body::Text("hé")
            })
        );
        let bin = Payload::Raw {
            kind: frame::Kind::Binary,
            data: b"\0\xff\r\n",
        };
        let e = encode(&NODE, &bin);
        assert_eq!(&e[..2], b"\x01b");
        assert_eq!(decode(&e).unwrap().body, Body::Binary(b"\0\xff\r\n"));
        let sio = Payload::SocketIo {
            args: r#"["chat message","x"]"#,
            chat: Some("x"),
        };
        let e = encode(&NODE, &sio);
        assert_eq!(&e[..2], b"\x01s");
        assert_eq!(
            decode(&e).unwrap().body,
            Body::SocketIo(r#"["chat message","x"]"#)
        );
        // Empty data is fine.
        let empty = encode(
            &NODE,
            &Payload::Raw {
                kind: frame::Kind::Text,
                data: b"",
            },
        );
        assert_eq!(empty.len(), HEADER_LEN);
        assert_eq!(decode(&empty).unwrap().body, Body::Text(""));
    }

    #[test]
    fn ordered_messages_carry_their_offset_and_except() {
        let mut env = ordered_header(&NODE, KIND_SOCKETIO, Some(7)).to_vec();
        env.extend_from_slice(br#"["hi"]"#);
        let mut wire = b"ab-12 ".to_vec();
        wire.extend_from_slice(&env);
        let (offset, rest) = split_ordered(&wire).unwrap();
        assert_eq!(
            offset,
            Offset {
                epoch: 0xab,
                seq: 12
            }
        );
        let e = decode(rest).unwrap();
        assert_eq!((e.except, e.body), (Some(7), Body::SocketIo(r#"["hi"]"#)));
        let none = ordered_header(&NODE, KIND_TEXT, None);
        assert_eq!(decode(&none).unwrap().except, None);
        for bad in [&b"ab-12"[..], b"x-1 \x02", b" \x02", b"\x01t0123"] {
            assert_eq!(split_ordered(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_envelopes_are_refused() {
        assert_eq!(decode(b"\x01t0123"), Err(EnvelopeError::Short(6)));
        assert_eq!(
            decode(b"\x03t0123456789abcdefhi"),
            Err(EnvelopeError::Version(3))
        );
        assert_eq!(
            decode(b"\x02t0123456789abcdefhi"),
            Err(EnvelopeError::Short(20))
        );
        let mut peer = ordered_header(&NODE, KIND_PEER, None).to_vec();
        peer.extend_from_slice(b"1.2.3.4:5");
        assert_eq!(decode(&peer), Err(EnvelopeError::Kind(b'p')));
        assert_eq!(
            decode(b"\x01x0123456789abcdefhi"),
            Err(EnvelopeError::Kind(b'x'))
        );
        assert_eq!(
            decode(b"\x01t0123456789abcdef\xff"),
            Err(EnvelopeError::NotUtf8)
        );
        assert_eq!(
            decode(b"\x01s0123456789abcdef{}"),
            Err(EnvelopeError::NotArgs)
        );
    }
}
