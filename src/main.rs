//! The `wsgate` binary: argh flags -> [`Config`], executor threads, exit code.

use argh::FromArgs;
use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use smol::Async;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;
use wsgate::config::{self, Config, ProxyMode};
use wsgate::executor::Executor;
use wsgate::gateway::Gateway;
use wsgate::log::Format as LogFormat;
use wsgate::server;
use wsgate::{error, info};

/// wsgate: a WebSocket gateway for AWS Classic and Network Load Balancers (PROXY v1/v2),
/// with broadcast rooms and an embedded chat page. Durations take a unit: 250ms, 25s, 5m.
/// Every default is listed after the options (they are kept in one place, config.rs).
#[derive(FromArgs, Debug)]
struct Args {
    /// address to listen on
    #[argh(option)]
    listen: Option<SocketAddr>,

    /// accept queue length for listen(2), capped by net.core.somaxconn
    #[argh(option)]
    listen_backlog: Option<u32>,

    /// PROXY protocol: off, optional or required; v1 and v2 are detected
    #[argh(option)]
    proxy_protocol: Option<ProxyMode>,

    /// sources allowed to send PROXY headers, CIDR[,CIDR...]
    #[argh(option, from_str_fn(cidrs))]
    trusted_proxies: Option<Vec<config::Cidr>>,

    /// one deadline for the PROXY header and HTTP head together
    #[argh(option, from_str_fn(duration))]
    header_timeout: Option<Duration>,

    /// byte cap for the PROXY header and HTTP head together; past it 431 (at least 64)
    #[argh(option, from_str_fn(bytes))]
    max_head_bytes: Option<usize>,

    /// interval between server pings (keep it well inside the LB idle timeout)
    #[argh(option, from_str_fn(duration))]
    ping_interval: Option<Duration>,

    /// close a client that sends nothing within this long after a ping
    #[argh(option, from_str_fn(duration))]
    pong_timeout: Option<Duration>,

    /// largest incoming message; past it the client is closed with 1009
    #[argh(option, from_str_fn(bytes))]
    max_message_bytes: Option<usize>,

    /// frames queued per client before it is closed as a slow consumer, 1008
    #[argh(option)]
    outbox_frames: Option<usize>,

    /// a WebSocket's read buffer (held for its whole life; bigger messages take more reads)
    #[argh(option, from_str_fn(bytes))]
    read_buffer: Option<usize>,

    /// how long a closing connection waits for the client's close and last bytes
    #[argh(option, from_str_fn(duration))]
    close_timeout: Option<Duration>,

    /// in a room whose publishes come this far apart on average, the publisher sends to idle
    /// members itself (one send each, no wake-up); 0ms: always queue for the sessions
    #[argh(option, from_str_fn(duration))]
    inline_gap: Option<Duration>,

    /// time a WebSocket probing a polling session has to finish the upgrade
    #[argh(option, from_str_fn(duration))]
    upgrade_timeout: Option<Duration>,

    /// executor threads (default: the number of available cores)
    #[argh(option)]
    threads: Option<usize>,

    /// log each chat message with the real client address
    #[argh(switch)]
    log_messages: bool,

    /// log line format: text or json
    #[argh(option, from_str_fn(log_format))]
    log_format: Option<LogFormat>,

    /// longest value written to a log line; longer ones are cut and marked
    #[argh(option, from_str_fn(bytes))]
    log_value_bytes: Option<usize>,

    /// SO_SNDBUF of accepted sockets (0 = the kernel's autotuning, up to 4 MiB per client)
    #[argh(option, from_str_fn(bytes))]
    socket_send_buffer: Option<usize>,

    /// most WebSocket sessions at once; past it upgrades get 503
    #[argh(option)]
    max_connections: Option<usize>,

    /// most sessions per real client address; past it 429 (0 = off)
    #[argh(option)]
    max_connections_per_ip: Option<usize>,

    /// messages per second per client (burst: one second's worth); past it close 1008
    /// (0 = off)
    #[argh(option)]
    max_messages_per_second: Option<u32>,

    /// allowed Origin values, comma separated; others get 403; requests without
    /// Origin are allowed (default: all)
    #[argh(option)]
    allowed_origins: Option<String>,

    /// after SIGTERM, keep serving this long before closing clients with 1001 (set it just
    /// below the load balancer's deregistration delay)
    #[argh(option, from_str_fn(duration))]
    drain_delay: Option<Duration>,

    /// after the 1001 closes, wait this long for clients to go, then exit
    #[argh(option, from_str_fn(duration))]
    shutdown_timeout: Option<Duration>,

    /// how long messages are kept and a Socket.IO session may stay away and still be
    /// recovered; 0 turns history and recovery off
    #[argh(option, from_str_fn(window))]
    recovery_window: Option<Duration>,

    /// messages kept per room for recovery
    #[argh(option)]
    history_size: Option<usize>,

    /// bytes of history all rooms may hold together
    #[argh(option, from_str_fn(bytes))]
    history_memory: Option<usize>,

    /// address for /metrics (Prometheus) and /healthz, e.g. 127.0.0.1:9090 (default off)
    #[argh(option)]
    admin_listen: Option<SocketAddr>,

    /// serve files from this directory (GET/HEAD; / is its index.html) instead of the
    /// embedded page (default off)
    #[argh(option)]
    r#static: Option<std::path::PathBuf>,

    /// stand in nginx's place: pass every request but /healthz to this app,
    /// http://HOST:PORT (IPv4, [IPv6] or a name), with X-Forwarded-For and WebSocket upgrades
    /// (default off)
    #[argh(option)]
    upstream: Option<String>,

    /// deadline for a new connection to --upstream; past it 502
    #[argh(option, from_str_fn(duration))]
    upstream_connect_timeout: Option<Duration>,

    /// how long --upstream may take to start a response (504 past it) or between two body
    /// reads; tunnels have no idle timeout
    #[argh(option, from_str_fn(duration))]
    upstream_timeout: Option<Duration>,

    /// idle --upstream connections kept for reuse
    #[argh(option)]
    upstream_pool: Option<usize>,

    /// largest --upstream response head; past it 502
    #[argh(option, from_str_fn(bytes))]
    upstream_max_head_bytes: Option<usize>,

    /// each of a tunnel's two fixed buffers
    #[argh(option, from_str_fn(bytes))]
    upstream_tunnel_buffer: Option<usize>,

    /// ping a tunnelled WebSocket client that has been quiet this long, and swallow its pong
    /// (default off)
    #[argh(option, from_str_fn(duration))]
    upstream_ping: Option<Duration>,

    /// send the upstream's HOST:PORT as Host instead of the client's (always in
    /// X-Forwarded-Host)
    #[argh(switch)]
    upstream_rewrite_host: bool,

    /// check the flags (and read the key files they name), print the settings in force, and
    /// exit: 0 when they are valid, 2 when not (as `nginx -t` does)
    #[argh(switch)]
    check: bool,

    /// with --upstream: how long a kept-alive client connection may wait for its next request
    #[argh(option, from_str_fn(duration))]
    keepalive_timeout: Option<Duration>,

    /// with --upstream: most requests on one client connection
    #[argh(option)]
    keepalive_requests: Option<usize>,

    /// share rooms with other instances through Redis pub/sub:
    /// redis://[[user]:password@]HOST[:PORT][/DB] (default off). The password can instead
    /// come from WSGATE_REDIS_PASSWORD (the URL's wins when both are set)
    #[argh(option)]
    redis: Option<String>,

    /// prefix of the Redis channels, PREFIX:ROOM; instances sharing rooms use the same
    #[argh(option)]
    redis_channel_prefix: Option<String>,

    /// messages waiting for Redis before new ones are dropped, counted
    #[argh(option)]
    redis_queue: Option<usize>,

    /// bytes waiting for Redis before new messages are dropped, counted
    #[argh(option, from_str_fn(bytes))]
    redis_queue_bytes: Option<usize>,

    /// connect deadline; also the silence after which Redis is pinged, and then declared
    /// dead
    #[argh(option, from_str_fn(duration))]
    redis_timeout: Option<Duration>,

    /// first reconnect delay to Redis, doubling per failure
    #[argh(option, from_str_fn(duration))]
    redis_backoff_min: Option<Duration>,

    /// longest reconnect delay to Redis
    #[argh(option, from_str_fn(duration))]
    redis_backoff_max: Option<Duration>,

    /// with --redis: HOST:PORT where the other instances reach this one, to forward the
    /// requests of polling sessions that live here (needs --proxy-protocol optional|required)
    #[argh(option)]
    advertise: Option<SocketAddr>,

    /// with --advertise: how often this instance announces itself on the backplane
    #[argh(option, from_str_fn(duration))]
    announce_interval: Option<Duration>,

    /// file holding the HS256 key for handshake tokens (or env WSGATE_JWT_SECRET); when set,
    /// every session must present a valid token
    #[argh(option)]
    jwt_secret_file: Option<std::path::PathBuf>,

    /// clock skew allowed on a token's exp and nbf
    #[argh(option, from_str_fn(duration))]
    jwt_leeway: Option<Duration>,

    /// when set, a token's aud must name it
    #[argh(option)]
    jwt_audience: Option<String>,

    /// file holding the key of the publish API on the admin listener (or env WSGATE_API_KEY)
    #[argh(option)]
    api_key_file: Option<std::path::PathBuf>,
}

fn log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}
/// `--recovery-window`: a duration, or a bare `0` (off).
fn window(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    duration(s)
}

fn duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}
fn bytes(s: &str) -> Result<usize, String> {
    config::parse_bytes(s)
}
fn cidrs(s: &str) -> Result<Vec<config::Cidr>, String> {
    config::parse_cidr_list(s)
}

/// `target = value` for each flag given; a flag not given leaves the default.
macro_rules! set {
    ($($target:expr => $value:expr),* $(,)?) => {
        $(if let Some(v) = $value { $target = v; })*
    };
}

impl Args {
    /// The flags over [`Config::default`], validated. `env` reads the environment:
    /// `WSGATE_REDIS_PASSWORD` (used when the URL has no password), `WSGATE_JWT_SECRET` and
    /// `WSGATE_API_KEY` (used when their file flags are not given).
    fn into_config(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let env_password = env("WSGATE_REDIS_PASSWORD");
        let mut c = Config::default();
        set! {
            c.listen => self.listen,
            c.listen_backlog => self.listen_backlog,
            c.threads => self.threads,
            c.log_format => self.log_format,
            c.log_value_bytes => self.log_value_bytes,
            c.socket_send_buffer => self.socket_send_buffer,
            c.proxy.mode => self.proxy_protocol,
            c.proxy.trusted => self.trusted_proxies,
            c.prelude.header_timeout => self.header_timeout,
            c.prelude.max_head_bytes => self.max_head_bytes,
            c.prelude.keepalive_timeout => self.keepalive_timeout,
            c.prelude.keepalive_requests => self.keepalive_requests,
            c.session.ping_interval => self.ping_interval,
            c.session.pong_timeout => self.pong_timeout,
            c.session.max_message_bytes => self.max_message_bytes,
            c.session.outbox_frames => self.outbox_frames,
            c.session.read_buffer_bytes => self.read_buffer,
            c.session.close_timeout => self.close_timeout,
            c.session.inline_gap => self.inline_gap,
            c.session.upgrade_timeout => self.upgrade_timeout,
            c.limits.max_connections => self.max_connections,
            c.limits.max_connections_per_ip => self.max_connections_per_ip,
            c.limits.max_messages_per_second => self.max_messages_per_second,
            c.shutdown.drain_delay => self.drain_delay,
            c.shutdown.shutdown_timeout => self.shutdown_timeout,
            c.history.window => self.recovery_window,
            c.history.room_entries => self.history_size,
            c.history.max_bytes => self.history_memory,
        }
        c.session.log_messages |= self.log_messages;
        c.admin_listen = self.admin_listen.or(c.admin_listen);
        c.static_dir = self.r#static.or(c.static_dir);
        if let Some(list) = &self.allowed_origins {
            c.limits.allowed_origins = config::parse_list(list);
        }
        if let Some(url) = &self.upstream {
            let mut u = config::UpstreamConfig::parse(url)?;
            set! {
                u.connect_timeout => self.upstream_connect_timeout,
                u.timeout => self.upstream_timeout,
                u.pool => self.upstream_pool,
                u.max_head_bytes => self.upstream_max_head_bytes,
                u.tunnel_buffer_bytes => self.upstream_tunnel_buffer,
            }
            u.ping = self.upstream_ping;
            u.rewrite_host = self.upstream_rewrite_host;
            c.upstream = Some(u);
        }
        if let Some(url) = &self.redis {
            // Parsed here rather than by argh, whose error would repeat the value (and the
            // password in it).
            let mut redis: config::RedisUrl = url.parse()?;
            if redis.password.is_none() {
                redis.password = env_password.filter(|p| !p.is_empty());
            }
            let mut b = config::BackplaneConfig::new(redis);
            set! {
                b.channel_prefix => self.redis_channel_prefix,
                b.queue_messages => self.redis_queue,
                b.queue_bytes => self.redis_queue_bytes,
                b.timeout => self.redis_timeout,
                b.backoff_min => self.redis_backoff_min,
                b.backoff_max => self.redis_backoff_max,
                b.announce_interval => self.announce_interval,
            }
            b.advertise = self.advertise;
            c.backplane = Some(b);
        } else if self.advertise.is_some() {
            return Err("--advertise needs --redis".into());
        }
        let secret = |file: &Option<std::path::PathBuf>, var: &str, flag: &str| match file {
            Some(path) => {
                let text =
                    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
                config::Secret::from_text(&text, &format!("{flag} {}", path.display())).map(Some)
            }
            None => env(var)
                .map(|v| config::Secret::from_text(v.as_bytes(), var))
                .transpose(),
        };
        c.auth.jwt_secret = secret(
            &self.jwt_secret_file,
            "WSGATE_JWT_SECRET",
            "--jwt-secret-file",
        )?;
        c.auth.api_key = secret(&self.api_key_file, "WSGATE_API_KEY", "--api-key-file")?;
        set! {
            c.auth.leeway => self.jwt_leeway,
        }
        c.auth.audience = self.jwt_audience;
        c.validate()?;
        Ok(c)
    }
}

/// Parses the command line. `--help` prints argh's text and then every default, from
/// [`config::defaults`].
fn parse_args() -> Result<Args, ExitCode> {
    let all: Vec<String> = std::env::args().collect();
    let cmd = all.first().map_or("wsgate", String::as_str);
    let rest: Vec<&str> = all.iter().skip(1).map(String::as_str).collect();
    Args::from_args(&[cmd], &rest).map_err(|exit| match exit.status {
        Ok(()) => {
            print!("{}", exit.output);
            println!("\nDefaults:");
            for (flag, value) in config::defaults() {
                println!("  --{flag:<26} {value}");
            }
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("{}\nRun {cmd} --help for more information.", exit.output);
            ExitCode::from(1)
        }
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let max_connections_given = args.max_connections.is_some();
    let check = args.check;
    let config = match args.into_config(|var| std::env::var(var).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        for (flag, value) in config::settings(&config) {
            println!("--{flag:<26} {value}");
        }
        println!("wsgate: the flags are valid");
        return ExitCode::SUCCESS;
    }
    wsgate::log::set_format(config.log_format);
    wsgate::log::set_max_value(config.log_value_bytes);
    // Signals are registered before anything else, so an early SIGTERM is not lost.
    let signals = match Signals::new([Signal::Term, Signal::Int]) {
        Ok(s) => s,
        Err(e) => {
            error!("signals_failed", reason = e);
            return ExitCode::from(1);
        }
    };
    let listener = match Async::<TcpListener>::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            error!("listen_failed", addr = config.listen, reason = e);
            return ExitCode::from(1);
        }
    };
    // std binds with a backlog of 128; listening again on the same socket raises it.
    let backlog = i32::try_from(config.listen_backlog).unwrap_or(i32::MAX);
    if let Err(e) = rustix::net::listen(listener.get_ref(), backlog) {
        error!("listen_backlog_failed", reason = e);
    }
    let admin = match config
        .admin_listen
        .map(Async::<TcpListener>::bind)
        .transpose()
    {
        Ok(a) => a,
        Err(e) => {
            error!("admin_listen_failed", reason = e);
            return ExitCode::from(1);
        }
    };
    let addr = listener.get_ref().local_addr().unwrap_or(config.listen);
    let executor = Executor::new();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let threads = config.threads;
    for i in 1..threads {
        let ex = executor.clone();
        let stopped = stopped.clone();
        std::thread::Builder::new()
            .name(format!("wsgate-{i}"))
            .spawn(move || ex.run(stopped.recv()))
            .expect("spawn executor thread");
    }
    let admin_addr = admin.as_ref().and_then(|a| a.get_ref().local_addr().ok());
    info!(
        "listening",
        addr = addr,
        admin = admin_addr.map_or("off".to_string(), |a| a.to_string()),
        threads = threads,
        proxy_protocol = format!("{:?}", config.proxy.mode).to_lowercase(),
        upstream = config.upstream.as_ref().map_or("off", |u| u.name.as_str()),
        tokens = if config.auth.jwt_secret.is_some() {
            "hs256"
        } else {
            "off"
        },
        publish_api = if config.auth.api_key.is_some() {
            "on"
        } else {
            "off"
        },
        version = env!("CARGO_PKG_VERSION")
    );
    let mut config = config;
    let fds = server::raise_fd_limit();
    info!(
        "fd_limit",
        soft = fds.soft,
        hard = fds.hard,
        raised_from = fds.before
    );
    if !fds.fits(config.limits.max_connections) {
        if max_connections_given {
            wsgate::warn!(
                "fd_limit_low",
                soft = fds.soft,
                max_connections = config.limits.max_connections,
                detail = "--max-connections cannot all be served: raise LimitNOFILE / \
                          ulimit -Hn, or lower --max-connections"
            );
        } else {
            // The default is a ceiling, not a promise: past the fd limit an upgrade gets a
            // clean 503 instead of an accept error.
            config.limits.max_connections = fds.sessions();
            info!(
                "max_connections_lowered",
                max_connections = config.limits.max_connections,
                reason = "the default does not fit the fd limit"
            );
        }
    }
    let gw = Gateway::new(config, executor.clone());
    gw.start();
    if let Some(admin) = admin {
        executor
            .spawn(wsgate::admin::run(admin, gw.clone()))
            .detach();
    }
    let signals = signals.filter_map(|s| match s {
        Ok(Signal::Term) => Some(server::Signal::Term),
        Ok(Signal::Int) => Some(server::Signal::Int),
        _ => None,
    });
    // A task of its own: `run`'s own future is polled at every wake-up of this worker, and
    // the signal stream's poll is a read(2).
    let server = executor.spawn(server::run(listener, gw, signals));
    let stopped = executor.run(server);
    drop(stop);
    match stopped {
        server::Stopped::Drained { .. } => ExitCode::SUCCESS,
        server::Stopped::Now(sig) => {
            info!("exit_now", signal = format!("{sig:?}"));
            ExitCode::from(if sig == server::Signal::Int { 130 } else { 143 })
        }
        server::Stopped::NoSignals => ExitCode::from(1),
    }
}
