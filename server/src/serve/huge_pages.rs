//! Transparent huge pages for the server process: off unless configured
//! ([`super::ServeConfig::huge_pages`]).
//!
//! Why: the allocator (mimalloc) marks its arenas for huge pages
//! (`MADV_HUGEPAGE`). With the kernel's THP in `madvise` mode, khugepaged
//! then collapses any 2 MiB range of an arena that has a resident page
//! (with the default `max_ptes_none`, 511 of its 512 pages may be absent)
//! into one huge page, so memory the allocator had freed and handed back
//! becomes resident again. The server's RSS then creeps up with no more
//! memory in use: in a 30-minute soak its live heap stayed flat while its
//! RSS rose 35%, all of it memory the allocator held (docs/reliability.md).
//!
//! `PR_SET_THP_DISABLE` takes the whole process out of THP, its existing
//! mappings included; it is called before the engine opens.

/// Turns transparent huge pages off for this process.
#[cfg(target_os = "linux")]
pub(super) fn forgo() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument (the rest must
    // be zero) and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Transparent huge pages are a Linux matter; elsewhere, nothing to do.
#[cfg(not(target_os = "linux"))]
pub(super) fn forgo() -> std::io::Result<()> {
    Ok(())
}

/// Whether THP is off for this process (`PR_GET_THP_DISABLE`).
#[cfg(all(test, target_os = "linux"))]
fn forgone() -> bool {
    // SAFETY: PR_GET_THP_DISABLE takes no argument and touches no memory.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn forgoing_turns_huge_pages_off_for_the_process() {
        forgo().expect("prctl");
        assert!(forgone());
    }
}
