//! A WebSocket tunnel to `--upstream` (or a Socket.IO forward to a peer) after its 101:
//! bytes copied both ways, with no idle timeout, by the tunnel's epoll set itself
//! ([`edge::Edge::copy`]). Without `--upstream-ping` a read goes into the set's scratch
//! buffer and is written on at once; only what the other side does not take then is kept,
//! in a buffer of the tunnel's own (at most `--upstream-tunnel-buffer`, freed once
//! written), so an idle tunnel holds no buffer at all. With `--upstream-ping` the tunnel has
//! two fixed buffers and follows the frames ([`Framed`]): a client quiet for that long gets
//! our own Ping, written only at a frame boundary of the upstream's stream, and the client's
//! matching Pong is swallowed, so that an app that never pings still keeps a CLB (60 s idle
//! timeout) from cutting the connection. The frame logic is here; the socket calls are the
//! set's ([`edge::Io`]).

pub mod edge;

use edge::{Edge, Io};
use futures_lite::future;
use smol::Async;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// One direction of a tunnel with `--upstream-ping`: a fixed buffer, and the frames
/// already passed on.
#[derive(Debug)]
struct Dir {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    shut: bool,
    bytes: u64,
    /// Frames already passed on (written).
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

    /// Reads from socket `from` into the free end of the buffer (compacting first);
    /// `Ok(true)` on progress.
    fn read(&mut self, io: &mut Io, from: usize) -> io::Result<bool> {
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
        let Some(n) = io.read(from, &mut self.buf[self.end..])? else {
            return Ok(false);
        };
        self.end += n;
        self.eof = n == 0;
        Ok(true)
    }

    /// Writes `buf[start..start + len]` to socket `to`; `Ok(true)` on progress.
    fn write(&mut self, io: &mut Io, to: usize, len: usize) -> io::Result<bool> {
        if len == 0 {
            return Ok(false);
        }
        let Some(n) = io.write(to, &self.buf[self.start..self.start + len])? else {
            return Ok(false);
        };
        self.frames.advance(&self.buf[self.start..self.start + n]);
        self.start += n;
        self.bytes += n as u64;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(true)
    }

    /// Half-closes socket `to` once the source ended and everything is written.
    fn shut_when_done(&mut self, io: &Io, to: usize) -> bool {
        if self.eof && self.start == self.end && !self.shut {
            io.shutdown(to);
            self.shut = true;
            return true;
        }
        false
    }
}

/// What one pass over a tunnel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Moved bytes (or a Ping became due): go round again.
    Progress,
    /// Nothing to do until the next event.
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

/// A tunnel with `--upstream-ping`: two fixed buffers, frames followed both ways, our Ping
/// spliced in at a frame boundary when the client has been quiet for `every`, and the
/// client's Pong to it held back and dropped. The set calls [`Framed::pass`] on its events,
/// and again once [`Framed::check_at`] has come.
#[derive(Debug)]
pub struct Framed {
    up: Dir,
    down: Dir,
    every: Duration,
    client_heard: Instant,
    /// When the client's quiet is next looked at.
    check_at: Instant,
    /// Our Ping was sent and its Pong has not come back.
    outstanding: bool,
    /// Bytes of our Ping still to write (it goes out whole, between two upstream frames).
    ping_left: usize,
    pings: u64,
}

impl Framed {
    /// A tunnel whose buffers hold `size` bytes each, pinging a client quiet for `every`.
    pub fn new(size: usize, every: Duration) -> Framed {
        let now = Instant::now();
        Framed {
            up: Dir::new(size),
            down: Dir::new(size),
            every,
            client_heard: now,
            check_at: now + every,
            outstanding: false,
            ping_left: 0,
            pings: 0,
        }
    }

    /// When the client's quiet is next looked at: the set makes a pass then.
    pub fn check_at(&self) -> Instant {
        self.check_at
    }

    /// How it ended, with `reason`.
    pub fn ended(&self, reason: &'static str) -> Ended {
        Ended {
            up: self.up.bytes,
            down: self.down.bytes,
            pings: self.pings,
            reason,
        }
    }

    /// Moves what the sockets' readiness allows (socket 0 is the client's), and sends our
    /// Ping if it is due.
    pub fn pass(&mut self, io: &mut Io) -> Step {
        let (up, down) = (&mut self.up, &mut self.down);
        // One clock read a pass: when the client was heard, and whether a Ping is due.
        let now = Instant::now();
        let mut progress = false;
        // Client to upstream, holding back (and dropping) a Pong to our Ping.
        match up.read(io, 0) {
            Ok(p) => {
                if p {
                    self.client_heard = now;
                    progress = true;
                }
            }
            Err(_) => return Step::Done("client_error"),
        }
        let mut send = up.end - up.start;
        if self.outstanding && up.frames.at_boundary() && send > 0 {
            match is_our_pong(&up.buf[up.start..up.end]) {
                Some(true) => {
                    up.start += PONG_LEN;
                    self.outstanding = false;
                    send -= PONG_LEN;
                    progress = true;
                }
                // Maybe ours: wait for the rest of it (unless the client is done).
                None if !up.eof => send = 0,
                _ => {}
            }
        }
        if send > 0 && self.outstanding {
            // Pass on only up to the next frame boundary, where a Pong may start.
            send = send.min(frame_room(&up.frames, &up.buf[up.start..up.end]));
        }
        match up.write(io, 1, send) {
            Ok(p) => progress |= p,
            Err(_) => return Step::Done("upstream_error"),
        }
        progress |= up.shut_when_done(io, 1);
        // Upstream to client, with our Ping between two frames.
        if self.ping_left == 0 {
            match down.read(io, 1) {
                Ok(p) => progress |= p,
                Err(_) => return Step::Done("upstream_error"),
            }
        }
        if self.ping_left > 0 {
            let from = PING.len() - self.ping_left;
            match io.write(0, &PING[from..]) {
                Ok(Some(n)) => {
                    self.ping_left -= n;
                    progress = true;
                }
                Ok(None) => {}
                Err(_) => return Step::Done("client_error"),
            }
        } else {
            let send = (down.end - down.start)
                .min(frame_room(&down.frames, &down.buf[down.start..down.end]));
            match down.write(io, 0, send) {
                Ok(p) => progress |= p,
                Err(_) => return Step::Done("client_error"),
            }
            progress |= down.shut_when_done(io, 0);
        }
        if up.shut && down.shut {
            return Step::Done("closed");
        }
        // The ping: due when the client has been quiet for the interval.
        if now >= self.check_at {
            let quiet = now.saturating_duration_since(self.client_heard);
            if quiet >= self.every && !self.outstanding && down.frames.at_boundary() {
                // Everything written so far ends a frame: the Ping goes next.
                self.ping_left = PING.len();
                self.outstanding = true;
                self.pings += 1;
                self.check_at = now + self.every;
                progress = true;
            } else {
                let wait = self.every.saturating_sub(quiet);
                self.check_at = now + wait.max(Duration::from_millis(10));
            }
        }
        Step::progress(progress)
    }
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
    /// `closed`, `io_error` (without `--upstream-ping`), `client_error` or `upstream_error`
    /// (with it), `register_failed`, or `set_failed` (the set's task is gone).
    pub reason: &'static str,
}

/// Copies both ways until both directions end or one side fails: the two sockets move to
/// `edge`'s epoll set for the tunnel's life, which copies them (`register_failed` when
/// there is no set, or it refuses them); with `ping`, frames are followed and the client
/// is pinged when quiet for that long. This task only waits for the end.
pub async fn pump(
    edge: io::Result<Arc<Edge>>,
    client: Async<TcpStream>,
    upstream: Async<TcpStream>,
    size: usize,
    ping: Option<Duration>,
) -> Ended {
    match edge.and_then(|e| e.copy(client, upstream, size, ping)) {
        Ok((finish, _registered)) => future::poll_fn(|cx| finish.poll(cx)).await,
        Err(_) => Ended {
            up: 0,
            down: 0,
            pings: 0,
            reason: "register_failed",
        },
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
