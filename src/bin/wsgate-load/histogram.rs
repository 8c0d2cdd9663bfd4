//! A log-linear (HDR-like) histogram of `u64` values, safe to record into from many tasks.
//!
//! Values below [`SUB_BUCKETS`] get one bucket each. Every power of two above that is split
//! into [`SUB_BUCKETS`] equal buckets, so a bucket is at most 1/64 (1.6%) of its values wide
//! over the whole `u64` range, in 3,776 buckets (30 KiB). Percentiles report the bucket's
//! highest value, capped at the exact maximum, as HdrHistogram does. Recording is one relaxed
//! atomic add (and a load for the maximum), so subscribers share one histogram per step.
//!
//! Written here rather than taken from a crate: it is 100 lines, lock-free for concurrent
//! recorders (hdrhistogram needs a mutex or per-task copies and merging), and adds no dependency.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 6;
/// Buckets per power of two; also the count of exact buckets for the smallest values.
pub(crate) const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// One row of [`SUB_BUCKETS`] for the exact values, one for each power of two from 2^6 to 2^63.
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * SUB_BUCKETS as usize;

/// Counts of recorded values by bucket, plus the exact maximum.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

/// A copy of a [`Histogram`]'s counts at one moment, for reading percentiles.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// The bucket that holds `v`.
fn index_of(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let mantissa = v >> shift; // in SUB_BUCKETS..2*SUB_BUCKETS
    ((shift + 1) as u64 * SUB_BUCKETS + (mantissa - SUB_BUCKETS)) as usize
}

/// The lowest and highest value that land in bucket `index`.
fn range_of(index: usize) -> (u64, u64) {
    let row = index as u64 / SUB_BUCKETS;
    if row == 0 {
        return (index as u64, index as u64);
    }
    let shift = row - 1;
    let low = (index as u64 % SUB_BUCKETS + SUB_BUCKETS) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    /// Counts one value.
    pub(crate) fn record(&self, v: u64) {
        self.buckets[index_of(v)].fetch_add(1, Relaxed);
        if v > self.max.load(Relaxed) {
            self.max.fetch_max(v, Relaxed);
        }
    }

    /// Copies the current counts.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        Snapshot {
            total: counts.iter().sum(),
            counts,
            max: self.max.load(Relaxed),
        }
    }
}

impl Snapshot {
    /// How many values were recorded.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact), 0 when empty.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value below or at which `percent` of the recorded values lie (0 when empty):
    /// the highest value of the bucket holding that rank, capped at the exact maximum.
    pub(crate) fn percentile(&self, percent: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The tolerance keeps float noise (99.9% of 1000 = 999.0000000000001) off the next rank.
        let rank = ((percent / 100.0) * self.total as f64 - 1e-6)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return range_of(i).1.min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (lo, hi) = range_of(i);
            assert_eq!(lo, next, "bucket {i}");
            assert_eq!(index_of(lo), i);
            assert_eq!(index_of(hi), i);
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn buckets_are_at_most_one_64th_wide() {
        for i in SUB_BUCKETS as usize..BUCKETS {
            let (lo, hi) = range_of(i);
            assert!(
                (hi - lo) as f64 / lo as f64 <= 1.0 / 64.0,
                "bucket {i}: {lo}..={hi}"
            );
        }
    }

    #[test]
    fn small_values_are_exact() {
        let h = Histogram::new();
        for v in [3, 1, 2, 5, 4] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.percentile(0.0), 1);
        assert_eq!(s.percentile(20.0), 1);
        assert_eq!(s.percentile(50.0), 3);
        assert_eq!(s.percentile(80.0), 4);
        assert_eq!(s.percentile(100.0), 5);
        assert_eq!(s.max(), 5);
    }

    #[test]
    fn percentiles_of_one_to_ten_thousand() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let s = h.snapshot();
        // Bucket widths near 5,000 are 64 and near 10,000 are 128: the figures are the
        // highest value of the bucket holding the exact rank.
        assert_eq!(s.percentile(50.0), 5_055); // rank 5,000 is in 4,992..=5,055
        assert_eq!(s.percentile(90.0), 9_087); // rank 9,000 is in 8,960..=9,087
        assert_eq!(s.percentile(99.0), 9_983); // rank 9,900 is in 9,856..=9,983
        assert_eq!(s.percentile(99.9), 10_000); // 9,984..=10,111, capped at the max
        assert_eq!(s.max(), 10_000);
        for (p, exact) in [
            (50.0, 5_000.0),
            (90.0, 9_000.0),
            (99.0, 9_900.0),
            (99.9, 9_990.0),
        ] {
            let err = (s.percentile(p) as f64 - exact) / exact;
            assert!((0.0..=1.0 / 64.0).contains(&err), "p{p}: {err}");
        }
    }

    #[test]
    fn a_tail_shows_in_the_high_percentiles_only() {
        let h = Histogram::new();
        for _ in 0..999 {
            h.record(50_000); // 50 us
        }
        h.record(2_000_000_000); // one 2 s outlier
        let s = h.snapshot();
        assert_eq!(s.percentile(50.0), 50_175); // 49_664..=50_175
        assert_eq!(s.percentile(99.9), 50_175);
        assert_eq!(s.percentile(100.0), 2_000_000_000);
        assert_eq!(s.max(), 2_000_000_000);
    }

    #[test]
    fn empty_reads_as_zero() {
        let s = Histogram::new().snapshot();
        assert_eq!((s.count(), s.percentile(99.0), s.max()), (0, 0, 0));
    }
}
