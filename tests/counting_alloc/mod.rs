//! The one counting allocator of the tests: the system allocator, counting every allocation
//! and reallocation both process-wide (the allocation proof, whose gateway runs on several
//! threads) and per thread (the PROXY decoder's proof, which must not see other test threads).
//! A test binary installs it with
//! `#[global_allocator] static A: counting_alloc::Counting = counting_alloc::Counting;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The allocator.
pub struct Counting;

static TOTAL: AtomicU64 = AtomicU64::new(0);
/// Allocations by size, in 16-byte classes up to 4 KiB (the last class holds the rest).
static BY_SIZE: [AtomicU64; 257] = [const { AtomicU64::new(0) }; 257];

thread_local! {
    static THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

fn count(size: usize) {
    TOTAL.fetch_add(1, Relaxed);
    BY_SIZE[(size / 16).min(256)].fetch_add(1, Relaxed);
    // `try_with`: during thread teardown the slot may already be gone.
    let _ = THIS_THREAD.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to `System` unchanged; counting touches only an atomic and
// a const-initialised thread-local `Cell`, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n);
        unsafe { System.realloc(p, l, n) }
    }
}

/// Allocations by every thread of the process so far.
pub fn total() -> u64 {
    TOTAL.load(Relaxed)
}

/// Allocations so far by size class: `(class start in bytes, count)` for every class.
pub fn by_size() -> Vec<(usize, u64)> {
    BY_SIZE
        .iter()
        .enumerate()
        .map(|(i, n)| (i * 16, n.load(Relaxed)))
        .collect()
}

/// Allocations by size class since `before` (a [`by_size`]), the classes used only.
pub fn by_size_since(before: &[(usize, u64)]) -> Vec<(usize, u64)> {
    by_size()
        .into_iter()
        .zip(before)
        .map(|((c, n), (_, b))| (c, n - b))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Allocations by the calling thread so far.
pub fn this_thread() -> u64 {
    THIS_THREAD.with(Cell::get)
}
