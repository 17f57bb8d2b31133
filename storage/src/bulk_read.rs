//! Bulk as-of reads: the batched point-in-time reads of training-set joins,
//! answered exactly as [`Engine::multi_as_of`] answers them but read the
//! way a scan reads.
//!
//! A join sends its lookups sorted by key, so consecutive lookups land in
//! the same or the next block of each file. A bulk read keeps, per file,
//! the last block it read and uses it again while the lookups stay in it.
//! A block it reads comes from the block cache when there and is otherwise
//! read without being cached ([`Table::block_for_scan`]): a join sweeps
//! whole tables, and caching them would evict what slates keep warm (and,
//! on a fresh server, page in a cache's worth of new memory).
//!
//! Invariants:
//! - the answer to each lookup is the one [`Engine::multi_as_of`] gives: the
//!   same sources (memtables, then each level's candidate file past its
//!   bloom filter), the same first version within the bounds in each, the
//!   same choice among sources and the same visibility rules;
//! - answers do not depend on the order of the lookups, only the speed does;
//! - the hash index is not consulted: it names a key's newest version,
//!   which an as-of read can use only when that version is old enough,
//!   while sorted lookups find their block without it.

use crate::engine::Engine;
use crate::read::{check_batch, visible, AsOfQuery, Bounds};
use crate::sstable::{Block, Table};
use crate::types::{Entry, Row, SeqNo, TableId};
use crate::version::ReadView;
use crate::{Digest, Result};

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
                let digest = Digest::of(inner.seed, table, q.key);
                let best = best_version(&view, table, q.key, digest, bounds, &mut held)?;
                Ok(best.and_then(|e| visible(e.into(), q.as_of, now, opts)))
            })
            .collect()
    }
}

/// Of every source, the newest version of `(table, key)` within `bounds`
/// (before visibility rules).
fn best_version(
    view: &ReadView,
    table: TableId,
    key: &[u8],
    digest: Digest,
    bounds: Bounds,
    held: &mut HeldBlocks,
) -> Result<Option<Entry>> {
    let mut best: Option<Entry> = None;
    let mut offer = |e: Entry| {
        if best
            .as_ref()
            .is_none_or(|b| (e.event_ts, e.seq) > (b.event_ts, b.seq))
        {
            best = Some(e);
        }
    };
    for m in &view.mems {
        if let Some(e) = m
            .versions_from(table, key, bounds.max_event_ts, SeqNo::MAX)
            .find(|e| bounds.admits(e.event_ts, e.seq, e.ingest_ts))
        {
            offer(e);
        }
    }
    for h in view.version.candidates(table, key) {
        if !h.table.may_contain(digest) {
            continue;
        }
        if let Some(e) = held.first_admitted(&h.table, h.meta.file_no, table, key, bounds)? {
            offer(e);
        }
    }
    Ok(best)
}

/// Per file, the last block a bulk read read. A read touches a handful of
/// files (level-0 files and one per deeper level), so a list will do.
#[derive(Default)]
struct HeldBlocks {
    /// `(file number, block index, block)`.
    blocks: Vec<(u64, u32, Block)>,
}

impl HeldBlocks {
    /// The index of the block held for `file_no`.
    fn held_index(&self, file_no: u64) -> Option<u32> {
        self.blocks
            .iter()
            .find(|(f, _, _)| *f == file_no)
            .map(|&(_, idx, _)| idx)
    }

    /// Block `idx` of `t`, the held one if it is that block.
    fn block(&mut self, t: &Table, file_no: u64, idx: u32) -> Result<Block> {
        match self.blocks.iter_mut().find(|(f, _, _)| *f == file_no) {
            Some((_, held_idx, block)) => {
                if *held_idx != idx {
                    *block = t.block_for_scan(idx)?;
                    *held_idx = idx;
                }
                Ok(block.clone())
            }
            None => {
                let block = t.block_for_scan(idx)?;
                self.blocks.push((file_no, idx, block.clone()));
                Ok(block)
            }
        }
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
        let target = (table, key, bounds.max_event_ts, SeqNo::MAX);
        // Sorted lookups mostly stay in the held block: check it first.
        let mut idx = match self.held_index(file_no) {
            Some(held) if t.is_block_at_or_after(held, target) => held,
            _ => t.block_at_or_after(target),
        };
        if idx >= t.data_blocks() {
            return Ok(None);
        }
        let mut block = self.block(t, file_no, idx)?;
        let mut pos = block.seek(table, key, bounds.max_event_ts, SeqNo::MAX)?;
        loop {
            if pos >= block.len() {
                // The key's versions go on in the next block.
                idx += 1;
                if idx >= t.data_blocks() {
                    return Ok(None);
                }
                block = self.block(t, file_no, idx)?;
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
