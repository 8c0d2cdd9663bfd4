//! Counters and gauges, rendered in the Prometheus text format on the admin listener.
//!
//! Hot-path counters (messages, bytes) are plain atomics added once per message or per
//! publish, never per member. Rare, labelled events (refusals, errors, close reasons) go
//! through a small locked table keyed by `&'static str` labels, which only grows by the number
//! of distinct labels.

use crate::lock;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// All of the gateway's numbers.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted by the listener (before any check).
    pub accepted: AtomicU64,
    /// WebSocket sessions open now.
    pub open: AtomicU64,
    /// Messages received from clients.
    pub messages_in: AtomicU64,
    /// Bytes of message payload received from clients.
    pub bytes_in: AtomicU64,
    /// Frames queued for delivery (one per member per publish).
    pub messages_out: AtomicU64,
    /// Bytes of frames queued for delivery.
    pub bytes_out: AtomicU64,
    /// Of `messages_out`, frames the publisher took to send inline (`--inline-gap`).
    pub messages_inline: AtomicU64,
    /// Members evicted because their outbox was full.
    pub evictions: AtomicU64,
    /// Pings sent.
    pub pings: AtomicU64,
    /// Sessions closed for not answering a ping in time.
    pub pong_timeouts: AtomicU64,
    /// Closing connections that had not flushed within `--close-timeout` and were reset
    /// (`SO_LINGER` 0) to free their kernel memory at once.
    pub close_aborts: AtomicU64,
    /// `--upstream` WebSocket tunnels open now.
    pub tunnels_open: AtomicU64,
    /// Socket.IO sessions on a WebSocket open now (opened there or upgraded).
    pub sio_websocket_open: AtomicU64,
    /// Bytes passed to the upstream (request bodies, tunnel traffic up).
    pub upstream_bytes_out: AtomicU64,
    /// Bytes passed from the upstream (response bodies, tunnel traffic down).
    pub upstream_bytes_in: AtomicU64,
    /// Connections to the upstream that could not be made.
    pub upstream_connect_failures: AtomicU64,
    /// Socket.IO sessions moved from polling to a WebSocket.
    pub sio_upgrades: AtomicU64,
    /// Connections passed to the instance that owns their polling session.
    pub peer_forwards: AtomicU64,
    /// Messages published through the API (`POST /publish/{room}`).
    pub api_publishes: AtomicU64,
    /// Messages sent again to clients that resumed (Socket.IO recovery, raw `?since=`).
    pub replayed: AtomicU64,
    labelled: Mutex<Vec<(Family, &'static str, u64)>>,
}

/// Labelled counter families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Sessions closed, by reason.
    Closed,
    /// Connections or upgrades refused by a limit, by limit.
    Refused,
    /// PROXY header errors, by reason.
    ProxyError,
    /// Upgrade refusals, by reason.
    HandshakeReject,
    /// HTTP requests refused before routing or by route, by reason.
    HttpError,
    /// `accept(2)` failures, by errno (`emfile`, `enfile`, `enobufs`, `enomem`, `other`).
    AcceptError,
    /// Responses from `--upstream`, by status class.
    UpstreamResponse,
    /// Proxied requests that failed on the upstream's side, by reason.
    UpstreamError,
    /// Socket.IO sessions opened, by the transport they opened on.
    SioTransport,
    /// Sessions refused for their token, by reason (`--jwt-secret-file`).
    AuthRefused,
    /// Publish API requests refused, by reason.
    ApiRefused,
    /// Resumes (Socket.IO recovery, raw `?since=`), by result: `recovered`, `too_old`,
    /// `unknown`, `epoch`, `off`.
    Recovery,
}

impl Family {
    fn name(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Family::Closed => (
                "wsgate_connections_closed_total",
                "reason",
                "WebSocket sessions closed, by reason.",
            ),
            Family::Refused => (
                "wsgate_connections_refused_total",
                "limit",
                "Connections or upgrades refused by a limit.",
            ),
            Family::ProxyError => (
                "wsgate_proxy_header_errors_total",
                "reason",
                "PROXY protocol headers refused, by reason.",
            ),
            Family::HandshakeReject => (
                "wsgate_handshake_rejects_total",
                "reason",
                "WebSocket upgrades refused, by reason.",
            ),
            Family::HttpError => (
                "wsgate_http_errors_total",
                "reason",
                "Plain HTTP requests answered with an error status, by reason.",
            ),
            Family::AcceptError => (
                "wsgate_accept_errors_total",
                "reason",
                "accept(2) failures (each followed by a short backoff), by errno.",
            ),
            Family::UpstreamResponse => (
                "wsgate_upstream_responses_total",
                "class",
                "Responses from the upstream passed on, by status class.",
            ),
            Family::UpstreamError => (
                "wsgate_upstream_errors_total",
                "reason",
                "Proxied requests answered 502 or 504, by reason.",
            ),
            Family::ApiRefused => (
                "wsgate_api_refused_total",
                "reason",
                "Publish API requests refused (401, 400, 413, ...), by reason.",
            ),
            Family::AuthRefused => (
                "wsgate_auth_refused_total",
                "reason",
                "Sessions refused for their token (401, 403, or Socket.IO connect_error), by reason.",
            ),
            Family::SioTransport => (
                "wsgate_socketio_sessions_total",
                "transport",
                "Socket.IO sessions opened, by the transport they opened on.",
            ),
            Family::Recovery => (
                "wsgate_recoveries_total",
                "result",
                "Clients that asked to resume (Socket.IO recovery, raw ?since=), by result.",
            ),
        }
    }
}

const FAMILIES: [Family; 12] = [
    Family::Closed,
    Family::Refused,
    Family::ProxyError,
    Family::HandshakeReject,
    Family::HttpError,
    Family::AcceptError,
    Family::UpstreamResponse,
    Family::UpstreamError,
    Family::SioTransport,
    Family::AuthRefused,
    Family::ApiRefused,
    Family::Recovery,
];

impl Metrics {
    /// Adds one to `family{label}`.
    pub fn count(&self, family: Family, label: &'static str) {
        let mut t = lock::mutex(&self.labelled);
        match t.iter_mut().find(|(f, l, _)| *f == family && *l == label) {
            Some(entry) => entry.2 += 1,
            None => t.push((family, label, 1)),
        }
    }

    /// Counts one resume by its result, and the messages it replayed.
    pub fn recovery(&self, result: &'static str, replayed: usize) {
        self.count(Family::Recovery, result);
        self.replayed.fetch_add(replayed as u64, Relaxed);
    }

    /// Every label of `family` counted so far, with its value.
    pub fn family(&self, family: Family) -> Vec<(&'static str, u64)> {
        let t = lock::mutex(&self.labelled);
        t.iter()
            .filter(|(f, _, _)| *f == family)
            .map(|(_, l, v)| (*l, *v))
            .collect()
    }

    /// The value of `family{label}` (0 if never counted).
    pub fn get(&self, family: Family, label: &str) -> u64 {
        let t = lock::mutex(&self.labelled);
        t.iter()
            .find(|(f, l, _)| *f == family && *l == label)
            .map_or(0, |e| e.2)
    }

    /// Appends the history's gauges and the replay counter: `entries` and `bytes` held by
    /// every room's log, `sessions` resumable Socket.IO sessions known.
    pub fn render_history(&self, out: &mut String, entries: usize, bytes: usize, sessions: usize) {
        let mut w = Text(out);
        w.gauge(
            "wsgate_history_entries",
            "Messages kept for recovery, all rooms together.",
            entries as u64,
        );
        w.gauge(
            "wsgate_history_bytes",
            "Bytes of messages kept for recovery (capped by --history-memory).",
            bytes as u64,
        );
        w.gauge(
            "wsgate_recovery_sessions",
            "Socket.IO sessions that may be recovered (connected, or gone within the window).",
            sessions as u64,
        );
        w.counter(
            "wsgate_messages_replayed_total",
            "Messages sent again to clients that resumed.",
            self.replayed.load(Relaxed),
        );
    }

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    /// `rooms`, `polling` (sessions on the polling transport) and `draining` are read from
    /// their owners at render time.
    pub fn render(&self, rooms: usize, polling: usize, draining: bool) -> String {
        let mut out = String::with_capacity(4096);
        let mut w = Text(&mut out);
        w.gauge(
            "wsgate_connections_open",
            "WebSocket sessions open now.",
            self.open.load(Relaxed),
        );
        w.gauge(
            "wsgate_rooms",
            "Rooms with at least one member.",
            rooms as u64,
        );
        w.gauge(
            "wsgate_socketio_polling_sessions",
            "Socket.IO sessions on the polling transport now (counted in wsgate_connections_open too).",
            polling as u64,
        );
        w.gauge(
            "wsgate_socketio_websocket_sessions",
            "Socket.IO sessions on a WebSocket now (counted in wsgate_connections_open too).",
            self.sio_websocket_open.load(Relaxed),
        );
        w.gauge(
            "wsgate_draining",
            "1 while shutting down (healthz answers 503).",
            u64::from(draining),
        );
        w.gauge(
            "wsgate_upstream_tunnels_open",
            "WebSocket tunnels to --upstream open now.",
            self.tunnels_open.load(Relaxed),
        );
        let counters: [(&str, &str, &AtomicU64); 16] = [
            (
                "wsgate_connections_accepted_total",
                "TCP connections accepted.",
                &self.accepted,
            ),
            (
                "wsgate_messages_in_total",
                "Messages received from clients.",
                &self.messages_in,
            ),
            (
                "wsgate_bytes_in_total",
                "Message payload bytes received from clients.",
                &self.bytes_in,
            ),
            (
                "wsgate_messages_out_total",
                "Frames queued to clients (one per member per publish).",
                &self.messages_out,
            ),
            (
                "wsgate_bytes_out_total",
                "Frame bytes queued to clients.",
                &self.bytes_out,
            ),
            (
                "wsgate_messages_inline_total",
                "Of the frames queued to clients, those the publisher sent itself to an idle session's socket (--inline-gap).",
                &self.messages_inline,
            ),
            (
                "wsgate_slow_consumer_evictions_total",
                "Clients closed because their outbox was full.",
                &self.evictions,
            ),
            (
                "wsgate_pings_sent_total",
                "WebSocket pings sent.",
                &self.pings,
            ),
            (
                "wsgate_pong_timeouts_total",
                "Clients closed for not answering a ping.",
                &self.pong_timeouts,
            ),
            (
                "wsgate_upstream_bytes_out_total",
                "Bytes passed to the upstream.",
                &self.upstream_bytes_out,
            ),
            (
                "wsgate_upstream_bytes_in_total",
                "Bytes passed from the upstream.",
                &self.upstream_bytes_in,
            ),
            (
                "wsgate_upstream_connect_failures_total",
                "Connections to the upstream that could not be made.",
                &self.upstream_connect_failures,
            ),
            (
                "wsgate_socketio_upgrades_total",
                "Socket.IO sessions moved from polling to a WebSocket.",
                &self.sio_upgrades,
            ),
            (
                "wsgate_peer_forwards_total",
                "Connections passed to the instance that owns their polling session.",
                &self.peer_forwards,
            ),
            (
                "wsgate_api_publishes_total",
                "Messages published through the API (POST /publish/{room}).",
                &self.api_publishes,
            ),
            (
                "wsgate_close_aborts_total",
                "Closing connections not flushed within --close-timeout, reset to free their buffers.",
                &self.close_aborts,
            ),
        ];
        for (name, help, v) in counters {
            w.counter(name, help, v.load(Relaxed));
        }
        let t = lock::mutex(&self.labelled);
        for fam in FAMILIES {
            let (name, label, help) = fam.name();
            let values = t
                .iter()
                .filter(|(f, _, _)| *f == fam)
                .map(|(_, l, v)| (*l, *v));
            w.labelled(name, "counter", help, label, values);
        }
        drop(t);
        out
    }
}

/// The one writer of the Prometheus text format: each metric with its `# HELP` and `# TYPE`.
#[derive(Debug)]
pub struct Text<'a>(pub &'a mut String);

impl Text<'_> {
    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.one(name, "gauge", help, v);
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.one(name, "counter", help, v);
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }

    /// A family of one label: `name{label="value"} v` per entry (the header even when empty).
    pub fn labelled<'v>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'v str, u64)>,
    ) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (l, v) in values {
            let _ = writeln!(self.0, "{name}{{{label}=\"{l}\"}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.messages_in.fetch_add(3, Relaxed);
        m.count(Family::Closed, "eof");
        m.count(Family::Closed, "eof");
        m.count(Family::Refused, "max_connections");
        let text = m.render(2, 0, false);
        assert!(
            text.contains("# TYPE wsgate_messages_in_total counter\nwsgate_messages_in_total 3\n")
        );
        assert!(text.contains("wsgate_rooms 2\n"));
        assert!(text.contains("wsgate_connections_closed_total{reason=\"eof\"} 2\n"));
        assert!(text.contains("wsgate_connections_refused_total{limit=\"max_connections\"} 1\n"));
        assert_eq!(m.get(Family::Closed, "eof"), 2);
        // Every sample line is `name[{labels}] value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{l}");
            assert!(name.starts_with("wsgate_"), "{l}");
        }
    }
}
