//! `idle`: open `--clients` connections at `--connect-rate`, hold them `--hold`, and report the
//! connect rate, failures by reason and the server's RSS growth per connection (`kb_per_conn`).
//! Held clients keep reading, so the server's pings are answered (tungstenite answers WebSocket
//! pings, [`crate::client::Rx`] answers Socket.IO ones, and a polling client POSTs its pong).

use crate::procstat;
use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use argh::FromArgs;
use futures_lite::FutureExt;
use smol::Timer;

use crate::client::{Client, Event};
use crate::polling::PollClient;
use crate::target::Protocol;
use crate::{histogram::Histogram, report::Json, report::Reasons, Common, Ex};

/// How long closing the held clients may take at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often the coordinator checks whether every connect attempt has finished.
const POLL: Duration = Duration::from_millis(20);

with_common_flags! {
    /// Open N clients at a rate and hold them: connect rate, failures by reason, server KiB per connection.
    #[derive(FromArgs, Debug)]
    #[argh(subcommand, name = "idle")]
    pub(crate) struct Args {
        /// new connections per second; default 1000
        #[argh(option, default = "1000.0")]
        pub(crate) connect_rate: f64,
        /// spread the clients over this many rooms, client i in room-(i mod N); default 1 (the URL's own room)
        #[argh(option, default = "1")]
        pub(crate) rooms: usize,
        /// how long to hold every client open after the last connect; default 10s
        #[argh(option, default = "Duration::from_secs(10)", from_str_fn(crate::parse_duration))]
        pub(crate) hold: Duration,
    }
}

impl Args {
    /// The run's planned length, for the default hard deadline; checks the flags.
    pub(crate) fn planned(&self, c: &Common) -> Result<Duration, String> {
        if self.rooms == 0 {
            return Err("--rooms must be at least 1".into());
        }
        if !self.connect_rate.is_finite() || self.connect_rate <= 0.0 {
            return Err("--connect-rate must be above 0".into());
        }
        Ok(
            Duration::from_secs_f64(c.clients as f64 / self.connect_rate)
                + c.dialer.timeout
                + self.hold
                + CLOSE_GRACE,
        )
    }
}

/// What the client tasks and the progress line share: one `Arc` for all of it.
#[derive(Debug, Default)]
struct Counters {
    /// Why opens failed or connections were lost.
    reasons: Reasons,
    /// Time to open each connection.
    hist: Histogram,
    opened: AtomicU64,
    failed: AtomicU64,
    open_now: AtomicU64,
    dropped: AtomicU64,
    /// `now_ns()` of the last successful open.
    last_open_ns: AtomicU64,
}

/// A held client of either kind.
#[derive(Debug)]
enum Held {
    Ws(Client),
    Poll(PollClient),
}

impl Held {
    /// Waits until the server ends the session; returns why.
    async fn until_closed(&mut self) -> String {
        match self {
            Held::Ws(c) => loop {
                if let Event::Closed(why) = c.rx.next_event().await {
                    return why;
                }
            },
            Held::Poll(p) => p.held_until_closed().await,
        }
    }

    async fn close(&mut self) {
        match self {
            Held::Ws(c) => {
                let _ = c.tx.lock().await.close().await;
            }
            Held::Poll(p) => p.close().await,
        }
    }
}

/// Runs the scenario and returns the JSON result.
pub(crate) async fn run(ex: &Ex, c: &Common, a: &Args) -> Result<Json, String> {
    let n = c.clients as u64;
    let before = c.sample();
    let counters = Arc::new(Counters::default());
    let (reasons, connect_hist) = (&counters.reasons, &counters.hist);
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let rooms = a.rooms;

    let _progress = {
        let (k, procs) = (counters.clone(), c.procs.clone());
        crate::progress(ex, move |_| {
            let line = format!(
                "idle: opened {}/{n} open {} failed {} dropped {}",
                k.opened.load(Relaxed),
                k.open_now.load(Relaxed),
                k.failed.load(Relaxed),
                k.dropped.load(Relaxed)
            );
            line + &procstat::progress_suffix(procs.as_ref())
        })
    };

    let t0 = Instant::now();
    let t0_ns = crate::now_ns();
    let mut tasks = Vec::with_capacity(c.clients);
    for i in 0..n {
        Timer::at(t0 + Duration::from_secs_f64(i as f64 / a.connect_rate)).await;
        let target = c
            .dialer
            .url
            .request_target(c.dialer.protocol, i as usize % rooms, rooms);
        let (dialer, k) = (c.dialer.clone(), counters.clone());
        let stopped = stopped.clone();
        tasks.push(ex.spawn(async move {
            let began = Instant::now();
            let opened = match dialer.protocol {
                Protocol::SocketIoPolling => dialer.open_polling(i, &target).await.map(Held::Poll),
                _ => dialer.open(i, &target).await.map(Held::Ws),
            };
            let mut client = match opened {
                Ok(client) => client,
                Err(e) => {
                    k.reasons.add(e.to_string());
                    k.failed.fetch_add(1, Relaxed);
                    return;
                }
            };
            k.hist.record(began.elapsed().as_nanos() as u64);
            k.last_open_ns.fetch_max(crate::now_ns(), Relaxed);
            k.open_now.fetch_add(1, Relaxed);
            k.opened.fetch_add(1, Relaxed);
            let ended = async { Some(client.until_closed().await) }
                .or(async {
                    let _ = stopped.recv().await;
                    None
                })
                .await;
            k.open_now.fetch_sub(1, Relaxed);
            match ended {
                Some(why) => {
                    k.dropped.fetch_add(1, Relaxed);
                    k.reasons.add(format!("closed while held: {why}"));
                }
                None => client.close().await,
            }
        }));
    }
    // Every attempt ends within --connect-timeout of its start.
    while counters.opened.load(Relaxed) + counters.failed.load(Relaxed) < n {
        Timer::after(POLL).await;
    }
    let opened = counters.opened.load(Relaxed);
    let connect_s = (counters.last_open_ns.load(Relaxed).saturating_sub(t0_ns)) as f64 / 1e9;
    eprintln!(
        "idle: {opened} open, {} failed; holding {:.1}s",
        counters.failed.load(Relaxed),
        a.hold.as_secs_f64()
    );
    Timer::after(a.hold).await;
    let held = counters.open_now.load(Relaxed);
    let after = c.sample();

    drop(stop);
    async {
        for t in tasks {
            t.await;
        }
    }
    .or(async {
        Timer::after(CLOSE_GRACE).await;
    })
    .await;
    if opened == 0 {
        return Err(format!("no client connected ({})", reasons.summary()));
    }

    let connect_rate = if connect_s > 0.0 {
        opened as f64 / connect_s
    } else {
        0.0
    };
    let kb_per_conn = match (before, after) {
        (Some(b), Some(x)) if held > 0 => Some((x.rss_kb as f64 - b.rss_kb as f64) / held as f64),
        _ => None,
    };
    let hist = connect_hist.snapshot();
    println!("idle against {}", c.dialer.describe());
    println!(
        "  connected      {opened} of {n} in {connect_s:.2}s ({connect_rate:.0}/s), failed {}",
        counters.failed.load(Relaxed)
    );
    println!("  failures       {}", reasons.summary());
    println!(
        "  held           {held} for {:.1}s ({} dropped by the server)",
        a.hold.as_secs_f64(),
        counters.dropped.load(Relaxed)
    );
    println!("  connect time   {}", crate::latency_human(&hist));
    if let (Some(b), Some(x), Some(k)) = (before, after, kb_per_conn) {
        println!(
            "  server RSS     {} KiB -> {} KiB: {k:.2} KiB per connection; fds {} -> {}",
            b.rss_kb, x.rss_kb, b.fds, x.fds
        );
    }
    Ok(Json::obj()
        .with("scenario", "idle")
        .with("clients", n)
        .with("connected", opened)
        .with("failed", counters.failed.load(Relaxed))
        .with("failures", reasons.to_json())
        .with("held", held)
        .with("dropped", counters.dropped.load(Relaxed))
        .with("connect_s", connect_s)
        .with("connect_rate", connect_rate)
        .with("connect_ms", crate::latency_json(&hist))
        .with("kb_per_conn", kb_per_conn)
        .with_samples(before, after))
}
