//! Who may come in: the session permits (`--max-connections`, `--max-connections-per-ip`),
//! the draining flag, and the connection numbers of log lines. A [`SessionPermit`] is an
//! RAII guard: it counts a session in the open gauge and in its address's count until it is
//! dropped, on every exit path, and the drain waits for the last one (mini-redis's
//! `shutdown_complete`).
//!
//! Shared state only: it holds no socket and runs no task, so every stage, the sessions
//! included, can depend on it.

use crate::config::LimitsConfig;
use crate::lock;
use crate::metrics::{Family, Metrics};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Admission and the drain.
#[derive(Debug)]
pub struct Admission {
    limits: LimitsConfig,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    next_conn: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Each permit holds a clone; the drain takes this one away and waits for the channel to
    /// close, which it does when the last permit is dropped. `None` once the drain has
    /// begun: no more admissions.
    permits: Mutex<Option<async_channel::Sender<()>>>,
    all_dropped: async_channel::Receiver<()>,
    /// Dropped by [`Admission::start_draining`]: [`Admission::drained`] waiters wake up then.
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
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    _alive: async_channel::Sender<()>,
}

impl Admission {
    /// Admission under `limits`, counting into `metrics`.
    pub fn new(limits: LimitsConfig, metrics: Arc<Metrics>) -> Arc<Admission> {
        let (tx, rx) = async_channel::bounded(1);
        let (drain_tx, drain_rx) = async_channel::bounded(1);
        Arc::new(Admission {
            limits,
            metrics,
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            per_ip: Mutex::new(HashMap::new()),
            permits: Mutex::new(Some(tx)),
            all_dropped: rx,
            drain_tx: Mutex::new(Some(drain_tx)),
            drain_rx,
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

    /// Starts the drain: `/healthz` answers 503 from now on, and [`Admission::drained`]
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

    /// Admits one more session for `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SessionPermit, Refusal> {
        let Some(alive) = lock::mutex(&self.permits).clone() else {
            self.metrics
                .count(Family::Refused, Refusal::Draining.as_str());
            return Err(Refusal::Draining);
        };
        let open = &self.metrics.open;
        if open.fetch_add(1, Ordering::Relaxed) >= self.limits.max_connections as u64 {
            open.fetch_sub(1, Ordering::Relaxed);
            self.metrics
                .count(Family::Refused, Refusal::MaxConnections.as_str());
            return Err(Refusal::MaxConnections);
        }
        let mut permit = SessionPermit {
            admission: self.clone(),
            ip: None,
            _alive: alive,
        };
        if self.limits.max_connections_per_ip > 0 {
            let mut map = lock::mutex(&self.per_ip);
            let n = map.entry(ip).or_insert(0);
            if *n as usize >= self.limits.max_connections_per_ip {
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
        let a = &self.admission;
        a.metrics.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = lock::mutex(&a.per_ip);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_down_on_drop_and_the_drain_refuses_later_ones() {
        let limits = LimitsConfig {
            max_connections: 2,
            max_connections_per_ip: 1,
            ..LimitsConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let a = Admission::new(limits, metrics.clone());
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let p1 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refusal::PerIp);
        let p2 = a.admit(y).unwrap();
        assert_eq!(
            a.admit("192.0.2.3".parse().unwrap()).unwrap_err(),
            Refusal::MaxConnections
        );
        assert_eq!(metrics.open.load(Ordering::Relaxed), 2);
        drop(p1);
        assert_eq!(metrics.open.load(Ordering::Relaxed), 1);
        let p3 = a.admit(x).unwrap();
        smol::block_on(async {
            let mut waiting = std::pin::pin!(a.last_permit_dropped());
            let first = futures_lite::future::poll_once(&mut waiting).await;
            assert!(first.is_none(), "two permits are still held");
            assert_eq!(a.admit(y).unwrap_err(), Refusal::Draining);
            drop((p2, p3));
            waiting.await;
        });
        assert_eq!(metrics.open.load(Ordering::Relaxed), 0);
    }
}
