//! Message history for recovery, pure: offsets, one room's bounded log, and the table of
//! resumable Socket.IO sessions. No rooms, no protocol, no clock: `now` is passed in.
//!
//! ```text
//! publish ─> Ring::push (seq = top + 1) ─> entry kept while within count, bytes and age
//! resume(since) ─> Ring::since: every entry after `since`, or a Gap (never a part of one)
//! ```
//!
//! * An [`Offset`] is `<epoch>-<seq>`: the room log's epoch (random, new whenever the log is
//!   new: a restart, a log that expired) and the message's place in it. An offset of another
//!   epoch never matches, so a restart fails recovery cleanly instead of replaying the wrong
//!   messages.
//! * Seq 0 is "before the first message": a room where nothing was published yet still has
//!   an offset to hand out.
//! * A client whose offset is the room's newest has missed nothing, even when the entry it
//!   names has aged out (Socket.IO issue 5282).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Longest offset string accepted (`<16 hex>-<20 digits>`).
pub const MAX_OFFSET_LEN: usize = 40;

/// A fresh epoch for a new log: random, so that an offset from before a restart never
/// matches.
pub fn new_epoch() -> u64 {
    fastrand::u64(1..1 << 48)
}

/// A position in one room's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Offset {
    /// The log's epoch.
    pub epoch: u64,
    /// The message's number in it; 0 before the first.
    pub seq: u64,
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.epoch, self.seq)
    }
}

/// Why a string is not an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadOffset;

impl fmt::Display for BadOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an offset is <hex epoch>-<decimal seq>")
    }
}

impl std::str::FromStr for Offset {
    type Err = BadOffset;
    fn from_str(s: &str) -> Result<Offset, BadOffset> {
        if s.len() > MAX_OFFSET_LEN {
            return Err(BadOffset);
        }
        let (e, q) = s.split_once('-').ok_or(BadOffset)?;
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if e.is_empty() || e.len() > 16 || !e.bytes().all(hex) {
            return Err(BadOffset);
        }
        if q.is_empty() || q.len() > 20 || !q.bytes().all(|c| c.is_ascii_digit()) {
            return Err(BadOffset);
        }
        Ok(Offset {
            epoch: u64::from_str_radix(e, 16).map_err(|_| BadOffset)?,
            seq: q.parse().map_err(|_| BadOffset)?,
        })
    }
}

/// Why a resume cannot be served whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The offset is of another epoch: the log was lost or started anew.
    Epoch,
    /// Messages after the offset are no longer kept (count, memory or age).
    TooOld,
    /// The offset is past the room's newest: not one this log handed out.
    Unknown,
}

impl Gap {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Gap::Epoch => "epoch",
            Gap::TooOld => "too_old",
            Gap::Unknown => "unknown",
        }
    }
}

/// What [`Ring::place`] did with a message numbered elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// It is the next one: deliver and keep it.
    Next,
    /// Seen already (or from before a rewind): skip it.
    Old,
    /// Messages before it never reached this log, or its epoch is new: the log starts over
    /// at it; deliver and keep it, and tell members holding offsets that they have a gap.
    Jump,
}

#[derive(Debug)]
struct Entry<T> {
    seq: u64,
    at: Instant,
    bytes: usize,
    item: T,
}

/// One room's log: at most `max_entries`, each younger than the window; the caller keeps
/// the bytes of all logs under its own cap with [`Ring::pop_oldest`].
#[derive(Debug)]
pub struct Ring<T> {
    epoch: u64,
    top: u64,
    entries: VecDeque<Entry<T>>,
    bytes: usize,
    max_entries: usize,
    /// When it was last used (a message, a member leaving): its offsets stay valid for a
    /// window after that, even with no entry left, so it is not forgotten before then.
    touched: Option<Instant>,
    /// Whether it numbers its own messages (false once it follows an order made elsewhere,
    /// [`Ring::place`]).
    own: bool,
}

impl<T> Ring<T> {
    /// An empty log of `epoch`, keeping at most `max_entries`.
    pub fn new(epoch: u64, max_entries: usize) -> Ring<T> {
        Ring {
            epoch,
            top: 0,
            entries: VecDeque::new(),
            bytes: 0,
            max_entries,
            touched: None,
            own: true,
        }
    }

    /// Whether it numbers its own messages: true until it follows an order made elsewhere.
    pub fn own(&self) -> bool {
        self.own
    }

    /// Numbers its own messages from now on, in a new `epoch` (what it held is dropped:
    /// offsets of the order it followed cannot be continued here). Returns the bytes dropped.
    pub fn make_own(&mut self, epoch: u64) -> usize {
        self.own = true;
        self.rebase(epoch, 0)
    }

    /// Marks it used at `now`.
    pub fn touch(&mut self, now: Instant) {
        self.touched = Some(now);
    }

    /// Whether it was used within `window` of `now` (a new one counts as used).
    pub fn used_within(&self, now: Instant, window: Duration) -> bool {
        self.touched
            .is_none_or(|t| now.saturating_duration_since(t) <= window)
    }

    /// The newest offset (seq 0 before the first message).
    pub fn top(&self) -> Offset {
        Offset {
            epoch: self.epoch,
            seq: self.top,
        }
    }

    /// The offset the next [`Ring::push`] gets.
    pub fn next(&self) -> Offset {
        Offset {
            epoch: self.epoch,
            seq: self.top + 1,
        }
    }

    /// Appends `item` (counted as `bytes`) as the next offset, dropping the oldest entry when
    /// the count is reached. Returns the bytes dropped.
    pub fn push(&mut self, item: T, bytes: usize, now: Instant) -> usize {
        self.top += 1;
        self.touched = Some(now);
        let mut freed = 0;
        if self.max_entries == 0 {
            return freed;
        }
        if self.entries.len() >= self.max_entries {
            freed += self.pop_oldest().unwrap_or(0);
        }
        self.entries.push_back(Entry {
            seq: self.top,
            at: now,
            bytes,
            item,
        });
        self.bytes += bytes;
        freed
    }

    /// Counts a message that is not kept (no room for it): later resumes across it fail.
    pub fn skip(&mut self) {
        self.top += 1;
        self.bytes -= self.entries.drain(..).map(|e| e.bytes).sum::<usize>();
    }

    /// Drops the oldest entry; returns its bytes.
    pub fn pop_oldest(&mut self) -> Option<usize> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.bytes;
        Some(e.bytes)
    }

    /// Drops entries older than `max_age`; returns the bytes dropped.
    pub fn expire(&mut self, now: Instant, max_age: Duration) -> usize {
        let mut freed = 0;
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > max_age)
        {
            freed += self.pop_oldest().unwrap_or(0);
        }
        freed
    }

    /// Every entry after `since`, oldest first, or why that cannot be served whole.
    pub fn since(&mut self, since: Offset) -> Result<impl Iterator<Item = &mut T>, Gap> {
        if since.epoch != self.epoch {
            return Err(Gap::Epoch);
        }
        if since.seq > self.top {
            return Err(Gap::Unknown);
        }
        let first_needed = since.seq + 1;
        let first_kept = self.entries.front().map_or(self.top + 1, |e| e.seq);
        if since.seq < self.top && first_kept > first_needed {
            return Err(Gap::TooOld);
        }
        let skip = first_needed.saturating_sub(first_kept) as usize;
        Ok(self.entries.iter_mut().skip(skip).map(|e| &mut e.item))
    }

    /// The epoch of its offsets.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Where a message numbered elsewhere (the shared order, through Redis) goes: after the
    /// top, or not at all. A message past the next one, or of another epoch, moves the log
    /// there (dropping what it held: a resume across the jump must not be served with a hole)
    /// and says so, so that members holding offsets can be told. Returns what happened and
    /// the bytes dropped.
    pub fn place(&mut self, at: Offset) -> (Place, usize) {
        // (Seq 0 is "before the first message": no message has it.)
        if at.seq == 0 || (at.epoch == self.epoch && at.seq <= self.top) {
            return (Place::Old, 0);
        }
        self.own = false;
        if at.epoch == self.epoch && at.seq == self.top + 1 {
            return (Place::Next, 0);
        }
        // A fresh log (nothing numbered yet) meeting the room's first message of an epoch
        // has missed nothing.
        let missed = !(self.top == 0 && at.seq == 1);
        let freed = self.rebase(at.epoch, at.seq.saturating_sub(1));
        (if missed { Place::Jump } else { Place::Next }, freed)
    }

    /// Starts over at `epoch` with `top` as the newest offset, dropping every entry; returns
    /// the bytes dropped.
    pub fn rebase(&mut self, epoch: u64, top: u64) -> usize {
        let freed = self.bytes;
        self.entries.clear();
        self.bytes = 0;
        (self.epoch, self.top) = (epoch, top);
        freed
    }

    /// Puts back an older entry fetched from elsewhere: accepted only when it is the one
    /// just before the oldest kept (or the top itself, when none is), and there is room.
    pub fn prepend(&mut self, seq: u64, item: T, bytes: usize, at: Instant) -> bool {
        let first = self.entries.front().map_or(self.top + 1, |e| e.seq);
        if seq + 1 != first || seq == 0 || self.entries.len() >= self.max_entries {
            return false;
        }
        self.entries.push_front(Entry {
            seq,
            at,
            bytes,
            item,
        });
        self.bytes += bytes;
        true
    }

    /// The oldest seq a resume can start after without a gap: the one before the oldest
    /// kept entry, or the top when none is.
    pub fn floor(&self) -> u64 {
        self.entries.front().map_or(self.top, |e| e.seq - 1)
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the entries kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the newest entry was kept, if any is.
    pub fn newest_at(&self) -> Option<Instant> {
        self.entries.back().map(|e| e.at)
    }
}

/// A resumable session: where it was and until when it may come back.
#[derive(Debug, Clone)]
pub struct Record<H> {
    /// The room it was in.
    pub room: Box<str>,
    /// Its public id (Socket.IO's `sid`), kept across a recovery.
    pub sid: Box<str>,
    /// The room's offset when it connected: where a client that never got a message
    /// resumes from.
    pub joined_at: Offset,
    /// Which connection holds it now; a later end of an older one leaves it alone.
    pub generation: u64,
    /// How to retire the connection that holds it, when another takes it over.
    pub holder: Option<H>,
    /// The member that last held it, when that was on another instance (a record read back
    /// from Redis): what it sent to the others only is not replayed to it.
    pub former: Option<u64>,
    /// Until when it may be resumed; `None` while a connection holds it.
    pub expires: Option<Instant>,
}

/// Resumable sessions by their private id (Socket.IO's `pid`).
#[derive(Debug)]
pub struct Resumes<H> {
    map: HashMap<Box<str>, Record<H>>,
    next_generation: u64,
    swept: Option<Instant>,
}

impl<H> Default for Resumes<H> {
    fn default() -> Self {
        Resumes {
            map: HashMap::new(),
            next_generation: 1,
            swept: None,
        }
    }
}

impl<H: Clone> Resumes<H> {
    /// Registers a new session held by `holder`; returns its generation.
    pub fn open(
        &mut self,
        pid: &str,
        mut record: Record<H>,
        now: Instant,
        window: Duration,
    ) -> u64 {
        self.sweep(now, window);
        record.generation = self.next_generation;
        record.expires = None;
        self.next_generation += 1;
        let g = record.generation;
        self.map.insert(pid.into(), record);
        g
    }

    /// Takes over the session `pid` for a new connection, if it has not expired: returns
    /// the record as it was (with the holder to retire) and the new generation.
    pub fn take_over(&mut self, pid: &str, holder: H, now: Instant) -> Option<(Record<H>, u64)> {
        let r = self.map.get_mut(pid)?;
        if r.expires.is_some_and(|e| now >= e) {
            self.map.remove(pid);
            return None;
        }
        let before = r.clone();
        r.generation = self.next_generation;
        r.holder = Some(holder);
        r.expires = None;
        self.next_generation += 1;
        Some((before, r.generation))
    }

    /// Adds a session known elsewhere (another instance's, read back from Redis) as one that
    /// has ended at `now`, so that [`Resumes::take_over`] can give it back; a session known
    /// here already is left as it is.
    pub fn adopt(&mut self, pid: &str, mut record: Record<H>, now: Instant, window: Duration) {
        if self.get(pid, now).is_some() {
            return;
        }
        record.generation = self.next_generation;
        record.holder = None;
        record.expires = Some(now + window);
        self.next_generation += 1;
        self.map.insert(pid.into(), record);
    }

    /// The sessions held by a connection here now, by private id.
    pub fn held(&self) -> impl Iterator<Item = (&str, &Record<H>)> {
        self.map
            .iter()
            .filter(|(_, r)| r.expires.is_none())
            .map(|(p, r)| (&**p, r))
    }

    /// The connection of `generation` has ended: the session may be resumed until
    /// `now + window`. An older connection's end changes nothing.
    pub fn closed(&mut self, pid: &str, generation: u64, now: Instant, window: Duration) {
        if let Some(r) = self.map.get_mut(pid).filter(|r| r.generation == generation) {
            r.expires = Some(now + window);
        }
    }

    /// The session `pid`, if it may still be resumed.
    pub fn get(&self, pid: &str, now: Instant) -> Option<&Record<H>> {
        self.map
            .get(pid)
            .filter(|r| r.expires.is_none_or(|e| now < e))
    }

    /// Forgets the session (the client closed it on purpose).
    pub fn forget(&mut self, pid: &str, generation: u64) {
        if self
            .map
            .get(pid)
            .is_some_and(|r| r.generation == generation)
        {
            self.map.remove(pid);
        }
    }

    /// Sessions known now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops expired records, at most once per quarter window.
    fn sweep(&mut self, now: Instant, window: Duration) {
        if self
            .swept
            .is_some_and(|t| now.saturating_duration_since(t) < window / 4)
        {
            return;
        }
        self.swept = Some(now);
        self.map.retain(|_, r| r.expires.is_none_or(|e| now < e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_refuse_anything_else() {
        let o = Offset {
            epoch: 0xabc123,
            seq: 42,
        };
        assert_eq!(o.to_string(), "abc123-42");
        assert_eq!("abc123-42".parse(), Ok(o));
        assert_eq!("0-0".parse(), Ok(Offset { epoch: 0, seq: 0 }));
        for bad in [
            "",
            "-",
            "abc",
            "abc-",
            "-1",
            "ABC-1",
            "g-1",
            "1-x",
            "1-1-1",
            " 1-1",
            "1-1 ",
            "1--1",
            "1-+1",
            "12345678901234567-1",
            "1-123456789012345678901",
            "1-99999999999999999999",
        ] {
            assert_eq!(bad.parse::<Offset>(), Err(BadOffset), "{bad:?}");
        }
    }

    fn ring(max: usize) -> Ring<u64> {
        Ring::new(7, max)
    }

    fn got(r: &mut Ring<u64>, seq: u64) -> Result<Vec<u64>, Gap> {
        let since = Offset { epoch: 7, seq };
        r.since(since).map(|it| it.map(|x| *x).collect())
    }

    #[test]
    fn a_resume_gets_everything_after_its_offset_or_a_gap() {
        let t = Instant::now();
        let mut r = ring(3);
        assert_eq!(r.top().to_string(), "7-0");
        // Nothing published: the empty room's offset resumes with nothing.
        assert_eq!(got(&mut r, 0), Ok(vec![]));
        for v in 1..=5 {
            assert_eq!(r.next().seq, v);
            r.push(v * 10, 1, t);
        }
        // Kept: 3, 4, 5.
        assert_eq!(r.len(), 3);
        assert_eq!(got(&mut r, 2), Ok(vec![30, 40, 50]));
        assert_eq!(got(&mut r, 4), Ok(vec![50]));
        assert_eq!(got(&mut r, 5), Ok(vec![]));
        // 2 is gone: a resume from 1 would miss it, so none at all.
        assert_eq!(got(&mut r, 1), Err(Gap::TooOld));
        assert_eq!(got(&mut r, 6), Err(Gap::Unknown));
        assert_eq!(r.since(Offset { epoch: 8, seq: 5 }).err(), Some(Gap::Epoch));
    }

    #[test]
    fn the_newest_offset_resumes_even_when_its_entry_aged_out() {
        let t = Instant::now();
        let mut r = ring(10);
        r.push(1, 100, t);
        r.push(2, 100, t);
        assert_eq!(r.bytes(), 200);
        let later = t + Duration::from_secs(300);
        assert_eq!(r.expire(later, Duration::from_secs(120)), 200);
        assert!(r.is_empty());
        // A quiet client at the top missed nothing; one behind it missed what expired.
        assert_eq!(got(&mut r, 2), Ok(vec![]));
        assert_eq!(got(&mut r, 1), Err(Gap::TooOld));
        // A message not kept (no memory for it) breaks every resume across it.
        r.push(3, 1, later);
        r.skip();
        assert_eq!(got(&mut r, 3), Err(Gap::TooOld));
        assert_eq!(got(&mut r, 4), Ok(vec![]));
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn a_ring_of_zero_counts_but_keeps_nothing() {
        let mut r = ring(0);
        r.push(1, 1, Instant::now());
        assert_eq!((r.len(), r.top().seq), (0, 1));
        assert_eq!(got(&mut r, 0), Err(Gap::TooOld));
        assert_eq!(got(&mut r, 1), Ok(vec![]));
    }

    fn got9(r: &mut Ring<u64>, seq: u64) -> Result<Vec<u64>, Gap> {
        let since = Offset { epoch: 9, seq };
        r.since(since).map(|it| it.map(|x| *x).collect())
    }

    #[test]
    fn messages_numbered_elsewhere_are_placed_in_order_or_move_the_log() {
        let t = Instant::now();
        let mut r = ring(10);
        let at = |epoch, seq| Offset { epoch, seq };
        // A fresh log meets an epoch's first message: nothing was missed.
        assert_eq!(r.place(at(9, 1)), (Place::Next, 0));
        assert_eq!(r.top(), at(9, 0));
        r.push(1, 5, t);
        assert_eq!(r.place(at(9, 2)), (Place::Next, 0));
        r.push(2, 5, t);
        assert_eq!(r.place(at(9, 2)).0, Place::Old);
        // 3 and 4 never came: the log jumps, and a resume across the jump is refused.
        assert_eq!(r.place(at(9, 5)), (Place::Jump, 10));
        r.push(5, 5, t);
        assert_eq!((r.top(), r.len(), r.floor()), (at(9, 5), 1, 4));
        assert_eq!(r.since(at(9, 2)).err(), Some(Gap::TooOld));
        // What was missed, fetched from elsewhere, is put back newest first until a hole.
        assert!(!r.prepend(2, 2, 5, t), "not next to the oldest kept");
        assert!(r.prepend(4, 4, 5, t));
        assert!(r.prepend(3, 3, 5, t));
        assert_eq!(got9(&mut r, 2), Ok(vec![3, 4, 5]));
        assert_eq!(r.bytes(), 15);
        // A new epoch (Redis lost the room) starts over; old offsets fail cleanly.
        assert_eq!(r.place(at(3, 1)), (Place::Jump, 15));
        assert_eq!(r.since(at(9, 5)).err(), Some(Gap::Epoch));
        // An empty log takes back the entry at its top.
        let mut e = ring(2);
        e.rebase(4, 7);
        assert!(e.prepend(7, 70, 1, t) && e.prepend(6, 60, 1, t));
        assert!(!e.prepend(5, 50, 1, t), "full");
        assert_eq!(e.floor(), 5);
    }

    fn record(room: &str) -> Record<u32> {
        Record {
            room: room.into(),
            sid: "s".into(),
            joined_at: Offset { epoch: 1, seq: 0 },
            generation: 0,
            holder: Some(1),
            former: None,
            expires: None,
        }
    }

    #[test]
    fn a_takeover_survives_the_old_connections_late_end() {
        let t = Instant::now();
        let w = Duration::from_secs(120);
        let mut s = Resumes::default();
        let g1 = s.open("p", record("r"), t, w);
        // The client comes back while its old connection still looks alive.
        let (old, g2) = s.take_over("p", 2, t).unwrap();
        assert_eq!((old.holder, old.generation), (Some(1), g1));
        // The old connection ends later: the new one still holds the session.
        s.closed("p", g1, t, w);
        assert_eq!(s.take_over("p", 3, t).map(|(r, _)| r.holder), Some(Some(2)));
        let g3 = g2 + 1;
        s.closed("p", g3, t, w);
        // Resumable within the window, not after it.
        assert!(s
            .take_over("p", 4, t + w - Duration::from_secs(1))
            .is_some());
        s.closed("p", g3 + 1, t, w);
        assert!(s.take_over("p", 5, t + w).is_none());
        assert!(s.take_over("nobody", 1, t).is_none());
    }

    #[test]
    fn expired_records_are_swept_and_forget_is_for_the_holder_only() {
        let t = Instant::now();
        let w = Duration::from_secs(120);
        let mut s = Resumes::default();
        let g = s.open("a", record("r"), t, w);
        s.closed("a", g, t, w);
        let g = s.open("b", record("r"), t + w, w);
        assert_eq!(s.len(), 1, "a expired and was swept");
        s.forget("b", g + 1);
        assert_eq!(s.len(), 1);
        s.forget("b", g);
        assert!(s.is_empty());
    }
}
