//! A session's write side: the frames taken from its outbox, and the control frames that
//! tungstenite encoded, written with one `writev` per pass, always at frame boundaries.
//!
//! Order on the wire: the rest of a partly written frame, then control frames (Pong, Ping,
//! Close), then the queued frames. So a control frame never lands inside a data frame, and
//! every queued frame of a connection goes out in one syscall when the socket takes it.

use super::{Transport, CTRL_CAP};
use crate::frame::Frame;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::Timer;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;

/// Frames waiting for the socket, and how far the first one is written.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// Frames taken from the outbox, not yet (fully) written. Refilled only when empty, so it
    /// never holds more than one outbox's worth.
    pub(crate) out: VecDeque<Frame>,
    /// Bytes of `out[0]` already written.
    offset: usize,
    /// Frames written completely.
    pub(crate) frames_out: u64,
}

impl Writer {
    /// Whether nothing is waiting (neither frames nor `ctrl`).
    pub(crate) fn is_idle(&self, ctrl: &[u8]) -> bool {
        self.out.is_empty() && ctrl.is_empty()
    }

    /// Takes back frames queued while the socket was lent ([`crate::hub::Member::disarm`]),
    /// the first of which has `written` bytes on the wire already.
    pub(crate) fn take_back(&mut self, member: &crate::hub::Member) {
        debug_assert!(self.out.is_empty() && self.offset == 0);
        self.offset = member.disarm(&mut self.out);
    }

    /// The unwritten rest of a frame that is partly on the wire, which must be finished
    /// before anything else (a Close) may follow.
    pub(crate) fn partial(&self) -> Option<&[u8]> {
        self.out
            .front()
            .filter(|_| self.offset > 0)
            .map(|f| &f[self.offset..])
    }

    /// Writes `ctrl` and the queued frames to `w` until done or `w` blocks. Written control
    /// bytes are drained from `ctrl`.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        ctrl: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let ctrl_len = ctrl.len();
            if ctrl_len == 0 && self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            let partial = self.offset > 0;
            if partial {
                iov[0] = IoSlice::new(&self.out[0][self.offset..]);
                n = 1;
            }
            if ctrl_len > 0 {
                iov[n] = IoSlice::new(ctrl);
                n += 1;
            }
            for f in self.out.iter().skip(usize::from(partial)).take(MAX_IOV - n) {
                iov[n] = IoSlice::new(f);
                n += 1;
            }
            // One slice (the everyday case: one frame) goes out with `send`, which skips the
            // vectored path's iovec copy and VFS layer that `writev` pays in the kernel.
            let res = if n == 1 {
                Pin::new(&mut *w).poll_write(cx, &iov[0])
            } else {
                Pin::new(&mut *w).poll_write_vectored(cx, &iov[..n])
            };
            let mut written = match res {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(k)) => k,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if partial {
                let left = self.out[0].len() - self.offset;
                if written < left {
                    self.offset += written;
                    continue;
                }
                written -= left;
                self.pop();
            }
            if ctrl_len > 0 {
                let c = written.min(ctrl_len);
                ctrl.drain(..c);
                written -= c;
                if c < ctrl_len {
                    continue;
                }
            }
            while written > 0 {
                let front_left = self.out[0].len() - self.offset;
                if written >= front_left {
                    written -= front_left;
                    self.pop();
                } else {
                    self.offset += written;
                    written = 0;
                }
            }
        }
    }

    fn pop(&mut self) {
        self.offset = 0;
        self.out.pop_front();
        self.frames_out += 1;
    }
}

// ---- The control side: what tungstenite writes lands in `ctrl`, never on the socket. ----

/// The stream tungstenite runs over: reads come from the socket, writes go to `ctrl`.
#[derive(Debug)]
pub(crate) struct Io<S> {
    pub(crate) socket: S,
    pub(crate) ctrl: Vec<u8>,
    /// The last read found the socket empty (`EAGAIN`): the next one waits for the reactor
    /// to report it readable, instead of trying (and failing) again each time the task is
    /// woken to write.
    pub(crate) drained: bool,
    /// Read even so: a deadline that depends on what the client sent (the pong timeout) is
    /// due, and a pong may be in the kernel's buffer before the reactor has reported it.
    pub(crate) read_now: bool,
}

impl<S: Transport> AsyncRead for Io<S> {
    /// A session woken for its outbox writes (one `writev`) without a read that would only
    /// answer `EAGAIN`: once a read has found the socket empty, the next one waits for the
    /// reactor's readiness (no syscall). A client that keeps sending is read at once, as
    /// before, so its messages cost no extra reactor turn.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let io = &mut *self;
        if io.drained && !std::mem::take(&mut io.read_now) {
            match io.socket.poll_readable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let read = Pin::new(&mut io.socket).poll_read(cx, buf);
        // Pending: the socket was empty (and async-io registered for readability).
        io.drained = read.is_pending();
        read
    }
}

impl<S: Transport> AsyncWrite for Io<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.ctrl.len() + buf.len() > CTRL_CAP {
            return Poll::Ready(Err(io::Error::other(CtrlFull)));
        }
        self.ctrl.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The error [`Io`] returns when `ctrl` would pass [`CTRL_CAP`].
#[derive(Debug)]
pub(crate) struct CtrlFull;

impl std::fmt::Display for CtrlFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {CTRL_CAP} bytes of control frames waiting")
    }
}

impl std::error::Error for CtrlFull {}

/// Hands `msg` to tungstenite, which encodes it into `ctrl` at once: [`Io`] never blocks a
/// write, so the send completes in one poll. (Doing it without an `.await` keeps the send
/// future out of the session's state machine.)
pub(crate) fn queue<S: Transport>(
    ws: &mut WebSocketStream<Io<S>>,
    msg: Message,
) -> Result<(), WsError> {
    let mut send = std::pin::pin!(ws.send(msg));
    match send
        .as_mut()
        .poll(&mut Context::from_waker(std::task::Waker::noop()))
    {
        Poll::Ready(r) => r,
        Poll::Pending => Err(WsError::Io(io::Error::other(CtrlFull))),
    }
}

/// Finishes a partly written frame (a Close must not land inside one), writes `ctrl`, shuts
/// the write side, then reads and drops the client's bytes until EOF or the deadline.
/// Returns whether all of that happened in time (false: reset the connection).
pub(crate) async fn linger<S: Transport>(
    io: &mut Io<S>,
    partial: Option<&[u8]>,
    close_timeout: Duration,
) -> bool {
    let work = async {
        if let Some(rest) = partial {
            io.socket.write_all(rest).await?;
        }
        io.socket.write_all(&io.ctrl).await?;
        io.ctrl.clear();
        // A FIN after the Close frame.
        io.socket.shutdown_write()?;
        let mut sink = [0u8; 512];
        while io.socket.read(&mut sink).await? > 0 {}
        Ok::<bool, io::Error>(true)
    };
    work.or(async {
        Timer::after(close_timeout).await;
        Ok(false)
    })
    .await
    // A write or read error: the peer is gone (reset), nothing is left to free.
    .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{self, Kind};

    /// Takes at most `chunk` bytes per call (and only the first slice's share of them, as a
    /// real socket may), refusing every other call with `Pending` when `stutter` is set.
    struct Trickle {
        got: Vec<u8>,
        chunk: usize,
        stutter: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.stutter && self.calls % 2 == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(self.chunk);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            // Gather up to `chunk` bytes across the slices, as writev does.
            let mut flat = Vec::new();
            for b in bufs {
                flat.extend_from_slice(b);
            }
            self.as_mut().poll_write(cx, &flat)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frames() -> Vec<Frame> {
        vec![
            frame::encode(Kind::Text, b"first"),
            frame::encode(Kind::Binary, &[7u8; 300]),
            frame::encode(Kind::Text, b""),
            frame::encode(Kind::Text, b"last one"),
        ]
    }

    /// Drives `poll_write` until everything is out, adding `ctrl` once `inject_at` bytes of
    /// data are on the wire; returns the bytes written.
    fn run(chunk: usize, stutter: bool, inject_at: usize, ctrl: &[u8]) -> (Vec<u8>, Writer) {
        let mut w = Writer::default();
        w.out.extend(frames());
        let mut sink = Trickle {
            got: Vec::new(),
            chunk,
            stutter,
            calls: 0,
        };
        let mut pending_ctrl = Vec::new();
        let mut injected = false;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..100_000 {
            if !injected && sink.got.len() >= inject_at {
                pending_ctrl.extend_from_slice(ctrl);
                injected = true;
            }
            if injected && w.is_idle(&pending_ctrl) {
                return (sink.got, w);
            }
            let _ = w.poll_write(&mut sink, &mut pending_ctrl, &mut cx);
        }
        panic!("did not finish: chunk {chunk}");
    }

    #[test]
    fn partial_writes_at_every_offset_keep_frames_whole_and_in_order() {
        let data: Vec<u8> = frames().iter().flat_map(|f| f.to_vec()).collect();
        let ping = [0x89u8, 0x00];
        let boundaries: Vec<usize> = frames()
            .iter()
            .scan(0, |acc, f| {
                *acc += f.len();
                Some(*acc)
            })
            .collect();
        for chunk in 1..=data.len() + 2 {
            for stutter in [false, true] {
                for inject_at in [0, 1, 3, 7, 8, 100, 309, data.len()] {
                    let (got, w) = run(chunk, stutter, inject_at, &ping);
                    assert_eq!(w.frames_out, 4, "chunk {chunk}");
                    assert_eq!(got.len(), data.len() + ping.len());
                    // The ping sits at a frame boundary, and the rest is the data in order.
                    let at = (0..=data.len())
                        .find(|&i| {
                            got[i..].starts_with(&ping) && {
                                let mut rest = got[..i].to_vec();
                                rest.extend_from_slice(&got[i + ping.len()..]);
                                rest == data
                            }
                        })
                        .unwrap_or_else(|| panic!("chunk {chunk} inject {inject_at}: {got:?}"));
                    assert!(
                        at == 0 || boundaries.contains(&at),
                        "chunk {chunk} inject {inject_at}: ping at {at}, inside a frame"
                    );
                }
            }
        }
    }

    #[test]
    fn partial_is_the_unwritten_rest_of_the_front_frame() {
        let mut w = Writer::default();
        w.out.extend(frames());
        assert_eq!(w.partial(), None);
        let mut sink = Trickle {
            got: Vec::new(),
            chunk: 3,
            stutter: true,
            calls: 0, // the first call writes, the second is refused
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut ctrl = Vec::new();
        assert!(w.poll_write(&mut sink, &mut ctrl, &mut cx).is_pending());
        assert_eq!(sink.got.len(), 3);
        assert_eq!(w.partial(), Some(&frames()[0][3..]));
        assert_eq!(w.frames_out, 0);
    }

    #[test]
    fn a_write_of_zero_bytes_is_an_error() {
        let mut w = Writer::default();
        w.out.push_back(frame::encode(Kind::Text, b"x"));
        let mut sink = Trickle {
            got: Vec::new(),
            chunk: 0,
            stutter: false,
            calls: 0,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let r = w.poll_write(&mut sink, &mut Vec::new(), &mut cx);
        assert!(matches!(r, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WriteZero));
    }

    /// Inline delivery over a real loopback socket whose client does not read: the publish
    /// sends what the socket takes of a big frame, gives the socket back and wakes the session;
    /// the session takes the frame back with its written bytes and finishes it before its own
    /// control frame. The client gets the frame once, whole, then the control frame.
    #[test]
    fn a_frame_sent_inline_in_part_is_finished_first_by_the_session() {
        use crate::hub::{Hub, Protocol, Sink};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&server, 4096).unwrap();
        let server = Arc::new(smol::Async::new(server).unwrap());
        let sink: Arc<dyn Sink> = server.clone();

        let hub = Hub::build(
            8,
            None,
            Arc::default(),
            crate::config::HistoryConfig {
                window: Duration::ZERO,
                ..Default::default()
            },
            Duration::from_millis(1),
            None,
        );
        let m = hub.join("r", Protocol::Raw);
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        // The session is idle: it waits on its outbox and lends the socket.
        assert!(m.member().poll_outbox(&mut cx, None).is_pending());
        assert!(m.member().arm(&sink));

        let payload = vec![b'x'; 1 << 20];
        let sent = m.publish(Kind::Binary, &payload);
        assert_eq!((sent.delivered, sent.inline), (1, 1));
        // The socket took part of it: the session was woken to finish.
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(m.member().sent_inline(), 0);

        let mut w = Writer::default();
        w.take_back(m.member());
        assert_eq!(w.out.len(), 1);
        assert!(w.offset > 0 && w.offset < w.out[0].len(), "{}", w.offset);
        let expected: Vec<u8> = w.out[0].iter().copied().chain([0x8A, 0x00]).collect();
        // A Pong of the session's own, queued meanwhile.
        let mut ctrl = vec![0x8A, 0x00];

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut client, &mut got).unwrap();
            got
        });
        let mut socket = &*server;
        smol::block_on(futures_lite::future::poll_fn(|cx| {
            w.poll_write(&mut socket, &mut ctrl, cx)
        }))
        .unwrap();
        assert!(w.is_idle(&ctrl));
        server
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        assert!(
            reader.join().unwrap() == expected,
            "the client got other bytes"
        );
    }
}
