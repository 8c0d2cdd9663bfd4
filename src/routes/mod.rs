//! What answers each route, once the prelude has read a request head: one file per kind of
//! answer, as mini-redis has one file per command.
//!
//! ```text
//! prelude::read_first ─> serve: route::route(method, target) ─> route_request
//!     Page | Health          ─> page.rs          (the embedded chat page, /healthz)
//!     Page | NotFound + DIR  ─> static_files.rs  (--static DIR)
//!     Upgrade | SocketIo     ─> websocket.rs     (handshake::check, admit, 101, session task)
//!     Polling                ─> polling.rs       (Engine.IO's HTTP side; the session is session::polling)
//!     owner elsewhere        ─> forward.rs       (PROXY v2 hop to the instance that owns the sid)
//!     anything refused       ─> prelude::reject::answer
//! ```
//!
//! Requests of the polling transport keep the connection (`serve` reads the next head with
//! `prelude::next_head`); every other answer closes it.

mod forward;
mod page;
mod polling;
pub mod static_files;
mod websocket;

use crate::auth::{self, Access};
use crate::config::LimitsConfig;
use crate::gateway::Gateway;
use crate::history::Offset;
use crate::http::{has_token, HeadAt, Request, Status, OFFSET_SUBPROTOCOL};
use crate::hub::Protocol;
use crate::prelude::route::{self, Route};
use crate::prelude::{handshake, next_head, read_first, reject, Buf, Prelude, Reject};
use crate::session::Admitted;
use futures_lite::AsyncWriteExt;
use smol::Async;
use std::borrow::Cow;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::Arc;

pub use page::PAGE;

/// What a routed request turns into.
enum Answer<'a> {
    /// A complete response.
    Bytes(Vec<u8>),
    /// A file under `--static DIR`.
    Static(&'a std::path::Path),
    /// A WebSocket upgrade that passed every check.
    Upgrade(websocket::Upgrade<'a>),
    /// A request of Engine.IO's polling transport.
    Polling { sid: Option<&'a str>, room: &'a str },
    /// A request for a polling session that lives on another instance, there.
    Forward { to: SocketAddr, sid: &'a str },
}

/// Serves an accepted connection: its first head (`prelude::read_first`), then request after
/// request while the answers keep it (the polling transport), at most
/// `--keepalive-requests`.
///
/// Each step is boxed and freed when it ends, so that what a held GET (an idle polling client)
/// keeps is this loop's few locals and [`polling::held`]'s state, not the request's, the
/// router's or the prelude's. (Not an async fn, which would keep its arguments beside the
/// locals they move into.)
pub(crate) fn serve(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    gw: Arc<Gateway>,
) -> impl Future<Output = ()> + Send {
    // (Made here, so that the block below keeps neither `peer` nor the first read's state.)
    let first = Box::pin(first_head(stream, peer, gw.clone()));
    async move {
        let Some((mut stream, mut buf, mut pre, head)) = first.await else {
            return;
        };
        let limit = gw.config.prelude.keepalive_requests;
        let mut served = 1;
        let mut pending = step(stream, &mut buf, head, &pre, &gw, served >= limit);
        loop {
            let Some(kept) = pending.await else {
                return;
            };
            stream = kept;
            let Some(head) = Box::pin(next_head(&mut stream, &mut buf, &mut pre, &gw)).await else {
                return;
            };
            served += 1;
            pending = step(stream, &mut buf, head, &pre, &gw, served >= limit);
        }
    }
}

/// [`read_first`] on a stream it owns, and gives back.
async fn first_head(
    mut stream: Async<TcpStream>,
    peer: SocketAddr,
    gw: Arc<Gateway>,
) -> Option<(Async<TcpStream>, Buf, Prelude, HeadAt)> {
    let (buf, pre, head) = read_first(&mut stream, peer, &gw).await?;
    Some((stream, buf, pre, head))
}

/// One request: its answer, and for a polling GET to hold, the hold. Returns the stream when
/// the connection may carry another request. (The answer's future is made here and boxed, so
/// that neither it nor the head it reads is kept while a GET is held.)
fn step<'a>(
    stream: Async<TcpStream>,
    buf: &'a mut Buf,
    head: HeadAt,
    pre: &'a Prelude,
    gw: &'a Arc<Gateway>,
    last: bool,
) -> Pin<Box<dyn Future<Output = Option<Async<TcpStream>>> + Send + 'a>> {
    let answering = Box::pin(answer(stream, buf, head, pre, gw, last));
    Box::pin(async move {
        match answering.await {
            polling::Next::Done(kept) => kept,
            polling::Next::Hold(held) => polling::held(held, pre, gw).await,
        }
    })
}

/// Answers one request whose head is at `buf.data[pre.head_start..]`: the stream when the
/// connection may carry another request, or a polling GET to hold.
async fn answer<'a>(
    mut stream: Async<TcpStream>,
    buf: &'a mut Buf,
    head: HeadAt,
    pre: &Prelude,
    gw: &Arc<Gateway>,
    last: bool,
) -> polling::Next<'a> {
    let request = head.request(&buf.data[pre.head_start..pre.filled]);
    let answer = match route_request(gw, pre, &request) {
        Ok(a) => a,
        Err(r) => {
            let path = Some(request.target);
            reject::answer(&mut stream, &gw.metrics, pre, path, r).await;
            return polling::Next::Done(None);
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
            return polling::Next::Done(forward::start(stream, buf, pre, gw, to, &sid).await);
        }
        Answer::Polling { sid, room } => {
            let req = polling::Request {
                target: request.target.to_owned(),
                sid: sid.map(str::to_owned),
                room: room.to_owned(),
                last,
                token: auth::request_token(request.target, request.authorization),
            };
            return polling::answer(stream, buf, &head, pre, gw, req).await;
        }
        Answer::Upgrade(up) => {
            let body_start = pre.head_start + head.len;
            let up = up.into_owned();
            websocket::start(stream, buf, body_start, pre, gw, up).await;
        }
    }
    polling::Next::Done(None)
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
        Route::Page => return Ok(Answer::Bytes(page::page(head))),
        Route::Health => return Ok(Answer::Bytes(gw.health().response(head))),
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
            return Ok(Answer::Upgrade(websocket::Upgrade {
                room: Cow::Owned(polling.room.to_string()),
                protocol: Protocol::SocketIo,
                accept,
                admitted: Admitted::TakeOver(polling),
                access: Access::open(),
                since: None,
            }));
        }
        Route::Upgrade { room } => (room, Protocol::Raw),
        Route::SocketIo { room } => (room, Protocol::SocketIo),
    };
    let accept = handshake::check(request)?;
    check_origin(&cfg.limits, request.origin)?;
    // A raw client that asks for `wsgate.offset` (with history on) gets offsets, and with
    // `?since=` what it missed.
    let offsets = protocol == Protocol::Raw
        && gw.hub.history().is_some()
        && request
            .ws_protocol
            .is_some_and(|p| has_token(p, OFFSET_SUBPROTOCOL));
    let (protocol, since) = match offsets {
        false => (protocol, None),
        true => (Protocol::RawOffset, since(request.target)?),
    };
    let token = || auth::request_token(request.target, request.authorization);
    let access = match (&gw.sessions.auth, protocol) {
        (None, _) => Access::open(),
        // Checked here, before the 101: a refusal is a 401 or 403.
        (Some(a), Protocol::Raw | Protocol::RawOffset) => {
            let grant = a.admit(token().as_deref(), room).map_err(Reject::denied)?;
            Access::granted(grant)
        }
        // Checked at its CONNECT, where a refusal is Socket.IO's `connect_error`.
        (Some(_), Protocol::SocketIo) => Access::pending(token()),
    };
    let permit = gw.admission.admit(pre.client.ip())?;
    Ok(Answer::Upgrade(websocket::Upgrade {
        room: Cow::Borrowed(room),
        protocol,
        accept,
        admitted: Admitted::Own(permit),
        access,
        since,
    }))
}

/// The `since` query parameter of a raw resume: absent, or an offset (else 400).
fn since(target: &str) -> Result<Option<Offset>, Reject> {
    let Some(value) = crate::http::query_param(target, "since") else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|e| {
        let why = format!("since={value}: {e}");
        Reject::http(Status::BadRequest, "bad_since", why)
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

/// Whether an upgrade or a polling request with this `Origin` may proceed. No list: all. No
/// header: allowed (non-browser clients do not send one).
fn check_origin(limits: &LimitsConfig, origin: Option<&[u8]>) -> Result<(), Reject> {
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
