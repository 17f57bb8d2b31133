//! The fixed-layout parts of an SST: the file header, the block handle, the
//! trailer that follows every block (with compression and checksum), the
//! properties block, and the footer.
//!
//! Invariants:
//! - a block handle `(offset, len)` names `len` stored payload bytes at
//!   `offset`, immediately followed by a [`TRAILER_LEN`]-byte trailer;
//! - a trailer's checksum covers the stored payload, the compression byte and
//!   the uncompressed length, so nothing of a block is used before it matches;
//! - the footer is the last [`FOOTER_LEN`] bytes, checksummed, ending with
//!   [`SST_MAGIC`]; its handles must describe the meta blocks laid out back
//!   to back (bloom, key directory, index, properties) right before it.

use super::{Reader, TableSummary, MAX_BLOCKS_PER_SST, SST_FORMAT_VERSION, SST_MAGIC};
use crate::error::{Error, Result};
use crate::types::{cmp_entity, SeqNo, TableId, Timestamp, MAX_KEY_LEN};
use bytes::Bytes;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::io;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// Size of the file header: magic u64, version u32, reserved u32.
pub const HEADER_LEN: u64 = 16;
/// Size of a block trailer: compression u8, uncompressed length u32, checksum u64.
pub(crate) const TRAILER_LEN: usize = 13;
/// Bytes of a trailer covered by its own checksum (compression and length).
const TRAILER_CHECKED_LEN: usize = 5;
/// Encoded size of a block handle: offset u64, length u32.
const HANDLE_LEN: usize = 12;
/// Bytes of the footer covered by its checksum: four handles and the version.
const FOOTER_CHECKED_LEN: usize = 4 * HANDLE_LEN + 4;
/// Size of the footer: the checked part, then checksum u64 and magic u64.
pub(crate) const FOOTER_LEN: usize = FOOTER_CHECKED_LEN + 8 + 8;
/// Fixed part of the properties block (everything but the two keys).
pub(crate) const PROPS_FIXED_LEN: usize = 8 + 4 + 8 + 8 + 8 + 8 + 8 + 8 + 2 * (4 + 2);
/// Largest properties block a reader accepts.
pub(crate) const PROPS_MAX_LEN: usize = PROPS_FIXED_LEN + 2 * MAX_KEY_LEN;

/// The file header: what an SST starts with.
pub(crate) fn encode_header() -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(&SST_MAGIC.to_le_bytes());
    out[8..12].copy_from_slice(&SST_FORMAT_VERSION.to_le_bytes());
    // Bytes 12..16 are reserved and written as zero.
    out
}

/// Checks a file header read from offset 0.
pub(crate) fn check_header(buf: &[u8], path: &Path) -> Result<()> {
    let mut r = Reader::new(buf, path, 0, "header");
    let magic = r.u64()?;
    if magic != SST_MAGIC {
        return Err(Error::corruption(
            path,
            0,
            format!("not an SST: header magic {magic:#018x}"),
        ));
    }
    let version = r.u32()?;
    if version != SST_FORMAT_VERSION {
        return Err(Error::corruption(
            path,
            8,
            format!("unsupported SST format version {version}"),
        ));
    }
    if r.u32()? != 0 {
        return Err(Error::corruption(
            path,
            12,
            "reserved header bytes are not zero",
        ));
    }
    r.expect_end()
}

/// Where a block lives: its stored payload, not counting the trailer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    /// File offset of the first payload byte.
    pub(crate) offset: u64,
    /// Stored (possibly compressed) payload length.
    pub(crate) len: u32,
}

impl BlockHandle {
    /// Payload plus trailer: the bytes to read for this block.
    pub(crate) fn stored_len(self) -> usize {
        self.len as usize + TRAILER_LEN
    }

    /// First byte after the trailer; `None` if that overflows (only possible
    /// for a handle decoded from damaged bytes).
    pub(crate) fn end(self) -> Option<u64> {
        self.offset
            .checked_add(u64::from(self.len))?
            .checked_add(TRAILER_LEN as u64)
    }

    fn encode_into(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    fn decode(r: &mut Reader<'_>) -> Result<BlockHandle> {
        Ok(BlockHandle {
            offset: r.u64()?,
            len: r.u32()?,
        })
    }
}

/// How a block's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Compression {
    /// Stored as is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

/// Appends `stored` and its trailer to `out`. `uncompressed_len` is the
/// payload's length before compression.
pub(crate) fn seal_into(
    out: &mut Vec<u8>,
    stored: &[u8],
    compression: Compression,
    uncompressed_len: u32,
) {
    let start = out.len();
    out.extend_from_slice(stored);
    out.push(compression as u8);
    out.extend_from_slice(&uncompressed_len.to_le_bytes());
    // The checksummed bytes are contiguous here exactly as they are on disk.
    let sum = xxh3_64(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&sum.to_le_bytes());
}

/// Verifies a block read as payload plus trailer and returns its decoded
/// (decompressed) payload. `offset` is the block's file offset; decoded
/// payloads longer than `max_len` are refused before any allocation.
pub(crate) fn unseal(stored: Bytes, path: &Path, offset: u64, max_len: usize) -> Result<Bytes> {
    let corrupt = |reason: String| Error::corruption(path, offset, reason);
    let Some(payload_len) = stored.len().checked_sub(TRAILER_LEN) else {
        return Err(corrupt(format!(
            "block of {} bytes has no trailer",
            stored.len()
        )));
    };
    let checked = payload_len + TRAILER_CHECKED_LEN;
    let stored_sum = super::u64_at(&stored, checked).unwrap_or_default();
    let computed = xxh3_64(stored.get(..checked).unwrap_or_default());
    if stored_sum != computed {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            offset,
            stored: stored_sum,
            computed,
        });
    }
    let kind = stored.get(payload_len).copied().unwrap_or(u8::MAX);
    let ulen = super::u32_at(&stored, payload_len + 1).unwrap_or(u32::MAX) as usize;
    if ulen > max_len {
        return Err(corrupt(format!(
            "block claims {ulen} decoded bytes; at most {max_len} allowed here"
        )));
    }
    match kind {
        k if k == Compression::None as u8 => {
            if ulen != payload_len {
                return Err(corrupt(format!(
                    "raw block stores {payload_len} bytes but its trailer says {ulen}"
                )));
            }
            Ok(stored.slice(..payload_len))
        }
        k if k == Compression::Zstd as u8 => {
            let src = stored.get(..payload_len).unwrap_or_default();
            let out = zstd_decompress(src, ulen)
                .map_err(|e| corrupt(format!("zstd block does not decode: {e}")))?;
            if out.len() != ulen {
                return Err(corrupt(format!(
                    "zstd block decodes to {} bytes; its trailer says {ulen}",
                    out.len()
                )));
            }
            Ok(Bytes::from(out))
        }
        k => Err(corrupt(format!("unknown compression type {k}"))),
    }
}

thread_local! {
    // A zstd decompression context is costly to set up; each reading thread
    // keeps one.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decompresses one zstd frame into a buffer of exactly `capacity` bytes;
/// a frame that decodes to more is an error.
fn zstd_decompress(src: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| io::Error::other("zstd decompressor already in use"))?;
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        let Some(dctx) = slot.as_mut() else {
            return Err(io::Error::other("no zstd decompressor"));
        };
        let mut out = Vec::with_capacity(capacity);
        dctx.decompress_to_buffer(src, &mut out)?;
        Ok(out)
    })
}

/// The footer: where the meta blocks are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Footer {
    /// The bloom filter block.
    pub(crate) bloom: BlockHandle,
    /// The key directory block.
    pub(crate) keydir: BlockHandle,
    /// The index block.
    pub(crate) index: BlockHandle,
    /// The properties block.
    pub(crate) props: BlockHandle,
}

impl Footer {
    /// The footer's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        for h in [self.bloom, self.keydir, self.index, self.props] {
            h.encode_into(&mut out);
        }
        out.extend_from_slice(&SST_FORMAT_VERSION.to_le_bytes());
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out.extend_from_slice(&SST_MAGIC.to_le_bytes());
        out
    }

    /// Decodes and verifies the footer read at `offset` (the file length
    /// minus [`FOOTER_LEN`]).
    pub(crate) fn decode(buf: &[u8], path: &Path, offset: u64) -> Result<Footer> {
        if buf.len() != FOOTER_LEN {
            return Err(Error::corruption(path, offset, "footer has the wrong size"));
        }
        let magic = super::u64_at(buf, FOOTER_LEN - 8).unwrap_or_default();
        if magic != SST_MAGIC {
            return Err(Error::corruption(
                path,
                offset,
                format!("not a complete SST: footer magic {magic:#018x}"),
            ));
        }
        let stored = super::u64_at(buf, FOOTER_CHECKED_LEN).unwrap_or_default();
        let computed = xxh3_64(buf.get(..FOOTER_CHECKED_LEN).unwrap_or_default());
        if stored != computed {
            return Err(Error::Checksum {
                path: path.to_path_buf(),
                offset,
                stored,
                computed,
            });
        }
        let mut r = Reader::new(buf, path, offset, "footer");
        let footer = Footer {
            bloom: BlockHandle::decode(&mut r)?,
            keydir: BlockHandle::decode(&mut r)?,
            index: BlockHandle::decode(&mut r)?,
            props: BlockHandle::decode(&mut r)?,
        };
        let version = r.u32()?;
        if version != SST_FORMAT_VERSION {
            return Err(r.corrupt(format!("unsupported SST format version {version}")));
        }
        Ok(footer)
    }

    /// Checks that the meta blocks sit back to back between the data blocks
    /// and the footer of a file of `file_len` bytes.
    pub(crate) fn check_layout(&self, file_len: u64, path: &Path) -> Result<()> {
        let footer_at = file_len.saturating_sub(FOOTER_LEN as u64);
        let bad = |what: &str| {
            Error::corruption(
                path,
                footer_at,
                format!("footer handles are inconsistent: {what}"),
            )
        };
        if self.bloom.offset < HEADER_LEN {
            return Err(bad("bloom block overlaps the header"));
        }
        let chain = [
            (
                self.bloom,
                self.keydir.offset,
                "bloom block does not end where the key directory starts",
            ),
            (
                self.keydir,
                self.index.offset,
                "key directory does not end where the index starts",
            ),
            (
                self.index,
                self.props.offset,
                "index does not end where the properties start",
            ),
            (
                self.props,
                footer_at,
                "properties do not end where the footer starts",
            ),
        ];
        for (handle, next, what) in chain {
            if handle.end() != Some(next) {
                return Err(bad(what));
            }
        }
        Ok(())
    }
}

/// The properties block: counts and bounds over the whole file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Properties {
    /// Entries in the file.
    pub(crate) entries: u64,
    /// Data blocks in the file.
    pub(crate) data_blocks: u32,
    /// Distinct `(table, key)` pairs, i.e. key directory records.
    pub(crate) key_count: u64,
    /// Smallest sequence number.
    pub(crate) min_seq: SeqNo,
    /// Largest sequence number.
    pub(crate) max_seq: SeqNo,
    /// Earliest event time.
    pub(crate) min_event_ts: Timestamp,
    /// Latest event time.
    pub(crate) max_event_ts: Timestamp,
    /// Sum of key and value lengths.
    pub(crate) raw_bytes: u64,
    /// First `(table, key)`.
    pub(crate) smallest: (TableId, Bytes),
    /// Last `(table, key)`.
    pub(crate) largest: (TableId, Bytes),
}

impl Properties {
    /// The block's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(PROPS_FIXED_LEN + self.smallest.1.len() + self.largest.1.len());
        out.extend_from_slice(&self.entries.to_le_bytes());
        out.extend_from_slice(&self.data_blocks.to_le_bytes());
        out.extend_from_slice(&self.key_count.to_le_bytes());
        out.extend_from_slice(&self.min_seq.to_le_bytes());
        out.extend_from_slice(&self.max_seq.to_le_bytes());
        out.extend_from_slice(&self.min_event_ts.to_le_bytes());
        out.extend_from_slice(&self.max_event_ts.to_le_bytes());
        out.extend_from_slice(&self.raw_bytes.to_le_bytes());
        for (table, key) in [&self.smallest, &self.largest] {
            out.extend_from_slice(&table.to_le_bytes());
            // Keys are at most MAX_KEY_LEN (checked by the builder), so fit u16.
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
        }
        out
    }

    /// Decodes and sanity-checks the block stored at `offset`.
    pub(crate) fn decode(data: &Bytes, path: &Path, offset: u64) -> Result<Properties> {
        let mut r = Reader::new(data, path, offset, "properties");
        let mut props = Properties {
            entries: r.u64()?,
            data_blocks: r.u32()?,
            key_count: r.u64()?,
            min_seq: r.u64()?,
            max_seq: r.u64()?,
            min_event_ts: r.i64()?,
            max_event_ts: r.i64()?,
            raw_bytes: r.u64()?,
            smallest: (0, Bytes::new()),
            largest: (0, Bytes::new()),
        };
        props.smallest = decode_entity(&mut r, data)?;
        props.largest = decode_entity(&mut r, data)?;
        r.expect_end()?;
        props.check().map_err(|what| r.corrupt(what))?;
        Ok(props)
    }

    /// Internal consistency of the counts and bounds.
    fn check(&self) -> std::result::Result<(), String> {
        if self.data_blocks > MAX_BLOCKS_PER_SST {
            return Err(format!("{} data blocks exceed the limit", self.data_blocks));
        }
        let empty = self.entries == 0;
        if empty != (self.data_blocks == 0) || empty != (self.key_count == 0) {
            return Err("entry, block and key counts disagree about emptiness".into());
        }
        if u64::from(self.data_blocks) > self.entries || self.key_count > self.entries {
            return Err("more blocks or keys than entries".into());
        }
        if empty {
            if *self != Properties::empty() {
                return Err("an empty table has non-zero bounds".into());
            }
            return Ok(());
        }
        if self.min_seq > self.max_seq || self.min_event_ts > self.max_event_ts {
            return Err("minimum above maximum".into());
        }
        let order = cmp_entity(
            (self.smallest.0, &self.smallest.1),
            (self.largest.0, &self.largest.1),
        );
        if order == Ordering::Greater {
            return Err("smallest key is above largest key".into());
        }
        Ok(())
    }

    /// The properties of a table with no entries.
    pub(crate) fn empty() -> Properties {
        Properties {
            entries: 0,
            data_blocks: 0,
            key_count: 0,
            min_seq: 0,
            max_seq: 0,
            min_event_ts: 0,
            max_event_ts: 0,
            raw_bytes: 0,
            smallest: (0, Bytes::new()),
            largest: (0, Bytes::new()),
        }
    }

    /// The public summary of a file numbered `file_no` of `file_bytes` bytes.
    pub(crate) fn to_summary(&self, file_no: u64, file_bytes: u64) -> TableSummary {
        TableSummary {
            file_no,
            file_bytes,
            entries: self.entries,
            data_blocks: self.data_blocks,
            smallest: self.smallest.clone(),
            largest: self.largest.clone(),
            min_seq: self.min_seq,
            max_seq: self.max_seq,
            min_event_ts: self.min_event_ts,
            max_event_ts: self.max_event_ts,
            raw_bytes: self.raw_bytes,
        }
    }
}

/// Reads `table u32, key_len u16, key` and returns the key as a slice of `data`.
fn decode_entity(r: &mut Reader<'_>, data: &Bytes) -> Result<(TableId, Bytes)> {
    let table = r.u32()?;
    let len = usize::from(r.u16()?);
    if len > MAX_KEY_LEN {
        return Err(r.corrupt(format!("key of {len} bytes exceeds the limit")));
    }
    let start = r.pos();
    r.take(len)?;
    Ok((table, data.slice(start..start + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path() -> &'static Path {
        Path::new("/tmp/t.sst")
    }

    fn sealed(payload: &[u8], c: Compression, ulen: u32) -> Bytes {
        let mut out = Vec::new();
        seal_into(&mut out, payload, c, ulen);
        Bytes::from(out)
    }

    #[test]
    fn raw_block_round_trips_and_rejects_every_flip() {
        let stored = sealed(b"hello block", Compression::None, 11);
        assert_eq!(
            &unseal(stored.clone(), path(), 5, 100)
                .ok()
                .unwrap_or_default()[..],
            b"hello block"
        );
        for i in 0..stored.len() {
            let mut v = stored.to_vec();
            v[i] ^= 0x10;
            let err = unseal(Bytes::from(v), path(), 5, 100).err();
            assert!(
                err.is_some_and(|e| e.is_corruption()),
                "flip at {i} not caught"
            );
        }
    }

    #[test]
    fn zstd_block_round_trips() {
        let raw = vec![7u8; 1000];
        let z = zstd::bulk::compress(&raw, 1).unwrap_or_default();
        let stored = sealed(&z, Compression::Zstd, 1000);
        let out = unseal(stored, path(), 0, 1000).ok();
        assert_eq!(out.as_deref(), Some(&raw[..]));
    }

    #[test]
    fn lying_lengths_are_corruption() {
        let z = zstd::bulk::compress(&[1u8; 64], 1).unwrap_or_default();
        for (payload, c, ulen, max) in [
            (&b"abc"[..], Compression::None, 4, 100),
            (&z[..], Compression::Zstd, 63, 100),
            (&z[..], Compression::Zstd, 65, 100),
            (&z[..], Compression::Zstd, 64, 10),
        ] {
            let err = unseal(sealed(payload, c, ulen), path(), 9, max).err();
            assert!(matches!(err, Some(Error::Corruption { offset: 9, .. })));
        }
        let err = unseal(Bytes::from_static(b"short"), path(), 9, 10).err();
        assert!(matches!(err, Some(Error::Corruption { .. })));
    }

    #[test]
    fn footer_round_trips_and_checks_layout() {
        let h = |offset, len| BlockHandle { offset, len };
        let f = Footer {
            bloom: h(16, 10),
            keydir: h(39, 5),
            index: h(57, 7),
            props: h(77, 3),
        };
        let bytes = f.encode();
        assert_eq!(bytes.len(), FOOTER_LEN);
        assert_eq!(Footer::decode(&bytes, path(), 93).ok(), Some(f));
        assert!(f.check_layout(93 + FOOTER_LEN as u64, path()).is_ok());
        assert!(f.check_layout(94 + FOOTER_LEN as u64, path()).is_err());
        for i in 0..bytes.len() {
            let mut v = bytes.clone();
            v[i] ^= 1;
            assert!(
                Footer::decode(&v, path(), 93).is_err(),
                "flip at {i} not caught"
            );
        }
    }

    #[test]
    fn header_is_checked() {
        let h = encode_header();
        assert!(check_header(&h, path()).is_ok());
        for i in 0..h.len() {
            let mut v = h;
            v[i] ^= 4;
            assert!(check_header(&v, path()).is_err());
        }
    }

    proptest! {
        #[test]
        fn properties_round_trip(
            entries in 1u64..1000, seqs in (0u64..100, 0u64..100), ts in (-50i64..50, -50i64..50),
            raw in any::<u64>(), k1 in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut k2 = k1.clone();
            k2.push(0);
            let p = Properties {
                entries, data_blocks: 1, key_count: 1,
                min_seq: seqs.0.min(seqs.1), max_seq: seqs.0.max(seqs.1),
                min_event_ts: ts.0.min(ts.1), max_event_ts: ts.0.max(ts.1), raw_bytes: raw,
                smallest: (3, Bytes::from(k1)), largest: (3, Bytes::from(k2)),
            };
            let bytes = Bytes::from(p.encode());
            prop_assert_eq!(Properties::decode(&bytes, path(), 0).ok(), Some(p));
            prop_assert!(Properties::decode(&bytes.slice(1..), path(), 0).is_err());
        }
    }

    #[test]
    fn inconsistent_properties_are_corruption() {
        let mut p = Properties::empty();
        p.entries = 1;
        let bytes = Bytes::from(p.encode());
        assert!(Properties::decode(&bytes, path(), 0).is_err());
        let empty = Bytes::from(Properties::empty().encode());
        assert!(Properties::decode(&empty, path(), 0).is_ok());
    }
}
