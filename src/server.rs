//! The accept loop and the drain sequence.
//!
//! ```text
//! run: accept ─> a routes::serve (or upstream::serve) task per connection, until SIGTERM or SIGINT
//! SIGTERM: healthz 503 ─> drain_delay ─> stop accepting ─> (--redis) sessions saved in Redis
//!          ─> Close 1001 to every member
//!          ─> wait for the last session permit (at most shutdown_timeout) ─> exit 0
//! SIGINT, or a second SIGTERM at any point: exit at once
//! ```

use crate::gateway::Gateway;
use crate::metrics::Family;
use crate::{error, info, routes, upstream};
use futures_lite::{FutureExt, Stream, StreamExt};
use smol::{Async, Timer};
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pause after an accept error such as EMFILE, so a full fd table does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one `accept_failed` line per this long; the ones in between are counted in the
/// next line's `suppressed` (and all of them in `wsgate_accept_errors_total`).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(1);
/// File descriptors the process needs besides one per session: listeners, the backplane,
/// connections still in their prelude, stdio.
const FD_RESERVE: u64 = 64;

/// The open-files limit, as [`raise_fd_limit`] found and left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit at start.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

impl FdLimit {
    /// Whether `max_connections` sessions, plus what the process needs besides, fit.
    pub fn fits(&self, max_connections: usize) -> bool {
        (max_connections as u64).saturating_add(FD_RESERVE) <= self.soft
    }

    /// The most sessions that fit (at least 1).
    pub fn sessions(&self) -> usize {
        usize::try_from(self.soft.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime does at start: a
/// shell's soft limit may be 256 and systemd's default is 1024, far below what a gateway
/// holds, while the hard limit is what the operator allowed.
pub fn raise_fd_limit() -> FdLimit {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let before = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if before < hard {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    FdLimit { before, soft, hard }
}

/// The resource errors `accept(2)` returns when the process or the system is out of fds or
/// memory, by metric label; anything else is `other`.
fn accept_error_label(e: &std::io::Error) -> &'static str {
    use rustix::io::Errno;
    match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::MFILE) => "emfile",
        Some(Errno::NFILE) => "enfile",
        Some(Errno::NOBUFS) => "enobufs",
        Some(Errno::NOMEM) => "enomem",
        _ => "other",
    }
}

/// Logs accept errors at most once per [`ACCEPT_LOG_EVERY`], with the count of those not
/// logged since the last line.
#[derive(Debug, Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error, label: &'static str, now: Instant) {
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        error!(
            "accept_failed",
            reason = label,
            detail = e,
            suppressed = self.suppressed,
            backoff = format!("{}ms", ACCEPT_BACKOFF.as_millis())
        );
        self.last_logged = Some(now);
        self.suppressed = 0;
    }
}

/// The signals the server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Drain, then exit (a second one: exit at once).
    Term,
    /// Exit at once.
    Int,
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The drain finished; `left_open` sessions were still open at the deadline.
    Drained { left_open: u64 },
    /// A signal ended it at once.
    Now(Signal),
    /// The signal stream ended (signal handling failed).
    NoSignals,
}

/// Accepts connections until `shutdown` completes, spawning one task per connection.
pub async fn accept(
    listener: &Async<TcpListener>,
    gw: &Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let send_buffer = gw.config.socket_send_buffer;
    let mut errors = AcceptErrors::default();
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    gw.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                    let sock = stream.get_ref();
                    let _ = sock.set_nodelay(true);
                    if send_buffer > 0 {
                        let _ =
                            rustix::net::sockopt::set_socket_send_buffer_size(sock, send_buffer);
                    }
                    // One accepted connection: the routes answer it, or with `--upstream`
                    // the app does; both begin with the prelude's `read_first`. (Two task
                    // types, not one future that holds either: the task is exactly the
                    // routes' future, which a held poll keeps.)
                    if gw.config.upstream.is_some() {
                        let serve = upstream::serve(stream, peer, gw.clone());
                        gw.executor.spawn(serve).detach();
                    } else {
                        let serve = routes::serve(stream, peer, gw.clone());
                        gw.executor.spawn(serve).detach();
                    }
                }
                Err(e) => {
                    let label = accept_error_label(&e);
                    gw.metrics.count(Family::AcceptError, label);
                    errors.failed(&e, label, Instant::now());
                    Timer::after(ACCEPT_BACKOFF).await;
                }
            }
        }
    };
    accept.or(shutdown).await;
    info!("stopped_accepting");
}

/// Serves until a signal from `signals`, then drains as the module docs say.
pub async fn run(
    listener: Async<TcpListener>,
    gw: Arc<Gateway>,
    mut signals: impl Stream<Item = Signal> + Unpin + Send,
) -> Stopped {
    let (stop_accepting, accept_stopped) = async_channel::bounded::<()>(1);
    let accepting = {
        let gw2 = gw.clone();
        gw.executor.spawn(async move {
            accept(&listener, &gw2, async move {
                let _ = accept_stopped.recv().await;
            })
            .await
        })
    };
    match signals.next().await {
        Some(Signal::Term) => {}
        Some(sig) => return Stopped::Now(sig),
        None => return Stopped::NoSignals,
    }
    let shutdown = gw.config.shutdown.clone();
    gw.admission.start_draining();
    info!(
        "draining",
        drain_delay = format!("{:?}", shutdown.drain_delay),
        open = gw.metrics.open.load(Ordering::Relaxed)
    );
    let mut next_signal = async {
        match signals.next().await {
            Some(sig) => Some(sig),
            None => std::future::pending().await,
        }
    }
    .boxed();
    let delayed = async {
        Timer::after(shutdown.drain_delay).await;
        None
    }
    .or(next_signal.as_mut())
    .await;
    if let Some(sig) = delayed {
        return Stopped::Now(sig);
    }
    drop(stop_accepting);
    accepting.await;
    gw.save_sessions().await;
    gw.hub.going_away();
    let open = gw.metrics.open.load(Ordering::Relaxed);
    info!("closing_clients", code = 1001, open = open);
    let drained = async {
        gw.admission
            .last_permit_dropped()
            .or(async {
                Timer::after(shutdown.shutdown_timeout).await;
            })
            .await;
        None
    }
    .or(next_signal.as_mut())
    .await;
    if let Some(sig) = drained {
        return Stopped::Now(sig);
    }
    let left_open = gw.metrics.open.load(Ordering::Relaxed);
    info!("stopped", left_open = left_open);
    Stopped::Drained { left_open }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_at_most_once_a_second_with_a_count() {
        let e = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert_eq!(accept_error_label(&e), "emfile");
        let mut a = AcceptErrors::default();
        let t0 = Instant::now();
        a.failed(&e, "emfile", t0);
        assert_eq!((a.last_logged, a.suppressed), (Some(t0), 0));
        // 20 a second, as the backoff allows: all but the first are counted, not logged.
        for i in 1..20 {
            a.failed(&e, "emfile", t0 + Duration::from_millis(50 * i));
        }
        assert_eq!((a.last_logged, a.suppressed), (Some(t0), 19));
        let t1 = t0 + Duration::from_secs(1);
        a.failed(&e, "emfile", t1);
        assert_eq!((a.last_logged, a.suppressed), (Some(t1), 0));
        let other =
            std::io::Error::from_raw_os_error(rustix::io::Errno::CONNABORTED.raw_os_error());
        assert_eq!(accept_error_label(&other), "other");
    }

    #[test]
    fn the_fd_limit_fits_sessions_and_a_reserve() {
        let l = FdLimit {
            before: 256,
            soft: 1024,
            hard: 1024,
        };
        assert!(l.fits(960) && !l.fits(961));
    }
}
