//! Worker placement: each async worker thread on a core of its own.
//!
//! Why: when every core is busy for a moment, Linux wakes a sleeping
//! worker on the core of the thread that woke it, behind a worker that
//! is running, and an idle moment on another core does not pull it over
//! (idle balancing skips cores whose idle spells are short). Under a
//! pipelining flood the waking worker is the flood's, and a victim's
//! request waited up to 3.4 ms there (a scheduler trace of the hostile
//! bench) with the other core 40% idle. Pinned, a woken worker runs on
//! its own core, which a busy worker never holds.
//!
//! Pinning applies only when the process may run on at least as many
//! cores as there are workers; otherwise the workers float as before.
//! Workers pin themselves the first time they park (tokio calls the park
//! hook on workers only, never on blocking-pool threads), taking cores in
//! the order they come.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The cores workers are pinned to, one each.
pub(crate) struct WorkerPinning {
    cores: Vec<usize>,
    next: AtomicUsize,
}

thread_local! {
    /// Whether this thread has taken (or given up on) its core.
    static PLACED: Cell<bool> = const { Cell::new(false) };
}

impl WorkerPinning {
    /// Pinning for `workers` workers, or `None` when the process may run
    /// on fewer cores than that (or on one).
    pub(crate) fn new(workers: usize) -> Option<WorkerPinning> {
        let cores = allowed_cores()?;
        if workers < 2 || cores.len() < workers {
            return None;
        }
        Some(WorkerPinning {
            cores: cores.into_iter().take(workers).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// Pins the calling worker to the next free core, once per thread. A
    /// refusal leaves the thread floating: placement is a latency measure,
    /// not a condition for serving.
    pub(crate) fn place_current_worker(&self) {
        if PLACED.with(|p| p.replace(true)) {
            return;
        }
        let Some(&core) = self.cores.get(self.next.fetch_add(1, Ordering::Relaxed)) else {
            return;
        };
        if let Err(e) = pin_current_thread(core) {
            tracing::warn!("cannot pin a worker to core {core}: {e}");
        }
    }
}

/// The cores this process may run on, in ascending order.
fn allowed_cores() -> Option<Vec<usize>> {
    // SAFETY: `set` is a plain bit set, zeroed before the kernel fills it;
    // its size is passed along, and the CPU_* helpers stay inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let max = libc::CPU_SETSIZE as usize;
        Some((0..max).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}

fn pin_current_thread(core: usize) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cores`; pid 0 is the calling thread.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores_of_this_thread() -> Vec<usize> {
        allowed_cores().unwrap_or_default()
    }

    #[test]
    fn workers_take_distinct_cores_once() {
        let Some(pinning) = WorkerPinning::new(2) else {
            return; // a one-core machine: nothing to pin
        };
        let placed: Vec<Vec<usize>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        pinning.place_current_worker();
                        pinning.place_current_worker();
                        cores_of_this_thread()
                    })
                })
                .collect();
            threads.into_iter().filter_map(|t| t.join().ok()).collect()
        });
        assert_eq!(placed.len(), 2);
        assert!(placed.iter().all(|c| c.len() == 1), "{placed:?}");
        assert_ne!(placed[0], placed[1]);
        assert_eq!(pinning.next.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn more_workers_than_cores_float() {
        let cores = cores_of_this_thread().len();
        assert!(WorkerPinning::new(cores + 1).is_none());
        assert!(WorkerPinning::new(1).is_none());
    }
}
