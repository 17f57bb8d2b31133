//! The index block: for every data block, its last entry's
//! `(table, key, event_ts, seq)` and its handle. An open table keeps the index
//! decoded in memory and binary-searches it to find the block for a key.
//!
//! Layout: `count u32`, then per block `table u32 | key_len u16 | key |
//! event_ts i64 | seq u64 | offset u64 | stored_len u32`.
//!
//! Invariants checked on decode: the count is the properties' block count;
//! the last keys are in strictly increasing storage order; the handles tile
//! the data region exactly (the first block right after the file header,
//! each next block right after the previous block's trailer, the last ending
//! where the bloom block starts).

use super::footer::{BlockHandle, TRAILER_LEN};
use super::{Reader, MAX_BLOCK_LEN};
use crate::error::Result;
use crate::types::{cmp_internal, SeqNo, TableId, Timestamp, MAX_KEY_LEN};
use bytes::Bytes;
use std::cmp::Ordering;
use std::path::Path;

/// Encoded size of a record without its key.
const RECORD_FIXED_LEN: usize = 4 + 2 + 8 + 8 + 8 + 4;
/// Size of the leading record count.
const COUNT_LEN: usize = 4;
/// Smallest stored payload of a data block: a raw block holds at least its
/// entry count, and a zstd frame is longer than that.
const MIN_STORED_BLOCK_LEN: u32 = 4;

/// One data block as the index describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Table of the block's last entry.
    pub(crate) table: TableId,
    /// Key of the block's last entry (a slice of the decoded index block).
    pub(crate) key: Bytes,
    /// Event time of the block's last entry.
    pub(crate) event_ts: Timestamp,
    /// Sequence number of the block's last entry.
    pub(crate) seq: SeqNo,
    /// Where the block is stored.
    pub(crate) handle: BlockHandle,
}

impl IndexEntry {
    /// The last entry's comparison fields.
    #[inline]
    pub(crate) fn last(&self) -> (TableId, &[u8], Timestamp, SeqNo) {
        (self.table, &self.key, self.event_ts, self.seq)
    }
}

/// Accumulates index records while data blocks are written.
pub(crate) struct IndexBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl IndexBuilder {
    /// An empty index.
    pub(crate) fn new() -> IndexBuilder {
        IndexBuilder {
            buf: vec![0; COUNT_LEN],
            count: 0,
        }
    }

    /// Records a data block whose last entry is `last`.
    pub(crate) fn add(&mut self, last: (TableId, &[u8], Timestamp, SeqNo), handle: BlockHandle) {
        let (table, key, event_ts, seq) = last;
        let b = &mut self.buf;
        b.extend_from_slice(&table.to_le_bytes());
        // The builder checked the key against MAX_KEY_LEN, so it fits u16.
        b.extend_from_slice(&(key.len() as u16).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&event_ts.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&handle.offset.to_le_bytes());
        b.extend_from_slice(&handle.len.to_le_bytes());
        self.count += 1;
    }

    /// Encoded size so far.
    pub(crate) fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The finished block.
    pub(crate) fn finish(&mut self) -> &[u8] {
        if let Some(head) = self.buf.get_mut(..COUNT_LEN) {
            head.copy_from_slice(&self.count.to_le_bytes());
        }
        &self.buf
    }
}

/// A decoded index.
pub(crate) struct BlockIndex {
    entries: Vec<IndexEntry>,
    /// Length of the decoded index block, which the entries' keys keep
    /// alive (they are slices of it).
    block_len: usize,
}

impl BlockIndex {
    /// Decodes the index block stored at `offset`, expecting `blocks` records
    /// whose handles tile `[data_start, data_end)`.
    pub(crate) fn decode(
        data: &Bytes,
        path: &Path,
        offset: u64,
        blocks: u32,
        data_start: u64,
        data_end: u64,
    ) -> Result<BlockIndex> {
        let mut r = Reader::new(data, path, offset, "index");
        let count = r.u32()?;
        if count != blocks {
            return Err(r.corrupt(format!(
                "{count} records, but the properties count {blocks} blocks"
            )));
        }
        // The count is checked against the properties only: the capacity is
        // bounded by the records the block can hold, not by the count alone.
        let fit = r.remaining() / RECORD_FIXED_LEN;
        let mut entries: Vec<IndexEntry> = Vec::with_capacity((count as usize).min(fit));
        let mut next_offset = data_start;
        for i in 0..count {
            let e = decode_record(&mut r, data)?;
            if e.handle.offset != next_offset
                || !(MIN_STORED_BLOCK_LEN..=MAX_BLOCK_LEN as u32).contains(&e.handle.len)
            {
                return Err(r.corrupt(format!(
                    "record {i}: block at {} of {} bytes, expected one at {next_offset}",
                    e.handle.offset, e.handle.len
                )));
            }
            if let Some(prev) = entries.last() {
                if cmp_internal(prev.last(), e.last()) != Ordering::Less {
                    return Err(r.corrupt(format!("record {i} is not above its predecessor")));
                }
            }
            next_offset = e.handle.offset + u64::from(e.handle.len) + TRAILER_LEN as u64;
            entries.push(e);
        }
        r.expect_end()?;
        if next_offset != data_end {
            return Err(r.corrupt(format!(
                "data blocks end at {next_offset}, but the bloom block starts at {data_end}"
            )));
        }
        Ok(BlockIndex {
            entries,
            block_len: data.len(),
        })
    }

    /// Largest encoded index for `blocks` blocks.
    pub(crate) fn max_encoded_len(blocks: u32) -> usize {
        COUNT_LEN + blocks as usize * (RECORD_FIXED_LEN + MAX_KEY_LEN)
    }

    /// Heap bytes of the records and of the decoded block their keys
    /// point into.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.block_len + self.entries.capacity() * std::mem::size_of::<IndexEntry>()
    }

    /// Number of data blocks.
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Record of block `idx`.
    #[inline]
    pub(crate) fn get(&self, idx: u32) -> Option<&IndexEntry> {
        self.entries.get(idx as usize)
    }

    /// The fingerprint of each block's last `(table, key)`, in block order.
    pub(crate) fn last_fingerprints(&self) -> Box<[u16]> {
        self.entries
            .iter()
            .map(|e| super::block::fingerprint(e.table, &e.key))
            .collect()
    }

    /// The first block whose last entry is >= `target`; `len()` if none.
    #[inline]
    pub(crate) fn find(&self, target: (TableId, &[u8], Timestamp, SeqNo)) -> u32 {
        self.entries
            .partition_point(|e| cmp_internal(e.last(), target) == Ordering::Less) as u32
    }
}

/// One record of a decoded index block, as [`decode_index`] returns it: a
/// data block's last entry and where the block is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRecord {
    /// Table of the block's last entry.
    pub table: TableId,
    /// Key of the block's last entry.
    pub key: Bytes,
    /// Event time of the block's last entry.
    pub event_ts: Timestamp,
    /// Sequence number of the block's last entry.
    pub seq: SeqNo,
    /// File offset of the block's stored payload.
    pub offset: u64,
    /// Stored (possibly compressed) payload length, trailer excluded.
    pub stored_len: u32,
}

/// Decodes the verified payload of an index block exactly as
/// [`super::Table::open`] does, expecting `blocks` records whose handles
/// tile `[data_start, data_end)`. A table decodes its own index; this is
/// public for fuzzing and tests of the decoder.
pub fn decode_index(
    data: &Bytes,
    blocks: u32,
    data_start: u64,
    data_end: u64,
) -> Result<Vec<IndexRecord>> {
    let index = BlockIndex::decode(data, Path::new("index"), 0, blocks, data_start, data_end)?;
    Ok(index
        .entries
        .into_iter()
        .map(|e| IndexRecord {
            table: e.table,
            key: e.key,
            event_ts: e.event_ts,
            seq: e.seq,
            offset: e.handle.offset,
            stored_len: e.handle.len,
        })
        .collect())
}

fn decode_record(r: &mut Reader<'_>, data: &Bytes) -> Result<IndexEntry> {
    let table = r.u32()?;
    let key_len = usize::from(r.u16()?);
    if key_len > MAX_KEY_LEN {
        return Err(r.corrupt(format!("key of {key_len} bytes exceeds the limit")));
    }
    let key_at = r.pos();
    r.take(key_len)?;
    Ok(IndexEntry {
        table,
        key: data.slice(key_at..key_at + key_len),
        event_ts: r.i64()?,
        seq: r.u64()?,
        handle: BlockHandle {
            offset: r.u64()?,
            len: r.u32()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(offset: u64, len: u32) -> BlockHandle {
        BlockHandle { offset, len }
    }

    fn sample() -> (Bytes, u64) {
        let mut b = IndexBuilder::new();
        b.add((1, b"a", 9, 1), handle(16, 10));
        b.add((1, b"a", 8, 7), handle(39, 20));
        b.add((2, b"", 0, 0), handle(72, 5));
        (
            Bytes::copy_from_slice(b.finish()),
            72 + 5 + TRAILER_LEN as u64,
        )
    }

    #[test]
    fn round_trip_and_find() {
        let (bytes, end) = sample();
        let idx = BlockIndex::decode(&bytes, Path::new("/i"), 0, 3, 16, end).unwrap();
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.get(1).map(|e| e.handle), Some(handle(39, 20)));
        assert_eq!(idx.find((0, b"zz", 0, 0)), 0);
        assert_eq!(idx.find((1, b"a", 9, 1)), 0);
        assert_eq!(idx.find((1, b"a", 9, 0)), 1);
        assert_eq!(idx.find((1, b"b", 9, 0)), 2);
        assert_eq!(idx.find((3, b"", 0, 0)), 3);
    }

    #[test]
    fn inconsistent_indexes_are_corruption() {
        let (bytes, end) = sample();
        let p = Path::new("/i");
        assert!(BlockIndex::decode(&bytes, p, 0, 2, 16, end).is_err());
        assert!(BlockIndex::decode(&bytes, p, 0, 3, 17, end).is_err());
        assert!(BlockIndex::decode(&bytes, p, 0, 3, 16, end + 1).is_err());
        assert!(BlockIndex::decode(&bytes.slice(..bytes.len() - 1), p, 0, 3, 16, end).is_err());
        let mut b = IndexBuilder::new();
        b.add((1, b"b", 0, 0), handle(16, 10));
        b.add((1, b"a", 0, 0), handle(39, 10));
        let disordered = Bytes::copy_from_slice(b.finish());
        assert!(BlockIndex::decode(&disordered, p, 0, 2, 16, 62).is_err());
    }
}
