//! Engine.IO v4 / Socket.IO v5 over the WebSocket transport: packet parsing and encoding.
//! Pure functions over `&str`; the session drives them.
//!
//! ```text
//! server: 0{"sid":..,"upgrades":[],"pingInterval":..,"pingTimeout":..,"maxPayload":..}
//! client: 40            server: 40{"sid":..}      (namespace "/" only; others get 44)
//! client: 42["chat message","hi"]   -> room, sender included (io.emit)
//! server: 2 (ping)      client: 3 (pong)
//! ```
//! Acks: an event with an ack id (`42<id>[...]`) is answered `43<id>[]` once published.
//! Binary events (`45`/`46`) are refused: the client is closed with 1003.
//! Packet data is checked as socket.io-parser checks it, and reserved event names
//! (`connect`, `disconnect`, ...) are refused: a stock client that receives one fails to
//! decode it and drops its connection, so relaying it would disconnect the whole room.

use crate::json;
use std::fmt::Write as _;

/// A client packet, borrowing from the frame's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO `1`: the client closes the transport.
    Close,
    /// Engine.IO `2`: a ping from the client (Engine.IO v3 style); answered with `3`.
    Ping,
    /// Engine.IO `3`: the answer to our ping.
    Pong,
    /// Engine.IO `6`.
    Noop,
    /// Socket.IO `0`: connect to a namespace; `data` is the client's `auth` object as sent
    /// (raw JSON), or empty.
    Connect { ns: &'a str, data: &'a str },
    /// Socket.IO `1`: leave a namespace.
    Disconnect { ns: &'a str },
    /// Socket.IO `2`: an event; `args` is the JSON array `["name", ...]`.
    Event {
        ns: &'a str,
        ack: Option<u64>,
        args: &'a str,
        name: &'a str,
    },
    /// Socket.IO `3`: an ack for the server (we never ask for one; ignored).
    Ack,
    /// Socket.IO `5`/`6`: binary event or ack (refused).
    Binary,
}

/// Why a packet was refused. Each closes the client with a logged reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioError {
    /// Empty frame or unknown Engine.IO type.
    BadEngineType,
    /// Unknown Socket.IO type.
    BadSocketType,
    /// A namespace without its trailing comma, or not starting with `/`.
    BadNamespace,
    /// An ack id that is not a number.
    BadAckId,
    /// Packet data that is not JSON, or not the shape its type requires (as socket.io-parser
    /// checks it): connect an object, disconnect nothing, event an array starting with a
    /// string, ack an array.
    BadJson,
    /// An event named like one of Socket.IO's reserved events (`connect`, `disconnect`, ...).
    /// Relayed, it would make every stock client in the room fail to decode it and drop its
    /// connection ("parse error").
    ReservedEvent,
    /// A polling request body that is not UTF-8 text.
    BadPayload,
}

impl SioError {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SioError::BadEngineType => "sio_bad_engine_type",
            SioError::BadSocketType => "sio_bad_socket_type",
            SioError::BadNamespace => "sio_bad_namespace",
            SioError::BadAckId => "sio_bad_ack_id",
            SioError::BadJson => "sio_bad_json",
            SioError::ReservedEvent => "sio_reserved_event",
            SioError::BadPayload => "sio_bad_payload",
        }
    }
}

/// Engine.IO ping, sent by the server every `pingInterval`.
pub const PING: &str = "2";
/// Engine.IO pong, the answer to a ping.
pub const PONG: &str = "3";
/// The arguments of the `hi` event a newcomer's room gets (`socket.broadcast.emit('hi')`).
pub const HI_ARGS: &str = "[\"hi\"]";

/// Engine.IO `6`, what a held poll is answered with when it must end with nothing to carry
/// (during an upgrade).
pub const NOOP: &str = "6";
/// Engine.IO `1`, what a held poll is answered with when its session ends.
pub const CLOSE: &str = "1";
/// The upgrade probe a client sends over its new WebSocket, and our answer.
pub const PROBE_PING: &str = "2probe";
/// The answer to [`PROBE_PING`].
pub const PROBE_PONG: &str = "3probe";
/// Engine.IO `5`: the client switches its session to the probed WebSocket.
pub const UPGRADE: &str = "5";
/// What separates the packets of a polling payload (engine.io-parser's `SEPARATOR`). JSON
/// escapes every control character, so no packet we carry contains it.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The packets of a polling request body, in order. Each is then [`parse`]d; an empty body
/// is one empty packet, refused there as the reference refuses it.
pub fn payload_packets(body: &[u8]) -> Result<impl Iterator<Item = &str>, SioError> {
    let text = std::str::from_utf8(body).map_err(|_| SioError::BadPayload)?;
    Ok(text.split(RECORD_SEPARATOR as char))
}

/// Appends one packet to a polling response payload.
pub fn push_packet(out: &mut Vec<u8>, packet: &[u8]) {
    if !out.is_empty() {
        out.push(RECORD_SEPARATOR);
    }
    out.extend_from_slice(packet);
}

/// Parses one text frame (or one packet of a polling payload) from a Socket.IO client.
pub fn parse(text: &str) -> Result<Packet<'_>, SioError> {
    // Types are single ASCII digits, so slicing after the first byte is on a char boundary.
    match text.as_bytes().first() {
        // A base64 binary packet of the polling transport: refused like binary frames.
        Some(b'b') => Ok(Packet::Binary),
        Some(b'1') => Ok(Packet::Close),
        Some(b'2') => Ok(Packet::Ping),
        Some(b'3') => Ok(Packet::Pong),
        Some(b'6') => Ok(Packet::Noop),
        Some(b'4') => parse_socket(&text[1..]),
        _ => Err(SioError::BadEngineType),
    }
}

fn parse_socket(s: &str) -> Result<Packet<'_>, SioError> {
    let kind = match s.as_bytes().first() {
        Some(k @ (b'0' | b'1' | b'2' | b'3' | b'5' | b'6')) => *k,
        _ => return Err(SioError::BadSocketType),
    };
    let mut rest = &s[1..];
    // Namespace: present when the next char is '/', ends at ','.
    let mut ns = "/";
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => {
                ns = &rest[..i];
                rest = &rest[i + 1..];
            }
            None if kind == b'0' || kind == b'1' => {
                ns = rest;
                rest = "";
            }
            None => return Err(SioError::BadNamespace),
        }
    }
    match kind {
        b'0' if optional_json(rest, b'{') => Ok(Packet::Connect { ns, data: rest }),
        b'0' => Err(SioError::BadJson),
        b'1' if rest.is_empty() => Ok(Packet::Disconnect { ns }),
        b'1' => Err(SioError::BadJson),
        b'2' => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let ack = match digits {
                0 => None,
                _ => Some(rest[..digits].parse().map_err(|_| SioError::BadAckId)?),
            };
            let args = &rest[digits..];
            let name = event_name(args).ok_or(SioError::BadJson)?;
            if is_reserved(name) {
                return Err(SioError::ReservedEvent);
            }
            Ok(Packet::Event {
                ns,
                ack,
                args,
                name,
            })
        }
        b'3' if optional_json(rest.trim_start_matches(|c: char| c.is_ascii_digit()), b'[') => {
            Ok(Packet::Ack)
        }
        b'3' => Err(SioError::BadJson),
        _ => Ok(Packet::Binary),
    }
}

/// Whether `data` is empty, or exactly one JSON value that starts with `open` (`{` or `[`).
fn optional_json(data: &str, open: u8) -> bool {
    let b = data.as_bytes();
    b.is_empty()
        || (b.get(json::skip_ws(b, 0)) == Some(&open) && json::value_len(b) == Some(b.len()))
}

/// The raw (still escaped) event name of a JSON array `["name", ...]`, if `args` is exactly
/// one valid JSON array whose first element is a string.
fn event_name(args: &str) -> Option<&str> {
    let b = args.as_bytes();
    if json::value_len(b)? != b.len() || b.first() != Some(&b'[') {
        return None;
    }
    let i = json::skip_ws(b, 1);
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let end = i + json::string_len(&b[i..])?;
    Some(&args[i + 1..end - 1])
}

/// Event names a client must not send: socket.io-parser refuses them on decoding.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Whether a raw (still escaped) event name is reserved, escapes decoded first so that
/// `"dis\u0063onnect"` does not slip through.
pub fn is_reserved(raw: &str) -> bool {
    if raw.contains('\\') {
        json::unescape(raw).is_some_and(|n| RESERVED_EVENTS.contains(&n.as_str()))
    } else {
        RESERVED_EVENTS.contains(&raw)
    }
}

/// If `args` is `["chat message", "<string>"]` (exactly), the decoded string.
pub fn chat_text(args: &str) -> Option<String> {
    let b = args.as_bytes();
    let i = json::skip_ws(b, 1);
    let name_end = i + json::string_len(&b[i..])?;
    if &args[i..name_end] != "\"chat message\"" {
        return None;
    }
    let j = json::skip_ws(b, name_end);
    if b.get(j) != Some(&b',') {
        return None;
    }
    let k = json::skip_ws(b, j + 1);
    let s_end = k + json::string_len(&b[k..])?;
    let close = json::skip_ws(b, s_end);
    if b.get(close) != Some(&b']') || close + 1 != b.len() {
        return None;
    }
    json::unescape(&args[k + 1..s_end - 1])
}

/// `["chat message","<text>"]`: the arguments of the event a plain client's text becomes.
pub fn chat_args(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 22);
    out.push_str("[\"chat message\",\"");
    let _ = write!(out, "{}", json::Escaped(text));
    out.push_str("\"]");
    out
}

/// `42["chat message","<text>"]` for a plain client's text.
pub fn chat_packet(text: &str) -> String {
    format!("42{}", chat_args(text))
}

/// The Engine.IO open packet. A polling session offers the upgrade to `websocket`; a
/// session opened on a WebSocket has nothing to upgrade to.
pub fn open_packet(
    sid: &str,
    polling: bool,
    ping_interval_ms: u128,
    ping_timeout_ms: u128,
    max_payload: usize,
) -> String {
    let upgrades = if polling { "[\"websocket\"]" } else { "[]" };
    format!(
        "0{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{ping_interval_ms},\
         \"pingTimeout\":{ping_timeout_ms},\"maxPayload\":{max_payload}}}"
    )
}

/// The Socket.IO connect answer for the main namespace.
pub fn connect_ok(sid: &str) -> String {
    format!("40{{\"sid\":\"{sid}\"}}")
}

/// `40{"sid":..,"pid":..}`: the connect answer with the private recovery id.
pub fn connect_ok_pid(sid: &str, pid: &str) -> String {
    format!("40{{\"sid\":\"{sid}\",\"pid\":\"{pid}\"}}")
}

/// Longest `pid` taken from a client (ours are 22 characters).
pub const MAX_PID_LEN: usize = 64;

/// The `pid` and `offset` of a CONNECT's `auth` object, when they are strings (a recovery
/// request of the stock client: `40{"pid":..,"offset":..}`).
pub fn resume_request(data: &str) -> (Option<String>, Option<String>) {
    let Some(members) = json::members(data) else {
        return (None, None);
    };
    let field = |key: &str| {
        members
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| json::as_string(v))
    };
    // A pid we could never have made is no pid; a bad offset stays, to fail its parse (a
    // client that sent one must not be resumed from somewhere else).
    let pid = field("pid").filter(|p| !p.is_empty() && p.len() <= MAX_PID_LEN);
    (pid, field("offset"))
}

/// Whether `pid` could be one of ours (base64url, at most [`MAX_PID_LEN`]): only such ids
/// are looked up in Redis.
pub fn valid_pid(pid: &str) -> bool {
    !pid.is_empty()
        && pid.len() <= MAX_PID_LEN
        && pid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A private recovery id: 22 characters of base64url from the OS's random source (132
/// bits), so that nobody can guess another client's.
pub fn new_pid() -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 22];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            // No OS randomness at all: fail loudly rather than hand out a guessable id.
            Err(e) => panic!("getrandom failed: {e}"),
        }
    }
    bytes
        .iter()
        .map(|b| A[usize::from(b & 63)] as char)
        .collect()
}

/// The `token` string of a CONNECT's `auth` object (`io({ auth: { token } })`), if any.
pub fn auth_token(data: &str) -> Option<String> {
    json::members(data)?
        .into_iter()
        .find(|(k, _)| k == "token")
        .and_then(|(_, v)| json::as_string(v))
}

/// The Socket.IO connect error for the main namespace, with a message for `connect_error`.
pub fn connect_refused(message: &str) -> String {
    let mut out = String::from("44{\"message\":\"");
    let _ = write!(out, "{}", json::Escaped(message));
    out.push_str("\"}");
    out
}

/// The Socket.IO connect error for a namespace we do not serve.
pub fn connect_error(ns: &str) -> String {
    let mut out = String::from("44");
    out.push_str(ns);
    out.push_str(",{\"message\":\"Invalid namespace\"}");
    out
}

/// The answer to an event with an ack id.
pub fn ack(id: u64) -> String {
    format!("43{id}[]")
}

/// A random session id: 20 characters of base64url.
pub fn new_sid() -> String {
    new_sid_after("")
}

/// A session id of 20 characters of base64url that starts with `prefix` (an instance's tag,
/// so that other instances know where the session lives); the rest is random (at least 12
/// characters, 72 bits).
pub fn new_sid_after(prefix: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let random = 20usize.saturating_sub(prefix.len()).max(12);
    let mut sid = String::with_capacity(prefix.len() + random);
    sid.push_str(prefix);
    sid.extend((0..random).map(|_| A[fastrand::usize(..64)] as char));
    sid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets() {
        assert_eq!(parse("1"), Ok(Packet::Close));
        assert_eq!(parse("2"), Ok(Packet::Ping));
        assert_eq!(parse("3"), Ok(Packet::Pong));
        assert_eq!(parse("6"), Ok(Packet::Noop));
        assert_eq!(parse(""), Err(SioError::BadEngineType));
        assert_eq!(parse("9"), Err(SioError::BadEngineType));
        assert_eq!(parse("x"), Err(SioError::BadEngineType));
        assert_eq!(parse("é"), Err(SioError::BadEngineType));
        assert_eq!(parse("4é"), Err(SioError::BadSocketType));
    }

    #[test]
    fn socket_packets() {
        assert_eq!(parse("40"), Ok(Packet::Connect { ns: "/", data: "" }));
        assert_eq!(
            parse("40{\"token\":\"abc\"}"),
            Ok(Packet::Connect {
                ns: "/",
                data: "{\"token\":\"abc\"}"
            })
        );
        assert_eq!(
            parse("40/admin,"),
            Ok(Packet::Connect {
                ns: "/admin",
                data: ""
            })
        );
        assert_eq!(
            parse("40/admin"),
            Ok(Packet::Connect {
                ns: "/admin",
                data: ""
            })
        );
        assert_eq!(parse("41"), Ok(Packet::Disconnect { ns: "/" }));
        assert_eq!(
            parse("42[\"chat message\",\"hi\"]"),
            Ok(Packet::Event {
                ns: "/",
                ack: None,
                args: "[\"chat message\",\"hi\"]",
                name: "chat message"
            })
        );
        assert_eq!(
            parse("4217[\"x\",1,{\"a\":[true,null]}]"),
            Ok(Packet::Event {
                ns: "/",
                ack: Some(17),
                args: "[\"x\",1,{\"a\":[true,null]}]",
                name: "x"
            })
        );
        assert_eq!(parse("43"), Ok(Packet::Ack));
        assert_eq!(
            parse("451-[\"up\",{\"_placeholder\":true,\"num\":0}]"),
            Ok(Packet::Binary)
        );
        assert_eq!(parse("47"), Err(SioError::BadSocketType));
        assert_eq!(parse("4"), Err(SioError::BadSocketType));
        for bad in [
            "42",
            "42[",
            "42[1,2]",
            "42{\"a\":1}",
            "42[\"x\",]",
            "42[\"x\"] junk",
            "42[\"\\q\"]",
            "40{bad",
        ] {
            assert_eq!(parse(bad), Err(SioError::BadJson), "{bad}");
        }
        assert_eq!(parse("42/admin[\"x\"]"), Err(SioError::BadNamespace));
        assert_eq!(
            parse("4299999999999999999999[\"x\"]"),
            Err(SioError::BadAckId)
        );
    }

    #[test]
    fn data_must_have_the_shape_socket_io_parser_requires() {
        for ok in [
            "40",
            "40 {}",
            "41/admin,",
            "43",
            "431",
            "431[]",
            "43[1,\"a\"]",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "40[1]",
            "40\"x\"",
            "40null",
            "41{}",
            "41x",
            "41/admin,{}",
            "43{}",
            "43x",
        ] {
            assert_eq!(parse(bad), Err(SioError::BadJson), "{bad}");
        }
    }

    #[test]
    fn reserved_event_names_are_refused_however_spelled() {
        for bad in [
            "42[\"disconnect\"]",
            "42[\"connect\",1]",
            "42[\"connect_error\",{}]",
            "42[\"disconnecting\"]",
            "4217[\"newListener\"]",
            "42[\"removeListener\"]",
            "42[\"dis\\u0063onnect\"]",
        ] {
            assert_eq!(parse(bad), Err(SioError::ReservedEvent), "{bad}");
        }
        for ok in [
            "42[\"disconnected\"]",
            "42[\"Connect\"]",
            "42[\"connect \"]",
        ] {
            assert!(matches!(parse(ok), Ok(Packet::Event { .. })), "{ok}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let deep = format!("42[\"x\",{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse(&deep), Err(SioError::BadJson));
    }

    #[test]
    fn polling_payloads() {
        let packets: Vec<_> = payload_packets(b"40\x1e42[\"a\"]\x1e3").unwrap().collect();
        assert_eq!(packets, ["40", "42[\"a\"]", "3"]);
        let one: Vec<_> = payload_packets(b"").unwrap().collect();
        assert_eq!(one, [""]);
        assert_eq!(parse(one[0]), Err(SioError::BadEngineType));
        assert!(payload_packets(b"42[\"\xff\"]").is_err());
        assert_eq!(parse("bAQID"), Ok(Packet::Binary));
        let mut out = Vec::new();
        push_packet(&mut out, b"2");
        push_packet(&mut out, b"42[\"x\"]");
        assert_eq!(out, b"2\x1e42[\"x\"]");
    }

    #[test]
    fn chat_bridge() {
        assert_eq!(
            chat_text("[\"chat message\",\"héllo \\\"w\\\" \\u00e9 \\ud83d\\ude00\"]").as_deref(),
            Some("héllo \"w\" é 😀")
        );
        assert_eq!(
            chat_text("[ \"chat message\" , \"a\" ]").as_deref(),
            Some("a")
        );
        assert_eq!(chat_text("[\"chat message\",\"a\",\"b\"]"), None);
        assert_eq!(chat_text("[\"chat message\",1]"), None);
        assert_eq!(chat_text("[\"other\",\"a\"]"), None);
        let p = chat_packet("say \"hi\"\n\\ ✓");
        assert_eq!(p, "42[\"chat message\",\"say \\\"hi\\\"\\n\\\\ ✓\"]");
        let Ok(Packet::Event { args, .. }) = parse(&p) else {
            panic!()
        };
        assert_eq!(chat_text(args).as_deref(), Some("say \"hi\"\n\\ ✓"));
    }

    #[test]
    fn server_packets() {
        assert_eq!(
            open_packet("abc", false, 25000, 20000, 65536),
            "0{\"sid\":\"abc\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":65536}"
        );
        assert_eq!(
            open_packet("abc", true, 1, 2, 3),
            "0{\"sid\":\"abc\",\"upgrades\":[\"websocket\"],\"pingInterval\":1,\"pingTimeout\":2,\"maxPayload\":3}"
        );
        assert_eq!(connect_ok("abc"), "40{\"sid\":\"abc\"}");
        assert_eq!(
            connect_error("/admin"),
            "44/admin,{\"message\":\"Invalid namespace\"}"
        );
        assert_eq!(ack(5), "435[]");
        assert_eq!(
            connect_refused("no \"token\""),
            "44{\"message\":\"no \\\"token\\\"\"}"
        );
        assert_eq!(
            auth_token("{\"token\":\"a.b\",\"x\":1}").as_deref(),
            Some("a.b")
        );
        assert_eq!(auth_token("{\"token\":1}"), None);
        assert_eq!(auth_token(""), None);
        let sid = new_sid();
        assert_eq!(sid.len(), 20);
        assert_ne!(sid, new_sid());
    }
}
