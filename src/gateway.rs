//! The wiring: builds each component once (hub, metrics, backplane, admission, the session
//! context) from the [`Config`] and holds them for the stages that serve requests
//! (`prelude`, `routes`, `upstream`, `admin`) and for `server`. No behaviour of its own
//! but the health status. It imports the shared state below it and `session`'s context
//! type; no stage that takes a `Gateway` is imported here.

use crate::admission::Admission;
use crate::backplane::Backplane;
use crate::config::Config;
use crate::executor::Executor;
use crate::http::{self, Status};
use crate::hub::{Hub, Relay};
use crate::metrics::Metrics;
use crate::session::SessionCtx;
use crate::tunnel::edge::Edge;
use smol::Async;
use std::net::TcpStream;
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
    /// Session permits, the drain flag, connection numbers.
    pub admission: Arc<Admission>,
    /// Idle connections to `--upstream`, at most `--upstream-pool`; the last one returned is
    /// reused first.
    pub upstream_pool: Mutex<Vec<Async<TcpStream>>>,
    /// The tunnels' epoll set, made (and its task started) by the first tunnel.
    edge: Mutex<Option<Arc<Edge>>>,
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
            Backplane::new(b, max_message, &config.history)
        });
        let relay = backplane.clone().map(|b| b as Arc<dyn Relay>);
        let hub = Hub::build(
            config.session.outbox_frames,
            relay,
            metrics.clone(),
            config.history,
            config.session.inline_gap,
            Some(executor.runnable()),
        );
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
            recovery: config
                .history
                .enabled()
                .then(|| crate::session::Recovery::new(config.history.window, backplane.clone())),
        });
        let admission = Admission::new(config.limits.clone(), metrics.clone());
        Arc::new(Gateway {
            hub,
            backplane,
            config,
            executor,
            metrics,
            sessions,
            admission,
            started: std::time::Instant::now(),
            upstream_pool: Mutex::new(Vec::new()),
            edge: Mutex::new(None),
        })
    }

    /// The tunnels' epoll set ([`crate::tunnel::edge`]), one per process: one task copying
    /// every tunnel costs less CPU per message than two taking turns. It is made, and its
    /// task started, when first needed, and made anew if its task is gone (its tunnels then
    /// ended with `set_failed`); that fails only when no descriptor is left for it (the next
    /// call tries again).
    pub fn edge(&self) -> std::io::Result<Arc<Edge>> {
        let mut slot = crate::lock::mutex(&self.edge);
        if let Some(edge) = slot.as_ref().filter(|e| !e.failed()) {
            return Ok(edge.clone());
        }
        let edge = Edge::new()?;
        let run = edge.clone().run();
        self.executor
            .spawn(async move {
                let e = run.await;
                crate::error!("edge_failed", reason = e);
            })
            .detach();
        *slot = Some(edge.clone());
        Ok(edge)
    }

    /// Starts the background tasks: the backplane's connections, and the renewal of the
    /// sessions' and rooms' records in Redis every third of the recovery window.
    pub fn start(self: &Arc<Self>) {
        crate::backplane::start(&self.backplane, &self.hub, &self.executor);
        let Some(every) = self
            .sessions
            .recovery
            .as_ref()
            .and_then(|r| r.renew_every())
        else {
            return;
        };
        let gw = self.clone();
        self.executor
            .spawn(async move {
                loop {
                    smol::Timer::after(every).await;
                    if let Some(r) = &gw.sessions.recovery {
                        r.renew(&gw.hub).await;
                    }
                }
            })
            .detach();
    }

    /// At a drain, before the clients are told to go: every session's record and every
    /// room's keys get a whole window from now, and Redis has acknowledged them (within
    /// `--redis-timeout`), so the clients resume on another instance.
    pub async fn save_sessions(&self) {
        if let (Some(r), Some(bp)) = (&self.sessions.recovery, &self.backplane) {
            if bp.ordered() {
                let saved = r.renew(&self.hub).await;
                crate::info!(
                    "sessions_saved",
                    sessions = r.sessions(),
                    acknowledged = saved
                );
            }
        }
    }

    /// The next connection number (unique per process, for log lines).
    pub fn next_conn(&self) -> u64 {
        self.admission.next_conn()
    }

    /// Whether SIGTERM was received (`/healthz` answers 503).
    pub fn is_draining(&self) -> bool {
        self.admission.is_draining()
    }

    /// The health status now.
    pub fn health(&self) -> Health {
        Health {
            draining: self.is_draining(),
            backplane_up: self.backplane.as_ref().map(|b| b.is_up()),
        }
    }
}

impl Health {
    /// `/healthz`: 200 while serving, 503 once draining, so the load balancer stops sending.
    /// With `--redis` a second line says `backplane: up` or `backplane: down`; it stays 200
    /// while Redis is down, since this instance still serves its own clients. With `head`,
    /// the head only.
    pub fn response(self, head: bool) -> Vec<u8> {
        let (status, first) = if self.draining {
            (Status::Unavailable, "draining\n")
        } else {
            (Status::Ok, "ok\n")
        };
        let detail = match self.backplane_up {
            None => "",
            Some(true) => "backplane: up\n",
            Some(false) => "backplane: down\n",
        };
        let body = [first, detail].concat();
        http::response(status, "text/plain", "", body.as_bytes(), head)
    }
}
