//! Tunnels copied by an edge-triggered epoll set of their own.
//!
//! async-io registers interest one-shot: once a socket signalled, the next wait re-arms it
//! with an `epoll_ctl`, and the task it wakes then reads and writes: a re-arm and a wake-up
//! per proxied message, where an nginx worker, edge-triggered, reads and writes in the same
//! loop turn that took the event. Here a tunnel's two sockets join one epoll set when the
//! tunnel starts ([`Edge::copy`]; `EPOLLET`, reads, writes and hang-ups at once) and are
//! never re-armed; the kernel drops them from it when they close. The set's own descriptor
//! is a single async-io source, watched by one task ([`Edge::run`]) that takes the events in
//! batches (its one re-arm serves a whole batch) and copies each tunnel's bytes itself: a
//! read into one scratch buffer of the set's, written on at once; only what the other socket
//! does not take is kept, in a buffer of the tunnel's own. Readiness is a flag per socket
//! and direction, set by an event and cleared by a read or write the socket did not satisfy.
//! A tunnel gets `BUDGET` rounds per step and the task `STEPS` steps per turn, so a busy
//! tunnel cannot hold the set or its executor thread. The task that opened the tunnel only
//! waits for its [`Finish`].
//!
//! rustix's epoll calls are safe (a socket is borrowed for `epoll_ctl`), where the `polling`
//! crate's edge mode needs `unsafe`, which this crate forbids.

use crate::lock::mutex as lock;
use rustix::event::epoll::{self, Event, EventData, EventFlags};
use smol::Async;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

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
}

/// Registered tunnels by slot. An event carries its slot's index and generation, so one for
/// a tunnel that ended (and whose slot went to another) is ignored.
#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Copying tunnels with work left, by index and generation, in the order they became
    /// ready; a tunnel is here at most once ([`Copy::queued`]).
    pending: VecDeque<(u32, u32)>,
    /// Where the set's copies read to before they write on: as large as the largest
    /// `size` registered.
    scratch: Vec<u8>,
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

/// A tunnel the set copies itself: its two sockets (client, upstream), their readiness as
/// the edges told it, and one [`Flow`] per direction.
#[derive(Debug)]
struct Copy {
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
    /// Client to upstream, upstream to client.
    flows: [Flow; 2],
    /// Read size (`--upstream-tunnel-buffer`).
    size: usize,
    /// In [`Table::pending`].
    queued: bool,
    finish: Arc<Finish>,
}

/// One direction of a copying tunnel.
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

/// How a copying tunnel ended: bytes from the client, bytes to it, and the reason
/// (`closed` or `io_error`).
pub type End = (u64, u64, &'static str);

/// A copying tunnel's [`End`] once it came, for the task that waits on it.
#[derive(Debug, Default)]
pub struct Finish {
    state: Mutex<(Option<End>, Option<Waker>)>,
}

/// What one [`Copy::step`] left.
enum Left {
    /// Nothing to do until the next event.
    Idle,
    /// Its budget ran out with bytes still to move.
    More,
    /// The tunnel is over, for this reason.
    Done(&'static str),
}

impl Edge {
    /// A new, empty set. Start [`Edge::run`] on the executor for it to wake anyone.
    pub fn new() -> io::Result<Arc<Edge>> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Arc::new(Edge {
            epoll: Async::new(fd)?,
            table: Mutex::default(),
        }))
    }

    /// Moves a tunnel's two sockets from async-io's reactor into the set, whose task then
    /// copies the bytes both ways itself as the sockets' events come (reads of up to `size`
    /// into one scratch buffer of the set's; only what a socket does not take is kept, for
    /// the tunnel): no task is woken per message, as in nginx. The returned [`Finish`] tells
    /// when and how the tunnel ended; dropping the [`Registration`] before then closes it.
    pub fn copy(
        self: &Arc<Self>,
        client: Async<TcpStream>,
        upstream: Async<TcpStream>,
        size: usize,
    ) -> io::Result<(Arc<Finish>, Registration)> {
        let sockets = [client.into_inner()?, upstream.into_inner()?];
        let finish = Arc::new(Finish::default());
        let mut t = lock(&self.table);
        let (index, generation) = t.take_slot();
        for (side, s) in sockets.iter().enumerate() {
            if let Err(e) = self.add(s, index, generation, side) {
                t.release(index, generation);
                return Err(e);
            }
        }
        if t.scratch.len() < size {
            t.scratch.resize(size, 0);
        }
        t.slots[index as usize].copy = Some(Box::new(Copy {
            sockets,
            readable: [false; 2],
            writable: [false; 2],
            ended: [false; 2],
            flows: Default::default(),
            size,
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

    /// Takes the set's events as they come, wakes their tunnels' tasks and copies the
    /// copying tunnels' bytes. Runs for the process's life; only a failing `epoll_wait` (a
    /// bad descriptor) ends it, with that error.
    pub async fn run(self: Arc<Self>) -> io::Error {
        let mut more = false;
        loop {
            if more {
                // Tunnels with bytes left after their budget: let other tasks run first.
                futures_lite::future::yield_now().await;
            } else if let Err(e) = self.epoll.readable().await {
                return e;
            }
            match self.drain() {
                Ok(m) => more = m,
                Err(e) => return e,
            }
        }
    }

    /// Takes every event the set holds, [`EVENTS`] at a time, without waiting, then gives
    /// each copying tunnel with work one [`Copy::step`]; `Ok(true)` when some have more.
    fn drain(&self) -> io::Result<bool> {
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
        t.copy();
        Ok(!t.pending.is_empty())
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
        slot.copy = None;
        slot.generation = generation.wrapping_add(1);
        self.free.push(index);
    }

    /// Counts each event for its tunnel: a task's is woken, a copying one is queued.
    fn dispatch(&mut self, events: &[Event]) {
        for e in events {
            let data = e.data.u64();
            let (generation, index, side) = ((data >> 32) as u32, (data as u32) >> 1, data & 1);
            let Some(Slot {
                generation: g,
                copy: Some(c),
            }) = self.slots.get_mut(index as usize)
            else {
                continue;
            };
            if *g != generation {
                continue;
            }
            c.event(side as usize, e.flags);
            if !c.queued {
                c.queued = true;
                self.pending.push_back((index, generation));
            }
        }
    }

    /// One [`Copy::step`] for each copying tunnel queued now, at most [`STEPS`]; one with
    /// bytes left goes to the back of the queue, one that ended leaves the set and tells its
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
            let Some(Slot {
                generation: g,
                copy: Some(c),
            }) = slots.get_mut(index as usize)
            else {
                continue;
            };
            if *g != generation {
                continue;
            }
            match c.step(scratch) {
                Left::Idle => c.queued = false,
                Left::More => pending.push_back((index, generation)),
                Left::Done(reason) => {
                    c.finish.set((c.flows[0].bytes, c.flows[1].bytes, reason));
                    self.release(index, generation);
                }
            }
        }
    }
}

impl Copy {
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

    /// Moves bytes both ways until neither can move, at most [`BUDGET`] rounds.
    fn step(&mut self, scratch: &mut [u8]) -> Left {
        for _ in 0..BUDGET {
            let mut progress = false;
            for from in 0..2 {
                match self.flow(from, scratch) {
                    Ok(p) => progress |= p,
                    Err(_) => return Left::Done("io_error"),
                }
            }
            if self.flows[0].shut && self.flows[1].shut {
                return Left::Done("closed");
            }
            if !progress {
                return Left::Idle;
            }
        }
        Left::More
    }

    /// Moves bytes from socket `from` to the other one as far as their readiness allows:
    /// first what the other did not take before, then one read; `Ok(true)` on progress.
    fn flow(&mut self, from: usize, scratch: &mut [u8]) -> io::Result<bool> {
        let to = 1 - from;
        let size = self.size;
        let f = &mut self.flows[from];
        let mut progress = false;
        if f.written < f.rest.len() {
            if !self.writable[to] {
                return Ok(false);
            }
            let n = match write(
                &self.sockets[to],
                &f.rest[f.written..],
                &mut self.writable[to],
            )? {
                Some(n) => n,
                None => return Ok(false),
            };
            f.written += n;
            f.bytes += n as u64;
            progress = true;
            if f.written < f.rest.len() {
                return Ok(progress);
            }
            // Written: give the memory back, an idle tunnel holds none.
            f.rest = Vec::new();
            f.written = 0;
        }
        if !f.eof && self.readable[from] {
            let n = match (&self.sockets[from]).read(&mut scratch[..size]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable[from] = false;
                    return Ok(progress);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                Err(e) => return Err(e),
            };
            // A short read drained the socket, unless an end waits behind it: its edge came
            // with the data's, and no other will.
            if n < size && !self.ended[from] {
                self.readable[from] = false;
            }
            if n == 0 {
                f.eof = true;
            } else {
                let took = if self.writable[to] {
                    write(&self.sockets[to], &scratch[..n], &mut self.writable[to])?.unwrap_or(0)
                } else {
                    0
                };
                f.bytes += took as u64;
                if took < n {
                    f.rest = scratch[took..n].to_vec();
                }
            }
            progress = true;
        }
        if f.eof && f.rest.is_empty() && !f.shut {
            let _ = self.sockets[to].shutdown(Shutdown::Write);
            f.shut = true;
            progress = true;
        }
        Ok(progress)
    }
}

/// Writes `b` to `s`: how much it took (`None` when nothing, as it would block), clearing
/// `writable` when it did not take all of it.
fn write(mut s: &TcpStream, b: &[u8], writable: &mut bool) -> io::Result<Option<usize>> {
    loop {
        match s.write(b) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if n < b.len() {
                    *writable = false;
                }
                return Ok(Some(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Finish {
    fn set(&self, end: End) {
        let mut s = lock(&self.state);
        s.0 = Some(end);
        let waker = s.1.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The tunnel's bytes up and down and its reason to end, once it ended.
    pub fn poll(&self, cx: &Context<'_>) -> Poll<End> {
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
    fn copied(edge: &Arc<Edge>, size: usize) -> (Arc<Finish>, Registration, TcpStream, TcpStream) {
        let ((c, c_peer), (u, u_peer)) = (pair(), pair());
        for p in [&c_peer, &u_peer] {
            p.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
        }
        let (finish, reg) = edge.copy(c, u, size).unwrap();
        (finish, reg, c_peer, u_peer)
    }

    fn read_to_end(mut s: &TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all
    }

    fn end_of(finish: &Finish) -> End {
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
        let (finish, reg, mut c_peer, mut u_peer) = copied(&edge, 4096);
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
        assert_eq!(end_of(&finish), (4, 8, "closed"));
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
        let (_finish, _reg) = edge.copy(c, u, 4096).unwrap();
        assert_eq!(read_to_end(&u_peer), b"bye");
    }

    #[test]
    fn a_copy_the_destination_does_not_take_waits_for_its_write_edge_holding_one_read() {
        let edge = Edge::new().unwrap();
        running(&edge);
        let size = 4096;
        let (finish, _reg, mut c_peer, u_peer) = copied(&edge, size);
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
            let Some(c) = &t.slots[0].copy else {
                panic!("the tunnel left the set")
            };
            assert!(!c.flows[0].rest.is_empty() && c.flows[0].rest.len() <= size);
        }
        let got = read_to_end(&u_peer);
        assert!(got.len() == total && got.iter().all(|&b| b == 5));
        drop(u_peer);
        let _c_peer = writer.join().unwrap();
        assert_eq!(end_of(&finish), (total as u64, 0, "closed"));
    }

    #[test]
    fn dropping_a_copied_tunnels_registration_closes_both_sockets() {
        let edge = Edge::new().unwrap();
        running(&edge);
        let (_finish, reg, c_peer, u_peer) = copied(&edge, 4096);
        drop(reg);
        assert_eq!(read_to_end(&c_peer), b"");
        assert_eq!(read_to_end(&u_peer), b"");
        assert!(lock(&edge.table).slots[0].copy.is_none());
    }
}
