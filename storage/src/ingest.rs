//! Bulk ingest: versions written straight into SSTs, bypassing the WAL and
//! the memtable, visible all at once when the ingest commits.
//!
//! An [`Ingest`] buffers versions in memory up to
//! [`Options::ingest_run_bytes`](crate::Options), then sorts the buffer and
//! spills it as a *run* (an uncompressed SST) under `ingest/`; input in any
//! order is sorted in bounded memory. [`Ingest::commit`] merges the runs
//! into compressed level-0 SSTs and installs them with one manifest commit.
//! Dropping an ingest (or [`Ingest::abort`]) removes its runs; the next open
//! removes whatever a crash left in `ingest/` or `sst/`.
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
//! 4. merge the runs into SSTs through compaction's output writer (which
//!    splits files between entities and drops versions past retention, which
//!    no read would show), numbering versions from the reserved range in
//!    input order (equal `(key, event_ts)`: the later input row is the later
//!    commit), and fsync them and the directory;
//! 5. point the hash index at each entity's newest ingested version unless
//!    the current entry is newer (an equal event time from a write after
//!    step 2 stays, being the later commit). Readers that meet a location
//!    not yet in their view fall back to a full search, so nothing of the
//!    ingest is visible before step 6;
//! 6. commit a manifest naming the SSTs at level 0 and swap in a view with
//!    them: the commit point. If it fails the engine is read-only and the
//!    files are removed at the next open; index entries naming them fall
//!    back to searches, which never see them.

use crate::compaction::{OutputWriter, Outputs, Placement};
use crate::engine::{Engine, Inner};
use crate::hash_index::Location;
use crate::merge::{MergeIter, Source};
use crate::sstable::{BuildOptions, Table, TableBuilder};
use crate::types::{check_limits, Entry, Kind, SeqNo, TableId, Timestamp};
use crate::version::{ReadView, TableHandle};
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Directory of the runs of ingests in progress.
pub(crate) const INGEST_DIR: &str = "ingest";
/// Fixed cost of one buffered version beyond its key and value bytes.
const ENTRY_OVERHEAD: usize = 96;
/// Most versions in one run, whatever the memory budget: the sort indexes
/// the buffer with `u32`s.
const MAX_RUN_VERSIONS: usize = 1 << 31;

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
    table: TableId,
    /// Versions not yet spilled, with `seq` holding their input ordinal.
    buffer: Vec<Entry>,
    buffer_bytes: usize,
    /// Spilled runs, each sorted.
    runs: Vec<(PathBuf, Arc<Table>)>,
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
            table,
            buffer: Vec::new(),
            buffer_bytes: 0,
            runs: Vec::new(),
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
        self.buffer.push(Entry {
            table: self.table,
            key: Bytes::copy_from_slice(key),
            event_ts,
            seq: self.versions,
            ingest_ts: 0,
            kind,
            value: Bytes::copy_from_slice(value),
        });
        self.versions += 1;
        self.buffer_bytes += key.len() + value.len() + ENTRY_OVERHEAD;
        if self.buffer_bytes >= self.inner.opts.ingest_run_bytes
            || self.buffer.len() >= MAX_RUN_VERSIONS
        {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts the buffer and writes it as a run.
    fn spill(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let order = sorted_order(&self.buffer);
        let file_no = self.inner.alloc_file_no();
        let path = self
            .inner
            .dir
            .join(INGEST_DIR)
            .join(format!("{file_no:012}.run"));
        let fs = &*self.inner.opts.fs;
        let options = BuildOptions {
            compress_data: false,
            ..self.inner.build_options(0)
        };
        let written = (|| {
            let mut builder = TableBuilder::create(fs, &path, file_no, options)?;
            for &i in &order {
                builder.add(&self.buffer[i as usize].as_ref())?;
            }
            builder.finish()?;
            Table::open(
                self.inner.opts.fs.clone(),
                &path,
                file_no,
                self.inner.cache.clone(),
            )
        })();
        match written {
            Ok(table) => self.runs.push((path, table)),
            Err(e) => {
                let _ = fs.remove(&path);
                return Err(e);
            }
        }
        self.buffer.clear();
        self.buffer_bytes = 0;
        Ok(())
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
        let mut out = OutputWriter::new(&inner, 1);
        let outputs = match self.write_ssts(&mut out, base, ingest_ts) {
            Ok(outputs) => outputs,
            Err(e) => {
                out.abandon();
                return Err(e);
            }
        };
        let files: Vec<u64> = outputs.summaries.iter().map(|s| s.file_no).collect();
        let handles = match outputs
            .summaries
            .iter()
            .map(|s| inner.open_handle(s, 0))
            .collect::<Result<Vec<_>>>()
        {
            Ok(h) => h,
            Err(e) => {
                inner.forget_tables(&files);
                out.abandon();
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

    /// Merges the runs through `out`, numbering versions from `base`.
    /// Outputs are compressed (built as for level 1): an ingest is large and
    /// read for a long time before compaction rewrites it.
    fn write_ssts(
        &self,
        out: &mut OutputWriter<'_>,
        base: SeqNo,
        ingest_ts: Timestamp,
    ) -> Result<Outputs> {
        let sources: Vec<Source<'_>> = self
            .runs
            .iter()
            .map(|(_, t)| Box::new(t.iter()) as Source<'_>)
            .collect();
        let numbered = MergeIter::new(sources).map(|e| {
            e.map(|mut e| {
                e.seq += base;
                e.ingest_ts = ingest_ts;
                e
            })
        });
        out.consume(numbered)?;
        out.finish()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let fs = &*self.inner.opts.fs;
        for (path, _) in self.runs.drain(..) {
            let _ = fs.remove(&path);
        }
    }
}

/// The buffer's indexes in storage order, sorted on a compact copy of each
/// entry: its table, the key's first 8 bytes as one integer, the key's
/// length (capped at 9) and its event time. For keys of at most 8 bytes
/// that decides everything but equal `(key, event_ts)`; only those ties and
/// longer keys sharing their first 8 bytes fall back to the full, byte-wise
/// comparison, which otherwise dominated the sort.
fn sorted_order(buffer: &[Entry]) -> Vec<u32> {
    struct Item {
        table: TableId,
        len: u8,
        prefix: u64,
        event_ts: Timestamp,
        index: u32,
    }
    let item = |(i, e): (usize, &Entry)| {
        let mut b = [0u8; 8];
        let n = e.key.len().min(8);
        b[..n].copy_from_slice(&e.key[..n]);
        Item {
            table: e.table,
            len: e.key.len().min(9) as u8,
            prefix: u64::from_be_bytes(b),
            event_ts: e.event_ts,
            index: i as u32,
        }
    };
    let mut items: Vec<Item> = buffer.iter().enumerate().map(item).collect();
    items.sort_unstable_by(|a, b| {
        (a.table, a.prefix, a.len)
            .cmp(&(b.table, b.prefix, b.len))
            .then_with(|| match a.len {
                // Equal short keys: newest event first.
                0..=8 => b.event_ts.cmp(&a.event_ts),
                _ => std::cmp::Ordering::Equal,
            })
            .then_with(|| buffer[a.index as usize].cmp_order(&buffer[b.index as usize]))
    });
    items.into_iter().map(|it| it.index).collect()
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
            Location::Mem { gen } => gen >= first_newer_gen,
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
        // Level 0 grew: compaction may have work once the lock is released.
        self.request_compaction();
        Ok(())
    }

    /// Drops the open handles of files that were never installed.
    fn forget_tables(&self, files: &[u64]) {
        let mut tables = self.tables.write();
        for f in files {
            tables.remove(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The compact sort gives exactly the storage order, whatever the
        /// key lengths (around the 8-byte prefix) and ties.
        #[test]
        fn sorted_order_is_storage_order(
            entries in proptest::collection::vec(
                (0u32..3, proptest::collection::vec(0u8..3, 0..12), 0i64..4),
                0..200,
            )
        ) {
            let buffer: Vec<Entry> = entries
                .into_iter()
                .enumerate()
                .map(|(i, (table, key, event_ts))| Entry {
                    table,
                    key: Bytes::from(key),
                    event_ts,
                    seq: i as u64,
                    ingest_ts: 0,
                    kind: Kind::Put,
                    value: Bytes::new(),
                })
                .collect();
            let got: Vec<&Entry> = sorted_order(&buffer).into_iter().map(|i| &buffer[i as usize]).collect();
            let mut want: Vec<&Entry> = buffer.iter().collect();
            want.sort_by(|a, b| a.cmp_order(b));
            prop_assert_eq!(got, want);
        }
    }
}
