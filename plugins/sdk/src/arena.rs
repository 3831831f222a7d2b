//! A bump allocator for scorer modules (feature `arena`): every allocation of one
//! `ooni_score` call comes from one region that is handed back whole when the host
//! sends the next measurement. Allocation is a pointer bump and freeing is free,
//! which makes parsing a measurement inside WebAssembly about as fast as natively.
//!
//! The contract: nothing allocated during a call may be used after it. Scorers built
//! on the SDK keep no heap data between calls; a scorer that does (a lazily built
//! table, say) must not enable this feature.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

const PAGE: usize = 65536;

/// Start of the region, the next free byte, and the end of memory we own.
static BASE: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
/// True while a call runs: allocations made then (fingerprint answers) must not reset.
pub(crate) static IN_CALL: AtomicBool = AtomicBool::new(false);

pub struct Arena;

fn grow_to(end: usize) -> bool {
    let have = END.load(Relaxed);
    if end <= have {
        return true;
    }
    let pages = (end - have).div_ceil(PAGE);
    if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
        return false;
    }
    END.store(have + pages * PAGE, Relaxed);
    true
}

fn init() {
    if BASE.load(Relaxed) == 0 {
        // The heap starts where the module's initial memory ends.
        let start = core::arch::wasm32::memory_size(0) * PAGE;
        BASE.store(start, Relaxed);
        NEXT.store(start, Relaxed);
        END.store(start, Relaxed);
    }
}

/// Hands the whole region back (between calls only).
pub(crate) fn reset() {
    init();
    NEXT.store(BASE.load(Relaxed), Relaxed);
}

// SAFETY: a wasm32 module is single-threaded; the allocator never hands out
// overlapping blocks between resets, and resets happen only between calls.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        init();
        let align = layout.align().max(1);
        let start = (NEXT.load(Relaxed) + align - 1) & !(align - 1);
        let end = start + layout.size();
        if !grow_to(end) {
            return core::ptr::null_mut();
        }
        NEXT.store(end, Relaxed);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Give back the most recent block; everything else waits for the reset.
        if ptr as usize + layout.size() == NEXT.load(Relaxed) {
            NEXT.store(ptr as usize, Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The last block grows in place.
        if ptr as usize + layout.size() == NEXT.load(Relaxed) {
            let end = ptr as usize + new_size;
            if grow_to(end) {
                NEXT.store(end, Relaxed);
                return ptr;
            }
            return core::ptr::null_mut();
        }
        // SAFETY: same contract as GlobalAlloc::realloc's default.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}

#[global_allocator]
static ALLOCATOR: Arena = Arena;
