//! wsgate: one static binary that replaces "load balancer PROXY protocol -> nginx ->
//! Node Socket.IO chat" with a WebSocket gateway that speaks PROXY v1/v2 itself.
//!
//! # Data flow
//! ```text
//! server::accept ─> prelude::read_first: one buffer, one cap, one deadline
//!     proxy::decode ─> http::parse_head ─> HeadAt
//!         ├──> routes::serve ─> route::route ─> page | healthz | static_files | Reject
//!         │        ├──> websocket: handshake::check ─> admission ─> 101 ─> session::serve task
//!         │        ├──> polling: Engine.IO HTTP side ─> session::polling (kept alive)
//!         │        └──> forward: another instance's polling session ─> tunnel
//!         └──> (--upstream) upstream::serve ─> http::framing ─> the app ─> tunnel
//! session: socket ─> tungstenite ─> hub::publish ─> member outboxes (bounded, evict when full)
//!          outbox ─> writer: one writev of pre-encoded frames ─> socket
//!          (a quiet room: the publisher sends to an idle session's lent socket, hub::Sink)
//! --redis: hub ─> backplane::relay ─> queue ─> link (PUBLISH) ─> Redis ─> link (PSUBSCRIBE)
//!          ─> envelope::decode ─> hub::deliver
//! ```
//!
//! # Modules, by layer (lowest first)
//! A module imports only from its own layer's earlier names or from lower layers;
//! `tests/layers.rs` checks it on every `make test`, and fails on a module cycle.
//!
//! * **L0 leaves**, pure, no crate import outside L0: [`json`], [`percent`], [`lock`],
//!   [`frame`] (server frames encoded once), [`sio`] (Engine.IO v4 / Socket.IO v5 packets),
//!   [`token`] (HS256 JSON Web Tokens), [`http`] (request heads, responses, and
//!   [`http::framing`]: body framing and the smuggling checks), [`tunnel`] (a byte pump both
//!   ways, for `--upstream` and for forwarded polling connections, copied by an
//!   edge-triggered epoll set of its own: [`tunnel::edge`]).
//! * **L1 plumbing**: [`log`] (one structured line per event), [`config`] (plain data; the
//!   only place a default is written), [`metrics`], [`executor`].
//! * **L2 shared state**, no sockets: [`auth`] (what a token grants), [`admission`]
//!   (session permits, the drain flag), [`hub`] (rooms, bounded outboxes, eviction; never
//!   sees a socket), [`backplane`] (`--redis`: relay queue, [`backplane::envelope`],
//!   the link, [`backplane::resp`]).
//! * **L3 sessions**: [`session`]: one WebSocket connection (`live.rs`: the loop's steps) or
//!   one Socket.IO polling session; it sees only a [`session::SessionCtx`], never the gateway.
//! * **L4 wiring**: [`gateway`]: builds each component once from the config and holds them.
//! * **L5 stages**: [`prelude`] (PROXY header, HTTP head, route, handshake check, and the one
//!   place a refusal is answered), [`routes`] (what answers each route), [`upstream`]
//!   (`--upstream`: wsgate in nginx's place), [`admin`] (metrics, status page, publish API).
//!   `routes` and `upstream` import `prelude`, and never each other.
//! * **L6**: [`server`]: the accept loop and the SIGTERM drain.
//!
//! `docs/design.md` walks through the same map.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod admin;
pub mod admission;
pub mod auth;
pub mod backplane;
pub mod config;
pub mod executor;
pub mod frame;
pub mod gateway;
pub mod history;
pub mod http;
pub mod hub;
pub mod json;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod percent;
pub mod prelude;
pub mod routes;
pub mod server;
pub mod session;
pub mod sio;
pub mod token;
pub mod tunnel;
pub mod upstream;
