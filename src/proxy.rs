//! PROXY protocol v1 and v2 decoding (HAProxy's proxy-protocol.txt): a pure function over
//! `&[u8]` with three outcomes (complete, partial, error) and no heap allocation.
//!
//! The caller owns the buffer; a decoded [`Header`] borrows its TLVs and UNIX paths from it.

use std::net::SocketAddr;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 signature, `PROXY ` (with the space).
pub const V1_SIGNATURE: &[u8; 6] = b"PROXY ";
/// A v1 header is at most 107 bytes, CRLF included (spec section 2.1).
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature, ver/cmd, fam/proto, and the 2-byte length.
pub const V2_FIXED_LEN: usize = 16;

/// What [`decode`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole header: `consumed` bytes belong to it, the rest is the application's.
    Complete { consumed: usize, header: Header<'a> },
    /// The buffer is a strict prefix of a header that may still be valid: read more.
    Partial,
}

/// Which protocol version carried the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// v2 command. v1 headers are always `Proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Relayed connection: the addresses are the original client's.
    Proxy,
    /// Sent by the proxy itself (health checks): use the socket's own addresses.
    Local,
}

/// The address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses<'a> {
    /// v1 `UNKNOWN`, v2 `UNSPEC`, or v2 `LOCAL` (whose address block is skipped).
    Unspecified,
    /// TCP/UDP over IPv4 or IPv6 (v1 `TCP4`/`TCP6`, v2 INET/INET6).
    Inet {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 AF_UNIX: two 108-byte paths, NUL padded.
    Unix {
        source: &'a [u8],
        destination: &'a [u8],
    },
}

/// A decoded header. Borrows TLV bytes and UNIX paths from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub version: Version,
    pub command: Command,
    pub addresses: Addresses<'a>,
    /// Raw v2 TLV area (empty for v1 and LOCAL). Iterate it with [`Header::tlvs`].
    pub tlv_bytes: &'a [u8],
}

/// One v2 TLV: type byte and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// Iterator over the TLVs of a v2 header; stops at the first malformed TLV.
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

/// Why a header was refused. Small and `Copy`, one variant per check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The buffer starts with neither signature: there is no PROXY header.
    NotProxy,
    /// A v1 header without CRLF within [`V1_MAX_LEN`] bytes.
    V1TooLong,
    // (the decoder implementation adds the remaining variants, each naming one check)
}

impl ProxyError {
    /// A short stable label for logs and metrics, e.g. `"not_proxy"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyError::NotProxy => "not_proxy",
            ProxyError::V1TooLong => "v1_too_long",
        }
    }
}

impl<'a> Header<'a> {
    /// The original client's address, when the header carries an INET source and is PROXY.
    pub fn source(&self) -> Option<SocketAddr> {
        match (self.command, self.addresses) {
            (Command::Proxy, Addresses::Inet { source, .. }) => Some(source),
            _ => None,
        }
    }

    /// TLVs of a v2 header.
    pub fn tlvs(&self) -> Tlvs<'a> {
        Tlvs {
            rest: self.tlv_bytes,
        }
    }

    /// The AWS VPC endpoint id (TLV 0xEA, subtype 0x01), when present and valid UTF-8.
    pub fn aws_vpce_id(&self) -> Option<&'a str> {
        None
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;
    fn next(&mut self) -> Option<Tlv<'a>> {
        let _ = self.rest;
        None
    }
}

/// Decodes a PROXY v1 or v2 header at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, ProxyError> {
    let _ = buf;
    Err(ProxyError::NotProxy)
}
