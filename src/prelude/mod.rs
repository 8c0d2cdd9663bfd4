//! The connection prelude: one buffer, one byte cap and one deadline cover the PROXY header
//! and the HTTP head. Then the request is answered, or upgraded and handed to a session task
//! with every byte that came after the head.
//!
//! ```text
//! socket bytes ─> proxy::decode ─> http::parse_head ─> route ─> page | healthz | static
//!                                                        ├────> handshake ─> admit ─> session task
//!                                                        └────> Reject ─> reject::answer (log, count, status)
//! ```

mod forward;
pub mod framing;
pub mod handshake;
pub mod http;
mod polling;
pub mod proxy;
mod reject;
pub mod route;
pub mod static_files;
pub mod tunnel;
mod upstream;

use crate::auth::{self, Access};
use crate::config::{LimitsConfig, ProxyConfig, ProxyMode};
use crate::gateway::{Gateway, Health, SessionPermit};
use crate::hub::{Membership, Protocol};
use crate::info;
use crate::metrics::Family;
use crate::session::{self, Peer, Polling, Session, Stats};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use http::{Head, HeadAt, Request, Status};
use proxy::{Decoded, ProxyError};
pub(crate) use reject::PreludeError;
use reject::Reject;
use route::Route;
use smol::{Async, Timer};
use std::borrow::Cow;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The embedded chat page served at `/`.
pub const PAGE: &[u8] = include_bytes!("page.html");

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

/// What a routed request turns into.
enum Answer<'a> {
    /// A complete response.
    Bytes(Vec<u8>),
    /// A file under `--static DIR`.
    Static(&'a std::path::Path),
    /// A WebSocket upgrade that passed every check.
    Upgrade {
        room: Cow<'a, str>,
        protocol: Protocol,
        accept: [u8; 28],
        /// `None` for a WebSocket that takes over a polling session (whose admission it
        /// then shares).
        permit: Option<SessionPermit>,
        upgrade: Option<Arc<Polling>>,
        /// What its token allows.
        access: Access,
    },
    /// A request of Engine.IO's polling transport.
    Polling { sid: Option<&'a str>, room: &'a str },
    /// A request for a polling session that lives on another instance, there.
    Forward { to: SocketAddr, sid: &'a str },
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

/// Serves one accepted connection.
pub async fn serve(mut stream: Async<TcpStream>, peer: SocketAddr, gw: Arc<Gateway>) {
    let cfg = &gw.config;
    let mut buf = vec![0u8; cfg.prelude.max_head_bytes];
    let deadline = Instant::now() + cfg.prelude.header_timeout;
    let mut pre = Prelude {
        peer,
        client: peer,
        proxy: ProxyInfo::default(),
        head_start: 0,
        filled: 0,
        local_port: stream.get_ref().local_addr().map_or(0, |a| a.port()),
    };
    let read = read_head(&mut stream, Some(&cfg.proxy), &mut buf, &mut pre)
        .or(async {
            Timer::at(deadline).await;
            Err(PreludeError::Timeout)
        })
        .await;
    let head = match read {
        Ok(Some(head)) => head,
        // A PROXY header then a close: a load balancer's TCP health check. Not an error.
        Ok(None) => return,
        Err(e) => return reject::answer(&mut stream, &gw.metrics, &pre, None, e.into()).await,
    };
    let mut buf = Buf {
        data: buf,
        start: pre.head_start,
        end: pre.filled,
    };
    if cfg.upstream.is_some() {
        // Boxed: its state would otherwise widen every connection's task, held polls included.
        return Box::pin(upstream::serve(stream, buf, pre, gw)).await;
    }
    // Requests of the polling transport keep the connection; every other answer closes it.
    let mut served = 0usize;
    let mut head = head;
    loop {
        served += 1;
        let last = served >= cfg.prelude.keepalive_requests;
        let Some(kept) = answer(stream, &mut buf, &head, &pre, &gw, last).await else {
            return;
        };
        stream = kept;
        match next_head(&mut stream, &mut buf, &mut pre, &gw).await {
            Some(h) => head = h,
            None => return,
        }
    }
}

/// Answers one request whose head is at `buf.data[pre.head_start..]`. Returns the stream
/// when the connection may carry another request.
async fn answer(
    mut stream: Async<TcpStream>,
    buf: &mut Buf,
    head: &HeadAt,
    pre: &Prelude,
    gw: &Arc<Gateway>,
    last: bool,
) -> Option<Async<TcpStream>> {
    let request = head.request(&buf.data[pre.head_start..pre.filled]);
    let body_start = pre.head_start + head.len;
    let answer = match route_request(gw, pre, &request) {
        Ok(a) => a,
        Err(r) => {
            let path = Some(request.target);
            reject::answer(&mut stream, &gw.metrics, pre, path, r).await;
            return None;
        }
    };
    match answer {
        Answer::Bytes(r) => {
            let _ = stream.write_all(&r).await;
        }
        Answer::Static(dir) => {
            match static_files::serve(dir, request.method, request.target).await {
                Ok(r) => {
                    let _ = stream.write_all(&r).await;
                }
                Err(r) => {
                    let path = Some(request.target);
                    reject::answer(&mut stream, &gw.metrics, pre, path, r).await
                }
            }
        }
        Answer::Forward { to, sid } => {
            let sid = sid.to_owned();
            return forward::start(stream, buf, pre, gw, to, &sid).await;
        }
        Answer::Polling { sid, room } => {
            let req = polling::Request {
                target: request.target.to_owned(),
                sid: sid.map(str::to_owned),
                room: room.to_owned(),
                last,
                token: auth::request_token(request.target, request.authorization),
            };
            return polling::answer(stream, buf, head, pre, gw, req).await;
        }
        Answer::Upgrade {
            room,
            protocol,
            accept,
            permit,
            upgrade,
            access,
        } => {
            // Plain clients join before the 101 goes out: a client that saw its upgrade
            // succeed is already in the room and gets the next message sent there. Socket.IO
            // clients wait in the lobby (where shutdown still reaches them) until they connect.
            let membership = match protocol {
                Protocol::Raw => gw.hub.join(&room, protocol),
                Protocol::SocketIo => gw.hub.join_lobby(protocol),
            };
            let room = room.into_owned();
            let leftover = buf.data[body_start..pre.filled].to_vec();
            buf.data = Vec::new();
            if stream
                .write_all(&handshake::response_101(&accept))
                .await
                .is_err()
            {
                return None;
            }
            let start = Start {
                room,
                protocol,
                client: pre.client,
                proxy: pre.proxy.clone(),
                permit,
                upgrade,
                access,
            };
            // A fresh task keeps the prelude's buffers out of the long-lived future.
            let gw2 = gw.clone();
            gw.executor
                .spawn(async move { run_session(stream, leftover, membership, start, gw2).await })
                .detach();
        }
    }
    None
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
    let pcfg = &gw.config.prelude;
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
                gw.drained().await;
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

/// Decides what a complete request gets: an answer, an upgrade, or a refusal.
fn route_request<'r>(
    gw: &'r Arc<Gateway>,
    pre: &Prelude,
    request: &Request<'r>,
) -> Result<Answer<'r>, Reject> {
    let cfg = &gw.config;
    let route = route::route(request.method, request.target);
    if let (Some(dir), Route::Page | Route::NotFound) = (&cfg.static_dir, route) {
        return Ok(Answer::Static(dir));
    }
    let head = request.method == "HEAD";
    let (room, protocol) = match route {
        Route::Page => {
            let r = http::response(Status::Ok, "text/html; charset=utf-8", "", PAGE, head);
            return Ok(Answer::Bytes(r));
        }
        Route::Health => return Ok(Answer::Bytes(health_response(gw.health(), head))),
        Route::NotFound => return Err(Reject::http(Status::NotFound, "not_found", "no such path")),
        Route::MethodNotAllowed => return Err(Reject::method_not_allowed(request.method)),
        Route::BadRoom => {
            let why = "room names are [A-Za-z0-9_.-]{1,64}";
            return Err(Reject::http(Status::BadRequest, "bad_room", why));
        }
        Route::EngineIoError { code, message } => return Err(Reject::engine_io(code, message)),
        Route::Polling { sid, room } => {
            if let Some((sid, to)) = sid.and_then(|sid| Some((sid, owner_elsewhere(gw, pre, sid)?)))
            {
                return Ok(Answer::Forward { to, sid });
            }
            return Ok(Answer::Polling { sid, room });
        }
        Route::SioUpgrade { sid } => {
            let Some(polling) = gw.sessions.polling.get(sid) else {
                if let Some(to) = owner_elsewhere(gw, pre, sid) {
                    return Ok(Answer::Forward { to, sid });
                }
                return Err(Reject::engine_io(1, "Session ID unknown"));
            };
            let accept = handshake::check(request)?;
            check_origin(&cfg.limits, request.origin)?;
            // No admission of its own: it shares the polling session's, and takes over its
            // grant at the switch.
            return Ok(Answer::Upgrade {
                room: Cow::Owned(polling.room.to_string()),
                protocol: Protocol::SocketIo,
                accept,
                permit: None,
                upgrade: Some(polling),
                access: Access::open(),
            });
        }
        Route::Upgrade { room } => (room, Protocol::Raw),
        Route::SocketIo { room } => (room, Protocol::SocketIo),
    };
    let accept = handshake::check(request)?;
    check_origin(&cfg.limits, request.origin)?;
    let token = || auth::request_token(request.target, request.authorization);
    let access = match (&gw.sessions.auth, protocol) {
        (None, _) => Access::open(),
        // Checked here, before the 101: a refusal is a 401 or 403.
        (Some(a), Protocol::Raw) => {
            let grant = a.admit(token().as_deref(), room).map_err(Reject::denied)?;
            Access::granted(grant)
        }
        // Checked at its CONNECT, where a refusal is Socket.IO's `connect_error`.
        (Some(_), Protocol::SocketIo) => Access::pending(token()),
    };
    let permit = gw.admit(pre.client.ip())?;
    Ok(Answer::Upgrade {
        room: Cow::Borrowed(room),
        protocol,
        accept,
        permit: Some(permit),
        upgrade: None,
        access,
    })
}

/// The other instance that owns polling session `sid`, when it is not here and this request
/// did not come from another instance already.
fn owner_elsewhere(gw: &Gateway, pre: &Prelude, sid: &str) -> Option<SocketAddr> {
    if pre.proxy.forwarded || gw.sessions.polling.get(sid).is_some() {
        return None;
    }
    gw.backplane.as_ref()?.owner_of(sid)
}

/// Whether an upgrade with this `Origin` may proceed. No list: all. No header: allowed
/// (non-browser clients do not send one).
pub(crate) fn check_origin(limits: &LimitsConfig, origin: Option<&[u8]>) -> Result<(), Reject> {
    let allowed = &limits.allowed_origins;
    match origin {
        Some(o)
            if !allowed.is_empty()
                && !allowed
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(o.trim_ascii())) =>
        {
            Err(Reject::origin(o))
        }
        _ => Ok(()),
    }
}

/// `/healthz`: 200 while serving, 503 once draining, so the load balancer stops sending.
/// With `--redis` a second line says `backplane: up` or `backplane: down`; it stays 200 while
/// Redis is down, since this instance still serves its own clients.
pub fn health_response(h: Health, head: bool) -> Vec<u8> {
    let (status, first) = if h.draining {
        (Status::Unavailable, "draining\n")
    } else {
        (Status::Ok, "ok\n")
    };
    let detail = match h.backplane_up {
        None => "",
        Some(true) => "backplane: up\n",
        Some(false) => "backplane: down\n",
    };
    let body = [first, detail].concat();
    http::response(status, "text/plain", "", body.as_bytes(), head)
}

/// What a session task starts from.
struct Start {
    room: String,
    protocol: Protocol,
    client: SocketAddr,
    proxy: ProxyInfo,
    permit: Option<SessionPermit>,
    /// The polling session this WebSocket may take over.
    upgrade: Option<Arc<Polling>>,
    access: Access,
}

async fn run_session(
    stream: Async<TcpStream>,
    leftover: Vec<u8>,
    membership: Membership,
    start: Start,
    gw: Arc<Gateway>,
) {
    let Start {
        room,
        protocol,
        client,
        proxy,
        permit,
        upgrade,
        mut access,
    } = start;
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
        transport = "websocket",
        upgrade = upgrade.as_ref().map_or("-", |p| &p.sid),
        user = access.user(),
        proxy = proxy.version.unwrap_or("none"),
        vpce = proxy.vpce.as_deref().unwrap_or("-")
    );
    if upgrade.is_none() && protocol == Protocol::SocketIo {
        gw.metrics.count(Family::SioTransport, "websocket");
    }
    let sio = protocol == Protocol::SocketIo;
    if sio {
        gw.metrics.sio_websocket_open.fetch_add(1, Relaxed);
    }
    let mut stats = Stats::default();
    let who = Session {
        room: &room,
        protocol,
        peer: &peer,
        upgrade: upgrade.as_deref(),
    };
    let end = session::run(
        stream,
        leftover,
        membership,
        who,
        &gw.sessions,
        &mut stats,
        &mut access,
    )
    .await;
    // Built again rather than kept: the task's state would hold both across the session.
    let who = Session {
        room: &room,
        protocol,
        peer: &peer,
        upgrade: upgrade.as_deref(),
    };
    session::log_close(&gw.sessions, &who, opened, end, &stats, &access);
    if sio {
        gw.metrics.sio_websocket_open.fetch_sub(1, Relaxed);
    }
    // Counted out only now: the drain waits for the last permit, so every close line is
    // written before the process exits. A session taken over from polling holds the
    // polling session's.
    drop(permit);
    if let Some(p) = upgrade.filter(|p| p.is_upgraded()) {
        p.release();
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
