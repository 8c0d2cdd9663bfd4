//! `--upstream`: wsgate in nginx's place in front of an app on this host. Every request but
//! `/healthz` is passed on, with the real client address, over a small pool of kept-alive
//! upstream connections; a WebSocket upgrade the app accepts becomes a tunnel.
//!
//! ```text
//! client head (prelude) ─> framing checks (400) ─> admit (503/429) ─> upstream connection
//!   ─> request head (hop-by-hop out, X-Forwarded-* in) + body (Content-Length or chunked)
//!   <─ response head (502 malformed, 504 late) + body ─> client; both sides kept alive
//!   101 to `Upgrade: websocket` ─> tunnel: two fixed buffers, no idle timeout
//! ```
//!
//! * **Framing** is checked before anything is forwarded ([`crate::http::framing`]): both
//!   `Content-Length` and `Transfer-Encoding`, differing lengths, or a coding other than
//!   `chunked` get `400`, so the app never reads a request differently than we did.
//! * **Bodies** stream through one buffer each way; a chunked body is copied as it is and
//!   scanned only to find its end, so that the connection can carry the next request.
//! * **Faults:** no connection to the upstream: `502`; no response head within
//!   `--upstream-timeout`: `504`; a malformed one: `502`. Each is logged once with the real
//!   client, the upstream and the reason. An upstream that closes in the middle of a response
//!   closes the client's connection: nothing is made up.
//! * **Limits:** each request in flight and each tunnel holds a session permit, so
//!   `--max-connections` and `--max-connections-per-ip` count them; SIGTERM lets them finish
//!   within `--shutdown-timeout`.

use crate::admission::SessionPermit;
use crate::config::UpstreamConfig;
use crate::gateway::Gateway;
use crate::http::framing::{self, BodyLen, Chunked};
use crate::http::{self, Status};
use crate::info;
use crate::lock;
use crate::metrics::{Family, Metrics};
use crate::prelude::reject::{self, Reject};
use crate::prelude::{next_head, read_first, Buf, Prelude};
use crate::tunnel;
use futures_lite::{AsyncWriteExt, FutureExt};
use smol::{Async, Timer};
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a proxied request failed on the upstream's side.
#[derive(Debug)]
enum UpstreamError {
    /// No connection could be made.
    Connect(io::Error),
    /// The response head did not come within `--upstream-timeout`.
    Timeout,
    /// The upstream closed before a complete response head.
    Closed,
    /// The response head is not HTTP/1.1, or too large, or its framing is refused.
    BadResponse(&'static str),
    /// A read or write failed.
    Io(io::Error),
}

impl UpstreamError {
    fn reject(&self, upstream: &str) -> Reject {
        let (status, reason) = match self {
            UpstreamError::Connect(_) => (Status::BadGateway, "upstream_connect_failed"),
            UpstreamError::Timeout => (Status::GatewayTimeout, "upstream_timeout"),
            UpstreamError::Closed => (Status::BadGateway, "upstream_closed"),
            UpstreamError::BadResponse(_) => (Status::BadGateway, "upstream_bad_response"),
            UpstreamError::Io(_) => (Status::BadGateway, "upstream_io_error"),
        };
        let detail = match self {
            UpstreamError::Connect(e) | UpstreamError::Io(e) => format!("{upstream}: {e}"),
            UpstreamError::Timeout => format!("{upstream}: no response head in time"),
            UpstreamError::Closed => format!("{upstream}: closed before a response"),
            UpstreamError::BadResponse(why) => format!("{upstream}: {why}"),
        };
        Reject::upstream(status, reason, detail)
    }
}

/// What became of one proxied request.
enum Done {
    /// The client connection may carry another request.
    KeepAlive,
    /// Close the client connection.
    Close,
    /// It is a WebSocket tunnel now.
    Tunnel(Upgraded),
}

/// Serves an accepted client connection: its first head (`prelude::read_first`), then
/// request after request, until it closes, fails, or hands over to a tunnel.
pub(crate) async fn serve(mut stream: Async<TcpStream>, peer: SocketAddr, gw: Arc<Gateway>) {
    let Some(up) = gw.config.upstream.as_ref() else {
        return;
    };
    // The routes' head is not needed: every header is read again below.
    let Some((mut buf, mut pre, _)) = read_first(&mut stream, peer, &gw).await else {
        return;
    };
    let pcfg = &gw.config.prelude;
    let mut served = 0usize;
    loop {
        served += 1;
        let last = served >= pcfg.keepalive_requests;
        match one(&mut stream, &mut buf, &pre, &gw, up, last).await {
            Done::Close => return,
            Done::Tunnel(u) => return spawn_tunnel(stream, u, &pre, &gw),
            Done::KeepAlive => {}
        }
        if next_head(&mut stream, &mut buf, &mut pre, &gw)
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Proxies the request whose head starts `buf`.
async fn one(
    stream: &mut Async<TcpStream>,
    buf: &mut Buf,
    pre: &Prelude,
    gw: &Arc<Gateway>,
    up: &UpstreamConfig,
    last: bool,
) -> Done {
    let m = &gw.metrics;
    let mut hs = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    // The prelude has parsed this head already; here every header is wanted, not only the
    // few the gateway's own routes look at.
    let Ok(httparse::Status::Complete(head_len)) = req.parse(buf.pending()) else {
        return Done::Close;
    };
    let method = req.method.unwrap_or("GET");
    let target = req.path.unwrap_or("/");
    let headers = &*req.headers;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/healthz" {
        let r = gw.health().response(method == "HEAD");
        let _ = stream.write_all(&r).await;
        return Done::Close;
    }
    let body = match framing::request_body(headers) {
        Ok(b) => b,
        Err(e) => {
            let r = Reject::http(Status::BadRequest, e.as_str(), e);
            reject::answer(stream, m, pre, Some(target), r).await;
            return Done::Close;
        }
    };
    let upgrade_header = framing::header(headers, "upgrade");
    if let Some(u) = upgrade_header {
        if !u.trim_ascii().eq_ignore_ascii_case(b"websocket") {
            // Passing arbitrary upgrades (h2c, ...) lets requests slip past access rules.
            let why = format!("Upgrade: {} is not passed on", String::from_utf8_lossy(u));
            let r = Reject::http(Status::BadRequest, "upgrade_not_websocket", why);
            reject::answer(stream, m, pre, Some(target), r).await;
            return Done::Close;
        }
    }
    let permit = match gw.admission.admit(pre.client.ip()) {
        Ok(p) => p,
        Err(r) => {
            reject::answer(stream, m, pre, Some(target), r.into()).await;
            return Done::Close;
        }
    };
    let upgrade = upgrade_header.is_some();
    let close_asked = framing::has_token(headers, "connection", "close");
    let head = request_head(method, target, headers, pre, up, upgrade, body);
    // The head is done with: what is left of the buffer is body and what follows it.
    let (method, target) = (method.to_owned(), target.to_owned());
    let (method, target) = (method.as_str(), target.as_str());
    buf.start += head_len;
    let started = Instant::now();
    let mut rbuf = Buf {
        data: vec![0u8; up.max_head_bytes],
        start: 0,
        end: 0,
    };
    // A pooled connection the app closed while it was idle shows that only now, by ending
    // before a response: then once more on a new connection, when nothing of the request
    // body was consumed (so the request can be sent again as it was).
    let mut fresh = false;
    let (mut upstream, resp) = loop {
        let attempt = async {
            let (mut conn, pooled) = send(gw, up, &head, body, stream, buf, fresh).await?;
            match read_response(&mut conn, &mut rbuf, method, up).await {
                Ok(r) => Ok((conn, r)),
                Err(UpstreamError::Closed | UpstreamError::Io(_))
                    if pooled && body == BodyLen::None && rbuf.end == 0 =>
                {
                    Err(None)
                }
                Err(e) => Err(Some(e)),
            }
        };
        match attempt.await {
            Ok(ok) => break ok,
            Err(None) if !fresh => fresh = true,
            Err(e) => {
                let e = e.unwrap_or(UpstreamError::Closed);
                if matches!(e, UpstreamError::Connect(_)) {
                    m.upstream_connect_failures.fetch_add(1, Relaxed);
                }
                reject::answer(stream, m, pre, Some(target), e.reject(&up.name)).await;
                return Done::Close;
            }
        }
    };
    m.count(Family::UpstreamResponse, status_class(resp.status));
    if resp.status == 101 && upgrade {
        return tunnel(stream, buf, upstream, rbuf, resp, gw, permit, started).await;
    }
    let keep = !close_asked && !last && !gw.is_draining() && resp.body != BodyLen::UntilClose;
    let mut head = resp.head;
    head.push_str(if keep {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    if stream.write_all(head.as_bytes()).await.is_err() {
        return Done::Close;
    }
    rbuf.start += resp.head_len;
    match copy_body(
        &mut upstream,
        stream,
        &mut rbuf,
        resp.body,
        up.timeout,
        m,
        false,
    )
    .await
    {
        Ok(()) => {}
        // Mid-response: the client sees the connection close, and nothing made up.
        Err(_) => return Done::Close,
    }
    // Reused only when it is known to be at a message boundary with nothing extra.
    if resp.reusable && rbuf.pending().is_empty() {
        let mut pool = lock::mutex(&gw.upstream_pool);
        if pool.len() < up.pool {
            pool.push(upstream);
        }
    }
    drop(permit);
    if keep {
        Done::KeepAlive
    } else {
        Done::Close
    }
}

/// The request head for the upstream: the client's headers minus hop-by-hop ones, the
/// `X-Forwarded-*` set as the classic nginx block sets them, and our own framing.
fn request_head(
    method: &str,
    target: &str,
    headers: &[httparse::Header<'_>],
    pre: &Prelude,
    up: &UpstreamConfig,
    upgrade: bool,
    body: BodyLen,
) -> String {
    let mut h = String::with_capacity(512);
    let _ = write!(h, "{method} {target} HTTP/1.1\r\n");
    let mut host = None;
    for x in headers {
        if x.name.eq_ignore_ascii_case("host") {
            host = Some(x.value);
            if up.rewrite_host {
                continue;
            }
        }
        if framing::is_dropped(x.name, headers) {
            continue;
        }
        h.push_str(x.name);
        h.push_str(": ");
        // httparse allows only visible bytes, SP and HTAB here; obs-text passes as it is.
        h.push_str(&String::from_utf8_lossy(x.value));
        h.push_str("\r\n");
    }
    if up.rewrite_host {
        let _ = write!(h, "Host: {}\r\n", up.name);
    }
    let ip = pre.client.ip();
    // Replaces whatever the client sent, as `$proxy_protocol_addr` does: not spoofable.
    let _ = write!(h, "X-Forwarded-For: {ip}\r\nX-Real-IP: {ip}\r\n");
    if let Some(v) = host {
        let _ = write!(h, "X-Forwarded-Host: {}\r\n", String::from_utf8_lossy(v));
    }
    let _ = write!(
        h,
        "X-Forwarded-Proto: http\r\nX-Forwarded-Port: {}\r\n",
        pre.proxy.dst_port.unwrap_or(pre.local_port)
    );
    match body {
        BodyLen::Length(n) => {
            let _ = write!(h, "Content-Length: {n}\r\n");
        }
        BodyLen::Chunked => h.push_str("Transfer-Encoding: chunked\r\n"),
        BodyLen::None | BodyLen::UntilClose => {}
    }
    h.push_str(if upgrade {
        "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    h
}

/// Connects (a pooled connection first, unless `fresh`), writes the head and the request
/// body; says whether the connection came from the pool. A pooled connection that the app
/// has visibly closed (readable at EOF) is dropped, not used.
async fn send(
    gw: &Gateway,
    up: &UpstreamConfig,
    head: &str,
    body: BodyLen,
    client: &mut Async<TcpStream>,
    buf: &mut Buf,
    fresh: bool,
) -> Result<(Async<TcpStream>, bool), UpstreamError> {
    let pooled = if fresh { None } else { pooled(gw) };
    let from_pool = pooled.is_some();
    let mut conn = match pooled {
        Some(c) => c,
        None => connect(up).await?,
    };
    conn.write_all(head.as_bytes())
        .await
        .map_err(UpstreamError::Io)?;
    copy_body(client, &mut conn, buf, body, up.timeout, &gw.metrics, true)
        .await
        .map_err(UpstreamError::Io)?;
    Ok((conn, from_pool))
}

/// The most recently pooled connection that still looks open: an idle upstream connection
/// has nothing to read, so one that reads EOF (or fails) was closed by the app.
fn pooled(gw: &Gateway) -> Option<Async<TcpStream>> {
    let mut pool = lock::mutex(&gw.upstream_pool);
    while let Some(c) = pool.pop() {
        let mut probe = [0u8; 1];
        match c.get_ref().peek(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(c),
            _ => continue,
        }
    }
    None
}

/// A new connection to the first address that takes it, within `--upstream-connect-timeout`.
async fn connect(up: &UpstreamConfig) -> Result<Async<TcpStream>, UpstreamError> {
    let work = async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in &up.addrs {
            match Async::<TcpStream>::connect(*a).await {
                Ok(s) => {
                    let _ = s.get_ref().set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(UpstreamError::Connect(last))
    };
    work.or(async {
        Timer::after(up.connect_timeout).await;
        Err(UpstreamError::Connect(io::ErrorKind::TimedOut.into()))
    })
    .await
}

/// A response head, rewritten for the client (without its final CRLF).
struct Response {
    status: u16,
    /// Bytes of the head in the response buffer.
    head_len: usize,
    /// Status line and headers for the client, hop-by-hop ones removed.
    head: String,
    body: BodyLen,
    /// The upstream connection can carry another request afterwards.
    reusable: bool,
}

/// Reads and checks the response head, within `--upstream-timeout`. Interim 1xx responses
/// other than 101 are skipped.
async fn read_response(
    upstream: &mut Async<TcpStream>,
    rbuf: &mut Buf,
    method: &str,
    up: &UpstreamConfig,
) -> Result<Response, UpstreamError> {
    let deadline = Instant::now() + up.timeout;
    loop {
        let mut hs = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(rbuf.pending()) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(0);
                // HTTP/1.0 answers are passed on too (as nginx does), never pooled.
                let http10 = resp.version == Some(0);
                if (100..200).contains(&status) && status != 101 {
                    rbuf.start += len;
                    continue;
                }
                let body = framing::response_body(method, status, resp.headers)
                    .map_err(|e| UpstreamError::BadResponse(e.as_str()))?;
                let upgrade = status == 101;
                let mut head = String::with_capacity(256);
                let _ = write!(head, "HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or(""));
                // The Content-Length of an answer to HEAD, or of a 304, is the size of the body
                // it stands for, not framing: it goes on as the app sent it.
                let sized = (method == "HEAD" || status == 304) && body == BodyLen::None;
                for x in resp.headers.iter() {
                    // A 101 keeps its Upgrade; the tunnel needs no framing headers.
                    let keep = (upgrade && x.name.eq_ignore_ascii_case("upgrade"))
                        || (sized && x.name.eq_ignore_ascii_case("content-length"));
                    if !keep && framing::is_dropped(x.name, resp.headers) {
                        continue;
                    }
                    let _ = write!(head, "{}: {}\r\n", x.name, String::from_utf8_lossy(x.value));
                }
                match body {
                    BodyLen::Length(n) => {
                        let _ = write!(head, "Content-Length: {n}\r\n");
                    }
                    BodyLen::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
                    BodyLen::None | BodyLen::UntilClose => {}
                }
                let reusable = !upgrade
                    && !http10
                    && body != BodyLen::UntilClose
                    && !framing::has_token(resp.headers, "connection", "close");
                return Ok(Response {
                    status,
                    head_len: len,
                    head,
                    body,
                    reusable,
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(UpstreamError::BadResponse("malformed response head")),
        }
        if rbuf.end == rbuf.data.len() && rbuf.start == 0 {
            return Err(UpstreamError::BadResponse("response head too large"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rbuf.fill(upstream, left).await {
            Ok(0) => return Err(UpstreamError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(UpstreamError::Timeout),
            Err(e) => return Err(UpstreamError::Io(e)),
        }
    }
}

/// Copies one body from `from` (what `buf` holds of it first) to `to`, and leaves in `buf`
/// whatever came after it. `to_upstream` says which byte counter it adds to.
async fn copy_body(
    from: &mut Async<TcpStream>,
    to: &mut Async<TcpStream>,
    buf: &mut Buf,
    body: BodyLen,
    timeout: Duration,
    m: &Metrics,
    to_upstream: bool,
) -> io::Result<()> {
    let counter = if to_upstream {
        &m.upstream_bytes_out
    } else {
        &m.upstream_bytes_in
    };
    let mut left = match body {
        BodyLen::None => return Ok(()),
        BodyLen::Length(n) => n,
        BodyLen::Chunked | BodyLen::UntilClose => u64::MAX,
    };
    let mut chunked = (body == BodyLen::Chunked).then(Chunked::default);
    loop {
        if buf.start == buf.end {
            if left == 0 {
                return Ok(());
            }
            buf.start = 0;
            buf.end = 0;
            let n = buf.fill(from, timeout).await?;
            if n == 0 {
                return if body == BodyLen::UntilClose {
                    Ok(())
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
        let avail = buf.pending();
        let take = match &mut chunked {
            Some(c) => match c.feed(avail) {
                Ok(Some(n)) => {
                    left = 0;
                    n
                }
                Ok(None) => avail.len(),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            },
            None => {
                let n = (left.min(avail.len() as u64)) as usize;
                if body != BodyLen::UntilClose {
                    left -= n as u64;
                }
                n
            }
        };
        to.write_all(&avail[..take]).await?;
        counter.fetch_add(take as u64, Relaxed);
        buf.start += take;
        if left == 0 {
            return Ok(());
        }
    }
}

/// The status class label (`2xx`, ...).
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// After the upstream's 101: passes the 101 on, with what each side sent after its head;
/// [`spawn_tunnel`] then copies both ways until both sides close.
#[allow(clippy::too_many_arguments)]
async fn tunnel(
    client: &mut Async<TcpStream>,
    cbuf: &mut Buf,
    mut upstream: Async<TcpStream>,
    mut ubuf: Buf,
    resp: Response,
    gw: &Arc<Gateway>,
    permit: SessionPermit,
    started: Instant,
) -> Done {
    let mut head = resp.head;
    head.push_str("Connection: Upgrade\r\n\r\n");
    ubuf.start += resp.head_len;
    // What each side sent after its head goes first (a client may pipeline frames).
    let early = async {
        client.write_all(head.as_bytes()).await?;
        client.write_all(ubuf.pending()).await?;
        upstream.write_all(cbuf.pending()).await
    };
    if early.await.is_err() {
        return Done::Close;
    }
    let m = &gw.metrics;
    m.upstream_bytes_in
        .fetch_add(ubuf.pending().len() as u64, Relaxed);
    m.upstream_bytes_out
        .fetch_add(cbuf.pending().len() as u64, Relaxed);
    cbuf.start = cbuf.end;
    Done::Tunnel(Upgraded {
        upstream,
        permit,
        started,
    })
}

/// A WebSocket the app accepted, its 101 passed on: what the tunnel starts from.
struct Upgraded {
    upstream: Async<TcpStream>,
    permit: SessionPermit,
    started: Instant,
}

/// Runs the tunnel in a task of its own, with the client's socket moved in: the prelude's
/// buffers are freed, and the tunnel brings only what it needs.
fn spawn_tunnel(client: Async<TcpStream>, u: Upgraded, pre: &Prelude, gw: &Arc<Gateway>) {
    let Upgraded {
        upstream,
        permit,
        started,
    } = u;
    let (size, ping) = gw
        .config
        .upstream
        .as_ref()
        .map_or((4096, None), |u| (u.tunnel_buffer_bytes, u.ping));
    let (conn, who) = (gw.next_conn(), pre.client);
    let gw2 = gw.clone();
    info!(
        "tunnel_open",
        conn = conn,
        client = who,
        upstream = upstream_name(gw)
    );
    // A task of its own, with its own two buffers: the prelude's are freed.
    gw.executor
        .spawn(async move {
            let m = &gw2.metrics;
            m.tunnels_open.fetch_add(1, Relaxed);
            let end = tunnel::pump(gw2.edge(), client, upstream, size, ping).await;
            m.tunnels_open.fetch_sub(1, Relaxed);
            m.upstream_bytes_out.fetch_add(end.up, Relaxed);
            m.upstream_bytes_in.fetch_add(end.down, Relaxed);
            m.pings.fetch_add(end.pings, Relaxed);
            info!(
                "tunnel_close",
                conn = conn,
                client = who,
                duration = crate::log::Secs(started.elapsed()),
                bytes_up = end.up,
                bytes_down = end.down,
                pings = end.pings,
                reason = end.reason
            );
            drop(permit);
        })
        .detach();
}

fn upstream_name(gw: &Gateway) -> &str {
    gw.config.upstream.as_ref().map_or("-", |u| u.name.as_str())
}
