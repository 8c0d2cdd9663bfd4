//! Configuration as plain data with documented defaults. The CLI (`main.rs`) is one source of
//! it; tests build it directly. Each component takes only its own sub-struct.
//!
//! Every default is written once, in the `Default` impls here: the CLI's flags are `Option`s
//! laid over [`Config::default`], and `--help` lists [`defaults`]. [`Config::validate`] is the
//! one check of a whole configuration, whoever built it.

use crate::log::Format as LogFormat;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// Everything the gateway needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to accept connections. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Accept queue length passed to `listen(2)` (the kernel caps it at
    /// `net.core.somaxconn`). Default 4096, so that a reconnect storm after a deploy is
    /// queued rather than refused; std's default is 128.
    pub listen_backlog: u32,
    /// Executor threads. Default: the number of available cores.
    pub threads: usize,
    /// Log line format. Default text (`key=value`); `json` for log shippers.
    pub log_format: LogFormat,
    /// Longest value written to a log line, in bytes; longer ones (a chat message with
    /// `--log-messages`, a header value) are cut and marked. Default 256.
    pub log_value_bytes: usize,
    /// `SO_SNDBUF` for every accepted socket, in bytes (the kernel doubles it for its own
    /// bookkeeping). Setting it turns off Linux's autotuning, which lets a client that stops
    /// reading pin up to `tcp_wmem`'s maximum (4 MiB) of kernel memory before its outbox even
    /// fills. Default 32 KiB: a chat or live-update connection writes far less between two
    /// acks, and `make bench` shows no throughput cost at the fan-out bench's load. 0 leaves
    /// the kernel's autotuning on.
    pub socket_send_buffer: usize,
    /// PROXY protocol handling.
    pub proxy: ProxyConfig,
    /// Limits on the connection prelude (PROXY header + HTTP head).
    pub prelude: PreludeConfig,
    /// Per-WebSocket session behaviour.
    pub session: SessionConfig,
    /// Limits that protect the gateway and the other clients.
    pub limits: LimitsConfig,
    /// The SIGTERM sequence.
    pub shutdown: ShutdownConfig,
    /// Where `/metrics` and `/healthz` are served for operators. Default: off. A typical
    /// value is `127.0.0.1:9090` (scraped by a local agent, never exposed to the LB).
    pub admin_listen: Option<SocketAddr>,
    /// A directory whose files are served for GET requests that are not gateway routes
    /// (`/` is its `index.html`), replacing the embedded page. Default: off.
    pub static_dir: Option<std::path::PathBuf>,
    /// The Redis pub/sub backplane that lets several instances share rooms (`--redis`).
    /// Default: off, so a single instance needs no Redis.
    pub backplane: Option<BackplaneConfig>,
    /// `--upstream`: wsgate in nginx's place, in front of an existing app. Default: off.
    pub upstream: Option<UpstreamConfig>,
    /// Handshake tokens and the publish API. Default: both off.
    pub auth: AuthConfig,
    /// Message history per room, for recovery after a reconnect.
    pub history: HistoryConfig,
}

/// Message history per room (`--recovery-window`, `--history-size`, `--history-memory`):
/// what a client that reconnects gets back, Socket.IO's connection state recovery and the
/// raw clients' `?since=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long a message is kept, and how long a Socket.IO session may stay away and still
    /// be recovered. Default 2 min (Socket.IO's `maxDisconnectionDuration`); 0 turns history
    /// and recovery off (events then carry no offset).
    pub window: Duration,
    /// Messages kept per room. Default 1000: 20 s of a busy chat room at 50 msg/s, far
    /// more of an everyday one.
    pub room_entries: usize,
    /// Bytes all rooms' history may hold together: the encoded frames (shared with the
    /// deliveries) and each message's bookkeeping (about 200 bytes). Default 64 MiB (about
    /// 250,000 messages of 64 bytes). When a publish would pass it, the room's oldest messages go first; a
    /// resume across a message that could not be kept is refused, never served with a hole.
    pub max_bytes: usize,
}

impl HistoryConfig {
    /// Whether history and recovery are on.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            window: Duration::from_secs(120),
            room_entries: 1000,
            max_bytes: 64 << 20,
        }
    }
}

/// Access control (`--jwt-secret-file`) and the publish API (`--api-key-file`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The HS256 key. When set, every session must present a valid token. Default: off.
    pub jwt_secret: Option<Secret>,
    /// Clock skew allowed on a token's `exp` and `nbf`. Default 5 s.
    pub leeway: Duration,
    /// When set, a token's `aud` must name it. Default: not checked.
    pub audience: Option<String>,
    /// The key of `POST /publish/{room}` and `GET /rooms` on the admin listener; without it
    /// the API is off. Default: off.
    pub api_key: Option<Secret>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            leeway: Duration::from_secs(5),
            audience: None,
            api_key: None,
        }
    }
}

/// A key read from a file or the environment: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// A key from a file's or variable's contents, a trailing line end dropped; an empty key
    /// is refused (it would let anyone sign).
    pub fn from_text(text: &[u8], what: &str) -> Result<Secret, String> {
        let key = text.strip_suffix(b"\n").unwrap_or(text);
        let key = key.strip_suffix(b"\r").unwrap_or(key);
        if key.is_empty() {
            return Err(format!("{what} is empty"));
        }
        Ok(Secret(key.to_vec()))
    }
}

/// Proxying to an app on this host (`--upstream http://HOST:PORT`), as nginx's
/// `proxy_pass` with the WebSocket upgrade headers does.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `HOST:PORT` as given, for logs.
    pub name: String,
    /// The addresses it resolved to at start, tried in order.
    pub addrs: Vec<SocketAddr>,
    /// Deadline for a new connection to the upstream; past it `502`. Default 5 s.
    pub connect_timeout: Duration,
    /// How long the upstream may take to start its response, and between two reads of a
    /// request or response body; past it `504` (or, mid-body, the connection is closed). An
    /// established WebSocket tunnel has no idle timeout (nginx's 60 s `proxy_read_timeout`
    /// cutting idle WebSockets is its users' most common complaint). Default 60 s.
    pub timeout: Duration,
    /// Idle upstream connections kept for reuse; more are closed. Default 16.
    pub pool: usize,
    /// Largest upstream response head; past it `502` (nginx's `proxy_buffer_size`). Default
    /// 8192.
    pub max_head_bytes: usize,
    /// Each of a tunnel's two buffers (client to upstream, upstream to client); fixed, never
    /// grown. Default 4096.
    pub tunnel_buffer_bytes: usize,
    /// Send our own Ping to a tunnelled WebSocket client quiet for this long, and swallow its
    /// Pong, so an app that never pings survives a CLB's 60 s idle timeout. Default off.
    pub ping: Option<Duration>,
    /// Set `Host` to the upstream's `HOST:PORT` instead of passing the client's on (which is
    /// the default, so that an app building absolute URLs sees its public name; the client's
    /// is always in `X-Forwarded-Host`). Default off.
    pub rewrite_host: bool,
}

impl UpstreamConfig {
    /// The defaults, for an upstream at `addrs`.
    pub fn new(name: String, addrs: Vec<SocketAddr>) -> Self {
        UpstreamConfig {
            name,
            addrs,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            pool: 16,
            max_head_bytes: 8192,
            tunnel_buffer_bytes: 4096,
            ping: None,
            rewrite_host: false,
        }
    }

    /// Parses `http://HOST:PORT` (an IPv4 or `[IPv6]` address, or a name, resolved now; the
    /// port defaults to 80; no path).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("invalid --upstream {url:?}: expected http://HOST:PORT (plain http; TLS ends at the load balancer)")
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "invalid --upstream {url:?}: no path, only http://HOST:PORT"
            ));
        }
        let (host, port) = split_host_port(rest)
            .ok_or_else(|| format!("invalid --upstream {url:?}: unclosed ["))?;
        let port: u16 = match port {
            None => 80,
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid --upstream {url:?}: bad port"))?,
        };
        if host.is_empty() {
            return Err(format!("invalid --upstream {url:?}: no host"));
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                .map_err(|e| format!("--upstream {host}: {e}"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("--upstream {host} resolves to no address"));
        }
        let name = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(UpstreamConfig::new(name, addrs))
    }
}

/// Smallest `max_head_bytes`: room for a PROXY v1 header and a request line.
pub const MIN_HEAD_BYTES: usize = 64;

impl Config {
    /// Checks the whole configuration; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.auth.api_key.is_some() && self.admin_listen.is_none() {
            return Err(
                "--api-key-file serves its API on the admin listener: set --admin-listen".into(),
            );
        }
        if self.prelude.max_head_bytes < MIN_HEAD_BYTES {
            return Err(format!(
                "--max-head-bytes must be at least {MIN_HEAD_BYTES}"
            ));
        }
        if self.log_value_bytes < 16 {
            return Err("--log-value-bytes must be at least 16".into());
        }
        if self.prelude.header_timeout.is_zero() {
            return Err("--header-timeout must be above zero".into());
        }
        let s = &self.session;
        if s.ping_interval.is_zero() || s.pong_timeout.is_zero() || s.upgrade_timeout.is_zero() {
            return Err(
                "--ping-interval, --pong-timeout and --upgrade-timeout must be above zero".into(),
            );
        }
        if s.outbox_frames == 0 {
            return Err("--outbox-frames must be at least 1".into());
        }
        if s.read_buffer_bytes < 16 {
            return Err("--read-buffer must be at least 16 bytes (a frame header)".into());
        }
        if s.max_message_bytes == 0 {
            return Err("--max-message-bytes must be at least 1".into());
        }
        if let Some(u) = &self.upstream {
            if u.connect_timeout.is_zero() || u.timeout.is_zero() {
                return Err(
                    "--upstream-connect-timeout and --upstream-timeout must be above zero".into(),
                );
            }
            if u.max_head_bytes < 256 || u.tunnel_buffer_bytes < 256 {
                return Err(
                    "--upstream-max-head-bytes and --upstream-tunnel-buffer must be at least 256"
                        .into(),
                );
            }
            if u.ping.is_some_and(|p| p.is_zero()) {
                return Err("--upstream-ping must be above zero".into());
            }
        }
        if self.prelude.keepalive_timeout.is_zero() || self.prelude.keepalive_requests == 0 {
            return Err("--keepalive-timeout and --keepalive-requests must be above zero".into());
        }
        if let Some(b) = &self.backplane {
            if b.channel_prefix.is_empty() {
                return Err("--redis-channel-prefix must not be empty".into());
            }
            if b.queue_messages == 0 || b.queue_bytes == 0 {
                return Err("--redis-queue and --redis-queue-bytes must be at least 1".into());
            }
            if b.announce_interval.is_zero() {
                return Err("--announce-interval must be above zero".into());
            }
            if b.advertise.is_some() && self.proxy.mode == ProxyMode::Off {
                return Err(
                    "--advertise needs --proxy-protocol optional or required: a forwarded \
                     request carries the client's address and its hop in a PROXY v2 header"
                        .into(),
                );
            }
            if b.timeout.is_zero() || b.backoff_min.is_zero() || b.backoff_min > b.backoff_max {
                return Err(
                    "--redis-timeout and --redis-backoff-min must be above zero, and \
                     --redis-backoff-min at most --redis-backoff-max"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// Every setting and its default, in `--help`'s order: what `--help` prints after argh's text.
pub fn defaults() -> Vec<(&'static str, String)> {
    let mut list = settings(&Config::default());
    for (name, value) in &mut list {
        if *name == "threads" {
            value.push_str(" (the cores available)");
        }
        if *name == "static" {
            *value = "(off: the embedded page)".into();
        }
    }
    list
}

/// Every setting as `c` has it, in `--help`'s order, secrets shown only as `(set)`: what
/// `--help` lists as defaults, and what the admin status page shows as the flags in force.
pub fn settings(c: &Config) -> Vec<(&'static str, String)> {
    let b = c
        .backplane
        .clone()
        .unwrap_or_else(|| BackplaneConfig::new(RedisUrl::default()));
    let u = c
        .upstream
        .clone()
        .unwrap_or_else(|| UpstreamConfig::new(String::new(), Vec::new()));
    let d = |d: Duration| format_duration(d);
    let off = |v: Option<String>| v.unwrap_or_else(|| "(off)".into());
    let secret = |s: &Option<Secret>| off(s.as_ref().map(|_| "(set)".into()));
    let trusted: Vec<String> = c.proxy.trusted.iter().map(Cidr::to_string).collect();
    vec![
        ("listen", c.listen.to_string()),
        ("listen-backlog", c.listen_backlog.to_string()),
        ("proxy-protocol", c.proxy.mode.as_str().into()),
        ("trusted-proxies", trusted.join(",")),
        ("header-timeout", d(c.prelude.header_timeout)),
        ("max-head-bytes", c.prelude.max_head_bytes.to_string()),
        ("ping-interval", d(c.session.ping_interval)),
        ("pong-timeout", d(c.session.pong_timeout)),
        ("max-message-bytes", c.session.max_message_bytes.to_string()),
        ("outbox-frames", c.session.outbox_frames.to_string()),
        ("read-buffer", c.session.read_buffer_bytes.to_string()),
        ("close-timeout", d(c.session.close_timeout)),
        ("upgrade-timeout", d(c.session.upgrade_timeout)),
        ("inline-gap", d(c.session.inline_gap)),
        ("threads", c.threads.to_string()),
        ("log-format", c.log_format.as_str().into()),
        ("log-value-bytes", c.log_value_bytes.to_string()),
        ("socket-send-buffer", c.socket_send_buffer.to_string()),
        ("max-connections", c.limits.max_connections.to_string()),
        (
            "max-connections-per-ip",
            c.limits.max_connections_per_ip.to_string(),
        ),
        (
            "max-messages-per-second",
            c.limits.max_messages_per_second.to_string(),
        ),
        (
            "allowed-origins",
            match c.limits.allowed_origins.is_empty() {
                true => "(all)".into(),
                false => c.limits.allowed_origins.join(","),
            },
        ),
        ("drain-delay", d(c.shutdown.drain_delay)),
        ("shutdown-timeout", d(c.shutdown.shutdown_timeout)),
        ("admin-listen", off(c.admin_listen.map(|a| a.to_string()))),
        (
            "static",
            off(c.static_dir.as_ref().map(|p| p.display().to_string())),
        ),
        ("keepalive-timeout", d(c.prelude.keepalive_timeout)),
        (
            "keepalive-requests",
            c.prelude.keepalive_requests.to_string(),
        ),
        ("upstream", off(c.upstream.as_ref().map(|u| u.name.clone()))),
        ("upstream-connect-timeout", d(u.connect_timeout)),
        ("upstream-timeout", d(u.timeout)),
        ("upstream-pool", u.pool.to_string()),
        ("upstream-max-head-bytes", u.max_head_bytes.to_string()),
        ("upstream-tunnel-buffer", u.tunnel_buffer_bytes.to_string()),
        ("upstream-ping", off(u.ping.map(d))),
        ("jwt-secret-file", secret(&c.auth.jwt_secret)),
        ("jwt-leeway", d(c.auth.leeway)),
        (
            "jwt-audience",
            c.auth
                .audience
                .clone()
                .unwrap_or_else(|| "(not checked)".into()),
        ),
        ("api-key-file", secret(&c.auth.api_key)),
        ("recovery-window", d(c.history.window)),
        ("history-size", c.history.room_entries.to_string()),
        ("history-memory", c.history.max_bytes.to_string()),
        // The URL's Display is host:port only: never the password.
        (
            "redis",
            off(c.backplane.as_ref().map(|b| b.redis.to_string())),
        ),
        ("redis-channel-prefix", b.channel_prefix),
        ("redis-queue", b.queue_messages.to_string()),
        ("redis-queue-bytes", b.queue_bytes.to_string()),
        ("redis-timeout", d(b.timeout)),
        ("redis-backoff-min", d(b.backoff_min)),
        ("redis-backoff-max", d(b.backoff_max)),
        ("advertise", off(b.advertise.map(|a| a.to_string()))),
        ("announce-interval", d(b.announce_interval)),
    ]
}

/// A duration the way the flags take it: `250ms`, `25s`, `5m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One of a few words, for flags that name a mode: `keyword(s, "--proxy-protocol",
/// &[("off", Off), ...])`. The error lists the words.
pub fn keyword<T: Copy>(s: &str, flag: &str, words: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, v)) = words.iter().find(|(w, _)| *w == s) {
        return Ok(*v);
    }
    let list: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
    Err(format!(
        "{flag} must be one of {}, not {s:?}",
        list.join(", ")
    ))
}

/// `--log-format`'s words. Written here, beside [`keyword`], so that `log` imports nothing
/// of the configuration (config -> log only).
impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let formats = [LogFormat::Text, LogFormat::Json];
        keyword(s, "--log-format", &formats.map(|f| (f.as_str(), f)))
    }
}

/// A comma-separated list, trimmed, empty items dropped.
pub fn parse_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// Sharing rooms between instances through Redis pub/sub (the `backplane` module).
#[derive(Debug, Clone, Default)]
pub struct BackplaneConfig {
    /// Where Redis is: `redis://[[user]:password@]host[:port][/db]`.
    pub redis: RedisUrl,
    /// Rooms travel on channels `{prefix}:{room}`; every instance subscribes to `{prefix}:*`.
    /// Instances that share rooms use the same prefix; separate deployments on one Redis use
    /// different ones (the `/db` of the URL does not separate them: Redis pub/sub ignores
    /// it). Default `wsgate`.
    pub channel_prefix: String,
    /// Most messages waiting to be written to Redis (besides the batch being written).
    /// **Full-policy: drop the newest**, counted in `wsgate_backplane_dropped_total`, so a
    /// Redis that stops reading never slows local delivery. Default 4096.
    pub queue_messages: usize,
    /// Most bytes waiting, with the same policy, so large messages cannot pile up
    /// `queue_messages` times `--max-message-bytes`. Default 16 MiB.
    pub queue_bytes: usize,
    /// Deadline for connecting (DNS, TCP, AUTH, SELECT and the first reply together); also
    /// how long a connection may be silent before a PING is sent, and how much longer before
    /// it counts as dead and is reset. Default 5 s (a dead Redis is noticed within 10 s).
    pub timeout: Duration,
    /// First reconnect delay; it doubles after each failure up to `backoff_max` (each delay
    /// is randomised between half and all of it). Default 100 ms.
    pub backoff_min: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub backoff_max: Duration,
    /// Where the other instances reach this one's listener (`--advertise HOST:PORT`), to
    /// forward the requests of polling sessions that live here. `None` (the default): none
    /// are forwarded here, and sessions' ids name no instance.
    pub advertise: Option<SocketAddr>,
    /// How often this instance announces `advertise` on the backplane; an instance not heard
    /// from for three times this long is forgotten. Default 2 s.
    pub announce_interval: Duration,
}

/// A parsed `redis://` URL. Its `Debug` hides the password and its `Display` is only
/// `host:port`, so it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Default 6379.
    pub port: u16,
    /// ACL user for `AUTH user password` (Redis 6+); `None` is `AUTH password`.
    pub username: Option<String>,
    /// Sent with `AUTH` after connecting; `None`: no `AUTH`.
    pub password: Option<String>,
    /// Database for `SELECT` (sent when not 0). Pub/sub channels are not per database.
    pub db: u32,
}

/// Limits. Each refusal is counted in metrics, answered with a status or close code, and
/// logged with the real client address.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Most WebSocket sessions at once; past it upgrades get 503 while `/healthz` and the page
    /// still answer. Default 100000 (size `LimitNOFILE` above it), lowered at start to what
    /// the fd limit allows when the flag is not given.
    pub max_connections: usize,
    /// Most sessions per real client address (from PROXY when present); past it 429.
    /// Default 0 = off, since many users can share one address behind carrier NAT.
    pub max_connections_per_ip: usize,
    /// Messages per second a client may send, as a token bucket holding one second's worth;
    /// past it the client is closed with 1008. Default 0 = off.
    pub max_messages_per_second: u32,
    /// `Origin` values allowed to upgrade (exact match, e.g. `https://chat.example.com`).
    /// Browsers always send `Origin`; other clients usually do not, and requests without it
    /// are allowed. Default: empty = every origin.
    pub allowed_origins: Vec<String>,
}

/// Graceful shutdown on SIGTERM: `/healthz` turns 503 at once, sessions are served for
/// `drain_delay`, then closed with 1001 and given `shutdown_timeout` to go.
#[derive(Debug, Clone)]
pub struct ShutdownConfig {
    /// How long to keep serving after SIGTERM while the load balancer drains the instance.
    /// Default 0 s; set it a little below the target group's deregistration delay (300 s by
    /// default on AWS), e.g. `290s`.
    pub drain_delay: Duration,
    /// How long to wait for clients to close after the 1001 Close. Default 10 s.
    pub shutdown_timeout: Duration,
}

/// How PROXY protocol headers are treated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `off`, `optional` or `required`. Default `off`.
    pub mode: ProxyMode,
    /// Sources whose PROXY headers are believed. Default: loopback and the private ranges
    /// (RFC 1918 and IPv6 ULA), which is where AWS load balancer nodes sit inside a VPC and
    /// where no packet from the public internet can come from. Narrow it to your VPC CIDR.
    pub trusted: Vec<Cidr>,
}

/// Limits on what a client may send before its connection is a WebSocket (or gets an answer).
#[derive(Debug, Clone)]
pub struct PreludeConfig {
    /// One deadline for the PROXY header and the HTTP head together. Default 5 s: enough for
    /// any real client and load balancer, short enough that slowloris clients do not pile up.
    pub header_timeout: Duration,
    /// One byte cap for the PROXY header and the HTTP head together; past it the answer is
    /// 431. Default 8192, the same as nginx's `large_client_header_buffers` single buffer.
    pub max_head_bytes: usize,
    /// How long a kept-alive connection may wait for its next request (with `--upstream`).
    /// Default 75 s, nginx's: longer than a CLB's 60 s idle timeout, so that the load balancer,
    /// not the gateway, closes an idle connection (never one it is about to reuse).
    pub keepalive_timeout: Duration,
    /// Most requests on one kept-alive connection; after it, `Connection: close`. Default 1000
    /// (nginx's `keepalive_requests`).
    pub keepalive_requests: usize,
}

/// Per-session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How often the server sends a WebSocket Ping. Default 25 s: well inside a CLB's 60 s
    /// idle timeout (only data resets it) and an NLB's 350 s.
    pub ping_interval: Duration,
    /// How long after a Ping a client has to send any frame or Pong before it is closed.
    /// Default 10 s.
    pub pong_timeout: Duration,
    /// Largest incoming message (and frame); past it the client is closed with 1009.
    /// Default 64 KiB.
    pub max_message_bytes: usize,
    /// Frames queued per member before it counts as a slow consumer and is closed with 1008.
    /// Default 256.
    pub outbox_frames: usize,
    /// Bytes of the socket read buffer per connection (allocated once per session), and the
    /// most one read takes. Small on purpose: memory per idle connection is what a gateway is
    /// judged by, and a chat message fits. Default 128 (512 before: 0.38 KiB more per idle
    /// WebSocket; a 1 KiB message then took 2 reads, now 8, about +3% CPU per delivery at a
    /// fan-out of 20, `docs/performance.md`).
    pub read_buffer_bytes: usize,
    /// How long a closing connection waits for the peer's Close reply and for its last bytes
    /// to drain before the socket is dropped. Default 2 s.
    pub close_timeout: Duration,
    /// How long a WebSocket that probes a polling session has to finish the upgrade (`5`)
    /// before it is closed and the session stays on polling. Default 10 s (engine.io's
    /// `upgradeTimeout`).
    pub upgrade_timeout: Duration,
    /// Inline delivery: a publish that comes at least this long after its room's previous one
    /// is sent by the publisher itself to each member whose session is idle (one `send` each,
    /// no wake-up of the session); closer publishes are queued for the sessions, which write
    /// what piles up in one `writev`. Zero turns it off. Default 12 ms: a room of up to about
    /// 80 messages a second goes inline; at 100 msg/s a 1,000-member room's inline fan-outs
    /// (one thread's sends in a row) raised its p99 by half, so it queues (`docs/performance.md`).
    pub inline_gap: Duration,
    /// Log each chat message with the real client address. Default off.
    pub log_messages: bool,
}

/// PROXY protocol mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// No PROXY header is read; bytes are HTTP from the first one.
    Off,
    /// A header is used when present and sent by a trusted source; a header from any other
    /// source gets the connection refused; no header means the socket address is used.
    Optional,
    /// Every connection must come from a trusted source and start with a valid header.
    Required,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            listen_backlog: 4096,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            log_format: LogFormat::Text,
            log_value_bytes: crate::log::DEFAULT_VALUE_BYTES,
            socket_send_buffer: 32 * 1024,
            proxy: ProxyConfig::default(),
            prelude: PreludeConfig::default(),
            session: SessionConfig::default(),
            limits: LimitsConfig::default(),
            shutdown: ShutdownConfig::default(),
            history: HistoryConfig::default(),
            admin_listen: None,
            static_dir: None,
            backplane: None,
            upstream: None,
            auth: AuthConfig::default(),
        }
    }
}

impl BackplaneConfig {
    /// The defaults, with Redis at `redis`.
    pub fn new(redis: RedisUrl) -> Self {
        BackplaneConfig {
            redis,
            channel_prefix: "wsgate".into(),
            queue_messages: 4096,
            queue_bytes: 16 * 1024 * 1024,
            timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            advertise: None,
            announce_interval: Duration::from_secs(2),
        }
    }
}

impl Default for RedisUrl {
    fn default() -> Self {
        RedisUrl {
            host: "127.0.0.1".into(),
            port: 6379,
            username: None,
            password: None,
            db: 0,
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("db", &self.db)
            .finish()
    }
}

impl fmt::Display for RedisUrl {
    /// `host:port` only: never the user or the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for RedisUrl {
    type Err = String;
    /// `redis://[[user]:password@]host[:port][/db]`; user and password may be
    /// percent-encoded. Error messages never repeat the password.
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("redis://").ok_or_else(|| {
            if s.starts_with("rediss://") {
                "invalid --redis: rediss:// (TLS) is not supported; use redis://".to_string()
            } else {
                "invalid --redis: expected redis://[[user]:password@]host[:port][/db]".to_string()
            }
        })?;
        let mut url = RedisUrl::default();
        let (authority, db) = match rest.split_once('/') {
            Some((a, db)) => (a, Some(db)),
            None => (rest, None),
        };
        let hostport = match authority.rsplit_once('@') {
            Some((userinfo, hp)) => {
                let (user, pass) = userinfo
                    .split_once(':')
                    .ok_or("invalid --redis: write credentials as :password@ or user:password@")?;
                let decode = |v: &str, what: &str| {
                    crate::percent::decode(v.as_bytes())
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or(format!("invalid --redis: bad %-escape in the {what}"))
                };
                url.username = Some(decode(user, "user name")?).filter(|u| !u.is_empty());
                url.password = Some(decode(pass, "password")?).filter(|p| !p.is_empty());
                hp
            }
            None => authority,
        };
        let (host, port) =
            split_host_port(hostport).ok_or("invalid --redis: unclosed [ in the host")?;
        if host.is_empty() {
            return Err("invalid --redis: no host".into());
        }
        url.host = host.to_string();
        if let Some(p) = port {
            url.port = p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid --redis: bad port {p:?}"))?;
        }
        if let Some(db) = db.filter(|d| !d.is_empty()) {
            url.db = db
                .parse()
                .map_err(|_| format!("invalid --redis: bad database number {db:?}"))?;
        }
        Ok(url)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            max_connections_per_ip: 0,
            max_messages_per_second: 0,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The default `--trusted-proxies` list.
pub const DEFAULT_TRUSTED_PROXIES: &str =
    "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7";

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            mode: ProxyMode::Off,
            trusted: parse_cidr_list(DEFAULT_TRUSTED_PROXIES).expect("default CIDR list parses"),
        }
    }
}

impl Default for PreludeConfig {
    fn default() -> Self {
        PreludeConfig {
            header_timeout: Duration::from_secs(5),
            max_head_bytes: 8192,
            keepalive_timeout: Duration::from_secs(75),
            keepalive_requests: 1000,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            max_message_bytes: 64 * 1024,
            outbox_frames: 256,
            read_buffer_bytes: 128,
            close_timeout: Duration::from_secs(2),
            upgrade_timeout: Duration::from_secs(10),
            inline_gap: Duration::from_millis(12),
            log_messages: false,
        }
    }
}

impl ProxyConfig {
    /// Whether `ip` may send a PROXY header.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

impl ProxyMode {
    /// The flag's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Off => "off",
            ProxyMode::Optional => "optional",
            ProxyMode::Required => "required",
        }
    }
}

impl FromStr for ProxyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let modes = [ProxyMode::Off, ProxyMode::Optional, ProxyMode::Required];
        keyword(s, "--proxy-protocol", &modes.map(|m| (m.as_str(), m)))
    }
}

/// An IP network such as `10.0.0.0/8` or `fc00::/7`. An IPv4 network also matches
/// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`), as a dual-stack listener sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR {s:?}: bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid CIDR {s:?}: prefix must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Splits `host[:port]` or `[v6][:port]` into the host (without brackets) and the port text,
/// if any; `None` for an unclosed `[`. Pure; the caller parses and checks the port.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        return Some((h, after.strip_prefix(':')));
    }
    Some(match authority.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address, no port.
        Some((h, _)) if h.contains(':') => (authority, None),
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    })
}

/// Parses `CIDR[,CIDR...]`. An empty string is an empty list (trust nobody).
pub fn parse_cidr_list(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

/// Parses a duration written as a number and a unit: `250ms`, `25s`, `1.5s`, `5m` or `1h`.
/// A bare number is refused, so that nobody wonders which unit it was. (The load tool, which
/// takes bare seconds, adds the `s` itself.)
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("invalid duration {s:?}: add a unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let bad = || format!("invalid duration {s:?}: expected a number and a unit");
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    // Integer arithmetic in nanoseconds (no float parser in the binary): whole part, then
    // each fraction digit, truncated below a nanosecond.
    let unit_ns: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m or h"
            ))
        }
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.len() > 20 || frac.contains('.') {
        return Err(bad());
    }
    let mut ns = whole.parse::<u128>().map_err(|_| bad())? * unit_ns;
    let mut scale = unit_ns;
    for d in frac.bytes().take(30) {
        scale /= 10;
        ns += u128::from(d - b'0') * scale;
    }
    let secs = u64::try_from(ns / 1_000_000_000)
        .map_err(|_| format!("invalid duration {s:?}: too large"))?;
    Ok(Duration::new(secs, (ns % 1_000_000_000) as u32))
}

/// Parses a byte count: `65536`, `64KiB`, `1MiB`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a whole number"))?;
    let mul = match unit {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1024,
        "MiB" | "M" => 1024 * 1024,
        _ => return Err(format!("invalid size {s:?}: unit must be B, KiB or MiB")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_are_listed_for_every_flag() {
        assert_eq!(Config::default().validate(), Ok(()));
        let d = defaults();
        let get = |k: &str| d.iter().find(|(f, _)| *f == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ping-interval"), Some("25s"));
        assert_eq!(get("max-head-bytes"), Some("8192"));
        assert_eq!(get("redis-backoff-min"), Some("100ms"));
        assert_eq!(get("proxy-protocol"), Some("off"));
        let mut c = Config::default();
        c.session.outbox_frames = 0;
        assert!(c.validate().unwrap_err().contains("--outbox-frames"));
        let mut b = BackplaneConfig::new(RedisUrl::default());
        b.backoff_min = Duration::from_secs(9);
        let c = Config {
            backplane: Some(b),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("--redis-backoff-min"));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("1.s").is_err() && parse_duration(".5s").is_err());
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("25").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert_eq!(parse_duration("0.25m"), Ok(Duration::from_secs(15)));
        assert_eq!(
            parse_duration("1.0005s"),
            Ok(Duration::from_micros(1_000_500))
        );
        assert_eq!(parse_duration("2.5ms"), Ok(Duration::from_micros(2500)));
        assert!(parse_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert!(parse_bytes("1GB").is_err());
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.200.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        let c: Cidr = "fc00::/7".parse().unwrap();
        assert!(c.contains("fd12::1".parse().unwrap()));
        assert!(!c.contains("fe80::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        assert_eq!(parse_cidr_list("").unwrap(), vec![]);
    }

    #[test]
    fn redis_urls() {
        let u: RedisUrl = "redis://10.0.0.5".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("10.0.0.5", 6379, 0));
        assert_eq!((u.username, u.password), (None, None));
        let u: RedisUrl = "redis://:p%40ss:w@cache.internal:6380/2".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("cache.internal", 6380, 2));
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_deref(), Some("p@ss:w"));
        assert_eq!(u.to_string(), "cache.internal:6380");
        assert!(!format!("{u:?}").contains("p@ss"));
        let u: RedisUrl = "redis://app:secret@[::1]:7000/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.to_string(), "[::1]:7000");
        for bad in [
            "10.0.0.5:6379",
            "rediss://h",
            "redis://",
            "redis://h:0",
            "redis://h:port",
            "redis://h/x",
            "redis://secret@h",
            "redis://:%zz@h",
        ] {
            let e = bad.parse::<RedisUrl>().unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn default_trust_excludes_public_addresses() {
        let p = ProxyConfig::default();
        assert!(p.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(p.is_trusted("172.31.5.6".parse().unwrap()));
        assert!(!p.is_trusted("203.0.113.7".parse().unwrap()));
        assert!(!p.is_trusted("172.32.0.1".parse().unwrap()));
    }
}
