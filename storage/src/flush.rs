//! Flush: a frozen memtable becomes one level-0 SST.
//!
//! Order of a flush, and why:
//! 1. write the SST and fsync it, then fsync the `sst/` directory;
//! 2. point hash-index entries that still name this memtable at the SST
//!    block holding each key's newest version (a key written again since
//!    points at a newer memtable and is left alone). This happens before the
//!    SST is visible to compaction, which only relocates entries naming its
//!    inputs; a reader meanwhile finds the SST missing from its view and
//!    falls back to a search, which still sees the memtable;
//! 3. commit a manifest naming it, with `wal_min_segment` moved past the
//!    memtable's WAL segments (the commit point: before it, recovery replays
//!    the WAL and deletes the orphan SST; after it, the SST is live), and in
//!    the same critical section swap in a read view with the SST and without
//!    the memtable. If the commit fails, step 2 is undone;
//! 4. delete the WAL segments now covered by the SST.

use crate::engine::{sst_path, Inner, SST_DIR, WAL_DIR};
use crate::hash_index::{Location, UNKNOWN_SLOT};
use crate::manifest::FileMeta;
use crate::memtable::Memtable;
use crate::sstable::{BuildOptions, Table, TableBuilder, TableSummary};
use crate::version::{ReadView, TableHandle};
use crate::{Digest, Error, Result};
use std::collections::HashSet;
use std::sync::Arc;

/// Where one entity's newest version landed in a new SST.
pub(crate) struct Placement {
    pub(crate) digest: Digest,
    pub(crate) block: u32,
}

impl Inner {
    /// Build settings for an SST of `level`. Level-0 SSTs (flushes) store
    /// data blocks uncompressed unless `compress_level0` is set: the flush
    /// is what writers wait on, level 0 is compacted away soon, and the
    /// compaction that rewrites it compresses.
    pub(crate) fn build_options(&self, level: usize) -> BuildOptions {
        BuildOptions {
            block_bytes: self.opts.block_bytes,
            zstd_level: self.opts.zstd_level,
            compress_data: level > 0 || self.opts.compress_level0,
            bloom_bits_per_key: self.opts.bloom_bits_per_key,
            digest_seed: self.seed,
        }
    }

    pub(crate) fn alloc_file_no(&self) -> u64 {
        let mut m = self.manifest.lock();
        let n = m.next_file_no;
        m.next_file_no += 1;
        n
    }

    /// Flushes the oldest frozen memtable. Returns false if there is none.
    pub(crate) fn flush_oldest_frozen(&self) -> Result<bool> {
        let view = self.pin();
        let Some(mem) = view.mems.iter().skip(1).last().cloned() else {
            return Ok(false);
        };
        drop(view);
        self.flush_memtable(&mem)?;
        Ok(true)
    }

    fn flush_memtable(&self, mem: &Arc<Memtable>) -> Result<()> {
        let file_no = self.alloc_file_no();
        let path = sst_path(&self.dir, file_no);
        let (summary, placements) = match self.write_memtable_sst(mem, file_no) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.opts.fs.remove(&path);
                return Err(e);
            }
        };
        let handle = match self.open_handle(&summary, 0) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.opts.fs.remove(&path);
                return Err(e);
            }
        };
        // Point the index at the SST before any other thread can see it:
        // once installed, compaction may pick it, and its relocations only
        // move entries that already name an input file.
        let gen = mem.gen();
        let sst_loc = |block| Location::Sst { file_no, block };
        for p in &placements {
            self.index
                .relocate(p.digest, |loc| loc.is_in_memtable(gen), sst_loc(p.block));
        }
        if let Err(e) = self.install_flush(mem, handle) {
            // The memtable is still live: point its keys back at it (their
            // slots forgotten: readers search it), so a retry relocates
            // them to its own SST. Nothing is deleted: the commit may have
            // landed (the engine is read-only now), and an SST no manifest
            // names is removed at the next open.
            let mem_loc = Location::Mem {
                gen,
                slot: UNKNOWN_SLOT,
            };
            for p in &placements {
                self.index
                    .relocate(p.digest, |loc| loc == sst_loc(p.block), mem_loc);
            }
            return Err(e);
        }
        self.delete_obsolete_wal();
        Ok(())
    }

    fn write_memtable_sst(
        &self,
        mem: &Memtable,
        file_no: u64,
    ) -> Result<(TableSummary, Vec<Placement>)> {
        let fs = &*self.opts.fs;
        let path = sst_path(&self.dir, file_no);
        let mut builder = TableBuilder::create(fs, &path, file_no, self.build_options(0))?;
        let mut placements = Vec::with_capacity(mem.len());
        let mut prev: Option<(u32, bytes::Bytes)> = None;
        for e in mem.iter() {
            let block = builder.add(&e.as_ref())?;
            let new_entity = prev.as_ref().is_none_or(|(t, k)| !e.same_entity(*t, k));
            if new_entity {
                placements.push(Placement {
                    digest: Digest::of(self.seed, e.table, &e.key),
                    block,
                });
                prev = Some((e.table, e.key.clone()));
            }
        }
        let summary = builder.finish()?;
        let sst_dir = self.dir.join(SST_DIR);
        fs.sync_dir(&sst_dir)
            .map_err(|e| Error::io("fsync directory", &sst_dir, e))?;
        Ok((summary, placements))
    }

    /// Opens a freshly written SST and wraps it with its manifest record.
    pub(crate) fn open_handle(&self, s: &TableSummary, level: u32) -> Result<Arc<TableHandle>> {
        let path = sst_path(&self.dir, s.file_no);
        let table = Table::open(self.opts.fs.clone(), &path, s.file_no, self.cache.clone())?;
        let meta = FileMeta {
            file_no: s.file_no,
            level,
            file_bytes: s.file_bytes,
            entries: s.entries,
            smallest: s.smallest.clone(),
            largest: s.largest.clone(),
            min_seq: s.min_seq,
            max_seq: s.max_seq,
            min_event_ts: s.min_event_ts,
            max_event_ts: s.max_event_ts,
            raw_bytes: s.raw_bytes,
        };
        let handle = Arc::new(TableHandle::new(table, meta, self.opts.fs.clone()));
        self.tables.write().insert(s.file_no, handle.clone());
        Ok(handle)
    }

    fn install_flush(&self, mem: &Arc<Memtable>, handle: Arc<TableHandle>) -> Result<()> {
        let mut m = self.manifest.lock();
        // Memtables only join the view while this runs, with newer WAL
        // segments, so this minimum stays valid until the swap below.
        let wal_min = self
            .pin()
            .mems
            .iter()
            .filter(|x| !Arc::ptr_eq(x, mem))
            .map(|x| x.first_wal_segment())
            .min()
            .unwrap_or(mem.first_wal_segment() + 1);
        let mut next = m.clone();
        next.id += 1;
        next.files.push(handle.meta.clone());
        next.wal_min_segment = next.wal_min_segment.max(wal_min);
        next.last_seq = next.last_seq.max(mem.max_seq());
        next.last_ingest_ts = next.last_ingest_ts.max(self.now());
        next.counters.flush_bytes += handle.meta.file_bytes;
        next.counters.user_bytes += self.counters.take_user_bytes();
        // The fsyncs happen without the view lock, so readers never wait
        // on them.
        self.commit_manifest(&next)?;
        *m = next;
        let mut view = self.view.write();
        let remaining: Vec<Arc<Memtable>> = view
            .mems
            .iter()
            .filter(|x| !Arc::ptr_eq(x, mem))
            .cloned()
            .collect();
        *view = Arc::new(ReadView {
            mems: remaining,
            version: Arc::new(view.version.apply(&[handle], &HashSet::new())),
        });
        Ok(())
    }

    /// Removes WAL segments below the manifest's `wal_min_segment`.
    pub(crate) fn delete_obsolete_wal(&self) {
        let wal_min = self.manifest.lock().wal_min_segment;
        let wal_dir = self.dir.join(WAL_DIR);
        let fs = &*self.opts.fs;
        let Ok(segments) = crate::wal::list_segments(fs, &wal_dir) else {
            return;
        };
        for no in segments.into_iter().filter(|&n| n < wal_min) {
            let path = crate::wal::segment_path(&wal_dir, no);
            if let Err(e) = fs.remove(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not delete WAL segment");
            }
        }
    }

    /// Flushes every memtable in the caller's thread (used by `close` after
    /// the background threads stopped).
    pub(crate) fn flush_everything_inline(&self) -> Result<()> {
        {
            let mut w = self.writer.lock();
            if !w.active.is_empty() {
                self.rotate(&mut w)?;
            }
            if w.unsynced {
                self.sync_wal(&mut w)?;
            }
        }
        while self.flush_oldest_frozen()? {}
        Ok(())
    }

    /// Writes the hash-index checkpoint for the current manifest.
    pub(crate) fn write_index_checkpoint(&self) -> Result<()> {
        let m = self.manifest.lock();
        let path = self.dir.join(crate::engine::INDEX_FILE);
        self.index.write_checkpoint(&*self.opts.fs, &path, m.id)
    }
}
