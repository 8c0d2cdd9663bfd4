//! The connection prelude: what runs before a request is routed. One buffer, one byte cap
//! and one deadline cover the PROXY header and the HTTP head; then the head goes to the
//! routes (or, with `--upstream`, to the proxy), and a refusal is answered in one place.
//!
//! ```text
//! socket bytes ─> proxy::decode ─> http::parse_head ─> HeadAt ─> routes::serve | upstream::serve
//!                      (pure)            (pure)          │
//!                                                        └─> route::route, handshake::check (pure)
//! any refusal ─> Reject ─> reject::answer (log with the real client, count, status)
//! ```
//!
//! `read_first` reads a connection's first head (with the PROXY header); `next_head`
//! reads the next one on a kept-alive connection.

pub mod handshake;
pub mod proxy;
pub(crate) mod reject;
pub mod route;

use crate::config::{PreludeConfig, ProxyConfig, ProxyMode};
use crate::gateway::Gateway;
use crate::http::{self, Head, HeadAt};
use futures_lite::{AsyncReadExt, FutureExt};
use proxy::{Decoded, ProxyError};
pub(crate) use reject::{PreludeError, Reject};
use smol::{Async, Timer};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What the PROXY stage learned.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyInfo {
    /// `v1` or `v2` when a header was read.
    pub version: Option<&'static str>,
    /// AWS VPC endpoint id (NLB, TLV 0xEA subtype 0x01).
    pub vpce: Option<String>,
    /// The port the client connected to at the load balancer (`X-Forwarded-Port`).
    pub dst_port: Option<u16>,
    /// Another instance forwarded this connection (PROXY v2 hop TLV): it is never forwarded
    /// again.
    pub forwarded: bool,
}

/// The prelude as far as it got: who the client is and where the head is in the buffer.
#[derive(Debug)]
pub(crate) struct Prelude {
    /// The socket's peer: the load balancer when a PROXY header is used.
    pub peer: SocketAddr,
    /// The real client: the socket peer, or the PROXY header's source.
    pub client: SocketAddr,
    pub proxy: ProxyInfo,
    /// Offset of the HTTP head (after the PROXY header).
    pub head_start: usize,
    /// Bytes read so far.
    pub filled: usize,
    /// The port this connection came in on, when no PROXY header says better.
    pub local_port: u16,
}

/// Bytes read from one side, `data[start..end]` not yet used: the prelude's buffer on the
/// client side, the response buffer on the upstream side.
#[derive(Debug)]
pub(crate) struct Buf {
    pub data: Vec<u8>,
    pub start: usize,
    pub end: usize,
}

impl Buf {
    pub(crate) fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Moves what is pending to the front.
    pub(crate) fn compact(&mut self) {
        self.data.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
    }

    /// Reads more (compacting first when the buffer is full), within `timeout`.
    pub(crate) async fn fill(
        &mut self,
        from: &mut Async<TcpStream>,
        timeout: Duration,
    ) -> io::Result<usize> {
        if self.end == self.data.len() {
            self.compact();
        }
        let end = self.end;
        let n = from
            .read(&mut self.data[end..])
            .or(async {
                Timer::after(timeout).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        self.end += n;
        Ok(n)
    }
}

/// Reads a connection's first head, PROXY header included, within the prelude's one cap and
/// deadline. `None`: nothing to route (a load balancer's TCP health check, or a refusal that
/// was answered here).
pub(crate) async fn read_first(
    stream: &mut Async<TcpStream>,
    peer: SocketAddr,
    gw: &Gateway,
) -> Option<(Buf, Prelude, HeadAt)> {
    let cfg = &gw.config;
    let mut data = vec![0u8; cfg.prelude.max_head_bytes];
    let deadline = Instant::now() + cfg.prelude.header_timeout;
    let mut pre = Prelude {
        peer,
        client: peer,
        proxy: ProxyInfo::default(),
        head_start: 0,
        filled: 0,
        local_port: stream.get_ref().local_addr().map_or(0, |a| a.port()),
    };
    let read = read_head(stream, Some(&cfg.proxy), &mut data, &mut pre)
        .or(async {
            Timer::at(deadline).await;
            Err(PreludeError::Timeout)
        })
        .await;
    let head = match read {
        Ok(Some(head)) => head,
        // A PROXY header then a close: a load balancer's TCP health check. Not an error.
        Ok(None) => return None,
        Err(e) => {
            reject::answer(stream, &gw.metrics, &pre, None, e.into()).await;
            return None;
        }
    };
    let buf = Buf {
        data,
        start: pre.head_start,
        end: pre.filled,
    };
    Some((buf, pre, head))
}

/// Waits for the next request on a kept-alive connection and reads its head into `buf`:
/// what is left in the buffer first, then more within the keep-alive timeout (closed quietly
/// when nothing comes, or at once when the drain starts), then the prelude's one cap and
/// deadline for the head. `None`: the connection is done (an error was answered).
pub(crate) async fn next_head(
    stream: &mut Async<TcpStream>,
    buf: &mut Buf,
    pre: &mut Prelude,
    gw: &Gateway,
) -> Option<HeadAt> {
    let pcfg: &PreludeConfig = &gw.config.prelude;
    if buf.data.len() < pcfg.max_head_bytes {
        buf.data.resize(pcfg.max_head_bytes, 0);
    }
    buf.compact();
    pre.head_start = 0;
    pre.filled = buf.end;
    if buf.end == 0 {
        // `peek` leaves the byte for the head reader.
        let mut probe = [0u8; 1];
        let idle = async { stream.peek(&mut probe).await.unwrap_or(0) }
            .or(async {
                Timer::after(pcfg.keepalive_timeout).await;
                0
            })
            .or(async {
                gw.admission.drained().await;
                0
            })
            .await;
        if idle == 0 {
            return None;
        }
    }
    let deadline = Instant::now() + pcfg.header_timeout;
    let head = read_head(stream, None, &mut buf.data, pre)
        .or(async {
            Timer::at(deadline).await;
            Err(PreludeError::Timeout)
        })
        .await;
    match head {
        Ok(h) => {
            buf.end = pre.filled;
            h
        }
        Err(PreludeError::Eof) if pre.filled == 0 => None,
        Err(e) => {
            reject::answer(stream, &gw.metrics, pre, None, e.into()).await;
            None
        }
    }
}

/// Reads until a complete head, and returns where it is. With `proxy` (a connection's first
/// head) a PROXY header is read first, as its mode says. `Ok(None)` is a PROXY header
/// followed by a close, what a CLB's TCP health check sends. `pre` records progress for
/// error logs; bytes already in `buf[..pre.filled]` are parsed before anything is read.
pub(crate) async fn read_head(
    stream: &mut Async<TcpStream>,
    proxy: Option<&ProxyConfig>,
    buf: &mut [u8],
    pre: &mut Prelude,
) -> Result<Option<HeadAt>, PreludeError> {
    let peer = pre.peer;
    let proxy = proxy.filter(|p| p.mode != ProxyMode::Off);
    if proxy.is_some_and(|p| p.mode == ProxyMode::Required && !p.is_trusted(peer.ip())) {
        return Err(PreludeError::UntrustedProxy);
    }
    // True while the PROXY header is still to be decoded.
    let mut proxy_pending = proxy.is_some();
    loop {
        let filled = pre.filled;
        if let (true, Some(pcfg)) = (proxy_pending, proxy) {
            match proxy::decode(&buf[..filled]) {
                Ok(Decoded::Complete { consumed, header }) => {
                    if !pcfg.is_trusted(peer.ip()) {
                        return Err(PreludeError::UntrustedProxy);
                    }
                    if let Some(src) = header.source() {
                        pre.client = src;
                    }
                    pre.proxy.version = Some(match header.version {
                        proxy::Version::V1 => "v1",
                        proxy::Version::V2 => "v2",
                    });
                    pre.proxy.vpce = header.aws_vpce_id().map(str::to_owned);
                    pre.proxy.forwarded = header.is_forwarded_hop();
                    if let proxy::Addresses::Inet { destination, .. } = header.addresses {
                        pre.proxy.dst_port = Some(destination.port());
                    }
                    pre.head_start = consumed;
                    proxy_pending = false;
                }
                Ok(Decoded::Partial) => {}
                Err(ProxyError::NotProxy) if pcfg.mode == ProxyMode::Optional => {
                    proxy_pending = false;
                }
                Err(ProxyError::NotProxy) => return Err(PreludeError::MissingProxy),
                Err(e) => return Err(PreludeError::Proxy(e)),
            }
        }
        if !proxy_pending {
            let head = &buf[pre.head_start..filled];
            match http::parse_head(head) {
                Ok(Head::Complete { len, request }) => {
                    return Ok(Some(HeadAt::new(head, len, &request)))
                }
                Ok(Head::Partial) => {}
                Err(e) => return Err(PreludeError::Http(e)),
            }
        }
        // The cap is checked before every read.
        if filled == buf.len() {
            return Err(PreludeError::TooLarge);
        }
        // A load balancer's TCP health check: a PROXY header, then a close (or a reset, as
        // HAProxy does). Quiet, whichever way the connection ends.
        let health_check =
            !proxy_pending && filled == pre.head_start && pre.proxy.version.is_some();
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(n) => n,
            Err(_) if health_check => return Ok(None),
            Err(e) => return Err(PreludeError::Io(e)),
        };
        if n == 0 {
            if health_check {
                return Ok(None);
            }
            return Err(PreludeError::Eof);
        }
        pre.filled += n;
    }
}
