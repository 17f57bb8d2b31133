//! [`Engine`]: the storage engine's public handle, its shared state, and its
//! lifecycle (open, background threads, close).
//!
//! Data directory layout:
//!
//! | path | what |
//! |---|---|
//! | `LOCK` | held with `flock` while an engine has the directory open |
//! | `MANIFEST` | live SSTs and engine metadata (rewritten atomically) |
//! | `INDEX` | hash-index checkpoint written at clean shutdown |
//! | `wal/<n>.wal` | write-ahead-log segments |
//! | `sst/<n>.sst` | sorted string tables |
//!
//! Threads: callers' threads write (one of them leads each commit group) and
//! read; a flush thread turns frozen memtables into level-0 SSTs; a compaction
//! thread merges levels; a sync thread bounds the unsynced window under
//! [`Durability::Interval`].

use crate::cache::BlockCache;
use crate::commit::{CommitQueue, WriterState};
use crate::fs::FileSyncer;
use crate::hash_index::HashIndex;
use crate::manifest::ManifestState;
use crate::options::{Durability, Options, TableOptions};
use crate::stats::Counters;
use crate::types::{SeqNo, TableId, Timestamp};
use crate::version::{ReadView, TableHandle};
use crate::{Error, Result};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Name of the lock file in the data directory.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Name of the hash-index checkpoint in the data directory.
pub(crate) const INDEX_FILE: &str = "INDEX";
/// Subdirectory holding WAL segments.
pub(crate) const WAL_DIR: &str = "wal";
/// Subdirectory holding SSTs.
pub(crate) const SST_DIR: &str = "sst";
/// How often the compaction thread re-checks for work when not signalled.
const COMPACTION_POLL: Duration = Duration::from_secs(1);
/// Pause before retrying a failed background flush or compaction.
const BACKGROUND_RETRY: Duration = Duration::from_millis(500);

/// Path of SST `file_no` under `dir`.
pub(crate) fn sst_path(dir: &Path, file_no: u64) -> PathBuf {
    dir.join(SST_DIR).join(format!("{file_no:012}.sst"))
}

/// State shared by the engine handle and its background threads.
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) seed: u64,
    pub(crate) index: HashIndex,
    pub(crate) cache: Arc<BlockCache>,
    pub(crate) view: RwLock<Arc<ReadView>>,
    /// Every open SST by file number: the live ones, outputs being
    /// installed, and inputs of a compaction until the hash index no longer
    /// names them. Index locations resolve here when the pinned view lacks
    /// the file, so background work never pushes reads off the fast path.
    pub(crate) tables: RwLock<HashMap<u64, Arc<TableHandle>>>,
    /// The last committed manifest; changed only while holding this lock.
    pub(crate) manifest: Mutex<ManifestState>,
    pub(crate) table_opts: RwLock<Arc<BTreeMap<TableId, TableOptions>>>,
    pub(crate) commit: CommitQueue,
    pub(crate) writer: Mutex<WriterState>,
    /// Excludes concurrent compactions (background and manual).
    pub(crate) compaction_lock: Mutex<()>,
    pub(crate) bg: Mutex<Background>,
    pub(crate) bg_cv: Condvar,
    pub(crate) read_only: Mutex<Option<String>>,
    pub(crate) is_read_only: AtomicBool,
    pub(crate) clock_high: AtomicI64,
    /// Highest sequence number whose whole commit group is in the memtable
    /// and the index. Readers ignore versions above it, so a batch becomes
    /// visible all at once.
    pub(crate) visible_seq: AtomicU64,
    /// Syncs the current WAL segment from the sync thread under
    /// `Durability::Interval`, so appends never wait on fsync (`None` where
    /// the file system cannot: the leader then syncs inline when due).
    pub(crate) wal_syncer: Mutex<Option<Arc<dyn FileSyncer>>>,
    /// Set by the leader after an append the sync thread has not synced.
    pub(crate) wal_dirty: AtomicBool,
    pub(crate) counters: Counters,
    _lock: File,
}

/// Signals between callers and background threads.
#[derive(Default)]
pub(crate) struct Background {
    pub(crate) shutdown: bool,
    pub(crate) compaction_requested: bool,
    /// The last flush failure, cleared by the next successful flush. Writers
    /// waiting for memtable space and `flush()` callers fail with it.
    pub(crate) flush_error: Option<String>,
    /// The last compaction failure, cleared by the next success; reported,
    /// but it does not fail writes (level 0 only grows).
    pub(crate) compaction_error: Option<String>,
}

impl Inner {
    /// Monotonic "now": never goes backwards even if the clock does, so a
    /// version hidden by retention never reappears.
    pub(crate) fn now(&self) -> Timestamp {
        let t = self.opts.clock.now_us();
        let prev = self.clock_high.fetch_max(t, Ordering::AcqRel);
        prev.max(t)
    }

    /// The current read view (memtables + live SSTs), pinned.
    pub(crate) fn pin(&self) -> Arc<ReadView> {
        self.view.read().clone()
    }

    /// The visible sequence number and a view holding every version up to
    /// it (the number is read first: the view can only be newer).
    pub(crate) fn pin_visible(&self) -> (Arc<ReadView>, SeqNo) {
        let seq = self.visible_seq.load(Ordering::Acquire);
        (self.pin(), seq)
    }

    /// The SST `file_no`, from the pinned view or else the registry.
    pub(crate) fn sst(&self, view: &ReadView, file_no: u64) -> Option<Arc<TableHandle>> {
        match view.version.table(file_no) {
            Some(h) => Some(h.clone()),
            None => self.tables.read().get(&file_no).cloned(),
        }
    }

    pub(crate) fn table_options(&self, table: TableId) -> TableOptions {
        self.table_opts
            .read()
            .get(&table)
            .copied()
            .unwrap_or_default()
    }

    /// Turns the engine read-only after a failure that breaks durability.
    pub(crate) fn set_read_only(&self, reason: String) {
        let mut r = self.read_only.lock();
        if r.is_none() {
            tracing::error!(%reason, "engine is now read-only");
            *r = Some(reason);
        }
        self.is_read_only.store(true, Ordering::Release);
    }

    /// Commits `next` as the manifest. A failure may come after the rename
    /// (a failed directory fsync), so the on-disk state is unknown: the
    /// engine turns read-only and the caller must delete nothing.
    pub(crate) fn commit_manifest(&self, next: &ManifestState) -> Result<()> {
        crate::manifest::commit(&*self.opts.fs, &self.dir, next).inspect_err(|e| {
            self.set_read_only(format!("manifest commit failed: {e}"));
        })
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.is_read_only.load(Ordering::Acquire) {
            let reason = self.read_only.lock().clone().unwrap_or_default();
            return Err(Error::ReadOnly(reason));
        }
        Ok(())
    }

    pub(crate) fn request_compaction(&self) {
        self.bg.lock().compaction_requested = true;
        self.bg_cv.notify_all();
    }

    /// True while flushes can be expected to finish: no shutdown and no
    /// failing flush.
    pub(crate) fn flush_progressing(&self) -> bool {
        let bg = self.bg.lock();
        !bg.shutdown && bg.flush_error.is_none()
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.bg.lock().shutdown
    }
}

/// The storage engine. Cheap to share behind an `Arc`; every method takes
/// `&self` and is safe to call from many threads.
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Opens (creating if needed) the engine in `dir`. Recovers from the WAL
    /// after a crash and truncates a torn WAL tail.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        let dir = dir.as_ref().to_path_buf();
        let fs = opts.fs.clone();
        for d in [dir.clone(), dir.join(WAL_DIR), dir.join(SST_DIR)] {
            fs.create_dir_all(&d)
                .map_err(|e| Error::io("create directory", &d, e))?;
        }
        opts.validate()?;
        let lock = lock_dir(&dir)?;
        let cache = Arc::new(BlockCache::new(opts.block_cache_bytes));
        let recovered = crate::recovery::recover(&dir, &opts, &cache)?;
        let visible_seq = recovered.writer.last_seq();
        let wal_syncer = recovered.writer.wal.syncer();
        let inner = Arc::new(Inner {
            seed: recovered.manifest.digest_seed,
            table_opts: RwLock::new(Arc::new(recovered.manifest.tables.clone())),
            manifest: Mutex::new(recovered.manifest),
            index: recovered.index,
            tables: RwLock::new(
                recovered
                    .view
                    .version
                    .files()
                    .map(|h| (h.meta.file_no, h.clone()))
                    .collect(),
            ),
            view: RwLock::new(Arc::new(recovered.view)),
            writer: Mutex::new(recovered.writer),
            commit: CommitQueue::default(),
            compaction_lock: Mutex::new(()),
            bg: Mutex::new(Background::default()),
            bg_cv: Condvar::new(),
            read_only: Mutex::new(None),
            is_read_only: AtomicBool::new(false),
            clock_high: AtomicI64::new(recovered.last_ingest_ts),
            visible_seq: AtomicU64::new(visible_seq),
            wal_syncer: Mutex::new(wal_syncer),
            wal_dirty: AtomicBool::new(false),
            counters: Counters::default(),
            cache,
            dir,
            opts,
            _lock: lock,
        });
        let threads = match spawn_background(&inner) {
            Ok(t) => t,
            Err(e) => {
                inner.bg.lock().shutdown = true;
                inner.bg_cv.notify_all();
                return Err(e);
            }
        };
        let engine = Engine {
            threads: Mutex::new(threads),
            inner,
        };
        engine.inner.request_compaction();
        Ok(engine)
    }

    /// Sets a table's TTL and retention; persisted in the manifest.
    ///
    /// Waits for a running compaction, so none applies the old retention
    /// after this returns. Lengthening retention makes versions that were
    /// hidden, but not yet compacted away, readable again.
    pub fn configure_table(&self, table: TableId, options: TableOptions) -> Result<()> {
        options.validate()?;
        let _no_compaction = self.inner.compaction_lock.lock();
        let mut m = self.inner.manifest.lock();
        if m.tables.get(&table) == Some(&options) {
            return Ok(());
        }
        let mut next = m.clone();
        next.id += 1;
        next.tables.insert(table, options);
        self.inner.commit_manifest(&next)?;
        *self.inner.table_opts.write() = Arc::new(next.tables.clone());
        *m = next;
        Ok(())
    }

    /// The options of `table` (defaults when never configured).
    pub fn table_options(&self, table: TableId) -> TableOptions {
        self.inner.table_options(table)
    }

    /// The engine's current time, in µs: the clock, never going backwards.
    pub fn now(&self) -> Timestamp {
        self.inner.now()
    }

    /// The sequence number of the last committed (visible) version.
    pub fn last_seq(&self) -> SeqNo {
        self.inner.visible_seq.load(Ordering::Acquire)
    }

    /// Freezes the active memtable and waits until every memtable frozen so
    /// far is on disk as an SST.
    pub fn flush(&self) -> Result<()> {
        let target = self.inner.rotate_for_flush()?;
        self.inner.wait_flushed(target)
    }

    /// Flushes, then compacts every SST into one level (the shallowest
    /// whose target holds it all, and no shallower than the deepest level in
    /// use), applying retention everywhere. Blocks until done.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        self.inner.compact_all()
    }

    /// Name of the read backend in use: "pread", "mmap" or "io_uring" (an
    /// io_uring request falls back to "pread" where the kernel refuses it).
    pub fn io_backend(&self) -> &'static str {
        self.inner.opts.fs.backend_name()
    }

    /// Empties the block cache and asks the kernel to drop the SSTs' cached
    /// pages, for cold-read measurements.
    pub fn drop_caches(&self) -> Result<()> {
        self.inner.cache.clear();
        for h in self.inner.pin().version.files() {
            h.table.drop_page_cache()?;
        }
        Ok(())
    }

    /// Shuts down cleanly: finishes in-flight writes, flushes every memtable,
    /// checkpoints the hash index, and stops background threads.
    pub fn close(self) -> Result<()> {
        self.stop_threads();
        let inner = &self.inner;
        let result = inner
            .flush_everything_inline()
            .and_then(|()| inner.write_index_checkpoint());
        if let Err(e) = &result {
            tracing::error!(error = %e, "clean shutdown failed; the next open will recover from the WAL");
        }
        result
    }

    fn stop_threads(&self) {
        {
            let mut bg = self.inner.bg.lock();
            bg.shutdown = true;
        }
        self.inner.bg_cv.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Without `close`, stop the threads but leave the WAL to recovery.
        self.stop_threads();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::InvalidArgument(format!(
            "data directory {} is in use by another process",
            dir.display()
        )));
    }
    Ok(file)
}

fn spawn_background(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    for (name, f) in [
        ("tessera-flush", flush_loop as fn(&Inner)),
        ("tessera-compact", compaction_loop),
        ("tessera-sync", sync_loop),
    ] {
        let inner = inner.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || supervise(&inner, name, f));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => return Err(Error::io("start thread", name, e)),
        }
    }
    Ok(threads)
}

/// Runs a background loop; if it panics (a bug), the engine stops taking
/// writes instead of waiting forever on work that will never be done.
fn supervise(inner: &Inner, name: &str, f: fn(&Inner)) {
    let run = std::panic::AssertUnwindSafe(|| f(inner));
    if std::panic::catch_unwind(run).is_err() {
        inner.set_read_only(format!("background thread {name} panicked"));
        let mut bg = inner.bg.lock();
        bg.flush_error = Some(format!("background thread {name} panicked"));
        drop(bg);
        inner.bg_cv.notify_all();
    }
}

fn flush_loop(inner: &Inner) {
    loop {
        if inner.shutting_down() {
            return;
        }
        match inner.flush_oldest_frozen() {
            Ok(true) => inner.finish_background_step(true),
            Ok(false) => {
                let mut bg = inner.bg.lock();
                if !bg.shutdown && !inner.has_frozen() {
                    inner.bg_cv.wait_for(&mut bg, COMPACTION_POLL);
                }
            }
            Err(e) => inner.background_failed(true, &e),
        }
    }
}

fn compaction_loop(inner: &Inner) {
    loop {
        {
            let mut bg = inner.bg.lock();
            if bg.shutdown {
                return;
            }
            if !bg.compaction_requested {
                inner.bg_cv.wait_for(&mut bg, COMPACTION_POLL);
            }
            bg.compaction_requested = false;
            if bg.shutdown {
                return;
            }
        }
        if !inner.opts.background_compaction {
            continue;
        }
        loop {
            match inner.compact_once() {
                Ok(true) if !inner.shutting_down() => inner.finish_background_step(false),
                Ok(_) => break,
                Err(e) => {
                    inner.background_failed(false, &e);
                    break;
                }
            }
        }
    }
}

fn sync_loop(inner: &Inner) {
    let Durability::Interval(every) = inner.opts.durability else {
        return;
    };
    loop {
        {
            let mut bg = inner.bg.lock();
            if bg.shutdown {
                return;
            }
            inner.bg_cv.wait_for(&mut bg, every);
            if bg.shutdown {
                return;
            }
        }
        inner.background_sync(every);
    }
}

impl Inner {
    fn finish_background_step(&self, flushed: bool) {
        let mut bg = self.bg.lock();
        if flushed {
            bg.flush_error = None;
            bg.compaction_requested = true;
        } else {
            bg.compaction_error = None;
        }
        drop(bg);
        self.bg_cv.notify_all();
    }

    fn background_failed(&self, flush: bool, e: &Error) {
        let what = if flush { "flush" } else { "compaction" };
        tracing::error!(error = %e, "background {what} failed; retrying");
        let mut bg = self.bg.lock();
        let msg = Some(format!("background {what} failed: {e}"));
        if flush {
            bg.flush_error = msg;
        } else {
            bg.compaction_error = msg;
        }
        self.bg_cv.wait_for(&mut bg, BACKGROUND_RETRY);
        drop(bg);
        self.bg_cv.notify_all();
    }

    pub(crate) fn has_frozen(&self) -> bool {
        self.view.read().mems.len() > 1
    }

    /// Waits until the flush counter passes the flush that makes memtable
    /// generation `gen` durable, i.e. until no memtable `<= gen` remains.
    pub(crate) fn wait_flushed(&self, gen: Option<u64>) -> Result<()> {
        let Some(gen) = gen else { return Ok(()) };
        let mut bg = self.bg.lock();
        loop {
            let pending = self.view.read().mems.iter().any(|m| m.gen() <= gen);
            if !pending {
                return Ok(());
            }
            if bg.shutdown {
                return Err(Error::Closed);
            }
            if let Some(err) = &bg.flush_error {
                return Err(Error::Background(err.clone()));
            }
            self.bg_cv.wait_for(&mut bg, COMPACTION_POLL);
        }
    }
}
