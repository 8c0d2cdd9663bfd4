//! `fanout`: `--clients` subscribers plus `--publishers` in `--rooms`, publishing `--rate`
//! messages per second in total for `--duration`, then waiting up to `--drain` for the tail.
//! A comma list of rates runs a ladder on the same connections, one step per rate.
//!
//! Membership: subscriber `i` is in room `i % R`, publisher `p` in room `p % R` and receives its
//! own messages too. Every member expects every message of every publisher in its room, once
//! and in order; a [`SeqCheck`] per (member, publisher) pair counts what is late or duplicated,
//! and `lost` is what was expected and never arrived within the drain. Latency is receive time
//! minus the send time stamped in the payload, on the tool's one monotonic clock.
//!
//! Per step: `deliveries_per_s` = distinct deliveries of the step's messages divided by the time
//! from the step's start until the last of them arrived (or the drain ran out; at least
//! `--duration`; to the 10 ms the coordinator polls at), so a server
//! that falls behind shows a rate below `offered_per_s`. `keeping_up` means nothing lost and at
//! least 95% of the offered rate. The top-level fields are the best step that kept up (the best
//! step at all if none did).
//!
//! With `--publish-url` the publishers connect to another server (an instance sharing rooms
//! through Redis), and the latency percentiles are the subscribers' only, so they measure
//! the hop between instances.
//!
//! CPU per delivery, over the step and its drain: `cpu_us_per_delivery` is the `--pid` trees'
//! user + system time, `tool_cpu_us_per_delivery` this process's, and
//! `machine_cpu_us_per_delivery` all cores' busy time (`/proc/stat`). When the machine figure
//! times the delivery rate nears the core count, the box, not the server, is the limit; on
//! loopback the tool's receive path costs about as much as the server's send path.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use argh::FromArgs;
use smol::{lock::Mutex, Timer};

use crate::{
    client::{Event, Tx},
    histogram::{Histogram, Snapshot},
    message::{Seen, SeqCheck, Stamp},
    procstat::{self, ProcSet, Sample},
    report::{Json, Reasons},
    Common, Ex,
};

/// How often the coordinator checks progress while connecting and draining.
const POLL: Duration = Duration::from_millis(10);
/// Head start between scheduling a step and its first send, so every publisher starts on time.
const STEP_LEAD: Duration = Duration::from_millis(20);
/// Share of the offered delivery rate a step must reach to count as keeping up.
const KEEPING_UP: f64 = 0.95;
/// Most steps in a ladder.
const MAX_STEPS: usize = 64;

with_common_flags! {
    /// Subscribers and publishers in rooms at a message rate (a comma list runs a ladder): deliveries/s, latency percentiles, lost, duplicated and out-of-order counts.
    #[derive(FromArgs, Debug)]
    #[argh(subcommand, name = "fanout")]
    pub(crate) struct Args {
        /// publishing clients, also members of their room (they receive their own messages); default 1
        #[argh(option, default = "1")]
        pub(crate) publishers: usize,
        /// rooms: subscriber i and publisher p join room (i or p) % R, path /ws/room-K (raw) or ?room=room-K (socketio); default 1 (the URL as given)
        #[argh(option, default = "1")]
        pub(crate) rooms: usize,
        /// messages per second over all publishers; a comma list (100,1000,10000) runs a ladder; default 100
        #[argh(option, default = "String::from(\"100\")")]
        pub(crate) rate: String,
        /// payload bytes per message (at least the ~30-byte stamp); default 64
        #[argh(option, default = "64")]
        pub(crate) size: usize,
        /// sending time per rate step; default 5s
        #[argh(option, default = "Duration::from_secs(5)", from_str_fn(crate::parse_duration))]
        pub(crate) duration: Duration,
        /// wait after a step's last send for its deliveries before counting the missing as lost; default 2s
        #[argh(option, default = "Duration::from_secs(2)", from_str_fn(crate::parse_duration))]
        pub(crate) drain: Duration,
        /// new connections per second while setting up; default 2000
        #[argh(option, default = "2000.0")]
        pub(crate) connect_rate: f64,
        /// publishers connect here instead of --url, ws://HOST:PORT/PATH (e.g. another instance sharing rooms through Redis), so latency includes the hop between instances; default: --url
        #[argh(option)]
        pub(crate) publish_url: Option<String>,
    }
}

impl Args {
    /// The rates of the ladder.
    fn rates(&self) -> Result<Vec<f64>, String> {
        let rates = self
            .rate
            .split(',')
            .map(|r| match r.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
                _ => Err(format!("--rate: {r:?} is not a positive number")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if rates.len() > MAX_STEPS {
            return Err(format!("--rate: at most {MAX_STEPS} steps"));
        }
        Ok(rates)
    }

    /// The run's planned length, for the default hard deadline; checks the flags.
    pub(crate) fn planned(&self, c: &Common) -> Result<Duration, String> {
        let steps = self.rates()?.len() as u32;
        if self.publishers == 0 || self.rooms == 0 || self.rooms > self.publishers {
            return Err("need 1 <= --rooms <= --publishers".into());
        }
        if !self.connect_rate.is_finite() || self.connect_rate <= 0.0 {
            return Err("--connect-rate must be above 0".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
        let members = (c.clients + self.publishers) as f64;
        Ok(Duration::from_secs_f64(members / self.connect_rate)
            + c.dialer.timeout
            + (self.duration + self.drain + STEP_LEAD) * steps)
    }
}

/// What the members record for one step, shared by all receive tasks.
#[derive(Debug)]
struct StepStats {
    /// Distinct deliveries of this step's messages.
    unique: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    /// Latency in nanoseconds of each distinct delivery.
    latency: Histogram,
}

/// State shared by the coordinator, the members and the progress line.
#[derive(Debug)]
struct Shared {
    steps: Vec<StepStats>,
    rooms: usize,
    publishers: usize,
    /// Messages that are not ours, from another room, or of an unknown step.
    foreign: AtomicU64,
    /// Members the server (or the network) closed during the run.
    disconnected: AtomicU64,
    /// Messages sent, all steps.
    sent: AtomicU64,
    reasons: Reasons,
}

/// One step's outcome.
#[derive(Debug)]
struct StepResult {
    rate: f64,
    sent: u64,
    sent_per_s: f64,
    expected: u64,
    deliveries: u64,
    deliveries_per_s: f64,
    offered_per_s: f64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    latency: Snapshot,
    cpu_us_per_delivery: Option<f64>,
    /// The tool's own CPU per delivery: when it nears a core, the tool is the limit.
    tool_cpu_us_per_delivery: f64,
    /// All cores' busy time per delivery (server, tool, softirq, anything else running).
    machine_cpu_us_per_delivery: Option<f64>,
    keeping_up: bool,
    rss_kb: Option<u64>,
}

impl StepResult {
    fn json(&self) -> Json {
        let mut j = Json::obj()
            .with("rate", self.rate)
            .with("sent", self.sent)
            .with("sent_per_s", self.sent_per_s)
            .with("expected", self.expected)
            .with("deliveries", self.deliveries)
            .with("deliveries_per_s", self.deliveries_per_s)
            .with("offered_per_s", self.offered_per_s)
            .with("lost", self.lost)
            .with("duplicated", self.duplicated)
            .with("out_of_order", self.out_of_order)
            .with("latency_ms", crate::latency_json(&self.latency))
            .with("keeping_up", self.keeping_up);
        if let Some(cpu) = self.cpu_us_per_delivery {
            j.push("cpu_us_per_delivery", cpu);
        }
        j.push("tool_cpu_us_per_delivery", self.tool_cpu_us_per_delivery);
        j.push(
            "machine_cpu_us_per_delivery",
            self.machine_cpu_us_per_delivery,
        );
        if let Some(rss) = self.rss_kb {
            j.push("rss_kb", rss);
        }
        j
    }
}

/// Runs the scenario and returns the JSON result.
pub(crate) async fn run(ex: &Ex, c: &Common, a: &Args) -> Result<Json, String> {
    if c.dialer.protocol == crate::target::Protocol::SocketIoPolling {
        return Err("--protocol socketio-polling is for idle only".into());
    }
    let rates = a.rates()?;
    let (subs, pubs, rooms) = (c.clients, a.publishers, a.rooms);
    // Publishers dial `--publish-url` when given (same protocol, PROXY and sources).
    let pub_dialer = match &a.publish_url {
        Some(u) => Arc::new(crate::client::Dialer {
            url: crate::target::Url::parse(u, a.allow_remote)
                .map_err(|e| e.replace("--url", "--publish-url"))?,
            ..(*c.dialer).clone()
        }),
        None => c.dialer.clone(),
    };
    let shared = Arc::new(Shared {
        steps: rates
            .iter()
            .map(|_| StepStats {
                unique: AtomicU64::new(0),
                duplicated: AtomicU64::new(0),
                out_of_order: AtomicU64::new(0),
                latency: Histogram::new(),
            })
            .collect(),
        rooms,
        publishers: pubs,
        foreign: AtomicU64::new(0),
        disconnected: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        reasons: Reasons::default(),
    });
    let current = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let _progress = {
        let (sh, cur, opened, procs) = (
            shared.clone(),
            current.clone(),
            opened.clone(),
            c.procs.clone(),
        );
        let last = std::sync::Mutex::new((0u64, 0.0f64));
        let total = (subs + pubs) as u64;
        crate::progress(ex, move |t| {
            let delivered: u64 = sh.steps.iter().map(|s| s.unique.load(Relaxed)).sum();
            let mut prev = wsgate::lock::mutex(&last);
            let rate = (delivered - prev.0) as f64 / (t - prev.1).max(1e-3);
            *prev = (delivered, t);
            let step = cur.load(Relaxed);
            let mut line = format!(
                "fanout: open {}/{total} step {}/{} sent {} delivered {delivered} ({rate:.0}/s) disconnected {}",
                opened.load(Relaxed),
                step + 1,
                sh.steps.len(),
                sh.sent.load(Relaxed),
                sh.disconnected.load(Relaxed)
            );
            if let Some(s) = procs.as_ref().map(|p| p.sample()) {
                line += &format!(" server rss {} KiB", s.rss_kb);
            }
            line
        })
    };

    // Connect: subscribers first, then publishers; each task opens, reports, then reads.
    let (report, reports) = async_channel::unbounded::<(usize, Option<Arc<Mutex<Tx>>>)>();
    let mut members = Vec::with_capacity(subs + pubs);
    let t0 = Instant::now();
    for m in 0..subs + pubs {
        Timer::at(t0 + Duration::from_secs_f64(m as f64 / a.connect_rate)).await;
        let room = if m < subs {
            m % rooms
        } else {
            (m - subs) % rooms
        };
        let dialer = if m < subs { &c.dialer } else { &pub_dialer };
        // With --publish-url a publisher's own copies never cross instances: they are
        // counted (lost, duplicated, order) but kept out of the latency percentiles.
        let timed = m < subs || a.publish_url.is_none();
        let target = dialer.url.request_target(dialer.protocol, room, rooms);
        let (dialer, sh, report, opened) = (
            dialer.clone(),
            shared.clone(),
            report.clone(),
            opened.clone(),
        );
        members.push(ex.spawn(async move {
            let mut client = match dialer.open(m as u64, &target).await {
                Ok(client) => client,
                Err(e) => {
                    sh.reasons.add(e.to_string());
                    let _ = report.send((m, None)).await;
                    return;
                }
            };
            opened.fetch_add(1, Relaxed);
            let _ = report.send((m, Some(client.tx.clone()))).await;
            drop(report);
            receive(&mut client.rx, room, &sh, timed).await;
        }));
    }
    drop(report);
    let mut room_members = vec![0u64; rooms];
    let mut publishers: Vec<Option<Arc<Mutex<Tx>>>> = vec![None; pubs];
    let mut connected = 0u64;
    for _ in 0..subs + pubs {
        let Ok((m, tx)) = reports.recv().await else {
            break;
        };
        let Some(tx) = tx else { continue };
        connected += 1;
        if m < subs {
            room_members[m % rooms] += 1;
        } else {
            room_members[(m - subs) % rooms] += 1;
            publishers[m - subs] = Some(tx);
        }
    }
    let connect_failed = (subs + pubs) as u64 - connected;
    eprintln!(
        "fanout: {connected} connected, {connect_failed} failed ({})",
        shared.reasons.summary()
    );
    if publishers.iter().all(Option::is_none) {
        return Err(format!(
            "no publisher connected ({})",
            shared.reasons.summary()
        ));
    }

    let rss_before = c.sample().map(|s| s.rss_kb);
    let mut seqs = vec![0u64; pubs];
    let mut results = Vec::with_capacity(rates.len());
    for (step, &rate) in rates.iter().enumerate() {
        current.store(step, Relaxed);
        let r = run_step(
            ex,
            c,
            a,
            &shared,
            step,
            rate,
            &publishers,
            &mut seqs,
            &room_members,
        )
        .await;
        eprintln!(
            "fanout: step {} rate {rate}/s: {:.0} deliveries/s (offered {:.0}), lost {}, p99 {:.3} ms",
            step + 1,
            r.deliveries_per_s,
            r.offered_per_s,
            r.lost,
            crate::ms(r.latency.percentile(99.0))
        );
        results.push(r);
    }
    drop(members);

    let best = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.keeping_up)
        .max_by(|x, y| x.1.deliveries_per_s.total_cmp(&y.1.deliveries_per_s))
        .or_else(|| {
            results
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.deliveries_per_s.total_cmp(&y.1.deliveries_per_s))
        })
        .map(|(i, _)| i)
        .unwrap_or(0);

    let publishers_at = match &a.publish_url {
        Some(_) => format!(", publishers against {}", pub_dialer.url.addr),
        None => String::new(),
    };
    println!(
        "fanout against {}{publishers_at} ({:?}{}): {subs} subscribers + {pubs} publishers in {rooms} room(s), {} B payloads, {:.1}s per step",
        c.dialer.url.addr,
        c.dialer.protocol,
        c.dialer.proxy.map(|p| format!(", PROXY {p:?}")).unwrap_or_default(),
        a.size,
        a.duration.as_secs_f64()
    );
    println!(
        "  connected {connected}, failed {connect_failed} ({}), disconnected during run {}",
        shared.reasons.summary(),
        shared.disconnected.load(Relaxed)
    );
    for (i, r) in results.iter().enumerate() {
        println!(
            "  step {}{}: rate {}/s sent {:.0}/s, deliveries {:.0}/s of {:.0}/s offered{}, lost {}, dup {}, ooo {}",
            i + 1,
            if i == best { "*" } else { " " },
            r.rate,
            r.sent_per_s,
            r.deliveries_per_s,
            r.offered_per_s,
            if r.keeping_up { "" } else { " (NOT keeping up)" },
            r.lost,
            r.duplicated,
            r.out_of_order
        );
        println!("           latency {}", crate::latency_human(&r.latency));
        let server = r
            .cpu_us_per_delivery
            .map(|c| format!("server {c:.3} us, "))
            .unwrap_or_default();
        let machine = r
            .machine_cpu_us_per_delivery
            .map(|c| format!(", whole machine {c:.3} us"))
            .unwrap_or_default();
        println!(
            "           CPU per delivery: {server}tool {:.3} us{machine}",
            r.tool_cpu_us_per_delivery
        );
    }

    let mut j = Json::obj()
        .with("scenario", "fanout")
        .with("clients", subs as u64)
        .with("publishers", pubs as u64)
        .with("rooms", rooms as u64)
        .with("size", a.size as u64)
        .with("duration_s", a.duration.as_secs_f64())
        .with("connected", connected)
        .with("connect_failed", connect_failed)
        .with("failures", shared.reasons.to_json())
        .with("disconnected", shared.disconnected.load(Relaxed))
        .with("foreign", shared.foreign.load(Relaxed))
        .with("rss_kb_before", rss_before);
    if a.publish_url.is_some() {
        j.push("publish_addr", pub_dialer.url.addr.to_string().as_str());
    }
    if let (Json::Obj(fields), Json::Obj(top)) = (&mut j, results[best].json()) {
        fields.extend(top);
    }
    if results.len() > 1 {
        j.push("best_step", best as u64);
        j.push(
            "steps",
            results.iter().map(StepResult::json).collect::<Vec<_>>(),
        );
    }
    Ok(j)
}

/// A member's receive loop: checks and counts every chat message until the session ends;
/// with `timed`, its deliveries' latencies are recorded.
async fn receive(rx: &mut crate::client::Rx, room: usize, sh: &Shared, timed: bool) {
    let mut checks = vec![SeqCheck::default(); sh.publishers.div_ceil(sh.rooms)];
    loop {
        let payload = match rx.next_event().await {
            Event::Chat(p) => p,
            Event::Other => continue,
            Event::Closed(why) => {
                sh.disconnected.fetch_add(1, Relaxed);
                sh.reasons.add(format!("closed: {why}"));
                return;
            }
        };
        let now = crate::now_ns();
        let Some(stamp) = Stamp::parse(payload.as_str()) else {
            sh.foreign.fetch_add(1, Relaxed);
            continue;
        };
        let (p, step) = (stamp.publisher as usize, stamp.step as usize);
        if p >= sh.publishers || p % sh.rooms != room || step >= sh.steps.len() {
            sh.foreign.fetch_add(1, Relaxed);
            continue;
        }
        let st = &sh.steps[step];
        match checks[p / sh.rooms].observe(stamp.seq) {
            Seen::InOrder | Seen::Gap => {}
            Seen::Late => {
                st.out_of_order.fetch_add(1, Relaxed);
            }
            Seen::Duplicate => {
                st.duplicated.fetch_add(1, Relaxed);
                continue;
            }
        }
        st.unique.fetch_add(1, Relaxed);
        if timed {
            st.latency.record(now.saturating_sub(stamp.sent_ns));
        }
    }
}

/// One rung of the ladder: publish at `rate` for `--duration`, drain, and count.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    ex: &Ex,
    c: &Common,
    a: &Args,
    sh: &Arc<Shared>,
    step: usize,
    rate: f64,
    publishers: &[Option<Arc<Mutex<Tx>>>],
    seqs: &mut [u64],
    room_members: &[u64],
) -> StepResult {
    let live = publishers.iter().filter(|p| p.is_some()).count().max(1);
    let per_pub = rate / live as f64;
    let start = Instant::now() + STEP_LEAD;
    let end = start + a.duration;
    let cpu_before = c.sample();
    let me = ProcSet::own();
    let tool_before = me.sample();
    let machine_before = procstat::machine_busy_us();
    let tasks: Vec<_> = publishers
        .iter()
        .enumerate()
        .filter_map(|(p, tx)| tx.clone().map(|tx| (p, tx)))
        .enumerate()
        .map(|(k, (p, tx))| {
            // Spread the publishers' schedules evenly over one interval.
            let offset = k as f64 / live as f64;
            let job = Publish {
                tx,
                id: p as u32,
                step: step as u32,
                seq: seqs[p],
                rate: per_pub,
                offset,
                start,
                end,
                size: a.size,
            };
            let sh = sh.clone();
            ex.spawn(async move { job.run(&sh).await })
        })
        .collect();
    let mut sent = 0u64;
    let mut expected = 0u64;
    let ids: Vec<usize> = publishers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_some())
        .map(|(p, _)| p)
        .collect();
    for (task, p) in tasks.into_iter().zip(ids) {
        let (n, next_seq) = task.await;
        seqs[p] = next_seq;
        sent += n;
        expected += n * room_members[p % sh.rooms];
    }
    let send_end = Instant::now();

    let stats = &sh.steps[step];
    let mut last = stats.unique.load(Relaxed);
    let mut last_change = Instant::now();
    let done = loop {
        let now = Instant::now();
        let got = stats.unique.load(Relaxed);
        if got >= expected {
            break now;
        }
        if got != last {
            (last, last_change) = (got, now);
        }
        if now >= send_end + a.drain {
            break last_change;
        }
        Timer::after(POLL).await;
    };
    let cpu_after = c.sample();
    let tool_after = me.sample();
    let machine_after = procstat::machine_busy_us();

    let deliveries = stats.unique.load(Relaxed);
    // The last message of a paced step leaves a fraction of an interval before `end`; a step
    // that kept up counts as taking exactly its duration, one that fell behind takes longer.
    let secs = a.duration.as_secs_f64();
    let took = done
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(secs);
    let deliveries_per_s = deliveries as f64 / took;
    let offered_per_s = expected as f64 / secs;
    let lost = expected.saturating_sub(deliveries);
    let cpu_us_per_delivery = match (cpu_before, cpu_after) {
        (Some(Sample { cpu_us: b, .. }), Some(Sample { cpu_us: x, .. })) if deliveries > 0 => {
            Some((x - b) as f64 / deliveries as f64)
        }
        _ => None,
    };
    StepResult {
        rate,
        sent,
        sent_per_s: sent as f64 / secs,
        expected,
        deliveries,
        deliveries_per_s,
        offered_per_s,
        lost,
        duplicated: stats.duplicated.load(Relaxed),
        out_of_order: stats.out_of_order.load(Relaxed),
        latency: stats.latency.snapshot(),
        cpu_us_per_delivery,
        tool_cpu_us_per_delivery: (tool_after.cpu_us - tool_before.cpu_us) as f64
            / deliveries.max(1) as f64,
        machine_cpu_us_per_delivery: machine_before
            .zip(machine_after)
            .map(|(b, x)| (x - b) as f64 / deliveries.max(1) as f64),
        keeping_up: lost == 0
            && deliveries_per_s >= KEEPING_UP * offered_per_s
            && sent as f64 >= KEEPING_UP * rate * secs,
        rss_kb: cpu_after.map(|s| s.rss_kb),
    }
}

/// One publisher's sending for one step.
#[derive(Debug)]
struct Publish {
    tx: Arc<Mutex<Tx>>,
    id: u32,
    step: u32,
    /// The next sequence number to use.
    seq: u64,
    /// This publisher's messages per second.
    rate: f64,
    /// Fraction of an interval to shift this publisher's schedule by.
    offset: f64,
    start: Instant,
    end: Instant,
    size: usize,
}

impl Publish {
    /// Sends on schedule (message `k` at `start + (k + offset) / rate`) until `end`, catching up
    /// in bursts when timers fire late, never past `end`. Returns (sent, next sequence number).
    async fn run(mut self, sh: &Shared) -> (u64, u64) {
        let mut buf = String::with_capacity(self.size + 32);
        let mut sent = 0u64;
        loop {
            let due = self.start + Duration::from_secs_f64((sent as f64 + self.offset) / self.rate);
            if due >= self.end {
                break;
            }
            if due > Instant::now() {
                Timer::at(due).await;
            }
            if Instant::now() >= self.end {
                break;
            }
            Stamp {
                step: self.step,
                publisher: self.id,
                seq: self.seq,
                sent_ns: crate::now_ns(),
            }
            .write(self.size, &mut buf);
            if let Err(e) = self.tx.lock().await.send_chat(&buf).await {
                sh.reasons.add(format!("publish: {e}"));
                break;
            }
            self.seq += 1;
            sent += 1;
            sh.sent.fetch_add(1, Relaxed);
        }
        (sent, self.seq)
    }
}
