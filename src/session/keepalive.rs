//! A session's liveness clock, pure: when the next ping is due, and when an unanswered one
//! times out. `now` is passed in, so it is tested without waiting. Both transports use it:
//! the WebSocket loop ([`super::live`]) and the polling session's keeper.

use crate::config::SessionConfig;
use std::time::Instant;

/// The ping schedule and the pong deadline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    next_ping: Instant,
    /// Set by the first unanswered ping; cleared by anything the client sends.
    pong_deadline: Option<Instant>,
}

/// What a tick asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Nothing is due.
    Idle,
    /// Send a ping now.
    Ping,
    /// The client answered nothing within `pong_timeout` of a ping: close it.
    PongTimeout,
}

impl Keepalive {
    /// A clock whose first ping is due one `ping_interval` after `now`.
    pub(crate) fn new(now: Instant, cfg: &SessionConfig) -> Keepalive {
        Keepalive {
            next_ping: now + cfg.ping_interval,
            pong_deadline: None,
        }
    }

    /// The client sent something: it is alive.
    pub(crate) fn heard(&mut self) {
        self.pong_deadline = None;
    }

    /// The pong deadline, while a ping is unanswered.
    pub(crate) fn awaiting_pong(&self) -> Option<Instant> {
        self.pong_deadline
    }

    /// What is due at `now`. A `Ping` is taken as sent: the pong deadline runs from the first
    /// unanswered ping, and the next ping is one interval away.
    pub(crate) fn tick(&mut self, now: Instant, cfg: &SessionConfig) -> Tick {
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return Tick::PongTimeout;
        }
        if now < self.next_ping {
            return Tick::Idle;
        }
        self.pong_deadline.get_or_insert(now + cfg.pong_timeout);
        self.next_ping = now + cfg.ping_interval;
        Tick::Ping
    }

    /// When the next tick is due: the next ping or the pong deadline, whichever is first.
    pub(crate) fn next_at(&self) -> Instant {
        self.pong_deadline
            .map_or(self.next_ping, |d| d.min(self.next_ping))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pings_on_schedule_and_times_out_only_when_nothing_is_heard() {
        let cfg = SessionConfig {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            ..SessionConfig::default()
        };
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut k = Keepalive::new(t0, &cfg);
        assert_eq!(k.next_at(), s(25));
        assert_eq!(k.tick(s(24), &cfg), Tick::Idle);
        assert_eq!(k.tick(s(25), &cfg), Tick::Ping);
        // The pong deadline comes before the next ping.
        assert_eq!(k.next_at(), s(35));
        assert_eq!(k.awaiting_pong(), Some(s(35)));
        k.heard();
        assert_eq!(k.awaiting_pong(), None);
        assert_eq!(k.next_at(), s(50));
        assert_eq!(k.tick(s(40), &cfg), Tick::Idle);
        assert_eq!(k.tick(s(50), &cfg), Tick::Ping);
        // Unanswered: the deadline runs from the first ping, not from a later one.
        assert_eq!(k.tick(s(59), &cfg), Tick::Idle);
        assert_eq!(k.tick(s(60), &cfg), Tick::PongTimeout);
    }
}
