//! The operators' listener (`--admin-listen`): `/metrics` in the Prometheus text format,
//! `/healthz`, and with `--api-key-file` the publish API for the app's backend:
//!
//! ```text
//! POST /publish/{room}   Authorization: Bearer KEY   -> 200 {"room":..,"delivered":N}
//!                                                        (--redis: {"room":..,"shared":true})
//!      text/plain: a text message (Socket.IO clients: `chat message` with it)
//!      ?event=NAME + a JSON array: Socket.IO event NAME with those arguments
//!      application/octet-stream: a binary message (plain clients)
//! GET  /rooms            Authorization: Bearer KEY   -> 200 {"rooms":[{"name":..,"members":N}]}
//! GET  /                 the status page (embedded, no CDN), which reads...
//! GET  /status.json      (Bearer KEY when --api-key-file is set) uptime, flags, counters, top rooms
//! ```
//! No PROXY protocol and no WebSocket here; bind it to loopback or a private address that the
//! load balancer does not forward to: the key is all that stands between a caller and every
//! room.

use crate::auth;
use crate::error;
use crate::frame::Kind;
use crate::gateway::Gateway;
use crate::http::framing::{self, BodyLen};
use crate::http::{self, Head, Status};
use crate::hub::{Payload, Shared};
use crate::json::{self, Escaped};
use crate::metrics::Family;
use crate::sio;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::{Async, Timer};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Largest admin request head.
const MAX_HEAD: usize = 4096;

/// Serves the admin listener forever.
pub async fn run(listener: Async<TcpListener>, gw: Arc<Gateway>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let gw2 = gw.clone();
                gw.executor.spawn(serve(stream, gw2)).detach();
            }
            Err(e) => {
                error!("admin_accept_failed", reason = e);
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(mut stream: Async<TcpStream>, gw: Arc<Gateway>) {
    let timeout = gw.config.prelude.header_timeout;
    let peer = stream.get_ref().peer_addr().ok();
    let mut buf = [0u8; MAX_HEAD];
    let mut filled = 0;
    let head = async {
        loop {
            match http::parse_head(&buf[..filled]) {
                Ok(Head::Complete { request, len }) => {
                    let path = request
                        .target
                        .split_once('?')
                        .map_or(request.target, |(p, _)| p);
                    if path == "/status.json" {
                        let given = auth::request_token("", request.authorization);
                        return Some(status_json(&gw, given.as_deref(), request.method));
                    }
                    if path == "/rooms" || path.starts_with("/publish/") {
                        let (head, rest) = buf[..filled].split_at(len);
                        let rest = rest.to_vec();
                        let head = head.to_vec();
                        return Some(api(&gw, &head, rest, &mut stream, peer).await);
                    }
                    return Some(answer(&gw, request.method, request.target));
                }
                Ok(Head::Partial) if filled < buf.len() => {}
                Ok(Head::Partial) => {
                    return Some(http::error_response(
                        Status::HeaderTooLarge,
                        "",
                        &"head too large",
                    ))
                }
                Err(e) => return Some(http::error_response(e.status(), "", &e)),
            }
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => filled += n,
            }
        }
    };
    let resp = head
        .or(async {
            Timer::after(timeout).await;
            None
        })
        .await;
    if let Some(r) = resp {
        let _ = stream.write_all(&r).await;
    }
}

/// One request of the publish API (head parsed, `rest` read after it).
async fn api(
    gw: &Gateway,
    head: &[u8],
    rest: Vec<u8>,
    stream: &mut Async<TcpStream>,
    peer: Option<SocketAddr>,
) -> Vec<u8> {
    let client = peer.map_or("-".to_string(), |p| p.to_string());
    let refuse =
        |status: Status, reason: &'static str, why: &dyn std::fmt::Display, extra: &str| {
            gw.metrics.count(Family::ApiRefused, reason);
            crate::warn!(
                "api_refused",
                client = client,
                status = status.code(),
                reason = reason,
                detail = why
            );
            http::error_response(status, extra, why)
        };
    if gw.config.auth.api_key.is_none() {
        let why = "the publish API is off (--api-key-file)";
        return refuse(Status::NotFound, "api_off", &why, "");
    }
    let mut hs = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    let _ = req.parse(head);
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let headers = &*req.headers;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let given = auth::request_token("", framing::header(headers, "authorization"));
    if !key_ok(gw, given.as_deref()) {
        // The key is never logged, right or wrong.
        let why = "missing or wrong API key (Authorization: Bearer KEY)";
        return refuse(
            Status::Unauthorized,
            "api_key",
            &why,
            "WWW-Authenticate: Bearer\r\n",
        );
    }
    if path == "/rooms" {
        if method != "GET" {
            return refuse(
                Status::MethodNotAllowed,
                "api_method",
                &method,
                "Allow: GET\r\n",
            );
        }
        let mut body = String::from("{\"rooms\":");
        rooms_json(&mut body, &gw.hub.room_list());
        body.push_str("}\n");
        return http::response(Status::Ok, "application/json", "", body.as_bytes(), false);
    }
    if method != "POST" {
        return refuse(
            Status::MethodNotAllowed,
            "api_method",
            &method,
            "Allow: POST\r\n",
        );
    }
    let room = path.strip_prefix("/publish/").unwrap_or_default();
    if !crate::hub::valid_room(room) {
        return refuse(
            Status::BadRequest,
            "api_bad_room",
            &"room names are [A-Za-z0-9_.-]{1,64}",
            "",
        );
    }
    let max = gw.config.session.max_message_bytes;
    let len = match framing::request_body(headers) {
        Ok(BodyLen::Length(n)) if n > max as u64 => {
            let why = format!("{n} bytes is over --max-message-bytes ({max})");
            return refuse(Status::PayloadTooLarge, "api_too_big", &why, "");
        }
        Ok(BodyLen::Length(n)) => n as usize,
        Ok(BodyLen::None) => 0,
        Ok(_) => {
            return refuse(
                Status::BadRequest,
                "api_no_length",
                &"a body needs a Content-Length",
                "",
            )
        }
        Err(e) => return refuse(Status::BadRequest, e.as_str(), &e, ""),
    };
    let mut body = rest;
    body.truncate(len);
    if body.len() < len {
        let have = body.len();
        body.resize(len, 0);
        if stream.read_exact(&mut body[have..]).await.is_err() {
            return refuse(
                Status::BadRequest,
                "api_body_incomplete",
                &"the body ended early",
                "",
            );
        }
    }
    let ctype = framing::header(headers, "content-type").unwrap_or(b"text/plain");
    let event = http::query_param(target, "event");
    let payload = match publish_payload(ctype, event, &body) {
        Ok(p) => p,
        Err(why) => return refuse(Status::BadRequest, "api_bad_body", &why, ""),
    };
    let (d, shared) = gw.hub.publish_from_outside(room, payload.as_payload());
    let answer = match shared {
        // Through the rooms' shared order: answered once Redis has numbered it (every
        // instance, this one included, delivers it from Redis's echo).
        Shared::Taken => {
            let acknowledged = match &gw.backplane {
                Some(bp) => bp.flushed().await,
                None => false,
            };
            if !acknowledged {
                let why = "Redis did not confirm the publish within --redis-timeout";
                return refuse(Status::Unavailable, "api_redis_unconfirmed", &why, "");
            }
            format!("{{\"room\":\"{room}\",\"shared\":true}}\n")
        }
        Shared::Dropped => {
            let why = "the queue to Redis is full (--redis-queue)";
            return refuse(Status::Unavailable, "api_redis_queue_full", &why, "");
        }
        Shared::Off | Shared::Down => {
            format!("{{\"room\":\"{room}\",\"delivered\":{}}}\n", d.delivered)
        }
    };
    gw.metrics.api_publishes.fetch_add(1, Relaxed);
    crate::info!(
        "api_publish",
        client = client,
        room = room,
        bytes = body.len(),
        delivered = d.delivered,
        shared = shared == Shared::Taken
    );
    http::response(Status::Ok, "application/json", "", answer.as_bytes(), false)
}

/// What an API publish carries, owned for as long as it is published.
enum Published {
    Text(String),
    Binary(Vec<u8>),
    Event { args: String, chat: Option<String> },
}

impl Published {
    fn as_payload(&self) -> Payload<'_> {
        match self {
            Published::Text(t) => Payload::Raw {
                kind: Kind::Text,
                data: t.as_bytes(),
            },
            Published::Binary(b) => Payload::Raw {
                kind: Kind::Binary,
                data: b,
            },
            Published::Event { args, chat } => Payload::SocketIo {
                args,
                chat: chat.as_deref(),
            },
        }
    }
}

/// The message an API body is: an event with `?event=NAME` (a JSON array of its arguments),
/// binary for `application/octet-stream`, else UTF-8 text.
fn publish_payload(ctype: &[u8], event: Option<&str>, body: &[u8]) -> Result<Published, String> {
    let ctype = String::from_utf8_lossy(ctype).to_ascii_lowercase();
    if let Some(raw) = event {
        let name = crate::percent::decode(raw.as_bytes())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("?event= is not UTF-8 text")?;
        if name.is_empty() || sio::is_reserved(&name) {
            return Err(format!("{name:?} is not an event name a client accepts"));
        }
        let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8 JSON")?;
        let items =
            json::elements(text).ok_or("with ?event= the body is a JSON array of its arguments")?;
        let mut args = format!("[\"{}\"", Escaped(&name));
        for item in items {
            args.push(',');
            args.push_str(item.trim());
        }
        args.push(']');
        let chat = sio::chat_text(&args);
        return Ok(Published::Event { args, chat });
    }
    if ctype.starts_with("application/octet-stream") {
        return Ok(Published::Binary(body.to_vec()));
    }
    String::from_utf8(body.to_vec())
        .map(Published::Text)
        .map_err(|_| "a text body must be UTF-8 (send binary as application/octet-stream)".into())
}

/// The status page served at `/`.
const STATUS_PAGE: &[u8] = include_bytes!("status_page.html");
/// Rooms listed on the status page.
const TOP_ROOMS: usize = 10;

/// Whether `given` is the API key, in constant time; `true` when no key is set.
fn key_ok(gw: &Gateway, given: Option<&str>) -> bool {
    match &gw.config.auth.api_key {
        None => true,
        Some(key) => given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(&key.0))),
    }
}

/// `/status.json`: what the status page shows. Needs the API key when one is set.
fn status_json(gw: &Gateway, given: Option<&str>, method: &str) -> Vec<u8> {
    if method != "GET" {
        return http::error_response(Status::MethodNotAllowed, "Allow: GET\r\n", &method);
    }
    if !key_ok(gw, given) {
        let why = "the status needs the API key (Authorization: Bearer KEY)";
        return http::error_response(Status::Unauthorized, "WWW-Authenticate: Bearer\r\n", &why);
    }
    let m = &gw.metrics;
    let mut o = String::with_capacity(4096);
    let _ = write!(
        o,
        "{{\"version\":\"{}\",\"uptime_s\":{},\"draining\":{},\"open\":{},\"polling\":{},\"rooms\":{},\"tunnels\":{},",
        env!("CARGO_PKG_VERSION"),
        // `1.234s` without its unit: a JSON number.
        crate::log::Secs(gw.started.elapsed()).to_string().trim_end_matches('s'),
        gw.is_draining(),
        m.open.load(Relaxed),
        gw.sessions.polling.len(),
        gw.hub.rooms(),
        m.tunnels_open.load(Relaxed),
    );
    let counters = [
        ("accepted", &m.accepted),
        ("messages_in", &m.messages_in),
        ("bytes_in", &m.bytes_in),
        ("messages_out", &m.messages_out),
        ("bytes_out", &m.bytes_out),
        ("evictions", &m.evictions),
        ("pings", &m.pings),
        ("pong_timeouts", &m.pong_timeouts),
        ("sio_upgrades", &m.sio_upgrades),
        ("api_publishes", &m.api_publishes),
    ];
    o.push_str("\"counters\":{");
    list(&mut o, counters, |o, (name, v)| {
        let _ = write!(o, "\"{name}\":{}", v.load(Relaxed));
    });
    o.push('}');
    let mut refused = m.family(Family::Refused);
    refused.extend(m.family(Family::AuthRefused));
    refused.extend(m.family(Family::HandshakeReject));
    for (name, by_reason) in [("refused", refused), ("closed", m.family(Family::Closed))] {
        let _ = write!(o, ",\"{name}\":{{");
        self::list(&mut o, by_reason, |o, (label, v)| {
            let _ = write!(o, "\"{}\":{v}", Escaped(label));
        });
        o.push('}');
    }
    let mut rooms = gw.hub.room_list();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rooms.truncate(TOP_ROOMS);
    o.push_str(",\"top_rooms\":");
    rooms_json(&mut o, &rooms);
    let (entries, bytes) = gw.hub.history_held();
    let sessions = gw.sessions.recovery.as_ref().map_or(0, |r| r.sessions());
    let _ = write!(
        o,
        ",\"history\":{{\"on\":{},\"entries\":{entries},\"bytes\":{bytes},\"sessions\":{sessions},\"replayed\":{},\"recoveries\":{{",
        gw.hub.history().is_some(),
        m.replayed.load(Relaxed)
    );
    list(&mut o, m.family(Family::Recovery), |o, (label, v)| {
        let _ = write!(o, "\"{}\":{v}", Escaped(label));
    });
    o.push_str("}}");
    let backplane = match gw.health().backplane_up {
        None => "off",
        Some(true) => "up",
        Some(false) => "down",
    };
    let _ = write!(o, ",\"backplane\":\"{backplane}\",\"settings\":[");
    list(
        &mut o,
        crate::config::settings(&gw.config),
        |o, (name, value)| {
            let _ = write!(o, "[\"--{name}\",\"{}\"]", Escaped(&value));
        },
    );
    o.push_str("]}\n");
    http::response(Status::Ok, "application/json", "", o.as_bytes(), false)
}

/// Writes `items` into `out` separated by commas, each by `each`.
fn list<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut String, T),
) {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
}

/// `[{"name":..,"members":N},...]`: what `/rooms` and the status page list.
fn rooms_json(out: &mut String, rooms: &[(String, usize)]) {
    out.push('[');
    list(out, rooms, |o, (name, members)| {
        let _ = write!(
            o,
            "{{\"name\":\"{}\",\"members\":{members}}}",
            Escaped(name)
        );
    });
    out.push(']');
}

/// The response for an admin request.
pub fn answer(gw: &Gateway, method: &str, target: &str) -> Vec<u8> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if method != "GET" && method != "HEAD" {
        return http::error_response(Status::MethodNotAllowed, "Allow: GET, HEAD\r\n", &method);
    }
    let head = method == "HEAD";
    match path {
        "/metrics" => {
            let polling = gw.sessions.polling.len();
            let mut body = gw.metrics.render(gw.hub.rooms(), polling, gw.is_draining());
            if let Some(r) = &gw.sessions.recovery {
                let (entries, bytes) = gw.hub.history_held();
                gw.metrics
                    .render_history(&mut body, entries, bytes, r.sessions());
            }
            if let Some(bp) = &gw.backplane {
                bp.render_metrics(&mut body);
            }
            http::response(
                Status::Ok,
                "text/plain; version=0.0.4; charset=utf-8",
                "",
                body.as_bytes(),
                head,
            )
        }
        "/healthz" => gw.health().response(head),
        "/" => http::response(
            Status::Ok,
            "text/html; charset=utf-8",
            "",
            STATUS_PAGE,
            head,
        ),
        _ => http::error_response(Status::NotFound, "", &"try /, /metrics or /healthz"),
    }
}
