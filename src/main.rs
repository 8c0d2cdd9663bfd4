//! The `wsgate` binary: argh flags -> [`Config`], executor threads, exit code.

use argh::FromArgs;
use smol::{Async, Executor};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use wsgate::config::{self, Config, ProxyMode};
use wsgate::server::{self, Gateway};
use wsgate::{error, info};

/// wsgate: a WebSocket gateway for AWS Classic and Network Load Balancers (PROXY v1/v2),
/// with broadcast rooms and an embedded chat page. Durations take a unit: 250ms, 25s, 5m.
#[derive(FromArgs, Debug)]
struct Args {
    /// address to listen on (default 0.0.0.0:8080)
    #[argh(option, default = "SocketAddr::from(([0, 0, 0, 0], 8080))")]
    listen: SocketAddr,

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
    fn into_config(self) -> Result<Config, String> {
        let mut c = Config {
            listen: self.listen,
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
        if c.session.ping_interval.is_zero() || c.session.pong_timeout.is_zero() {
            return Err("--ping-interval and --pong-timeout must be above zero".into());
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match Async::<TcpListener>::bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            error!("listen_failed", addr = config.listen, reason = e);
            return ExitCode::from(1);
        }
    };
    let addr = listener.get_ref().local_addr().unwrap_or(config.listen);
    let executor = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let threads = config.threads;
    for i in 1..threads {
        let ex = executor.clone();
        let stopped = stopped.clone();
        std::thread::Builder::new()
            .name(format!("wsgate-{i}"))
            .spawn(move || smol::block_on(ex.run(stopped.recv())))
            .expect("spawn executor thread");
    }
    info!(
        "listening",
        addr = addr,
        threads = threads,
        proxy_protocol = format!("{:?}", config.proxy.mode).to_lowercase(),
        version = env!("CARGO_PKG_VERSION")
    );
    let gw = Gateway::new(config, executor.clone());
    smol::block_on(executor.run(server::run(listener, gw, std::future::pending())));
    drop(stop);
    ExitCode::SUCCESS
}
