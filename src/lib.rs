//! wsgate: one static binary that replaces "load balancer PROXY protocol -> nginx ->
//! Node Socket.IO chat" with a WebSocket gateway that speaks PROXY v1/v2 itself.
//!
//! # Data flow
//! ```text
//! accept (server) ─> conn: one buffer, one cap, one deadline
//!     proxy::decode ─> http::parse_head ─> route ─> page | healthz | 4xx
//!                                             └──> handshake ─> session task
//! session: socket ─> tungstenite ─> hub::publish ─> member outboxes (bounded, evict when full)
//!          outbox ─> one writev of pre-encoded frames ─> socket
//! --redis: hub ─> backplane::relay ─> queue ─> PUBLISH ─> Redis ─> PSUBSCRIBE ─> hub::deliver
//! ```
//!
//! # Modules
//! * [`config`]: plain data with documented defaults; duration, size and CIDR parsing.
//! * [`server`]: accept loop and shared state.
//! * [`executor`]: worker threads on `async-task` with a run queue that does not allocate.
//! * `conn`: the prelude (PROXY header + HTTP head) and dispatch.
//! * [`proxy`]: PROXY v1/v2 decoding, pure.
//! * [`http`]: request-head parsing and plain responses, pure.
//! * [`route`]: which page, health check or upgrade a request is, pure.
//! * [`handshake`]: RFC 6455 upgrade checks and the 101 response, pure.
//! * [`session`]: one WebSocket connection: reads, writes, pings, close codes.
//! * [`hub`]: rooms, bounded outboxes, slow-consumer eviction; never sees a socket.
//! * [`frame`]: server frames encoded once per publish.
//! * [`sio`]: Engine.IO v4 / Socket.IO v5 packets, pure.
//! * [`static_files`]: `--static DIR`.
//! * [`log`]: one structured line per event.
//! * [`metrics`]: counters and gauges in the Prometheus text format.
//! * [`admin`]: the operators' listener: `/metrics` and `/healthz`.
//! * [`backplane`]: `--redis`: rooms shared between instances through Redis pub/sub.
//! * [`resp`]: the Redis wire format (RESP2 subset), pure.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod admin;
pub mod backplane;
pub mod config;
pub mod executor;
pub mod frame;
pub mod hub;
pub mod json;
pub mod lock;
pub mod log;
pub mod metrics;
pub mod prelude;
pub mod server;
pub mod session;
pub mod sio;
