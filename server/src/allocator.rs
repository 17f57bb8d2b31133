//! The `tessera` binary's global allocator, and how it gives memory back.
//!
//! mimalloc rather than the system allocator: the engine allocates and
//! frees cache blocks and per-read buffers constantly, and on the warm
//! slate benchmark mimalloc is about 10% faster than glibc's malloc.
//! Building without the `mimalloc` feature leaves the system allocator, for
//! heap profilers that hook `malloc`.
//!
//! The server keeps mimalloc's default purge delay (freed memory goes back
//! to the OS a second later), so its RSS follows its working set. The
//! client commands (`import`, `export`, `pit-join`) are short and allocate
//! chunk after chunk of the same sizes: memory they gave back would be
//! faulted in and zeroed again by the kernel for the next chunk (0.3 s of
//! a 1M-row pit-join's 1.5 s, docs/benchmarks.md), so they keep it.

#[cfg(all(feature = "mimalloc", not(feature = "heap-stats")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "heap-stats")]
#[global_allocator]
static GLOBAL: live::Counting = live::Counting;

/// With the `heap-stats` feature: the allocator (mimalloc or the system's)
/// behind a count of the bytes allocated and not yet freed, which the
/// server logs every [`live::LOG_EVERY`]. Set against the process's RSS,
/// it tells memory in use from memory the allocator holds. One atomic add
/// per allocation and per free, so a diagnosis build only.
#[cfg(feature = "heap-stats")]
mod live {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[cfg(feature = "mimalloc")]
    const INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;
    #[cfg(not(feature = "mimalloc"))]
    const INNER: std::alloc::System = std::alloc::System;

    /// How often the live bytes are logged.
    pub const LOG_EVERY: Duration = Duration::from_secs(10);

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    /// Counts `size` bytes if the allocation `p` succeeded; returns `p`.
    fn counted(p: *mut u8, size: usize) -> *mut u8 {
        if !p.is_null() {
            LIVE.fetch_add(size, Ordering::Relaxed);
        }
        p
    }

    // SAFETY: every call is forwarded unchanged to the inner allocator;
    // the counter is only arithmetic on the sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            counted(unsafe { INNER.alloc(layout) }, layout.size())
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            counted(unsafe { INNER.alloc_zeroed(layout) }, layout.size())
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            // SAFETY: the caller's contract, passed on.
            unsafe { INNER.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            let p = counted(unsafe { INNER.realloc(ptr, layout, new_size) }, new_size);
            if !p.is_null() {
                LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            }
            p
        }
    }

    /// Logs the live bytes to stderr every [`LOG_EVERY`], from a thread of
    /// its own.
    pub fn start_logging() {
        let spawned = std::thread::Builder::new()
            .name("heap-stats".into())
            .spawn(|| loop {
                std::thread::sleep(LOG_EVERY);
                let kib = LIVE.load(Ordering::Relaxed) >> 10;
                let unix_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                eprintln!("heap-stats: unix_s {unix_s} live_kib {kib}");
            });
        if let Err(e) = spawned {
            eprintln!("heap-stats: no logging thread: {e}");
        }
    }
}

/// Starts logging the live heap bytes (the `heap-stats` feature); without
/// the feature, nothing.
pub fn log_live_heap() {
    #[cfg(feature = "heap-stats")]
    live::start_logging();
}

/// mimalloc's `mi_option_purge_delay` in the v3 `mi_option_t` enumeration
/// (`mimalloc.h`) that `libmimalloc-sys` 0.1.49 builds; its bindings name
/// only the v2 numbering. A unit test checks the index by its default.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable through which mimalloc reads the purge delay;
/// a value set there is left alone.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Freed memory stays with the process until it exits (purge delay -1),
/// unless the user chose a purge delay. Call before the work starts.
pub fn keep_freed_memory() {
    #[cfg(feature = "mimalloc")]
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: mimalloc's option setter is not thread-safe; `main`
        // calls this before it starts any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_names_the_purge_delay() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return;
        }
        // mimalloc v3's default purge delay (`options.c`) is 1,000 ms; no
        // other option of the enumeration defaults to it.
        // SAFETY: reading an option is thread-safe.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1_000);
    }
}
