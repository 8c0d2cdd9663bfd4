//! HTTP/1.1 message framing for the upstream proxy (RFC 9112 section 6), pure: how long a
//! request or response body is, the checks that keep a request from being read one way here
//! and another way upstream (request smuggling), a scanner that finds where a chunked body
//! ends without decoding it, and the hop-by-hop headers a proxy must not pass on.

use std::fmt;

/// Longest chunk-size line (size, extensions) or trailer line accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk.
pub const MAX_TRAILERS: usize = 8192;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, copied as it is.
    Chunked,
    /// A response without a length: its body ends when the upstream closes.
    UntilClose,
}

/// Why a message's framing is refused. One variant per check; each is a `400` for a request
/// and a `502` for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Both `Content-Length` and `Transfer-Encoding`: the classic smuggling vector.
    LengthAndChunked,
    /// More than one `Content-Length` value, and they differ.
    DifferingLengths,
    /// A `Content-Length` that is not a decimal number.
    BadLength,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    UnsupportedCoding,
}

impl FramingError {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FramingError::LengthAndChunked => "length_and_chunked",
            FramingError::DifferingLengths => "differing_lengths",
            FramingError::BadLength => "bad_content_length",
            FramingError::UnsupportedCoding => "unsupported_transfer_encoding",
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramingError::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            FramingError::DifferingLengths => "Content-Length values differ",
            FramingError::BadLength => "Content-Length is not a number",
            FramingError::UnsupportedCoding => "Transfer-Encoding other than chunked",
        })
    }
}

/// The body framing its `Content-Length` and `Transfer-Encoding` headers give a message.
/// `None` when it has neither (for a request: no body).
fn framing(headers: &[httparse::Header<'_>]) -> Result<Option<BodyLen>, FramingError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            // `Content-Length: 5, 5` is one header with a list (RFC 9110 8.6).
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 19 {
                    return Err(FramingError::BadLength);
                }
                let n: u64 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(FramingError::BadLength)?;
                match length {
                    Some(m) if m != n => return Err(FramingError::DifferingLengths),
                    _ => length = Some(n),
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked`, once: gzip, chains and repeats are all refused.
            if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(FramingError::UnsupportedCoding);
            }
            chunked = true;
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(FramingError::LengthAndChunked),
        (Some(n), false) => Ok(Some(BodyLen::Length(n))),
        (None, true) => Ok(Some(BodyLen::Chunked)),
        (None, false) => Ok(None),
    }
}

/// A request's body framing (RFC 9112 6.3): no length headers means no body.
pub fn request_body(headers: &[httparse::Header<'_>]) -> Result<BodyLen, FramingError> {
    Ok(framing(headers)?.unwrap_or(BodyLen::None))
}

/// A response's body framing: none for `HEAD`, 1xx, 204 and 304; otherwise by its headers,
/// or until the upstream closes.
pub fn response_body(
    method: &str,
    status: u16,
    headers: &[httparse::Header<'_>],
) -> Result<BodyLen, FramingError> {
    let f = framing(headers)?;
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyLen::None);
    }
    Ok(f.unwrap_or(BodyLen::UntilClose))
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), plus those the
/// proxy writes itself. Names listed in `Connection` are dropped too (see [`is_dropped`]).
const HOP_BY_HOP: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
];

/// Whether `name` is not passed on: hop-by-hop, written by the proxy itself, or named in the
/// message's `Connection` header.
pub fn is_dropped(name: &str, headers: &[httparse::Header<'_>]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// Whether any header `name` holds the comma-separated token `token` (case-insensitive).
pub fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .any(|h| super::has_token(h.value, token))
}

/// The first value of header `name`.
pub fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is not hex, or too large.
    BadSize,
    /// A missing CRLF after a size line or chunk data.
    MissingCrlf,
    /// A size line, extension or trailer longer than allowed.
    TooLong,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkError::BadSize => "bad chunk size",
            ChunkError::MissingCrlf => "missing CRLF in chunked body",
            ChunkError::TooLong => "chunk line or trailers too long",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// `;ext` after the size, up to CR.
    Ext,
    /// The LF of the size line.
    SizeLf,
    /// Chunk data still to come.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The LF ending a trailer line.
    TrailerLf,
    /// The LF of the final CRLF.
    EndLf,
    /// The body is complete.
    Done,
}

/// Finds the end of a chunked body in the bytes that pass through it, which are copied on
/// unchanged. Pure: feed slices, in order, as they arrive.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    /// Bytes of the current size line or trailer line.
    line: usize,
    /// Bytes of trailers so far.
    trailers: usize,
    last: bool,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
            line: 0,
            trailers: 0,
            last: false,
        }
    }
}

impl Chunked {
    /// Scans `b`: `Ok(Some(n))` when the body ends after its first `n` bytes, `Ok(None)` when
    /// all of `b` belongs to it and more is to come.
    pub fn feed(&mut self, b: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match self.state {
                State::Size => match c {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        // 15 hex digits is far beyond any body; also keeps the shift safe.
                        if self.digits > 15 {
                            return Err(ChunkError::BadSize);
                        }
                        self.size =
                            self.size * 16 + u64::from((c as char).to_digit(16).unwrap_or(0));
                    }
                    _ if self.digits == 0 => return Err(ChunkError::BadSize),
                    b';' | b' ' | b'\t' => self.state = State::Ext,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError::BadSize),
                },
                State::Ext => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(ChunkError::TooLong);
                    }
                    match c {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::MissingCrlf),
                        _ => {}
                    }
                }
                State::SizeLf => {
                    if c != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.line = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        self.last = true;
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data(self.size);
                        self.size = 0;
                    }
                }
                State::Data(left) => {
                    let take = (left as usize).min(b.len() - i);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    i += take;
                    continue;
                }
                State::DataCr => {
                    if c != b'\r' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if c != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if c == b'\r' {
                        State::EndLf
                    } else {
                        self.line = 1;
                        State::Trailer
                    };
                    self.trailers += 1;
                }
                State::Trailer => {
                    self.line += 1;
                    self.trailers += 1;
                    if self.line > MAX_CHUNK_LINE || self.trailers > MAX_TRAILERS {
                        return Err(ChunkError::TooLong);
                    }
                    match c {
                        b'\r' => self.state = State::TrailerLf,
                        b'\n' => return Err(ChunkError::MissingCrlf),
                        _ => {}
                    }
                }
                State::TrailerLf => {
                    if c != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.line = 0;
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if c != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::Done;
                    return Ok(Some(i + 1));
                }
                State::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(if self.state == State::Done {
            Some(b.len())
        } else {
            None
        })
    }

    /// Whether the last chunk was seen and the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn request_framing_refuses_every_ambiguity() {
        assert_eq!(request_body(&[]), Ok(BodyLen::None));
        assert_eq!(
            request_body(&[h("Content-Length", "5")]),
            Ok(BodyLen::Length(5))
        );
        assert_eq!(
            request_body(&[h("content-length", "5"), h("Content-Length", "5, 5")]),
            Ok(BodyLen::Length(5))
        );
        assert_eq!(
            request_body(&[h("Transfer-Encoding", " Chunked ")]),
            Ok(BodyLen::Chunked)
        );
        for (headers, e) in [
            (
                vec![h("Content-Length", "5"), h("Transfer-Encoding", "chunked")],
                FramingError::LengthAndChunked,
            ),
            (
                vec![h("Content-Length", "5"), h("Content-Length", "6")],
                FramingError::DifferingLengths,
            ),
            (
                vec![h("Content-Length", "5, 6")],
                FramingError::DifferingLengths,
            ),
            (vec![h("Content-Length", "+5")], FramingError::BadLength),
            (vec![h("Content-Length", "0x5")], FramingError::BadLength),
            (vec![h("Content-Length", "")], FramingError::BadLength),
            (
                vec![h("Content-Length", "99999999999999999999")],
                FramingError::BadLength,
            ),
            (
                vec![h("Transfer-Encoding", "gzip, chunked")],
                FramingError::UnsupportedCoding,
            ),
            (
                vec![
                    h("Transfer-Encoding", "chunked"),
                    h("Transfer-Encoding", "chunked"),
                ],
                FramingError::UnsupportedCoding,
            ),
            (
                vec![h("Transfer-Encoding", "xchunked")],
                FramingError::UnsupportedCoding,
            ),
        ] {
            assert_eq!(request_body(&headers), Err(e), "{headers:?}");
        }
    }

    #[test]
    fn response_framing_follows_the_method_and_status() {
        assert_eq!(response_body("GET", 200, &[]), Ok(BodyLen::UntilClose));
        assert_eq!(
            response_body("HEAD", 200, &[h("Content-Length", "9")]),
            Ok(BodyLen::None)
        );
        assert_eq!(response_body("GET", 204, &[]), Ok(BodyLen::None));
        assert_eq!(response_body("GET", 304, &[]), Ok(BodyLen::None));
        assert_eq!(response_body("GET", 101, &[]), Ok(BodyLen::None));
        assert_eq!(
            response_body("GET", 200, &[h("Transfer-Encoding", "chunked")]),
            Ok(BodyLen::Chunked)
        );
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let hs = [h("Connection", "keep-alive, X-Secret"), h("X-Secret", "1")];
        for name in [
            "Connection",
            "Keep-Alive",
            "TE",
            "Upgrade",
            "X-Forwarded-For",
            "x-secret",
        ] {
            assert!(is_dropped(name, &hs), "{name}");
        }
        for name in ["Host", "Cookie", "Sec-WebSocket-Key", "Origin"] {
            assert!(!is_dropped(name, &hs), "{name}");
        }
    }

    /// Feeds `body` split at every offset, and in single bytes; returns where it ended.
    fn end_of(body: &[u8]) -> Result<Option<usize>, ChunkError> {
        let whole = Chunked::default().feed(body);
        for cut in 0..=body.len() {
            let mut c = Chunked::default();
            let first = c.feed(&body[..cut]);
            let split = match first {
                Ok(Some(n)) => Ok(Some(n)),
                Ok(None) => c.feed(&body[cut..]).map(|r| r.map(|n| n + cut)),
                Err(e) => Err(e),
            };
            assert_eq!(split, whole, "split at {cut}");
        }
        whole
    }

    #[test]
    fn chunked_bodies_end_where_the_spec_says_at_any_split() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(end_of(body), Ok(Some(body.len() - 4)));
        let trailers = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n";
        assert_eq!(end_of(trailers), Ok(Some(trailers.len())));
        assert_eq!(end_of(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(end_of(b"5\r\nhel"), Ok(None));
        assert_eq!(end_of(b"x\r\n"), Err(ChunkError::BadSize));
        assert_eq!(end_of(b"\r\n"), Err(ChunkError::BadSize));
        assert_eq!(end_of(b"5\nhello"), Err(ChunkError::BadSize));
        assert_eq!(end_of(b"5\r\nhelloX\r\n"), Err(ChunkError::MissingCrlf));
        assert_eq!(end_of(b"1000000000000000\r\n"), Err(ChunkError::BadSize));
        let long: Vec<u8> = b"1;"
            .iter()
            .chain([b'e'; MAX_CHUNK_LINE + 1].iter())
            .copied()
            .collect();
        assert_eq!(end_of(&long), Err(ChunkError::TooLong));
    }
}
