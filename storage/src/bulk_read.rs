//! Bulk as-of reads: the batched point-in-time reads of training-set joins,
//! answered exactly as [`Engine::multi_as_of`] answers them but read the
//! way a scan reads.
//!
//! A join sends its lookups sorted by key, so consecutive lookups land in
//! the same or the next block of each file. A bulk read keeps, per file,
//! the last block it read and uses it again while the lookups stay in it.
//! Each file is read as a sweep ([`Sweep`]): a block comes from the block
//! cache when there and is otherwise read, in runs of consecutive blocks
//! while the lookups go through the file block after block, without being
//! cached: a join sweeps whole tables, and caching them would evict what
//! slates keep warm (and, on a fresh server, page in a cache's worth of
//! new memory).
//!
//! Invariants:
//! - the answer to each lookup is the one [`Engine::multi_as_of`] gives: the
//!   same search of the sources (`Inner::best_version`), the same first
//!   version within the bounds in each file, the same visibility rules;
//! - answers do not depend on the order of the lookups, only the speed does;
//! - the hash index is not consulted: it names a key's newest version,
//!   which an as-of read can use only when that version is old enough,
//!   while sorted lookups find their block without it.

use crate::engine::Engine;
use crate::read::{check_batch, visible, AsOfQuery, Bounds};
use crate::sstable::{Block, Sweep, Table};
use crate::types::{Entry, Row, SeqNo, TableId};
use crate::Result;

impl Engine {
    /// [`Engine::multi_as_of`] for bulk work: the same answers, in request
    /// order, read as the module docs say; fastest when `queries` are
    /// sorted by key.
    pub fn bulk_as_of(
        &self,
        table: TableId,
        queries: &[AsOfQuery<'_>],
    ) -> Result<Vec<Option<Row>>> {
        check_batch(queries.len())?;
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        let opts = inner.table_options(table);
        let mut held = HeldBlocks::default();
        queries
            .iter()
            .map(|q| {
                let bounds = Bounds {
                    max_event_ts: q.as_of,
                    known_at: q.known_at,
                    max_seq,
                };
                let best = inner.best_version(&view, table, q.key, bounds, |h| {
                    held.first_admitted(&h.table, h.meta.file_no, table, q.key, bounds)
                })?;
                Ok(best.and_then(|e| visible(e.into(), q.as_of, now, opts)))
            })
            .collect()
    }
}

/// Per file, the last block a bulk read read and its sweep. A read
/// touches a handful of files (level-0 files and one per deeper level), so
/// a list will do.
#[derive(Default)]
struct HeldBlocks {
    files: Vec<HeldFile>,
}

/// A file's last block read (index and block) and its sweep.
struct HeldFile {
    file_no: u64,
    block: Option<(u32, Block)>,
    sweep: Sweep,
}

impl HeldBlocks {
    /// What is held for `file_no`.
    fn of(&mut self, file_no: u64) -> &mut HeldFile {
        let i = match self.files.iter().position(|f| f.file_no == file_no) {
            Some(i) => i,
            None => {
                self.files.push(HeldFile {
                    file_no,
                    block: None,
                    sweep: Sweep::default(),
                });
                self.files.len() - 1
            }
        };
        &mut self.files[i]
    }

    /// In `t`, the first version of `(table, key)` within `bounds`, in
    /// storage order (newest first).
    fn first_admitted(
        &mut self,
        t: &Table,
        file_no: u64,
        table: TableId,
        key: &[u8],
        bounds: Bounds,
    ) -> Result<Option<Entry>> {
        let held = self.of(file_no);
        let target = (table, key, bounds.max_event_ts, SeqNo::MAX);
        // Sorted lookups mostly stay in the held block: check it first.
        let mut idx = match held.block {
            Some((h, _)) if t.is_block_at_or_after(h, target) => h,
            _ => t.block_at_or_after(target),
        };
        if idx >= t.data_blocks() {
            return Ok(None);
        }
        let mut block = load(held, t, idx)?;
        let mut pos = block.seek(table, key, bounds.max_event_ts, SeqNo::MAX)?;
        loop {
            if pos >= block.len() {
                // The key's versions go on in the next block.
                idx += 1;
                if idx >= t.data_blocks() {
                    return Ok(None);
                }
                block = load(held, t, idx)?;
                pos = 0;
                continue;
            }
            let e = block.entry(pos)?;
            if e.table != table || e.key != key {
                return Ok(None);
            }
            if bounds.admits(e.event_ts, e.seq, e.ingest_ts) {
                return block.to_entry(pos).map(Some);
            }
            pos += 1;
        }
    }
}

/// Block `idx` of `t`: the held one if it is that block, else read by the
/// file's sweep and held in its place.
fn load(held: &mut HeldFile, t: &Table, idx: u32) -> Result<Block> {
    match &held.block {
        Some((h, block)) if *h == idx => Ok(block.clone()),
        _ => {
            let block = held.sweep.block(t, idx)?;
            held.block = Some((idx, block.clone()));
            Ok(block)
        }
    }
}
