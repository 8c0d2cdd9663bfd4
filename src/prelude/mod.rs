//! The connection prelude: one buffer, one byte cap and one deadline cover the PROXY header
//! and the HTTP head. Then the request is answered, or upgraded and handed to a session task
//! with every byte that came after the head.
//!
//! ```text
//! socket bytes ─> proxy::decode ─> http::parse_head ─> route ─> page | healthz | error
//!                                                        └────> handshake ─> session task
//! ```

pub mod handshake;
pub mod http;
pub mod proxy;
pub mod route;
pub mod static_files;

use crate::admin;

use crate::config::ProxyMode;
use crate::hub::{Membership, Protocol};
use crate::log::Level;
use crate::metrics::Family;
use crate::server::{Gateway, Refusal, SessionPermit};
use crate::session::{self, Peer, Stats};
use crate::{info, warn};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use http::{Head, HttpError, Status};
use proxy::{Decoded, ProxyError};
use route::Route;
use smol::{Async, Timer};
use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// The embedded chat page served at `/`.
pub const PAGE: &[u8] = include_bytes!("page.html");

/// What the PROXY stage learned.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyInfo {
    /// `v1` or `v2` when a header was read.
    pub version: Option<&'static str>,
    /// AWS VPC endpoint id (NLB, TLV 0xEA subtype 0x01).
    pub vpce: Option<String>,
}

/// Why a prelude ended without a request.
#[derive(Debug)]
enum PreludeError {
    /// The PROXY header was refused.
    Proxy(ProxyError),
    /// A PROXY header came from a source outside `--trusted-proxies`.
    UntrustedProxy,
    /// `--proxy-protocol required` and the connection did not start with a header.
    MissingProxy,
    /// The head did not parse.
    Http(HttpError),
    /// Prelude longer than `--max-head-bytes`.
    TooLarge,
    /// `--header-timeout` passed.
    Timeout { got: usize },
    /// The client closed before the head was complete (`got` bytes of it received).
    Eof { got: usize },
    /// The socket failed.
    Io(std::io::Error),
}

impl PreludeError {
    fn as_str(&self) -> &'static str {
        match self {
            PreludeError::Proxy(e) => e.as_str(),
            PreludeError::UntrustedProxy => "untrusted_proxy",
            PreludeError::MissingProxy => "missing_proxy_header",
            PreludeError::Http(e) => e.as_str(),
            PreludeError::TooLarge => "head_too_large",
            PreludeError::Timeout { .. } => "header_timeout",
            PreludeError::Eof { .. } => "closed_before_request",
            PreludeError::Io(_) => "io_error",
        }
    }
}

impl fmt::Display for PreludeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreludeError::Proxy(e) => write!(f, "invalid PROXY header: {e:?}"),
            PreludeError::UntrustedProxy => f.write_str("PROXY header from an untrusted source"),
            PreludeError::MissingProxy => f.write_str("no PROXY header (required)"),
            PreludeError::Http(e) => e.fmt(f),
            PreludeError::TooLarge => f.write_str("request head too large"),
            PreludeError::Timeout { got } => write!(f, "head not complete in time ({got} bytes)"),
            PreludeError::Eof { got } => write!(f, "client closed after {got} bytes"),
            PreludeError::Io(e) => e.fmt(f),
        }
    }
}

/// The prelude as far as it got: who the client is and where the head is in the buffer.
struct Prelude {
    /// The real client: the socket peer, or the PROXY header's source.
    client: SocketAddr,
    proxy: ProxyInfo,
    /// Offset of the HTTP head (after the PROXY header).
    head_start: usize,
    /// Bytes read so far.
    filled: usize,
}

/// Serves one accepted connection.
pub(crate) async fn serve(mut stream: Async<TcpStream>, peer: SocketAddr, gw: Arc<Gateway>) {
    let cfg = &gw.config;
    let mut buf = vec![0u8; cfg.prelude.max_head_bytes];
    let deadline = Instant::now() + cfg.prelude.header_timeout;
    let mut pre = Prelude {
        client: peer,
        proxy: ProxyInfo::default(),
        head_start: 0,
        filled: 0,
    };
    let result = read_prelude(&mut stream, peer, &gw, &mut buf, &mut pre)
        .or(async {
            Timer::at(deadline).await;
            Err(PreludeError::Timeout { got: 0 })
        })
        .await;
    match result {
        Ok(true) => {}
        // A PROXY header then a close: a load balancer's TCP health check. Not an error.
        Ok(false) => return,
        Err(PreludeError::Timeout { .. }) => {
            let e = PreludeError::Timeout { got: pre.filled };
            return refuse(&gw, &mut stream, peer, &pre, e).await;
        }
        Err(e) => return refuse(&gw, &mut stream, peer, &pre, e).await,
    }
    let Ok(Head::Complete { len, request }) = http::parse_head(&buf[pre.head_start..pre.filled])
    else {
        unreachable!("read_prelude returns only complete heads")
    };
    let body_start = pre.head_start + len;
    let route = route::route(request.method, request.target);
    if let (Some(dir), Route::Page | Route::NotFound) = (&cfg.static_dir, route) {
        let r = static_files::serve(dir, request.method, request.target).await;
        let _ = stream.write_all(&r).await;
        return;
    }
    match route {
        Route::Page => {
            let head = request.method == "HEAD";
            let r = http::response(Status::Ok, "text/html; charset=utf-8", "", PAGE, head);
            let _ = stream.write_all(&r).await;
        }
        Route::Health => {
            let _ = stream
                .write_all(&admin::health(&gw, request.method == "HEAD"))
                .await;
        }
        Route::NotFound => {
            let e = (Status::NotFound, "not_found", "");
            respond_error(&gw, &mut stream, &pre, request.target, e, &"no such path").await
        }
        Route::MethodNotAllowed => {
            let e = (
                Status::MethodNotAllowed,
                "method_not_allowed",
                "Allow: GET, HEAD\r\n",
            );
            respond_error(&gw, &mut stream, &pre, request.target, e, &request.method).await
        }
        Route::BadRoom => {
            let e = (Status::BadRequest, "bad_room", "");
            let why = "room names are [A-Za-z0-9_.-]{1,64}";
            respond_error(&gw, &mut stream, &pre, request.target, e, &why).await
        }
        Route::EngineIoError { code, message } => {
            gw.metrics.count(Family::HandshakeReject, "engine_io_error");
            warn!(
                "handshake_rejected",
                client = pre.client,
                status = 400,
                reason = "engine_io_error",
                detail = message
            );
            let body = format!("{{\"code\":{code},\"message\":\"{message}\"}}");
            let r = http::response(
                Status::BadRequest,
                "application/json",
                "",
                body.as_bytes(),
                false,
            );
            let _ = stream.write_all(&r).await;
        }
        Route::Upgrade { .. } | Route::SocketIo { .. } => {
            let (room, protocol) = match route {
                Route::SocketIo { room } => (room, Protocol::SocketIo),
                Route::Upgrade { room } => (room, Protocol::Raw),
                _ => unreachable!("matched above"),
            };
            let accept = match handshake::check(&request) {
                Ok(accept) => accept,
                Err(e) => {
                    gw.metrics.count(Family::HandshakeReject, e.as_str());
                    warn!(
                        "handshake_rejected",
                        client = pre.client,
                        peer = peer,
                        status = e.status().code(),
                        reason = e.as_str()
                    );
                    let r = http::error_response(e.status(), e.extra_headers(), &e);
                    let _ = stream.write_all(&r).await;
                    return;
                }
            };
            if !origin_allowed(&gw.config.limits.allowed_origins, request.origin) {
                gw.metrics.count(Family::Refused, "origin");
                let origin = String::from_utf8_lossy(request.origin.unwrap_or_default());
                warn!(
                    "upgrade_refused",
                    client = pre.client,
                    status = 403,
                    reason = "origin",
                    origin = origin
                );
                let r = http::error_response(Status::Forbidden, "", &"Origin not allowed");
                let _ = stream.write_all(&r).await;
                return;
            }
            let permit = match gw.admit(pre.client.ip()) {
                Ok(p) => p,
                Err(refusal) => {
                    let status = match refusal {
                        Refusal::MaxConnections => Status::Unavailable,
                        Refusal::PerIp => Status::TooManyRequests,
                    };
                    warn!(
                        "upgrade_refused",
                        client = pre.client,
                        status = status.code(),
                        reason = refusal.as_str()
                    );
                    let r = http::error_response(status, "Retry-After: 5\r\n", &refusal.as_str());
                    let _ = stream.write_all(&r).await;
                    return;
                }
            };
            // Join before the 101 goes out: a client that saw its upgrade succeed is already in
            // the room and gets the next message sent there.
            let membership = (protocol == Protocol::Raw).then(|| gw.hub.join(room, protocol));
            let room = room.to_owned();
            let leftover = buf[body_start..pre.filled].to_vec();
            drop(buf);
            if stream
                .write_all(&handshake::response_101(&accept))
                .await
                .is_err()
            {
                return;
            }
            let gw2 = gw.clone();
            // A fresh task keeps the prelude's buffers out of the long-lived future.
            let fut = async move {
                let who = (pre.client, pre.proxy);
                run_session(
                    stream,
                    (leftover, membership),
                    room,
                    protocol,
                    who,
                    gw2,
                    permit,
                )
                .await
            };
            gw.executor.spawn(fut).detach();
        }
    }
}

/// Whether an upgrade with this `Origin` may proceed. No list: all. No header: allowed
/// (non-browser clients do not send one).
fn origin_allowed(allowed: &[String], origin: Option<&[u8]>) -> bool {
    match origin {
        _ if allowed.is_empty() => true,
        None => true,
        Some(o) => allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(o.trim_ascii())),
    }
}

async fn run_session(
    stream: Async<TcpStream>,
    (leftover, membership): (Vec<u8>, Option<Membership>),
    room: String,
    protocol: Protocol,
    (client, proxy): (SocketAddr, ProxyInfo),
    gw: Arc<Gateway>,
    permit: SessionPermit,
) {
    let peer = Peer {
        conn: gw.next_conn(),
        client,
    };
    let opened = Instant::now();
    info!(
        "open",
        conn = peer.conn,
        client = peer.client,
        room = room,
        protocol = match protocol {
            Protocol::Raw => "ws",
            Protocol::SocketIo => "socket.io",
        },
        proxy = proxy.version.unwrap_or("none"),
        vpce = proxy.vpce.as_deref().unwrap_or("-")
    );
    let mut stats = Stats::default();
    let end = session::run(
        stream, leftover, membership, &room, protocol, &gw, &peer, &mut stats,
    )
    .await;
    gw.metrics.count(Family::Closed, end.as_str());
    let code = match end {
        session::End::ClientClose(c) => c,
        e => e.code().unwrap_or(1006),
    };
    let duration = Secs(opened.elapsed().as_secs_f64());
    let level = if end.is_client_fault() {
        Level::Warn
    } else {
        Level::Info
    };
    crate::log_at!(
        level,
        "close",
        conn = peer.conn,
        client = peer.client,
        room = room,
        duration = duration,
        code = code,
        reason = end.as_str(),
        msgs_in = stats.msgs_in,
        frames_out = stats.frames_out
    );
    // Counted out only now: the drain waits for this gauge, so every close line is written
    // before the process exits.
    drop(permit);
}

/// Seconds with millisecond precision, as `1.234s`.
struct Secs(f64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.0)
    }
}

/// Reads until a complete head (`Ok(true)`). `Ok(false)` is a PROXY header followed by a
/// close, what a CLB's TCP health check sends. `pre` records progress for error logs.
async fn read_prelude(
    stream: &mut Async<TcpStream>,
    peer: SocketAddr,
    gw: &Gateway,
    buf: &mut [u8],
    pre: &mut Prelude,
) -> Result<bool, PreludeError> {
    let pcfg = &gw.config.proxy;
    // True while the PROXY header is still to be decoded.
    let mut proxy_pending = pcfg.mode != ProxyMode::Off;
    if pcfg.mode == ProxyMode::Required && !pcfg.is_trusted(peer.ip()) {
        return Err(PreludeError::UntrustedProxy);
    }
    loop {
        let filled = pre.filled;
        if proxy_pending {
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
            match http::parse_head(&buf[pre.head_start..filled]) {
                Ok(Head::Complete { .. }) => return Ok(true),
                Ok(Head::Partial) => {}
                Err(e) => return Err(PreludeError::Http(e)),
            }
        }
        if filled == buf.len() {
            return Err(PreludeError::TooLarge);
        }
        // A load balancer's TCP health check: a PROXY header, then a close (or a reset, as
        // HAProxy does). Quiet, whichever way the connection ends.
        let health_check =
            !proxy_pending && filled == pre.head_start && pre.proxy.version.is_some();
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(n) => n,
            Err(_) if health_check => return Ok(false),
            Err(e) => return Err(PreludeError::Io(e)),
        };
        if n == 0 {
            if health_check {
                return Ok(false);
            }
            return Err(PreludeError::Eof { got: filled });
        }
        pre.filled += n;
    }
}

/// Logs a refused prelude and answers it where HTTP is the right language.
async fn refuse(
    gw: &Gateway,
    stream: &mut Async<TcpStream>,
    peer: SocketAddr,
    pre: &Prelude,
    e: PreludeError,
) {
    match &e {
        PreludeError::Proxy(_) | PreludeError::UntrustedProxy | PreludeError::MissingProxy => {
            gw.metrics.count(Family::ProxyError, e.as_str())
        }
        PreludeError::Http(_) | PreludeError::TooLarge | PreludeError::Timeout { .. } => {
            gw.metrics.count(Family::HttpError, e.as_str())
        }
        PreludeError::Eof { .. } | PreludeError::Io(_) => {}
    }
    let client = pre.client;
    let got = pre.filled;
    let status = match &e {
        PreludeError::Http(h) => Some(h.status()),
        PreludeError::TooLarge => Some(Status::HeaderTooLarge),
        _ => None,
    };
    match e {
        // Nothing sent at all: browsers open spare connections they may never use.
        PreludeError::Eof { got: 0 } | PreludeError::Io(_) | PreludeError::Timeout { got: 0 } => {
            info!(
                "prelude_closed",
                client = client,
                peer = peer,
                reason = e.as_str(),
                detail = e
            );
        }
        _ => {
            let code = status.map_or(0, Status::code);
            warn!(
                "prelude_rejected",
                client = client,
                peer = peer,
                status = code,
                reason = e.as_str(),
                bytes = got,
                detail = e
            );
        }
    }
    if let Some(s) = status {
        let _ = stream.write_all(&http::error_response(s, "", &e)).await;
    }
}

/// Answers a routed request with an error: `(status, metric/log label, extra headers)`.
async fn respond_error(
    gw: &Gateway,
    stream: &mut Async<TcpStream>,
    pre: &Prelude,
    path: &str,
    (status, label, extra): (Status, &'static str, &str),
    why: &(dyn fmt::Display + Sync),
) {
    gw.metrics.count(Family::HttpError, label);
    warn!(
        "http_error",
        client = pre.client,
        status = status.code(),
        reason = label,
        path = path,
        detail = why
    );
    let _ = stream
        .write_all(&http::error_response(status, extra, why))
        .await;
}
