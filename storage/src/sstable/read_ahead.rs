//! Read-ahead for long scans (exports): a helper thread reads, verifies
//! and decompresses the blocks of a run of tables, in order, ahead of the
//! scan that walks them, so block decoding and the scan's merge run on
//! different cores.
//!
//! Each table is read as a sweep ([`Sweep`]): blocks come from the block
//! cache when there and are otherwise read in runs of consecutive blocks,
//! without being cached.
//!
//! Invariants:
//! - at most [`READ_AHEAD_BATCHES`] batches of [`READ_AHEAD_BATCH`]
//!   decoded blocks wait for the scan, besides the batch the helper fills
//!   and the one the scan walks, so a slow scan holds bounded memory;
//! - blocks arrive in order, the tables in the order given, each table
//!   from its first block that can hold the scanned table id to its last;
//! - an error arrives in place of its block and ends the stream;
//! - dropping the stream stops the helper at its next block and waits for
//!   it, so no table outlives the stream.

use super::{Block, Sweep, Table};
use crate::types::TableId;
use crate::{Error, Result};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Blocks the helper hands over at once: handing them one by one would
/// cost a thread wake-up per 4 KiB block.
const READ_AHEAD_BATCH: usize = 64;
/// Most batches waiting for the scan: enough (about 4 MiB of blocks) that
/// the helper keeps decoding while the scan's last chunk is on the wire.
const READ_AHEAD_BATCHES: usize = 16;

/// A batch of blocks in order; an error, if any, is its last item.
type Batch = Vec<Result<Block>>;

/// The blocks of a run of tables, decoded ahead on a helper thread.
pub(crate) struct BlockStream {
    /// `None` once the stream has ended.
    batches: Option<Receiver<Batch>>,
    /// The batch being handed out, reversed so the next block pops.
    current: Batch,
    helper: Option<JoinHandle<()>>,
}

impl BlockStream {
    /// Streams the blocks of `tables` that can hold entries of `table_id`,
    /// table after table. The helper inherits the caller's thread priority.
    pub(crate) fn start(tables: Vec<Arc<Table>>, table_id: TableId) -> BlockStream {
        let (tx, rx) = crossbeam_channel::bounded(READ_AHEAD_BATCHES);
        let spawned = std::thread::Builder::new()
            .name("tessera-read-ahead".into())
            .spawn(move || send_blocks(&tables, table_id, &tx));
        let (batches, helper) = match spawned {
            Ok(helper) => (rx, Some(helper)),
            Err(e) => {
                // The stream ends with the error: its receiver holds it.
                let (tx, rx) = crossbeam_channel::bounded(1);
                let msg = format!("cannot start a read-ahead thread: {e}");
                let _ = tx.send(vec![Err(Error::Background(msg))]);
                (rx, None)
            }
        };
        BlockStream {
            batches: Some(batches),
            current: Vec::new(),
            helper,
        }
    }
}

/// The helper's loop: stops after the first error, or once the scan has
/// dropped its end.
fn send_blocks(tables: &[Arc<Table>], table_id: TableId, tx: &Sender<Batch>) {
    let mut batch = Vec::with_capacity(READ_AHEAD_BATCH);
    for t in tables {
        let mut sweep = Sweep::default();
        for idx in t.blocks_of(table_id) {
            let block = sweep.block(t, idx);
            let failed = block.is_err();
            batch.push(block);
            if failed {
                let _ = tx.send(batch);
                return;
            }
            if batch.len() == READ_AHEAD_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_AHEAD_BATCH));
                if tx.send(full).is_err() {
                    return;
                }
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
}

impl Iterator for BlockStream {
    type Item = Result<Block>;

    fn next(&mut self) -> Option<Result<Block>> {
        if self.current.is_empty() {
            let mut batch = self.batches.as_ref()?.recv().ok()?;
            batch.reverse();
            self.current = batch;
        }
        let block = self.current.pop()?;
        if block.is_err() {
            self.batches = None;
        }
        Some(block)
    }
}

impl Drop for BlockStream {
    fn drop(&mut self) {
        // Disconnects the channel: a helper blocked on a full channel wakes
        // with an error and returns.
        self.batches = None;
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::cache::BlockCache;
    use crate::fs::OsFs;
    use crate::types::Entry;

    /// Entries of table ids 1, 2 and 3, enough for many batches of blocks.
    fn entries(keys: u32) -> Vec<Entry> {
        let mut v = Vec::new();
        for table in 1..=3 {
            for k in 0..keys {
                v.push(put(table, &k.to_be_bytes(), 5, 1, &[table as u8; 24]));
            }
        }
        v
    }

    fn open(dir: &std::path::Path, name: &str, entries: &[Entry]) -> (Arc<Table>, Arc<BlockCache>) {
        let (path, _, _) = build(dir, name, entries, small_blocks(256));
        let cache = Arc::new(BlockCache::new(64 << 20));
        let t = Table::open(Arc::new(OsFs::default()), &path, 1, cache.clone()).unwrap();
        (t, cache)
    }

    fn rows_of(stream: BlockStream, table: TableId) -> Vec<Entry> {
        let mut rows = Vec::new();
        for block in stream {
            let block = block.unwrap();
            for i in 0..block.len() {
                let e = block.to_entry(i).unwrap();
                if e.table == table {
                    rows.push(e);
                }
            }
        }
        rows
    }

    #[test]
    fn streams_the_blocks_of_one_table_id_in_order_without_caching_them() {
        let dir = tempfile::tempdir().unwrap();
        let all = entries(8_000);
        let (t, cache) = open(dir.path(), "a.sst", &all);
        assert!(t.blocks_of(2).len() > READ_AHEAD_BATCH * (READ_AHEAD_BATCHES + 2));
        t.block(t.blocks_of(2).start + 3).unwrap();
        let cached = cache.used_bytes();
        let want: Vec<Entry> = all.iter().filter(|e| e.table == 2).cloned().collect();
        let stream = BlockStream::start(vec![t.clone()], 2);
        assert_eq!(rows_of(stream, 2), want);
        assert_eq!(cache.used_bytes(), cached, "the scan cached blocks");
        assert_eq!(cache.hits(), 1, "the cached block was not used");
    }

    #[test]
    fn tables_follow_one_another() {
        let dir = tempfile::tempdir().unwrap();
        let (low, high) = entries(300).into_iter().partition::<Vec<_>, _>(|e| {
            e.table == 1 || (e.table == 2 && e.key[..] < 150u32.to_be_bytes()[..])
        });
        let (a, _) = open(dir.path(), "a.sst", &low);
        let (b, _) = open(dir.path(), "b.sst", &high);
        let want: Vec<Entry> = entries(300).into_iter().filter(|e| e.table == 2).collect();
        assert_eq!(rows_of(BlockStream::start(vec![a, b], 2), 2), want);
    }

    #[test]
    fn a_damaged_block_ends_the_stream_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "d.sst", &entries(2_000), small_blocks(256));
        let t = Table::open(
            Arc::new(OsFs::default()),
            &path,
            1,
            Arc::new(BlockCache::new(1 << 20)),
        )
        .unwrap();
        let damaged = t.blocks_of(2).start + 100;
        let offset = t.handle(damaged).unwrap().offset;
        drop(t);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize + 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let t = Table::open(
            Arc::new(OsFs::default()),
            &path,
            1,
            Arc::new(BlockCache::new(1 << 20)),
        )
        .unwrap();
        let results: Vec<Result<Block>> = BlockStream::start(vec![t.clone()], 2).collect();
        let (last, good) = results.split_last().unwrap();
        assert_eq!(good.len(), 100);
        assert!(good.iter().all(Result::is_ok));
        let err = last.as_ref().unwrap_err().to_string();
        assert!(err.contains("d.sst"), "{err}");
    }

    #[test]
    fn dropping_a_stream_early_stops_its_helper() {
        let dir = tempfile::tempdir().unwrap();
        let (t, _) = open(dir.path(), "e.sst", &entries(2_000));
        let mut stream = BlockStream::start(vec![t.clone()], 1);
        assert!(stream.next().unwrap().is_ok());
        drop(stream);
        // The helper has ended: the table is held here alone.
        assert_eq!(Arc::strong_count(&t), 1);
    }
}
