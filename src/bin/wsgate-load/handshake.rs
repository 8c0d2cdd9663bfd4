//! The client half of the WebSocket opening handshake (RFC 6455 section 4.1), written by hand so
//! that a PROXY header can go first on the same socket. Pure: bytes in and out, no I/O.

/// The GUID that RFC 6455 appends to the key before hashing it into `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The most bytes of response head we read before giving up (the server's 101 is ~130 bytes).
pub(crate) const MAX_RESPONSE_HEAD: usize = 8192;

/// Why the server's answer to our upgrade request is not a usable 101.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// No `\r\n\r\n` within [`MAX_RESPONSE_HEAD`] bytes.
    HeadTooLarge,
    /// The first line is not `HTTP/1.x NNN ...`.
    BadStatusLine,
    /// A status other than 101; carries it.
    Status(u16),
    /// A 101 without `Sec-WebSocket-Accept`.
    MissingAccept,
    /// A 101 whose `Sec-WebSocket-Accept` does not match our key.
    BadAccept,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::HeadTooLarge => write!(f, "response head over {MAX_RESPONSE_HEAD} bytes"),
            Error::BadStatusLine => write!(f, "bad status line"),
            Error::Status(code) => write!(f, "http {code}"),
            Error::MissingAccept => write!(f, "101 without Sec-WebSocket-Accept"),
            Error::BadAccept => write!(f, "wrong Sec-WebSocket-Accept"),
        }
    }
}

/// A `Sec-WebSocket-Key`: 16 bytes from `seed` (no need to be unpredictable here), in base64.
pub(crate) fn key(seed: u64) -> String {
    let mut state = seed;
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    base64(&bytes)
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
pub(crate) fn accept_for(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    base64(&sha.digest().bytes())
}

/// The upgrade request for `path_and_query` on `host` (the `Host` header's value).
pub(crate) fn request(host: &str, path_and_query: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path_and_query} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         User-Agent: wsgate-load\r\n\
         \r\n"
    )
    .into_bytes()
}

/// Checks the response head in `buf` against `key`. `Ok(None)`: the head is not complete yet,
/// read more. `Ok(Some(n))`: a good 101 whose head is the first `n` bytes; the rest of `buf`
/// already belongs to the WebSocket stream.
pub(crate) fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, Error> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_RESPONSE_HEAD {
            Err(Error::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(Error::BadStatusLine);
    }
    let code: u16 = code.parse().map_err(|_| Error::BadStatusLine)?;
    if code != 101 {
        return Err(Error::Status(code));
    }
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim().to_owned())
        .ok_or(Error::MissingAccept)?;
    if accept != accept_for(key) {
        return Err(Error::BadAccept);
    }
    Ok(Some(end + 4))
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One step of SplitMix64: a fast, well-spread sequence from any seed.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example handshake of RFC 6455 section 1.3.
    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(base64(b"the sample nonce"), RFC_KEY);
    }

    #[test]
    fn accept_matches_rfc6455_example() {
        assert_eq!(accept_for(RFC_KEY), RFC_ACCEPT);
    }

    #[test]
    fn keys_are_16_bytes_and_differ_by_seed() {
        let (a, b) = (key(1), key(2));
        assert_eq!(a.len(), 24);
        assert!(a.ends_with("=="));
        assert_ne!(a, b);
    }

    #[test]
    fn request_is_a_minimal_upgrade() {
        let r = request("127.0.0.1:8080", "/ws/room-1", RFC_KEY);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "GET /ws/room-1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsgate-load\r\n\r\n"
        );
    }

    #[test]
    fn accepts_a_101_and_hands_over_what_follows() {
        let mut resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: {RFC_ACCEPT}\r\n\r\n").into_bytes();
        resp.extend_from_slice(b"\x81\x02hi"); // a first frame in the same read
        let n = check_response(&resp, RFC_KEY).unwrap().unwrap();
        assert_eq!(&resp[n..], b"\x81\x02hi");
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        assert_eq!(
            check_response(b"HTTP/1.1 101 Switching Protocols\r\n", RFC_KEY),
            Ok(None)
        );
        assert_eq!(
            check_response(&[b'a'; MAX_RESPONSE_HEAD], RFC_KEY),
            Err(Error::HeadTooLarge)
        );
    }

    #[test]
    fn refuses_what_is_not_our_101() {
        let cases: [(&str, Error); 5] = [
            (
                "HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n",
                Error::Status(404),
            ),
            ("HTTP/1.1 426 Upgrade Required\r\n\r\n", Error::Status(426)),
            ("SSH-2.0-OpenSSH\r\n\r\n", Error::BadStatusLine),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Error::MissingAccept,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: AAAA\r\n\r\n",
                Error::BadAccept,
            ),
        ];
        for (resp, want) in cases {
            assert_eq!(
                check_response(resp.as_bytes(), RFC_KEY),
                Err(want),
                "{resp}"
            );
        }
    }
}
