//! The accept loop and the state every connection shares.

use crate::config::Config;
use crate::hub::Hub;
use crate::{conn, error, info};
use futures_lite::FutureExt;
use smol::{Async, Executor, Timer};
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pause after an accept error such as EMFILE, so a full fd table does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection shares.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration the process runs with.
    pub config: Config,
    /// Rooms and members.
    pub hub: Arc<Hub>,
    /// Where connection and session tasks run.
    pub executor: Arc<Executor<'static>>,
    next_conn: AtomicU64,
}

impl Gateway {
    /// Shared state for one listener.
    pub fn new(config: Config, executor: Arc<Executor<'static>>) -> Arc<Gateway> {
        Arc::new(Gateway {
            hub: Hub::new(config.session.outbox_frames),
            config,
            executor,
            next_conn: AtomicU64::new(1),
        })
    }

    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Accepts connections until `shutdown` completes, spawning one task per connection.
pub async fn run(
    listener: Async<TcpListener>,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.get_ref().set_nodelay(true);
                    gw.executor
                        .spawn(conn::serve(stream, peer, gw.clone()))
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
