//! CPU cache prefetch hints.
//!
//! The batched reads (a slate's 51 keys) are bound by memory latency: each
//! key's lookup touches an index slot, a block header, the block's
//! fingerprint array and the entry, none of them likely in cache. Issuing the
//! loads of every key of a batch before using any of them lets their misses
//! overlap instead of queueing one behind another.

/// Hints the CPU to bring the cache line holding `p` into L1. A no-op on
/// architectures without a prefetch intrinsic.
#[inline]
pub(crate) fn prefetch<T: ?Sized>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint: it never faults and has no
    // architectural effect; the pointer comes from a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] of a bare address, which need not point at anything live:
/// a prefetch never faults.
#[inline]
pub(crate) fn prefetch_addr(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is a hint that never faults, whatever the
    // address; nothing is read through the pointer.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Size of a CPU cache line.
const CACHE_LINE: usize = 64;

/// Hints the CPU to bring every cache line of `bytes` into L2 (not L1: a
/// batch's values together exceed L1).
#[inline]
pub(crate) fn prefetch_to_l2(bytes: &[u8]) {
    for line in bytes.chunks(CACHE_LINE) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `prefetch`.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}
