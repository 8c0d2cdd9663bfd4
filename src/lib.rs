//! wsgate: one static binary that replaces "load balancer PROXY protocol -> nginx ->
//! Node Socket.IO chat" with a WebSocket gateway that speaks PROXY v1/v2 itself.
//!
//! # Data flow
//! ```text
//! server::accept ─> prelude::serve: one buffer, one cap, one deadline
//!     proxy::decode ─> http::parse_head ─> route ─> page | healthz | static | Reject
//!                                             ├──> handshake ─> Gateway::admit ─> session task
//!                                             └──> (--upstream) framing ─> upstream ─> tunnel
//! session: socket ─> tungstenite ─> hub::publish ─> member outboxes (bounded, evict when full)
//!          outbox ─> writer: one writev of pre-encoded frames ─> socket
//! --redis: hub ─> backplane::relay ─> queue ─> link (PUBLISH) ─> Redis ─> link (PSUBSCRIBE)
//!          ─> envelope::decode ─> hub::deliver
//! ```
//!
//! # Modules, in the order of the flow
//! * [`server`]: the accept loop and the SIGTERM drain (waits for the last session permit).
//! * [`prelude`]: the connection prelude, one folder per check: [`prelude::proxy`] (PROXY
//!   v1/v2, pure), [`prelude::http`] (request heads and responses, pure), [`prelude::route`]
//!   (pure), [`prelude::handshake`] (RFC 6455, pure), [`prelude::static_files`], the HTTP side
//!   of Socket.IO polling (kept-alive requests, CORS) and the forwarding of another instance's
//!   polling requests, and one `Reject` answered in one place; with `--upstream`, the proxy to
//!   the app
//!   ([`prelude::framing`], pure: body framing and the smuggling checks) and its WebSocket
//!   [`prelude::tunnel`].
//! * [`session`]: one WebSocket connection (the loop, its writer, `End`, the Socket.IO
//!   handler) and one Socket.IO polling session ([`session::polling`]); it sees only a
//!   [`session::SessionCtx`], never the gateway (a polling session holds the gateway's
//!   admission permit, by its type only).
//! * [`hub`]: rooms, bounded outboxes, slow-consumer eviction, delivery counting; never sees a
//!   socket.
//! * [`backplane`]: `--redis`: the relay queue, [`backplane::envelope`] (pure),
//!   the link (one Redis connection's life) and [`backplane::resp`] (pure).
//! * [`admin`]: the operators' listener: `/metrics`, `/healthz`, the status page, and the
//!   publish API.
//!
//! Shared by them:
//! * [`gateway`]: the shared state and nothing else: components, admission permits, the
//!   draining flag, the health status.
//! * [`config`]: plain data; the only place a default is written; `Config::validate`.
//! * [`executor`]: worker threads on `async-task` with a run queue that does not allocate.
//! * [`metrics`]: atomic counters and the one Prometheus text writer.
//! * [`log`]: one structured line per event.
//! * [`frame`]: server frames encoded once per publish.
//! * [`sio`]: Engine.IO v4 / Socket.IO v5 packets (both transports' formats), pure.
//! * [`token`]: HS256 JSON Web Tokens, verified, pure; [`auth`]: what a token grants a
//!   session (rooms, publishing, its end) and where a request carries one.
//! * [`json`], [`percent`], [`lock`]: small helpers written once.
//!
//! Imports point one way only (checked by reading the `crate::` paths): leaves (`frame`, `json`, `lock`,
//! `percent`) <- `log`, `metrics`, `sio`, `token`, `executor`, `config` <- `auth`, `hub` <-
//! `session`, `backplane` <- `gateway` <- `prelude` <- `admin`, `server`.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod admin;
pub mod auth;
pub mod backplane;
pub mod config;
pub mod executor;
pub mod frame;
pub mod gateway;
pub mod hub;
pub mod json;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod percent;
pub mod prelude;
pub mod server;
pub mod session;
pub mod sio;
pub mod token;
