//! [`TableBuilder`]: writes one SST from entries given in storage order.
//!
//! The builder owns the write side of the format: it cuts data blocks at
//! about `block_bytes`, compresses each with zstd when that saves at least an
//! eighth, seals every block with its trailer, collects the index, key
//! directory and bloom filter as it goes, and writes the meta blocks and the
//! footer on [`TableBuilder::finish`], which also fsyncs the file.
//!
//! Invariants: entries are accepted only in strictly increasing storage
//! order; no data block number reaches [`MAX_BLOCKS_PER_SST`]; after any
//! failed write the builder refuses further use (the file is then garbage and
//! the caller deletes it). A builder dropped before `finish` leaves a partial
//! file without a footer, which [`Table::open`](super::Table::open) rejects.

use super::block::{encoded_entry_len, BlockBuilder};
use super::bloom::{Bloom, MAX_BITS_PER_KEY};
use super::footer::{
    encode_header, seal_into, BlockHandle, Compression, Footer, Properties, FOOTER_LEN,
    PROPS_FIXED_LEN, TRAILER_LEN,
};
use super::index::IndexBuilder;
use super::keydir::{self, KeyDirEntry};
use super::{TableSummary, MAX_BLOCKS_PER_SST, MAX_BLOCK_BYTES};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, WritableFile};
use crate::options::{Options, DEFAULT_BLOCK_BYTES};
use crate::types::{check_limits, cmp_internal, EntryRef, Kind, SeqNo, TableId, Timestamp};
use bytes::Bytes;
use std::cmp::Ordering;
use std::io;
use std::path::{Path, PathBuf};

/// Bytes buffered in memory before they are appended to the file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Meta blocks written by `finish`; each adds one trailer.
const META_BLOCKS: u64 = 4;

/// How to build an SST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// Target uncompressed size of a data block, `1..=MAX_BLOCK_BYTES`. A
    /// block is cut before the entry that would take it past this size; an
    /// entry larger than this gets a block of its own.
    pub block_bytes: usize,
    /// zstd level for data and index blocks (zstd's accepted range).
    pub zstd_level: i32,
    /// Whether data blocks are compressed at all (index and properties
    /// blocks always may be).
    pub compress_data: bool,
    /// Bloom filter bits per distinct key, `0..=64`; 0 writes no filter.
    pub bloom_bits_per_key: u32,
    /// The database's digest seed (from the manifest).
    pub digest_seed: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            block_bytes: DEFAULT_BLOCK_BYTES,
            zstd_level: 1,
            compress_data: true,
            bloom_bits_per_key: 10,
            digest_seed: 0,
        }
    }
}

impl BuildOptions {
    /// The build settings of engine options `opts` for a database whose
    /// digest seed is `digest_seed`.
    pub fn from_options(opts: &Options, digest_seed: u64) -> BuildOptions {
        BuildOptions {
            block_bytes: opts.block_bytes,
            zstd_level: opts.zstd_level,
            compress_data: true,
            bloom_bits_per_key: opts.bloom_bits_per_key,
            digest_seed,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_BLOCK_BYTES).contains(&self.block_bytes) {
            return Err(Error::InvalidArgument(format!(
                "block_bytes {} is outside 1..={MAX_BLOCK_BYTES}",
                self.block_bytes
            )));
        }
        if !zstd::compression_level_range().contains(&self.zstd_level) {
            return Err(Error::InvalidArgument(format!(
                "zstd level {} is outside {:?}",
                self.zstd_level,
                zstd::compression_level_range()
            )));
        }
        if self.bloom_bits_per_key > MAX_BITS_PER_KEY {
            return Err(Error::InvalidArgument(format!(
                "bloom_bits_per_key {} exceeds {MAX_BITS_PER_KEY}",
                self.bloom_bits_per_key
            )));
        }
        Ok(())
    }
}

/// Buffered output of sealed blocks to one file.
struct BlockWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes already appended to the file.
    flushed: u64,
    compressor: zstd::bulk::Compressor<'static>,
    /// Compression output, reused between blocks.
    scratch: Vec<u8>,
}

impl BlockWriter {
    /// File offset of the next byte written.
    fn offset(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    /// Writes `payload` sealed with its trailer; with `compress`, stores it
    /// zstd-compressed if that saves at least an eighth.
    fn write_block(&mut self, payload: &[u8], compress: bool) -> Result<BlockHandle> {
        let Ok(ulen) = u32::try_from(payload.len()) else {
            return Err(Error::InvalidArgument(format!(
                "a block of {} bytes does not fit an SST block in {}",
                payload.len(),
                self.path.display()
            )));
        };
        let offset = self.offset();
        let (compression, stored) = match compress {
            true => Self::compress(&mut self.compressor, &mut self.scratch, payload),
            false => (Compression::None, payload),
        };
        let len = stored.len() as u32; // <= ulen
        seal_into(&mut self.buf, stored, compression, ulen);
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(BlockHandle { offset, len })
    }

    /// Compresses into `scratch` when the result is at most 7/8 of the
    /// payload; otherwise, or if zstd fails, the payload is stored raw.
    fn compress<'a>(
        compressor: &mut zstd::bulk::Compressor<'static>,
        scratch: &'a mut Vec<u8>,
        payload: &'a [u8],
    ) -> (Compression, &'a [u8]) {
        let limit = payload.len() - payload.len() / 8;
        scratch.clear();
        scratch.resize(limit, 0);
        // A destination of exactly `limit` bytes makes zstd itself fail when
        // the output would be too large, so no cycles go to a useless result.
        match compressor.compress_to_buffer(payload, &mut scratch[..]) {
            Ok(n) if n <= limit => match scratch.get(..n) {
                Some(out) => (Compression::Zstd, out),
                None => (Compression::None, payload),
            },
            _ => (Compression::None, payload),
        }
    }

    /// Writes bytes that are not a block (header, footer).
    fn write_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .append(&self.buf)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.flushed += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .sync()
            .map_err(|e| Error::io("fsync", &self.path, e))
    }
}

/// The last entry added, for the order check and the index.
struct LastEntry {
    table: TableId,
    key: Vec<u8>,
    event_ts: Timestamp,
    seq: SeqNo,
}

impl LastEntry {
    fn as_tuple(&self) -> (TableId, &[u8], Timestamp, SeqNo) {
        (self.table, &self.key, self.event_ts, self.seq)
    }
}

/// Writes one SST. See the module documentation.
pub struct TableBuilder {
    file_no: u64,
    opts: BuildOptions,
    writer: BlockWriter,
    block: BlockBuilder,
    index: IndexBuilder,
    keydir: Vec<KeyDirEntry>,
    props: Properties,
    last: Option<LastEntry>,
    /// Data blocks written so far; also the number of the open block.
    data_blocks: u32,
    max_blocks: u32,
    failed: bool,
}

impl TableBuilder {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(
        fs: &dyn FileSystem,
        path: &Path,
        file_no: u64,
        opts: BuildOptions,
    ) -> Result<Self> {
        opts.validate()?;
        let compressor = zstd::bulk::Compressor::new(opts.zstd_level)
            .map_err(|e| Error::io("zstd setup", path, e))?;
        let file = fs.create(path).map_err(|e| Error::io("create", path, e))?;
        let mut writer = BlockWriter {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES + opts.block_bytes),
            flushed: 0,
            compressor,
            scratch: Vec::new(),
        };
        writer.write_raw(&encode_header());
        Ok(TableBuilder {
            file_no,
            opts,
            writer,
            block: BlockBuilder::new(opts.block_bytes),
            index: IndexBuilder::new(),
            keydir: Vec::new(),
            props: Properties::empty(),
            last: None,
            data_blocks: 0,
            max_blocks: MAX_BLOCKS_PER_SST,
            failed: false,
        })
    }

    /// Adds an entry. Entries must come in strictly increasing storage order
    /// (else [`Error::InvalidArgument`], and the builder stays usable).
    /// Returns the index of the data block the entry lands in.
    pub fn add(&mut self, e: &EntryRef<'_>) -> Result<u32> {
        self.check_usable()?;
        check_entry(e)?;
        self.check_order(e)?;
        let entry_len = encoded_entry_len(e.key.len(), e.value.len());
        if !self.block.is_empty() && self.block.size_with(entry_len) > self.opts.block_bytes {
            self.flush_block()?;
        }
        let block = self.data_blocks;
        if self.block.is_empty() && block >= self.max_blocks {
            return Err(Error::InvalidArgument(format!(
                "{} would need more than {} data blocks",
                self.writer.path.display(),
                self.max_blocks
            )));
        }
        self.block.add(e);
        self.note_entry(e, block);
        Ok(block)
    }

    /// Bytes the file would have if finished now (an upper estimate: the open
    /// block is counted uncompressed).
    pub fn estimated_bytes(&self) -> u64 {
        let keys = self.keydir.len() as u64;
        self.writer.offset()
            + self.block.size() as u64
            + self.index.len_bytes() as u64
            + keydir::encoded_len(keys)
            + Bloom::encoded_len(keys, self.opts.bloom_bits_per_key)
            + self.props_len() as u64
            + (META_BLOCKS + 1) * TRAILER_LEN as u64
            + FOOTER_LEN as u64
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// Writes the last data block, bloom, key directory, index, properties
    /// and footer, then fsyncs the file (not its directory). An empty table
    /// is allowed.
    pub fn finish(mut self) -> Result<TableSummary> {
        self.check_usable()?;
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        let props = self.finished_props();
        let digests = self.keydir.iter().map(|k| k.digest);
        let bloom = Bloom::build(digests, self.opts.bloom_bits_per_key).encode();
        let footer = Footer {
            bloom: self.writer.write_block(&bloom, false)?,
            keydir: self
                .writer
                .write_block(&keydir::encode(&self.keydir), false)?,
            index: self.writer.write_block(self.index.finish(), true)?,
            props: self.writer.write_block(&props.encode(), true)?,
        };
        self.writer.write_raw(&footer.encode());
        self.writer.sync()?;
        Ok(props.to_summary(self.file_no, self.writer.offset()))
    }

    #[cfg(test)]
    pub(crate) fn set_max_blocks(&mut self, max_blocks: u32) {
        self.max_blocks = max_blocks;
    }

    fn check_usable(&self) -> Result<()> {
        match self.failed {
            false => Ok(()),
            true => Err(Error::io(
                "write",
                &self.writer.path,
                io::Error::other("an earlier write to this SST failed"),
            )),
        }
    }

    fn check_order(&self, e: &EntryRef<'_>) -> Result<()> {
        let Some(last) = &self.last else {
            return Ok(());
        };
        let this = (e.table, e.key, e.event_ts, e.seq);
        if cmp_internal(last.as_tuple(), this) == Ordering::Less {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "entry (table {}, key {:?}, event_ts {}, seq {}) is not above the previous one in {}",
            e.table,
            String::from_utf8_lossy(e.key),
            e.event_ts,
            e.seq,
            self.writer.path.display()
        )))
    }

    /// Seals and writes the open block and records it in the index.
    fn flush_block(&mut self) -> Result<()> {
        let compress = self.opts.compress_data;
        let written = self.writer.write_block(self.block.finish(), compress);
        let handle = match written {
            Ok(h) => h,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        if let Some(last) = &self.last {
            self.index.add(last.as_tuple(), handle);
        }
        self.block.reset();
        self.data_blocks += 1;
        Ok(())
    }

    /// Updates the key directory, the running properties and the last entry.
    fn note_entry(&mut self, e: &EntryRef<'_>, block: u32) {
        let new_key = self
            .last
            .as_ref()
            .is_none_or(|l| l.table != e.table || l.key != e.key);
        if new_key {
            self.keydir.push(KeyDirEntry {
                digest: Digest::of(self.opts.digest_seed, e.table, e.key),
                event_ts: e.event_ts,
                block,
            });
        }
        let p = &mut self.props;
        if p.entries == 0 {
            p.smallest = (e.table, Bytes::copy_from_slice(e.key));
            (p.min_seq, p.max_seq) = (e.seq, e.seq);
            (p.min_event_ts, p.max_event_ts) = (e.event_ts, e.event_ts);
        }
        p.entries += 1;
        p.min_seq = p.min_seq.min(e.seq);
        p.max_seq = p.max_seq.max(e.seq);
        p.min_event_ts = p.min_event_ts.min(e.event_ts);
        p.max_event_ts = p.max_event_ts.max(e.event_ts);
        p.raw_bytes += (e.key.len() + e.value.len()) as u64;
        let last = self.last.get_or_insert_with(|| LastEntry {
            table: 0,
            key: Vec::new(),
            event_ts: 0,
            seq: 0,
        });
        last.table = e.table;
        last.key.clear();
        last.key.extend_from_slice(e.key);
        last.event_ts = e.event_ts;
        last.seq = e.seq;
    }

    /// Encoded size of the properties block if finished now.
    fn props_len(&self) -> usize {
        let last_key = self.last.as_ref().map_or(0, |l| l.key.len());
        PROPS_FIXED_LEN + self.props.smallest.1.len() + last_key
    }

    /// The properties of the file as it is when finished.
    fn finished_props(&self) -> Properties {
        let mut p = self.props.clone();
        p.data_blocks = self.data_blocks;
        p.key_count = self.keydir.len() as u64;
        if let Some(last) = &self.last {
            p.largest = (last.table, Bytes::copy_from_slice(&last.key));
        }
        p
    }
}

/// Checks an entry against the engine's limits and the tombstone rule.
fn check_entry(e: &EntryRef<'_>) -> Result<()> {
    check_limits(e.key, e.value.len())?;
    if e.kind == Kind::Tombstone && !e.value.is_empty() {
        return Err(Error::InvalidArgument(
            "a tombstone cannot carry a value".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::fs::OsFs;
    use crate::types::Entry;

    fn builder(dir: &Path, opts: BuildOptions) -> TableBuilder {
        TableBuilder::create(&OsFs::default(), &dir.join("b.sst"), 1, opts).unwrap()
    }

    #[test]
    fn out_of_order_and_duplicate_adds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = builder(dir.path(), small_blocks(4096));
        b.add(&put(1, b"b", 5, 5, b"v").as_ref()).unwrap();
        let refused: [Entry; 5] = [
            put(1, b"b", 5, 5, b"v"), // equal
            put(1, b"b", 5, 6, b"v"), // higher seq sorts first
            put(1, b"b", 6, 1, b"v"), // later event sorts first
            put(1, b"a", 0, 0, b"v"),
            put(0, b"z", 0, 0, b"v"),
        ];
        for e in &refused {
            assert!(
                matches!(b.add(&e.as_ref()), Err(Error::InvalidArgument(_))),
                "{e:?}"
            );
        }
        // Still usable after a refusal.
        assert_eq!(b.add(&put(1, b"b", 5, 4, b"v").as_ref()).unwrap(), 0);
        assert_eq!(b.entries(), 2);
        assert_eq!(b.finish().unwrap().entries, 2);
    }

    #[test]
    fn limits_and_tombstone_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = builder(dir.path(), small_blocks(4096));
        let long_key = vec![0u8; crate::types::MAX_KEY_LEN + 1];
        assert!(b.add(&put(1, &long_key, 0, 0, b"").as_ref()).is_err());
        let mut tomb = put(1, b"k", 0, 0, b"x");
        tomb.kind = Kind::Tombstone;
        assert!(matches!(
            b.add(&tomb.as_ref()),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(b.entries(), 0);
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fs = OsFs::default();
        let path = dir.path().join("o.sst");
        for opts in [
            BuildOptions {
                block_bytes: 0,
                ..Default::default()
            },
            BuildOptions {
                block_bytes: MAX_BLOCK_BYTES + 1,
                ..Default::default()
            },
            BuildOptions {
                zstd_level: 1000,
                ..Default::default()
            },
            BuildOptions {
                bloom_bits_per_key: MAX_BITS_PER_KEY + 1,
                ..Default::default()
            },
        ] {
            let r = TableBuilder::create(&fs, &path, 1, opts);
            assert!(matches!(r, Err(Error::InvalidArgument(_))), "{opts:?}");
        }
        let opts = BuildOptions::from_options(&Options::default(), 9);
        assert_eq!(
            (opts.block_bytes, opts.digest_seed),
            (DEFAULT_BLOCK_BYTES, 9)
        );
    }

    #[test]
    fn block_numbers_and_the_block_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = builder(dir.path(), small_blocks(64));
        b.set_max_blocks(3);
        // Each entry is 35 + 1 + 30 bytes, more than 64: one block each.
        for i in 0..3u8 {
            assert_eq!(
                b.add(&put(1, &[i], 0, 0, &[0; 30]).as_ref()).unwrap(),
                u32::from(i)
            );
        }
        let r = b.add(&put(1, &[9], 0, 0, &[0; 30]).as_ref());
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
        let s = b.finish().unwrap();
        assert_eq!((s.entries, s.data_blocks), (3, 3));
    }

    #[test]
    fn blocks_are_cut_near_block_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = builder(dir.path(), small_blocks(1000));
        let mut last_block = 0;
        for i in 0..100u32 {
            // 35 + 4 + 61 = 100 bytes per entry, plus 4 for its offset:
            // nine entries fit under 1000 bytes with the count.
            last_block = b
                .add(&put(1, &i.to_be_bytes(), 0, 0, &[1; 61]).as_ref())
                .unwrap();
            assert_eq!(last_block, i / 9);
        }
        let estimate = b.estimated_bytes();
        let s = b.finish().unwrap();
        assert_eq!(s.data_blocks, last_block + 1);
        assert!(estimate >= s.file_bytes, "{estimate} < {}", s.file_bytes);
        assert_eq!(
            std::fs::metadata(dir.path().join("b.sst")).unwrap().len(),
            s.file_bytes
        );
    }
}
