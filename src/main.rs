//! The `wsgate` binary: argh flags -> [`Config`], executor threads, exit code.

use argh::FromArgs;
use async_signal::{Signal, Signals};
use futures_lite::{FutureExt, StreamExt};
use smol::{Async, Timer};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wsgate::config::{self, Config, ProxyMode};
use wsgate::executor::Executor;
use wsgate::log::Format as LogFormat;
use wsgate::server::{self, Gateway};
use wsgate::{error, info};

/// wsgate: a WebSocket gateway for AWS Classic and Network Load Balancers (PROXY v1/v2),
/// with broadcast rooms and an embedded chat page. Durations take a unit: 250ms, 25s, 5m.
#[derive(FromArgs, Debug)]
struct Args {
    /// address to listen on (default 0.0.0.0:8080)
    #[argh(option, default = "SocketAddr::from(([0, 0, 0, 0], 8080))")]
    listen: SocketAddr,

    /// accept queue length for listen(2), capped by net.core.somaxconn (default 4096)
    #[argh(option, default = "4096")]
    listen_backlog: u32,

    /// PROXY protocol: off, optional or required (default off); v1 and v2 are detected
    #[argh(option, default = "ProxyMode::Off")]
    proxy_protocol: ProxyMode,

    /// sources allowed to send PROXY headers, CIDR[,CIDR...] (default
    /// 127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7)
    #[argh(option, from_str_fn(cidrs))]
    trusted_proxies: Option<Vec<config::Cidr>>,

    /// one deadline for the PROXY header and HTTP head together (default 5s)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(duration))]
    header_timeout: Duration,

    /// byte cap for the PROXY header and HTTP head together; past it 431 (default 8192)
    #[argh(option, default = "8192", from_str_fn(bytes))]
    max_head_bytes: usize,

    /// interval between server pings (default 25s; keep it well inside the LB idle timeout)
    #[argh(option, default = "Duration::from_secs(25)", from_str_fn(duration))]
    ping_interval: Duration,

    /// close a client that sends nothing within this long after a ping (default 10s)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(duration))]
    pong_timeout: Duration,

    /// largest incoming message; past it the client is closed with 1009 (default 64KiB)
    #[argh(option, default = "64 * 1024", from_str_fn(bytes))]
    max_message_bytes: usize,

    /// frames queued per client before it is closed as a slow consumer, 1008 (default 256)
    #[argh(option, default = "256")]
    outbox_frames: usize,

    /// how long a closing connection waits for the client's close and last bytes (default 2s)
    #[argh(option, default = "Duration::from_secs(2)", from_str_fn(duration))]
    close_timeout: Duration,

    /// executor threads (default: the number of available cores)
    #[argh(option)]
    threads: Option<usize>,

    /// log each chat message with the real client address (default off)
    #[argh(switch)]
    log_messages: bool,

    /// log line format: text or json (default text)
    #[argh(option, default = "LogFormat::Text", from_str_fn(log_format))]
    log_format: LogFormat,

    /// most WebSocket sessions at once; past it upgrades get 503 (default 100000)
    #[argh(option, default = "100_000")]
    max_connections: usize,

    /// most sessions per real client address; past it 429 (default 0 = off)
    #[argh(option, default = "0")]
    max_connections_per_ip: usize,

    /// messages per second per client (burst: one second's worth); past it close 1008
    /// (default 0 = off)
    #[argh(option, default = "0")]
    max_messages_per_second: u32,

    /// allowed Origin values, comma separated; others get 403; requests without
    /// Origin are allowed (default: all)
    #[argh(option)]
    allowed_origins: Option<String>,

    /// after SIGTERM, keep serving this long before closing clients with 1001 (default 0s;
    /// set it just below the load balancer's deregistration delay)
    #[argh(option, default = "Duration::ZERO", from_str_fn(duration))]
    drain_delay: Duration,

    /// after the 1001 closes, wait this long for clients to go, then exit (default 10s)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(duration))]
    shutdown_timeout: Duration,

    /// address for /metrics (Prometheus) and /healthz, e.g. 127.0.0.1:9090 (default off)
    #[argh(option)]
    admin_listen: Option<SocketAddr>,

    /// serve files from this directory (GET/HEAD; / is its index.html) instead of the
    /// embedded page (default off)
    #[argh(option)]
    r#static: Option<std::path::PathBuf>,

    /// share rooms with other instances through Redis pub/sub:
    /// redis://[[user]:password@]HOST[:PORT][/DB] (default off). The password can instead
    /// come from WSGATE_REDIS_PASSWORD (the URL's wins when both are set)
    #[argh(option)]
    redis: Option<String>,

    /// prefix of the Redis channels, PREFIX:ROOM; instances sharing rooms use the same (default
    /// wsgate)
    #[argh(option, default = "String::from(\"wsgate\")")]
    redis_channel_prefix: String,

    /// messages waiting for Redis before new ones are dropped, counted (default 4096)
    #[argh(option, default = "4096")]
    redis_queue: usize,

    /// bytes waiting for Redis before new messages are dropped, counted (default 16MiB)
    #[argh(option, default = "16 * 1024 * 1024", from_str_fn(bytes))]
    redis_queue_bytes: usize,

    /// connect deadline; also the silence after which Redis is pinged, and then declared
    /// dead (default 5s)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(duration))]
    redis_timeout: Duration,

    /// first reconnect delay to Redis, doubling per failure (default 100ms)
    #[argh(option, default = "Duration::from_millis(100)", from_str_fn(duration))]
    redis_backoff_min: Duration,

    /// longest reconnect delay to Redis (default 5s)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(duration))]
    redis_backoff_max: Duration,
}

fn log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("invalid log format {s:?}: expected text or json")),
    }
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

impl Args {
    /// `env_password` is `WSGATE_REDIS_PASSWORD`, used when the URL has no password.
    fn into_config(self, env_password: Option<String>) -> Result<Config, String> {
        let mut c = Config {
            listen: self.listen,
            listen_backlog: self.listen_backlog,
            ..Config::default()
        };
        if let Some(t) = self.threads {
            if t == 0 {
                return Err("--threads must be at least 1".into());
            }
            c.threads = t;
        }
        c.proxy.mode = self.proxy_protocol;
        if let Some(t) = self.trusted_proxies {
            c.proxy.trusted = t;
        }
        c.prelude.header_timeout = self.header_timeout;
        c.prelude.max_head_bytes = self.max_head_bytes.max(64);
        c.session.ping_interval = self.ping_interval;
        c.session.pong_timeout = self.pong_timeout;
        c.session.max_message_bytes = self.max_message_bytes;
        c.session.outbox_frames = self.outbox_frames.max(1);
        c.session.close_timeout = self.close_timeout;
        c.session.log_messages = self.log_messages;
        c.limits.max_connections = self.max_connections;
        c.limits.max_connections_per_ip = self.max_connections_per_ip;
        c.limits.max_messages_per_second = self.max_messages_per_second;
        c.limits.allowed_origins = self
            .allowed_origins
            .iter()
            .flat_map(|s| s.split(','))
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        c.shutdown.drain_delay = self.drain_delay;
        c.shutdown.shutdown_timeout = self.shutdown_timeout;
        c.admin_listen = self.admin_listen;
        c.static_dir = self.r#static;
        if c.session.ping_interval.is_zero() || c.session.pong_timeout.is_zero() {
            return Err("--ping-interval and --pong-timeout must be above zero".into());
        }
        if let Some(url) = &self.redis {
            // Parsed here rather than by argh, whose error would repeat the value (and the
            // password in it).
            let mut redis: config::RedisUrl = url.parse()?;
            if redis.password.is_none() {
                redis.password = env_password.filter(|p| !p.is_empty());
            }
            let mut b = config::BackplaneConfig::new(redis);
            b.channel_prefix = self.redis_channel_prefix;
            b.queue_messages = self.redis_queue;
            b.queue_bytes = self.redis_queue_bytes;
            b.timeout = self.redis_timeout;
            b.backoff_min = self.redis_backoff_min;
            b.backoff_max = self.redis_backoff_max;
            if b.channel_prefix.is_empty() {
                return Err("--redis-channel-prefix must not be empty".into());
            }
            if b.queue_messages == 0 || b.queue_bytes == 0 {
                return Err("--redis-queue and --redis-queue-bytes must be at least 1".into());
            }
            if b.timeout.is_zero() || b.backoff_min.is_zero() || b.backoff_min > b.backoff_max {
                return Err(
                    "--redis-timeout and --redis-backoff-min must be above zero, and \
                     --redis-backoff-min at most --redis-backoff-max"
                        .into(),
                );
            }
            c.backplane = Some(b);
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    wsgate::log::set_format(args.log_format);
    let env_password = std::env::var("WSGATE_REDIS_PASSWORD").ok();
    let config = match args.into_config(env_password) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
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
        version = env!("CARGO_PKG_VERSION")
    );
    let gw = Gateway::new(config, executor.clone());
    wsgate::backplane::start(&gw);
    if let Some(admin) = admin {
        executor
            .spawn(wsgate::admin::run(admin, gw.clone()))
            .detach();
    }
    let code = executor.run(lifecycle(listener, gw, signals));
    drop(stop);
    code
}

/// Serves until SIGTERM, then drains: healthz 503 -> `drain_delay` -> Close 1001 ->
/// up to `shutdown_timeout` for the clients to go -> exit 0. SIGINT, or a second SIGTERM,
/// exits at once.
async fn lifecycle(
    listener: Async<TcpListener>,
    gw: Arc<Gateway>,
    mut signals: Signals,
) -> ExitCode {
    let (stop_accepting, accept_stopped) = async_channel::bounded::<()>(1);
    let accept = gw
        .executor
        .spawn(server::run(listener, gw.clone(), async move {
            let _ = accept_stopped.recv().await;
        }));
    let at_once = |sig: Signal| {
        info!("exit_now", signal = format!("{sig:?}"));
        ExitCode::from(if sig == Signal::Int { 130 } else { 143 })
    };
    match signals.next().await {
        Some(Ok(Signal::Term)) => {}
        Some(Ok(sig)) => return at_once(sig),
        _ => return ExitCode::from(1),
    }
    let shutdown = gw.config.shutdown.clone();
    gw.start_draining();
    info!(
        "draining",
        drain_delay = format!("{:?}", shutdown.drain_delay),
        open = gw.metrics.open.load(Ordering::Relaxed)
    );
    let next_signal = async {
        match signals.next().await {
            Some(Ok(sig)) => Some(sig),
            _ => std::future::pending().await,
        }
    };
    let mut next_signal = Box::pin(next_signal);
    let interrupted = async {
        Timer::after(shutdown.drain_delay).await;
        None
    }
    .or(next_signal.as_mut())
    .await;
    if let Some(sig) = interrupted {
        return at_once(sig);
    }
    drop(stop_accepting);
    accept.await;
    gw.hub.going_away();
    let open = gw.metrics.open.load(Ordering::Relaxed);
    info!("closing_clients", code = 1001, open = open);
    let deadline = Instant::now() + shutdown.shutdown_timeout;
    let drained = async {
        while gw.metrics.open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(20)).await;
        }
        None
    }
    .or(next_signal.as_mut())
    .await;
    if let Some(sig) = drained {
        return at_once(sig);
    }
    info!(
        "stopped",
        left_open = gw.metrics.open.load(Ordering::Relaxed)
    );
    ExitCode::SUCCESS
}
