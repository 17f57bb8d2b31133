//! Sweeps: reading a table's data blocks front to back, for scans and
//! sorted bulk reads, with few reads.
//!
//! A sweep reads the blocks it misses in the block cache as runs of
//! consecutive blocks, one read a run, and decodes each block of the run
//! only when asked for it. Runs start at one block and double while the
//! sweep asks for the block right after its run, up to
//! [`MAX_SWEEP_RUN_BYTES`]: a sweep through every block of a table reads
//! it in large runs, while one that skips around (a small join, sparse
//! lookups) reads about what it needs.
//!
//! Invariants:
//! - a block comes from the cache when it is there, and is otherwise
//!   decoded from the run, verified exactly as a single block read would
//!   be; nothing a sweep reads enters the cache;
//! - a run holds only whole blocks, located by their index handles, and
//!   always the block asked for.

use super::table::Table;
use super::Block;
use crate::Result;
use bytes::Bytes;

/// Most bytes one run reads: enough to turn a sweep's reads of ~4 KiB
/// blocks into a few dozen times fewer calls, small enough that a run
/// costs little when a sweep stops early.
const MAX_SWEEP_RUN_BYTES: usize = 256 << 10;

/// A sweep over one table: the run last read and how long the next will be.
#[derive(Debug)]
pub(crate) struct Sweep {
    run: Option<Run>,
    /// Blocks the next run may hold.
    next_blocks: u32,
}

/// Stored bytes of blocks `first..end`, read from file offset `base`.
#[derive(Debug)]
struct Run {
    first: u32,
    end: u32,
    base: u64,
    bytes: Bytes,
}

impl Default for Sweep {
    fn default() -> Sweep {
        Sweep {
            run: None,
            next_blocks: 1,
        }
    }
}

impl Sweep {
    /// Block `idx` of `t`: from the cache if there, else from the run,
    /// reading a new run that starts at `idx` if the run does not hold it.
    pub(crate) fn block(&mut self, t: &Table, idx: u32) -> Result<Block> {
        if let Some(b) = t.cached_block(idx)? {
            return Ok(b);
        }
        let held = self
            .run
            .as_ref()
            .filter(|r| (r.first..r.end).contains(&idx));
        let run = match held {
            Some(run) => run,
            None => self.read_run(t, idx)?,
        };
        let (offset, len) = t.stored_extent(idx)?;
        let start = (offset - run.base) as usize;
        t.finish_block(idx, run.bytes.slice(start..start + len))
    }

    /// Reads the run starting at block `idx`, as long as the sweep's pace
    /// says and [`MAX_SWEEP_RUN_BYTES`] allows (but at least block `idx`).
    fn read_run(&mut self, t: &Table, idx: u32) -> Result<&Run> {
        let sequential = self.run.as_ref().is_some_and(|r| r.end == idx);
        self.next_blocks = match sequential {
            true => self.next_blocks.saturating_mul(2),
            false => 1,
        };
        let (base, first_len) = t.stored_extent(idx)?;
        let mut end = idx + 1;
        let mut run_end = base + first_len as u64;
        while end < t.data_blocks() && end - idx < self.next_blocks {
            let (offset, len) = t.stored_extent(end)?;
            let block_end = offset + len as u64;
            // Blocks follow one another in the file; stop at anything else.
            if offset < run_end || block_end - base > MAX_SWEEP_RUN_BYTES as u64 {
                break;
            }
            run_end = block_end;
            end += 1;
        }
        let bytes = t.read_stored(base, (run_end - base) as usize)?;
        Ok(self.run.insert(Run {
            first: idx,
            end,
            base,
            bytes: Bytes::from(bytes),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::cache::BlockCache;
    use crate::fs::fault::{FaultFs, FaultOp};
    use crate::fs::OsFs;
    use crate::types::Entry;
    use std::sync::Arc;

    fn entries(keys: u32) -> Vec<Entry> {
        (0..keys)
            .map(|k| put(1, &k.to_be_bytes(), 5, 1, &[k as u8; 40]))
            .collect()
    }

    /// A table of `keys` entries in small blocks, read through a counting
    /// file system.
    fn open(dir: &std::path::Path, keys: u32) -> (Arc<Table>, Arc<FaultFs>) {
        let (path, _, _) = build(dir, "s.sst", &entries(keys), small_blocks(256));
        let fs = FaultFs::new(Arc::new(OsFs::default()));
        let cache = Arc::new(BlockCache::new(64 << 20));
        let t = Table::open(fs.clone(), &path, 1, cache).unwrap();
        (t, fs)
    }

    fn entries_of(block: &Block) -> Vec<Entry> {
        (0..block.len())
            .map(|i| block.to_entry(i).unwrap())
            .collect()
    }

    #[test]
    fn a_sweep_through_every_block_reads_the_same_blocks_in_few_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (t, fs) = open(dir.path(), 20_000);
        let blocks = t.data_blocks();
        assert!(blocks > 1_000, "{blocks} blocks");
        let reads_before = fs.op_count(FaultOp::Read);
        let mut sweep = Sweep::default();
        let mut got = Vec::new();
        for idx in 0..blocks {
            got.extend(entries_of(&sweep.block(&t, idx).unwrap()));
        }
        let reads = fs.op_count(FaultOp::Read) - reads_before;
        assert_eq!(got, entries(20_000));
        // Runs grow to MAX_SWEEP_RUN_BYTES: far fewer reads than blocks.
        let file_bytes = std::fs::metadata(t.path()).unwrap().len();
        let most = 20 + file_bytes / MAX_SWEEP_RUN_BYTES as u64 + 1;
        assert!(reads <= most, "{reads} reads for {blocks} blocks");
        assert!(
            t.cached_block(0).unwrap().is_none(),
            "the sweep cached blocks"
        );
    }

    #[test]
    fn a_sweep_that_skips_reads_single_blocks_and_the_right_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (t, fs) = open(dir.path(), 20_000);
        let mut sweep = Sweep::default();
        let reads_before = fs.op_count(FaultOp::Read);
        let wanted: Vec<u32> = (0..t.data_blocks()).step_by(7).collect();
        for &idx in &wanted {
            let block = sweep.block(&t, idx).unwrap();
            assert_eq!(entries_of(&block), entries_of(&t.block(idx).unwrap()));
        }
        // Each sweep read is one block; `t.block` read each once more.
        let reads = fs.op_count(FaultOp::Read) - reads_before;
        assert_eq!(reads, 2 * wanted.len() as u64);
    }

    #[test]
    fn a_cached_block_is_taken_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (t, fs) = open(dir.path(), 2_000);
        t.block(3).unwrap();
        let reads_before = fs.op_count(FaultOp::Read);
        let mut sweep = Sweep::default();
        sweep.block(&t, 3).unwrap();
        assert_eq!(fs.op_count(FaultOp::Read), reads_before);
    }

    #[test]
    fn a_damaged_block_in_a_run_is_an_error_and_the_others_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let (t, _) = open(dir.path(), 20_000);
        let damaged = 40;
        let (offset, _) = t.stored_extent(damaged).unwrap();
        let path = t.path().to_path_buf();
        drop(t);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize + 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let cache = Arc::new(BlockCache::new(1 << 20));
        let t = Table::open(Arc::new(OsFs::default()), &path, 1, cache).unwrap();
        let mut sweep = Sweep::default();
        for idx in 0..t.data_blocks() {
            let block = sweep.block(&t, idx);
            if idx == damaged {
                let err = block.unwrap_err().to_string();
                assert!(err.contains("s.sst"), "{err}");
            } else {
                block.unwrap();
            }
        }
    }
}
