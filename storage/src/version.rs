//! The version set: which SSTs are live, per level, and the read view that
//! pairs them with the memtables.
//!
//! A [`Version`] is immutable. Flushes and compactions build a new one and
//! swap it in; a reader pins the [`ReadView`] it started with (an `Arc`), so
//! the files it reads stay open and on disk until it is done. A file removed
//! from the live set is deleted when the last version holding it is dropped.
//!
//! Level invariants (leveled compaction):
//! - level 0 holds flushed memtables, newest first; their key ranges overlap;
//! - each level `>= 1` holds files with disjoint key ranges, sorted by key;
//! - for any entity, its versions in level `n` are newer (higher `seq`) than
//!   its versions in level `n + 1`.

use crate::fs::FileSystem;
use crate::manifest::FileMeta;
use crate::memtable::Memtable;
use crate::sstable::Table;
use crate::types::{cmp_entity, TableId};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Number of LSM levels.
pub const NUM_LEVELS: usize = 7;

/// An open SST plus its manifest record. Deletes its file on drop once it is
/// marked obsolete.
pub(crate) struct TableHandle {
    pub(crate) table: Arc<Table>,
    pub(crate) meta: FileMeta,
    obsolete: AtomicBool,
    fs: Arc<dyn FileSystem>,
}

impl TableHandle {
    pub(crate) fn new(table: Arc<Table>, meta: FileMeta, fs: Arc<dyn FileSystem>) -> Self {
        TableHandle {
            table,
            meta,
            obsolete: AtomicBool::new(false),
            fs,
        }
    }

    /// Marks the file for deletion once no version references it.
    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    /// True if `(table, key)` lies within this file's key range.
    pub(crate) fn covers(&self, table: TableId, key: &[u8]) -> bool {
        let lo = (self.meta.smallest.0, self.meta.smallest.1.as_ref());
        let hi = (self.meta.largest.0, self.meta.largest.1.as_ref());
        cmp_entity((table, key), lo).is_ge() && cmp_entity((table, key), hi).is_le()
    }

    /// True if this file's key range intersects `[lo, hi]`.
    pub(crate) fn overlaps(&self, lo: (TableId, &[u8]), hi: (TableId, &[u8])) -> bool {
        let my_lo = (self.meta.smallest.0, self.meta.smallest.1.as_ref());
        let my_hi = (self.meta.largest.0, self.meta.largest.1.as_ref());
        cmp_entity(my_lo, hi).is_le() && cmp_entity(lo, my_hi).is_le()
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            if let Err(e) = self.fs.remove(self.table.path()) {
                tracing::warn!(path = %self.table.path().display(), error = %e,
                    "could not delete obsolete SST; it will be removed at next open");
            }
        }
    }
}

/// An immutable set of live SSTs.
pub(crate) struct Version {
    levels: Vec<Vec<Arc<TableHandle>>>,
    /// Every file, sorted by file number: point reads find the file a hash
    /// index entry names by binary search, cheaper than hashing per key.
    by_file: Vec<(u64, Arc<TableHandle>)>,
}

impl Version {
    /// A version holding `handles`, placed by their `meta.level`.
    pub(crate) fn new(handles: Vec<Arc<TableHandle>>) -> Version {
        let mut levels: Vec<Vec<Arc<TableHandle>>> = vec![Vec::new(); NUM_LEVELS];
        let mut by_file: Vec<_> = handles
            .iter()
            .map(|h| (h.meta.file_no, h.clone()))
            .collect();
        by_file.sort_by_key(|(file_no, _)| *file_no);
        by_file.dedup_by_key(|(file_no, _)| *file_no);
        for h in handles {
            let level = (h.meta.level as usize).min(NUM_LEVELS - 1);
            levels[level].push(h);
        }
        // Level 0: newest first (flushes carry increasing sequence numbers).
        levels[0].sort_by_key(|h| std::cmp::Reverse(h.meta.max_seq));
        for level in levels.iter_mut().skip(1) {
            level.sort_by(|a, b| {
                cmp_entity(
                    (a.meta.smallest.0, &a.meta.smallest.1),
                    (b.meta.smallest.0, &b.meta.smallest.1),
                )
            });
        }
        Version { levels, by_file }
    }

    /// This version with `added` files and without the `removed` file numbers.
    pub(crate) fn apply(&self, added: &[Arc<TableHandle>], removed: &HashSet<u64>) -> Version {
        let mut handles: Vec<Arc<TableHandle>> = self
            .by_file
            .iter()
            .filter(|(file_no, _)| !removed.contains(file_no))
            .map(|(_, h)| h.clone())
            .collect();
        handles.extend(added.iter().cloned());
        Version::new(handles)
    }

    /// The live file with this number.
    pub(crate) fn table(&self, file_no: u64) -> Option<&Arc<TableHandle>> {
        let i = self
            .by_file
            .binary_search_by_key(&file_no, |(n, _)| *n)
            .ok()?;
        self.by_file.get(i).map(|(_, h)| h)
    }

    /// Files of one level (level 0 newest first, others in key order).
    pub(crate) fn level(&self, level: usize) -> &[Arc<TableHandle>] {
        self.levels.get(level).map_or(&[], |l| l.as_slice())
    }

    /// Total file bytes of one level.
    pub(crate) fn level_bytes(&self, level: usize) -> u64 {
        self.level(level).iter().map(|h| h.meta.file_bytes).sum()
    }

    /// Every live file.
    pub(crate) fn files(&self) -> impl Iterator<Item = &Arc<TableHandle>> {
        self.levels.iter().flatten()
    }

    /// Files that may hold `(table, key)`: every covering level-0 file,
    /// newest first, then at most one file per deeper level.
    pub(crate) fn candidates<'a>(
        &'a self,
        table: TableId,
        key: &'a [u8],
    ) -> impl Iterator<Item = &'a Arc<TableHandle>> + 'a {
        let l0 = self.levels[0].iter().filter(move |h| h.covers(table, key));
        let deeper = self.levels[1..]
            .iter()
            .filter_map(move |level| find_in_level(level, table, key));
        l0.chain(deeper)
    }

    /// Files of `level` whose ranges intersect `[lo, hi]`.
    pub(crate) fn overlapping(
        &self,
        level: usize,
        lo: (TableId, &[u8]),
        hi: (TableId, &[u8]),
    ) -> Vec<Arc<TableHandle>> {
        self.level(level)
            .iter()
            .filter(|h| h.overlaps(lo, hi))
            .cloned()
            .collect()
    }
}

/// Binary search in a sorted, non-overlapping level.
fn find_in_level<'a>(
    level: &'a [Arc<TableHandle>],
    table: TableId,
    key: &[u8],
) -> Option<&'a Arc<TableHandle>> {
    let idx = level.partition_point(|h| {
        cmp_entity((h.meta.largest.0, &h.meta.largest.1), (table, key)).is_lt()
    });
    level.get(idx).filter(|h| h.covers(table, key))
}

/// What a reader pins: the memtables (active first, then frozen newest to
/// oldest) and the live SSTs, taken atomically.
pub(crate) struct ReadView {
    pub(crate) mems: Vec<Arc<Memtable>>,
    pub(crate) version: Arc<Version>,
}

impl ReadView {
    /// The memtable of generation `gen`, if this view holds it.
    pub(crate) fn memtable(&self, gen: u64) -> Option<&Arc<Memtable>> {
        self.mems.iter().find(|m| m.gen() == gen)
    }
}
