//! The accept loop and the drain sequence.
//!
//! ```text
//! run: accept ─> prelude::serve task per connection, until SIGTERM or SIGINT
//! SIGTERM: healthz 503 ─> drain_delay ─> stop accepting ─> Close 1001 to every member
//!          ─> wait for the last session permit (at most shutdown_timeout) ─> exit 0
//! SIGINT, or a second SIGTERM at any point: exit at once
//! ```

use crate::gateway::Gateway;
use crate::{error, info, prelude};
use futures_lite::{FutureExt, Stream, StreamExt};
use smol::{Async, Timer};
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Pause after an accept error such as EMFILE, so a full fd table does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    gw.metrics.accepted.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.get_ref().set_nodelay(true);
                    gw.executor
                        .spawn(prelude::serve(stream, peer, gw.clone()))
                        .detach();
                }
                Err(e) => {
                    error!("accept_failed", reason = e);
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
    gw.start_draining();
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
    gw.hub.going_away();
    let open = gw.metrics.open.load(Ordering::Relaxed);
    info!("closing_clients", code = 1001, open = open);
    let drained = async {
        gw.last_permit_dropped()
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
