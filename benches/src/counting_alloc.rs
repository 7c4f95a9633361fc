//! A global allocator that counts allocations, for the tests that guard "no heap allocation per
//! packet" (`tests/alloc.rs`, `tests/srtp_alloc.rs`). A test binary installs it with
//! `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator;` and compares
//! [`allocations`] before and after the code under test. The count is per thread: the test
//! harness's own threads allocate now and then while a check runs (seen as a flaky 4), and they
//! are not the code under test, which runs on the checking thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const` with a `Cell<u64>`: no lazy initialisation and no destructor, so reading it from
    // inside the allocator never allocates or touches a torn-down slot.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // During thread teardown the slot may be gone: that allocation is not ours to count.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// Allocations (and reallocations) this thread made through [`CountingAllocator`] so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// The system allocator, counting every `alloc` and `realloc`.
pub struct CountingAllocator;

// A `GlobalAlloc` impl is `unsafe` by definition. Sound: every method forwards its arguments
// to the system allocator unchanged (so the caller's contract carries over) and only bumps a
// thread-local counter beside it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
