//! Engine.IO v4 / Socket.IO v5 text framing over the websocket-only transport. Pure: packets in
//! and out as `&str`, no I/O. One WebSocket text frame carries exactly one Engine.IO packet.
//!
//! The client side of a session, as [`crate::client`] drives it:
//! ```text
//! GET <path>/socket.io/?EIO=4&transport=websocket[&room=..]   (the URL's query is kept)
//! <- 0{"sid":..,"pingInterval":25000,"pingTimeout":20000,..}   Engine.IO open
//! -> 40                                                        Socket.IO connect, namespace "/"
//! <- 40{"sid":..}                                              connected (44{..} = refused)
//! <- 2   -> 3                                                  ping from the server, our pong
//! -> 42["chat message","<payload>"]   <- 42["chat message","<payload>"]
//! ```

use std::borrow::Cow;
use wsgate::json;

/// The Engine.IO path and query that select protocol v4 over a bare WebSocket.
pub(crate) const ENGINE_PATH: &str = "socket.io/?EIO=4&transport=websocket";
/// The same on the polling transport.
pub(crate) const POLLING_PATH: &str = "socket.io/?EIO=4&transport=polling";
/// Socket.IO CONNECT to the default namespace, sent once after the open packet.
pub(crate) const CONNECT: &str = "40";
/// Engine.IO PONG, the answer to each server PING (`2`).
pub(crate) const PONG: &str = "3";
/// The event name the tutorial chat (and the load tool) uses.
pub(crate) const CHAT_EVENT: &str = "chat message";

/// One packet from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Packet<'a> {
    /// Engine.IO `0{...}`: the session is open; carries the ping schedule.
    Open {
        /// `pingInterval` in milliseconds, 0 if absent.
        ping_interval_ms: u64,
    },
    /// Engine.IO `1`: the server closes the session.
    Close,
    /// Engine.IO `2`: answer with [`PONG`].
    Ping,
    /// Engine.IO `6`, or a `3` we never asked for: nothing to do.
    Noop,
    /// Socket.IO `40{...}`: connected to the namespace.
    Connected,
    /// Socket.IO `41`: disconnected from the namespace.
    Disconnected,
    /// Socket.IO `44{...}`: the namespace refused us; the JSON is the reason.
    ConnectError(&'a str),
    /// Socket.IO `42[name, arg, ...]`: an event; `arg` is the first argument when it is a string.
    Event {
        /// The event name, e.g. [`CHAT_EVENT`] or `hi`.
        name: Cow<'a, str>,
        /// The first argument, if it is a JSON string.
        arg: Option<Cow<'a, str>>,
    },
}

/// Why a server packet could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// The frame was empty.
    Empty,
    /// The first byte is not an Engine.IO packet type we know; carries it.
    UnknownEngineType(u8),
    /// A Socket.IO packet type (after `4`) we do not handle; carries it.
    UnknownSocketType(u8),
    /// An event's JSON array is malformed at this byte offset.
    BadEvent(usize),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Empty => write!(f, "empty socket.io packet"),
            Error::UnknownEngineType(b) => {
                write!(f, "unknown engine.io packet type {:?}", *b as char)
            }
            Error::UnknownSocketType(b) => {
                write!(f, "unknown socket.io packet type {:?}", *b as char)
            }
            Error::BadEvent(at) => write!(f, "malformed socket.io event at byte {at}"),
        }
    }
}

/// `42["chat message","<payload>"]`, with `payload` escaped as a JSON string.
pub(crate) fn chat_event(payload: &str) -> String {
    let mut out = String::with_capacity(payload.len() + 20);
    out.push_str("42[\"");
    out.push_str(CHAT_EVENT);
    out.push_str("\",");
    push_json_string(&mut out, payload);
    out.push(']');
    out
}

/// Reads one server packet.
pub(crate) fn parse(text: &str) -> Result<Packet<'_>, Error> {
    let bytes = text.as_bytes();
    match bytes.first() {
        None => Err(Error::Empty),
        Some(b'0') => Ok(Packet::Open {
            ping_interval_ms: json_number_field(&text[1..], "pingInterval").unwrap_or(0),
        }),
        Some(b'1') => Ok(Packet::Close),
        Some(b'2') => Ok(Packet::Ping),
        Some(b'3') | Some(b'6') => Ok(Packet::Noop),
        Some(b'4') => parse_socket(text),
        Some(&b) => Err(Error::UnknownEngineType(b)),
    }
}

/// A Socket.IO packet inside an Engine.IO MESSAGE (`4`).
fn parse_socket(text: &str) -> Result<Packet<'_>, Error> {
    match text.as_bytes().get(1) {
        Some(b'0') => Ok(Packet::Connected),
        Some(b'1') => Ok(Packet::Disconnected),
        Some(b'4') => Ok(Packet::ConnectError(&text[2..])),
        Some(b'2') => parse_event(text, 2),
        Some(&b) => Err(Error::UnknownSocketType(b)),
        None => Err(Error::UnknownSocketType(b' ')),
    }
}

/// `[/namespace,][ackid][name, arg, ...]` starting at byte `at`.
fn parse_event(text: &str, mut at: usize) -> Result<Packet<'_>, Error> {
    let b = text.as_bytes();
    if b.get(at) == Some(&b'/') {
        at = text[at..]
            .find(',')
            .map(|i| at + i + 1)
            .ok_or(Error::BadEvent(at))?;
    }
    while b.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    if b.get(at) != Some(&b'[') {
        return Err(Error::BadEvent(at));
    }
    let (name, mut at) = json_string(text, at + 1)?;
    if b.get(at) == Some(&b']') {
        return Ok(Packet::Event { name, arg: None });
    }
    if b.get(at) != Some(&b',') {
        return Err(Error::BadEvent(at));
    }
    at += 1;
    let arg = if b.get(at) == Some(&b'"') {
        Some(json_string(text, at)?.0)
    } else {
        None
    };
    Ok(Packet::Event { name, arg })
}

/// The JSON string starting with `"` at byte `at`, and the offset just past its closing quote.
/// Borrows when there is nothing to unescape. The scanning and decoding are the gateway's own
/// ([`wsgate::json`]).
fn json_string(text: &str, at: usize) -> Result<(Cow<'_, str>, usize), Error> {
    let len = json::string_end(text.as_bytes().get(at..).unwrap_or_default())
        .map_err(|off| Error::BadEvent(at + off))?;
    let inner = &text[at + 1..at + len - 1];
    let s = if inner.contains('\\') {
        Cow::Owned(json::unescape(inner).ok_or(Error::BadEvent(at))?)
    } else {
        Cow::Borrowed(inner)
    };
    Ok((s, at + len))
}

/// Appends `s` as a quoted JSON string.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    let _ = write!(out, "\"{}\"", json::Escaped(s));
}

/// The unsigned integer value of `"key":` in a flat JSON object, if present.
fn json_number_field(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = json[json.find(&pat)? + pat.len()..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(name: &'a str, arg: Option<&'a str>) -> Packet<'a> {
        Packet::Event {
            name: Cow::Borrowed(name),
            arg: arg.map(Cow::Borrowed),
        }
    }

    #[test]
    fn reads_the_open_packet() {
        let open = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            parse(open),
            Ok(Packet::Open {
                ping_interval_ms: 25_000
            })
        );
        assert_eq!(
            parse("0{}"),
            Ok(Packet::Open {
                ping_interval_ms: 0
            })
        );
    }

    #[test]
    fn reads_control_packets() {
        let control = [
            ("1", Packet::Close),
            ("2", Packet::Ping),
            ("3", Packet::Noop),
            ("6", Packet::Noop),
        ];
        for (text, packet) in control {
            assert_eq!(parse(text), Ok(packet), "{text}");
        }
        assert_eq!(
            parse(r#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
            Ok(Packet::Connected)
        );
        assert_eq!(parse("41"), Ok(Packet::Disconnected));
        assert_eq!(
            parse(r#"44{"message":"Not authorized"}"#),
            Ok(Packet::ConnectError(r#"{"message":"Not authorized"}"#))
        );
        assert_eq!(parse(""), Err(Error::Empty));
        assert_eq!(parse("5"), Err(Error::UnknownEngineType(b'5')));
        assert_eq!(parse("43[]"), Err(Error::UnknownSocketType(b'3')));
    }

    #[test]
    fn reads_events() {
        assert_eq!(
            parse(r#"42["chat message","wl 0 1 2 3 xx"]"#),
            Ok(event("chat message", Some("wl 0 1 2 3 xx")))
        );
        assert_eq!(parse(r#"42["hi"]"#), Ok(event("hi", None)));
        assert_eq!(parse(r#"42["n",{"a":1}]"#), Ok(event("n", None)));
        assert_eq!(parse(r#"42/admin,7["n","x"]"#), Ok(event("n", Some("x"))));
        assert_eq!(parse(r#"4212["n","x"]"#), Ok(event("n", Some("x"))));
        assert_eq!(parse(r#"42"n""#), Err(Error::BadEvent(2)));
        assert_eq!(parse(r#"42["n"#), Err(Error::BadEvent(5)));
        assert_eq!(parse(r#"42["n" "x"]"#), Err(Error::BadEvent(6)));
    }

    #[test]
    fn unescapes_json_strings() {
        let p = parse(r#"42["chat message","a\"b\\c\/d\n\u00e9\ud83d\ude00"]"#).unwrap();
        assert_eq!(
            p,
            Packet::Event {
                name: "chat message".into(),
                arg: Some(Cow::Owned("a\"b\\c/d\né😀".into()))
            }
        );
        assert_eq!(parse(r#"42["x","\q"]"#), Err(Error::BadEvent(8)));
    }

    #[test]
    fn writes_chat_events_that_read_back() {
        assert_eq!(
            chat_event("wl 0 1 2 3 xxxx"),
            r#"42["chat message","wl 0 1 2 3 xxxx"]"#
        );
        for s in ["plain", "q\"uote", "back\\slash", "ctl\u{1}\n\t", "ünï"] {
            let framed = chat_event(s);
            assert_eq!(parse(&framed), Ok(event(CHAT_EVENT, Some(s))), "{framed}");
        }
        assert_eq!(chat_event("\u{1}"), "42[\"chat message\",\"\\u0001\"]");
    }
}
