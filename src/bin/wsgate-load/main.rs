//! `wsgate-load`: the load tool shipped with wsgate. It drives a WebSocket chat server on this
//! machine the way a fleet of browsers behind an AWS CLB/NLB would, and measures it.
//!
//! ```text
//! main.rs        flags -> Common + scenario args, fd limit, executor threads, hard deadline,
//!                the JSON line last on stdout
//! idle.rs        N clients connect at a rate and hold: connect rate, failures, KiB per conn
//! fanout.rs      subscribers + publishers in rooms, a rate ladder: deliveries/s, latency, loss
//! churn.rs       connect/handshake/close cycles: errors, server RSS and fds before/after
//! client.rs      one connection: bind, connect, PROXY, handshake, WebSocket, Socket.IO open
//! polling.rs     one Socket.IO session on Engine.IO's polling transport (idle only)
//! target.rs      --url, loopback policy, --source-ips, request path per room and protocol
//! proxy_header.rs, handshake.rs, socketio.rs, message.rs   pure wire formats, unit-tested
//! histogram.rs   lock-free log-linear latency histogram
//! procstat.rs    /proc sampling of the --pid process trees
//! report.rs      JSON line and failure tally
//! ```
//! It shares no code with the wsgate library on purpose: it must build and measure while the
//! gateway changes, and measure other servers (Node `ws`, Socket.IO) just the same.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use argh::FromArgs;
use futures_lite::FutureExt;
use smol::{Executor, Timer};

/// Declares a subcommand's flags with the flags every subcommand shares in front.
macro_rules! with_common_flags {
    ($(#[$meta:meta])* pub(crate) struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        pub(crate) struct $name {
            /// server URL, ws://HOST:PORT/PATH; HOST must be loopback unless --allow-remote
            #[argh(option)]
            pub(crate) url: String,
            /// clients to open (churn: most cycles in flight at once); default 100
            #[argh(option, default = "100")]
            pub(crate) clients: usize,
            /// raw (WebSocket text messages), socketio (Engine.IO v4 / Socket.IO v5) or socketio-polling (idle only); default raw
            #[argh(option, default = "crate::target::Protocol::Raw")]
            pub(crate) protocol: crate::target::Protocol,
            /// send a PROXY header first, v1 (like a CLB) or v2 (like an NLB), from a synthetic client address per connection
            #[argh(option)]
            pub(crate) proxy: Option<crate::proxy_header::ProxyVersion>,
            /// bind client sockets round robin to these local addresses, FIRST-LAST (e.g. 127.0.0.2-127.0.0.40)
            #[argh(option)]
            pub(crate) source_ips: Option<String>,
            /// server process ids (comma list) to sample RSS, CPU and fds from /proc, children included
            #[argh(option)]
            pub(crate) pid: Option<String>,
            /// allow a --url or --source-ips outside 127.0.0.0/8 (default: loopback only)
            #[argh(switch)]
            pub(crate) allow_remote: bool,
            /// limit for connect, PROXY header, handshake and Socket.IO open together; default 10s
            #[argh(option, default = "Duration::from_secs(10)", from_str_fn(crate::parse_duration))]
            pub(crate) connect_timeout: Duration,
            /// executor threads of the tool; default 1 (leave the other cores to the server)
            #[argh(option, default = "1")]
            pub(crate) threads: usize,
            /// hard limit for the whole run (default: the planned time plus 30s)
            #[argh(option, from_str_fn(crate::parse_duration))]
            pub(crate) deadline: Option<Duration>,
            $($body)*
        }

        impl $name {
            /// The shared flags, checked.
            pub(crate) fn common(&self) -> Result<crate::Common, String> {
                crate::Common::new(
                    &self.url,
                    self.clients,
                    self.protocol,
                    self.proxy,
                    self.source_ips.as_deref(),
                    self.pid.as_deref(),
                    self.allow_remote,
                    self.connect_timeout,
                )
            }
        }
    };
}

mod churn;
mod client;
mod fanout;
mod handshake;
mod histogram;
mod idle;
mod message;
mod polling;
mod procstat;
mod proxy_header;
mod report;
mod socketio;
mod target;

use report::Json;

/// Drive a WebSocket chat server with many clients and measure it (idle, fanout, churn).
/// The last stdout line is one JSON object with the results; progress goes to stderr.
#[derive(FromArgs, Debug)]
struct Cli {
    #[argh(subcommand)]
    scenario: Scenario,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Scenario {
    Idle(idle::Args),
    Fanout(fanout::Args),
    Churn(churn::Args),
}

/// What every scenario needs besides its own flags.
#[derive(Debug)]
pub(crate) struct Common {
    /// How to open clients; shared by every client task.
    pub(crate) dialer: Arc<client::Dialer>,
    /// `--clients`.
    pub(crate) clients: usize,
    /// The `--pid` process trees, if given.
    pub(crate) procs: Option<procstat::ProcSet>,
}

impl Common {
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: &str,
        clients: usize,
        protocol: target::Protocol,
        proxy: Option<proxy_header::ProxyVersion>,
        source_ips: Option<&str>,
        pid: Option<&str>,
        allow_remote: bool,
        timeout: Duration,
    ) -> Result<Self, String> {
        let url = target::Url::parse(url, allow_remote)?;
        if proxy.is_some() && !url.addr.is_ipv4() {
            return Err("--proxy needs an IPv4 --url".into());
        }
        let sources = source_ips
            .map(|s| target::SourceIps::parse(s, allow_remote))
            .transpose()?;
        if sources.is_some() && !url.addr.is_ipv4() {
            return Err("--source-ips needs an IPv4 --url".into());
        }
        if clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        Ok(Common {
            dialer: Arc::new(client::Dialer {
                url,
                protocol,
                proxy,
                sources,
                timeout,
            }),
            clients,
            procs: pid.map(procstat::ProcSet::parse).transpose()?,
        })
    }

    /// A `/proc` sample of the server, if `--pid` was given.
    pub(crate) fn sample(&self) -> Option<procstat::Sample> {
        self.procs.as_ref().map(procstat::ProcSet::sample)
    }
}

/// The executor all client tasks run on.
pub(crate) type Ex = Arc<Executor<'static>>;

/// The tool's epoch: message send times are nanoseconds since this instant.
static START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the tool started (monotonic).
pub(crate) fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A per-run seed for WebSocket keys: wall-clock nanoseconds mixed with the pid.
pub(crate) fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        wall ^ (u64::from(std::process::id()) << 32)
    })
}

/// `250ms`, `25s`, `5m`, or a bare number of seconds (`2.5`): the gateway's parser
/// ([`wsgate::config::parse_duration`]), with `s` as the unit of a bare number.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return wsgate::config::parse_duration(&format!("{s}s"));
    }
    wsgate::config::parse_duration(s)
}

/// Raises the soft open-files limit to the hard one and checks that `needed` fds fit.
fn raise_fd_limit(needed: u64) -> Result<(), String> {
    // The gateway's own raise; it keeps 64 fds for stdio, the reactor and /proc reads.
    let fds = wsgate::server::raise_fd_limit();
    if !fds.fits(needed as usize) {
        let (want, soft) = (needed + 64, fds.soft);
        return Err(format!("needs about {want} file descriptors but the limit is {soft} (one per client; raise `ulimit -n` or use fewer clients)"));
    }
    Ok(())
}

fn main() {
    START.get_or_init(Instant::now);
    let cli: Cli = argh::from_env();
    std::process::exit(match run(cli) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(Failure::Setup(e)) => {
            eprintln!("wsgate-load: {e}");
            1
        }
        Err(Failure::Run(e)) => {
            eprintln!("wsgate-load: {e}");
            println!("{}", Json::obj().with("error", e.as_str()));
            2
        }
        Err(Failure::Deadline(d)) => {
            let e = format!(
                "hard deadline of {}s reached; stopping",
                report::Json::F(d.as_secs_f64())
            );
            eprintln!("wsgate-load: {e}");
            println!("{}", Json::obj().with("error", e.as_str()));
            3
        }
    });
}

/// How a run ends when it does not produce results.
#[derive(Debug)]
enum Failure {
    /// Bad flags or environment: nothing was sent.
    Setup(String),
    /// The scenario could not complete (e.g. no client connected).
    Run(String),
    /// The hard deadline cut the run short.
    Deadline(Duration),
}

fn run(cli: Cli) -> Result<Json, Failure> {
    let (threads, deadline_flag) = match &cli.scenario {
        Scenario::Idle(a) => (a.threads, a.deadline),
        Scenario::Fanout(a) => (a.threads, a.deadline),
        Scenario::Churn(a) => (a.threads, a.deadline),
    };
    let (common, planned, fds) = match &cli.scenario {
        Scenario::Idle(a) => {
            let c = a.common().map_err(Failure::Setup)?;
            let p = a.planned(&c).map_err(Failure::Setup)?;
            let n = c.clients as u64;
            (c, p, n)
        }
        Scenario::Fanout(a) => {
            let c = a.common().map_err(Failure::Setup)?;
            let p = a.planned(&c).map_err(Failure::Setup)?;
            let n = (c.clients + a.publishers) as u64;
            (c, p, n)
        }
        Scenario::Churn(a) => {
            let c = a.common().map_err(Failure::Setup)?;
            let p = a.planned(&c).map_err(Failure::Setup)?;
            let n = c.clients as u64;
            (c, p, n)
        }
    };
    raise_fd_limit(fds).map_err(Failure::Setup)?;
    let deadline = deadline_flag.unwrap_or(planned + Duration::from_secs(30));

    let ex: Ex = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let helpers: Vec<_> = (1..threads.max(1))
        .map(|_| {
            let (ex, stopped) = (ex.clone(), stopped.clone());
            std::thread::spawn(move || futures_lite::future::block_on(ex.run(stopped.recv())))
        })
        .collect();
    let scenario = {
        let ex = ex.clone();
        async move {
            match cli.scenario {
                Scenario::Idle(a) => idle::run(&ex, &common, &a).await,
                Scenario::Fanout(a) => fanout::run(&ex, &common, &a).await,
                Scenario::Churn(a) => churn::run(&ex, &common, &a).await,
            }
            .map_err(Failure::Run)
        }
    };
    let result = futures_lite::future::block_on(ex.run(scenario.or(async {
        Timer::after(deadline).await;
        Err(Failure::Deadline(deadline))
    })));
    drop(stop);
    for h in helpers {
        let _ = h.join();
    }
    result
}

/// Spawns a task that prints `line()` to stderr every second until dropped.
pub(crate) fn progress(ex: &Ex, line: impl Fn(f64) -> String + Send + 'static) -> smol::Task<()> {
    let start = Instant::now();
    ex.spawn(async move {
        let mut tick = start;
        loop {
            tick += Duration::from_secs(1);
            Timer::at(tick).await;
            eprintln!(
                "[{:>5.1}s] {}",
                start.elapsed().as_secs_f64(),
                line(start.elapsed().as_secs_f64())
            );
        }
    })
}

/// Milliseconds with 3 decimals from nanoseconds.
pub(crate) fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `latency_ms{p50,p90,p99,p999,max}` from a histogram of nanoseconds.
pub(crate) fn latency_json(s: &histogram::Snapshot) -> Json {
    Json::obj()
        .with("p50", ms(s.percentile(50.0)))
        .with("p90", ms(s.percentile(90.0)))
        .with("p99", ms(s.percentile(99.0)))
        .with("p999", ms(s.percentile(99.9)))
        .with("max", ms(s.max()))
}

/// `p50/p99/max` in ms for the human summary.
pub(crate) fn latency_human(s: &histogram::Snapshot) -> String {
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(s.percentile(50.0)),
        ms(s.percentile(90.0)),
        ms(s.percentile(99.0)),
        ms(s.percentile(99.9)),
        ms(s.max())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        // The gateway's parser (tested there), plus bare seconds.
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5d").is_err() && parse_duration(".").is_err());
    }
}
