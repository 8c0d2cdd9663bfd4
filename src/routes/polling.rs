//! The HTTP side of Engine.IO's polling transport: one request at a time on a kept-alive
//! connection, each answered as engine.io's `lib/transports/polling.ts` answers it. The
//! session the requests share is [`crate::session::polling`].
//!
//! ```text
//! OPTIONS            -> 204, the CORS preflight (for origins in --allowed-origins)
//! GET  (no sid)      -> admit (503/429) -> 200 open packet
//! GET  sid           -> held until there is something to send -> 200 `\x1e`-joined packets
//! POST sid + body    -> packets handled in order -> 200 `ok`; over --max-message-bytes: 413
//! unknown sid: 400 {"code":1,..}  upgraded sid: 400 {"code":3,..}  other origin: 403 {"code":4,..}
//! ```
//!
//! * **Keep-alive.** Browsers poll on one connection. Each request gets the prelude's head
//!   cap and deadline (the body too); between requests the connection waits at most
//!   `--keepalive-timeout`, and carries at most `--keepalive-requests`. Errors close it.
//! * **Memory.** While a GET is held the connection gives its head buffer back, so that an
//!   idle polling client costs its session, not a request buffer.
//! * **A held GET whose client goes away** (the connection closes) closes the session, as
//!   the reference closes the transport.

use crate::auth::Access;
use crate::config::LimitsConfig;
use crate::gateway::Gateway;
use crate::http::framing::{self, BodyLen};
use crate::http::{self, HeadAt, Status};
use crate::prelude::reject::{self, Reject};
use crate::prelude::{Buf, Prelude};
use crate::session::polling::Refused;
use crate::session::{Peer, Polling};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::{Async, Timer};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

/// What the router found in a polling request, owned, so that the buffer it came from can
/// read the body.
#[derive(Debug)]
pub(super) struct Request {
    pub target: String,
    pub sid: Option<String>,
    pub room: String,
    /// The connection's last request (`--keepalive-requests`).
    pub last: bool,
    /// The token the request carries (`?token=` or `Authorization: Bearer`).
    pub token: Option<String>,
}

/// What a polling request leads to.
pub(super) enum Next<'a> {
    /// Answered: the stream when the connection may carry another request.
    Done(Option<Async<TcpStream>>),
    /// A GET to hold until its session has something to send: [`held`] answers it. (Boxed
    /// until then, so that this stays small beside the held GET's state.)
    Hold(Box<Held<'a>>),
}

/// A GET to hold: only what its answer needs, so that a held GET (an idle polling client)
/// keeps no more than this and [`hold`]'s state, not the request's.
pub(super) struct Held<'a> {
    stream: Async<TcpStream>,
    /// The connection's head buffer, given back while the GET is held.
    buf: &'a mut Buf,
    session: Arc<Polling>,
    cors: String,
    close_asked: bool,
    target: String,
}

/// Answers one polling request whose head is at `buf.data[pre.head_start..]`, or hands a GET
/// to hold back to the caller (which answers it with [`held`] once this future is freed).
pub(super) async fn answer<'a>(
    mut stream: Async<TcpStream>,
    buf: &'a mut Buf,
    head: &HeadAt,
    pre: &Prelude,
    gw: &Arc<Gateway>,
    req: Request,
) -> Next<'a> {
    let cfg = &gw.config;
    let Fields {
        method,
        close_asked,
        origin,
        body,
        allow_headers,
    } = fields(&buf.data[pre.head_start..pre.head_start + head.len]);
    let close_asked = close_asked || req.last || gw.is_draining();
    let cors = cors_headers(&cfg.limits, origin.as_deref());
    buf.start = pre.head_start + head.len;
    buf.end = pre.filled;
    let refuse = |r: Reject| (r, req.target.as_str());
    // Framing is checked for every method, so that no request is read one way here and
    // another way by whatever is in front (RFC 9112 6.3): a GET's body would otherwise be
    // taken for the next request.
    let framing = match (method.as_str(), body) {
        (_, Err(e)) => Err(Reject::http(Status::BadRequest, e.as_str(), e)),
        ("POST", Ok(b)) => Ok(b),
        (_, Ok(BodyLen::None | BodyLen::Length(0))) => Ok(BodyLen::None),
        (_, Ok(_)) => Err(Reject::http(
            Status::BadRequest,
            "polling_body_unexpected",
            "only a POST carries a body",
        )),
    };
    drop(origin);
    // Refused before anything is held: the pair is not kept across a held GET's wait.
    let (cors, body) = match (cors, framing) {
        (Ok(cors), Ok(body)) => (cors, body),
        (Err(r), _) | (_, Err(r)) => {
            // (Boxed: this rare path must not widen the future of every held GET.)
            Box::pin(reject::answer(
                &mut stream,
                &gw.metrics,
                pre,
                Some(&req.target),
                r,
            ))
            .await;
            return Next::Done(None);
        }
    };
    let allow_headers = if method == "OPTIONS" {
        allow_headers
    } else {
        None
    };
    let result = match (method.as_str(), &req.sid) {
        ("OPTIONS", _) => {
            let mut extra = cors;
            if !extra.is_empty() {
                extra.push_str("Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n");
                if let Some(h) = allow_headers.filter(|h| is_header_list(h)) {
                    extra.push_str(&format!("Access-Control-Allow-Headers: {h}\r\n"));
                }
            }
            Ok(http::response_kept(
                Status::NoContent,
                "",
                &extra,
                b"",
                close_asked,
            ))
        }
        ("GET", None) => match handshake(gw, pre, &req) {
            Ok(open) => {
                let ctype = "text/plain; charset=UTF-8";
                let body = open.as_bytes();
                Ok(http::response_kept(
                    Status::Ok,
                    ctype,
                    &cors,
                    body,
                    close_asked,
                ))
            }
            Err(r) => Err(refuse(r)),
        },
        ("GET", Some(sid)) => match gw.sessions.polling.get(sid) {
            None => Err(refuse(unknown_sid())),
            Some(session) => {
                return Next::Hold(Box::new(Held {
                    stream,
                    buf,
                    session,
                    cors,
                    close_asked,
                    target: req.target.clone(),
                }))
            }
        },
        ("POST", Some(sid)) => match gw.sessions.polling.get(sid) {
            None => Err(refuse(unknown_sid())),
            Some(session) => match read_body(&mut stream, buf, body, gw).await {
                Err(r) => Err(refuse(r)),
                Ok(data) => {
                    // A CONNECT's wait for Redis (recovery across instances) comes first.
                    // (Boxed: it must not widen the future of every held GET.)
                    Box::pin(session.prepare(&data)).await;
                    match session.post(&data) {
                        Ok(()) => Ok(http::response_kept(
                            Status::Ok,
                            "text/html",
                            &cors,
                            b"ok",
                            close_asked,
                        )),
                        Err(e) => Err(refuse(refused(e))),
                    }
                }
            },
        },
        _ => {
            let mut r = Reject::method_not_allowed(&method);
            r.headers = "Allow: GET, POST, OPTIONS\r\n";
            Err(refuse(r))
        }
    };
    Next::Done(match result {
        Ok(response) => {
            if stream.write_all(&response).await.is_err() || close_asked {
                return Next::Done(None);
            }
            Some(stream)
        }
        Err((r, target)) => {
            reject::answer(&mut stream, &gw.metrics, pre, Some(target), r).await;
            None
        }
    })
}

/// Holds `h`'s GET until its session has something to send, and answers it. Returns the
/// stream when the connection may carry another request. (Not an async fn: an async fn
/// would keep `h` beside the fields moved out of it, for the whole wait.)
#[allow(clippy::boxed_local)] // `Next` carries it boxed; it is freed here, before the wait
pub(super) fn held<'a>(
    h: Box<Held<'a>>,
    pre: &'a Prelude,
    gw: &'a Arc<Gateway>,
) -> impl std::future::Future<Output = Option<Async<TcpStream>>> + Send + 'a {
    let Held {
        mut stream,
        buf,
        session,
        cors,
        close_asked,
        target,
    } = *h;
    async move {
        let refusal = match hold(&mut stream, buf, &session, &gw.config).await {
            Some(Ok(payload)) => {
                let ctype = "text/plain; charset=UTF-8";
                let response = http::response_kept(Status::Ok, ctype, &cors, &payload, close_asked);
                drop(payload);
                if stream.write_all(&response).await.is_err() || close_asked {
                    return None;
                }
                return Some(stream);
            }
            Some(Err(e)) => refused(e),
            // The client went away: nothing to answer.
            None => return None,
        };
        // (Boxed: this rare path must not widen the future of every held GET.)
        Box::pin(reject::answer(
            &mut stream,
            &gw.metrics,
            pre,
            Some(&target),
            refusal,
        ))
        .await;
        None
    }
}

/// What a polling request's head says beyond what the router looked at, owned: the header
/// array it is parsed into must not live across the await that holds a GET.
struct Fields {
    method: String,
    /// HTTP/1.0, or `Connection: close`.
    close_asked: bool,
    origin: Option<Vec<u8>>,
    body: Result<BodyLen, framing::FramingError>,
    allow_headers: Option<String>,
}

fn fields(head: &[u8]) -> Fields {
    // The prelude parsed this head; here the framing and CORS headers are wanted too.
    let mut hs = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut hs);
    let _ = parsed.parse(head);
    let headers = &*parsed.headers;
    Fields {
        method: parsed.method.unwrap_or_default().to_owned(),
        close_asked: parsed.version == Some(0)
            || framing::has_token(headers, "connection", "close"),
        origin: framing::header(headers, "origin").map(<[u8]>::to_vec),
        body: framing::request_body(headers),
        allow_headers: framing::header(headers, "access-control-request-headers")
            .map(|h| String::from_utf8_lossy(h).into_owned()),
    }
}

/// The handshake GET: admits the client and opens its session. Returns the open packet.
fn handshake(gw: &Arc<Gateway>, pre: &Prelude, req: &Request) -> Result<String, Reject> {
    let permit = gw.admission.admit(pre.client.ip())?;
    let peer = Peer {
        conn: gw.next_conn(),
        client: pre.client,
    };
    // Checked at its CONNECT (`40`), where a refusal is Socket.IO's `connect_error`.
    let access = match &gw.sessions.auth {
        Some(_) => Access::pending(req.token.clone()),
        None => Access::open(),
    };
    let (session, open) = Polling::open(&gw.sessions, &req.room, peer, permit, access);
    gw.executor.spawn(session.keep()).detach();
    Ok(open)
}

/// Holds a GET until its session has something to send. The head buffer is given back
/// meanwhile (unless a pipelined request waits in it). `None`: the client closed.
async fn hold(
    stream: &mut Async<TcpStream>,
    buf: &mut Buf,
    session: &Polling,
    cfg: &crate::config::Config,
) -> Option<Result<Vec<u8>, Refused>> {
    let pipelined = buf.end > buf.start;
    if !pipelined {
        *buf = Buf {
            data: Vec::new(),
            start: 0,
            end: 0,
        };
    }
    // (Readiness, then a non-blocking peek: `Async::peek`'s future is 264 bytes, kept by
    // every held GET.)
    let gone = async {
        loop {
            stream.readable().await.ok()?;
            let mut probe = [0u8; 1];
            match stream.get_ref().peek(&mut probe) {
                Ok(0) => return None,
                // A request pipelined behind the held GET waits for its answer.
                Ok(_) => return std::future::pending().await,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return None,
            }
        }
    };
    let result = async { Some(session.poll().await) }.or(gone).await;
    if result.is_none() {
        session.client_gone();
    }
    if !pipelined {
        buf.data = vec![0; cfg.prelude.max_head_bytes];
    }
    result
}

/// Reads a POST body of at most `--max-message-bytes` (larger: 413, as the reference answers
/// a body over `maxHttpBufferSize`) within the prelude's deadline.
async fn read_body(
    stream: &mut Async<TcpStream>,
    buf: &mut Buf,
    body: BodyLen,
    gw: &Gateway,
) -> Result<Vec<u8>, Reject> {
    let max = gw.config.session.max_message_bytes;
    let len = match body {
        BodyLen::None => 0,
        BodyLen::Length(n) if n > max as u64 => {
            let why = format!("a polling body of {n} bytes is over --max-message-bytes ({max})");
            return Err(Reject::http(
                Status::PayloadTooLarge,
                "polling_body_too_big",
                why,
            ));
        }
        BodyLen::Length(n) => n as usize,
        BodyLen::Chunked | BodyLen::UntilClose => {
            let why = "a polling body needs a Content-Length";
            return Err(Reject::http(
                Status::BadRequest,
                "polling_body_chunked",
                why,
            ));
        }
    };
    let mut data = vec![0u8; len];
    let have = (buf.end - buf.start).min(len);
    data[..have].copy_from_slice(&buf.data[buf.start..buf.start + have]);
    buf.start += have;
    let deadline = Instant::now() + gw.config.prelude.header_timeout;
    let rest = async {
        stream
            .read_exact(&mut data[have..])
            .await
            .map_err(|e| Reject::http(Status::BadRequest, "polling_body_incomplete", e))
    };
    rest.or(async {
        Timer::at(deadline).await;
        Err(Reject::http(
            Status::BadRequest,
            "polling_body_timeout",
            "the body did not arrive within --header-timeout",
        ))
    })
    .await?;
    Ok(data)
}

/// The CORS headers for a request's `Origin`: none without `--allowed-origins` (same-origin
/// pages need none) or without an `Origin`; the origin echoed, with credentials, when it is
/// listed; `403` with Engine.IO's `Forbidden` when it is not.
fn cors_headers(limits: &LimitsConfig, origin: Option<&[u8]>) -> Result<String, Reject> {
    match origin {
        Some(o) if !limits.allowed_origins.is_empty() => {
            super::check_origin(limits, Some(o)).map_err(|_| {
                Reject::engine_io(4, "Forbidden").with_field("origin", String::from_utf8_lossy(o))
            })?;
            // Listed, so it is one of our own configured strings: safe to echo.
            let o = String::from_utf8_lossy(o.trim_ascii());
            Ok(format!(
                "Access-Control-Allow-Origin: {o}\r\nAccess-Control-Allow-Credentials: true\r\n\
                 Vary: Origin\r\n"
            ))
        }
        _ => Ok(String::new()),
    }
}

/// Whether a preflight's `Access-Control-Request-Headers` is a plain list of header names,
/// safe to echo.
fn is_header_list(h: &str) -> bool {
    h.len() <= 256
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
}

fn unknown_sid() -> Reject {
    Reject::engine_io(1, "Session ID unknown")
}

fn refused(e: Refused) -> Reject {
    match e {
        Refused::Gone => unknown_sid(),
        Refused::Upgraded | Refused::Ended(_) => Reject::engine_io(3, "Bad request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_only_for_listed_origins() {
        let mut limits = LimitsConfig::default();
        assert_eq!(
            cors_headers(&limits, Some(b"https://a.example")).unwrap(),
            ""
        );
        limits.allowed_origins = vec!["https://a.example".into()];
        let h = cors_headers(&limits, Some(b"https://a.example")).unwrap();
        assert!(h.starts_with("Access-Control-Allow-Origin: https://a.example\r\n"));
        assert!(h.contains("Access-Control-Allow-Credentials: true\r\n"));
        assert_eq!(cors_headers(&limits, None).unwrap(), "");
        let r = cors_headers(&limits, Some(b"https://evil.example")).unwrap_err();
        assert_eq!(r.status, Some(Status::Forbidden));
        assert!(is_header_list("content-type, x-token"));
        assert!(!is_header_list("a\r\nSet-Cookie: x"));
    }
}
