//! Who may join which room, and who may publish (`--jwt-secret-file`): the token a session
//! presents is checked once, at its handshake (a WebSocket's upgrade, or Socket.IO's CONNECT),
//! and what it grants rides with the session: its user for the log lines, its rooms, whether
//! it may publish, and when it ends.
//!
//! ```text
//! /ws/{room}?token=..  | Authorization: Bearer ..   -> 401 (no or bad token) / 403 (room) / 101
//! Socket.IO: 40{"token":".."} | ?token= | Bearer     -> 44{"message":..} (connect_error) / 40{sid}
//! while open: past exp -> 1008 token_expired;  a read-only grant that publishes -> 1008 publish_forbidden
//! ```

use crate::config::AuthConfig;
use crate::percent;
use crate::token::{self, Claims, Rules, TokenError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The token checker, built once from the configuration when `--jwt-secret-file` is set.
#[derive(Debug)]
pub struct Auth {
    key: Vec<u8>,
    leeway: Duration,
    audience: Option<String>,
}

/// What a valid token grants a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Its claims.
    pub claims: Claims,
    /// When the session must end: `exp` (plus the leeway), on this process's clock.
    pub ends: Instant,
}

/// Why a session was refused: its token, or a room the token does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No valid token: `401`.
    Token(TokenError),
    /// A valid token that does not allow this room: `403`.
    Room,
}

impl Denied {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Token(e) => e.as_str(),
            Denied::Room => "room_forbidden",
        }
    }

    /// What the client is told.
    pub fn message(self) -> String {
        match self {
            Denied::Token(e) => e.to_string(),
            Denied::Room => "the token does not allow this room".into(),
        }
    }
}

impl Auth {
    /// The checker, when tokens are required.
    pub fn new(cfg: &AuthConfig) -> Option<Auth> {
        cfg.jwt_secret.as_ref().map(|key| Auth {
            key: key.0.clone(),
            leeway: cfg.leeway,
            audience: cfg.audience.clone(),
        })
    }

    /// Checks `token` for `room` now.
    pub fn admit(&self, token: Option<&str>, room: &str) -> Result<Grant, Denied> {
        let token = token.ok_or(Denied::Token(TokenError::Missing))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let rules = Rules {
            key: &self.key,
            now: now.as_secs(),
            leeway: self.leeway.as_secs(),
            audience: self.audience.as_deref(),
        };
        let claims = token::verify(token, &rules).map_err(Denied::Token)?;
        if !claims.allows(room) {
            return Err(Denied::Room);
        }
        let left = Duration::from_secs(claims.exp.saturating_add(rules.leeway))
            .saturating_sub(now)
            .min(Duration::from_secs(10 * 365 * 24 * 3600));
        Ok(Grant {
            claims,
            ends: Instant::now() + left,
        })
    }
}

impl Grant {
    /// The user, for log lines (`-` when the token has no `sub`).
    pub fn user(&self) -> &str {
        self.claims.sub.as_deref().unwrap_or("-")
    }
}

/// What a session's token allows, as the session goes. One pointer wide (every session holds
/// one, so its size is paid per connection); `Default` is open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Access(Option<Box<Checked>>);

/// The states of an [`Access`] with tokens on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checked {
    /// A Socket.IO session before its CONNECT: the token its handshake carried, if any (the
    /// CONNECT's own `auth.token` wins).
    Pending(Option<String>),
    /// Checked and granted.
    Granted(Grant),
}

impl Access {
    /// Tokens are off (no `--jwt-secret-file`): any room, publishing allowed.
    pub fn open() -> Access {
        Access(None)
    }

    /// A Socket.IO session to be checked at its CONNECT, with its handshake's token.
    pub fn pending(token: Option<String>) -> Access {
        Access(Some(Box::new(Checked::Pending(token))))
    }

    /// Checked and granted.
    pub fn granted(grant: Grant) -> Access {
        Access(Some(Box::new(Checked::Granted(grant))))
    }

    /// For a session still to be checked: the token its handshake carried (`Some(None)`: none).
    pub fn pending_token(&self) -> Option<Option<&str>> {
        match self.0.as_deref() {
            Some(Checked::Pending(t)) => Some(t.as_deref()),
            _ => None,
        }
    }

    fn grant(&self) -> Option<&Grant> {
        match self.0.as_deref() {
            Some(Checked::Granted(g)) => Some(g),
            _ => None,
        }
    }

    /// Whether the session may publish (a read-only grant may not).
    pub fn may_publish(&self) -> bool {
        self.grant().is_none_or(|g| g.claims.publish)
    }

    /// When the session must end, if its grant does.
    pub fn ends(&self) -> Option<Instant> {
        self.grant().map(|g| g.ends)
    }

    /// The user, for log lines: the grant's `sub`, or `-`.
    pub fn user(&self) -> &str {
        self.grant().map_or("-", Grant::user)
    }
}

/// The token a request carries: `?token=` (percent-decoded; browsers cannot set headers on a
/// WebSocket) or `Authorization: Bearer`. The query wins when both are present.
pub fn request_token(target: &str, authorization: Option<&[u8]>) -> Option<String> {
    if let Some(v) = crate::http::query_param(target, "token") {
        let decoded = percent::decode(v.as_bytes()).and_then(|b| String::from_utf8(b).ok());
        return Some(decoded.unwrap_or_else(|| v.to_owned()));
    }
    let value = std::str::from_utf8(authorization?).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// `target` with the value of a `token=` query parameter replaced by `(hidden)`, for logs.
pub fn redact(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return target.into();
    };
    if !query.split('&').any(|kv| kv.starts_with("token=")) {
        return target.into();
    }
    let kept: Vec<&str> = query
        .split('&')
        .map(|kv| {
            if kv.starts_with("token=") {
                "token=(hidden)"
            } else {
                kv
            }
        })
        .collect();
    format!("{path}?{}", kept.join("&")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_query_or_the_bearer_header() {
        assert_eq!(
            request_token("/ws/a?x=1&token=abc.def", None).as_deref(),
            Some("abc.def")
        );
        assert_eq!(
            request_token("/ws?token=a%2Eb", None).as_deref(),
            Some("a.b")
        );
        assert_eq!(
            request_token("/ws", Some(b"Bearer  t.u.v ")).as_deref(),
            Some("t.u.v")
        );
        assert_eq!(
            request_token("/ws", Some(b"bearer t")).as_deref(),
            Some("t")
        );
        assert_eq!(request_token("/ws", Some(b"Basic dXNlcjpw")), None);
        assert_eq!(
            request_token("/ws?token=q", Some(b"Bearer h")).as_deref(),
            Some("q")
        );
        assert_eq!(request_token("/ws", None), None);
        assert_eq!(
            redact("/ws/a?x=1&token=abc&y=2"),
            "/ws/a?x=1&token=(hidden)&y=2"
        );
        assert_eq!(redact("/ws/a?x=1"), "/ws/a?x=1");
        assert_eq!(redact("/ws"), "/ws");
    }
}
