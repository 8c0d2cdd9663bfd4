//! What a fan-out message carries and how a receiver checks the stream of them. Pure.
//!
//! Payload (ASCII, padded with `x` to `--size` bytes when that is longer):
//! ```text
//! wl <step> <publisher> <seq> <sent_ns> xxxx...
//! ```
//! `sent_ns` is nanoseconds since the tool's start `Instant`: publishers and subscribers live in
//! the same process, so one monotonic clock serves both ends. `seq` counts from 0 per publisher
//! across the whole run; `step` is the index of the rate in the ladder.

/// Marks our messages; anything else (a `hi`, another client's chat) is ignored.
const MAGIC: &str = "wl ";

/// The fields of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Index of the ladder step the message was sent in.
    pub(crate) step: u32,
    /// Global publisher id.
    pub(crate) publisher: u32,
    /// The publisher's sequence number, from 0.
    pub(crate) seq: u64,
    /// Send time, nanoseconds since the tool started.
    pub(crate) sent_ns: u64,
}

impl Stamp {
    /// Writes the payload into `out` (cleared first), padded to `size` bytes.
    pub(crate) fn write(&self, size: usize, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        let _ = write!(
            out,
            "{MAGIC}{} {} {} {} ",
            self.step, self.publisher, self.seq, self.sent_ns
        );
        while out.len() < size {
            out.push('x');
        }
    }

    /// Reads a payload written by [`Stamp::write`]; `None` for anything else.
    pub(crate) fn parse(payload: &str) -> Option<Stamp> {
        let mut f = payload.strip_prefix(MAGIC)?.split(' ');
        Some(Stamp {
            step: f.next()?.parse().ok()?,
            publisher: f.next()?.parse().ok()?,
            seq: f.next()?.parse().ok()?,
            sent_ns: f.next()?.parse().ok()?,
        })
    }
}

/// How one message relates to those seen before from the same publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The next sequence number: all is well.
    InOrder,
    /// New and higher than the next expected: some are missing (lost, or still to come).
    Gap,
    /// New but lower than one already seen: it arrived out of order.
    Late,
    /// Already seen.
    Duplicate,
}

/// Per (receiver, publisher) pair: the highest sequence seen and which of the
/// [`SeqCheck::WINDOW`] below it arrived, to tell late arrivals from duplicates in O(1) memory.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SeqCheck {
    /// Highest sequence seen plus one; 0 before the first message.
    next: u64,
    /// Bit `i` set: sequence `next - 1 - i` arrived.
    window: u64,
}

impl SeqCheck {
    /// How far back duplicates are recognised; older stragglers count as [`Seen::Late`].
    pub(crate) const WINDOW: u64 = 64;

    /// Records `seq` and says how it fits.
    pub(crate) fn observe(&mut self, seq: u64) -> Seen {
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.window = if shift >= Self::WINDOW {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            let seen = if seq == self.next {
                Seen::InOrder
            } else {
                Seen::Gap
            };
            self.next = seq + 1;
            return seen;
        }
        let back = self.next - 1 - seq;
        if back >= Self::WINDOW {
            return Seen::Late;
        }
        let bit = 1u64 << back;
        if self.window & bit != 0 {
            Seen::Duplicate
        } else {
            self.window |= bit;
            Seen::Late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_pads() {
        let s = Stamp {
            step: 2,
            publisher: 7,
            seq: 12_345,
            sent_ns: 987_654_321,
        };
        let mut out = String::new();
        s.write(64, &mut out);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with("wl 2 7 12345 987654321 xxx"));
        assert_eq!(Stamp::parse(&out), Some(s));
        s.write(8, &mut out); // shorter than the fields: not truncated
        assert_eq!(out, "wl 2 7 12345 987654321 ");
        assert_eq!(Stamp::parse(&out), Some(s));
    }

    #[test]
    fn ignores_foreign_payloads() {
        for p in [
            "hello",
            "",
            "wl ",
            "wl 1 2 3",
            "wl a b c d ",
            "xwl 1 2 3 4 ",
        ] {
            assert_eq!(Stamp::parse(p), None, "{p:?}");
        }
    }

    #[test]
    fn in_order_stream() {
        let mut c = SeqCheck::default();
        for s in 0..200 {
            assert_eq!(c.observe(s), Seen::InOrder);
        }
    }

    #[test]
    fn gaps_late_arrivals_and_duplicates() {
        let mut c = SeqCheck::default();
        assert_eq!(c.observe(0), Seen::InOrder);
        assert_eq!(c.observe(3), Seen::Gap);
        assert_eq!(c.observe(1), Seen::Late);
        assert_eq!(c.observe(1), Seen::Duplicate);
        assert_eq!(c.observe(3), Seen::Duplicate);
        assert_eq!(c.observe(0), Seen::Duplicate);
        assert_eq!(c.observe(2), Seen::Late);
        assert_eq!(c.observe(4), Seen::InOrder);
        assert_eq!(c.observe(200), Seen::Gap);
        assert_eq!(c.observe(137), Seen::Late); // 63 back: still in the window
        assert_eq!(c.observe(137), Seen::Duplicate);
        assert_eq!(c.observe(136), Seen::Late); // 64 back: beyond the window
        assert_eq!(c.observe(136), Seen::Late); // cannot tell, counted late
    }

    #[test]
    fn first_message_may_be_late_starting() {
        let mut c = SeqCheck::default();
        assert_eq!(c.observe(5), Seen::Gap);
        assert_eq!(c.observe(0), Seen::Late);
    }
}
