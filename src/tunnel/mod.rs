//! A WebSocket tunnel to `--upstream` (or a Socket.IO forward to a peer) after its 101:
//! bytes copied both ways, with no idle timeout. Without `--upstream-ping` the tunnel's
//! epoll set copies them itself ([`edge::Edge::copy`]): a read goes into the set's scratch
//! buffer and is written on at once; only what the other side does not take then is kept,
//! in a buffer of the tunnel's own (at most `--upstream-tunnel-buffer`, freed once
//! written), so an idle tunnel holds no buffer at all. With `--upstream-ping` a task of the
//! tunnel's own pumps it on async-io's reactor with two fixed buffers, and follows the
//! frames: a client quiet for that long gets our own Ping, written only at a frame boundary
//! of the upstream's stream, and the client's matching Pong is swallowed, so that an app
//! that never pings still keeps a CLB (60 s idle timeout) from cutting the connection.

pub mod edge;

use edge::Edge;

/// One socket of a tunnel with `--upstream-ping`, on async-io's reactor.
type Side = Async<TcpStream>;
use futures_lite::{future, AsyncRead, AsyncWrite, FutureExt};
use smol::{Async, Timer};
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Reads or writes in one poll before the task yields to the executor.
const BUDGET: u32 = 64;
/// The payload of our Ping; its Pong is recognised by it.
pub const PING_TOKEN: [u8; 4] = *b"wsg1";
/// Our Ping frame (server to client: unmasked).
const PING: [u8; 6] = [
    0x89,
    0x04,
    PING_TOKEN[0],
    PING_TOKEN[1],
    PING_TOKEN[2],
    PING_TOKEN[3],
];
/// A client's Pong echoing [`PING_TOKEN`]: FIN + opcode 0xA, masked, length 4.
const PONG_LEN: usize = 2 + 4 + 4;

/// Follows WebSocket frame boundaries in a byte stream, without buffering it. Pure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Frames {
    /// Header bytes seen of the current frame (0 at a boundary).
    have: u8,
    /// The header's length once known (2 to 14).
    header_len: u8,
    /// The second length byte and the extended length, as they arrive.
    len7: u8,
    ext: u64,
    /// Payload bytes still to come.
    payload: u64,
}

impl Frames {
    /// Whether the bytes seen so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload == 0
    }

    /// Takes in `b`, in stream order.
    pub fn advance(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.payload > 0 {
                let n = (self.payload.min(b.len() as u64)) as usize;
                self.payload -= n as u64;
                b = &b[n..];
                continue;
            }
            let c = b[0];
            b = &b[1..];
            self.have += 1;
            match self.have {
                1 => {}
                2 => {
                    self.len7 = c & 0x7F;
                    let ext = match self.len7 {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let mask = if c & 0x80 != 0 { 4 } else { 0 };
                    self.header_len = 2 + ext + mask;
                    self.ext = 0;
                }
                n if n <= 2 + self.ext_len() => self.ext = (self.ext << 8) | u64::from(c),
                _ => {}
            }
            if self.have >= 2 && self.have == self.header_len {
                self.payload = match self.len7 {
                    126 | 127 => self.ext,
                    n => u64::from(n),
                };
                self.have = 0;
            }
        }
    }

    fn ext_len(&self) -> u8 {
        match self.len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        }
    }
}

/// Whether `b` starts with a client's Pong carrying [`PING_TOKEN`]; `None` when `b` is too
/// short to tell and could still be one.
pub fn is_our_pong(b: &[u8]) -> Option<bool> {
    let want = [0x8A, 0x84];
    for (i, w) in want.iter().enumerate() {
        match b.get(i) {
            None => return None,
            Some(c) if c != w => return Some(false),
            Some(_) => {}
        }
    }
    if b.len() < PONG_LEN {
        return None;
    }
    let mask = &b[2..6];
    Some((0..4).all(|i| b[6 + i] ^ mask[i] == PING_TOKEN[i]))
}

/// One direction of a tunnel.
struct Dir {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    shut: bool,
    bytes: u64,
    /// Frames already passed on (written), with `--upstream-ping`.
    frames: Frames,
}

impl Dir {
    fn new(size: usize) -> Dir {
        Dir {
            buf: vec![0u8; size].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
            bytes: 0,
            frames: Frames::default(),
        }
    }

    /// Reads into the free end of the buffer (compacting first); `Ok(true)` on progress.
    fn poll_read(&mut self, src: &mut Side, cx: &mut Context<'_>) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            return Ok(false);
        }
        match Pin::new(&mut *src).poll_read(cx, &mut self.buf[self.end..]) {
            Poll::Ready(r) => {
                let n = r?;
                self.end += n;
                self.eof = n == 0;
                Ok(true)
            }
            Poll::Pending => Ok(false),
        }
    }

    /// Writes `buf[start..start + len]` to `dst`; `Ok(true)` on progress.
    fn poll_write(&mut self, dst: &mut Side, len: usize, cx: &mut Context<'_>) -> io::Result<bool> {
        if len == 0 {
            return Ok(false);
        }
        let chunk = &self.buf[self.start..self.start + len];
        match Pin::new(&mut *dst).poll_write(cx, chunk) {
            Poll::Ready(r) => {
                let n = r?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.frames.advance(&self.buf[self.start..self.start + n]);
                self.start += n;
                self.bytes += n as u64;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                Ok(true)
            }
            Poll::Pending => Ok(false),
        }
    }

    /// Half-closes `dst` once `src` ended and everything is written.
    fn shut_when_done(&mut self, dst: &Side) -> bool {
        if self.eof && self.start == self.end && !self.shut {
            let _ = dst.get_ref().shutdown(std::net::Shutdown::Write);
            self.shut = true;
            return true;
        }
        false
    }
}

/// What one pass of a tunnel's loop did.
enum Step {
    /// Moved bytes (or timers): go round again.
    Progress,
    /// Nothing to do until a waker fires.
    Idle,
    /// The tunnel is over, for this reason.
    Done(&'static str),
}

impl Step {
    fn progress(p: bool) -> Step {
        if p {
            Step::Progress
        } else {
            Step::Idle
        }
    }
}

/// Runs `pass` until it is done, at most [`BUDGET`] passes per poll: then the task yields
/// to the others on its executor thread.
async fn drive(mut pass: impl FnMut(&mut Context<'_>) -> Step) -> &'static str {
    future::poll_fn(|cx| {
        for _ in 0..BUDGET {
            match pass(cx) {
                Step::Progress => {}
                Step::Idle => return Poll::Pending,
                Step::Done(reason) => return Poll::Ready(reason),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// How a tunnel ended, and what passed through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Bytes from the client to the upstream (our Pongs not counted).
    pub up: u64,
    /// Bytes from the upstream to the client (our Pings not counted).
    pub down: u64,
    /// Pings we sent.
    pub pings: u64,
    /// `closed`, `client_error`, `upstream_error`, `io_error` (without `--upstream-ping`)
    /// or `register_failed`.
    pub reason: &'static str,
}

/// Copies both ways until both directions end or one side fails. Without `ping` the two
/// sockets move to `edge`'s epoll set for the tunnel's life, which copies them
/// (`register_failed` when there is no set, or it refuses them).
pub async fn pump(
    edge: io::Result<Arc<Edge>>,
    client: Async<TcpStream>,
    upstream: Async<TcpStream>,
    size: usize,
    ping: Option<Duration>,
) -> Ended {
    let failed = Ended {
        up: 0,
        down: 0,
        pings: 0,
        reason: "register_failed",
    };
    if ping.is_none() {
        // The set copies the bytes itself; this task only waits for the end.
        let Ok((finish, _registered)) = edge.and_then(|e| e.copy(client, upstream, size)) else {
            return failed;
        };
        let (up, down, reason) = future::poll_fn(|cx| finish.poll(cx)).await;
        return Ended {
            up,
            down,
            pings: 0,
            reason,
        };
    }
    pump_framed(client, upstream, size, ping).await
}

/// [`pump`] with `--upstream-ping`: two fixed buffers, frames followed both ways.
async fn pump_framed(
    mut client: Side,
    mut upstream: Side,
    size: usize,
    ping: Option<Duration>,
) -> Ended {
    let mut up = Dir::new(size);
    let mut down = Dir::new(size);
    let mut client_heard = Instant::now();
    let mut outstanding = false;
    // Bytes of our Ping still to write (it goes out whole, between two upstream frames).
    let mut ping_left = 0usize;
    let mut pings = 0u64;
    let mut timer = ping.map(Timer::after);
    let reason = drive(|cx| {
        let mut progress = false;
        // Client to upstream, holding back (and dropping) a Pong to our Ping.
        match up.poll_read(&mut client, cx) {
            Ok(p) => {
                if p {
                    client_heard = Instant::now();
                    progress = true;
                }
            }
            Err(_) => return Step::Done("client_error"),
        }
        let mut send = up.end - up.start;
        if outstanding && up.frames.at_boundary() && send > 0 {
            match is_our_pong(&up.buf[up.start..up.end]) {
                Some(true) => {
                    up.start += PONG_LEN;
                    outstanding = false;
                    send -= PONG_LEN;
                    progress = true;
                }
                // Maybe ours: wait for the rest of it (unless the client is done).
                None if !up.eof => send = 0,
                _ => {}
            }
        }
        if send > 0 && outstanding {
            // Pass on only up to the next frame boundary, where a Pong may start.
            send = send.min(frame_room(&up.frames, &up.buf[up.start..up.end]));
        }
        match up.poll_write(&mut upstream, send, cx) {
            Ok(p) => progress |= p,
            Err(_) => return Step::Done("upstream_error"),
        }
        progress |= up.shut_when_done(&upstream);
        // Upstream to client, with our Ping between two frames.
        if ping_left == 0 {
            match down.poll_read(&mut upstream, cx) {
                Ok(p) => progress |= p,
                Err(_) => return Step::Done("upstream_error"),
            }
        }
        if ping_left > 0 {
            let from = PING.len() - ping_left;
            match Pin::new(&mut client).poll_write(cx, &PING[from..]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    ping_left -= n;
                    progress = true;
                }
                Poll::Ready(_) => return Step::Done("client_error"),
                Poll::Pending => {}
            }
        } else {
            let mut send = down.end - down.start;
            if ping.is_some() {
                send = send.min(frame_room(&down.frames, &down.buf[down.start..down.end]));
            }
            match down.poll_write(&mut client, send, cx) {
                Ok(p) => progress |= p,
                Err(_) => return Step::Done("client_error"),
            }
            progress |= down.shut_when_done(&client);
        }
        if up.shut && down.shut {
            return Step::Done("closed");
        }
        // The ping timer: due when the client has been quiet for the interval.
        if let (Some(t), Some(every)) = (timer.as_mut(), ping) {
            if Pin::new(&mut *t).poll(cx).is_ready() {
                let quiet = client_heard.elapsed();
                if quiet >= every && !outstanding && down.frames.at_boundary() {
                    // Everything written so far ends a frame: the Ping goes next.
                    ping_left = PING.len();
                    outstanding = true;
                    pings += 1;
                    t.set_after(every);
                } else {
                    t.set_after(every.saturating_sub(quiet).max(Duration::from_millis(10)));
                }
                // A re-armed timer has no waker until it is polled again: go round once more.
                progress = true;
            }
        }
        Step::progress(progress)
    })
    .await;
    Ended {
        up: up.bytes,
        down: down.bytes,
        pings,
        reason,
    }
}

/// How many of `pending`'s bytes belong to frames already begun, so that writing them ends
/// at a frame boundary; at a boundary, the next whole frame (or what is here of it).
fn frame_room(frames: &Frames, pending: &[u8]) -> usize {
    let mut probe = *frames;
    let mut n = 0;
    // At a boundary, let one frame through; then stop at the next boundary.
    let mut started = false;
    while n < pending.len() {
        if probe.at_boundary() && started {
            break;
        }
        started = true;
        let step = if probe.payload > 0 {
            (probe.payload.min((pending.len() - n) as u64)) as usize
        } else {
            1
        };
        probe.advance(&pending[n..n + step]);
        n += step;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(m | len as u8),
            126..=0xFFFF => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn boundaries_are_found_at_any_split() {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (op, len, masked) in [
            (1, 5, false),
            (2, 300, false),
            (1, 70_000, true),
            (9, 0, true),
        ] {
            stream.extend(frame(op, len, masked));
            ends.push(stream.len());
        }
        for step in [1, 2, 3, 7, 100, 4096] {
            let mut f = Frames::default();
            let mut at = Vec::new();
            let mut i = 0;
            while i < stream.len() {
                let j = (i + step).min(stream.len());
                for k in i..j {
                    f.advance(&stream[k..k + 1]);
                    if f.at_boundary() {
                        at.push(k + 1);
                    }
                }
                i = j;
            }
            assert_eq!(at, ends, "step {step}");
        }
    }

    #[test]
    fn frame_room_stops_at_the_next_boundary() {
        let mut s = frame(1, 5, false);
        s.extend(frame(1, 3, false));
        let f = Frames::default();
        assert_eq!(frame_room(&f, &s), 7);
        let mut mid = Frames::default();
        mid.advance(&s[..4]);
        assert_eq!(frame_room(&mid, &s[4..]), 3);
        assert_eq!(frame_room(&f, &s[..4]), 4);
    }

    #[test]
    fn our_pong_is_recognised_through_its_mask() {
        let mask = [9u8, 8, 7, 6];
        let mut pong = vec![0x8A, 0x84];
        pong.extend_from_slice(&mask);
        pong.extend((0..4).map(|i| PING_TOKEN[i] ^ mask[i]));
        assert_eq!(is_our_pong(&pong), Some(true));
        assert_eq!(is_our_pong(&pong[..5]), None);
        assert_eq!(is_our_pong(&[0x8A]), None);
        let mut other = pong.clone();
        other[9] ^= 1;
        assert_eq!(is_our_pong(&other), Some(false));
        assert_eq!(is_our_pong(&[0x81, 0x84]), Some(false));
    }
}
