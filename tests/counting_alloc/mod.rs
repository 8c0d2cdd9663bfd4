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

thread_local! {
    static THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    TOTAL.fetch_add(1, Relaxed);
    // `try_with`: during thread teardown the slot may already be gone.
    let _ = THIS_THREAD.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on to `System` unchanged; counting touches only an atomic and
// a const-initialised thread-local `Cell`, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}

/// Allocations by every thread of the process so far.
pub fn total() -> u64 {
    TOTAL.load(Relaxed)
}

/// Allocations by the calling thread so far.
pub fn this_thread() -> u64 {
    THIS_THREAD.with(Cell::get)
}
