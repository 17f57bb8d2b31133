//! io_uring batched reads for [`OsFs`](super::OsFs).
//!
//! [`UringBatcher`] owns a small pool of io_uring instances. A batch takes
//! one ring out of the pool (creating a ring if the pool is empty), queues
//! every read of the batch as an `IORING_OP_READ` — at most one ring's worth
//! in flight at a time — waits for the completions, resubmits the remainder
//! of short reads, and puts the ring back. The pool lock is held only to take
//! or return a ring, never while waiting for the kernel, so threads sharing
//! one `OsFs` do not serialise on each other's I/O.
//!
//! # Invariants
//!
//! - A batch returns only after every read it pushed to a ring has completed
//!   (see "Safety of the buffers" below). A ring is therefore always idle —
//!   empty submission and completion queues — when it is in the pool, so a
//!   completion can never be attributed to the wrong batch.
//! - A successful batch has filled every buffer completely. A read that
//!   reaches end of file first fails the batch with
//!   [`io::ErrorKind::UnexpectedEof`], like `pread`'s `read_exact_at`.
//! - A failed read (negative result) fails the batch with
//!   [`io::Error::from_raw_os_error`] of its errno; the batch stops submitting
//!   new reads but still waits for those already in flight.
//!
//! # Safety of the buffers
//!
//! The kernel writes into each destination buffer asynchronously, through a
//! raw pointer Rust knows nothing about. This is sound because:
//!
//! 1. **The buffers outlive the I/O.** [`UringBatcher::read_batch`] takes
//!    `&mut [ReadOp<'_>]`, so every `buf: &mut [u8]` (and every `file`, whose
//!    descriptor the reads use) stays exclusively borrowed until the function
//!    returns. Every submission queue entry the batch pushes is counted by an
//!    [`InFlight`] guard, and the function cannot return — normally, through
//!    `?`, or by unwinding from a panic — before that count is back to zero:
//!    the guard's `Drop` waits for every outstanding completion. Entries pushed
//!    but not yet consumed by the kernel are counted too, because the next
//!    `io_uring_enter` submits them; the drain loop keeps entering until each
//!    has produced its completion.
//! 2. **No two reads write the same memory.** Each read targets a range inside
//!    one `&mut [u8]`; distinct `&mut` slices never overlap, and the pieces of
//!    one buffer (a short read's remainder) are submitted one after another,
//!    never concurrently.
//! 3. **Rust does not touch a buffer while the kernel may write it.** The raw
//!    pointers are taken once, before anything is submitted, and `read_batch`
//!    neither reads nor writes the buffers through their references again
//!    until all I/O has completed.
//! 4. **Pointer and length stay in bounds.** A read is submitted for
//!    `buf[done..done + n]` with `n <= len - done`, and `done` only grows by the
//!    byte count the kernel reports, which is checked to be at most `n`.
//!
//! If waiting on the ring fails with anything but a transient error
//! (`EINTR`, `EAGAIN`, `EBUSY`), the kernel broke its contract and the
//! in-flight reads may still write into the caller's buffers at any later time;
//! returning would hand those buffers back while they are being written.
//! The batcher then aborts the process, the only sound choice.
//!
//! # Fallback
//!
//! [`UringBatcher::new`] fails unless the kernel both sets up a ring and
//! completes a probe read correctly, so `OsFs` falls back to `pread`. If a
//! later batch cannot create a ring (for example under memory pressure), that
//! batch is served with `pread` instead. Reads of files that expose no raw
//! descriptor ([`RandomAccessFile::raw_fd`](super::RandomAccessFile::raw_fd)
//! is `None`) use their own
//! `read_at`.

use super::ReadOp;
use io_uring::{opcode, types, IoUring};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Submission queue entries per ring; also the most reads in flight on one
/// ring. The kernel sizes the completion queue at twice this, so completions
/// can never overflow it.
const RING_ENTRIES: u32 = 128;

/// Idle rings kept for reuse; rings returned beyond this are closed. Bounds
/// the descriptors and locked memory an idle `OsFs` holds.
const MAX_POOLED_RINGS: usize = 8;

/// Largest byte count asked of one read entry. The entry's length field is a
/// `u32`, and Linux caps a single read at just under 2 GiB anyway; longer
/// buffers are read in several pieces by the short-read path.
const MAX_READ_PER_ENTRY: usize = 1 << 30;

/// Pause before re-entering the kernel after a transient `EAGAIN`/`EBUSY`.
const TRANSIENT_RETRY_PAUSE: Duration = Duration::from_micros(50);

/// Bytes written to the probe file; the probe reads [`PROBE_RANGE`] back.
const PROBE_CONTENT: &[u8] = b"tessera io_uring probe";
/// Offset and length of the probe read, deliberately not at offset 0 so a
/// kernel ignoring the offset fails the probe.
const PROBE_RANGE: (usize, usize) = (8, 8);

/// Serves [`ReadOp`] batches with io_uring; shared by all threads of an
/// [`OsFs`](super::OsFs).
pub(crate) struct UringBatcher {
    /// Idle rings, each with empty queues.
    pool: Mutex<Vec<IoUring>>,
    /// Ring size for newly created rings.
    ring_entries: u32,
    /// Cap on a single read entry's length.
    max_read: usize,
}

impl UringBatcher {
    /// Sets up a ring and proves the kernel serves `IORING_OP_READ` on it.
    /// Any failure is returned so the caller can fall back to `pread`.
    pub(crate) fn new() -> io::Result<UringBatcher> {
        UringBatcher::with_limits(RING_ENTRIES, MAX_READ_PER_ENTRY)
    }

    /// [`UringBatcher::new`] with explicit limits; tests use tiny ones to
    /// drive the chunking and short-read paths.
    fn with_limits(ring_entries: u32, max_read: usize) -> io::Result<UringBatcher> {
        let batcher = UringBatcher {
            pool: Mutex::new(Vec::new()),
            ring_entries,
            max_read: max_read.clamp(1, MAX_READ_PER_ENTRY),
        };
        let mut ring = batcher.new_ring()?;
        probe(&mut ring, batcher.max_read)?;
        batcher.pool.lock().push(ring);
        Ok(batcher)
    }

    /// Performs every read of `ops`, filling each buffer completely, and
    /// fails with the first error met (see the module documentation).
    pub(crate) fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> io::Result<()> {
        let any_fd = ops.iter().any(|op| op.file.raw_fd().is_some());
        let Some(mut ring) = any_fd.then(|| self.take_ring()).flatten() else {
            return read_with_pread(ops);
        };
        let result = read_on_ring(&mut ring, ops, self.max_read);
        // `read_on_ring` leaves the ring idle whatever it returned.
        self.return_ring(ring);
        result
    }

    fn new_ring(&self) -> io::Result<IoUring> {
        IoUring::new(self.ring_entries)
    }

    /// An idle ring from the pool, or a new one; `None` if none can be made.
    fn take_ring(&self) -> Option<IoUring> {
        let pooled = self.pool.lock().pop();
        pooled.or_else(|| self.new_ring().ok())
    }

    fn return_ring(&self, ring: IoUring) {
        let mut pool = self.pool.lock();
        if pool.len() < MAX_POOLED_RINGS {
            pool.push(ring);
        }
    }
}

/// The whole batch with positional reads; used when no ring is available.
fn read_with_pread(ops: &mut [ReadOp<'_>]) -> io::Result<()> {
    for op in ops.iter_mut() {
        op.file.read_at(op.offset, op.buf)?;
    }
    Ok(())
}

/// Reads the ops without a descriptor directly, then the others on `ring`.
fn read_on_ring(ring: &mut IoUring, ops: &mut [ReadOp<'_>], max_read: usize) -> io::Result<()> {
    let mut slots = Vec::with_capacity(ops.len());
    for op in ops.iter_mut() {
        match op.file.raw_fd() {
            Some(fd) => slots.push(Slot::new(fd, op.offset, op.buf)),
            None => op.file.read_at(op.offset, op.buf)?,
        }
    }
    run(ring, &mut slots, max_read)
}

/// One read of a batch: where it reads from, where its bytes go, and how many
/// have arrived. Holds a raw pointer into a caller's buffer, valid for as long
/// as the batch borrows that buffer.
struct Slot {
    fd: RawFd,
    offset: u64,
    buf: *mut u8,
    len: usize,
    done: usize,
}

impl Slot {
    fn new(fd: RawFd, offset: u64, buf: &mut [u8]) -> Slot {
        Slot {
            fd,
            offset,
            buf: buf.as_mut_ptr(),
            len: buf.len(),
            done: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.len - self.done
    }

    /// File offset of the next byte still to read.
    fn next_offset(&self) -> io::Result<u64> {
        self.offset
            .checked_add(self.done as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read offset overflows"))
    }

    /// Accounts a completion's result; `Ok(true)` when the buffer is full.
    fn complete(&mut self, result: i32, asked: usize) -> io::Result<bool> {
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        let got = result as usize;
        if got > asked {
            return Err(io::Error::other(format!(
                "io_uring read returned {got} bytes, more than the {asked} asked"
            )));
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "end of file at offset {} with {} bytes still to read",
                    self.offset.saturating_add(self.done as u64),
                    self.remaining()
                ),
            ));
        }
        self.done += got;
        Ok(self.done == self.len)
    }
}

/// Counts the entries pushed to a ring whose completions have not been
/// reaped, and on drop waits for all of them: the guarantee behind the
/// module's buffer-safety argument.
struct InFlight<'r> {
    ring: &'r mut IoUring,
    count: usize,
}

impl InFlight<'_> {
    /// Submits whatever is queued and blocks until at least one completion
    /// is ready. Aborts the process on a non-transient failure (see the
    /// module documentation for why returning would be unsound).
    fn submit_and_wait(&mut self) {
        loop {
            let err = match self.ring.submit_and_wait(1) {
                Ok(_) => return,
                Err(err) => err,
            };
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::EBUSY) => std::thread::sleep(TRANSIENT_RETRY_PAUSE),
                _ => abort_with_reads_in_flight(&err),
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        while self.count > 0 {
            self.submit_and_wait();
            let reaped = self.ring.completion().count();
            self.count = self.count.saturating_sub(reaped);
        }
    }
}

#[cold]
fn abort_with_reads_in_flight(err: &io::Error) -> ! {
    tracing::error!(%err, "io_uring wait failed with reads in flight; aborting");
    eprintln!("tessera: io_uring wait failed with reads in flight ({err}); aborting");
    std::process::abort()
}

/// A completion: the slot index it belongs to and the kernel's result.
struct Completion {
    slot: u64,
    result: i32,
}

/// Runs every slot's read to completion on `ring`, which must be idle, and
/// leaves it idle whatever happens.
fn run(ring: &mut IoUring, slots: &mut [Slot], max_read: usize) -> io::Result<()> {
    let capacity = ring.params().sq_entries() as usize;
    let mut queue: VecDeque<usize> = (0..slots.len()).filter(|&i| slots[i].len > 0).collect();
    // Bytes asked by the entry in flight for each slot, to check the result.
    let mut asked = vec![0usize; slots.len()];
    let mut first_error: Option<io::Error> = None;
    let mut reaped = Vec::with_capacity(capacity);
    let mut flight = InFlight { ring, count: 0 };
    loop {
        if first_error.is_none() {
            if let Err(err) = push_reads(&mut flight, &mut queue, slots, &mut asked, max_read) {
                first_error = Some(err);
            }
        }
        if flight.count == 0 {
            break;
        }
        flight.submit_and_wait();
        reaped.clear();
        reaped.extend(flight.ring.completion().map(|cqe| Completion {
            slot: cqe.user_data(),
            result: cqe.result(),
        }));
        flight.count = flight.count.saturating_sub(reaped.len());
        for completion in &reaped {
            if let Err(err) = settle(completion, slots, &asked, &mut queue) {
                first_error.get_or_insert(err);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Pushes queued reads until the ring holds `capacity` entries in flight or
/// the queue is empty.
fn push_reads(
    flight: &mut InFlight<'_>,
    queue: &mut VecDeque<usize>,
    slots: &[Slot],
    asked: &mut [usize],
    max_read: usize,
) -> io::Result<()> {
    let capacity = flight.ring.params().sq_entries() as usize;
    let mut sq = flight.ring.submission();
    while flight.count < capacity {
        let Some(index) = queue.pop_front() else {
            break;
        };
        let (Some(slot), Some(asked_for)) = (slots.get(index), asked.get_mut(index)) else {
            continue;
        };
        let len = slot.remaining().min(max_read);
        // `max_read` is at most MAX_READ_PER_ENTRY, which fits in a u32.
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        let entry = opcode::Read::new(types::Fd(slot.fd), slot.buf.wrapping_add(slot.done), len32)
            .offset(slot.next_offset()?)
            .build()
            .user_data(index as u64);
        // SAFETY: the entry writes `len` bytes at `buf + done`, inside the
        // slot's buffer (len <= remaining). That buffer is exclusively
        // borrowed by `read_batch` until `flight` has seen this entry's
        // completion, which its Drop guarantees; see the module docs.
        if unsafe { sq.push(&entry) }.is_err() {
            queue.push_front(index);
            break;
        }
        *asked_for = len32 as usize;
        flight.count += 1;
    }
    Ok(())
}

/// Applies one completion to its slot; requeues the remainder of a short or
/// interrupted read.
fn settle(
    completion: &Completion,
    slots: &mut [Slot],
    asked: &[usize],
    queue: &mut VecDeque<usize>,
) -> io::Result<()> {
    let index = usize::try_from(completion.slot).unwrap_or(usize::MAX);
    let (Some(slot), Some(&asked)) = (slots.get_mut(index), asked.get(index)) else {
        return Err(io::Error::other("io_uring completion for an unknown read"));
    };
    if matches!(-completion.result, libc::EINTR | libc::EAGAIN) {
        queue.push_front(index);
        return Ok(());
    }
    if !slot.complete(completion.result, asked)? {
        queue.push_front(index);
    }
    Ok(())
}

/// Reads a known range of a memfd through `ring` and checks the bytes, so a
/// kernel that sets up rings but cannot read (no `IORING_OP_READ` before 5.6,
/// seccomp filters, ...) is detected at start-up rather than on first use.
fn probe(ring: &mut IoUring, max_read: usize) -> io::Result<()> {
    let file = probe_file()?;
    let (offset, len) = PROBE_RANGE;
    let mut buf = [0u8; PROBE_RANGE.1];
    let mut slots = [Slot::new(file.as_raw_fd(), offset as u64, &mut buf)];
    run(ring, &mut slots, max_read)?;
    if PROBE_CONTENT.get(offset..offset + len) != Some(&buf[..]) {
        return Err(io::Error::other("io_uring probe read returned wrong bytes"));
    }
    Ok(())
}

/// An anonymous in-memory file holding [`PROBE_CONTENT`].
fn probe_file() -> io::Result<std::fs::File> {
    // SAFETY: the name is a valid NUL-terminated string; the call only
    // returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"tessera-uring-probe".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by no one else.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::os::unix::fs::FileExt::write_all_at(&file, PROBE_CONTENT, 0)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::os::{pread_forced, OsFs};
    use crate::fs::{FileSystem, RandomAccessFile, ReadBackend};
    use proptest::prelude::*;
    use std::ffi::OsStr;
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::sync::Arc;

    /// A batcher with the given limits, or `None` (the test is skipped) where
    /// the kernel or a sandbox refuses io_uring.
    fn batcher(ring_entries: u32, max_read: usize) -> Option<UringBatcher> {
        match UringBatcher::with_limits(ring_entries, max_read) {
            Ok(b) => Some(b),
            Err(err) => {
                eprintln!("io_uring unavailable ({err}); skipping");
                None
            }
        }
    }

    /// Files with deterministic pseudo-random contents of the given sizes.
    fn make_files(dir: &Path, sizes: &[usize]) -> Vec<Arc<dyn RandomAccessFile>> {
        let fs = OsFs::new(ReadBackend::Pread);
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let path = dir.join(format!("f{i}"));
                let bytes: Vec<u8> = (0..size)
                    .map(|j| (j * 31 + i * 7 + j / 251) as u8)
                    .collect();
                std::fs::write(&path, &bytes).unwrap();
                fs.open_read(&path).unwrap()
            })
            .collect()
    }

    /// (file index, offset, len) of each read.
    type Plan = Vec<(usize, u64, usize)>;

    /// Runs `plan` through `read`, returning the filled buffers.
    fn run_plan(
        files: &[Arc<dyn RandomAccessFile>],
        plan: &Plan,
        read: impl FnOnce(&mut [ReadOp<'_>]) -> io::Result<()>,
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut bufs: Vec<Vec<u8>> = plan.iter().map(|&(_, _, len)| vec![0xA5; len]).collect();
        let mut ops: Vec<ReadOp<'_>> = plan
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(f, offset, _), buf)| ReadOp {
                file: files[f].as_ref(),
                offset,
                buf,
            })
            .collect();
        read(&mut ops)?;
        drop(ops);
        Ok(bufs)
    }

    fn expected(files: &[Arc<dyn RandomAccessFile>], plan: &Plan) -> Vec<Vec<u8>> {
        plan.iter()
            .map(|&(f, offset, len)| {
                let mut buf = vec![0; len];
                files[f].read_at(offset, &mut buf).unwrap();
                buf
            })
            .collect()
    }

    /// A plan of `n` in-bounds reads over files of `sizes`.
    fn plan_strategy(sizes: Vec<usize>, n: usize) -> impl Strategy<Value = Plan> {
        let per_read = (0..sizes.len(), any::<u64>(), any::<u64>());
        proptest::collection::vec(per_read, 1..n).prop_map(move |raw| {
            raw.into_iter()
                .map(|(f, a, b)| {
                    let size = sizes[f] as u64;
                    let offset = a % (size + 1);
                    let len = b % (size - offset + 1);
                    (f, offset, len as usize)
                })
                .collect()
        })
    }

    const FILE_SIZES: [usize; 4] = [0, 1, 4097, 70_000];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn random_reads_match_pread(plan in plan_strategy(FILE_SIZES.to_vec(), 300)) {
            let dir = tempfile::tempdir().unwrap();
            let files = make_files(dir.path(), &FILE_SIZES);
            let want = expected(&files, &plan);
            // Production limits, then tiny ones that force chunking and many
            // short-read continuations.
            for (entries, max_read) in [(RING_ENTRIES, MAX_READ_PER_ENTRY), (4, 5)] {
                let Some(b) = batcher(entries, max_read) else { return Ok(()) };
                let got = run_plan(&files, &plan, |ops| b.read_batch(ops)).unwrap();
                prop_assert_eq!(&got, &want);
            }
        }
    }

    #[test]
    fn reads_past_end_fail_with_unexpected_eof() {
        let dir = tempfile::tempdir().unwrap();
        let files = make_files(dir.path(), &[100, 50]);
        let Some(b) = batcher(RING_ENTRIES, MAX_READ_PER_ENTRY) else {
            return;
        };
        // Straddling the end (short read, then 0), starting at the end, and
        // far beyond it; each mixed with good reads.
        for bad in [(0, 90, 20), (1, 50, 1), (1, 1 << 40, 8)] {
            let plan = vec![(0, 0, 10), bad, (1, 0, 50)];
            let err = run_plan(&files, &plan, |ops| b.read_batch(ops)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{bad:?}: {err}");
        }
        // Empty reads succeed anywhere, as with pread.
        let plan = vec![(0, 100, 0), (1, 1 << 40, 0), (0, 0, 100)];
        let got = run_plan(&files, &plan, |ops| b.read_batch(ops)).unwrap();
        assert_eq!(got, expected(&files, &plan));
    }

    #[test]
    fn batch_larger_than_ring_completes() {
        let dir = tempfile::tempdir().unwrap();
        let files = make_files(dir.path(), &[8192, 300]);
        let plan: Plan = (0..1000)
            .map(|i| (i % 2, (i * 37 % 250) as u64, 1 + i % 50))
            .collect();
        let want = expected(&files, &plan);
        for entries in [8, RING_ENTRIES] {
            let Some(b) = batcher(entries, MAX_READ_PER_ENTRY) else {
                return;
            };
            let got = run_plan(&files, &plan, |ops| b.read_batch(ops)).unwrap();
            assert_eq!(got, want);
        }
    }

    /// A file whose descriptor was opened write-only, so io_uring reads fail
    /// with EBADF.
    struct WriteOnly(File);

    impl RandomAccessFile for WriteOnly {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_exact_at(buf, offset)
        }
        fn len(&self) -> u64 {
            0
        }
        fn raw_fd(&self) -> Option<RawFd> {
            Some(self.0.as_raw_fd())
        }
    }

    #[test]
    fn failed_read_is_reported_and_ring_reused_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = make_files(dir.path(), &[4096]);
        let path = dir.path().join("wo");
        std::fs::write(&path, [1u8; 64]).unwrap();
        let wo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        files.push(Arc::new(WriteOnly(wo)));
        // One ring only, so the second batch reuses the ring of the failed one:
        // a completion left behind would corrupt it.
        let Some(b) = batcher(4, 16) else { return };
        let bad: Plan = (0..40)
            .map(|i| if i == 7 { (1, 0, 8) } else { (0, i * 50, 100) })
            .collect();
        let err = run_plan(&files, &bad, |ops| b.read_batch(ops)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
        assert_eq!(b.pool.lock().len(), 1);
        let good: Plan = (0..40).map(|i| (0, i * 90, 77)).collect();
        let got = run_plan(&files, &good, |ops| b.read_batch(ops)).unwrap();
        assert_eq!(got, expected(&files, &good));
    }

    /// A file with no descriptor, serving zeros.
    struct NoFd;

    impl RandomAccessFile for NoFd {
        fn read_at(&self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn len(&self) -> u64 {
            u64::MAX
        }
    }

    #[test]
    fn files_without_descriptor_use_read_at() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = make_files(dir.path(), &[1000]);
        files.push(Arc::new(NoFd));
        let Some(b) = batcher(RING_ENTRIES, MAX_READ_PER_ENTRY) else {
            return;
        };
        let plan: Plan = vec![(1, 5, 10), (0, 10, 500), (1, 0, 3)];
        let got = run_plan(&files, &plan, |ops| b.read_batch(ops)).unwrap();
        assert_eq!(got, expected(&files, &plan));
    }

    #[test]
    fn concurrent_batches_from_two_threads() {
        let dir = tempfile::tempdir().unwrap();
        let files = make_files(dir.path(), &[50_000, 9000]);
        let fs = Arc::new(OsFs::with_uring_allowed(ReadBackend::IoUring, true));
        if UringBatcher::new().is_ok() {
            assert_eq!(fs.backend_name(), "io_uring");
        }
        std::thread::scope(|scope| {
            for t in 0..2usize {
                let (fs, files) = (Arc::clone(&fs), &files);
                scope.spawn(move || {
                    for round in 0..50usize {
                        let plan: Plan = (0..40)
                            .map(|i| {
                                let f = (i + t) % 2;
                                let offset = ((i * 997 + round * 13 + t) % 8000) as u64;
                                (f, offset, 1 + (i * 7 + round) % 900)
                            })
                            .collect();
                        let got = run_plan(files, &plan, |ops| fs.read_batch(ops)).unwrap();
                        assert_eq!(got, expected(files, &plan));
                    }
                });
            }
        });
    }

    #[test]
    fn env_value_pread_forces_fallback() {
        assert!(pread_forced(Some(OsStr::new("pread"))));
        assert!(pread_forced(Some(OsStr::new(" PREAD\n"))));
        assert!(!pread_forced(Some(OsStr::new("io_uring"))));
        assert!(!pread_forced(Some(OsStr::new(""))));
        assert!(!pread_forced(None));
    }

    #[test]
    fn forced_fallback_reads_with_pread() {
        let dir = tempfile::tempdir().unwrap();
        let files = make_files(dir.path(), &[3000]);
        let fs = OsFs::with_uring_allowed(ReadBackend::IoUring, false);
        assert_eq!(fs.effective_backend(), ReadBackend::Pread);
        assert_eq!(fs.backend_name(), "pread");
        let plan: Plan = vec![(0, 0, 10), (0, 2990, 10), (0, 100, 1000)];
        let got = run_plan(&files, &plan, |ops| fs.read_batch(ops)).unwrap();
        assert_eq!(got, expected(&files, &plan));

        let allowed = OsFs::with_uring_allowed(ReadBackend::IoUring, true);
        if UringBatcher::new().is_ok() {
            assert_eq!(allowed.effective_backend(), ReadBackend::IoUring);
            assert_eq!(allowed.backend_name(), "io_uring");
        }
    }

    #[test]
    fn probe_succeeds_where_io_uring_works() {
        if let Ok(mut ring) = IoUring::new(4) {
            probe(&mut ring, MAX_READ_PER_ENTRY).unwrap();
        }
    }
}
