//! HTTP/1.1, pure: request heads and plain responses (here), and message framing
//! ([`framing`]: body lengths, chunked scanning, the smuggling checks, hop-by-hop headers).
//! Parsing is a pure function over `&[u8]` with caller-owned header storage; responses are
//! whole byte strings written at once. The prelude, the routes, `--upstream` and the admin
//! listener all use it; it imports nothing of the crate.

pub mod framing;

use std::fmt::{self, Write as _};

/// Headers we look at; more than this many in a request is answered with 431.
pub const MAX_HEADERS: usize = 32;

/// The parts of a request head the gateway uses. Borrows from the read buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The request target as sent, query included.
    pub target: &'a str,
    /// `Upgrade` header value.
    pub upgrade: Option<&'a [u8]>,
    /// `Connection` header value.
    pub connection: Option<&'a [u8]>,
    /// `Sec-WebSocket-Key`.
    pub ws_key: Option<&'a [u8]>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<&'a [u8]>,
    /// `Origin` (browsers send it; other clients usually do not).
    pub origin: Option<&'a [u8]>,
    /// `Authorization` (a `Bearer` token, when `--jwt-secret-file` is set).
    pub authorization: Option<&'a [u8]>,
    /// `Sec-WebSocket-Protocol`, the subprotocols a client offers (a list header that may
    /// be repeated: the line naming [`OFFSET_SUBPROTOCOL`] is kept).
    pub ws_protocol: Option<&'a [u8]>,
}

/// The raw (still percent-encoded) value of `key` in a request target's query, the first one
/// if repeated: `query_param("/ws?a=1&since=x", "since") == Some("x")`.
pub fn query_param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The subprotocol of raw clients that want offsets and resume (`wsgate.offset`).
pub const OFFSET_SUBPROTOCOL: &str = "wsgate.offset";

/// What [`parse_head`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head<'a> {
    /// The whole head: `len` bytes including the blank line.
    Complete { len: usize, request: Request<'a> },
    /// Read more.
    Partial,
}

/// Why a head was refused. One variant per check, each with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Not a valid HTTP/1.x request head (httparse's reason).
    Malformed(&'static str),
    /// HTTP/1.0 or older: a WebSocket gateway speaks 1.1.
    Version(u8),
    /// More than [`MAX_HEADERS`] headers.
    TooManyHeaders,
}

impl HttpError {
    /// The status this error is answered with.
    pub fn status(&self) -> Status {
        match self {
            HttpError::Malformed(_) | HttpError::Version(_) => Status::BadRequest,
            HttpError::TooManyHeaders => Status::HeaderTooLarge,
        }
    }

    /// Stable label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpError::Malformed(_) => "malformed_request",
            HttpError::Version(_) => "http_version",
            HttpError::TooManyHeaders => "too_many_headers",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed request: {why}"),
            HttpError::Version(v) => write!(f, "HTTP/1.{v} is not supported, use HTTP/1.1"),
            HttpError::TooManyHeaders => write!(f, "more than {MAX_HEADERS} headers"),
        }
    }
}

/// A complete head as offsets into the buffer it was parsed from. The prelude keeps reading
/// into that buffer until the head is complete, so the borrowed [`Request`] cannot leave the
/// read loop; this can, and [`HeadAt::request`] turns it back into one without parsing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadAt {
    /// Bytes of the head, blank line included.
    pub len: usize,
    method: Span,
    target: Span,
    /// `upgrade`, `connection`, `ws_key`, `ws_version`, `origin`, `authorization`,
    /// `ws_protocol`, in [`Request`]'s order.
    headers: [Option<Span>; 7],
}

/// `start..end` of a field within the parsed buffer.
type Span = (u32, u32);

impl HeadAt {
    /// Records where `request`, parsed from `buf`, lies in it.
    pub fn new(buf: &[u8], len: usize, request: &Request<'_>) -> HeadAt {
        let base = buf.as_ptr() as usize;
        // Every field is a subslice of `buf` (httparse borrows from its input).
        let span = |b: &[u8]| {
            let start = (b.as_ptr() as usize).saturating_sub(base) as u32;
            (start, start + b.len() as u32)
        };
        let r = request;
        HeadAt {
            len,
            method: span(r.method.as_bytes()),
            target: span(r.target.as_bytes()),
            headers: [
                r.upgrade,
                r.connection,
                r.ws_key,
                r.ws_version,
                r.origin,
                r.authorization,
                r.ws_protocol,
            ]
            .map(|h| h.map(span)),
        }
    }

    /// The request again, borrowed from the same bytes it was parsed from.
    pub fn request<'a>(&self, buf: &'a [u8]) -> Request<'a> {
        let bytes = |(s, e): Span| buf.get(s as usize..e as usize).unwrap_or_default();
        // Both were checked to be tokens and visible ASCII by httparse.
        let text = |s: Span| std::str::from_utf8(bytes(s)).unwrap_or_default();
        let [upgrade, connection, ws_key, ws_version, origin, authorization, ws_protocol] =
            self.headers.map(|h| h.map(bytes));
        Request {
            method: text(self.method),
            target: text(self.target),
            upgrade,
            connection,
            ws_key,
            ws_version,
            origin,
            authorization,
            ws_protocol,
        }
    }
}

/// Parses a request head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Result<Head<'_>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(error_text(e))),
    };
    let version = req.version.unwrap_or(0);
    if version != 1 {
        return Err(HttpError::Version(version));
    }
    let mut request = Request {
        method: req.method.unwrap_or(""),
        target: req.path.unwrap_or(""),
        ..Request::default()
    };
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            // A list header, which may be repeated (RFC 9110 5.3): the one naming `upgrade`
            // is the one the handshake looks at.
            if request.connection.is_none() || has_token(h.value, "upgrade") {
                request.connection = Some(h.value);
            }
            continue;
        }
        if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
            if request.ws_protocol.is_none() || has_token(h.value, OFFSET_SUBPROTOCOL) {
                request.ws_protocol = Some(h.value);
            }
            continue;
        }
        let slot = if h.name.eq_ignore_ascii_case("upgrade") {
            &mut request.upgrade
        } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
            &mut request.ws_key
        } else if h.name.eq_ignore_ascii_case("sec-websocket-version") {
            &mut request.ws_version
        } else if h.name.eq_ignore_ascii_case("origin") {
            &mut request.origin
        } else if h.name.eq_ignore_ascii_case("authorization") {
            &mut request.authorization
        } else {
            continue;
        };
        if slot.is_some() {
            // RFC 6455 requires these once; a repeat is a malformed handshake.
            return Err(HttpError::Malformed("repeated header"));
        }
        *slot = Some(h.value);
    }
    Ok(Head::Complete { len, request })
}

fn error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The statuses the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    NoContent,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
    TooManyRequests,
    PayloadTooLarge,
    HeaderTooLarge,
    InternalError,
    BadGateway,
    Unavailable,
    GatewayTimeout,
}

impl Status {
    /// Numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::NoContent => 204,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UpgradeRequired => 426,
            Status::TooManyRequests => 429,
            Status::PayloadTooLarge => 413,
            Status::HeaderTooLarge => 431,
            Status::InternalError => 500,
            Status::BadGateway => 502,
            Status::Unavailable => 503,
            Status::GatewayTimeout => 504,
        }
    }

    /// Reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NoContent => "No Content",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UpgradeRequired => "Upgrade Required",
            Status::TooManyRequests => "Too Many Requests",
            Status::PayloadTooLarge => "Content Too Large",
            Status::HeaderTooLarge => "Request Header Fields Too Large",
            Status::InternalError => "Internal Server Error",
            Status::BadGateway => "Bad Gateway",
            Status::Unavailable => "Service Unavailable",
            Status::GatewayTimeout => "Gateway Timeout",
        }
    }
}

/// A whole response with `Connection: close`. `extra` holds additional header lines, each
/// ending in CRLF. With `head_only` (a HEAD request) the body is left out.
pub fn response(
    status: Status,
    content_type: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = head(status, content_type, extra, body.len(), true);
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// A whole response on a kept-alive connection: `Connection: close` only when `close`.
pub fn response_kept(
    status: Status,
    content_type: &str,
    extra: &str,
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut out = head(status, content_type, extra, body.len(), close);
    out.extend_from_slice(body);
    out
}

fn head(status: Status, content_type: &str, extra: &str, len: usize, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut out = format!("HTTP/1.1 {} {}\r\n", status.code(), status.reason());
    // A 204 has no body, so no length and no type (RFC 9110 8.6).
    if status != Status::NoContent {
        let _ = write!(
            out,
            "Content-Type: {content_type}\r\nContent-Length: {len}\r\n"
        );
    }
    let _ = write!(out, "Cache-Control: no-store\r\n{connection}{extra}\r\n");
    out.into_bytes()
}

/// A plain-text error response whose body says why.
pub fn error_response(status: Status, extra: &str, why: &dyn fmt::Display) -> Vec<u8> {
    let body = format!("{} {}: {why}\n", status.code(), status.reason());
    response(
        status,
        "text/plain; charset=utf-8",
        extra,
        body.as_bytes(),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_at_gives_back_the_same_request() {
        let buf = b"GET /ws/x?y=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n\r\nrest";
        let Ok(Head::Complete { len, request }) = parse_head(buf) else {
            panic!("complete")
        };
        let at = HeadAt::new(buf, len, &request);
        assert_eq!(at.len, buf.len() - 4);
        assert_eq!(at.request(buf), request);
        // No optional headers at all.
        let buf2 = b"GET / HTTP/1.1\r\n\r\n";
        let Ok(Head::Complete { len, request }) = parse_head(buf2) else {
            panic!("complete")
        };
        assert_eq!(HeadAt::new(buf2, len, &request).request(buf2), request);
    }

    const UPGRADE: &[u8] = b"GET /ws/lobby?x=1 HTTP/1.1\r\n\
        Host: example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Origin: http://example.com\r\n\
        \r\n";

    #[test]
    fn complete_upgrade_head() {
        let mut buf = UPGRADE.to_vec();
        buf.extend_from_slice(b"\x81\x80");
        let Ok(Head::Complete { len, request }) = parse_head(&buf) else {
            panic!("expected a complete head");
        };
        assert_eq!(len, UPGRADE.len());
        assert_eq!(request.method, "GET");
        assert_eq!(request.target, "/ws/lobby?x=1");
        assert_eq!(request.upgrade, Some(&b"websocket"[..]));
        assert!(has_token(request.connection.unwrap(), "upgrade"));
        assert_eq!(request.ws_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        assert_eq!(request.ws_version, Some(&b"13"[..]));
        assert_eq!(request.origin, Some(&b"http://example.com"[..]));
    }

    #[test]
    fn every_prefix_is_partial() {
        for end in 0..UPGRADE.len() {
            assert_eq!(parse_head(&UPGRADE[..end]), Ok(Head::Partial), "at {end}");
        }
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            parse_head(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(
            parse_head(b"GET / HTTP/1.0\r\n\r\n"),
            Err(HttpError::Version(0))
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Err(HttpError::TooManyHeaders));
        assert_eq!(HttpError::TooManyHeaders.status().code(), 431);
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n"),
            Err(HttpError::Malformed("repeated header"))
        ));
        let Ok(Head::Complete { request, .. }) =
            parse_head(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n\r\n")
        else {
            panic!("a repeated Connection is a list")
        };
        assert_eq!(request.connection, Some(&b"Upgrade"[..]));
    }

    #[test]
    fn tokens() {
        assert!(has_token(b"Upgrade", "upgrade"));
        assert!(has_token(b"keep-alive,  UPGRADE ", "upgrade"));
        assert!(!has_token(b"keep-alive", "upgrade"));
        assert!(!has_token(b"upgraded", "upgrade"));
    }

    #[test]
    fn responses() {
        let r = response(Status::Ok, "text/plain", "", b"ok\n", false);
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
              Cache-Control: no-store\r\nConnection: close\r\n\r\nok\n"
        );
        let r = response(Status::Ok, "text/plain", "", b"ok\n", true);
        assert!(r.ends_with(
            b"Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ));
    }

    #[test]
    fn query_params_are_found_by_exact_key() {
        let t = "/socket.io/?EIO=4&transport=polling&sid=&room=a%20b";
        assert_eq!(query_param(t, "EIO"), Some("4"));
        assert_eq!(query_param(t, "sid"), Some(""));
        assert_eq!(query_param(t, "room"), Some("a%20b"), "raw, not decoded");
        assert_eq!(
            query_param(t, "trans"),
            None,
            "a prefix of a key is not the key"
        );
        assert_eq!(query_param("/ws?x=1&x=2", "x"), Some("1"), "the first one");
        assert_eq!(query_param("/ws", "x"), None);
        assert_eq!(query_param("/ws?x", "x"), None, "a key without a value");
    }
}
