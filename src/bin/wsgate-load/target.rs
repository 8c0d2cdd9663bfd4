//! What the tool may connect to and how: the `--url` (host, port, path, query), the loopback-only
//! policy, `--source-ips` ranges, and the request path for each room and protocol. Pure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::socketio;

/// Most source addresses `--source-ips` may name (a /16).
const MAX_SOURCE_IPS: u32 = 1 << 16;

/// Which wire protocol clients speak on top of the WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Plain WebSocket text messages (wsgate, Node `ws`).
    Raw,
    /// Engine.IO v4 / Socket.IO v5, websocket transport only.
    SocketIo,
    /// Engine.IO v4 / Socket.IO v5 on the HTTP long-polling transport (`idle` only).
    SocketIoPolling,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let words = [
            ("raw", Self::Raw),
            ("socketio", Self::SocketIo),
            ("socketio-polling", Self::SocketIoPolling),
        ];
        wsgate::config::keyword(s, "--protocol", &words)
    }
}

/// A parsed `ws://HOST[:PORT][/PATH][?QUERY]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    /// The host as written, for the `Host` header.
    pub(crate) host: String,
    /// The resolved server address; every connection goes here and nowhere else.
    pub(crate) addr: SocketAddr,
    /// The path without query, at least `/`.
    pub(crate) path: String,
    /// The query without `?`, empty when absent.
    pub(crate) query: String,
}

impl Url {
    /// Parses `s`; only `ws://` with an IP literal or `localhost` unless `allow_remote`, and
    /// then only a loopback address unless `allow_remote`.
    pub(crate) fn parse(s: &str, allow_remote: bool) -> Result<Self, String> {
        let rest = s
            .strip_prefix("ws://")
            .ok_or_else(|| format!("--url must start with ws:// (no TLS): {s:?}"))?;
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        let (host, port) = split_host_port(authority)?;
        let ip = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => match h.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) if allow_remote => resolve(h, port)?,
                Err(_) => return Err(format!("--url host {h:?} is not an IP address or localhost (pass --allow-remote to resolve names)")),
            },
        };
        if !ip.is_loopback() && !allow_remote {
            return Err(format!("--url host {ip} is not a loopback address; load traffic stays on this machine unless --allow-remote"));
        }
        Ok(Url {
            host: authority.to_owned(),
            addr: SocketAddr::new(ip, port),
            path: path.to_owned(),
            query: query.to_owned(),
        })
    }

    /// The request target for room `room` of `rooms`, speaking `protocol`.
    /// raw: the URL's path, or `<path>/room-K` when there are several rooms.
    /// socketio: `<path>/socket.io/?EIO=4&transport=websocket[&<query>][&room=room-K]`
    /// (socketio-polling: `transport=polling`); with
    /// several rooms a `room=` in the URL's query gives way to ours.
    pub(crate) fn request_target(&self, protocol: Protocol, room: usize, rooms: usize) -> String {
        let base = self.path.trim_end_matches('/');
        match protocol {
            Protocol::Raw => {
                let mut t = if rooms > 1 {
                    format!("{base}/room-{room}")
                } else {
                    self.path.clone()
                };
                if !self.query.is_empty() {
                    t.push('?');
                    t.push_str(&self.query);
                }
                t
            }
            Protocol::SocketIo | Protocol::SocketIoPolling => {
                let base = base.strip_suffix("/socket.io").unwrap_or(base);
                let engine = match protocol {
                    Protocol::SocketIo => socketio::ENGINE_PATH,
                    _ => socketio::POLLING_PATH,
                };
                let mut t = format!("{base}/{engine}");
                // With several rooms, ours replace a `room=` the URL may carry.
                for param in self.query.split('&').filter(|p| !p.is_empty()) {
                    if rooms <= 1 || !param.starts_with("room=") {
                        t.push('&');
                        t.push_str(param);
                    }
                }
                if rooms > 1 {
                    t.push_str(&format!("&room=room-{room}"));
                }
                t
            }
        }
    }
}

/// `host[:port]` or `[v6][:port]` (split by the gateway's own [`wsgate::config::split_host_port`]);
/// the port defaults to 80.
fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
    let (host, port) = wsgate::config::split_host_port(authority)
        .ok_or_else(|| format!("--url has an unclosed [ in {authority:?}"))?;
    if host.is_empty() {
        return Err("--url has no host".into());
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("--url port {p:?} is not a number"))?,
        None => 80,
    };
    Ok((host, port))
}

/// The first address `host` resolves to (blocking; once, at start-up).
fn resolve(host: &str, port: u16) -> Result<IpAddr, String> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| format!("{host} resolves to no address"))
}

/// `--source-ips FIRST-LAST` (or one address): local IPv4 addresses that client sockets bind to,
/// round robin, so that each address brings its own ephemeral port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceIps {
    first: u32,
    count: u32,
}

impl SourceIps {
    /// Parses `A.B.C.D-E.F.G.H` or `A.B.C.D`; loopback only unless `allow_remote`.
    pub(crate) fn parse(s: &str, allow_remote: bool) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let ip = |t: &str| {
            t.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("--source-ips: {t:?} is not an IPv4 address"))
        };
        let (first, last) = (ip(a)?, ip(b)?);
        for addr in [first, last] {
            if !addr.is_loopback() && !allow_remote {
                return Err(format!("--source-ips: {addr} is not in 127.0.0.0/8 (pass --allow-remote for other local addresses)"));
            }
        }
        let (first, last) = (u32::from(first), u32::from(last));
        if last < first {
            return Err(format!("--source-ips: {s:?} ends before it starts"));
        }
        if last - first >= MAX_SOURCE_IPS {
            return Err(format!("--source-ips: at most {MAX_SOURCE_IPS} addresses"));
        }
        Ok(Self {
            first,
            count: last - first + 1,
        })
    }

    /// The address for connection `index`, round robin over the range.
    pub(crate) fn nth(&self, index: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.first + (index % self.count as u64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s, false).unwrap()
    }

    #[test]
    fn parses_loopback_urls() {
        let u = url("ws://127.0.0.1:8080/ws");
        assert_eq!(
            (u.host.as_str(), u.addr, u.path.as_str(), u.query.as_str()),
            (
                "127.0.0.1:8080",
                "127.0.0.1:8080".parse().unwrap(),
                "/ws",
                ""
            )
        );
        let u = url("ws://localhost:3000/?room=a");
        assert_eq!(
            (u.addr, u.path.as_str(), u.query.as_str()),
            ("127.0.0.1:3000".parse().unwrap(), "/", "room=a")
        );
        let u = url("ws://127.0.0.9");
        assert_eq!((u.addr.port(), u.path.as_str()), (80, "/"));
        let u = url("ws://[::1]:9000/x?y");
        assert_eq!(
            (u.addr, u.path.as_str(), u.query.as_str()),
            ("[::1]:9000".parse().unwrap(), "/x", "y")
        );
    }

    #[test]
    fn refuses_what_leaves_the_machine() {
        assert!(Url::parse("ws://10.0.0.1:80/ws", false)
            .unwrap_err()
            .contains("--allow-remote"));
        assert!(Url::parse("ws://example.com/ws", false)
            .unwrap_err()
            .contains("--allow-remote"));
        assert!(Url::parse("wss://127.0.0.1/ws", false).is_err());
        assert!(Url::parse("ws://127.0.0.1:x/ws", false).is_err());
        assert_eq!(
            Url::parse("ws://10.0.0.1:80/ws", true).unwrap().addr,
            "10.0.0.1:80".parse().unwrap()
        );
    }

    #[test]
    fn raw_rooms_are_paths() {
        let u = url("ws://127.0.0.1:8080/ws");
        assert_eq!(u.request_target(Protocol::Raw, 0, 1), "/ws");
        assert_eq!(u.request_target(Protocol::Raw, 3, 4), "/ws/room-3");
        assert_eq!(
            url("ws://127.0.0.1:8080/").request_target(Protocol::Raw, 1, 2),
            "/room-1"
        );
    }

    #[test]
    fn socketio_targets_keep_the_query() {
        let u = url("ws://127.0.0.1:3000/");
        assert_eq!(
            u.request_target(Protocol::SocketIo, 0, 1),
            "/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            u.request_target(Protocol::SocketIo, 2, 3),
            "/socket.io/?EIO=4&transport=websocket&room=room-2"
        );
        let u = url("ws://127.0.0.1:3000/chat/socket.io/?room=lobby");
        assert_eq!(
            u.request_target(Protocol::SocketIo, 0, 1),
            "/chat/socket.io/?EIO=4&transport=websocket&room=lobby"
        );
    }

    #[test]
    fn source_ranges() {
        let r = SourceIps::parse("127.0.0.2-127.0.0.40", false).unwrap();
        assert_eq!(r.count, 39);
        assert_eq!(r.nth(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(r.nth(38), Ipv4Addr::new(127, 0, 0, 40));
        assert_eq!(r.nth(39), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(SourceIps::parse("127.0.0.5", false).unwrap().count, 1);
        assert!(SourceIps::parse("127.0.0.9-127.0.0.2", false).is_err());
        assert!(SourceIps::parse("10.0.0.1-10.0.0.2", false).is_err());
        assert!(SourceIps::parse("127.0.0.0-127.255.255.255", false).is_err());
    }
}
