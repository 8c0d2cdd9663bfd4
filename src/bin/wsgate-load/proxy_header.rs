//! PROXY protocol headers as a load balancer writes them: v1 text (AWS CLB) and v2 binary
//! (AWS NLB), for TCP over IPv4. Pure builders over plain addresses; no I/O.
//!
//! Each connection gets its own synthetic client address from [`synthetic_client`], so a
//! gateway's logs and per-client state see many distinct clients, as behind a real balancer.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The 12-byte signature that opens every v2 header (spec section 2.2).
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2 in the high nibble, command PROXY (1) in the low one.
const V2_VERSION_PROXY: u8 = 0x21;
/// Address family INET (1) in the high nibble, transport STREAM (1) in the low one.
const V2_INET_STREAM: u8 = 0x11;
/// Length of the INET address block: two 4-byte addresses and two 2-byte ports.
const V2_INET_ADDR_LEN: u16 = 12;
/// Total size of a v2 INET header: signature, version/command, family, length, addresses.
pub(crate) const V2_INET_HEADER_LEN: usize = 16 + V2_INET_ADDR_LEN as usize;

/// First address of the synthetic client range, 198.18.0.0/15 (RFC 2544, benchmarking).
const SYNTHETIC_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Host addresses in 198.18.0.0/15, leaving out the first and the last.
const SYNTHETIC_HOSTS: u64 = (1 << 17) - 2;
/// Synthetic client ports start above the privileged range.
const SYNTHETIC_PORT_BASE: u64 = 1024;
/// Number of distinct synthetic ports (1024..=65535).
const SYNTHETIC_PORTS: u64 = 65536 - SYNTHETIC_PORT_BASE;

/// Which PROXY header a connection starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyVersion {
    /// Text header, as an AWS Classic Load Balancer sends.
    V1,
    /// Binary header, as an AWS Network Load Balancer sends.
    V2,
}

impl std::str::FromStr for ProxyVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        wsgate::config::keyword(s, "--proxy", &[("v1", Self::V1), ("v2", Self::V2)])
    }
}

/// The client address a balancer would report for connection number `index`:
/// a distinct host in 198.18.0.0/15 and a port above 1023, both derived from `index`.
pub(crate) fn synthetic_client(index: u64) -> SocketAddrV4 {
    let host = (index % SYNTHETIC_HOSTS + 1) as u32;
    let port = (SYNTHETIC_PORT_BASE + index % SYNTHETIC_PORTS) as u16;
    SocketAddrV4::new(Ipv4Addr::from(SYNTHETIC_BASE + host), port)
}

/// The full header for `version`, with `client` as source and `server` as destination.
pub(crate) fn build(version: ProxyVersion, client: SocketAddrV4, server: SocketAddrV4) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => v1(client, server),
        ProxyVersion::V2 => v2(client, server).to_vec(),
    }
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (spec section 2.1).
pub(crate) fn v1(client: SocketAddrV4, server: SocketAddrV4) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// Signature, 0x21, 0x11, length 12, then source and destination address and port,
/// all in network byte order (spec section 2.2).
pub(crate) fn v2(client: SocketAddrV4, server: SocketAddrV4) -> [u8; V2_INET_HEADER_LEN] {
    let mut h = [0u8; V2_INET_HEADER_LEN];
    h[..12].copy_from_slice(&V2_SIGNATURE);
    h[12] = V2_VERSION_PROXY;
    h[13] = V2_INET_STREAM;
    h[14..16].copy_from_slice(&V2_INET_ADDR_LEN.to_be_bytes());
    h[16..20].copy_from_slice(&client.ip().octets());
    h[20..24].copy_from_slice(&server.ip().octets());
    h[24..26].copy_from_slice(&client.port().to_be_bytes());
    h[26..28].copy_from_slice(&server.port().to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    #[test]
    fn v1_is_the_clb_text_line() {
        let h = v1(addr([198, 18, 0, 7], 40001), addr([127, 0, 0, 1], 8080));
        assert_eq!(h, b"PROXY TCP4 198.18.0.7 127.0.0.1 40001 8080\r\n");
    }

    #[test]
    fn v2_is_the_nlb_binary_header_byte_by_byte() {
        let h = v2(addr([198, 18, 1, 2], 0x1234), addr([127, 0, 0, 1], 0x1F90));
        let want: [u8; 28] = [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
            0x0A, // signature
            0x21, // version 2, command PROXY
            0x11, // AF_INET, STREAM
            0x00, 0x0C, // 12 address bytes follow
            198, 18, 1, 2, // source address
            127, 0, 0, 1, // destination address
            0x12, 0x34, // source port
            0x1F, 0x90, // destination port 8080
        ];
        assert_eq!(h, want);
        assert_eq!(
            build(
                ProxyVersion::V2,
                addr([198, 18, 1, 2], 0x1234),
                addr([127, 0, 0, 1], 8080)
            ),
            want
        );
    }

    #[test]
    fn synthetic_clients_are_distinct_and_in_range() {
        assert_eq!(synthetic_client(0), addr([198, 18, 0, 1], 1024));
        assert_eq!(synthetic_client(255), addr([198, 18, 1, 0], 1279));
        let last = synthetic_client(SYNTHETIC_HOSTS - 1);
        assert_eq!(*last.ip(), Ipv4Addr::new(198, 19, 255, 254));
        // Wraps around instead of leaving the benchmarking range.
        assert_eq!(
            *synthetic_client(SYNTHETIC_HOSTS).ip(),
            Ipv4Addr::new(198, 18, 0, 1)
        );
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            assert!(seen.insert(synthetic_client(i)));
        }
    }

    #[test]
    fn parses_the_flag() {
        assert_eq!("v1".parse(), Ok(ProxyVersion::V1));
        assert_eq!("v2".parse(), Ok(ProxyVersion::V2));
        assert!("v3".parse::<ProxyVersion>().is_err());
    }
}
