//! Data blocks: the encoding of entries inside one block, the builder that
//! produces it, and [`Block`], a decoded, validated block shared through the
//! block cache.
//!
//! A decoded block is
//! `entries | offsets: [u32; count] | fingerprints: [u16; count] | count: u32`,
//! every entry being a fixed header followed by its key and value:
//!
//! ```text
//! table u32 | key_len u16 | kind u8 | value_len u32 | event_ts i64 | seq u64 | ingest_ts i64 | key | value
//! ```
//!
//! The offsets serve binary search ([`Block::seek`]). The fingerprints (16
//! bits of a hash of each entry's `(table, key)`) serve exact-key lookups
//! ([`Block::find_first`]): a scan of the compact array at the end of the
//! block finds the candidates, so a lookup in a block that is not in the CPU
//! cache costs about two memory latencies instead of one per search probe.
//!
//! Invariants established by [`Block::decode`] and relied on afterwards: the
//! entries tile the entry area exactly (entry 0 at offset 0, each next entry
//! where the previous ends, the last ending where the offset array starts);
//! every key is at most `MAX_KEY_LEN`, every kind is known, tombstones carry
//! no value; every fingerprint matches its entry; entries are in strictly
//! increasing storage order. Accessors still bounds-check every read, so a
//! broken invariant is an error, never a panic.

use super::{i64_at, u16_at, u32_at, u64_at};
use crate::error::{Error, Result};
use crate::types::{
    cmp_internal, Entry, EntryRef, Kind, SeqNo, TableId, Timestamp, MAX_KEY_LEN, MAX_VALUE_LEN,
};
use bytes::Bytes;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Bytes of an entry before its key.
pub(crate) const ENTRY_HEADER_LEN: usize = 35;
const AT_TABLE: usize = 0;
const AT_KEY_LEN: usize = 4;
const AT_KIND: usize = 6;
const AT_VALUE_LEN: usize = 7;
const AT_EVENT_TS: usize = 11;
const AT_SEQ: usize = 19;
const AT_INGEST_TS: usize = 27;
/// Key bytes [`Block::prefetch_entry`] brings in with an entry's header.
const KEY_PREFETCH_LEN: usize = 16;
/// Size of one entry offset and of the trailing count.
const U32_LEN: usize = 4;
/// Size of one fingerprint.
const FP_LEN: usize = 2;
/// Per-entry bytes after the entry area: its offset and its fingerprint.
const PER_ENTRY_LEN: usize = U32_LEN + FP_LEN;

/// The 16-bit fingerprint of `(table, key)` stored for each entry.
#[inline]
pub(crate) fn fingerprint(table: TableId, key: &[u8]) -> u16 {
    (xxh3_64_with_seed(key, u64::from(table)) >> 48) as u16
}

/// Encoded size of an entry with this key and value.
pub(crate) fn encoded_entry_len(key_len: usize, value_len: usize) -> usize {
    ENTRY_HEADER_LEN + key_len + value_len
}

/// Accumulates entries for one data block.
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
    fingerprints: Vec<u16>,
}

impl BlockBuilder {
    /// An empty builder expecting about `block_bytes` of entries.
    pub(crate) fn new(block_bytes: usize) -> BlockBuilder {
        BlockBuilder {
            buf: Vec::with_capacity(block_bytes + ENTRY_HEADER_LEN + MAX_KEY_LEN),
            offsets: Vec::new(),
            fingerprints: Vec::new(),
        }
    }

    /// True if no entry has been added since the last reset.
    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Encoded size of the block as it stands.
    pub(crate) fn size(&self) -> usize {
        self.buf.len() + PER_ENTRY_LEN * self.offsets.len() + U32_LEN
    }

    /// Encoded size after adding one more entry of `entry_len` bytes.
    pub(crate) fn size_with(&self, entry_len: usize) -> usize {
        self.size() + entry_len + PER_ENTRY_LEN
    }

    /// Appends an entry. The caller has checked the key and value limits, so
    /// the lengths fit their fields, and keeps blocks below `MAX_BLOCK_LEN`,
    /// so offsets fit `u32`.
    pub(crate) fn add(&mut self, e: &EntryRef<'_>) {
        self.offsets.push(self.buf.len() as u32);
        self.fingerprints.push(fingerprint(e.table, e.key));
        let b = &mut self.buf;
        b.extend_from_slice(&e.table.to_le_bytes());
        b.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        b.push(e.kind as u8);
        b.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
        b.extend_from_slice(&e.event_ts.to_le_bytes());
        b.extend_from_slice(&e.seq.to_le_bytes());
        b.extend_from_slice(&e.ingest_ts.to_le_bytes());
        b.extend_from_slice(e.key);
        b.extend_from_slice(e.value);
    }

    /// Appends the offset and fingerprint arrays and the count and returns
    /// the finished block.
    /// Call [`BlockBuilder::reset`] before adding more.
    pub(crate) fn finish(&mut self) -> &[u8] {
        for off in &self.offsets {
            self.buf.extend_from_slice(&off.to_le_bytes());
        }
        for fp in &self.fingerprints {
            self.buf.extend_from_slice(&fp.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        &self.buf
    }

    /// Empties the builder, keeping its allocations.
    pub(crate) fn reset(&mut self) {
        self.buf.clear();
        self.offsets.clear();
        self.fingerprints.clear();
    }
}

/// A decompressed, validated data block. Cloning is cheap (one reference
/// count); values and keys handed out are zero-copy slices of the block.
#[derive(Clone)]
pub struct Block {
    inner: Arc<BlockInner>,
}

/// Entries whose offsets and fingerprints a block's header also holds.
const INLINE_ENTRIES: usize = 12;

/// The shared state of a [`Block`]; opaque outside this module.
///
/// A block of at most [`INLINE_ENTRIES`] entries (a 4 KiB block of feature
/// rows holds about ten) keeps copies of its offsets and fingerprints right
/// after the count, in the header's first two cache lines: a point read
/// then finds its entry without touching the block's trailer, one memory
/// latency fewer. `repr(C)` keeps that order.
#[repr(C)]
pub(crate) struct BlockInner {
    count: usize,
    inline_offsets: [u32; INLINE_ENTRIES],
    inline_fps: [u16; INLINE_ENTRIES],
    data: Bytes,
    /// Where the offset array starts (= end of the entry area).
    offsets_at: usize,
    /// Where the fingerprint array starts.
    fingerprints_at: usize,
    path: Arc<Path>,
    file_offset: u64,
}

/// The comparison fields of an entry.
type EntryKey<'a> = (TableId, &'a [u8], Timestamp, SeqNo);

impl Block {
    /// Validates a decoded block read from `path` at file offset `offset`
    /// (both used only in error messages): the count, every entry offset,
    /// every entry header and fingerprint, and storage order.
    pub fn decode(data: Bytes, path: &Path, offset: u64) -> Result<Block> {
        Block::decode_shared(data, Arc::from(path), offset)
    }

    /// [`Block::decode`] with a path the caller already shares.
    pub(crate) fn decode_shared(data: Bytes, path: Arc<Path>, offset: u64) -> Result<Block> {
        let Layout {
            count,
            offsets_at,
            fingerprints_at,
        } = match validate(&data) {
            Ok(layout) => layout,
            Err(reason) => {
                return Err(Error::corruption(
                    &*path,
                    offset,
                    format!("data block: {reason}"),
                ))
            }
        };
        let mut inline_offsets = [0u32; INLINE_ENTRIES];
        let mut inline_fps = [0u16; INLINE_ENTRIES];
        if count <= INLINE_ENTRIES {
            for i in 0..count {
                // `validate` checked both arrays are in bounds.
                inline_offsets[i] = u32_at(&data, offsets_at + U32_LEN * i).unwrap_or(u32::MAX);
                inline_fps[i] = u16_at(&data, fingerprints_at + FP_LEN * i).unwrap_or_default();
            }
        }
        Ok(Block {
            inner: Arc::new(BlockInner {
                count,
                inline_offsets,
                inline_fps,
                data,
                offsets_at,
                fingerprints_at,
                path,
                file_offset: offset,
            }),
        })
    }

    /// Gives up this handle as a raw pointer that owns its reference count
    /// (for the block cache's slots).
    pub(crate) fn into_raw(self) -> *const BlockInner {
        Arc::into_raw(self.inner)
    }

    /// Takes back a handle given up by [`Block::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from [`Block::into_raw`], and the reference count it
    /// owns must not be taken back twice.
    pub(crate) unsafe fn from_raw(raw: *const BlockInner) -> Block {
        // SAFETY: per the contract, `raw` is an `Arc::into_raw` pointer
        // whose count is handed to the new `Arc`.
        Block {
            inner: unsafe { Arc::from_raw(raw) },
        }
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.count
    }

    /// True if the block holds no entry.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.inner.count == 0
    }

    /// Memory the block accounts for in the cache: its decoded bytes plus
    /// the bookkeeping around them.
    pub fn size_bytes(&self) -> usize {
        self.inner.data.len() + std::mem::size_of::<BlockInner>() + std::mem::size_of::<Block>()
    }

    /// The file the block was read from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The block's byte offset in its file.
    pub fn file_offset(&self) -> u64 {
        self.inner.file_offset
    }

    /// Entry `i`, borrowing from the block.
    pub fn entry(&self, i: usize) -> Result<EntryRef<'_>> {
        let (h, key, value) = self.locate(i)?;
        let data = &self.inner.data;
        let kind = Kind::from_u8(h.kind).ok_or_else(|| self.corrupt(i, "unknown kind"))?;
        match (data.get(key), data.get(value)) {
            (Some(key), Some(value)) => Ok(EntryRef {
                table: h.table,
                key,
                event_ts: h.event_ts,
                seq: h.seq,
                ingest_ts: h.ingest_ts,
                kind,
                value,
            }),
            _ => Err(self.corrupt(i, "entry runs past the block")),
        }
    }

    /// Value of entry `i` as a zero-copy slice of the block.
    pub fn value(&self, i: usize) -> Result<Bytes> {
        let (_, _, value) = self.locate(i)?;
        Ok(self.inner.data.slice(value))
    }

    /// Entry `i` as an owned [`Entry`] whose key and value share the block's
    /// memory.
    pub fn to_entry(&self, i: usize) -> Result<Entry> {
        let (h, key, value) = self.locate(i)?;
        let kind = Kind::from_u8(h.kind).ok_or_else(|| self.corrupt(i, "unknown kind"))?;
        let data = &self.inner.data;
        Ok(Entry {
            table: h.table,
            key: data.slice(key),
            event_ts: h.event_ts,
            seq: h.seq,
            ingest_ts: h.ingest_ts,
            kind,
            value: data.slice(value),
        })
    }

    /// Header and in-bounds key and value ranges of entry `i`.
    fn locate(&self, i: usize) -> Result<(Header, Range<usize>, Range<usize>)> {
        let start = self.entry_start(i)?;
        locate(&self.inner.data, start).ok_or_else(|| self.corrupt(i, "entry does not decode"))
    }

    /// Index of the first entry >= `(table, key, event_ts, seq)` in storage
    /// order; `len()` if none.
    ///
    /// A binary search over the offset array, narrowed first when the key is
    /// in the block: its first version is found through the fingerprints,
    /// everything before it is below the target, and the target lies within
    /// a few versions after it (an exponential probe finds the bound). That
    /// keeps a seek in a block that is not in the CPU cache to a few memory
    /// latencies instead of one per probe.
    pub fn seek(
        &self,
        table: TableId,
        key: &[u8],
        event_ts: Timestamp,
        seq: SeqNo,
    ) -> Result<usize> {
        let target = (table, key, event_ts, seq);
        let (lo, hi) = match self.find_first(table, key)? {
            Some(first) => self.bracket_from(first, target)?,
            None => (0, self.inner.count),
        };
        self.binary_search(lo, hi, target)
    }

    /// Given that every entry before `first` is below `target`, a range
    /// `lo..hi` such that entries before `lo` are below it and entry `hi`
    /// (if any) is not. Probes `first`, `first + 1`, `first + 3`, ...
    fn bracket_from(&self, first: usize, target: EntryKey<'_>) -> Result<(usize, usize)> {
        let n = self.inner.count;
        let (mut lo, mut probe, mut step) = (first, first, 1usize);
        while probe < n && cmp_internal(self.key_at(probe)?, target) == Ordering::Less {
            lo = probe + 1;
            probe = probe.saturating_add(step);
            step = step.saturating_mul(2);
        }
        Ok((lo, probe.min(n)))
    }

    /// The first entry in `lo..hi` that is >= `target`, or `hi`.
    fn binary_search(&self, mut lo: usize, mut hi: usize, target: EntryKey<'_>) -> Result<usize> {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match cmp_internal(self.key_at(mid)?, target) {
                Ordering::Less => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Starts loading the block's trailer into the CPU cache: the
    /// fingerprint array and the end of the offset array before it, which
    /// in a block of a few dozen entries share a line or two. A
    /// [`Block::find_first`] soon after then reads both without waiting.
    #[inline]
    pub fn prefetch_trailer(&self) {
        let inner = &*self.inner;
        if inner.count <= INLINE_ENTRIES {
            return; // the header holds them
        }
        if let Some(fps) = inner.data.get(inner.fingerprints_at..) {
            crate::prefetch::prefetch(fps);
        }
        if let Some(offsets) = inner.data.get(inner.offsets_at..) {
            crate::prefetch::prefetch(offsets);
        }
    }

    /// Starts loading entry `i`'s header and key into the CPU cache (the
    /// two may straddle a cache line).
    #[inline]
    pub fn prefetch_entry(&self, i: usize) {
        if let Ok(start) = self.entry_start(i) {
            let end = start.saturating_add(ENTRY_HEADER_LEN + KEY_PREFETCH_LEN);
            if let Some(entry) = self.inner.data.get(start..end.min(self.inner.data.len())) {
                crate::prefetch::prefetch(entry);
                if let Some(last) = entry.last() {
                    crate::prefetch::prefetch(last);
                }
            }
        }
    }

    /// Position of the first entry whose fingerprint is `fp`: where
    /// [`Block::find_first`] would compare its first key. Lets a batched
    /// read prefetch that entry before comparing anything.
    #[inline]
    pub(crate) fn first_candidate(&self, fp: u16) -> Option<usize> {
        let inner = &*self.inner;
        if inner.count <= INLINE_ENTRIES {
            return inner
                .inline_fps
                .get(..inner.count)?
                .iter()
                .position(|&f| f == fp);
        }
        let end = inner.fingerprints_at.checked_add(FP_LEN * inner.count)?;
        let fps = inner.data.get(inner.fingerprints_at..end)?;
        fps.chunks_exact(FP_LEN)
            .position(|stored| stored == fp.to_le_bytes())
    }

    /// Position of the first entry of `(table, key)` in this block (its
    /// newest version here), if any. Scans the fingerprint array and checks
    /// each candidate's key.
    pub fn find_first(&self, table: TableId, key: &[u8]) -> Result<Option<usize>> {
        let fp = fingerprint(table, key);
        let inner = &*self.inner;
        let fps = inner
            .fingerprints_at
            .checked_add(FP_LEN * inner.count)
            .and_then(|end| inner.data.get(inner.fingerprints_at..end))
            .ok_or_else(|| {
                Error::corruption(
                    &*inner.path,
                    inner.file_offset,
                    "data block: fingerprint array is truncated",
                )
            })?;
        for (i, stored) in fps.chunks_exact(FP_LEN).enumerate() {
            if stored != fp.to_le_bytes() {
                continue;
            }
            let (t, k, _, _) = self.key_at(i)?;
            if t == table && k == key {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The comparison fields of entry `i`.
    #[inline]
    pub(crate) fn key_at(&self, i: usize) -> Result<EntryKey<'_>> {
        let start = self.entry_start(i)?;
        parse_key(&self.inner.data, start).ok_or_else(|| self.corrupt(i, "entry does not decode"))
    }

    #[inline]
    fn entry_start(&self, i: usize) -> Result<usize> {
        if i >= self.inner.count {
            return Err(Error::InvalidArgument(format!(
                "entry {i} of a block of {} entries in {} at offset {}",
                self.inner.count,
                self.inner.path.display(),
                self.inner.file_offset
            )));
        }
        if self.inner.count <= INLINE_ENTRIES {
            if let Some(&o) = self.inner.inline_offsets.get(i) {
                return Ok(o as usize);
            }
        }
        let at = self.inner.offsets_at + U32_LEN * i;
        u32_at(&self.inner.data, at)
            .map(|o| o as usize)
            .ok_or_else(|| self.corrupt(i, "offset array is truncated"))
    }

    fn corrupt(&self, i: usize, what: &str) -> Error {
        Error::corruption(
            &*self.inner.path,
            self.inner.file_offset,
            format!("data block, entry {i}: {what}"),
        )
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("path", &self.inner.path)
            .field("file_offset", &self.inner.file_offset)
            .field("entries", &self.inner.count)
            .field("bytes", &self.inner.data.len())
            .finish()
    }
}

/// The fixed header of an entry.
struct Header {
    table: TableId,
    key_len: usize,
    kind: u8,
    value_len: usize,
    event_ts: Timestamp,
    seq: SeqNo,
    ingest_ts: Timestamp,
}

fn parse_header(data: &[u8], start: usize) -> Option<Header> {
    let h = data.get(start..start.checked_add(ENTRY_HEADER_LEN)?)?;
    Some(Header {
        table: u32_at(h, AT_TABLE)?,
        key_len: usize::from(u16_at(h, AT_KEY_LEN)?),
        kind: *h.get(AT_KIND)?,
        value_len: u32_at(h, AT_VALUE_LEN)? as usize,
        event_ts: i64_at(h, AT_EVENT_TS)?,
        seq: u64_at(h, AT_SEQ)?,
        ingest_ts: i64_at(h, AT_INGEST_TS)?,
    })
}

#[inline]
fn parse_key(data: &[u8], start: usize) -> Option<EntryKey<'_>> {
    let key_len = usize::from(u16_at(data, start.checked_add(AT_KEY_LEN)?)?);
    let key_at = start.checked_add(ENTRY_HEADER_LEN)?;
    Some((
        u32_at(data, start)?,
        data.get(key_at..key_at.checked_add(key_len)?)?,
        i64_at(data, start.checked_add(AT_EVENT_TS)?)?,
        u64_at(data, start.checked_add(AT_SEQ)?)?,
    ))
}

/// An entry's header and its key and value ranges, checked to lie within
/// `data`.
fn locate(data: &[u8], start: usize) -> Option<(Header, Range<usize>, Range<usize>)> {
    let h = parse_header(data, start)?;
    let key_at = start.checked_add(ENTRY_HEADER_LEN)?;
    let value_at = key_at.checked_add(h.key_len)?;
    let end = value_at.checked_add(h.value_len)?;
    (end <= data.len()).then_some((h, key_at..value_at, value_at..end))
}

/// Where the parts of a block are.
struct Layout {
    count: usize,
    offsets_at: usize,
    fingerprints_at: usize,
}

/// Checks the whole block; returns its layout or what is wrong.
fn validate(data: &[u8]) -> std::result::Result<Layout, String> {
    let len = data.len();
    let count_at = len
        .checked_sub(U32_LEN)
        .ok_or_else(|| format!("{len} bytes cannot hold an entry count"))?;
    let count = u32_at(data, count_at).unwrap_or(u32::MAX) as usize;
    let offsets_at = count
        .checked_mul(PER_ENTRY_LEN)
        .and_then(|n| count_at.checked_sub(n))
        .ok_or_else(|| format!("{count} entries do not fit in {len} bytes"))?;
    let fingerprints_at = offsets_at + U32_LEN * count;
    let mut expected_start = 0usize;
    let mut prev: Option<(EntryKey<'_>, u16)> = None;
    for i in 0..count {
        let start = u32_at(data, offsets_at + U32_LEN * i).unwrap_or(u32::MAX) as usize;
        if start != expected_start {
            return Err(format!(
                "entry {i} starts at {start}, expected {expected_start}"
            ));
        }
        let end = check_entry(data, start, offsets_at).map_err(|e| format!("entry {i}: {e}"))?;
        let key = parse_key(data, start).ok_or_else(|| format!("entry {i} does not decode"))?;
        // Versions of one entity are adjacent: an entry of the previous
        // entry's entity must carry the fingerprint already checked for it,
        // which a comparison checks without hashing the key again.
        let fp = u16_at(data, fingerprints_at + FP_LEN * i);
        let expected_fp = match prev {
            Some((p, p_fp)) if (p.0, p.1) == (key.0, key.1) => p_fp,
            _ => fingerprint(key.0, key.1),
        };
        if fp != Some(expected_fp) {
            return Err(format!("entry {i} has the wrong fingerprint"));
        }
        if prev.is_some_and(|(p, _)| cmp_internal(p, key) != Ordering::Less) {
            return Err(format!("entry {i} is not above its predecessor"));
        }
        prev = Some((key, expected_fp));
        expected_start = end;
    }
    if expected_start != offsets_at {
        return Err(format!(
            "entries end at {expected_start} but the offset array starts at {offsets_at}"
        ));
    }
    Ok(Layout {
        count,
        offsets_at,
        fingerprints_at,
    })
}

/// Checks one entry's header and extent; returns where it ends.
fn check_entry(data: &[u8], start: usize, limit: usize) -> std::result::Result<usize, String> {
    let h = parse_header(data, start).ok_or("header is truncated")?;
    if h.key_len > MAX_KEY_LEN {
        return Err(format!("key of {} bytes exceeds the limit", h.key_len));
    }
    if h.value_len > MAX_VALUE_LEN {
        return Err(format!("value of {} bytes exceeds the limit", h.value_len));
    }
    match Kind::from_u8(h.kind) {
        None => return Err(format!("unknown kind {}", h.kind)),
        Some(Kind::Tombstone) if h.value_len != 0 => return Err("tombstone carries a value".into()),
        Some(_) => {}
    }
    let end = start + encoded_entry_len(h.key_len, h.value_len);
    if end > limit {
        return Err(format!(
            "runs to {end}, past the entry area ending at {limit}"
        ));
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path() -> &'static Path {
        Path::new("/tmp/b.sst")
    }

    fn build(entries: &[Entry]) -> Bytes {
        let mut b = BlockBuilder::new(4096);
        for e in entries {
            b.add(&e.as_ref());
        }
        Bytes::copy_from_slice(b.finish())
    }

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        (
            0u32..3,
            proptest::collection::vec(0u8..3, 0..4),
            -3i64..3,
            0u64..4,
            any::<i64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(table, key, event_ts, seq, ingest_ts, put, value)| Entry {
                table,
                key: key.into(),
                event_ts,
                seq,
                ingest_ts,
                kind: if put { Kind::Put } else { Kind::Tombstone },
                value: if put { value.into() } else { Bytes::new() },
            })
    }

    fn sorted(mut v: Vec<Entry>) -> Vec<Entry> {
        v.sort_by(|a, b| a.cmp_order(b));
        v.dedup_by(|a, b| a.cmp_order(b) == Ordering::Equal);
        v
    }

    proptest! {
        #[test]
        fn round_trip_and_seek(
            raw in proptest::collection::vec(entry_strategy(), 0..40),
            targets in proptest::collection::vec(entry_strategy(), 0..20),
        ) {
            let entries = sorted(raw);
            let block = Block::decode(build(&entries), path(), 3).unwrap();
            prop_assert_eq!(block.len(), entries.len());
            for (i, e) in entries.iter().enumerate() {
                prop_assert_eq!(block.entry(i).unwrap(), e.as_ref());
                prop_assert_eq!(&block.to_entry(i).unwrap(), e);
                prop_assert_eq!(block.value(i).unwrap(), e.value.clone());
            }
            for t in targets.iter().chain(entries.iter()) {
                let want = entries.partition_point(|e| e.cmp_order(t) == Ordering::Less);
                let got = block.seek(t.table, &t.key, t.event_ts, t.seq).unwrap();
                prop_assert_eq!(got, want);
            }
            prop_assert!(block.entry(entries.len()).is_err());
            for t in targets.iter().chain(entries.iter()) {
                let want = entries.iter().position(|e| e.table == t.table && e.key == t.key);
                prop_assert_eq!(block.find_first(t.table, &t.key).unwrap(), want);
                // Blocks small enough answer from the header's copies, the
                // others from the trailer: the same answer either way.
                let fp = fingerprint(t.table, &t.key);
                let want = entries.iter().position(|e| fingerprint(e.table, &e.key) == fp);
                prop_assert_eq!(block.first_candidate(fp), want);
            }
        }

        #[test]
        fn damaged_blocks_never_panic_or_lie(
            raw in proptest::collection::vec(entry_strategy(), 1..10),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let entries = sorted(raw);
            let good = build(&entries);
            let mut bad = good.to_vec();
            for (at, x) in &flips {
                let i = at.index(bad.len());
                bad[i] ^= x;
            }
            check_damaged(Bytes::from(bad))?;
            let cut = cut.index(good.len());
            check_damaged(good.slice(..cut))?;
        }
    }

    /// A damaged block either fails to decode or, where a flip happened to
    /// leave a valid block, decodes to a self-consistent one; it never panics.
    fn check_damaged(data: Bytes) -> std::result::Result<(), TestCaseError> {
        match Block::decode(data, path(), 0) {
            Err(e) => prop_assert!(e.is_corruption()),
            Ok(b) => {
                for i in 0..b.len() {
                    prop_assert!(b.entry(i).is_ok());
                    prop_assert!(b.value(i).is_ok());
                }
                prop_assert!(b.seek(0, b"", i64::MAX, u64::MAX).is_ok());
            }
        }
        Ok(())
    }

    #[test]
    fn seek_within_long_version_runs() {
        let version = |key: &'static [u8], event_ts: i64, seq: u64| Entry {
            table: 2,
            key: Bytes::from_static(key),
            event_ts,
            seq,
            ingest_ts: 0,
            kind: Kind::Put,
            value: Bytes::new(),
        };
        let mut entries = vec![version(b"a", 0, 0), version(b"c", 0, 0)];
        for ts in 0..70 {
            entries.push(version(b"b", ts, 5));
            entries.push(version(b"b", ts, 3));
        }
        let entries = sorted(entries);
        let block = Block::decode(build(&entries), path(), 0).unwrap();
        for ts in -2..72 {
            for seq in [0, 3, 4, 5, 6, u64::MAX] {
                let t = version(b"b", ts, seq);
                let want = entries.partition_point(|e| e.cmp_order(&t) == Ordering::Less);
                assert_eq!(
                    block.seek(2, b"b", ts, seq).unwrap(),
                    want,
                    "ts {ts} seq {seq}"
                );
            }
        }
        assert_eq!(block.find_first(2, b"b").unwrap(), Some(1));
        assert_eq!(block.find_first(2, b"bb").unwrap(), None);
        assert_eq!(block.seek(2, b"bb", 0, 0).unwrap(), entries.len() - 1);
    }

    #[test]
    fn rejects_disorder_and_bad_fields() {
        let e = |key: &'static [u8], seq| Entry {
            table: 1,
            key: Bytes::from_static(key),
            event_ts: 5,
            seq,
            ingest_ts: 0,
            kind: Kind::Put,
            value: Bytes::from_static(b"v"),
        };
        // Equal and descending neighbours are both refused.
        for pair in [[e(b"a", 1), e(b"a", 1)], [e(b"b", 1), e(b"a", 1)]] {
            let data = build(&pair);
            assert!(matches!(
                Block::decode(data, path(), 8),
                Err(Error::Corruption { offset: 8, .. })
            ));
        }
        let good = build(&[e(b"a", 1)]);
        let mut bad_kind = good.to_vec();
        bad_kind[AT_KIND] = 9;
        assert!(Block::decode(bad_kind.into(), path(), 0).is_err());
        let mut bad_count = good.to_vec();
        let n = bad_count.len();
        bad_count[n - 4] = 2;
        assert!(Block::decode(bad_count.into(), path(), 0).is_err());
        let mut bad_fingerprint = good.to_vec();
        bad_fingerprint[n - 5] ^= 1;
        assert!(Block::decode(bad_fingerprint.into(), path(), 0).is_err());
        let empty = build(&[]);
        let b = Block::decode(empty, path(), 0).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.seek(0, b"", 0, 0).unwrap(), 0);
    }
}
