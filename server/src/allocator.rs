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

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
