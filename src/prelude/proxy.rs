//! PROXY protocol v1 and v2 decoding (HAProxy's proxy-protocol.txt): a pure function over
//! `&[u8]` with three outcomes (complete, partial, error) and no heap allocation.
//!
//! The caller owns the buffer; a decoded [`Header`] borrows its TLVs and UNIX paths from it.
//!
//! [`decode`] never panics and refuses as early as it can: it answers
//! [`Decoded::Partial`] only while the bytes seen so far are a strict prefix of some valid
//! header, and an error as soon as no continuation could make them valid. The checks follow
//! the spec strictly: v1 has exactly one space between fields, no heading zeroes, no signs,
//! the family that matches the addresses and CRLF within 107 bytes; v2 accepts only the
//! seven family/protocol bytes the spec lists, and ignores the address block of `LOCAL`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 signature, `PROXY ` (with the space).
pub const V1_SIGNATURE: &[u8; 6] = b"PROXY ";
/// A v1 header is at most 107 bytes, CRLF included (spec section 2.1).
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature, ver/cmd, fam/proto, and the 2-byte length.
pub const V2_FIXED_LEN: usize = 16;

/// The last index a v1 CR may sit at, so that CR and LF both fit in [`V1_MAX_LEN`].
const V1_LAST_CR: usize = V1_MAX_LEN - 2;
/// Bytes a v1 line needs after its last field: CR and LF.
const V1_CRLF_LEN: usize = 2;
/// The longest IPv4 text, `255.255.255.255`.
const V1_IPV4_MAX: usize = 15;
/// The longest IPv6 text std parses, `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const V1_IPV6_MAX: usize = 45;
/// The longest port text, `65535`.
const V1_PORT_MAX: usize = 5;
/// Room for an address prefix plus the longest completion tried by `shortest_completion`.
const V1_SCRATCH_LEN: usize = 64;
/// Offset of the v2 version/command byte (the 13th).
const V2_VER_CMD: usize = 12;
/// Offset of the v2 family/protocol byte (the 14th).
const V2_FAM_PROTO: usize = 13;
/// Offset of the v2 big-endian address length (the 15th and 16th bytes).
const V2_LEN: usize = 14;
/// The only v2 version, in the high nibble of the 13th byte.
const V2_VERSION: u8 = 0x2;
/// v2 command `LOCAL` (health checks): the address block is ignored.
const V2_CMD_LOCAL: u8 = 0x0;
/// v2 command `PROXY`: the address block holds the original endpoints.
const V2_CMD_PROXY: u8 = 0x1;
/// v2 AF_UNSPEC with UNSPEC protocol: no addresses.
const V2_UNSPEC: u8 = 0x00;
/// v2 TCP over IPv4.
const V2_TCP4: u8 = 0x11;
/// v2 UDP over IPv4.
const V2_UDP4: u8 = 0x12;
/// v2 TCP over IPv6.
const V2_TCP6: u8 = 0x21;
/// v2 UDP over IPv6.
const V2_UDP6: u8 = 0x22;
/// v2 UNIX stream.
const V2_UNIX_STREAM: u8 = 0x31;
/// v2 UNIX datagram.
const V2_UNIX_DGRAM: u8 = 0x32;
/// v2 AF_INET address block: two 4-byte addresses, then two 2-byte ports.
const V2_INET_LEN: usize = 2 * 4 + 2 * 2;
/// v2 AF_INET6 address block: two 16-byte addresses, then two 2-byte ports.
const V2_INET6_LEN: usize = 2 * 16 + 2 * 2;
/// One AF_UNIX path, NUL padded.
const V2_UNIX_PATH_LEN: usize = 108;
/// v2 AF_UNIX address block: two paths.
const V2_UNIX_LEN: usize = 2 * V2_UNIX_PATH_LEN;
/// A TLV's type byte and 2-byte big-endian length.
const TLV_HEADER_LEN: usize = 3;
/// TLV type used by AWS (`PP2_TYPE_AWS`).
const PP2_TYPE_AWS: u8 = 0xEA;
/// AWS TLV sub-type carrying the VPC endpoint id (`PP2_SUBTYPE_AWS_VPCE_ID`).
const PP2_SUBTYPE_AWS_VPCE_ID: u8 = 0x01;

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
    /// The text format, `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary format, starting with [`V2_SIGNATURE`].
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
    /// Which format carried it.
    pub version: Version,
    /// `Local` only for v2 `LOCAL`; then `addresses` is `Unspecified`.
    pub command: Command,
    /// The original endpoints, when the header carries them.
    pub addresses: Addresses<'a>,
    /// Raw v2 TLV area (empty for v1 and LOCAL). Iterate it with [`Header::tlvs`].
    pub tlv_bytes: &'a [u8],
}

/// One v2 TLV: type byte and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The type byte (`PP2_TYPE_*`).
    pub kind: u8,
    /// The value, as many bytes as the TLV's length says.
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
    /// v1: no CRLF within the first 107 bytes, or the fields seen so far cannot fit in them.
    V1TooLong,
    /// v1: the protocol field is not exactly `TCP4`, `TCP6` or `UNKNOWN`.
    V1BadFamily,
    /// v1: a source or destination address is missing, malformed, or not of the family.
    V1BadAddress,
    /// v1: a port is missing, not plain decimal, has heading zeroes or exceeds 65535.
    V1BadPort,
    /// v1: the line does not end with CRLF right after the last field.
    V1BadLineEnd,
    /// v2: the version nibble (carried) is not 2.
    V2BadVersion(u8),
    /// v2: the command nibble (carried) is neither LOCAL (0) nor PROXY (1).
    V2BadCommand(u8),
    /// v2 PROXY: the family/protocol byte (carried) is not one the spec lists.
    V2BadFamily(u8),
    /// v2 PROXY: the announced length cannot hold the family's address block.
    V2LengthTooShort {
        /// The announced length (bytes after the fixed 16).
        len: u16,
        /// The address block size of the announced family.
        need: u16,
    },
}

impl ProxyError {
    /// A short stable label for logs and metrics, e.g. `"not_proxy"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyError::NotProxy => "not_proxy",
            ProxyError::V1TooLong => "v1_too_long",
            ProxyError::V1BadFamily => "v1_bad_family",
            ProxyError::V1BadAddress => "v1_bad_address",
            ProxyError::V1BadPort => "v1_bad_port",
            ProxyError::V1BadLineEnd => "v1_bad_line_end",
            ProxyError::V2BadVersion(_) => "v2_bad_version",
            ProxyError::V2BadCommand(_) => "v2_bad_command",
            ProxyError::V2BadFamily(_) => "v2_bad_family",
            ProxyError::V2LengthTooShort { .. } => "v2_length_too_short",
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

    /// Whether another wsgate instance forwarded this connection (TLV [`PP2_TYPE_WSGATE_HOP`]):
    /// a forwarded request is never forwarded again.
    pub fn is_forwarded_hop(&self) -> bool {
        self.tlvs().any(|tlv| tlv.kind == PP2_TYPE_WSGATE_HOP)
    }

    /// The AWS VPC endpoint id (TLV 0xEA, subtype 0x01), when present, non-empty and valid
    /// UTF-8. The first such TLV counts.
    pub fn aws_vpce_id(&self) -> Option<&'a str> {
        let tlv = self.tlvs().find(|tlv| {
            tlv.kind == PP2_TYPE_AWS && tlv.value.first() == Some(&PP2_SUBTYPE_AWS_VPCE_ID)
        })?;
        let id = std::str::from_utf8(tlv.value.get(1..)?).ok()?;
        (!id.is_empty()).then_some(id)
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;
    fn next(&mut self) -> Option<Tlv<'a>> {
        let rest: &'a [u8] = self.rest;
        // Whatever happens, a malformed or truncated TLV ends the iteration.
        self.rest = &[];
        let (head, after) = rest.split_at_checked(TLV_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        let (value, rest) = after.split_at_checked(len)?;
        self.rest = rest;
        Some(Tlv {
            kind: head[0],
            value,
        })
    }
}

/// The custom TLV (in the spec's 0xE0-0xEF range for application use) that marks a connection
/// forwarded by another wsgate instance; its value is empty.
pub const PP2_TYPE_WSGATE_HOP: u8 = 0xE1;

/// Encodes a PROXY v2 `PROXY` header for a TCP connection from `source` to `destination`
/// (both IPv4, or else both as IPv6, v4 addresses mapped), with the hop TLV
/// [`PP2_TYPE_WSGATE_HOP`]: what one instance sends another it forwards a request to.
pub fn encode_v2_hop(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY
    let mut block = Vec::with_capacity(36 + TLV_HEADER_LEN);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11); // INET, STREAM
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
        }
        _ => {
            out.push(0x21); // INET6, STREAM
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            block.extend_from_slice(&v6(source).octets());
            block.extend_from_slice(&v6(destination).octets());
        }
    }
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    block.extend_from_slice(&[PP2_TYPE_WSGATE_HOP, 0, 0]);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// Decodes a PROXY v1 or v2 header at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, ProxyError> {
    if starts_like(buf, V1_SIGNATURE) {
        if buf.len() < V1_SIGNATURE.len() {
            return Ok(Decoded::Partial);
        }
        return decode_v1(buf);
    }
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Decoded::Partial);
        }
        return decode_v2(buf);
    }
    Err(ProxyError::NotProxy)
}

/// Whether `buf` and `signature` agree on their common length (`buf` may be shorter).
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// v1, once `buf` starts with `PROXY `.
fn decode_v1(buf: &[u8]) -> Result<Decoded<'_>, ProxyError> {
    let window = &buf[..buf.len().min(V1_LAST_CR + 1)];
    let cr = window.iter().position(|&b| b == b'\r');
    if cr.is_none() && buf.len() > V1_LAST_CR {
        return Err(ProxyError::V1TooLong);
    }
    let line_end = cr.unwrap_or(buf.len());
    let line = buf.get(V1_SIGNATURE.len()..line_end).unwrap_or_default();
    let Some(addresses) = v1_line(line, cr.is_some(), buf.len())? else {
        return Ok(Decoded::Partial);
    };
    let Some(cr) = cr else {
        return Ok(Decoded::Partial);
    };
    match buf.get(cr + 1) {
        None => Ok(Decoded::Partial),
        Some(b'\n') => Ok(Decoded::Complete {
            consumed: cr + V1_CRLF_LEN,
            header: Header {
                version: Version::V1,
                command: Command::Proxy,
                addresses,
                tlv_bytes: &[],
            },
        }),
        Some(_) => Err(ProxyError::V1BadLineEnd),
    }
}

/// Checks the v1 line after `PROXY ` and before CR. `complete` says whether the CR was seen;
/// when not, the line runs to the end of the `have`-byte buffer and `Ok(None)` means "valid
/// so far, read more".
fn v1_line(
    line: &[u8],
    complete: bool,
    have: usize,
) -> Result<Option<Addresses<'static>>, ProxyError> {
    let (family, rest) = split_space(line);
    if rest.is_none() && !complete {
        let known: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];
        return if known.iter().any(|k| k.starts_with(family)) {
            Ok(None)
        } else {
            Err(ProxyError::V1BadFamily)
        };
    }
    let address = match family {
        // The receiver must ignore anything presented before the CRLF.
        b"UNKNOWN" => return Ok(complete.then_some(Addresses::Unspecified)),
        b"TCP4" => V1Field::Ipv4,
        b"TCP6" => V1Field::Ipv6,
        _ => return Err(ProxyError::V1BadFamily),
    };
    let fields = [address, address, V1Field::Port, V1Field::Port];
    let mut ips = [IpAddr::V4(Ipv4Addr::UNSPECIFIED); 2];
    let mut ports = [0u16; 2];
    let mut cursor = rest;
    for (i, field) in fields.iter().enumerate() {
        let Some(rest) = cursor else {
            return Err(field.error());
        };
        let (token, next) = split_space(rest);
        if next.is_none() && !complete {
            // The token is still arriving: it must be able to become a valid field, and the
            // fewest bytes that complete the line must still fit in V1_MAX_LEN.
            let Some(suffix) = field.shortest_completion(token) else {
                return Err(field.error());
            };
            let later: usize = fields[i + 1..].iter().map(|f| 1 + f.min_len()).sum();
            return if have + suffix + later + V1_CRLF_LEN <= V1_MAX_LEN {
                Ok(None)
            } else {
                Err(ProxyError::V1TooLong)
            };
        }
        match field {
            V1Field::Ipv4 => {
                ips[i] = IpAddr::V4(parse_ipv4(token).ok_or(ProxyError::V1BadAddress)?)
            }
            V1Field::Ipv6 => {
                ips[i] = IpAddr::V6(parse_ipv6(token).ok_or(ProxyError::V1BadAddress)?)
            }
            V1Field::Port => ports[i - 2] = parse_port(token).ok_or(ProxyError::V1BadPort)?,
        }
        cursor = next;
    }
    if cursor.is_some() {
        // A space after the destination port: the line must end there.
        return Err(ProxyError::V1BadLineEnd);
    }
    Ok(complete.then_some(Addresses::Inet {
        source: SocketAddr::new(ips[0], ports[0]),
        destination: SocketAddr::new(ips[1], ports[1]),
    }))
}

/// Splits at the first space: the token before it, and what follows it (None: no space).
fn split_space(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(at) => (&bytes[..at], bytes.get(at + 1..)),
        None => (bytes, None),
    }
}

/// The kinds of v1 fields after the family.
#[derive(Debug, Clone, Copy)]
enum V1Field {
    /// A `TCP4` address.
    Ipv4,
    /// A `TCP6` address.
    Ipv6,
    /// A source or destination port.
    Port,
}

impl V1Field {
    /// The error for a bad field of this kind.
    fn error(self) -> ProxyError {
        match self {
            V1Field::Ipv4 | V1Field::Ipv6 => ProxyError::V1BadAddress,
            V1Field::Port => ProxyError::V1BadPort,
        }
    }

    /// The fewest bytes a valid field of this kind takes: `0.0.0.0`, `::`, `0`.
    fn min_len(self) -> usize {
        match self {
            V1Field::Ipv4 => 7,
            V1Field::Ipv6 => 2,
            V1Field::Port => 1,
        }
    }

    /// The length of the shortest suffix that makes `prefix` a valid field, or None when no
    /// suffix can. Tries the few suffixes that complete any prefix of a valid address.
    fn shortest_completion(self, prefix: &[u8]) -> Option<usize> {
        // Sorted by length. IPv4: finish the octet, then add the missing ones.
        const IPV4: [&[u8]; 8] = [
            b"", b"0", b".0", b"0.0", b".0.0", b"0.0.0", b".0.0.0", b"0.0.0.0",
        ];
        // IPv6: finish the group or open "::", or finish an embedded IPv4 tail.
        const IPV6: [&[u8]; 12] = [
            b"", b"0", b":", b":0", b"::", b".0", b"0.0", b"::0", b".0.0", b"0.0.0", b".0.0.0",
            b"0.0.0.0",
        ];
        const PORT: [&[u8]; 2] = [b"", b"0"];
        let suffixes: &[&[u8]] = match self {
            V1Field::Ipv4 => &IPV4,
            V1Field::Ipv6 => &IPV6,
            V1Field::Port => &PORT,
        };
        let mut scratch = [0u8; V1_SCRATCH_LEN];
        suffixes.iter().find_map(|suffix| {
            let total = prefix.len() + suffix.len();
            let candidate = scratch.get_mut(..total)?;
            candidate[..prefix.len()].copy_from_slice(prefix);
            candidate[prefix.len()..].copy_from_slice(suffix);
            self.is_valid(candidate).then_some(suffix.len())
        })
    }

    /// Whether `token` is a whole valid field of this kind.
    fn is_valid(self, token: &[u8]) -> bool {
        match self {
            V1Field::Ipv4 => parse_ipv4(token).is_some(),
            V1Field::Ipv6 => parse_ipv6(token).is_some(),
            V1Field::Port => parse_port(token).is_some(),
        }
    }
}

/// A dotted quad without heading zeroes (std's parser refuses them).
fn parse_ipv4(token: &[u8]) -> Option<Ipv4Addr> {
    if token.len() > V1_IPV4_MAX {
        return None;
    }
    Ipv4Addr::from_str(std::str::from_utf8(token).ok()?).ok()
}

/// An IPv6 address in std's (RFC 4291 text) syntax, `::` and an IPv4 tail allowed.
fn parse_ipv6(token: &[u8]) -> Option<Ipv6Addr> {
    if token.len() > V1_IPV6_MAX {
        return None;
    }
    Ipv6Addr::from_str(std::str::from_utf8(token).ok()?).ok()
}

/// A decimal port in 0..=65535: digits only, no sign, no heading zero.
fn parse_port(token: &[u8]) -> Option<u16> {
    match token {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ if token.len() > V1_PORT_MAX => None,
        _ => {
            let mut value: u32 = 0;
            for &b in token {
                if !b.is_ascii_digit() {
                    return None;
                }
                value = value * 10 + u32::from(b - b'0');
            }
            u16::try_from(value).ok()
        }
    }
}

/// v2, once `buf` starts with the 12-byte signature. Each byte is checked as soon as it is in.
fn decode_v2(buf: &[u8]) -> Result<Decoded<'_>, ProxyError> {
    let Some(&ver_cmd) = buf.get(V2_VER_CMD) else {
        return Ok(Decoded::Partial);
    };
    let version = ver_cmd >> 4;
    if version != V2_VERSION {
        return Err(ProxyError::V2BadVersion(version));
    }
    let command = match ver_cmd & 0x0F {
        V2_CMD_LOCAL => Command::Local,
        V2_CMD_PROXY => Command::Proxy,
        other => return Err(ProxyError::V2BadCommand(other)),
    };
    let Some(&fam_proto) = buf.get(V2_FAM_PROTO) else {
        return Ok(Decoded::Partial);
    };
    // LOCAL discards the protocol block "including the family which is ignored".
    let need = match (command, fam_proto) {
        (Command::Local, _) | (Command::Proxy, V2_UNSPEC) => 0,
        (Command::Proxy, V2_TCP4 | V2_UDP4) => V2_INET_LEN,
        (Command::Proxy, V2_TCP6 | V2_UDP6) => V2_INET6_LEN,
        (Command::Proxy, V2_UNIX_STREAM | V2_UNIX_DGRAM) => V2_UNIX_LEN,
        (Command::Proxy, other) => return Err(ProxyError::V2BadFamily(other)),
    };
    let Some(&[len_hi, len_lo]) = buf.get(V2_LEN..V2_FIXED_LEN) else {
        return Ok(Decoded::Partial);
    };
    let len = u16::from_be_bytes([len_hi, len_lo]);
    if usize::from(len) < need {
        return Err(ProxyError::V2LengthTooShort {
            len,
            need: need as u16,
        });
    }
    let consumed = V2_FIXED_LEN + usize::from(len);
    let Some(block) = buf.get(V2_FIXED_LEN..consumed) else {
        return Ok(Decoded::Partial);
    };
    let (addresses, tlv_bytes) = match command {
        Command::Local => (Addresses::Unspecified, &[][..]),
        Command::Proxy => v2_addresses(fam_proto, block),
    };
    Ok(Decoded::Complete {
        consumed,
        header: Header {
            version: Version::V2,
            command,
            addresses,
            tlv_bytes,
        },
    })
}

/// Splits a PROXY block (already known long enough for `fam_proto`) into addresses and TLVs.
/// UNSPEC skips the whole block.
fn v2_addresses(fam_proto: u8, block: &[u8]) -> (Addresses<'_>, &[u8]) {
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match fam_proto {
        V2_TCP4 | V2_UDP4 if block.len() >= V2_INET_LEN => {
            let ip =
                |at: usize| Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]);
            let addresses = Addresses::Inet {
                source: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
                destination: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
            };
            (addresses, &block[V2_INET_LEN..])
        }
        V2_TCP6 | V2_UDP6 if block.len() >= V2_INET6_LEN => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let addresses = Addresses::Inet {
                source: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
                destination: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
            };
            (addresses, &block[V2_INET6_LEN..])
        }
        V2_UNIX_STREAM | V2_UNIX_DGRAM if block.len() >= V2_UNIX_LEN => {
            let addresses = Addresses::Unix {
                source: &block[..V2_UNIX_PATH_LEN],
                destination: &block[V2_UNIX_PATH_LEN..V2_UNIX_LEN],
            };
            (addresses, &block[V2_UNIX_LEN..])
        }
        _ => (Addresses::Unspecified, &[][..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_header_decodes_to_what_was_encoded() {
        let cases = [
            ("198.51.100.7:5555", "10.0.0.2:80"),
            ("[2001:db8::1]:443", "[2001:db8::2]:8080"),
            ("198.51.100.7:5555", "[2001:db8::2]:8080"),
        ];
        for (src, dst) in cases {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let mut bytes = encode_v2_hop(src, dst);
            let len = bytes.len();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let Ok(Decoded::Complete { consumed, header }) = decode(&bytes) else {
                panic!("{src} {dst}");
            };
            assert_eq!(consumed, len);
            assert!(header.is_forwarded_hop());
            let want = match (src, dst) {
                (SocketAddr::V4(_), SocketAddr::V6(_)) => {
                    let SocketAddr::V4(v4) = src else {
                        unreachable!()
                    };
                    SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
                }
                _ => src,
            };
            assert_eq!(header.source(), Some(want));
        }
    }

    /// A v1 line from its space-separated fields, CRLF added.
    fn v1(fields: &[&str]) -> Vec<u8> {
        let mut line = fields.join(" ").into_bytes();
        line.extend_from_slice(b"\r\n");
        line
    }

    /// The fixed 16 bytes of a v2 header.
    fn v2_fixed(ver_cmd: u8, fam_proto: u8, len: u16) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(ver_cmd);
        b.push(fam_proto);
        b.extend_from_slice(&len.to_be_bytes());
        b
    }

    fn complete(buf: &[u8]) -> (usize, Header<'_>) {
        match decode(buf) {
            Ok(Decoded::Complete { consumed, header }) => (consumed, header),
            other => panic!("expected a complete header, got {other:?} for {buf:?}"),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Every strict prefix is Partial, the whole is Complete, and trailing bytes stay unread.
    fn assert_every_split(header: &[u8]) {
        for cut in 0..header.len() {
            assert_eq!(
                decode(&header[..cut]),
                Ok(Decoded::Partial),
                "cut at {cut} of {header:?}"
            );
        }
        let mut with_app = header.to_vec();
        with_app.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (consumed, _) = complete(&with_app);
        assert_eq!(consumed, header.len());
        assert_eq!(complete(header).0, header.len());
    }

    #[test]
    fn v1_tcp4() {
        let mut buf = v1(&[
            "PROXY",
            "TCP4",
            "192.168.0.1",
            "192.168.0.11",
            "56324",
            "443",
        ]);
        let line_len = buf.len();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (consumed, header) = complete(&buf);
        assert_eq!(consumed, line_len);
        assert_eq!(header.version, Version::V1);
        assert_eq!(header.command, Command::Proxy);
        assert_eq!(
            header.addresses,
            Addresses::Inet {
                source: sa("192.168.0.1:56324"),
                destination: sa("192.168.0.11:443"),
            }
        );
        assert_eq!(header.source(), Some(sa("192.168.0.1:56324")));
        assert!(header.tlv_bytes.is_empty());
        assert_eq!(header.tlvs().count(), 0);
    }

    #[test]
    fn v1_tcp6() {
        let buf = v1(&[
            "PROXY",
            "TCP6",
            "2001:db8::1",
            "::ffff:192.0.2.7",
            "0",
            "65535",
        ]);
        let (consumed, header) = complete(&buf);
        assert_eq!(consumed, buf.len());
        assert_eq!(
            header.addresses,
            Addresses::Inet {
                source: sa("[2001:db8::1]:0"),
                destination: sa("[::ffff:192.0.2.7]:65535"),
            }
        );
    }

    #[test]
    fn v1_unknown() {
        for fields in [
            &["PROXY", "UNKNOWN"][..],
            &["PROXY", "UNKNOWN", "anything", "at", "all"],
            &["PROXY", "UNKNOWN", ""],
        ] {
            let buf = v1(fields);
            let (consumed, header) = complete(&buf);
            assert_eq!(consumed, buf.len());
            assert_eq!(header.addresses, Addresses::Unspecified);
            assert_eq!(header.source(), None);
        }
    }

    #[test]
    fn v1_max_length_is_107() {
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let worst = v1(&["PROXY", "UNKNOWN", ffff, ffff, "65535", "65535"]);
        assert_eq!(worst.len(), V1_MAX_LEN);
        assert_eq!(complete(&worst).0, V1_MAX_LEN);
        assert_every_split(&worst);

        let one_more = v1(&["PROXY", "UNKNOWN", ffff, ffff, "65535", "65535 "]);
        assert_eq!(one_more.len(), V1_MAX_LEN + 1);
        assert_eq!(decode(&one_more), Err(ProxyError::V1TooLong));
        // Without the CRLF yet: 106 bytes can only end past 107, so refuse already.
        assert_eq!(
            decode(&one_more[..V1_MAX_LEN - 1]),
            Err(ProxyError::V1TooLong)
        );
        assert_eq!(decode(&one_more[..V1_MAX_LEN - 2]), Ok(Decoded::Partial));
    }

    #[test]
    fn v1_fields_that_cannot_fit_are_too_long() {
        let v4_tail_45 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        let v4_tail_44 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.25";
        // 102 bytes: even " 0 0\r\n" would end at 108.
        let buf = format!("PROXY TCP6 {v4_tail_45} {v4_tail_45}");
        assert_eq!(decode(buf.as_bytes()), Err(ProxyError::V1TooLong));
        // 101 bytes: " 0 0\r\n" ends at 107.
        let mut prefix = format!("PROXY TCP6 {v4_tail_45} {v4_tail_44}").into_bytes();
        assert_eq!(decode(&prefix), Ok(Decoded::Partial));
        prefix.push(b' ');
        assert_eq!(decode(&prefix), Ok(Decoded::Partial));
        prefix.push(b'1');
        assert_eq!(decode(&prefix), Ok(Decoded::Partial));
        prefix.push(b'0');
        assert_eq!(decode(&prefix), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn v1_every_split_point() {
        assert_every_split(&v1(&[
            "PROXY",
            "TCP4",
            "255.255.255.255",
            "0.0.0.0",
            "65535",
            "0",
        ]));
        assert_every_split(&v1(&[
            "PROXY",
            "TCP6",
            "fe80::1:2",
            "1:2:3:4:5:6:7:8",
            "80",
            "8080",
        ]));
        assert_every_split(&v1(&[
            "PROXY",
            "TCP6",
            "::ffff:10.0.0.1",
            "1:2:3:4:5:6:1.2.3.4",
            "1",
            "2",
        ]));
        assert_every_split(&v1(&["PROXY", "UNKNOWN"]));
    }

    #[test]
    fn v1_bad_family() {
        for fields in [
            &["PROXY", "TCP5", "1.2.3.4", "5.6.7.8", "1", "2"][..],
            &["PROXY", "tcp4", "1.2.3.4", "5.6.7.8", "1", "2"],
            &["PROXY", "", "TCP4", "1.2.3.4", "5.6.7.8", "1", "2"],
            &["PROXY", "UNKNOWNX"],
        ] {
            assert_eq!(
                decode(&v1(fields)),
                Err(ProxyError::V1BadFamily),
                "{fields:?}"
            );
        }
        // Refused as soon as the keyword cannot match.
        assert_eq!(decode(b"PROXY TX"), Err(ProxyError::V1BadFamily));
        assert_eq!(decode(b"PROXY TCP"), Ok(Decoded::Partial));
    }

    #[test]
    fn v1_bad_address() {
        for fields in [
            &["PROXY", "TCP4", "01.2.3.4", "5.6.7.8", "1", "2"][..],
            &["PROXY", "TCP4", "1.2.3", "5.6.7.8", "1", "2"],
            &["PROXY", "TCP4", "256.2.3.4", "5.6.7.8", "1", "2"],
            &["PROXY", "TCP4", "::1", "5.6.7.8", "1", "2"],
            &["PROXY", "TCP6", "1.2.3.4", "::1", "1", "2"],
            &["PROXY", "TCP6", "::1", "fe80::1%eth0", "1", "2"],
            &["PROXY", "TCP4", "", "1.2.3.4", "5.6.7.8", "1", "2"],
            &["PROXY", "TCP4", "1.2.3.4"],
            &["PROXY", "TCP4"],
        ] {
            assert_eq!(
                decode(&v1(fields)),
                Err(ProxyError::V1BadAddress),
                "{fields:?}"
            );
        }
        assert_eq!(
            decode(b"PROXY TCP4 1.2.3.4 256"),
            Err(ProxyError::V1BadAddress)
        );
        assert_eq!(decode(b"PROXY TCP4 1.2.3.4 25"), Ok(Decoded::Partial));
        assert_eq!(
            decode(b"PROXY TCP6 1:2:3:4:5:6:7:8:"),
            Err(ProxyError::V1BadAddress)
        );
        assert_eq!(decode(b"PROXY TCP6 1:2:3:4:5:6:7:"), Ok(Decoded::Partial));
    }

    #[test]
    fn v1_bad_port() {
        for fields in [
            &["PROXY", "TCP4", "1.2.3.4", "5.6.7.8", "65536", "2"][..],
            &["PROXY", "TCP4", "1.2.3.4", "5.6.7.8", "01", "2"],
            &["PROXY", "TCP4", "1.2.3.4", "5.6.7.8", "+1", "2"],
            &["PROXY", "TCP4", "1.2.3.4", "5.6.7.8", "-1", "2"],
            &["PROXY", "TCP4", "1.2.3.4", "5.6.7.8", "1", "0x50"],
            &["PROXY", "TCP4", "1.2.3.4", "5.6.7.8", "1", ""],
            &["PROXY", "TCP4", "1.2.3.4", "5.6.7.8", "1"],
        ] {
            assert_eq!(
                decode(&v1(fields)),
                Err(ProxyError::V1BadPort),
                "{fields:?}"
            );
        }
        assert_eq!(
            decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 0"),
            Ok(Decoded::Partial)
        );
        assert_eq!(
            decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 00"),
            Err(ProxyError::V1BadPort)
        );
    }

    #[test]
    fn v1_bad_line_end() {
        let cases: [&[u8]; 5] = [
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY UNKNOWN\r\r\n",
            b"PROXY UNKNOWN whatever\r ",
        ];
        for buf in cases {
            assert_eq!(decode(buf), Err(ProxyError::V1BadLineEnd), "{buf:?}");
        }
        // A lone LF is part of the port token, hence a bad port.
        assert_eq!(
            decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
            Err(ProxyError::V1BadPort)
        );
    }

    #[test]
    fn signature_prefixes_are_partial() {
        assert_eq!(decode(b""), Ok(Decoded::Partial));
        assert_eq!(decode(b"PRO"), Ok(Decoded::Partial));
        assert_eq!(decode(b"PROXY"), Ok(Decoded::Partial));
        assert_eq!(decode(&V2_SIGNATURE[..5]), Ok(Decoded::Partial));
        assert_eq!(decode(&V2_SIGNATURE), Ok(Decoded::Partial));
        assert_eq!(decode(b"\r"), Ok(Decoded::Partial));
    }

    #[test]
    fn not_proxy() {
        let cases: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G",
            b"PROXYX TCP4",
            b"PROXY\r\n",
            b"\r\n\r\n\0\r\nQUIT!",
            b"\x16\x03\x01\x02\x00",
        ];
        for buf in cases {
            assert_eq!(decode(buf), Err(ProxyError::NotProxy), "{buf:?}");
        }
    }

    /// PROXY TCP4 192.0.2.1:56324 -> 198.51.100.2:443, then `tlvs`.
    fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
        let mut b = v2_fixed(0x21, V2_TCP4, (12 + tlvs.len()) as u16);
        b.extend_from_slice(&[192, 0, 2, 1]); // source address
        b.extend_from_slice(&[198, 51, 100, 2]); // destination address
        b.extend_from_slice(&56324u16.to_be_bytes()); // source port
        b.extend_from_slice(&443u16.to_be_bytes()); // destination port
        b.extend_from_slice(tlvs);
        b
    }

    #[test]
    fn v2_tcp4_header() {
        let mut buf = v2_tcp4(&[]);
        let header_len = buf.len();
        buf.extend_from_slice(b"GET");
        let (consumed, header) = complete(&buf);
        assert_eq!(consumed, header_len);
        assert_eq!(consumed, 28);
        assert_eq!(header.version, Version::V2);
        assert_eq!(header.command, Command::Proxy);
        assert_eq!(
            header.addresses,
            Addresses::Inet {
                source: sa("192.0.2.1:56324"),
                destination: sa("198.51.100.2:443"),
            }
        );
        assert_eq!(header.source(), Some(sa("192.0.2.1:56324")));
        assert!(header.tlv_bytes.is_empty());
    }

    #[test]
    fn v2_tcp6_and_udp6() {
        for fam_proto in [V2_TCP6, V2_UDP6] {
            let mut buf = v2_fixed(0x21, fam_proto, 36);
            buf.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
            buf.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
            buf.extend_from_slice(&[0x1F, 0x90]); // source port 8080
            buf.extend_from_slice(&[0x00, 0x50]); // destination port 80
            let (consumed, header) = complete(&buf);
            assert_eq!(consumed, 16 + 36);
            assert_eq!(
                header.addresses,
                Addresses::Inet {
                    source: sa("[2001:db8::1]:8080"),
                    destination: sa("[2001:db8::2]:80"),
                }
            );
        }
    }

    #[test]
    fn v2_unix() {
        let mut buf = v2_fixed(0x21, V2_UNIX_STREAM, 216 + 4);
        let mut path = [0u8; 108];
        path[..9].copy_from_slice(b"/tmp/a.so");
        buf.extend_from_slice(&path); // source path, NUL padded
        path[..9].copy_from_slice(b"/tmp/b.so");
        buf.extend_from_slice(&path); // destination path
        buf.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // PP2_TYPE_NOOP, 1 byte
        let (consumed, header) = complete(&buf);
        assert_eq!(consumed, 16 + 220);
        let Addresses::Unix {
            source,
            destination,
        } = header.addresses
        else {
            panic!("not unix: {header:?}");
        };
        assert_eq!(source.len(), 108);
        assert!(source.starts_with(b"/tmp/a.so\0"));
        assert!(destination.starts_with(b"/tmp/b.so\0"));
        assert_eq!(header.source(), None);
        let tlvs: Vec<_> = header.tlvs().collect();
        assert_eq!(
            tlvs,
            [Tlv {
                kind: 0x04,
                value: &[0][..]
            }]
        );
    }

    #[test]
    fn v2_unspec_skips_the_block() {
        let mut buf = v2_fixed(0x21, V2_UNSPEC, 5);
        buf.extend_from_slice(b"\x01\x00\x02h2"); // looks like a TLV, but UNSPEC skips it all
        let (consumed, header) = complete(&buf);
        assert_eq!(consumed, 21);
        assert_eq!(header.command, Command::Proxy);
        assert_eq!(header.addresses, Addresses::Unspecified);
        assert!(header.tlv_bytes.is_empty());
    }

    #[test]
    fn v2_local_skips_len_bytes_whatever_the_family() {
        for fam_proto in [V2_UNSPEC, V2_TCP4, V2_UNIX_DGRAM, 0x44, 0xFF] {
            let mut buf = v2_fixed(0x20, fam_proto, 3);
            buf.extend_from_slice(&[0xAA, 0xBB, 0xCC]); // ignored block
            buf.extend_from_slice(b"app");
            let (consumed, header) = complete(&buf);
            assert_eq!(consumed, 19);
            assert_eq!(header.command, Command::Local);
            assert_eq!(header.addresses, Addresses::Unspecified);
            assert!(header.tlv_bytes.is_empty());
            assert_eq!(header.source(), None);
        }
    }

    #[test]
    fn v2_tlvs_and_aws_vpce_id() {
        let mut tlvs = Vec::new();
        tlvs.extend_from_slice(&[0x01, 0x00, 0x02]); // PP2_TYPE_ALPN, length 2
        tlvs.extend_from_slice(b"h2");
        tlvs.extend_from_slice(&[0xEA, 0x00, 0x17]); // PP2_TYPE_AWS, length 23
        tlvs.push(0x01); // PP2_SUBTYPE_AWS_VPCE_ID
        tlvs.extend_from_slice(b"vpce-0123456789abcdef0");
        tlvs.extend_from_slice(&[0x04, 0x00, 0x00]); // PP2_TYPE_NOOP, empty
        let buf = v2_tcp4(&tlvs);
        let (_, header) = complete(&buf);
        assert_eq!(header.tlv_bytes, &tlvs[..]);
        let kinds: Vec<u8> = header.tlvs().map(|t| t.kind).collect();
        assert_eq!(kinds, [0x01, 0xEA, 0x04]);
        assert_eq!(header.tlvs().next().unwrap().value, b"h2");
        assert_eq!(header.aws_vpce_id(), Some("vpce-0123456789abcdef0"));
        assert_every_split(&buf);
    }

    #[test]
    fn tlvs_stop_at_a_malformed_one() {
        let mut tlvs = Vec::new();
        tlvs.extend_from_slice(&[0xEA, 0x00, 0x02, 0x02, b'x']); // AWS, other subtype
        tlvs.extend_from_slice(&[0x05, 0x00, 0x09, b'a']); // claims 9 bytes, has 1
        let buf = v2_tcp4(&tlvs);
        let (_, header) = complete(&buf);
        let all: Vec<_> = header.tlvs().collect();
        assert_eq!(
            all,
            [Tlv {
                kind: 0xEA,
                value: &[0x02, b'x'][..]
            }]
        );
        assert_eq!(header.aws_vpce_id(), None);
        // Two stray bytes: not even a TLV header.
        let stray = v2_tcp4(&[0xEA, 0x00]);
        let (_, header) = complete(&stray);
        assert_eq!(header.tlvs().count(), 0);
        // A VPC endpoint id that is not UTF-8.
        let not_utf8 = v2_tcp4(&[0xEA, 0x00, 0x02, 0x01, 0xFF]);
        let (_, header) = complete(&not_utf8);
        assert_eq!(header.aws_vpce_id(), None);
    }

    #[test]
    fn v2_every_split_point() {
        assert_every_split(&v2_tcp4(&[]));
        let mut local = v2_fixed(0x20, V2_UNSPEC, 2);
        local.extend_from_slice(&[0, 0]);
        assert_every_split(&local);
        assert_every_split(&v2_fixed(0x21, V2_UNSPEC, 0));
    }

    #[test]
    fn v2_bad_version() {
        for ver_cmd in [0x11, 0x31, 0x01, 0xF1] {
            let buf = v2_tcp4(&[]);
            let mut buf = buf.clone();
            buf[12] = ver_cmd;
            assert_eq!(decode(&buf), Err(ProxyError::V2BadVersion(ver_cmd >> 4)));
            // Refused as soon as the byte is in.
            assert_eq!(
                decode(&buf[..13]),
                Err(ProxyError::V2BadVersion(ver_cmd >> 4))
            );
        }
    }

    #[test]
    fn v2_bad_command() {
        let mut buf = v2_tcp4(&[]);
        buf[12] = 0x22;
        assert_eq!(decode(&buf), Err(ProxyError::V2BadCommand(2)));
        assert_eq!(decode(&buf[..13]), Err(ProxyError::V2BadCommand(2)));
    }

    #[test]
    fn v2_bad_family() {
        for fam_proto in [0x01, 0x10, 0x13, 0x20, 0x30, 0x33, 0x41, 0xFF] {
            let mut buf = v2_tcp4(&[]);
            buf[13] = fam_proto;
            assert_eq!(decode(&buf), Err(ProxyError::V2BadFamily(fam_proto)));
            assert_eq!(decode(&buf[..14]), Err(ProxyError::V2BadFamily(fam_proto)));
        }
    }

    #[test]
    fn v2_length_too_short() {
        let mut buf = v2_fixed(0x21, V2_TCP4, 11);
        buf.extend_from_slice(&[0; 11]);
        assert_eq!(
            decode(&buf),
            Err(ProxyError::V2LengthTooShort { len: 11, need: 12 })
        );
        assert_eq!(
            decode(&v2_fixed(0x21, V2_TCP6, 12)),
            Err(ProxyError::V2LengthTooShort { len: 12, need: 36 })
        );
        assert_eq!(
            decode(&v2_fixed(0x21, V2_UNIX_STREAM, 215)),
            Err(ProxyError::V2LengthTooShort {
                len: 215,
                need: 216
            })
        );
    }

    #[test]
    fn v2_garbage_after_the_signature() {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(b"\xde\xad\xbe\xef garbage");
        assert_eq!(decode(&buf), Err(ProxyError::V2BadVersion(0xd)));
        // A huge announced length is Partial until all of it is in.
        let buf = v2_fixed(0x21, V2_TCP4, u16::MAX);
        assert_eq!(decode(&buf), Ok(Decoded::Partial));
    }

    #[test]
    fn labels_are_stable_snake_case_and_distinct() {
        let all = [
            ProxyError::NotProxy,
            ProxyError::V1TooLong,
            ProxyError::V1BadFamily,
            ProxyError::V1BadAddress,
            ProxyError::V1BadPort,
            ProxyError::V1BadLineEnd,
            ProxyError::V2BadVersion(0),
            ProxyError::V2BadCommand(0),
            ProxyError::V2BadFamily(0),
            ProxyError::V2LengthTooShort { len: 0, need: 0 },
        ];
        let labels: Vec<&str> = all.iter().map(ProxyError::as_str).collect();
        for label in &labels {
            assert!(label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), labels.len());
        assert_eq!(labels[0], "not_proxy");
    }

    #[test]
    fn every_prefix_of_valid_ipv6_text_can_complete() {
        let samples = [
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "1::2:3:4:5:6:7",
            "::ffff:255.255.255.255",
            "1:2:3:4:5:6:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "0001:00a0:0b00:c000::0:1",
            "a:b::c:1.0.0.0",
        ];
        for text in samples {
            for cut in 0..=text.len() {
                let prefix = &text.as_bytes()[..cut];
                assert!(
                    V1Field::Ipv6.shortest_completion(prefix).is_some(),
                    "{:?} of {text}",
                    std::str::from_utf8(prefix)
                );
            }
        }
        assert_eq!(V1Field::Ipv6.shortest_completion(b"1:2:3:4:5:6:7:8:"), None);
        assert_eq!(V1Field::Ipv6.shortest_completion(b"12345"), None);
        assert_eq!(V1Field::Ipv4.shortest_completion(b"1.2."), Some(3));
        assert_eq!(V1Field::Ipv4.shortest_completion(b"01"), None);
    }
}
