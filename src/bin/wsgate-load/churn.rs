//! `churn`: connect, handshake (and Socket.IO open), close with 1000 and wait for the server's
//! close, at `--rate` cycles per second, for `--cycles` or `--duration`, with at most
//! `--clients` cycles in flight. Reports errors by reason and the server's RSS and open fds
//! before and after (after `--settle`), which is where leaks show.

use crate::procstat;
use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use argh::FromArgs;
use smol::{lock::Semaphore, Timer};

use crate::{histogram::Histogram, report::Json, report::Reasons, Common, Ex};

/// How long a cycle waits for the server's close after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

with_common_flags! {
    /// Connect/handshake/close cycles at a rate: errors, server RSS and open fds before and after.
    #[derive(FromArgs, Debug)]
    #[argh(subcommand, name = "churn")]
    pub(crate) struct Args {
        /// cycles started per second; default 50
        #[argh(option, default = "50.0")]
        pub(crate) rate: f64,
        /// number of cycles (default: rate x duration)
        #[argh(option)]
        pub(crate) cycles: Option<u64>,
        /// how long to start cycles, when --cycles is not given; default 5s
        #[argh(option, default = "Duration::from_secs(5)", from_str_fn(crate::parse_duration))]
        pub(crate) duration: Duration,
        /// wait after the last cycle before the final server sample; default 1s
        #[argh(option, default = "Duration::from_secs(1)", from_str_fn(crate::parse_duration))]
        pub(crate) settle: Duration,
    }
}

impl Args {
    fn total(&self) -> u64 {
        self.cycles
            .unwrap_or((self.rate * self.duration.as_secs_f64()).ceil() as u64)
    }

    /// The run's planned length, for the default hard deadline; checks the flags.
    pub(crate) fn planned(&self, c: &Common) -> Result<Duration, String> {
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return Err("--rate must be above 0".into());
        }
        Ok(Duration::from_secs_f64(self.total() as f64 / self.rate)
            + c.dialer.timeout
            + CLOSE_WAIT
            + self.settle)
    }
}

/// What the cycle tasks and the progress line share: one `Arc` for all of it.
#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    /// Why cycles failed.
    reasons: Reasons,
    /// Time of each whole cycle.
    hist: Histogram,
}

/// Runs the scenario and returns the JSON result.
pub(crate) async fn run(ex: &Ex, c: &Common, a: &Args) -> Result<Json, String> {
    if c.dialer.protocol == crate::target::Protocol::SocketIoPolling {
        return Err("--protocol socketio-polling is for idle only".into());
    }
    let total = a.total();
    let before = c.sample();
    let k = Arc::new(Counters::default());
    let in_flight = Arc::new(Semaphore::new(c.clients));
    let target = c.dialer.url.request_target(c.dialer.protocol, 0, 1);
    let _progress = {
        let (k, procs) = (k.clone(), c.procs.clone());
        crate::progress(ex, move |_| {
            let line = format!(
                "churn: started {}/{total} ok {} errors {}",
                k.started.load(Relaxed),
                k.ok.load(Relaxed),
                k.failed.load(Relaxed)
            );
            line + &procstat::progress_suffix(procs.as_ref())
        })
    };

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        Timer::at(t0 + Duration::from_secs_f64(i as f64 / a.rate)).await;
        let permit = in_flight.acquire_arc().await;
        k.started.fetch_add(1, Relaxed);
        let (dialer, target, k) = (c.dialer.clone(), target.clone(), k.clone());
        tasks.push(ex.spawn(async move {
            let began = Instant::now();
            let result = match dialer.open(i, &target).await {
                Err(e) => Err(e.to_string()),
                Ok(mut client) => {
                    let sent = client.tx.lock().await.close().await;
                    match sent {
                        Err(e) => Err(format!("close: {e}")),
                        Ok(()) => client.rx.drain_until_closed(CLOSE_WAIT).await,
                    }
                }
            };
            match result {
                Ok(()) => {
                    k.hist.record(began.elapsed().as_nanos() as u64);
                    k.ok.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    k.reasons.add(e);
                    k.failed.fetch_add(1, Relaxed);
                }
            }
            drop(permit);
        }));
    }
    for t in tasks {
        t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    Timer::after(a.settle).await;
    let after = c.sample();

    let (ok, errors) = (k.ok.load(Relaxed), k.failed.load(Relaxed));
    let (hist, reasons) = (k.hist.snapshot(), &k.reasons);
    println!("churn against {}", c.dialer.describe());
    println!(
        "  cycles         {total} in {elapsed:.2}s ({:.0}/s): {ok} ok, {errors} errors",
        total as f64 / elapsed
    );
    println!("  errors         {}", reasons.summary());
    println!("  cycle time     {}", crate::latency_human(&hist));
    if let (Some(b), Some(x)) = (before, after) {
        println!(
            "  server         RSS {} KiB -> {} KiB, fds {} -> {}",
            b.rss_kb, x.rss_kb, b.fds, x.fds
        );
    }
    Ok(Json::obj()
        .with("scenario", "churn")
        .with("cycles", total)
        .with("ok", ok)
        .with("errors", errors)
        .with("failures", reasons.to_json())
        .with("cycles_per_s", total as f64 / elapsed)
        .with("cycle_ms", crate::latency_json(&hist))
        .with_samples(before, after))
}
