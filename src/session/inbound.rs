//! What a session does with each message a client sends before it is dispatched: count it,
//! log it when `--log-messages` asks, and hold it to `--max-messages-per-second`. The same
//! for both transports.

use super::{End, Session, SessionCtx, Stats};
use crate::frame::Kind;
use crate::hub::Protocol;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Counts one packet from a client, logs it when `--log-messages` asks, and takes a token
/// from the rate limit. Engine.IO's own packets (pong `3`, ping `2`, noop `6`) are not
/// messages: they are neither counted nor limited.
pub(super) fn account(
    ctx: &SessionCtx,
    stats: &mut Stats,
    bucket: &mut TokenBucket,
    who: &Session<'_>,
    kind: Kind,
    payload: &[u8],
) -> Result<(), End> {
    if who.protocol == Protocol::SocketIo && payload.first() != Some(&b'4') {
        return Ok(());
    }
    stats.msgs_in += 1;
    ctx.metrics.messages_in.fetch_add(1, Relaxed);
    ctx.metrics
        .bytes_in
        .fetch_add(payload.len() as u64, Relaxed);
    if !bucket.take(Instant::now()) {
        return Err(End::RateLimited);
    }
    if ctx.cfg.log_messages {
        crate::info!(
            "message",
            conn = who.peer.conn,
            client = who.peer.client,
            room = who.room,
            bytes = payload.len(),
            text = Printable(kind, payload)
        );
    }
    Ok(())
}

/// A per-connection token bucket holding one second's worth of messages, refilled
/// continuously. A rate of 0 means no limit.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: u32,
    /// Tokens in thousandths, so that refills need no floating point.
    milli: u64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: u32) -> Self {
        TokenBucket {
            rate,
            milli: u64::from(rate) * 1000,
            last: Instant::now(),
        }
    }

    /// Takes one token; false when none is left.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let cap = u64::from(self.rate) * 1000;
        let elapsed_us = now.saturating_duration_since(self.last).as_micros() as u64;
        // rate tokens per second = rate * 1000 milli-tokens per 1e6 us.
        let refill = elapsed_us.saturating_mul(u64::from(self.rate)) / 1000;
        if refill > 0 {
            self.milli = (self.milli + refill).min(cap);
            self.last = now;
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// A message for the log: text as is (escaped by the logger), binary as its length.
struct Printable<'a>(Kind, &'a [u8]);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Kind::Text => f.write_str(std::str::from_utf8(self.1).unwrap_or("")),
            Kind::Binary => write!(f, "<{} binary bytes>", self.1.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_a_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10);
        b.last = t0;
        assert!((0..10).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // Long idle refills to the cap, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| b.take(t2)).count(), 10);
        let mut off = TokenBucket::new(0);
        assert!((0..10_000).all(|_| off.take(t0)));
    }
}
