//! [`Table`]: an open SST, and the ways to read it: single blocks through
//! the block cache, batched block loads ([`load_blocks`]), positioned
//! cursors ([`Cursor`]) and full scans for compaction ([`TableIter`]).
//!
//! Opening a table reads and checks the header, footer, properties, index
//! and bloom filter, and keeps them in memory; data blocks and the key
//! directory are read on demand.
//!
//! Invariants: every block read from the file is checksum-verified,
//! decompressed, validated ([`Block::decode`]) and checked against the index
//! (non-empty, its last entry equal to the index record, its first entry
//! above the previous block's last) before it is used or cached. Errors name
//! the file and the damaged block's byte offset.

use super::block::Block;
use super::bloom::Bloom;
use super::footer::{
    check_header, unseal, BlockHandle, Footer, Properties, FOOTER_LEN, HEADER_LEN, PROPS_MAX_LEN,
};
use super::index::BlockIndex;
use super::keydir::{self, KeyDirEntry};
use super::{TableSummary, MAX_BLOCK_LEN};
use crate::cache::{BlockCache, BlockRef, BlockSlots};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, RandomAccessFile, ReadOp};
use crate::types::{cmp_entity, cmp_internal, Entry, EntryRef, SeqNo, TableId, Timestamp};
use bytes::Bytes;
use crossbeam_epoch::Guard;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// A full scan reads consecutive blocks in chunks of about this many bytes.
const ITER_READAHEAD_BYTES: u64 = 256 << 10;

/// An open SST.
pub struct Table {
    file_no: u64,
    path: Arc<Path>,
    file: Arc<dyn RandomAccessFile>,
    cache: Arc<BlockCache>,
    /// This table's blocks in `cache`.
    slots: Arc<BlockSlots>,
    /// Per data block, the fingerprint of its last entry's `(table, key)`:
    /// tells point reads, without touching the index, that a key found at
    /// the start of a block cannot also end the previous one.
    last_fps: Box<[u16]>,
    summary: TableSummary,
    index: BlockIndex,
    bloom: Bloom,
    keydir: BlockHandle,
    key_count: u64,
}

impl Table {
    /// Opens the SST at `path`, numbered `file_no`, caching its blocks in
    /// `cache`.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        path: &Path,
        file_no: u64,
        cache: Arc<BlockCache>,
    ) -> Result<Arc<Table>> {
        let file = fs.open_read(path).map_err(|e| Error::io("open", path, e))?;
        let file_len = file.len();
        let min_len = HEADER_LEN + FOOTER_LEN as u64;
        if file_len < min_len {
            return Err(Error::corruption(
                path,
                0,
                format!("file of {file_len} bytes is shorter than an empty SST ({min_len})"),
            ));
        }
        check_header(&read_exact(&*file, path, 0, HEADER_LEN as usize)?, path)?;
        let footer_at = file_len - FOOTER_LEN as u64;
        let footer_bytes = read_exact(&*file, path, footer_at, FOOTER_LEN)?;
        let footer = Footer::decode(&footer_bytes, path, footer_at)?;
        footer.check_layout(file_len, path)?;

        let props_bytes = read_meta(&*file, path, footer.props, PROPS_MAX_LEN)?;
        let props = Properties::decode(&props_bytes, path, footer.props.offset)?;
        let index_max = BlockIndex::max_encoded_len(props.data_blocks);
        let index_bytes = read_meta(&*file, path, footer.index, index_max)?;
        let index = BlockIndex::decode(
            &index_bytes,
            path,
            footer.index.offset,
            props.data_blocks,
            HEADER_LEN,
            footer.bloom.offset,
        )?;
        check_largest(&props, &index, path, footer.props.offset)?;
        let bloom_max = Bloom::max_encoded_len(props.key_count);
        let bloom_bytes = read_meta(&*file, path, footer.bloom, bloom_max)?;
        let bloom = Bloom::decode(&bloom_bytes, path, footer.bloom.offset)?;

        Ok(Arc::new(Table {
            file_no,
            path: Arc::from(path),
            file,
            cache,
            slots: BlockSlots::new(index.len()),
            last_fps: index.last_fingerprints(),
            summary: props.to_summary(file_no, file_len),
            index,
            bloom,
            keydir: footer.keydir,
            key_count: props.key_count,
        }))
    }

    /// Heap bytes the open table holds whatever is cached: its index (with
    /// the decoded index block its keys point into), bloom filter, block
    /// fingerprints and cache slots. Cached blocks are the cache's.
    pub fn memory_bytes(&self) -> usize {
        self.index.heap_bytes()
            + self.bloom.heap_bytes()
            + self.slots.heap_bytes()
            + std::mem::size_of_val(&*self.last_fps)
    }

    /// The engine's number for this file.
    pub fn file_no(&self) -> u64 {
        self.file_no
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts and bounds of the file.
    pub fn summary(&self) -> &TableSummary {
        &self.summary
    }

    /// Number of data blocks.
    #[inline]
    pub fn data_blocks(&self) -> u32 {
        self.index.len()
    }

    /// False only if no key with digest `d` is in this file (bloom filter).
    #[inline]
    pub fn may_contain(&self, d: Digest) -> bool {
        self.bloom.may_contain(d)
    }

    /// Data block `idx`, from the cache or else read, verified, decompressed
    /// and inserted into the cache.
    #[inline]
    pub fn block(&self, idx: u32) -> Result<Block> {
        self.check_block_no(idx)?;
        if let Some(b) = self.cache.get(&self.slots, idx) {
            return Ok(b);
        }
        self.block_miss(idx)
    }

    #[cold]
    fn block_miss(&self, idx: u32) -> Result<Block> {
        let block = self.read_block(idx)?;
        self.cache.insert(&self.slots, idx, block.clone());
        Ok(block)
    }

    /// Data block `idx` if the cache holds it (counted as a hit or a
    /// miss): how a sweep ([`super::sweep`]) starts, as it never fills the
    /// cache.
    pub(crate) fn cached_block(&self, idx: u32) -> Result<Option<Block>> {
        self.check_block_no(idx)?;
        Ok(self.cache.get(&self.slots, idx))
    }

    /// File offset and stored length (payload and trailer) of block `idx`.
    pub(super) fn stored_extent(&self, idx: u32) -> Result<(u64, usize)> {
        let handle = self.handle(idx)?;
        Ok((handle.offset, handle.stored_len()))
    }

    /// `len` bytes of the file from `offset`, as stored.
    pub(super) fn read_stored(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        read_exact(&*self.file, &self.path, offset, len)
    }

    /// The data block holding the first entry at or after `target` in
    /// storage order; [`Table::data_blocks`] if every entry is below it.
    pub(crate) fn block_at_or_after(&self, target: (TableId, &[u8], Timestamp, SeqNo)) -> u32 {
        self.index.find(target)
    }

    /// Whether block `idx` is [`Table::block_at_or_after`]`(target)`,
    /// checked against two index records instead of a search.
    pub(crate) fn is_block_at_or_after(
        &self,
        idx: u32,
        target: (TableId, &[u8], Timestamp, SeqNo),
    ) -> bool {
        let below = |i: u32| {
            self.index
                .get(i)
                .is_some_and(|r| cmp_internal(r.last(), target) == Ordering::Less)
        };
        idx < self.index.len() && !below(idx) && (idx == 0 || below(idx - 1))
    }

    /// The data blocks that can hold entries of `table`, in order.
    pub(crate) fn blocks_of(&self, table: TableId) -> std::ops::Range<u32> {
        let len = self.index.len();
        let first = self.index.find((table, &[], Timestamp::MAX, SeqNo::MAX));
        // The first block reaching the next table's first possible entry
        // may still start with entries of `table`.
        let end = match table.checked_add(1) {
            Some(next) => self
                .index
                .find((next, &[], Timestamp::MAX, SeqNo::MAX))
                .saturating_add(1)
                .min(len),
            None => len,
        };
        first.min(end)..end
    }

    /// A cursor at the first entry >= `(table, key, event_ts, seq)` in
    /// storage order; `None` if every entry is below it.
    pub fn seek(
        self: &Arc<Self>,
        table: TableId,
        key: &[u8],
        event_ts: Timestamp,
        seq: SeqNo,
    ) -> Result<Option<Cursor>> {
        let idx = self.index.find((table, key, event_ts, seq));
        if idx >= self.index.len() {
            return Ok(None);
        }
        let block = self.block(idx)?;
        let pos = block.seek(table, key, event_ts, seq)?;
        if pos >= block.len() {
            // The index promised an entry >= target in this block.
            return Err(Error::corruption(
                &*self.path,
                block.file_offset(),
                format!("block {idx} holds no entry up to its index record"),
            ));
        }
        Ok(Some(Cursor {
            table: Arc::clone(self),
            block,
            block_idx: idx,
            pos,
        }))
    }

    /// If block `idx` holds the first version in this file of
    /// `(table, key)`, that block and the version's position in it;
    /// otherwise (including when `idx` is out of range) `None`.
    pub fn first_version_in_block(
        &self,
        idx: u32,
        table: TableId,
        key: &[u8],
    ) -> Result<Option<(Block, usize)>> {
        if idx >= self.index.len() {
            return Ok(None);
        }
        let block = self.block(idx)?;
        Ok(self
            .first_version_in(&block, idx, table, key)?
            .map(|pos| (block, pos)))
    }

    /// Like [`Table::first_version_in_block`] for a block the caller already
    /// holds (`block` must be this table's block `idx`): the position of the
    /// first version in this file of `(table, key)`, if it is in `block`.
    pub fn first_version_in(
        &self,
        block: &Block,
        idx: u32,
        table: TableId,
        key: &[u8],
    ) -> Result<Option<usize>> {
        let Some(pos) = block.find_first(table, key)? else {
            return Ok(None);
        };
        let fp = super::block::fingerprint(table, key);
        Ok((!self.spans_from(pos, idx, fp, table, key)).then_some(pos))
    }

    /// [`Table::first_version_in`] starting from `candidate`, the block's
    /// first entry with the key's fingerprint `fp`
    /// ([`Block::first_candidate`]): when that entry is the key
    /// (fingerprints rarely collide) no other entry is compared.
    pub(crate) fn first_version_from(
        &self,
        block: &Block,
        idx: u32,
        candidate: usize,
        fp: u16,
        table: TableId,
        key: &[u8],
    ) -> Result<Option<usize>> {
        let (t, k, _, _) = block.key_at(candidate)?;
        if t != table || k != key {
            return self.first_version_in(block, idx, table, key);
        }
        Ok((!self.spans_from(candidate, idx, fp, table, key)).then_some(candidate))
    }

    /// True if `(table, key)`, of fingerprint `fp`, found at position `pos`
    /// of block `idx` also has versions at the end of the previous block
    /// (which hold its first versions in this file).
    fn spans_from(&self, pos: usize, idx: u32, fp: u16, table: TableId, key: &[u8]) -> bool {
        if pos != 0 || idx == 0 {
            return false;
        }
        let prev = idx as usize - 1;
        // A different fingerprint rules it out; equal ones are confirmed.
        self.last_fps.get(prev).is_none_or(|&f| f == fp)
            && self
                .index
                .get(idx - 1)
                .is_some_and(|p| cmp_entity((p.table, &p.key), (table, key)) == Ordering::Equal)
    }

    /// Starts loading what [`Table::first_version_from`] checks of block
    /// `idx` beyond the block itself.
    #[inline]
    pub(crate) fn prefetch_span_check(&self, idx: u32) {
        if let Some(fp) = (idx as usize)
            .checked_sub(1)
            .and_then(|p| self.last_fps.get(p))
        {
            crate::prefetch::prefetch(fp);
        }
    }

    /// A cursor on entry `pos` of `block`, which must be this table's block
    /// `idx` (as returned by [`Table::block`] or [`load_blocks`]).
    pub fn cursor_at(self: &Arc<Self>, block: Block, idx: u32, pos: usize) -> Cursor {
        Cursor {
            table: Arc::clone(self),
            block,
            block_idx: idx,
            pos,
        }
    }

    /// All entries in storage order, for compaction. Reads ahead in large
    /// chunks and does not touch the block cache. Keys and values are
    /// zero-copy slices of the read buffers.
    pub fn iter(self: &Arc<Self>) -> TableIter {
        self.iter_from_block(0)
    }

    /// An iterator over every entry from the first block that can hold an
    /// entity after `(table, key)` (entries of `(table, key)` and before it
    /// may come first; the caller skips them).
    pub(crate) fn iter_near_entity_after(
        self: &Arc<Self>,
        table: TableId,
        key: &[u8],
    ) -> TableIter {
        // (key, MIN, 0) is the last position of `key` in storage order: blocks
        // ending before it hold nothing after the entity.
        self.iter_from_block(self.index.find((table, key, Timestamp::MIN, 0)))
    }

    /// The `(table, key)` of data block `idx`'s last entry.
    pub(crate) fn block_last_entity(&self, idx: u32) -> Option<(TableId, &[u8])> {
        self.index.get(idx).map(|e| (e.table, &e.key[..]))
    }

    fn iter_from_block(self: &Arc<Self>, first: u32) -> TableIter {
        TableIter {
            table: Arc::clone(self),
            next_block: first,
            chunk: Bytes::new(),
            chunk_at: 0,
            current: None,
            pos: 0,
            done: false,
        }
    }

    /// The key directory: one record per distinct `(table, key)` in storage
    /// order. Read from the file on every call (it is not cached).
    pub fn key_directory(&self) -> Result<Vec<KeyDirEntry>> {
        let max = usize::try_from(keydir::encoded_len(self.key_count)).unwrap_or(usize::MAX);
        let data = read_meta(&*self.file, &self.path, self.keydir, max)?;
        keydir::decode(
            &data,
            &self.path,
            self.keydir.offset,
            self.key_count,
            self.index.len(),
        )
    }

    /// Asks the kernel to drop the file's cached pages (cold-read benchmarks).
    pub fn drop_page_cache(&self) -> Result<()> {
        self.file
            .drop_page_cache()
            .map_err(|e| Error::io("drop page cache", &*self.path, e))
    }

    #[inline]
    fn check_block_no(&self, idx: u32) -> Result<()> {
        match idx < self.index.len() {
            true => Ok(()),
            false => Err(Error::InvalidArgument(format!(
                "block {idx} of {} has only {} data blocks",
                self.path.display(),
                self.index.len()
            ))),
        }
    }

    pub(super) fn handle(&self, idx: u32) -> Result<BlockHandle> {
        self.check_block_no(idx)?;
        self.index
            .get(idx)
            .map(|e| e.handle)
            .ok_or_else(|| Error::InvalidArgument(format!("no block {idx}")))
    }

    /// Reads block `idx` from the file, bypassing the cache.
    fn read_block(&self, idx: u32) -> Result<Block> {
        let handle = self.handle(idx)?;
        let buf = read_exact(&*self.file, &self.path, handle.offset, handle.stored_len())?;
        self.finish_block(idx, Bytes::from(buf))
    }

    /// Verifies and decodes block `idx` read as payload plus trailer.
    pub(super) fn finish_block(&self, idx: u32, stored: Bytes) -> Result<Block> {
        let handle = self.handle(idx)?;
        let data = unseal(stored, &self.path, handle.offset, MAX_BLOCK_LEN)?;
        let block = Block::decode_shared(data, Arc::clone(&self.path), handle.offset)?;
        self.check_against_index(idx, &block)?;
        Ok(block)
    }

    /// The block must be non-empty, end with the entry its index record
    /// names, and start above the previous block's last entry.
    fn check_against_index(&self, idx: u32, block: &Block) -> Result<()> {
        let bad = |what: &str| {
            Error::corruption(
                &*self.path,
                block.file_offset(),
                format!("data block {idx} disagrees with the index: {what}"),
            )
        };
        let Some(record) = self.index.get(idx) else {
            return Err(bad("no index record"));
        };
        let Some(last) = block.len().checked_sub(1) else {
            return Err(bad("the block is empty"));
        };
        if cmp_internal(block.key_at(last)?, record.last()) != Ordering::Equal {
            return Err(bad("its last entry is not the indexed one"));
        }
        if let Some(prev) = idx.checked_sub(1).and_then(|p| self.index.get(p)) {
            if cmp_internal(prev.last(), block.key_at(0)?) != Ordering::Less {
                return Err(bad("its first entry is not above the previous block"));
            }
        }
        Ok(())
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        self.cache.release(&self.slots);
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// The properties' largest key must be the entity of the index's last record.
fn check_largest(props: &Properties, index: &BlockIndex, path: &Path, offset: u64) -> Result<()> {
    let Some(last) = index.len().checked_sub(1).and_then(|i| index.get(i)) else {
        return Ok(()); // empty table: the properties were checked to be empty
    };
    let (table, key) = (&props.largest.0, &props.largest.1);
    if cmp_entity((*table, key), (last.table, &last.key)) != Ordering::Equal {
        return Err(Error::corruption(
            path,
            offset,
            "properties' largest key is not the index's last key",
        ));
    }
    Ok(())
}

/// Reads exactly `len` bytes at `offset`.
fn read_exact(
    file: &dyn RandomAccessFile,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_at(offset, &mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// Reads, verifies and decodes a meta block of at most `max_len` decoded bytes.
fn read_meta(
    file: &dyn RandomAccessFile,
    path: &Path,
    handle: BlockHandle,
    max_len: usize,
) -> Result<Bytes> {
    let buf = read_exact(file, path, handle.offset, handle.stored_len())?;
    unseal(Bytes::from(buf), path, handle.offset, max_len)
}

/// A block a batched read holds: borrowed from the cache under the read's
/// epoch guard, or owned when the read itself loaded it.
pub(crate) enum HeldBlock<'g> {
    Cached(BlockRef<'g>),
    Loaded(Block),
}

impl Deref for HeldBlock<'_> {
    type Target = Block;
    fn deref(&self) -> &Block {
        match self {
            HeldBlock::Cached(b) => b,
            HeldBlock::Loaded(b) => b,
        }
    }
}

/// [`load_blocks_pinned`] returning owned handles.
pub fn load_blocks(fs: &dyn FileSystem, reqs: &[(&Table, u32)]) -> Result<Vec<Block>> {
    let guard = crossbeam_epoch::pin();
    let held = load_blocks_pinned(fs, reqs, &guard)?;
    Ok(held.iter().map(|b| Block::clone(b)).collect())
}

/// Loads several blocks, possibly of different tables: cache hits are
/// borrowed from each table's slots under `guard`; the misses are read with
/// one [`FileSystem::read_batch`] (io_uring submits them at once), then
/// verified, decompressed and inserted into their table's cache. A block
/// asked for twice is read once. If the batch fails, the misses are read
/// one by one so that a persistent failure names its file. Results are in
/// request order.
pub(crate) fn load_blocks_pinned<'g>(
    fs: &dyn FileSystem,
    reqs: &[(&Table, u32)],
    guard: &'g Guard,
) -> Result<Vec<HeldBlock<'g>>> {
    // Issue every slot's load, then every block header's, before reading
    // any, so that their misses overlap.
    for &(table, idx) in reqs {
        table.check_block_no(idx)?;
        table.slots.prefetch(idx);
    }
    for &(table, idx) in reqs {
        table.slots.prefetch_block(idx);
    }
    let mut out: Vec<Option<HeldBlock<'g>>> = Vec::with_capacity(reqs.len());
    // Distinct missing blocks, and for each request the miss it waits on.
    let mut misses: Vec<(&Table, u32)> = Vec::new();
    let mut waits: Vec<(usize, usize)> = Vec::new();
    let mut slot_of: HashMap<(*const Table, u32), usize> = HashMap::new();
    for (i, &(table, idx)) in reqs.iter().enumerate() {
        let hit = table.cache.peek(&table.slots, idx, guard);
        if hit.is_none() {
            let slot = *slot_of
                .entry((table as *const Table, idx))
                .or_insert_with(|| {
                    misses.push((table, idx));
                    misses.len() - 1
                });
            waits.push((i, slot));
        }
        out.push(hit.map(HeldBlock::Cached));
    }
    if let Some(&(table, _)) = reqs.first() {
        let missed = waits.len() as u64;
        table.cache.count(reqs.len() as u64 - missed, missed);
    }
    if !misses.is_empty() {
        let loaded = read_misses(fs, &misses)?;
        for &(req, slot) in &waits {
            if let (Some(o), Some(b)) = (out.get_mut(req), loaded.get(slot)) {
                *o = Some(HeldBlock::Loaded(b.clone()));
            }
        }
    }
    out.into_iter()
        .map(|b| b.ok_or_else(|| Error::InvalidArgument("a requested block was not loaded".into())))
        .collect()
}

/// Reads the distinct `misses` in one batch and caches them.
fn read_misses(fs: &dyn FileSystem, misses: &[(&Table, u32)]) -> Result<Vec<Block>> {
    let mut handles = Vec::with_capacity(misses.len());
    for &(table, idx) in misses {
        handles.push(table.handle(idx)?);
    }
    let mut bufs: Vec<Vec<u8>> = handles.iter().map(|h| vec![0u8; h.stored_len()]).collect();
    let batch = {
        let mut ops: Vec<ReadOp<'_>> = misses
            .iter()
            .zip(&handles)
            .zip(bufs.iter_mut())
            .map(|((&(table, _), h), buf)| ReadOp {
                file: &*table.file,
                offset: h.offset,
                buf: buf.as_mut_slice(),
            })
            .collect();
        fs.read_batch(&mut ops)
    };
    let mut blocks = Vec::with_capacity(misses.len());
    for ((&(table, idx), h), buf) in misses.iter().zip(&handles).zip(bufs) {
        let buf = match batch {
            Ok(()) => buf,
            Err(_) => read_exact(&*table.file, &table.path, h.offset, h.stored_len())?,
        };
        let block = table.finish_block(idx, Bytes::from(buf))?;
        table.cache.insert(&table.slots, idx, block.clone());
        blocks.push(block);
    }
    Ok(blocks)
}

/// A position on one entry of a table; advancing crosses block boundaries.
pub struct Cursor {
    table: Arc<Table>,
    block: Block,
    block_idx: u32,
    pos: usize,
}

impl Cursor {
    /// The entry under the cursor.
    pub fn entry(&self) -> Result<EntryRef<'_>> {
        self.check_valid()?;
        self.block.entry(self.pos)
    }

    /// The value of the entry under the cursor (zero-copy).
    pub fn value(&self) -> Result<Bytes> {
        self.check_valid()?;
        self.block.value(self.pos)
    }

    /// The entry under the cursor, owned; key and value are zero-copy.
    pub fn to_entry(&self) -> Result<Entry> {
        self.check_valid()?;
        self.block.to_entry(self.pos)
    }

    /// Moves to the next entry; `false` at the end of the table, after which
    /// the cursor no longer has an entry.
    pub fn advance(&mut self) -> Result<bool> {
        if self.pos >= self.block.len() {
            return Ok(false);
        }
        self.pos += 1;
        if self.pos < self.block.len() {
            return Ok(true);
        }
        let next = self.block_idx + 1;
        if next >= self.table.data_blocks() {
            return Ok(false);
        }
        // On error the cursor stays past the end of the old block.
        self.block = self.table.block(next)?;
        self.block_idx = next;
        self.pos = 0;
        Ok(true)
    }

    /// The data block the cursor is in.
    pub fn block_index(&self) -> u32 {
        self.block_idx
    }

    /// The cursor's position within its block.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn check_valid(&self) -> Result<()> {
        match self.pos < self.block.len() {
            true => Ok(()),
            false => Err(Error::InvalidArgument(format!(
                "cursor is past the end of {}",
                self.table.path.display()
            ))),
        }
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("path", &self.table.path)
            .field("block", &self.block_idx)
            .field("pos", &self.pos)
            .finish()
    }
}

/// A full scan of a table in storage order (see [`Table::iter`]). Yields
/// `Err` once and then ends if a block cannot be read.
pub struct TableIter {
    table: Arc<Table>,
    next_block: u32,
    /// Read-ahead buffer holding whole stored blocks from file offset `chunk_at`.
    chunk: Bytes,
    chunk_at: u64,
    current: Option<Block>,
    pos: usize,
    done: bool,
}

impl TableIter {
    /// Block `idx` as payload plus trailer, from the read-ahead chunk,
    /// refilling it if needed.
    fn stored_block(&mut self, idx: u32) -> Result<Bytes> {
        let handle = self.table.handle(idx)?;
        if let Some(b) = self.slice_chunk(handle) {
            return Ok(b);
        }
        self.fill_chunk(idx)?;
        self.slice_chunk(handle).ok_or_else(|| {
            Error::corruption(
                &*self.table.path,
                handle.offset,
                "block is not where the index says",
            )
        })
    }

    fn slice_chunk(&self, h: BlockHandle) -> Option<Bytes> {
        let start = usize::try_from(h.offset.checked_sub(self.chunk_at)?).ok()?;
        let end = start.checked_add(h.stored_len())?;
        (end <= self.chunk.len()).then(|| self.chunk.slice(start..end))
    }

    /// Reads blocks `idx..` into the chunk, up to about
    /// `ITER_READAHEAD_BYTES` (at least one block).
    fn fill_chunk(&mut self, idx: u32) -> Result<()> {
        let table = &self.table;
        let start = table.handle(idx)?.offset;
        let mut end = start;
        let mut i = idx;
        while let Some(e) = table.index.get(i) {
            let block_end = e.handle.end().unwrap_or(u64::MAX);
            if i > idx && block_end.saturating_sub(start) > ITER_READAHEAD_BYTES {
                break;
            }
            end = block_end;
            i += 1;
        }
        let len = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        self.chunk = Bytes::from(read_exact(&*table.file, &table.path, start, len)?);
        self.chunk_at = start;
        Ok(())
    }

    fn load_next_block(&mut self) -> Result<()> {
        let idx = self.next_block;
        let stored = self.stored_block(idx)?;
        self.current = Some(self.table.finish_block(idx, stored)?);
        self.pos = 0;
        self.next_block += 1;
        Ok(())
    }
}

impl Iterator for TableIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        while !self.done {
            if let Some(block) = &self.current {
                if self.pos < block.len() {
                    let e = block.to_entry(self.pos);
                    self.pos += 1;
                    self.done = e.is_err();
                    return Some(e);
                }
            }
            if self.next_block >= self.table.data_blocks() {
                self.done = true;
                break;
            }
            if let Err(e) = self.load_next_block() {
                self.done = true;
                return Some(Err(e));
            }
        }
        None
    }
}

impl fmt::Debug for TableIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableIter")
            .field("path", &self.table.path)
            .field("next_block", &self.next_block)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{BuildOptions, TableBuilder};
    use super::*;
    use crate::fs::{OsFs, WritableFile};
    use crate::types::Kind;
    use proptest::prelude::*;
    use std::io;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

    fn collect(t: &Arc<Table>) -> Result<Vec<Entry>> {
        t.iter().collect()
    }

    /// The key directory a correct file must have.
    fn model_keydir(entries: &[Entry], blocks: &[u32], seed: u64) -> Vec<KeyDirEntry> {
        let mut out: Vec<KeyDirEntry> = Vec::new();
        let mut prev: Option<&Entry> = None;
        for (e, &b) in entries.iter().zip(blocks) {
            if prev.is_none_or(|p| p.table != e.table || p.key != e.key) {
                out.push(KeyDirEntry {
                    digest: Digest::of(seed, e.table, &e.key),
                    event_ts: e.event_ts,
                    block: b,
                });
            }
            prev = Some(e);
        }
        out
    }

    fn check_seek(
        t: &Arc<Table>,
        entries: &[Entry],
        target: &Entry,
    ) -> std::result::Result<(), TestCaseError> {
        let want = entries.partition_point(|e| e.cmp_order(target) == Ordering::Less);
        let cursor = t
            .seek(target.table, &target.key, target.event_ts, target.seq)
            .unwrap();
        match cursor {
            None => prop_assert_eq!(want, entries.len()),
            Some(mut c) => {
                // Walk a few entries to cross block boundaries.
                for e in entries.iter().skip(want).take(4) {
                    prop_assert_eq!(&c.to_entry().unwrap(), e);
                    prop_assert_eq!(c.entry().unwrap(), e.as_ref());
                    prop_assert_eq!(c.value().unwrap(), e.value.clone());
                    c.advance().unwrap();
                }
                if want + 4 >= entries.len() {
                    prop_assert!(c.entry().is_err());
                    prop_assert!(!c.advance().unwrap());
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip(
            raw in proptest::collection::vec(entry_strategy(), 0..150),
            targets in proptest::collection::vec(entry_strategy(), 0..30),
            block_bytes in prop::sample::select(vec![1usize, 64, 200, 4096]),
        ) {
            let entries = sorted_unique(raw);
            let dir = tempfile::tempdir().unwrap();
            let opts = small_blocks(block_bytes);
            let (path, summary, blocks) = build(dir.path(), "t.sst", &entries, opts);
            let t = open(&path).unwrap();
            prop_assert_eq!(t.summary(), &summary);
            prop_assert_eq!(summary.entries, entries.len() as u64);
            prop_assert_eq!(t.data_blocks(), blocks.last().map_or(0, |b| b + 1));
            prop_assert_eq!(collect(&t).unwrap(), entries.clone());
            if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                prop_assert_eq!(&summary.smallest, &(first.table, first.key.clone()));
                prop_assert_eq!(&summary.largest, &(last.table, last.key.clone()));
                prop_assert_eq!(summary.min_seq, entries.iter().map(|e| e.seq).min().unwrap());
                prop_assert_eq!(summary.max_event_ts, entries.iter().map(|e| e.event_ts).max().unwrap());
                let raw_bytes: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
                prop_assert_eq!(summary.raw_bytes, raw_bytes as u64);
            }
            for target in targets.iter().chain(&entries) {
                check_seek(&t, &entries, target)?;
            }
            let keydir = model_keydir(&entries, &blocks, opts.digest_seed);
            prop_assert_eq!(&t.key_directory().unwrap(), &keydir);
            // For every entry's block, and the blocks around it, the model
            // answer: the key's first version if it lives in that block.
            for (e, &b) in entries.iter().zip(&blocks) {
                prop_assert!(t.may_contain(Digest::of(opts.digest_seed, e.table, &e.key)));
                let (first, &first_block) = entries.iter().zip(&blocks)
                    .find(|(f, _)| f.table == e.table && f.key == e.key)
                    .unwrap();
                for probe in [b.saturating_sub(1), b, b + 1] {
                    let found = t.first_version_in_block(probe, e.table, &e.key).unwrap();
                    let found = found.map(|(blk, pos)| blk.to_entry(pos).unwrap());
                    let want = (probe == first_block).then(|| first.clone());
                    prop_assert_eq!(found, want);
                }
            }
        }
    }

    #[test]
    fn first_version_in_block_rejects_later_blocks_of_a_spanning_key() {
        let entries: Vec<Entry> = (0..20)
            .rev()
            .map(|ts| put(1, b"k", ts, 1, &[ts as u8; 30]))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, blocks) = build(dir.path(), "t.sst", &entries, small_blocks(64));
        assert!(
            blocks.last().copied().unwrap_or(0) >= 5,
            "the key should span blocks"
        );
        let t = open(&path).unwrap();
        let (blk, pos) = t.first_version_in_block(0, 1, b"k").unwrap().unwrap();
        assert_eq!((blk.entry(pos).unwrap().event_ts, pos), (19, 0));
        for b in 1..t.data_blocks() {
            assert!(t.first_version_in_block(b, 1, b"k").unwrap().is_none());
        }
        assert!(t.first_version_in_block(0, 1, b"j").unwrap().is_none());
        assert!(t.first_version_in_block(99, 1, b"k").unwrap().is_none());
        // "As of" seeks land inside later blocks.
        let c = t.seek(1, b"k", 3, u64::MAX).unwrap().unwrap();
        assert_eq!(c.entry().unwrap().event_ts, 3);
        assert!(c.block_index() > 0);
    }

    #[test]
    fn first_version_from_checks_its_candidate_and_spans() {
        // Key "a" then "k" (spanning blocks) then "z".
        let mut entries = vec![put(1, b"a", 5, 1, &[1; 30])];
        entries.extend((0..20).rev().map(|ts| put(1, b"k", ts, 1, &[ts as u8; 30])));
        entries.push(put(1, b"z", 5, 1, &[2; 30]));
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "t.sst", &entries, small_blocks(64));
        let t = open(&path).unwrap();
        let fp = |key: &[u8]| super::super::block::fingerprint(1, key);
        for idx in 0..t.data_blocks() {
            let block = t.block(idx).unwrap();
            for key in [&b"a"[..], b"k", b"z"] {
                let expected = t.first_version_in(&block, idx, 1, key).unwrap();
                // From the block's own candidate, and from a wrong candidate
                // (as after a fingerprint collision): the same answer.
                if let Some(c) = block.first_candidate(fp(key)) {
                    let got = t.first_version_from(&block, idx, c, fp(key), 1, key);
                    assert_eq!(got.unwrap(), expected, "block {idx}");
                }
                for wrong in 0..block.len() {
                    let got = t.first_version_from(&block, idx, wrong, fp(key), 1, key);
                    assert_eq!(got.unwrap(), expected, "block {idx}, candidate {wrong}");
                }
            }
        }
        // Only the first block holding "k" answers for it.
        let answers = (0..t.data_blocks())
            .filter(|&idx| {
                let block = t.block(idx).unwrap();
                t.first_version_in(&block, idx, 1, b"k").unwrap().is_some()
            })
            .count();
        assert_eq!(answers, 1);
    }

    #[test]
    fn empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let (path, summary, _) = build(dir.path(), "e.sst", &[], small_blocks(4096));
        assert_eq!((summary.entries, summary.data_blocks), (0, 0));
        let t = open(&path).unwrap();
        assert!(collect(&t).unwrap().is_empty());
        assert!(t.seek(0, b"", i64::MAX, u64::MAX).unwrap().is_none());
        assert!(t.key_directory().unwrap().is_empty());
        assert!(!t.may_contain(Digest::of(42, 0, b"")));
        assert!(matches!(t.block(0), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn memory_bytes_counts_what_opening_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (0..2_000u32)
            .map(|i| put(0, &i.to_be_bytes(), 1, u64::from(i), &[7u8; 40]))
            .collect();
        let (path, summary, _) = build(dir.path(), "m.sst", &entries, small_blocks(512));
        let t = open(&path).unwrap();
        let blocks = summary.data_blocks as usize;
        assert!(blocks > 100, "{blocks} blocks");
        // At least one index record, slot and fingerprint per block and ten
        // filter bits per key; no more than the file's own size on top.
        let floor = blocks
            * (std::mem::size_of::<super::super::index::IndexEntry>()
                + std::mem::size_of::<usize>()
                + 2)
            + 2_000 * 10 / 8;
        let file_len = std::fs::metadata(&path).unwrap().len() as usize;
        let m = t.memory_bytes();
        assert!(
            m >= floor && m <= floor + file_len,
            "{m} bytes, floor {floor}"
        );
        let (empty, _, _) = build(dir.path(), "e.sst", &[], small_blocks(512));
        assert!(open(&empty).unwrap().memory_bytes() < 1_024);
    }

    fn data_block_kinds(t: &Table) -> Vec<u8> {
        let bytes = std::fs::read(t.path()).unwrap();
        (0..t.data_blocks())
            .map(|i| {
                let h = t.index.get(i).unwrap().handle;
                bytes[(h.offset + u64::from(h.len)) as usize]
            })
            .collect()
    }

    #[test]
    fn incompressible_blocks_are_stored_raw_and_compressible_ones_zstd() {
        let mut rng_state = 0x1234_5678_9abc_def0u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    rng_state ^= rng_state << 13;
                    rng_state ^= rng_state >> 7;
                    rng_state ^= rng_state << 17;
                    rng_state as u8
                })
                .collect()
        };
        let random: Vec<Entry> = (0..50u32)
            .map(|i| put(1, &i.to_be_bytes(), 0, 1, &noise(500)))
            .collect();
        let text: Vec<Entry> = (0..50u32)
            .map(|i| put(1, &i.to_be_bytes(), 0, 1, &[b'x'; 500]))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (p1, _, _) = build(dir.path(), "r.sst", &random, small_blocks(4096));
        let (p2, s2, _) = build(dir.path(), "z.sst", &text, small_blocks(4096));
        let (t1, t2) = (open(&p1).unwrap(), open(&p2).unwrap());
        assert!(data_block_kinds(&t1).iter().all(|&k| k == 0));
        assert!(data_block_kinds(&t2).iter().all(|&k| k == 1));
        assert!(s2.file_bytes < s2.raw_bytes / 4);
        assert_eq!(collect(&t1).unwrap(), random);
        assert_eq!(collect(&t2).unwrap(), text);
    }

    #[test]
    fn maximal_entries_round_trip() {
        let key = vec![b'k'; crate::types::MAX_KEY_LEN];
        let value: Vec<u8> = (0..crate::types::MAX_VALUE_LEN)
            .map(|i| (i % 251) as u8)
            .collect();
        let entries = vec![
            put(1, b"a", 0, 1, b"small"),
            put(1, &key, 5, 2, &value),
            put(2, b"", 0, 3, b""),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (path, summary, blocks) = build(dir.path(), "big.sst", &entries, small_blocks(4096));
        assert_eq!(blocks, vec![0, 1, 2]);
        let t = open(&path).unwrap();
        assert_eq!(collect(&t).unwrap(), entries);
        assert_eq!(summary.largest, (2, Bytes::new()));
        let c = t.seek(1, &key, i64::MAX, u64::MAX).unwrap().unwrap();
        assert_eq!(c.value().unwrap().len(), value.len());
    }

    /// Everything a reader can do with the file: open, scan, read every block
    /// through the cache, read the key directory, seek to every entry.
    fn read_everything(path: &Path, entries: &[Entry]) -> Result<()> {
        let t = open(path)?;
        for (got, want) in t.iter().zip(entries) {
            assert_eq!(&got?, want, "a damaged file returned wrong data");
        }
        if collect(&t)?.len() != entries.len() {
            return Err(Error::corruption(path, 0, "entry count changed"));
        }
        for i in 0..t.data_blocks() {
            t.block(i)?;
        }
        t.key_directory()?;
        for e in entries {
            let c = t.seek(e.table, &e.key, e.event_ts, e.seq)?;
            assert_eq!(c.map(|c| c.to_entry()).transpose()?.as_ref(), Some(e));
        }
        Ok(())
    }

    fn assert_names_path(err: &Error, path: &Path) {
        match err {
            Error::Checksum { path: p, .. } | Error::Corruption { path: p, .. } => {
                assert_eq!(p, path)
            }
            other => panic!("expected a corruption error naming {path:?}, got {other:?}"),
        }
    }

    fn sample_entries() -> Vec<Entry> {
        let mut v = Vec::new();
        for k in 0..6u8 {
            for ts in (0..3).rev() {
                v.push(put(
                    u32::from(k % 2),
                    &[b'k', k],
                    ts,
                    u64::from(k) * 10 + ts as u64,
                    &[k; 20],
                ));
            }
        }
        v.push(Entry {
            kind: Kind::Tombstone,
            value: Bytes::new(),
            ..put(5, b"z", 1, 99, b"")
        });
        sorted_unique(v)
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let entries = sample_entries();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "f.sst", &entries, small_blocks(200));
        read_everything(&path, &entries).unwrap();
        let good = std::fs::read(&path).unwrap();
        let bad_path = dir.path().join("bad.sst");
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= mask;
                std::fs::write(&bad_path, &bad).unwrap();
                let err = read_everything(&bad_path, &entries)
                    .expect_err(&format!("flip of byte {i} with {mask:#x} went unnoticed"));
                assert_names_path(&err, &bad_path);
            }
        }
    }

    #[test]
    fn damage_in_each_region_is_reported_with_its_offset() {
        let entries = sample_entries();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "r.sst", &entries, small_blocks(200));
        let good = std::fs::read(&path).unwrap();
        let footer_at = good.len() as u64 - FOOTER_LEN as u64;
        let f = Footer::decode(&good[footer_at as usize..], &path, footer_at).unwrap();
        let t = open(&path).unwrap();
        let data = t.index.get(1).unwrap().handle;
        let regions = [
            ("data", data),
            ("bloom", f.bloom),
            ("keydir", f.keydir),
            ("index", f.index),
            ("props", f.props),
        ];
        let bad_path = dir.path().join("bad.sst");
        for (name, h) in regions {
            let mut bad = good.clone();
            bad[(h.offset + u64::from(h.len) / 2) as usize] ^= 0x20;
            std::fs::write(&bad_path, &bad).unwrap();
            let err = read_everything(&bad_path, &entries).expect_err(name);
            assert!(
                matches!(err, Error::Checksum { offset, .. } if offset == h.offset),
                "{name}: {err}"
            );
        }
        let mut bad = good.clone();
        bad[footer_at as usize + 3] ^= 1;
        std::fs::write(&bad_path, &bad).unwrap();
        let err = read_everything(&bad_path, &entries).unwrap_err();
        assert!(matches!(err, Error::Checksum { offset, .. } if offset == footer_at));
    }

    #[test]
    fn every_truncation_is_detected() {
        let entries = sample_entries();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "t.sst", &entries, small_blocks(200));
        let good = std::fs::read(&path).unwrap();
        let bad_path = dir.path().join("cut.sst");
        for len in 0..good.len() {
            std::fs::write(&bad_path, &good[..len]).unwrap();
            let err = open(&bad_path).expect_err("a truncated file opened");
            assert_names_path(&err, &bad_path);
        }
    }

    #[test]
    fn blocks_go_through_the_cache_but_scans_do_not() {
        let entries = sample_entries();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "c.sst", &entries, small_blocks(200));
        let cache = Arc::new(BlockCache::new(1 << 20));
        let t = Table::open(Arc::new(OsFs::default()), &path, 3, Arc::clone(&cache)).unwrap();
        assert_eq!(collect(&t).unwrap(), entries);
        assert_eq!(cache.used_bytes(), 0);
        assert_eq!(cache.hits() + cache.misses(), 0);
        let b0 = t.block(0).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (0, 1));
        assert!(cache.used_bytes() >= b0.size_bytes());
        t.block(0).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert!(cache.get(&t.slots, 0).is_some());
        assert!(t.drop_page_cache().is_ok());
        drop(t);
        assert_eq!(
            cache.used_bytes(),
            0,
            "a closed table's blocks stay charged"
        );
    }

    #[test]
    fn load_blocks_batches_misses_in_request_order() {
        let entries = sample_entries();
        let dir = tempfile::tempdir().unwrap();
        let (p1, _, _) = build(dir.path(), "a.sst", &entries, small_blocks(200));
        let (p2, _, _) = build(dir.path(), "b.sst", &entries[3..], small_blocks(100));
        let fs: Arc<dyn FileSystem> = Arc::new(OsFs::default());
        let cache = Arc::new(BlockCache::new(1 << 20));
        let t1 = Table::open(Arc::clone(&fs), &p1, 1, Arc::clone(&cache)).unwrap();
        let t2 = Table::open(Arc::clone(&fs), &p2, 2, Arc::clone(&cache)).unwrap();
        t1.block(1).unwrap(); // one hit in the batch
        let reqs: Vec<(&Table, u32)> = vec![(&t2, 2), (&t1, 1), (&t1, 0), (&t2, 2), (&t2, 0)];
        let got = load_blocks(&*fs, &reqs).unwrap();
        assert_eq!(got.len(), reqs.len());
        for ((t, i), b) in reqs.iter().zip(&got) {
            let fresh = t.read_block(*i).unwrap();
            assert_eq!(b.file_offset(), fresh.file_offset());
            assert_eq!(b.to_entry(0).unwrap(), fresh.to_entry(0).unwrap());
            assert_eq!(b.path(), t.path());
        }
        assert_eq!(cache.hits(), 1);
        // Everything requested is now cached.
        let hits = cache.hits();
        load_blocks(&*fs, &reqs).unwrap();
        assert_eq!(cache.hits(), hits + reqs.len() as u64);
        assert!(matches!(
            load_blocks(&*fs, &[(&t1, 999)]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(load_blocks(&*fs, &[]).unwrap().is_empty());
    }

    /// A file system whose reads can be made to fail, and whose batches
    /// always fail.
    struct FlakyFs {
        inner: OsFs,
        fail_reads: Arc<AtomicBool>,
    }

    struct FlakyFile {
        inner: Arc<dyn RandomAccessFile>,
        fail: Arc<AtomicBool>,
    }

    impl RandomAccessFile for FlakyFile {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            if self.fail.load(AtomicOrdering::Relaxed) {
                return Err(io::Error::other("injected EIO"));
            }
            self.inner.read_at(offset, buf)
        }
        fn len(&self) -> u64 {
            self.inner.len()
        }
    }

    impl FileSystem for FlakyFs {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.inner.create_dir_all(path)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
            self.inner.create(path)
        }
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
            self.inner.open_append(path)
        }
        fn open_read(&self, path: &Path) -> io::Result<Arc<dyn RandomAccessFile>> {
            Ok(Arc::new(FlakyFile {
                inner: self.inner.open_read(path)?,
                fail: Arc::clone(&self.fail_reads),
            }))
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.inner.remove(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.inner.list(dir)
        }
        fn exists(&self, path: &Path) -> bool {
            self.inner.exists(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.inner.sync_dir(dir)
        }
        fn read_batch(&self, _ops: &mut [ReadOp<'_>]) -> io::Result<()> {
            Err(io::Error::other("injected batch failure"))
        }
    }

    #[test]
    fn read_errors_name_the_file() {
        let entries = sample_entries();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "io.sst", &entries, small_blocks(200));
        let fail = Arc::new(AtomicBool::new(false));
        let fs = Arc::new(FlakyFs {
            inner: OsFs::default(),
            fail_reads: Arc::clone(&fail),
        });
        let cache = Arc::new(BlockCache::new(1 << 20));
        let t = Table::open(fs.clone(), &path, 1, cache).unwrap();
        // A failed batch falls back to single reads, which succeed.
        let got = load_blocks(&*fs, &[(&t, 0), (&t, 1)]).unwrap();
        assert_eq!(got.len(), 2);
        fail.store(true, AtomicOrdering::Relaxed);
        for err in [
            t.block(2).unwrap_err(),
            load_blocks(&*fs, &[(&t, 3)]).unwrap_err(),
            t.iter().find_map(|r| r.err()).unwrap(),
            t.key_directory().unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::Io { path: p, .. } if *p == path),
                "{err}"
            );
        }
        assert!(Table::open(fs.clone(), &path, 1, Arc::new(BlockCache::new(0))).is_err());
    }

    #[test]
    fn concurrent_seeks_share_the_cache() {
        let entries: Vec<Entry> = (0..2000u32)
            .map(|i| put(1, &i.to_be_bytes(), 0, 1, b"value"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = build(dir.path(), "mt.sst", &entries, small_blocks(512));
        let t = open(&path).unwrap();
        let entries = Arc::new(entries);
        let threads: Vec<_> = (0..4usize)
            .map(|n| {
                let (t, entries) = (Arc::clone(&t), Arc::clone(&entries));
                std::thread::spawn(move || {
                    for e in entries.iter().skip(n).step_by(3) {
                        let c = t
                            .seek(e.table, &e.key, i64::MAX, u64::MAX)
                            .unwrap()
                            .unwrap();
                        assert_eq!(&c.to_entry().unwrap(), e);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
    }

    #[test]
    fn a_file_without_footer_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("partial.sst");
        let mut b =
            TableBuilder::create(&OsFs::default(), &path, 1, BuildOptions::default()).unwrap();
        for e in sample_entries() {
            b.add(&e.as_ref()).unwrap();
        }
        drop(b);
        let err = open(&path).unwrap_err();
        assert_names_path(&err, &path);
    }

    /// Cost of the cached read path (every block is in the block cache; the
    /// CPU caches see random blocks). Run with `HOT_N=<entries> cargo test
    /// --release -p tessera-storage -- --ignored hot_path --nocapture`.
    #[test]
    #[ignore]
    fn hot_path_cost() {
        use std::time::Instant;
        const KEY_LEN: usize = 15;
        struct Probe {
            key: [u8; KEY_LEN],
            block: u32,
            digest: Digest,
        }
        let key_of = |i: u64| -> [u8; KEY_LEN] {
            let mut k = [0u8; KEY_LEN];
            k.copy_from_slice(format!("user:{i:010}").as_bytes());
            k
        };
        let n: u64 = std::env::var("HOT_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let entries: Vec<Entry> = (0..n)
            .map(|i| put(1, &key_of(i), 1_000, i, &[7; 100]))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (path, _, blocks) = build(dir.path(), "hot.sst", &entries, small_blocks(4096));
        drop(entries);
        let cache = Arc::new(BlockCache::new(256 << 20));
        let t = Table::open(Arc::new(OsFs::default()), &path, 1, Arc::clone(&cache)).unwrap();
        for b in 0..t.data_blocks() {
            t.block(b).unwrap();
        }
        let probes: Vec<Probe> = (0..200_000u64)
            .map(|i| {
                let e = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n;
                let key = key_of(e);
                let digest = Digest::of(42, 1, &key);
                Probe {
                    key,
                    block: blocks[e as usize],
                    digest,
                }
            })
            .collect();
        let time = |name: &str, f: &mut dyn FnMut(&Probe)| {
            let best = (0..3)
                .map(|_| {
                    let start = Instant::now();
                    probes.iter().for_each(&mut *f);
                    start.elapsed().as_nanos() as f64 / probes.len() as f64
                })
                .fold(f64::MAX, f64::min);
            println!("{name}: {best:.0} ns/op");
        };
        let misses = cache.misses();
        time("Table::block (hit)", &mut |p| {
            std::hint::black_box(t.block(p.block).unwrap());
        });
        time("first_version_in_block + value", &mut |p| {
            let (blk, pos) = t
                .first_version_in_block(p.block, 1, &p.key)
                .unwrap()
                .unwrap();
            std::hint::black_box(blk.value(pos).unwrap());
        });
        time("Table::seek + to_entry", &mut |p| {
            let c = t.seek(1, &p.key, i64::MAX, u64::MAX).unwrap().unwrap();
            std::hint::black_box(c.to_entry().unwrap());
        });
        time("index.find", &mut |p| {
            std::hint::black_box(t.index.find((1, &p.key, i64::MAX, u64::MAX)));
        });
        time("block + Block::seek", &mut |p| {
            let b = t.block(p.block).unwrap();
            std::hint::black_box(b.seek(1, &p.key, i64::MAX, u64::MAX).unwrap());
        });
        time("Digest::of + may_contain", &mut |p| {
            std::hint::black_box(t.may_contain(Digest::of(42, 1, &p.key)));
        });
        time("may_contain", &mut |p| {
            std::hint::black_box(t.may_contain(p.digest));
        });
        assert_eq!(
            cache.misses(),
            misses,
            "the timed loops must be all cache hits"
        );
    }
}
