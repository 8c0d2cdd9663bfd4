//! Every way a connection can be refused before it becomes a session, as one [`Reject`]:
//! the status (if HTTP is the right language), the metric family and label, the log event and
//! level, and the text. [`answer`] is the one place that logs, counts and writes it.

use super::handshake::HandshakeError;
use super::proxy::ProxyError;
use super::Prelude;
use crate::admission::Refusal;
use crate::http::{self, HttpError, Status};
use crate::log::{self, Level};
use crate::metrics::{Family, Metrics};
use futures_lite::AsyncWriteExt;
use std::fmt;

/// Why a prelude ended without a request.
#[derive(Debug)]
pub(crate) enum PreludeError {
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
    Timeout,
    /// The client closed before the head was complete.
    Eof,
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
            PreludeError::Timeout => "header_timeout",
            PreludeError::Eof => "closed_before_request",
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
            PreludeError::Timeout => f.write_str("head not complete in time"),
            PreludeError::Eof => f.write_str("client closed before the head was complete"),
            PreludeError::Io(e) => e.fmt(f),
        }
    }
}

/// When a refusal is no one's fault worth a WARN: browsers open spare connections they may
/// never use, and sockets fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quiet {
    /// Always a refusal.
    Never,
    /// Quiet when the connection sent nothing at all (closed, or timed out, empty).
    IfNothingSent,
    /// Always quiet (the socket failed).
    Always,
}

/// The body of a refusal.
#[derive(Debug)]
pub(crate) enum Body {
    /// The detail, as plain text.
    Detail,
    /// This JSON (Engine.IO's error objects).
    Json(Box<str>),
    /// This text instead of the detail, which stays in the log.
    Text(&'static str),
}

/// A refusal, ready to be answered.
#[derive(Debug)]
pub(crate) struct Reject {
    /// The answer's status; `None`: close without a word (a PROXY error, or nothing sent).
    pub status: Option<Status>,
    /// Stable label for the metric and the log line.
    pub reason: &'static str,
    /// The counter it is counted in; `None` where the check already counted it.
    pub family: Option<Family>,
    /// The log event.
    pub event: &'static str,
    /// WARN for a client's bad input, INFO for a connection that simply went away.
    pub level: Level,
    /// Extra response headers, each ending in CRLF.
    pub headers: &'static str,
    /// What went wrong, for the log and the plain-text body.
    pub detail: Box<str>,
    /// What the client is told.
    pub body: Body,
    /// When it is logged quietly (INFO `prelude_closed`) rather than as a refusal.
    pub quiet: Quiet,
    /// One more log field, when the check has a value worth showing (the refused `Origin`).
    pub field: Option<Box<(&'static str, String)>>,
}

impl Reject {
    fn new(status: Option<Status>, reason: &'static str, event: &'static str) -> Reject {
        Reject {
            status,
            reason,
            family: None,
            event,
            level: Level::Warn,
            headers: "",
            detail: "".into(),
            body: Body::Detail,
            quiet: Quiet::Never,
            field: None,
        }
    }

    fn counted(mut self, f: Family) -> Self {
        self.family = Some(f);
        self
    }

    fn detail(mut self, d: impl fmt::Display) -> Self {
        self.detail = d.to_string().into();
        self
    }

    /// A routed request answered with an error: 404, 405, 400 for a bad room.
    pub(crate) fn http(status: Status, reason: &'static str, why: impl fmt::Display) -> Reject {
        Reject::new(Some(status), reason, "http_error")
            .counted(Family::HttpError)
            .detail(why)
    }

    /// 405 with `Allow: GET, HEAD`.
    pub(crate) fn method_not_allowed(method: &str) -> Reject {
        let mut r = Reject::http(Status::MethodNotAllowed, "method_not_allowed", method);
        r.headers = "Allow: GET, HEAD\r\n";
        r
    }

    /// An Engine.IO error with the reference server's JSON body: 400, or 403 for `Forbidden`
    /// (code 4), as engine.io's `abortRequest` answers.
    pub(crate) fn engine_io(code: u8, message: &'static str) -> Reject {
        let status = if code == 4 {
            Status::Forbidden
        } else {
            Status::BadRequest
        };
        let mut r = Reject::new(Some(status), "engine_io_error", "handshake_rejected")
            .counted(Family::HandshakeReject)
            .detail(message);
        r.body = Body::Json(format!("{{\"code\":{code},\"message\":\"{message}\"}}").into());
        r
    }

    /// Our own fault while answering (a file we cannot read): 500, logged at ERROR as its
    /// own event, with the detail, which the client is not shown.
    pub(crate) fn internal(reason: &'static str, detail: impl fmt::Display) -> Reject {
        let mut r = Reject::http(Status::InternalError, reason, detail);
        r.event = reason;
        r.level = Level::Error;
        r.body = Body::Text("internal error");
        r
    }

    /// A proxied request the upstream failed: `502` or `504`, counted by reason. Our side of
    /// the fault, so logged at ERROR.
    pub(crate) fn upstream(status: Status, reason: &'static str, detail: String) -> Reject {
        let mut r = Reject::new(Some(status), reason, "upstream_error")
            .counted(Family::UpstreamError)
            .detail(detail);
        r.level = Level::Error;
        r.body = Body::Text("the app behind the gateway did not answer");
        r
    }

    /// Adds one log field.
    pub(crate) fn with_field(mut self, key: &'static str, value: impl fmt::Display) -> Reject {
        self.field = Some(Box::new((key, value.to_string())));
        self
    }

    /// A session refused for its token: `401` with `WWW-Authenticate: Bearer`, or `403` for a
    /// room the token does not allow; counted by reason.
    pub(crate) fn denied(d: crate::auth::Denied) -> Reject {
        let status = match d {
            crate::auth::Denied::Token(_) => Status::Unauthorized,
            crate::auth::Denied::Room => Status::Forbidden,
        };
        let mut r = Reject::new(Some(status), d.as_str(), "auth_refused")
            .counted(Family::AuthRefused)
            .detail(d.message());
        if status == Status::Unauthorized {
            r.headers = "WWW-Authenticate: Bearer\r\n";
        }
        r
    }

    /// An `Origin` outside `--allowed-origins`: 403.
    pub(crate) fn origin(origin: &[u8]) -> Reject {
        Reject::new(Some(Status::Forbidden), "origin", "upgrade_refused")
            .counted(Family::Refused)
            .detail("Origin not allowed")
            .with_field("origin", String::from_utf8_lossy(origin))
    }
}

impl From<PreludeError> for Reject {
    fn from(e: PreludeError) -> Reject {
        let status = match &e {
            PreludeError::Http(h) => Some(h.status()),
            PreludeError::TooLarge => Some(Status::HeaderTooLarge),
            _ => None,
        };
        let mut r = Reject::new(status, e.as_str(), "prelude_rejected").detail(&e);
        r.family = match &e {
            PreludeError::Proxy(_) | PreludeError::UntrustedProxy | PreludeError::MissingProxy => {
                Some(Family::ProxyError)
            }
            PreludeError::Http(_) | PreludeError::TooLarge | PreludeError::Timeout => {
                Some(Family::HttpError)
            }
            PreludeError::Eof | PreludeError::Io(_) => None,
        };
        r.quiet = match &e {
            PreludeError::Eof | PreludeError::Timeout => Quiet::IfNothingSent,
            PreludeError::Io(_) => Quiet::Always,
            _ => Quiet::Never,
        };
        r
    }
}

impl From<HandshakeError> for Reject {
    fn from(e: HandshakeError) -> Reject {
        let mut r = Reject::new(Some(e.status()), e.as_str(), "handshake_rejected")
            .counted(Family::HandshakeReject)
            .detail(e);
        r.headers = e.extra_headers();
        r
    }
}

impl From<Refusal> for Reject {
    /// Counted by [`crate::admission::Admission::admit`] itself.
    fn from(refusal: Refusal) -> Reject {
        let status = match refusal {
            Refusal::MaxConnections | Refusal::Draining => Status::Unavailable,
            Refusal::PerIp => Status::TooManyRequests,
        };
        let mut r =
            Reject::new(Some(status), refusal.as_str(), "upgrade_refused").detail(refusal.as_str());
        r.headers = "Retry-After: 5\r\n";
        r
    }
}

/// Logs `r` once with the real client address, counts it, and answers it where HTTP is the
/// right language.
pub(crate) async fn answer<W: futures_lite::AsyncWrite + Unpin>(
    out: &mut W,
    metrics: &Metrics,
    pre: &Prelude,
    path: Option<&str>,
    mut r: Reject,
) {
    if let Some(f) = r.family {
        metrics.count(f, r.reason);
    }
    let silent = match r.quiet {
        Quiet::Never => false,
        Quiet::IfNothingSent => pre.filled == 0,
        Quiet::Always => true,
    };
    if silent {
        r.level = Level::Info;
        r.event = "prelude_closed";
    }
    {
        let status = r.status.map_or(0, Status::code);
        let bytes = pre.filled;
        let mut fields: Vec<(&str, &dyn fmt::Display)> = vec![
            ("client", &pre.client),
            ("peer", &pre.peer),
            ("status", &status),
            ("reason", &r.reason),
        ];
        // A token in the query is a credential: logged as `token=(hidden)`.
        let path = path.map(crate::auth::redact);
        if let Some(p) = &path {
            fields.push(("path", p));
        }
        if r.event == "prelude_rejected" {
            fields.push(("bytes", &bytes));
        }
        if let Some(f) = &r.field {
            fields.push((f.0, &f.1));
        }
        fields.push(("detail", &r.detail));
        log::line(r.level, r.event, &fields);
    }
    let Some(s) = r.status else { return };
    let resp = match &r.body {
        Body::Json(body) => {
            http::response(s, "application/json", r.headers, body.as_bytes(), false)
        }
        Body::Detail => http::error_response(s, r.headers, &r.detail),
        Body::Text(t) => http::error_response(s, r.headers, t),
    };
    let _ = out.write_all(&resp).await;
}
