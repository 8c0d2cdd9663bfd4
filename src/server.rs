//! The accept loop, the state every connection shares, and the permits that count sessions.

use crate::backplane::Backplane;
use crate::config::Config;
use crate::executor::Executor;
use crate::hub::{Hub, Relay};
use crate::metrics::{Family, Metrics};
use crate::{error, info, lock, prelude};
use futures_lite::FutureExt;
use smol::{Async, Timer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    pub executor: Executor,
    /// Counters and gauges.
    pub metrics: Metrics,
    /// The Redis backplane when `--redis` is set; its tasks start with
    /// [`crate::backplane::start`].
    pub backplane: Option<Arc<Backplane>>,
    draining: AtomicBool,
    next_conn: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` reached: 503.
    MaxConnections,
    /// `--max-connections-per-ip` reached for this client: 429.
    PerIp,
}

impl Refusal {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

/// An admitted session: counted in the open gauge and in its address's count until dropped,
/// on every exit path.
#[derive(Debug)]
pub struct SessionPermit {
    gw: Arc<Gateway>,
    ip: Option<IpAddr>,
}

impl Gateway {
    /// Shared state for one listener.
    pub fn new(config: Config, executor: Executor) -> Arc<Gateway> {
        let backplane = config.backplane.clone().map(Backplane::new);
        let relay = backplane.clone().map(|b| b as Arc<dyn Relay>);
        Arc::new(Gateway {
            hub: Hub::with_relay(config.session.outbox_frames, relay),
            backplane,
            config,
            executor,
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether SIGTERM was received (`/healthz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain: `/healthz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Admits one more session for `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SessionPermit, Refusal> {
        let limits = &self.config.limits;
        let open = &self.metrics.open;
        if open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections as u64 {
            open.fetch_sub(1, Ordering::Relaxed);
            self.metrics
                .count(Family::Refused, Refusal::MaxConnections.as_str());
            return Err(Refusal::MaxConnections);
        }
        let mut permit = SessionPermit {
            gw: self.clone(),
            ip: None,
        };
        if limits.max_connections_per_ip > 0 {
            let mut map = lock::mutex(&self.per_ip);
            let n = map.entry(ip).or_insert(0);
            if *n as usize >= limits.max_connections_per_ip {
                drop(map);
                self.metrics.count(Family::Refused, Refusal::PerIp.as_str());
                return Err(Refusal::PerIp);
            }
            *n += 1;
            permit.ip = Some(ip);
        }
        Ok(permit)
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.gw.metrics.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = lock::mutex(&self.gw.per_ip);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
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
