//! The state every connection shares, and nothing else: the components (hub, metrics,
//! backplane, session context), admission with its permits, the draining flag and the health
//! status. Behaviour lives with the stages that use it: the accept loop and drain in
//! `server`, the prelude in `prelude`, sessions in `session`. Nothing here imports them
//! (but the session context's type), so every stage can depend on this one.

use crate::backplane::Backplane;
use crate::config::Config;
use crate::executor::Executor;
use crate::hub::{Hub, Relay};
use crate::lock;
use crate::metrics::{Family, Metrics};
use crate::session::SessionCtx;
use smol::Async;
use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    pub metrics: Arc<Metrics>,
    /// The Redis backplane when `--redis` is set; its tasks start with `backplane::start`.
    pub backplane: Option<Arc<Backplane>>,
    /// What a session needs, handed to each one.
    pub sessions: Arc<SessionCtx>,
    /// When this gateway was made (the status page's uptime).
    pub started: std::time::Instant,
    draining: AtomicBool,
    next_conn: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Idle connections to `--upstream`, at most `--upstream-pool`; the last one returned is
    /// reused first.
    pub upstream_pool: Mutex<Vec<Async<TcpStream>>>,
    /// Each permit holds a clone; the drain takes this one away and waits for the channel to
    /// close, which it does when the last permit is dropped (mini-redis's
    /// `shutdown_complete`). `None` once the drain has begun: no more admissions.
    permits: Mutex<Option<async_channel::Sender<()>>>,
    all_dropped: async_channel::Receiver<()>,
    /// Dropped by [`Gateway::start_draining`]: [`Gateway::drained`] waiters wake up then.
    drain_tx: Mutex<Option<async_channel::Sender<()>>>,
    drain_rx: async_channel::Receiver<()>,
}

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` reached: 503.
    MaxConnections,
    /// `--max-connections-per-ip` reached for this client: 429.
    PerIp,
    /// The drain has begun: 503.
    Draining,
}

impl Refusal {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
            Refusal::Draining => "draining",
        }
    }
}

/// An admitted session: counted in the open gauge and in its address's count until dropped,
/// on every exit path.
#[derive(Debug)]
pub struct SessionPermit {
    gw: Arc<Gateway>,
    ip: Option<IpAddr>,
    _alive: async_channel::Sender<()>,
}

/// What `/healthz` reports (the prelude and the admin listener render it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// SIGTERM was received: answer 503 so the load balancer stops sending.
    pub draining: bool,
    /// With `--redis`: whether both Redis connections are up.
    pub backplane_up: Option<bool>,
}

impl Gateway {
    /// Shared state for one listener.
    pub fn new(config: Config, executor: Executor) -> Arc<Gateway> {
        let metrics = Arc::new(Metrics::default());
        let backplane = config.backplane.clone().map(|b| {
            let max_message = config.session.max_message_bytes;
            Backplane::new(b, max_message)
        });
        let relay = backplane.clone().map(|b| b as Arc<dyn Relay>);
        let hub = Hub::with(config.session.outbox_frames, relay, metrics.clone());
        let sessions = Arc::new(SessionCtx {
            cfg: config.session.clone(),
            max_messages_per_second: config.limits.max_messages_per_second,
            hub: hub.clone(),
            metrics: metrics.clone(),
            polling: Default::default(),
            auth: crate::auth::Auth::new(&config.auth),
            sid_prefix: backplane
                .as_ref()
                .map_or(String::new(), |b| b.sid_prefix().to_owned()),
        });
        let (tx, rx) = async_channel::bounded(1);
        let (drain_tx, drain_rx) = async_channel::bounded(1);
        Arc::new(Gateway {
            drain_tx: Mutex::new(Some(drain_tx)),
            drain_rx,
            hub,
            backplane,
            config,
            executor,
            metrics,
            sessions,
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            started: std::time::Instant::now(),
            per_ip: Mutex::new(HashMap::new()),
            upstream_pool: Mutex::new(Vec::new()),
            permits: Mutex::new(Some(tx)),
            all_dropped: rx,
        })
    }

    /// The next connection number (unique per process, for log lines).
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether SIGTERM was received (`/healthz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain: `/healthz` answers 503 from now on, and [`Gateway::drained`]
    /// completes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        drop(lock::mutex(&self.drain_tx).take());
    }

    /// Completes once the drain has started (at once if it has): what an idle kept-alive
    /// connection waits on besides its next request.
    pub async fn drained(&self) {
        // Nothing is ever sent: `recv` ends with `Closed` when the sender is dropped.
        let _ = self.drain_rx.recv().await;
    }

    /// The health status now.
    pub fn health(&self) -> Health {
        Health {
            draining: self.is_draining(),
            backplane_up: self.backplane.as_ref().map(|b| b.is_up()),
        }
    }

    /// Admits one more session for `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SessionPermit, Refusal> {
        let Some(alive) = lock::mutex(&self.permits).clone() else {
            self.metrics
                .count(Family::Refused, Refusal::Draining.as_str());
            return Err(Refusal::Draining);
        };
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
            _alive: alive,
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

    /// Refuses every later admission and completes when the last permit is dropped.
    pub async fn last_permit_dropped(&self) {
        drop(lock::mutex(&self.permits).take());
        // Nothing is ever sent: `recv` ends with `Closed` once every sender is gone.
        let _ = self.all_dropped.recv().await;
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
