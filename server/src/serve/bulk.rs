//! Work off the serving path at a lowered CPU priority: bulk work (an
//! import's batches and its commit, an export's chunks and a join's
//! lookups) and online writes (`PUT`, `DELETE`).
//!
//! Each job runs on a bulk thread whose CPU priority was lowered when it
//! started: by [`ServeConfig::bulk_niceness`](super::ServeConfig::bulk_niceness)
//! nice levels for bulk work, by
//! [`ServeConfig::write_niceness`](super::ServeConfig::write_niceness) for
//! writes. When the cores are busy the scheduler then runs
//! slates first and bulk work with what is left; on an idle machine bulk
//! work still gets every cycle. Threads a job starts (an ingest's run
//! writer and merge threads) inherit the lowered priority: on Linux a nice
//! value belongs to a thread and passes to the threads it creates.
//!
//! Bulk threads are kept: one that finishes a job waits up to
//! [`BULK_THREAD_IDLE`] for the next, and exits only then. A join sends
//! hundreds of jobs a second, and a thread's allocator keeps the memory of
//! its last job warm for the next one, where a new thread would start from
//! fresh pages the kernel must zero.
//!
//! Invariants:
//! - a bulk thread only ever lowers its priority, which needs no
//!   privilege, and never raises it back, which would. Bulk threads of
//!   their own (rather than tokio's blocking pool, which also runs
//!   requests) are what makes that possible, and a kept thread only takes
//!   jobs of the niceness it has;
//! - at most [`MAX_BULK_JOBS`] jobs run at once, server-wide; more wait
//!   for a turn, so many clients cannot make the server start a thread
//!   each. Kept threads are threads that ran a job, so there are never
//!   more of them than jobs that once ran at the same time.

use super::service::{fail, Failure};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::thread::ThreadId;
use std::time::Duration;
use tessera_protocol::ErrorCode;
use tokio::sync::Semaphore;

/// The most nice levels bulk work may be lowered by: 19 is the lowest
/// priority Linux has.
pub const MAX_BULK_NICENESS: u8 = 19;
/// Most bulk jobs running at once. Beyond the cores, more only queue in
/// the scheduler, each holding a thread.
pub const MAX_BULK_JOBS: usize = 64;
/// How long a bulk thread with no job waits for one before it exits.
pub const BULK_THREAD_IDLE: Duration = Duration::from_secs(10);

/// Turns to run a bulk job.
static TURNS: Semaphore = Semaphore::const_new(MAX_BULK_JOBS);

/// A job as a bulk thread runs it: the work, which returns the delivery
/// of its result. The thread is back on the idle list before it delivers,
/// so a caller's next job finds it there.
type Job = Box<dyn FnOnce() -> Delivery + Send>;
type Delivery = Box<dyn FnOnce() + Send>;

/// Bulk threads waiting for a job: each one's niceness, thread and the
/// sender of its job.
static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

struct Idle {
    niceness: u8,
    thread: ThreadId,
    jobs: Sender<Job>,
}

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
    hand_over(
        niceness,
        Box::new(move || {
            let result = job();
            Box::new(move || {
                // The turn ends with the job, even if its caller has gone.
                let _turn = turn;
                // The receiver is gone only when the connection has
                // closed, and then nobody wants the result.
                let _ = tx.send(result);
            })
        }),
    )?;
    // A job that panics drops its sender unsent.
    rx.await
        .map_err(|_| fail(ErrorCode::Internal, "the bulk job failed unexpectedly"))
}

/// Gives `job` to an idle bulk thread of `niceness`, or to a new one.
fn hand_over(niceness: u8, job: Job) -> Result<(), Failure> {
    let idle = {
        let mut idle = IDLE.lock();
        let found = idle.iter().rposition(|t| t.niceness == niceness);
        found.map(|i| idle.swap_remove(i))
    };
    let job = match idle {
        // A thread leaves the list before it exits, so this send does not
        // fail; should it, the job goes to a new thread.
        Some(t) => match t.jobs.send(job) {
            Ok(()) => return Ok(()),
            Err(back) => back.0,
        },
        None => job,
    };
    let (jobs, inbox) = crossbeam_channel::bounded::<Job>(1);
    jobs.send(job)
        .map_err(|_| fail(ErrorCode::Internal, "a new bulk thread's inbox is closed"))?;
    std::thread::Builder::new()
        .name("tessera-bulk".into())
        .spawn(move || bulk_thread(niceness, jobs, inbox))
        .map(drop)
        .map_err(|e| {
            fail(
                ErrorCode::Unavailable,
                format!("cannot start a bulk work thread: {e}"),
            )
        })
}

/// A bulk thread: runs its jobs, and between them waits on the idle list
/// for up to [`BULK_THREAD_IDLE`].
fn bulk_thread(niceness: u8, jobs: Sender<Job>, inbox: Receiver<Job>) {
    let thread = std::thread::current().id();
    lower_priority(niceness);
    loop {
        // The first job is already in the inbox; later ones arrive once
        // the thread is back on the idle list.
        let job = match inbox.recv_timeout(BULK_THREAD_IDLE) {
            Ok(job) => job,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let mut idle = IDLE.lock();
                match idle.iter().position(|t| t.thread == thread) {
                    Some(i) => {
                        idle.swap_remove(i);
                        return;
                    }
                    // Taken off the list just now: its job is on the way.
                    None => {
                        drop(idle);
                        match inbox.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    }
                }
            }
        };
        let deliver = job();
        let me = Idle {
            niceness,
            thread,
            jobs: jobs.clone(),
        };
        IDLE.lock().push(me);
        deliver();
    }
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
    async fn a_thread_is_kept_for_the_next_job_of_its_niceness() {
        // No other test asks for niceness 7 or 3.
        let first = run(7, || std::thread::current().id()).await.expect("job");
        let again = run(7, || std::thread::current().id()).await.expect("job");
        assert_eq!(first, again, "the second job got a new thread");
        let other = run(3, || (std::thread::current().id(), nice_of_this_thread()))
            .await
            .expect("job");
        assert_ne!(other.0, first, "a job ran on a thread of another niceness");
        assert_eq!(other.1, (nice_of_this_thread().max(0) + 3).min(19));
    }

    #[tokio::test]
    async fn a_job_that_panics_is_an_error() {
        let result = run(0, || -> u32 { panic!("boom") }).await;
        assert_eq!(result.map_err(|f| f.code), Err(ErrorCode::Internal));
    }
}
