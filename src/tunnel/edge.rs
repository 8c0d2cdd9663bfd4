//! Readiness for tunnel sockets from an edge-triggered epoll set of their own.
//!
//! async-io registers interest one-shot: once a socket signalled, the next wait re-arms it
//! with an `epoll_ctl`, so a tunnel paid one per proxied message where nginx, edge-triggered,
//! pays none. Here a tunnel's two sockets join one epoll set when the tunnel starts
//! (`EPOLLET`, reads, writes and hang-ups at once) and are never re-armed; the kernel drops
//! them from it when they close. The set's own descriptor is a single async-io source,
//! watched by one task ([`Edge::run`]) that takes the set's events in batches and wakes the
//! tunnels they belong to: its one re-arm serves a whole batch.
//!
//! Edge-triggered readiness is counted, not flagged: each event adds to a count per socket
//! and direction, and a side remembers the count it read at before its last attempt, so an
//! event that comes between an attempt and the wait is never lost.
//!
//! rustix's epoll calls are safe (a socket is borrowed for `epoll_ctl`), where the `polling`
//! crate's edge mode needs `unsafe`, which this crate forbids.

use crate::lock::mutex as lock;
use futures_lite::{AsyncRead, AsyncWrite};
use rustix::event::epoll::{self, Event, EventData, EventFlags};
use smol::Async;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Events taken from the set per `epoll_wait`.
const EVENTS: usize = 64;

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
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    ready: Option<Arc<Ready>>,
}

/// One tunnel's readiness: events counted per socket and direction (client read, client
/// write, upstream read, upstream write), and the waker of the task that pumps it.
#[derive(Debug, Default)]
struct Ready {
    state: Mutex<ReadyState>,
}

#[derive(Debug, Default)]
struct ReadyState {
    events: [u64; 4],
    /// Per socket: its peer finished sending (or the socket failed). Kept, because no
    /// further edge comes for it: a short read that took the last data must not be taken
    /// for a drained socket while an end of file waits behind it (nginx's `pending_eof`).
    ended: [bool; 2],
    waker: Option<Waker>,
}

/// One socket of a registered tunnel: nonblocking reads and writes that wait on the set.
#[derive(Debug)]
pub struct Side {
    stream: TcpStream,
    ready: Arc<Ready>,
    /// Index of its read count in [`ReadyState::events`]; its write count is the next.
    at: usize,
    /// The read count when the last read began.
    read_at: u64,
}

/// A tunnel's place in the set; it leaves when this is dropped.
#[derive(Debug)]
pub struct Registration {
    edge: Arc<Edge>,
    index: u32,
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

    /// Moves a tunnel's two sockets from async-io's reactor into the set.
    pub fn register(
        self: &Arc<Self>,
        client: Async<TcpStream>,
        upstream: Async<TcpStream>,
    ) -> io::Result<(Side, Side, Registration)> {
        // (Still nonblocking: async-io leaves the mode as it set it.)
        let (client, upstream) = (client.into_inner()?, upstream.into_inner()?);
        let ready = Arc::new(Ready::default());
        let (index, generation) = {
            let mut t = lock(&self.table);
            let index = match t.free.pop() {
                Some(i) => i,
                None => {
                    t.slots.push(Slot::default());
                    (t.slots.len() - 1) as u32
                }
            };
            let slot = &mut t.slots[index as usize];
            slot.ready = Some(ready.clone());
            (index, slot.generation)
        };
        let registration = Registration {
            edge: self.clone(),
            index,
        };
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        for (side, s) in [&client, &upstream].into_iter().enumerate() {
            let data = (u64::from(generation) << 32) | (u64::from(index) << 1) | side as u64;
            epoll::add(self.epoll.get_ref(), s, EventData::new_u64(data), flags)?;
        }
        let side = |stream, at| Side {
            stream,
            ready: ready.clone(),
            at,
            read_at: 0,
        };
        Ok((side(client, 0), side(upstream, 2), registration))
    }

    /// Takes the set's events as they come and wakes their tunnels. Runs for the process's
    /// life; only a failing `epoll_wait` (a bad descriptor) ends it, with that error.
    pub async fn run(self: Arc<Self>) -> io::Error {
        loop {
            let drained = match self.epoll.readable().await {
                Ok(()) => self.drain(),
                Err(e) => Err(e),
            };
            if let Err(e) = drained {
                return e;
            }
        }
    }

    /// Takes every event the set holds, [`EVENTS`] at a time, without waiting.
    fn drain(&self) -> io::Result<()> {
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut buf = [MaybeUninit::<Event>::uninit(); EVENTS];
        loop {
            match epoll::wait(self.epoll.get_ref(), &mut buf, Some(&zero)) {
                Ok((events, _)) => {
                    self.dispatch(events);
                    if events.len() < EVENTS {
                        return Ok(());
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn dispatch(&self, events: &[Event]) {
        let t = lock(&self.table);
        for e in events {
            let data = e.data.u64();
            let (generation, index, side) = ((data >> 32) as u32, (data as u32) >> 1, data & 1);
            let Some(Slot {
                generation: g,
                ready: Some(ready),
            }) = t.slots.get(index as usize)
            else {
                continue;
            };
            if *g == generation {
                ready.event(2 * side as usize, e.flags);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = lock(&self.edge.table);
        let slot = &mut t.slots[self.index as usize];
        slot.ready = None;
        slot.generation = slot.generation.wrapping_add(1);
        t.free.push(self.index);
    }
}

impl Ready {
    /// Counts an event of the socket whose read count is at `at`, and wakes the tunnel.
    fn event(&self, at: usize, flags: EventFlags) {
        let read = EventFlags::IN | EventFlags::PRI | EventFlags::RDHUP;
        let write = EventFlags::OUT;
        let both = EventFlags::ERR | EventFlags::HUP;
        let mut s = lock(&self.state);
        if flags.intersects(EventFlags::RDHUP | both) {
            s.ended[at / 2] = true;
        }
        if flags.intersects(read | both) {
            s.events[at] += 1;
        }
        if flags.intersects(write | both) {
            s.events[at + 1] += 1;
        }
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn count(&self, i: usize) -> u64 {
        lock(&self.state).events[i]
    }

    /// Whether count `i` moved past `seen` (or, with `or_ended`, its socket's peer ended);
    /// if not, `cx` is woken at the next event.
    fn moved(&self, i: usize, seen: u64, or_ended: bool, cx: &Context<'_>) -> bool {
        let mut s = lock(&self.state);
        if s.events[i] != seen || (or_ended && s.ended[i / 2]) {
            return true;
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        false
    }
}

impl Side {
    /// Ready once the socket signalled since the last read began, or its peer has ended (a
    /// read may then have something, or the end); costs no syscall.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.ready.moved(self.at, self.read_at, true, cx) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Ends our writing half (the other side read to its end).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Runs `op` (a read when `i` is the read count, else a write) until it does not block,
    /// or blocks with no event counted since it began: then `cx` waits for the next one.
    fn attempt(
        &mut self,
        i: usize,
        cx: &Context<'_>,
        mut op: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let seen = self.ready.count(i);
            if i == self.at {
                self.read_at = seen;
            }
            match op(&self.stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.ready.moved(i, seen, false, cx) {
                        return Poll::Pending;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return Poll::Ready(r),
            }
        }
    }
}

impl AsyncRead for Side {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let at = me.at;
        me.attempt(at, cx, |mut s| s.read(buf))
    }
}

impl AsyncWrite for Side {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let at = me.at + 1;
        me.attempt(at, cx, |mut s| s.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_write();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
    use std::net::TcpListener;

    fn pair() -> (Async<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (Async::new(a).unwrap(), b)
    }

    /// Runs `f` beside the set's task.
    fn with_edge<T>(edge: &Arc<Edge>, f: impl std::future::Future<Output = T>) -> T {
        smol::block_on(f.or(async {
            let e = edge.clone().run().await;
            panic!("the set's task ended: {e}")
        }))
    }

    #[test]
    fn a_registered_tunnel_reads_and_writes_through_the_set_and_leaves_it() {
        let edge = Edge::new().unwrap();
        let ((c, mut c_peer), (u, mut u_peer)) = (pair(), pair());
        let (mut client, mut upstream, reg) = edge.register(c, u).unwrap();
        let got = with_edge(&edge, async {
            let mut buf = [0u8; 16];
            // Nothing there yet: the read waits for the set's event.
            let writer = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                c_peer.write_all(b"hello").unwrap();
                c_peer
            });
            let n = client.read(&mut buf).await.unwrap();
            upstream.write_all(&buf[..n]).await.unwrap();
            writer.join().unwrap();
            n
        });
        let mut out = [0u8; 5];
        u_peer.read_exact(&mut out).unwrap();
        assert_eq!((got, &out), (5, b"hello"));
        drop((client, upstream, reg));
        let t = lock(&edge.table);
        assert_eq!((t.slots.len(), t.free.len()), (1, 1));
        assert!(t.slots[0].ready.is_none() && t.slots[0].generation == 1);
    }

    #[test]
    fn a_write_the_socket_would_block_goes_on_when_the_peer_reads() {
        let edge = Edge::new().unwrap();
        let ((c, _c_peer), (u, mut u_peer)) = (pair(), pair());
        let (_client, mut upstream, _reg) = edge.register(c, u).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let written = with_edge(&edge, async {
            // Fill the send and receive buffers: the peer does not read yet.
            let mut sent = 0usize;
            loop {
                let once = futures_lite::future::poll_once(upstream.write(&chunk)).await;
                match once {
                    Some(n) => sent += n.unwrap(),
                    None => break,
                }
            }
            // Now it reads everything; the blocked write must finish on the write edge.
            let reader = std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0usize;
                while let Ok(n) = u_peer.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                got
            });
            // (The timer first: once it fires, a retry of the write must not win.)
            let last = async {
                async_io::Timer::after(std::time::Duration::from_secs(5)).await;
                Err(io::ErrorKind::TimedOut.into())
            }
            .or(upstream.write_all(&chunk))
            .await;
            upstream.shutdown_write();
            (sent, last.map(|()| chunk.len()), reader.join().unwrap())
        });
        let (sent, last, got) = written;
        assert_eq!(last.unwrap() + sent, got);
    }

    #[test]
    fn an_end_that_came_with_the_last_data_is_still_seen_after_a_short_read() {
        let edge = Edge::new().unwrap();
        let ((c, mut c_peer), (u, _u_peer)) = (pair(), pair());
        // The data and the end both arrive before the tunnel starts: one edge for the two.
        c_peer.write_all(b"bye").unwrap();
        drop(c_peer);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (mut client, _upstream, _reg) = edge.register(c, u).unwrap();
        let (n, ended) = with_edge(&edge, async {
            // Let the set's task count the one event first.
            async_io::Timer::after(std::time::Duration::from_millis(20)).await;
            let mut buf = [0u8; 16];
            let n = client.read(&mut buf).await.unwrap();
            // A short read, as the direct pump sees it: it waits for readiness next.
            let readable = futures_lite::future::poll_fn(|cx| client.poll_readable(cx));
            let ended = readable
                .or(async {
                    async_io::Timer::after(std::time::Duration::from_secs(2)).await;
                    Err(io::ErrorKind::TimedOut.into())
                })
                .await
                .map(|()| false);
            (
                n,
                ended.is_ok() && client.read(&mut buf).await.unwrap() == 0,
            )
        });
        assert_eq!((n, ended), (3, true));
    }
}
