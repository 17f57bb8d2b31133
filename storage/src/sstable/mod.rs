//! Sorted string tables (SSTs): immutable, checksummed files of row versions
//! in storage order, and the readers and writer for them.
//!
//! This module owns the SST file format (documented byte by byte in
//! `docs/format.md`):
//!
//! ```text
//! header | data block 0 | ... | data block n-1 | bloom | key directory | index | properties | footer
//! ```
//!
//! Every block (data or meta) is followed by a trailer holding its compression
//! type, uncompressed length and an xxh3-64 checksum; the footer is checksummed
//! too, and the file starts with and ends with [`SST_MAGIC`].
//!
//! Invariants a reader relies on, all checked when the bytes are read:
//! - entries are in strictly increasing storage order (`cmp_internal`) within
//!   a block and across blocks; each index record holds its block's last entry;
//! - blocks are laid out back to back with no gaps, in the order above, and
//!   the footer's handles and the index's handles describe exactly that layout;
//! - no decoded length or offset is trusted before it is bounds-checked;
//!   damage is reported as [`Error::Checksum`] or [`Error::Corruption`] naming
//!   the file and the byte offset of the damaged block, never as data and
//!   never as a panic.
//!
//! Writers never modify a finished file; the engine renames it into place.

mod block;
mod bloom;
mod builder;
mod footer;
mod index;
mod keydir;
mod read_ahead;
mod sweep;
mod table;

pub(crate) use block::fingerprint;
pub use block::Block;
pub(crate) use block::BlockInner;
pub use builder::{BuildOptions, TableBuilder};
pub use footer::HEADER_LEN;
pub use index::{decode_index, IndexRecord};
pub use keydir::KeyDirEntry;
pub(crate) use read_ahead::BlockStream;
pub(crate) use sweep::Sweep;
pub use table::{load_blocks, Cursor, Table, TableIter};
pub(crate) use table::{load_blocks_pinned, HeldBlock};

use crate::error::{Error, Result};
use crate::types::{SeqNo, TableId, Timestamp};
use bytes::Bytes;
use std::fmt::Display;
use std::path::Path;

/// Magic number at the start and at the very end of every SST ("TSSR-SST"
/// when the little-endian bytes are read as ASCII).
pub const SST_MAGIC: u64 = u64::from_le_bytes(*b"TSSR-SST");
/// Version of the SST format this code writes and the only one it reads.
pub const SST_FORMAT_VERSION: u32 = 1;
/// Most data blocks one SST may hold; block numbers must fit the hash
/// index's 24-bit block field. The builder refuses to start block number
/// `MAX_BLOCKS_PER_SST`.
pub const MAX_BLOCKS_PER_SST: u32 = 1 << 24;
/// Largest `BuildOptions::block_bytes` accepted.
pub const MAX_BLOCK_BYTES: usize = 16 << 20;
/// Largest uncompressed data block a reader accepts. A block holds at most
/// `MAX_BLOCK_BYTES` of entries plus one oversized entry (a maximal key and
/// value), so honest files stay far below this.
pub const MAX_BLOCK_LEN: usize = 64 << 20;

/// What the builder produced, and what an open [`Table`] describes itself as.
///
/// For an empty table the key range is `(0, empty)` to `(0, empty)` and the
/// sequence and event-time bounds are all zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSummary {
    /// The engine's number for this file.
    pub file_no: u64,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Number of entries (row versions, tombstones included).
    pub entries: u64,
    /// Number of data blocks.
    pub data_blocks: u32,
    /// First `(table, key)` in storage order.
    pub smallest: (TableId, Bytes),
    /// Last `(table, key)` in storage order.
    pub largest: (TableId, Bytes),
    /// Smallest sequence number of any entry.
    pub min_seq: SeqNo,
    /// Largest sequence number of any entry.
    pub max_seq: SeqNo,
    /// Earliest event time of any entry.
    pub min_event_ts: Timestamp,
    /// Latest event time of any entry.
    pub max_event_ts: Timestamp,
    /// Sum of key and value lengths over all entries.
    pub raw_bytes: u64,
}

/// A bounds-checked little-endian reader over one decoded block. Every
/// failure is a [`Error::Corruption`] naming the file, the block's file
/// offset, and where in the block decoding stopped.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    block_offset: u64,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, the decoded contents of the `what` block stored
    /// at `block_offset` in `path`.
    pub(crate) fn new(
        buf: &'a [u8],
        path: &'a Path,
        block_offset: u64,
        what: &'static str,
    ) -> Self {
        Reader {
            buf,
            pos: 0,
            path,
            block_offset,
            what,
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.corrupt(format!("needs {n} more bytes, {} left", self.remaining()))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a `u16`.
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads an `i64`.
    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Position of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte has been read.
    pub(crate) fn expect_end(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.corrupt(format!("{n} unexpected trailing bytes"))),
        }
    }

    /// A corruption error at the current position.
    pub(crate) fn corrupt(&self, reason: impl Display) -> Error {
        Error::corruption(
            self.path,
            self.block_offset,
            format!("{} block, byte {}: {reason}", self.what, self.pos),
        )
    }
}

/// Little-endian `u16` at `at`, if in bounds.
#[inline]
pub(crate) fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    b.try_into().ok().map(u16::from_le_bytes)
}

/// Little-endian `u32` at `at`, if in bounds.
#[inline]
pub(crate) fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    b.try_into().ok().map(u32::from_le_bytes)
}

/// Little-endian `u64` at `at`, if in bounds.
#[inline]
pub(crate) fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    b.try_into().ok().map(u64::from_le_bytes)
}

/// Little-endian `i64` at `at`, if in bounds.
#[inline]
pub(crate) fn i64_at(buf: &[u8], at: usize) -> Option<i64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    b.try_into().ok().map(i64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_as_corruption() {
        let path = Path::new("/x.sst");
        let mut r = Reader::new(&[1, 0, 0], path, 77, "test");
        assert_eq!(r.u16().ok(), Some(1));
        let err = r.u32().err();
        assert!(matches!(err, Some(Error::Corruption { offset: 77, .. })));
        assert_eq!(r.remaining(), 1);
        assert!(r.expect_end().is_err());
    }

    #[test]
    fn fixed_offset_readers_are_bounds_checked() {
        let buf = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u32_at(&buf, 4), Some(u32::from_le_bytes([5, 6, 7, 8])));
        assert_eq!(u32_at(&buf, 5), None);
        assert_eq!(u64_at(&buf, 1), None);
        assert_eq!(u16_at(&buf, usize::MAX), None);
        assert_eq!(i64_at(&buf, 0), Some(i64::from_le_bytes(buf)));
    }
}

/// Helpers shared by the tests of the SST modules.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::cache::BlockCache;
    use crate::fs::{FileSystem, OsFs};
    use crate::types::{Entry, Kind};
    use proptest::prelude::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A put of `value` at `(table, key, event_ts, seq)`.
    pub(crate) fn put(table: TableId, key: &[u8], event_ts: i64, seq: u64, value: &[u8]) -> Entry {
        Entry {
            table,
            key: Bytes::copy_from_slice(key),
            event_ts,
            seq,
            ingest_ts: event_ts.wrapping_add(1),
            kind: Kind::Put,
            value: Bytes::copy_from_slice(value),
        }
    }

    /// Entries over a small key space, so keys repeat with many versions.
    pub(crate) fn entry_strategy() -> impl Strategy<Value = Entry> {
        (
            0u32..3,
            proptest::collection::vec(b'a'..b'e', 0..4),
            -4i64..4,
            0u64..6,
            any::<i64>(),
            0u8..5,
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(table, key, event_ts, seq, ingest_ts, kind, value)| {
                let tomb = kind == 0;
                Entry {
                    table,
                    key: key.into(),
                    event_ts,
                    seq,
                    ingest_ts,
                    kind: if tomb { Kind::Tombstone } else { Kind::Put },
                    value: if tomb { Bytes::new() } else { value.into() },
                }
            })
    }

    /// Sorts into storage order and drops duplicates of the ordering key.
    pub(crate) fn sorted_unique(mut v: Vec<Entry>) -> Vec<Entry> {
        v.sort_by(|a, b| a.cmp_order(b));
        v.dedup_by(|a, b| a.cmp_order(b) == std::cmp::Ordering::Equal);
        v
    }

    /// Builds `entries` into `dir/name`; returns the path, the summary and
    /// the block each entry landed in.
    pub(crate) fn build(
        dir: &Path,
        name: &str,
        entries: &[Entry],
        opts: BuildOptions,
    ) -> (PathBuf, TableSummary, Vec<u32>) {
        let path = dir.join(name);
        let mut b = TableBuilder::create(&OsFs::default(), &path, 7, opts).unwrap();
        let blocks = entries
            .iter()
            .map(|e| b.add(&e.as_ref()).unwrap())
            .collect();
        let summary = b.finish().unwrap();
        (path, summary, blocks)
    }

    /// Options with small blocks and a fixed seed.
    pub(crate) fn small_blocks(block_bytes: usize) -> BuildOptions {
        BuildOptions {
            block_bytes,
            zstd_level: 1,
            compress_data: true,
            bloom_bits_per_key: 10,
            digest_seed: 42,
        }
    }

    /// A valid one-entry block of about `len` bytes.
    pub(crate) fn block_of_size(len: usize) -> Block {
        let mut b = block::BlockBuilder::new(len);
        let value = vec![7u8; len.saturating_sub(block::ENTRY_HEADER_LEN + 10)];
        b.add(&put(1, b"", 0, 0, &value).as_ref());
        Block::decode(Bytes::copy_from_slice(b.finish()), Path::new("/test"), 0).unwrap()
    }

    /// Opens `path` with a fresh cache.
    pub(crate) fn open(path: &Path) -> Result<Arc<Table>> {
        let fs: Arc<dyn FileSystem> = Arc::new(OsFs::default());
        Table::open(fs, path, 7, Arc::new(BlockCache::new(1 << 20)))
    }
}
