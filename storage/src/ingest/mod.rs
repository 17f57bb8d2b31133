//! Bulk ingest: versions written straight into SSTs, bypassing the WAL and
//! the memtable, visible all at once when the ingest commits.
//!
//! An [`Ingest`] buffers versions in memory up to half of
//! [`Options::ingest_run_bytes`](crate::Options), then hands the buffer to a
//! background thread that sorts it and writes it as a *run* (an uncompressed
//! SST) under `ingest/` while the next buffer fills ([`runs`]); input in any
//! order is sorted in bounded memory. [`Ingest::commit`] merges the runs
//! into compressed SSTs, in key ranges written in parallel ([`ranges`]), and
//! installs them with one manifest commit. Dropping an
//! ingest (or [`Ingest::abort`]) removes its runs; the next open removes
//! whatever a crash left in `ingest/` or `sst/`.
//!
//! Commit order, and why:
//! 1. take the compaction lock for the whole commit: no compaction may mix
//!    data committed after the ingest's sequence range into older levels
//!    before the ingest is installed, or the index rebuild's rule (deeper
//!    levels and older level-0 files first, so equal event times go to the
//!    later commit) would no longer hold;
//! 2. under the writer lock, freeze the active memtable and reserve a
//!    sequence range and one ingest time: every version written before has
//!    a smaller sequence, every one after a larger;
//! 3. wait until the memtables frozen in step 2 are flushed, so the WAL
//!    holds only writes newer than the ingest (a replay after a crash then
//!    applies them after the ingest, as they were committed);
//! 4. merge the runs into SSTs through compaction's output writer, one per
//!    key range (which splits files between entities and drops versions past
//!    retention, which no read would show), numbering versions from the
//!    reserved range in input order (equal `(key, event_ts)`: the later input
//!    row is the later commit), and fsync them and the directory;
//! 5. point the hash index at each entity's newest ingested version unless
//!    the current entry is newer (an equal event time from a write after
//!    step 2 stays, being the later commit). Readers that meet a location
//!    not yet in their view fall back to a full search, so nothing of the
//!    ingest is visible before step 6;
//! 6. commit a manifest naming the SSTs and swap in a view with them: the
//!    commit point. Each SST goes to the deepest level where neither that
//!    level nor any above it holds a file overlapping its key range (level 0
//!    when level 0 does): every version it shares an entity with is then in
//!    a deeper level (an older commit) or flushed after step 2 into level 0
//!    (a newer one), which is the order reads and the index rebuild assume.
//!    An import into a new group or key range lands where compaction would
//!    have taken it, and is not rewritten straight after. If the commit
//!    fails the engine is read-only and the files are removed at the next
//!    open; index entries naming them fall back to searches, which never
//!    see them.

mod ranges;
mod runs;

use crate::compaction::Placement;
use crate::engine::{sst_path, Engine, Inner};
use crate::hash_index::Location;
use crate::sstable::{BuildOptions, TableSummary};
use crate::types::{check_limits, Kind, SeqNo, TableId, Timestamp};
use crate::version::{ReadView, TableHandle, Version, NUM_LEVELS};
use crate::{Error, Result};
use ranges::Numbering;
use runs::{Buffer, Runs};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Directory of the runs of ingests in progress.
pub(crate) const INGEST_DIR: &str = "ingest";
/// What a committed ingest wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestInfo {
    /// Versions ingested.
    pub versions: u64,
    /// Sequence of the first (in input order); 0 when nothing was ingested.
    pub first_seq: SeqNo,
    /// Sequence of the last.
    pub last_seq: SeqNo,
    /// The ingest time every version carries.
    pub ingest_ts: Timestamp,
    /// SSTs installed.
    pub files: usize,
}

/// A bulk ingest into one table in progress; see the module docs.
pub struct Ingest {
    inner: Arc<Inner>,
    /// Versions not yet handed to the run writer.
    buffer: Buffer,
    runs: Runs,
    /// Versions added so far (the next input ordinal).
    versions: u64,
}

impl Engine {
    /// Starts a bulk ingest into `table`. Nothing is visible until
    /// [`Ingest::commit`].
    pub fn begin_ingest(&self, table: TableId) -> Result<Ingest> {
        self.inner.check_writable()?;
        let dir = self.inner.dir.join(INGEST_DIR);
        self.inner
            .opts
            .fs
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        Ok(Ingest {
            inner: self.inner.clone(),
            buffer: Buffer::new(table, 0, self.inner.opts.ingest_run_bytes / 2),
            runs: Runs::new(self.inner.clone()),
            versions: 0,
        })
    }
}

impl Ingest {
    /// Adds a row version.
    pub fn put(&mut self, key: &[u8], event_ts: Timestamp, value: &[u8]) -> Result<()> {
        self.add(key, event_ts, Kind::Put, value)
    }

    /// Adds a tombstone: the key is absent as of `event_ts`.
    pub fn delete(&mut self, key: &[u8], event_ts: Timestamp) -> Result<()> {
        self.add(key, event_ts, Kind::Tombstone, &[])
    }

    /// Versions added so far.
    pub fn versions(&self) -> u64 {
        self.versions
    }

    fn add(&mut self, key: &[u8], event_ts: Timestamp, kind: Kind, value: &[u8]) -> Result<()> {
        check_limits(key, value.len())?;
        self.buffer.push(key, event_ts, kind, value);
        self.versions += 1;
        if self.buffer.is_full() {
            self.spill()?;
        }
        Ok(())
    }

    /// Hands the buffer to the run writer.
    fn spill(&mut self) -> Result<()> {
        let next = self.buffer.successor(self.versions);
        let full = std::mem::replace(&mut self.buffer, next);
        self.runs.spill(full)
    }

    /// Discards everything added.
    pub fn abort(self) {}

    /// Makes every added version visible at once; see the module docs for
    /// the order of steps. An empty ingest commits nothing.
    pub fn commit(mut self) -> Result<IngestInfo> {
        let inner = self.inner.clone();
        let _no_compaction = inner.compaction_lock.lock();
        let n = self.versions;
        if n == 0 {
            return Ok(IngestInfo {
                versions: 0,
                first_seq: 0,
                last_seq: 0,
                ingest_ts: inner.now(),
                files: 0,
            });
        }
        let (base, ingest_ts, first_newer_gen, frozen) = inner.reserve_ingest(n)?;
        inner.wait_flushed(frozen)?;
        self.spill()?;
        let numbering = Numbering { base, ingest_ts };
        let runs = self.runs.finish()?;
        // Built as for level 1, compressed: an ingest is large and read for a
        // long time before compaction rewrites it. Its blocks are larger
        // (`ingest_block_bytes`): bulk readers sweep it first, and a block's
        // fixed costs (zstd's tables, a read, a checksum) spread over more
        // entries.
        let build = BuildOptions {
            block_bytes: inner.opts.ingest_block_bytes,
            ..inner.build_options(1)
        };
        let outputs = ranges::write(&inner, runs, inner.opts.ingest_threads, &numbering, build)?;
        let files: Vec<u64> = outputs.summaries.iter().map(|s| s.file_no).collect();
        let version = inner.pin().version.clone();
        let handles = match outputs
            .summaries
            .iter()
            .map(|s| inner.open_handle(s, deepest_free_level(&version, s)))
            .collect::<Result<Vec<_>>>()
        {
            Ok(h) => h,
            Err(e) => {
                inner.forget_tables(&files);
                inner.remove_ssts(&files);
                return Err(e);
            }
        };
        inner.point_index_at_ingest(&outputs.placements, base + n - 1, first_newer_gen);
        let last_seq = base + n - 1;
        if let Err(e) = inner.install_ingest(&handles, last_seq) {
            inner.forget_tables(&files);
            return Err(e);
        }
        Ok(IngestInfo {
            versions: n,
            first_seq: base,
            last_seq,
            ingest_ts,
            files: handles.len(),
        })
    }
}

/// The deepest level such that no file at it or above overlaps `s`.
fn deepest_free_level(version: &Version, s: &TableSummary) -> u32 {
    let (lo, hi) = (
        (s.smallest.0, &s.smallest.1[..]),
        (s.largest.0, &s.largest.1[..]),
    );
    let free = (0..NUM_LEVELS)
        .take_while(|&level| version.overlapping(level, lo, hi).is_empty())
        .last();
    free.map_or(0, |level| level as u32)
}

impl Inner {
    /// Step 2: freezes the active memtable and reserves `n` sequence numbers.
    /// Returns the first, the ingest time, the generation of the first
    /// memtable written after the reservation, and the newest generation
    /// that must be flushed first.
    fn reserve_ingest(&self, n: u64) -> Result<(SeqNo, Timestamp, u64, Option<u64>)> {
        let mut w = self.writer.lock();
        self.check_writable()?;
        if !w.active.is_empty() {
            self.rotate(&mut w)?;
        }
        let base = w.next_seq;
        w.next_seq = base
            .checked_add(n)
            .ok_or_else(|| Error::InvalidArgument("sequence numbers exhausted".into()))?;
        let ingest_ts = self.now().max(w.last_ingest_ts);
        w.last_ingest_ts = ingest_ts;
        let first_newer_gen = w.active.gen();
        drop(w);
        let frozen = self.pin().mems.iter().skip(1).map(|m| m.gen()).max();
        Ok((base, ingest_ts, first_newer_gen, frozen))
    }

    /// Step 5: points index entries at the ingest's newest versions, unless
    /// they name something newer. A current entry with the same event time
    /// is the later commit when it lives in a memtable written after the
    /// reservation, or in an SST flushed from one.
    fn point_index_at_ingest(
        &self,
        placements: &[Placement],
        last_seq: SeqNo,
        first_newer_gen: u64,
    ) {
        let tables = self.tables.read();
        let later = |loc: Location| match loc {
            Location::Mem { gen, .. } => gen >= first_newer_gen,
            Location::Sst { file_no, .. } => tables
                .get(&file_no)
                .is_some_and(|h| h.meta.min_seq > last_seq),
        };
        for p in placements {
            let loc = Location::Sst {
                file_no: p.file_no,
                block: p.block,
            };
            self.index
                .upsert_unless_later(p.digest, p.event_ts, loc, later);
        }
    }

    /// Step 6: the manifest commit and the view swap.
    fn install_ingest(&self, handles: &[Arc<TableHandle>], last_seq: SeqNo) -> Result<()> {
        let mut m = self.manifest.lock();
        let mut next = m.clone();
        next.id += 1;
        next.files.extend(handles.iter().map(|h| h.meta.clone()));
        next.last_seq = next.last_seq.max(last_seq);
        next.last_ingest_ts = next.last_ingest_ts.max(self.now());
        next.counters.user_bytes += handles.iter().map(|h| h.meta.raw_bytes).sum::<u64>();
        self.commit_manifest(&next)?;
        *m = next;
        let mut view = self.view.write();
        *view = Arc::new(ReadView {
            mems: view.mems.clone(),
            version: Arc::new(view.version.apply(handles, &HashSet::new())),
        });
        self.visible_seq.fetch_max(last_seq, Ordering::AcqRel);
        drop(view);
        // A level grew: compaction may have work once the lock is released.
        self.request_compaction();
        Ok(())
    }

    /// Removes SSTs that were written but never installed.
    fn remove_ssts(&self, files: &[u64]) {
        for &f in files {
            let _ = self.opts.fs.remove(&sst_path(&self.dir, f));
        }
    }

    /// Drops the open handles of files that were never installed.
    fn forget_tables(&self, files: &[u64]) {
        let mut tables = self.tables.write();
        for f in files {
            tables.remove(f);
        }
    }
}
