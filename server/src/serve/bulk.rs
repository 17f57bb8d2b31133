//! Bulk work off the serving path: an import's batches and its commit, and
//! an export's chunks.
//!
//! Each job runs on a thread of its own whose CPU priority is lowered by
//! [`ServeConfig::bulk_niceness`](super::ServeConfig::bulk_niceness) nice
//! levels before the job starts. When the cores are busy the scheduler then
//! runs slates first and bulk work with what is left; on an idle machine
//! bulk work still gets every cycle. Threads the job starts (an ingest's
//! run writer and merge threads) inherit the lowered priority: on Linux a
//! nice value belongs to a thread and passes to the threads it creates.
//!
//! Invariants:
//! - a bulk thread only ever lowers its priority, which needs no
//!   privilege, and never raises it back, which would. A thread of its own
//!   per job (rather than tokio's blocking pool, which also runs requests)
//!   is what makes that possible; its start costs tens of microseconds
//!   against jobs of milliseconds;
//! - at most [`MAX_BULK_JOBS`] jobs run at once, server-wide; more wait
//!   for a turn, so many clients cannot make the server start a thread
//!   each.

use super::service::{fail, Failure};
use tessera_protocol::ErrorCode;
use tokio::sync::Semaphore;

/// The most nice levels bulk work may be lowered by: 19 is the lowest
/// priority Linux has.
pub const MAX_BULK_NICENESS: u8 = 19;
/// Most bulk jobs running at once. Beyond the cores, more only queue in
/// the scheduler, each holding a thread.
pub const MAX_BULK_JOBS: usize = 64;

/// Turns to run a bulk job.
static TURNS: Semaphore = Semaphore::const_new(MAX_BULK_JOBS);

/// Runs `job` on a bulk thread `niceness` nice levels below the server and
/// returns what it returns.
pub(crate) async fn run<T, F>(niceness: u8, job: F) -> Result<T, Failure>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let turn = TURNS
        .acquire()
        .await
        .map_err(|_| fail(ErrorCode::Unavailable, "the server is shutting down"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tessera-bulk".into())
        .spawn(move || {
            // The turn ends with the job, even if its caller has gone.
            let _turn = turn;
            lower_priority(niceness);
            // The receiver is gone only when the connection has closed, and
            // then nobody wants the result.
            let _ = tx.send(job());
        })
        .map_err(|e| {
            fail(
                ErrorCode::Unavailable,
                format!("cannot start a bulk work thread: {e}"),
            )
        })?;
    // A job that panics drops its sender unsent.
    rx.await
        .map_err(|_| fail(ErrorCode::Internal, "the bulk job failed unexpectedly"))
}

/// Lowers the calling thread's priority by `niceness` levels, capped at
/// the lowest. A refusal leaves the thread as it was: bulk work then
/// competes evenly, which is slower serving, not an error.
fn lower_priority(niceness: u8) {
    if niceness == 0 {
        return;
    }
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    // SAFETY: getpriority and setpriority read and set a scheduling
    // attribute of this very thread; they touch no memory of ours.
    let result = unsafe {
        // getpriority may return -1 as a valid nice value; the value only
        // seeds the target, so an error reads as nice 0.
        let current = libc::getpriority(libc::PRIO_PROCESS, tid).max(0);
        let target = (current + i32::from(niceness)).min(i32::from(MAX_BULK_NICENESS));
        libc::setpriority(libc::PRIO_PROCESS, tid, target)
    };
    if result != 0 {
        tracing::warn!(
            "cannot lower a bulk thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        // SAFETY: as in `lower_priority`.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[tokio::test]
    async fn a_job_runs_lowered_and_its_threads_inherit_it() {
        let before = nice_of_this_thread();
        let (job, child) = run(5, || {
            let child = std::thread::spawn(nice_of_this_thread).join();
            (nice_of_this_thread(), child.ok())
        })
        .await
        .expect("the job runs");
        let want = (before.max(0) + 5).min(19);
        assert_eq!(job, want);
        assert_eq!(child, Some(want));
        // The caller's own priority is untouched.
        assert_eq!(nice_of_this_thread(), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_limit_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..MAX_BULK_JOBS * 2)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(run(0, move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                }))
            })
            .collect();
        for job in jobs {
            job.await.expect("task").expect("job");
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= MAX_BULK_JOBS, "{most} jobs ran at once");
        assert!(most > 1, "the jobs ran one at a time");
    }

    #[tokio::test]
    async fn a_job_that_panics_is_an_error() {
        let result = run(0, || -> u32 { panic!("boom") }).await;
        assert_eq!(result.map_err(|f| f.code), Err(ErrorCode::Internal));
    }
}
