//! Tunnels copied by an edge-triggered epoll set of their own.
//!
//! async-io registers interest one-shot: once a socket signalled, the next wait re-arms it
//! with an `epoll_ctl`, and the task it wakes then reads and writes: a re-arm and a wake-up
//! per proxied message, where an nginx worker, edge-triggered, reads and writes in the same
//! loop turn that took the event. Here a tunnel's two sockets join one epoll set when the
//! tunnel starts ([`Edge::copy`]; `EPOLLET`, reads, writes and hang-ups at once) and are
//! never re-armed; the kernel drops them from it when they close. The set's own descriptor
//! is a single async-io source, watched by one task ([`Edge::run`]) that takes the events in
//! batches (its one re-arm serves a whole batch) and copies each tunnel's bytes itself. A
//! plain tunnel's read lands in one scratch buffer of the set's and is written on at once;
//! only what the other socket does not take is kept, in a buffer of the tunnel's own. A
//! tunnel with `--upstream-ping` goes frame by frame through two buffers of its own
//! ([`Framed`]); while there are any, the task also wakes every tick (a quarter of the
//! shortest interval, 10 ms to 1 s) to pass over those whose Ping check has come. Readiness
//! is a flag per socket and direction ([`Io`]), set by an event and cleared by a read or
//! write the socket did not satisfy. A tunnel gets `BUDGET` rounds per step and the task
//! `STEPS` steps per turn, so a busy tunnel cannot hold the set or its executor thread. The
//! task that opened the tunnel only waits for its [`Finish`].
//!
//! rustix's epoll calls are safe (a socket is borrowed for `epoll_ctl`), where the `polling`
//! crate's edge mode needs `unsafe`, which this crate forbids.

use super::{Ended, Framed, Step};
use crate::lock::mutex as lock;
use futures_lite::{future, FutureExt};
use rustix::event::epoll::{self, Event, EventData, EventFlags};
use smol::{Async, Timer};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Events taken from the set per `epoll_wait`.
const EVENTS: usize = 64;
/// Rounds of reads and writes a copying tunnel gets per step.
const BUDGET: u32 = 16;
/// Steps of copying tunnels per turn of the set's task, before it lets other tasks run.
const STEPS: usize = 256;

/// The epoll set and the tunnels registered in it.
#[derive(Debug)]
pub struct Edge {
    epoll: Async<OwnedFd>,
    table: Mutex<Table>,
    /// Its task is gone ([`Edge::fail`]): it takes no more tunnels.
    failed: AtomicBool,
}

/// Registered tunnels by slot. An event carries its slot's index and generation, so one for
/// a tunnel that ended (and whose slot went to another) is ignored.
#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Copying tunnels with work left, by index and generation, in the order they became
    /// ready. Bounded by the tunnels in the set: one is here at most once
    /// ([`Copy::queued`]), so it is never full.
    pending: VecDeque<(u32, u32)>,
    /// Where the set's plain copies read to before they write on: as large as the
    /// largest `size` registered.
    scratch: Vec<u8>,
    /// Tunnels with `--upstream-ping` in the set; while there are any, the set's task
    /// looks at them every `tick` for a Ping that came due.
    framed: usize,
    /// A quarter of the shortest ping interval registered (every tunnel of a process has
    /// the same `--upstream-ping`), 10 ms to 1 s.
    tick: Duration,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    copy: Option<Box<Copy>>,
}

/// A tunnel's place in the set; it leaves when this is dropped (a copying tunnel closes
/// then, if it has not ended by itself).
#[derive(Debug)]
pub struct Registration {
    edge: Arc<Edge>,
    index: u32,
    generation: u32,
}

/// A tunnel the set copies itself: its sockets, and how its bytes go.
#[derive(Debug)]
struct Copy {
    io: Io,
    how: How,
    /// In [`Table::pending`].
    queued: bool,
    finish: Arc<Finish>,
}

/// How a tunnel's bytes go.
#[derive(Debug)]
enum How {
    /// As they come, through the set's scratch buffer (reads of up to `size`): client to
    /// upstream, upstream to client.
    Plain { flows: [Flow; 2], size: usize },
    /// Frame by frame, with our Ping (`--upstream-ping`).
    Framed(Box<Framed>),
}

/// A copying tunnel's two sockets (client, upstream) and their readiness as the edges told
/// it.
#[derive(Debug)]
pub struct Io {
    sockets: [TcpStream; 2],
    /// Per socket: a read may find something. Set by an event; cleared by a read that
    /// blocked, or a short one while the peer has not ended.
    readable: [bool; 2],
    /// Per socket: a write may be taken. Set by an event; cleared by a write the socket
    /// did not take whole.
    writable: [bool; 2],
    /// Per socket: its peer finished sending (or it failed). Kept, because no further edge
    /// comes for it: a short read that took the last data must not be taken for a drained
    /// socket while the end waits behind it (nginx's `pending_eof`).
    ended: [bool; 2],
}

/// One direction of a plain tunnel.
#[derive(Debug, Default)]
struct Flow {
    /// What the destination did not take yet; empty (no allocation) most of the time.
    rest: Vec<u8>,
    written: usize,
    /// The source ended, and the destination's writing half was shut once all was written.
    eof: bool,
    shut: bool,
    bytes: u64,
}

/// A copying tunnel's end once it came, for the task that waits on it.
#[derive(Debug, Default)]
pub struct Finish {
    state: Mutex<(Option<Ended>, Option<Waker>)>,
}

impl Edge {
    /// A new, empty set. Start [`Edge::run`] on the executor for it to copy anything.
    pub fn new() -> io::Result<Arc<Edge>> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Arc::new(Edge {
            epoll: Async::new(fd)?,
            table: Mutex::default(),
            failed: AtomicBool::new(false),
        }))
    }

    /// Moves a tunnel's two sockets from async-io's reactor into the set, whose task then
    /// copies the bytes both ways itself as the sockets' events come: plain (reads of up to
    /// `size` into one scratch buffer of the set's; only what a socket does not take is
    /// kept, for the tunnel), or with `ping`, frame by frame through two buffers of `size`
    /// (see [`Framed`]). No task is woken per message, as in nginx. The returned [`Finish`]
    /// tells when and how the tunnel ended; dropping the [`Registration`] before then
    /// closes it.
    pub fn copy(
        self: &Arc<Self>,
        client: Async<TcpStream>,
        upstream: Async<TcpStream>,
        size: usize,
        ping: Option<Duration>,
    ) -> io::Result<(Arc<Finish>, Registration)> {
        // (Still nonblocking: async-io leaves the mode as it set it.)
        let sockets = [client.into_inner()?, upstream.into_inner()?];
        let finish = Arc::new(Finish::default());
        let mut t = lock(&self.table);
        if self.failed() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let (index, generation) = t.take_slot();
        for (side, s) in sockets.iter().enumerate() {
            if let Err(e) = self.add(s, index, generation, side) {
                t.release(index, generation);
                return Err(e);
            }
        }
        let how = match ping {
            None => {
                if t.scratch.len() < size {
                    t.scratch.resize(size, 0);
                }
                How::Plain {
                    flows: Default::default(),
                    size,
                }
            }
            Some(every) => {
                let tick = (every / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
                t.tick = if t.framed == 0 {
                    tick
                } else {
                    t.tick.min(tick)
                };
                t.framed += 1;
                How::Framed(Box::new(Framed::new(size, every)))
            }
        };
        t.slots[index as usize].copy = Some(Box::new(Copy {
            io: Io {
                sockets,
                readable: [false; 2],
                writable: [false; 2],
                ended: [false; 2],
            },
            how,
            queued: false,
            finish: finish.clone(),
        }));
        drop(t);
        let registration = Registration {
            edge: self.clone(),
            index,
            generation,
        };
        Ok((finish, registration))
    }

    /// Adds one socket of slot `index` (the client's when `side` is 0) to the set, for
    /// reads, writes and the peer's end at once, edge-triggered.
    fn add(&self, s: &TcpStream, index: u32, generation: u32, side: usize) -> io::Result<()> {
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        let data = (u64::from(generation) << 32) | (u64::from(index) << 1) | side as u64;
        epoll::add(self.epoll.get_ref(), s, EventData::new_u64(data), flags)?;
        Ok(())
    }

    /// Takes the set's events as they come and copies their tunnels' bytes; while tunnels
    /// with `--upstream-ping` are in the set, also every tick, for the Pings that came
    /// due. Runs for the process's life; only a failing `epoll_wait` (a bad descriptor)
    /// ends it, with that error.
    pub async fn run(self: Arc<Self>) -> io::Error {
        // However this ends, by an error or by a panic (the executor drops a panicked task),
        // the tunnels must not be left without a copier.
        let _fail = FailOnDrop(&self);
        let mut more = false;
        let mut timer: Option<Timer> = None;
        loop {
            let mut ticked = false;
            if more {
                // Tunnels with bytes left after their budget: let other tasks run first.
                future::yield_now().await;
            } else {
                let mut readable = pin!(self.epoll.readable());
                let woke = future::poll_fn(|cx| {
                    if let Some(t) = timer.as_mut() {
                        if Pin::new(t).poll(cx).is_ready() {
                            return Poll::Ready(Ok(true));
                        }
                    }
                    readable.as_mut().poll(cx).map(|r| r.map(|()| false))
                })
                .await;
                match woke {
                    Ok(t) => ticked = t,
                    Err(e) => return e,
                }
            }
            let tick = match self.drain(ticked) {
                Ok((m, tick)) => {
                    more = m;
                    tick
                }
                Err(e) => return e,
            };
            match (tick, &timer) {
                (None, _) => timer = None,
                (Some(every), None) => timer = Some(Timer::interval(every)),
                (Some(_), Some(_)) => {}
            }
        }
    }

    /// Whether the set's task is gone: its tunnels were closed, and it takes no more.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Closes every tunnel in the set, each ending with `set_failed`, and takes no more:
    /// for when the set's task is gone.
    fn fail(&self) {
        let mut t = lock(&self.table);
        self.failed.store(true, Ordering::Release);
        for slot in &mut t.slots {
            if let Some(c) = slot.copy.take() {
                c.finish.set(c.end("set_failed"));
            }
        }
    }

    /// Takes every event the set holds, [`EVENTS`] at a time, without waiting, then (after
    /// a tick: with the framed tunnels whose Ping check came) gives each tunnel with work
    /// one [`Copy::step`]. Returns whether some have more, and the tick while framed
    /// tunnels are in the set.
    fn drain(&self, ticked: bool) -> io::Result<(bool, Option<Duration>)> {
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut buf = [MaybeUninit::<Event>::uninit(); EVENTS];
        let mut t = lock(&self.table);
        loop {
            match epoll::wait(self.epoll.get_ref(), &mut buf, Some(&zero)) {
                Ok((events, _)) => {
                    t.dispatch(events);
                    if events.len() < EVENTS {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if ticked {
            t.due(Instant::now());
        }
        t.copy();
        let tick = (t.framed > 0).then_some(t.tick);
        Ok((!t.pending.is_empty(), tick))
    }
}

/// The tunnel in slot `index` if the slot still has `generation` (an event or a queued step
/// for a tunnel that ended, whose slot may now be another's, finds none).
fn live(slots: &mut [Slot], index: u32, generation: u32) -> Option<&mut Copy> {
    match slots.get_mut(index as usize) {
        Some(s) if s.generation == generation => s.copy.as_deref_mut(),
        _ => None,
    }
}

impl Table {
    /// A free slot's index and generation.
    fn take_slot(&mut self) -> (u32, u32) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        (index, self.slots[index as usize].generation)
    }

    /// Frees slot `index` if it still has `generation`: an event or a queued step for it
    /// is ignored from now on. Its tunnel, if still there, is dropped: its sockets close.
    fn release(&mut self, index: u32, generation: u32) {
        let slot = &mut self.slots[index as usize];
        if slot.generation != generation {
            return;
        }
        if let Some(Copy {
            how: How::Framed(_),
            ..
        }) = slot.copy.as_deref()
        {
            self.framed -= 1;
        }
        slot.copy = None;
        slot.generation = generation.wrapping_add(1);
        self.free.push(index);
    }

    /// Queues a tunnel for a step, unless it is queued already.
    fn queue(pending: &mut VecDeque<(u32, u32)>, c: &mut Copy, index: u32, generation: u32) {
        if !c.queued {
            c.queued = true;
            pending.push_back((index, generation));
        }
    }

    /// Notes each event for its tunnel, and queues the tunnel.
    fn dispatch(&mut self, events: &[Event]) {
        for e in events {
            let data = e.data.u64();
            let (generation, index, side) = ((data >> 32) as u32, (data as u32) >> 1, data & 1);
            if let Some(c) = live(&mut self.slots, index, generation) {
                c.io.event(side as usize, e.flags);
                Self::queue(&mut self.pending, c, index, generation);
            }
        }
    }

    /// Queues every framed tunnel whose Ping check has come by `now`.
    fn due(&mut self, now: Instant) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(c) = slot.copy.as_deref_mut() {
                if matches!(&c.how, How::Framed(f) if f.check_at() <= now) {
                    Self::queue(&mut self.pending, c, index as u32, slot.generation);
                }
            }
        }
    }

    /// One [`Copy::step`] for each tunnel queued now, at most [`STEPS`]; one with bytes
    /// left goes to the back of the queue, one that ended leaves the set and tells its
    /// task.
    fn copy(&mut self) {
        for _ in 0..self.pending.len().min(STEPS) {
            let Some((index, generation)) = self.pending.pop_front() else {
                break;
            };
            let Table {
                slots,
                scratch,
                pending,
                ..
            } = self;
            let Some(c) = live(slots, index, generation) else {
                continue;
            };
            match c.step(scratch) {
                Left::Idle => c.queued = false,
                Left::More => pending.push_back((index, generation)),
                Left::Done(end) => {
                    c.finish.set(end);
                    self.release(index, generation);
                }
            }
        }
    }
}

/// What one [`Copy::step`] left.
enum Left {
    /// Nothing to do until the next event (or Ping check).
    Idle,
    /// Its budget ran out with bytes still to move.
    More,
    /// The tunnel is over.
    Done(Ended),
}

impl Copy {
    /// Moves bytes both ways until neither can move, at most [`BUDGET`] rounds.
    fn step(&mut self, scratch: &mut [u8]) -> Left {
        for _ in 0..BUDGET {
            let step = match &mut self.how {
                How::Plain { flows, size } => plain(flows, &mut self.io, &mut scratch[..*size]),
                How::Framed(f) => f.pass(&mut self.io),
            };
            match step {
                Step::Progress => {}
                Step::Idle => return Left::Idle,
                Step::Done(reason) => return Left::Done(self.end(reason)),
            }
        }
        Left::More
    }

    /// How the tunnel ended so far, with `reason`.
    fn end(&self, reason: &'static str) -> Ended {
        match &self.how {
            How::Plain { flows, .. } => Ended {
                up: flows[0].bytes,
                down: flows[1].bytes,
                pings: 0,
                reason,
            },
            How::Framed(f) => f.ended(reason),
        }
    }
}

/// One round of a plain tunnel: each way, what the destination did not take before, then
/// one read into `scratch`, written on at once.
fn plain(flows: &mut [Flow; 2], io: &mut Io, scratch: &mut [u8]) -> Step {
    let mut progress = false;
    for (from, f) in flows.iter_mut().enumerate() {
        match f.pass(io, from, scratch) {
            Ok(p) => progress |= p,
            Err(_) => return Step::Done("io_error"),
        }
    }
    if flows[0].shut && flows[1].shut {
        return Step::Done("closed");
    }
    Step::progress(progress)
}

impl Flow {
    /// Moves bytes from socket `from` to the other one as far as their readiness allows:
    /// first what the other did not take before, then one read; `Ok(true)` on progress.
    fn pass(&mut self, io: &mut Io, from: usize, scratch: &mut [u8]) -> io::Result<bool> {
        let to = 1 - from;
        let mut progress = false;
        if self.written < self.rest.len() {
            let Some(n) = io.write(to, &self.rest[self.written..])? else {
                return Ok(false);
            };
            self.written += n;
            self.bytes += n as u64;
            progress = true;
            if self.written < self.rest.len() {
                return Ok(progress);
            }
            // Written: give the memory back, an idle tunnel holds none.
            self.rest = Vec::new();
            self.written = 0;
        }
        if !self.eof {
            if let Some(n) = io.read(from, scratch)? {
                if n == 0 {
                    self.eof = true;
                } else {
                    let took = io.write(to, &scratch[..n])?.unwrap_or(0);
                    self.bytes += took as u64;
                    if took < n {
                        self.rest = scratch[took..n].to_vec();
                    }
                }
                progress = true;
            }
        }
        if self.eof && self.rest.is_empty() && !self.shut {
            io.shutdown(to);
            self.shut = true;
            progress = true;
        }
        Ok(progress)
    }
}

impl Io {
    /// Notes what an event of socket `side` (0: the client's) says.
    fn event(&mut self, side: usize, flags: EventFlags) {
        let both = EventFlags::ERR | EventFlags::HUP;
        if flags.intersects(EventFlags::RDHUP | both) {
            self.ended[side] = true;
        }
        if flags.intersects(EventFlags::IN | EventFlags::PRI | EventFlags::RDHUP | both) {
            self.readable[side] = true;
        }
        if flags.intersects(EventFlags::OUT | both) {
            self.writable[side] = true;
        }
    }

    /// Reads from socket `side` into `buf` if it may have something: how much (0: its
    /// end), or `None` when it has nothing now. A short read drained the socket, unless
    /// its peer's end came with the data's edge: then the next read must see the end.
    pub fn read(&mut self, side: usize, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let (len, ended, mut s) = (buf.len(), self.ended[side], &self.sockets[side]);
        attempt(
            &mut self.readable[side],
            || s.read(buf),
            |n| n < len && !ended,
        )
    }

    /// Writes `buf` to socket `side` if it may take something: how much it took, or `None`
    /// when nothing (it would block).
    pub fn write(&mut self, side: usize, buf: &[u8]) -> io::Result<Option<usize>> {
        let mut s = &self.sockets[side];
        let op = || match s.write(buf) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            r => r,
        };
        attempt(&mut self.writable[side], op, |n| n < buf.len())
    }

    /// Ends our writing half of socket `side` (the other side read to its end).
    pub fn shutdown(&self, side: usize) {
        let _ = self.sockets[side].shutdown(Shutdown::Write);
    }
}

/// Runs `op` (a read or a write) while the socket is `ready`: how much it moved, or `None`
/// when it would block. `ready` is cleared by a call that blocked, or one whose result says
/// the socket is `spent` (a short read or write); no edge comes before the state changes.
fn attempt(
    ready: &mut bool,
    mut op: impl FnMut() -> io::Result<usize>,
    spent: impl Fn(usize) -> bool,
) -> io::Result<Option<usize>> {
    while *ready {
        match op() {
            Ok(n) => {
                *ready = !spent(n);
                return Ok(Some(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

impl Finish {
    fn set(&self, end: Ended) {
        let mut s = lock(&self.state);
        s.0 = Some(end);
        let waker = s.1.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// How the tunnel ended, once it did.
    pub fn poll(&self, cx: &Context<'_>) -> Poll<Ended> {
        let mut s = lock(&self.state);
        if let Some(end) = s.0 {
            return Poll::Ready(end);
        }
        match &mut s.1 {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Fails its set when dropped: held by the set's task.
struct FailOnDrop<'a>(&'a Edge);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fail();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.edge.table).release(self.index, self.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::FutureExt;
    use std::net::TcpListener;

    fn pair() -> (Async<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (Async::new(a).unwrap(), b)
    }

    /// Runs the set's task on a thread of its own, for tests that use blocking peers.
    fn running(edge: &Arc<Edge>) {
        let edge = edge.clone();
        std::thread::spawn(move || {
            let e = smol::block_on(edge.run());
            panic!("the set's task ended: {e}")
        });
    }

    /// A copying tunnel: (its finish, registration, client's peer, upstream's peer), the
    /// peers blocking with a 5 s read timeout.
    fn copied(
        edge: &Arc<Edge>,
        size: usize,
        ping: Option<Duration>,
    ) -> (Arc<Finish>, Registration, TcpStream, TcpStream) {
        let ((c, c_peer), (u, u_peer)) = (pair(), pair());
        for p in [&c_peer, &u_peer] {
            p.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
        }
        let (finish, reg) = edge.copy(c, u, size, ping).unwrap();
        (finish, reg, c_peer, u_peer)
    }

    fn read_to_end(mut s: &TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all
    }

    fn plain_end(up: u64, down: u64, reason: &'static str) -> Ended {
        Ended {
            up,
            down,
            pings: 0,
            reason,
        }
    }

    fn end_of(finish: &Finish) -> Ended {
        smol::block_on(
            futures_lite::future::poll_fn(|cx| finish.poll(cx)).or(async {
                async_io::Timer::after(std::time::Duration::from_secs(5)).await;
                panic!("the tunnel did not end")
            }),
        )
    }

    #[test]
    fn a_copied_tunnel_moves_bytes_both_ways_and_ends_when_both_sides_have() {
        let edge = Edge::new().unwrap();
        running(&edge);
        let (finish, reg, mut c_peer, mut u_peer) = copied(&edge, 4096, None);
        let mut buf = [0u8; 4];
        c_peer.write_all(b"ping").unwrap();
        u_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        u_peer.write_all(b"pong!").unwrap();
        let mut back = [0u8; 5];
        c_peer.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"pong!");
        // The client ends: the upstream sees the end, and may still answer.
        c_peer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&u_peer), b"");
        u_peer.write_all(b"bye").unwrap();
        drop(u_peer);
        assert_eq!(read_to_end(&c_peer), b"bye");
        assert_eq!(end_of(&finish), plain_end(4, 8, "closed"));
        // It left the set by itself; its registration's drop changes nothing more.
        drop(reg);
        let t = lock(&edge.table);
        assert_eq!((t.slots.len(), t.free.len()), (1, 1));
        assert!(t.slots[0].copy.is_none() && t.slots[0].generation == 1);
    }

    #[test]
    fn an_end_that_came_with_the_last_data_is_passed_on_after_a_short_read() {
        let edge = Edge::new().unwrap();
        running(&edge);
        let ((c, mut c_peer), (u, u_peer)) = (pair(), pair());
        u_peer
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // The data and the end both arrive before the tunnel starts: one edge for the two.
        c_peer.write_all(b"bye").unwrap();
        c_peer.shutdown(Shutdown::Write).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_finish, _reg) = edge.copy(c, u, 4096, None).unwrap();
        assert_eq!(read_to_end(&u_peer), b"bye");
    }

    #[test]
    fn a_copy_the_destination_does_not_take_waits_for_its_write_edge_holding_one_read() {
        let edge = Edge::new().unwrap();
        running(&edge);
        let size = 4096;
        let (finish, _reg, mut c_peer, u_peer) = copied(&edge, size, None);
        // Far more than the sockets' buffers hold while the upstream does not read.
        let total = 8 << 20;
        let writer = std::thread::spawn(move || {
            let chunk = vec![5u8; 64 * 1024];
            for _ in 0..total / chunk.len() {
                c_peer.write_all(&chunk).unwrap();
            }
            c_peer.shutdown(Shutdown::Write).unwrap();
            c_peer
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        {
            // Blocked: what the tunnel keeps is at most one read.
            let t = lock(&edge.table);
            let Some(How::Plain { flows, .. }) = t.slots[0].copy.as_ref().map(|c| &c.how) else {
                panic!("the tunnel left the set")
            };
            assert!(!flows[0].rest.is_empty() && flows[0].rest.len() <= size);
        }
        let got = read_to_end(&u_peer);
        assert!(got.len() == total && got.iter().all(|&b| b == 5));
        drop(u_peer);
        let _c_peer = writer.join().unwrap();
        assert_eq!(end_of(&finish), plain_end(total as u64, 0, "closed"));
    }

    #[test]
    fn dropping_a_copied_tunnels_registration_closes_both_sockets() {
        let edge = Edge::new().unwrap();
        running(&edge);
        let (_finish, reg, c_peer, u_peer) = copied(&edge, 4096, None);
        drop(reg);
        assert_eq!(read_to_end(&c_peer), b"");
        assert_eq!(read_to_end(&u_peer), b"");
        assert!(lock(&edge.table).slots[0].copy.is_none());
    }

    #[test]
    fn a_framed_tunnel_pings_a_quiet_client_between_frames_and_drops_its_pong() {
        let edge = Edge::new().unwrap();
        running(&edge);
        let every = Duration::from_millis(100);
        let (finish, _reg, mut c_peer, mut u_peer) = copied(&edge, 4096, Some(every));
        // The upstream sends a frame in two parts; the Ping may not split it.
        let frame = [0x81, 0x05, b'h', b'e', b'l', b'l', b'o'];
        u_peer.write_all(&frame[..3]).unwrap();
        std::thread::sleep(every * 3);
        u_peer.write_all(&frame[3..]).unwrap();
        let mut got = [0u8; 13];
        c_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..7], &frame, "the frame whole, then our Ping");
        assert_eq!(&got[7..], b"\x89\x04wsg1");
        // The client's Pong (masked) is dropped; its next frame goes on.
        let mask = [1u8, 2, 3, 4];
        let mut pong = vec![0x8A, 0x84];
        pong.extend_from_slice(&mask);
        pong.extend(b"wsg1".iter().zip(mask).map(|(b, m)| b ^ m));
        c_peer.write_all(&pong).unwrap();
        let text = [0x81, 0x82, 0, 0, 0, 0, b'o', b'k'];
        c_peer.write_all(&text).unwrap();
        let mut up = [0u8; 8];
        u_peer.read_exact(&mut up).unwrap();
        assert_eq!(up, text);
        // Quiet again, with no event at all: the set's tick finds the next Ping due.
        let mut again = [0u8; 6];
        c_peer.read_exact(&mut again).unwrap();
        assert_eq!(&again, b"\x89\x04wsg1");
        drop((c_peer, u_peer));
        let end = end_of(&finish);
        assert!(end.pings == 2 && end.up == 8 && end.down == 7, "{end:?}");
    }

    #[test]
    fn when_the_sets_task_is_gone_its_tunnels_end_and_it_takes_no_more() {
        let edge = Edge::new().unwrap();
        let (finish, _reg, mut c_peer, u_peer) = copied(&edge, 4096, None);
        // The task runs a while, then is dropped, as the executor drops a panicked task.
        smol::block_on(async {
            let run = edge.clone().run();
            run.or(async {
                c_peer.write_all(b"a").unwrap();
                async_io::Timer::after(Duration::from_millis(100)).await;
                io::Error::other("stop")
            })
            .await
        });
        assert!(edge.failed());
        let end = end_of(&finish);
        assert_eq!((end.up, end.reason), (1, "set_failed"));
        assert_eq!(read_to_end(&u_peer), b"a");
        assert_eq!(read_to_end(&c_peer), b"");
        let (c, u) = (pair().0, pair().0);
        assert!(edge.copy(c, u, 4096, None).is_err());
    }
}
