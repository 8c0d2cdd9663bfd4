//! The WebSocket upgrade (RFC 6455 section 4.2): a ladder of checks, one error variant each,
//! then the 101 response. Pure; the caller writes the bytes and hands the socket over.

use crate::http::{has_token, Request, Status};
use std::fmt;

/// The GUID every `Sec-WebSocket-Accept` is derived with (RFC 6455 section 1.3).
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version there is.
pub const WS_VERSION: &[u8] = b"13";

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// No `Upgrade: websocket` header: a plain GET on a WebSocket path.
    NotUpgrade,
    /// `Connection` lacks the `upgrade` token.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing.
    MissingKey,
    /// `Sec-WebSocket-Key` is not base64 of 16 bytes.
    InvalidKey,
}

impl HandshakeError {
    /// The status the refusal is answered with.
    pub fn status(&self) -> Status {
        match self {
            HandshakeError::NotUpgrade | HandshakeError::UnsupportedVersion => {
                Status::UpgradeRequired
            }
            _ => Status::BadRequest,
        }
    }

    /// Extra response headers that tell the client what would work.
    pub fn extra_headers(&self) -> &'static str {
        match self {
            HandshakeError::NotUpgrade => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
            _ => "",
        }
    }

    /// Stable label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            HandshakeError::NotUpgrade => "not_upgrade",
            HandshakeError::MissingConnectionUpgrade => "missing_connection_upgrade",
            HandshakeError::UnsupportedVersion => "unsupported_version",
            HandshakeError::MissingKey => "missing_key",
            HandshakeError::InvalidKey => "invalid_key",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::NotUpgrade => {
                "this path is a WebSocket endpoint: send Upgrade: websocket"
            }
            HandshakeError::MissingConnectionUpgrade => "Connection header must contain 'upgrade'",
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
            HandshakeError::MissingKey => "Sec-WebSocket-Key is missing",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
        })
    }
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value.
pub fn check(req: &Request<'_>) -> Result<[u8; 28], HandshakeError> {
    if !req.upgrade.is_some_and(|u| has_token(u, "websocket")) {
        return Err(HandshakeError::NotUpgrade);
    }
    if !req.connection.is_some_and(|c| has_token(c, "upgrade")) {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if req.ws_version.map(<[u8]>::trim_ascii) != Some(WS_VERSION) {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = req.ws_key.ok_or(HandshakeError::MissingKey)?.trim_ascii();
    if !is_base64_16(key) {
        return Err(HandshakeError::InvalidKey);
    }
    Ok(accept_key(key))
}

/// The 101 response for an accepted upgrade.
pub fn response_101(accept: &[u8; 28]) -> [u8; 129] {
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    let mut out = [0u8; 129];
    out[..HEAD.len()].copy_from_slice(HEAD);
    out[HEAD.len()..HEAD.len() + 28].copy_from_slice(accept);
    out[HEAD.len() + 28..].copy_from_slice(b"\r\n\r\n");
    out
}

/// The 101 response for an upgrade that chose the `wsgate.offset` subprotocol.
pub fn response_101_offset(accept: &[u8; 28]) -> Vec<u8> {
    let plain = response_101(accept);
    let mut out = Vec::with_capacity(plain.len() + 48);
    out.extend_from_slice(&plain[..plain.len() - 2]);
    out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
    out.extend_from_slice(crate::http::OFFSET_SUBPROTOCOL.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// `base64(sha1(key ++ GUID))`.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WS_GUID);
    base64_20(&sha.digest().bytes())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 of exactly 20 bytes (a SHA-1 digest): 28 characters, one `=`.
fn base64_20(input: &[u8; 20]) -> [u8; 28] {
    let mut out = [b'='; 28];
    for (i, chunk) in input.chunks(3).enumerate() {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for j in 0..=chunk.len() {
            out[i * 4 + j] = B64[(n >> (18 - 6 * j) & 63) as usize];
        }
    }
    out
}

/// Whether `key` is base64 of 16 bytes: 22 alphabet characters then `==`.
fn is_base64_16(key: &[u8]) -> bool {
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22].iter().all(|c| B64.contains(c))
        // the last character carries 2 bits of data and 4 zero bits
        && B64.iter().position(|c| *c == key[21]).is_some_and(|v| v & 0xF == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request<'static> {
        Request {
            method: "GET",
            target: "/ws",
            upgrade: Some(b"websocket"),
            connection: Some(b"Upgrade"),
            ws_key: Some(b"dGhlIHNhbXBsZSBub25jZQ=="),
            ws_version: Some(b"13"),
            origin: None,
            authorization: None,
            ws_protocol: None,
        }
    }

    #[test]
    fn rfc_example_key() {
        // RFC 6455 section 1.3.
        assert_eq!(&check(&req()).unwrap(), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let r = response_101(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            &r[..],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"[..]
        );
    }

    #[test]
    fn ladder() {
        let r = Request {
            upgrade: None,
            ..req()
        };
        assert_eq!(check(&r), Err(HandshakeError::NotUpgrade));
        assert_eq!(HandshakeError::NotUpgrade.status().code(), 426);
        let r = Request {
            connection: Some(b"keep-alive"),
            ..req()
        };
        assert_eq!(check(&r), Err(HandshakeError::MissingConnectionUpgrade));
        let r = Request {
            ws_version: Some(b"8"),
            ..req()
        };
        assert_eq!(check(&r), Err(HandshakeError::UnsupportedVersion));
        assert_eq!(HandshakeError::UnsupportedVersion.status().code(), 426);
        let r = Request {
            ws_key: None,
            ..req()
        };
        assert_eq!(check(&r), Err(HandshakeError::MissingKey));
        for bad in [
            &b"short"[..],
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZR==",
            b"dGhlIHNhbXBsZSBub25j!Q==",
        ] {
            let r = Request {
                ws_key: Some(bad),
                ..req()
            };
            assert_eq!(check(&r), Err(HandshakeError::InvalidKey), "{bad:?}");
        }
        assert_eq!(HandshakeError::InvalidKey.status().code(), 400);
    }
}
