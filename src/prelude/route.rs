//! Which page, health check or upgrade a request is. Pure: method and target in, route out.

use crate::hub::valid_room;

/// Room joined by `/ws` without a name.
pub const DEFAULT_ROOM: &str = "main";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /`: the embedded chat page.
    Page,
    /// `GET /healthz`: load balancer health check.
    Health,
    /// `GET /ws` or `/ws/{room}`: a WebSocket upgrade into a room.
    Upgrade { room: &'a str },
    /// `GET /socket.io/?EIO=4&transport=websocket[&room=NAME]`: a Socket.IO client.
    SocketIo { room: &'a str },
    /// `GET /socket.io/?EIO=4&transport=websocket&sid=SID`: a WebSocket that takes over the
    /// polling session `sid`.
    SioUpgrade { sid: &'a str },
    /// `/socket.io/?EIO=4&transport=polling[&sid=SID][&room=NAME]`: the polling transport,
    /// any method (its handler answers GET, POST and the CORS preflight).
    Polling { sid: Option<&'a str>, room: &'a str },
    /// A Socket.IO request we cannot serve: 400 with Engine.IO's JSON error body.
    EngineIoError { code: u8, message: &'static str },
    /// A known path with a method other than GET (or HEAD for plain pages): 405.
    MethodNotAllowed,
    /// `/ws/{room}` with a name that is not `[A-Za-z0-9_.-]{1,64}`: 400.
    BadRoom,
    /// Anything else: 404.
    NotFound,
}

/// Routes a request. `HEAD` is served like `GET` for the page and health check.
pub fn route<'a>(method: &str, target: &'a str) -> Route<'a> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let get = method == "GET";
    let head = method == "HEAD";
    let page = |r| {
        if get || head {
            r
        } else {
            Route::MethodNotAllowed
        }
    };
    match path {
        "/" | "/index.html" => page(Route::Page),
        "/healthz" => page(Route::Health),
        "/ws" | "/ws/" => upgrade(get, DEFAULT_ROOM),
        "/socket.io/" | "/socket.io" => socket_io(method, target),
        _ => match path.strip_prefix("/ws/") {
            Some(room) if valid_room(room) => upgrade(get, room),
            Some(_) => Route::BadRoom,
            None => Route::NotFound,
        },
    }
}

fn upgrade(get: bool, room: &str) -> Route<'_> {
    if get {
        Route::Upgrade { room }
    } else {
        Route::MethodNotAllowed
    }
}

fn socket_io<'a>(method: &str, target: &'a str) -> Route<'a> {
    let param = |key: &str| crate::http::query_param(target, key);
    let transport = param("transport");
    let sid = param("sid");
    // The checks in engine.io's order (`Server.verify`): transport, then the handshake
    // method (a session's own requests may POST), then the protocol version.
    if !matches!(transport, Some("websocket" | "polling")) {
        return Route::EngineIoError {
            code: 0,
            message: "Transport unknown",
        };
    }
    let polling = transport == Some("polling");
    let handshake_method = method == "GET" || (polling && method == "OPTIONS");
    if sid.is_none() && !handshake_method || !polling && method != "GET" {
        return Route::EngineIoError {
            code: 2,
            message: "Bad handshake method",
        };
    }
    if param("EIO") != Some("4") {
        return Route::EngineIoError {
            code: 5,
            message: "Unsupported protocol version",
        };
    }
    let room = match param("room") {
        None => DEFAULT_ROOM,
        Some(r) if valid_room(r) => r,
        Some(_) => return Route::BadRoom,
    };
    match (polling, sid) {
        (true, sid) => Route::Polling { sid, room },
        (false, Some(sid)) => Route::SioUpgrade { sid },
        (false, None) => Route::SocketIo { room },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/"), Route::Page);
        assert_eq!(route("HEAD", "/"), Route::Page);
        assert_eq!(route("GET", "/healthz"), Route::Health);
        assert_eq!(route("GET", "/healthz?x"), Route::Health);
        assert_eq!(route("GET", "/ws"), Route::Upgrade { room: "main" });
        assert_eq!(route("GET", "/ws?t=1"), Route::Upgrade { room: "main" });
        assert_eq!(route("GET", "/ws/lobby"), Route::Upgrade { room: "lobby" });
        assert_eq!(
            route("GET", "/ws/a.b-c_9"),
            Route::Upgrade { room: "a.b-c_9" }
        );
        assert_eq!(route("POST", "/"), Route::MethodNotAllowed);
        assert_eq!(route("DELETE", "/ws/x"), Route::MethodNotAllowed);
        assert_eq!(route("HEAD", "/ws"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/ws/a/b"), Route::BadRoom);
        assert_eq!(route("GET", "/ws/%2e%2e"), Route::BadRoom);
        assert_eq!(
            route("GET", &format!("/ws/{}", "r".repeat(65))),
            Route::BadRoom
        );
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        let sio = "/socket.io/?EIO=4&transport=websocket";
        assert_eq!(route("GET", sio), Route::SocketIo { room: "main" });
        assert_eq!(
            route("GET", &format!("{sio}&room=lobby")),
            Route::SocketIo { room: "lobby" }
        );
        assert_eq!(route("GET", &format!("{sio}&room=../x")), Route::BadRoom);
        assert_eq!(
            route("GET", "/socket.io/?EIO=4&transport=polling&t=abc"),
            Route::Polling {
                sid: None,
                room: "main"
            }
        );
        let poll = "/socket.io/?EIO=4&transport=polling&sid=abc&room=r1";
        for m in ["GET", "POST", "PUT"] {
            assert_eq!(
                route(m, poll),
                Route::Polling {
                    sid: Some("abc"),
                    room: "r1"
                }
            );
        }
        assert_eq!(
            route("OPTIONS", "/socket.io/?EIO=4&transport=polling"),
            Route::Polling {
                sid: None,
                room: "main"
            }
        );
        assert_eq!(
            route("POST", "/socket.io/?EIO=4&transport=polling"),
            Route::EngineIoError {
                code: 2,
                message: "Bad handshake method"
            }
        );
        assert_eq!(
            route("GET", &format!("{sio}&sid=abc")),
            Route::SioUpgrade { sid: "abc" }
        );
        assert_eq!(
            route("GET", "/socket.io/?EIO=4&transport=flash"),
            Route::EngineIoError {
                code: 0,
                message: "Transport unknown"
            }
        );
        assert_eq!(
            route("GET", "/socket.io/?EIO=3&transport=websocket"),
            Route::EngineIoError {
                code: 5,
                message: "Unsupported protocol version"
            }
        );
        assert_eq!(
            route("POST", sio),
            Route::EngineIoError {
                code: 2,
                message: "Bad handshake method"
            }
        );
        assert_eq!(route("GET", "/wsx"), Route::NotFound);
        assert_eq!(route("GET", "http://x/"), Route::NotFound);
    }
}
