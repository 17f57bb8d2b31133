//! Write batches: row versions committed atomically, and their WAL encoding.
//!
//! A [`WriteBatch`] keeps its operations already encoded in the WAL entry
//! encoding, in one contiguous buffer, so committing a batch costs one copy
//! into the log and no re-encoding. The WAL record payload for a batch is a
//! fixed header (`first_seq`, `ingest_ts`, op count) followed by that buffer;
//! op `i` of the batch gets sequence number `first_seq + i`.
//!
//! Invariants:
//! - every op in a batch passed [`check_limits`], and a tombstone carries no
//!   value bytes;
//! - the encoded ops never exceed [`MAX_BATCH_OPS_BYTES`], so a batch's
//!   payload always fits in one WAL record (and its op count in a `u32`);
//! - [`decode_wal_payload`] accepts exactly what [`encode_wal_payload`]
//!   produces from such a batch: every length, kind byte and limit is checked,
//!   and an inconsistent payload is an [`Error::Corruption`] naming the file
//!   and byte offset, never a panic and never wrong data.
//!
//! The byte layout is documented in `docs/format.md`.

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::types::{
    check_limits, Entry, Kind, SeqNo, TableId, Timestamp, MAX_KEY_LEN, MAX_VALUE_LEN,
};
use crate::wal::MAX_WAL_RECORD_BYTES;
use bytes::Bytes;
use std::path::Path;

/// Size of the WAL payload header: `first_seq` u64, `ingest_ts` i64, `count` u32.
pub(crate) const PAYLOAD_HEADER_LEN: usize = 8 + 8 + 4;

/// Size of an op's fixed part: `table` u32, `event_ts` i64, `kind` u8,
/// `key_len` u16, `value_len` u32. The key and value bytes follow.
pub(crate) const OP_HEADER_LEN: usize = 4 + 8 + 1 + 2 + 4;

/// Largest size of a batch's encoded ops: whatever keeps the whole payload
/// within one WAL record.
pub(crate) const MAX_BATCH_OPS_BYTES: usize = MAX_WAL_RECORD_BYTES - PAYLOAD_HEADER_LEN;

// The op count is stored as a u32; the size bound keeps it in range.
const _: () = assert!(MAX_BATCH_OPS_BYTES / OP_HEADER_LEN <= u32::MAX as usize);
// Key lengths are stored as a u16.
const _: () = assert!(MAX_KEY_LEN <= u16::MAX as usize);
// Value lengths are stored as a u32.
const _: () = assert!(MAX_VALUE_LEN <= u32::MAX as usize);

/// Row versions committed atomically. Stores ops already encoded (one
/// `Vec<u8>`, WAL entry encoding) so committing needs no re-encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<u8>,
    count: usize,
}

/// One operation of a [`WriteBatch`], borrowed from the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOp<'a> {
    /// Table (feature group).
    pub table: TableId,
    /// Entity key.
    pub key: &'a [u8],
    /// Event time of the version.
    pub event_ts: Timestamp,
    /// Put or tombstone.
    pub kind: Kind,
    /// Payload (empty for a tombstone).
    pub value: &'a [u8],
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` bytes of encoded ops.
    pub fn with_capacity(bytes: usize) -> Self {
        WriteBatch {
            ops: Vec::with_capacity(bytes.min(MAX_BATCH_OPS_BYTES)),
            count: 0,
        }
    }

    /// Adds a version of `(table, key)` holding `value`, true from `event_ts`.
    ///
    /// Fails with [`Error::InvalidArgument`] (leaving the batch unchanged) if
    /// the key or value is over the engine's limits ([`crate::check_limits`])
    /// or the batch would no longer fit in one WAL record (its encoded ops are
    /// limited to [`crate::wal::MAX_WAL_RECORD_BYTES`] minus a 20-byte header).
    pub fn put(
        &mut self,
        table: TableId,
        key: &[u8],
        event_ts: Timestamp,
        value: &[u8],
    ) -> Result<()> {
        self.push(table, key, event_ts, Kind::Put, value)
    }

    /// Adds a tombstone for `(table, key)`: the key is absent from `event_ts`.
    ///
    /// Fails like [`WriteBatch::put`].
    pub fn delete(&mut self, table: TableId, key: &[u8], event_ts: Timestamp) -> Result<()> {
        self.push(table, key, event_ts, Kind::Tombstone, &[])
    }

    /// Number of ops in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the batch holds no ops.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the encoded ops in bytes. The WAL payload of the batch is this
    /// plus a fixed 20-byte header.
    pub fn encoded_bytes(&self) -> usize {
        self.ops.len()
    }

    /// Removes every op, keeping the allocated buffer for reuse.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.count = 0;
    }

    /// The ops in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = BatchOp<'_>> {
        BatchIter {
            decoder: Decoder::new(&self.ops, Path::new(""), 0),
            left: self.count,
        }
    }

    fn push(
        &mut self,
        table: TableId,
        key: &[u8],
        event_ts: Timestamp,
        kind: Kind,
        value: &[u8],
    ) -> Result<()> {
        check_limits(key, value.len())?;
        let op_len = OP_HEADER_LEN + key.len() + value.len();
        if self.ops.len() + op_len > MAX_BATCH_OPS_BYTES {
            return Err(Error::InvalidArgument(format!(
                "batch would hold {} bytes of ops; the limit is {MAX_BATCH_OPS_BYTES}",
                self.ops.len() + op_len
            )));
        }
        // Lengths fit their fields: check_limits bounds them (see the const
        // assertions at the top of the module).
        self.ops.reserve(op_len);
        self.ops.extend_from_slice(&table.to_le_bytes());
        self.ops.extend_from_slice(&event_ts.to_le_bytes());
        self.ops.push(kind as u8);
        self.ops
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.ops
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.ops.extend_from_slice(key);
        self.ops.extend_from_slice(value);
        self.count += 1;
        Ok(())
    }
}

/// Iterator over a batch's own, trusted encoding.
struct BatchIter<'a> {
    decoder: Decoder<'a>,
    left: usize,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = BatchOp<'a>;

    fn next(&mut self) -> Option<BatchOp<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match decode_op(&mut self.decoder) {
            Ok(op) => Some(op),
            Err(e) => {
                // The buffer was encoded by `push`; failing to decode it is a bug.
                debug_assert!(false, "WriteBatch holds an undecodable op: {e}");
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Appends to `out` the WAL record payload for `batch`: header (first_seq
/// u64, ingest_ts i64, count u32) then the encoded ops. Op i gets seq =
/// first_seq + i.
pub(crate) fn encode_wal_payload(
    batch: &WriteBatch,
    first_seq: SeqNo,
    ingest_ts: Timestamp,
    out: &mut Vec<u8>,
) {
    out.reserve(PAYLOAD_HEADER_LEN + batch.ops.len());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&ingest_ts.to_le_bytes());
    // In range: MAX_BATCH_OPS_BYTES bounds the count (const assertion above).
    out.extend_from_slice(&(batch.count as u32).to_le_bytes());
    out.extend_from_slice(&batch.ops);
}

/// A batch decoded from a WAL record payload.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DecodedBatch {
    /// Sequence number of the first entry.
    pub first_seq: SeqNo,
    /// Commit time shared by every entry.
    pub ingest_ts: Timestamp,
    /// The entries, seq = first_seq + index; keys and values share `payload`'s buffer.
    pub entries: Vec<Entry>,
}

/// Strict, bounds-checked decode of a payload written by
/// [`encode_wal_payload`]. `path` and `offset` (the payload's position in its
/// file) locate errors: any inconsistency (unknown kind byte, a tombstone with
/// a value, a key or value over the limits, a sequence number overflow, fewer
/// ops than the count, trailing bytes) is an [`Error::Corruption`] at the
/// offending byte. Keys and values are zero-copy slices of `payload`.
pub(crate) fn decode_wal_payload(
    payload: &Bytes,
    path: &Path,
    offset: u64,
) -> Result<DecodedBatch> {
    let mut d = Decoder::new(payload, path, offset);
    let first_seq = d.u64("first_seq")?;
    let ingest_ts = d.i64("ingest_ts")?;
    let count_at = d.pos();
    let count = d.u32("op count")?;
    check_count(&d, count_at, first_seq, count)?;
    let mut entries = Vec::with_capacity(count as usize);
    for i in 0..u64::from(count) {
        let op =
            decode_op(&mut d).map_err(|e| annotate(e, |r| format!("{r} (op {i} of {count})")))?;
        entries.push(Entry {
            table: op.table,
            // Both are sub-slices of `payload`, borrowed through the decoder.
            key: payload.slice_ref(op.key),
            event_ts: op.event_ts,
            // No overflow: check_count bounded first_seq + count - 1.
            seq: first_seq + i,
            ingest_ts,
            kind: op.kind,
            value: payload.slice_ref(op.value),
        });
    }
    if d.remaining() != 0 {
        return Err(d.error_here(format!(
            "{} trailing bytes after the batch's {count} ops",
            d.remaining()
        )));
    }
    Ok(DecodedBatch {
        first_seq,
        ingest_ts,
        entries,
    })
}

/// Rejects counts that cannot fit in the rest of the payload (which also keeps
/// the entry allocation bounded by the payload size) or whose sequence
/// numbers would overflow.
fn check_count(d: &Decoder<'_>, count_at: usize, first_seq: SeqNo, count: u32) -> Result<()> {
    if count as usize > d.remaining() / OP_HEADER_LEN {
        return Err(d.error_at(
            count_at,
            format!(
                "op count {count} cannot fit in the remaining {} bytes",
                d.remaining()
            ),
        ));
    }
    if first_seq
        .checked_add(u64::from(count).saturating_sub(1))
        .is_none()
    {
        return Err(d.error_at(
            count_at,
            format!("{count} ops from seq {first_seq} overflow u64"),
        ));
    }
    Ok(())
}

/// Rewrites the reason of a corruption error, keeping its location.
fn annotate(e: Error, reason: impl FnOnce(&str) -> String) -> Error {
    match e {
        Error::Corruption {
            path,
            offset,
            reason: r,
        } => Error::Corruption {
            path,
            offset,
            reason: reason(&r),
        },
        other => other,
    }
}

/// Decodes one op, checking the kind byte, the limits and that a tombstone
/// has no value.
fn decode_op<'a>(d: &mut Decoder<'a>) -> Result<BatchOp<'a>> {
    let table = d.u32("table")?;
    let event_ts = d.i64("event_ts")?;
    let kind_at = d.pos();
    let kind_byte = d.u8("kind")?;
    let kind = Kind::from_u8(kind_byte)
        .ok_or_else(|| d.error_at(kind_at, format!("unknown kind byte {kind_byte}")))?;
    let key_len_at = d.pos();
    let key_len = usize::from(d.u16("key length")?);
    if key_len > MAX_KEY_LEN {
        return Err(d.error_at(
            key_len_at,
            format!("key length {key_len} is over the limit {MAX_KEY_LEN}"),
        ));
    }
    let value_len_at = d.pos();
    let value_len = d.u32("value length")? as usize;
    if value_len > MAX_VALUE_LEN {
        return Err(d.error_at(
            value_len_at,
            format!("value length {value_len} is over the limit {MAX_VALUE_LEN}"),
        ));
    }
    if kind == Kind::Tombstone && value_len != 0 {
        return Err(d.error_at(
            value_len_at,
            format!("tombstone carries a {value_len}-byte value"),
        ));
    }
    let key = d.take(key_len, "key")?;
    let value = d.take(value_len, "value")?;
    Ok(BatchOp {
        table,
        key,
        event_ts,
        kind,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FileSystem, OsFs};
    use crate::wal::{replay_segment, TailPolicy, WalWriter};
    use proptest::prelude::*;
    use std::sync::Arc;

    const PATH: &str = "/db/wal/00000000000000000007.wal";
    const BASE: u64 = 1000;

    fn decode(payload: &[u8]) -> Result<DecodedBatch> {
        decode_wal_payload(&Bytes::copy_from_slice(payload), Path::new(PATH), BASE)
    }

    fn sample_batch() -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(1, b"user:1", 100, b"v1").unwrap();
        b.delete(2, b"user:2", -5).unwrap();
        b.put(1, b"", i64::MIN, b"").unwrap();
        b.put(u32::MAX, b"k", i64::MAX, &[0xAB; 300]).unwrap();
        b
    }

    fn payload_of(b: &WriteBatch, first_seq: SeqNo, ingest_ts: Timestamp) -> Vec<u8> {
        let mut out = Vec::new();
        encode_wal_payload(b, first_seq, ingest_ts, &mut out);
        out
    }

    /// Asserts `e` is a corruption error located inside the payload.
    fn assert_located(e: &Error, payload_len: usize) {
        match e {
            Error::Corruption { path, offset, .. } => {
                assert_eq!(path, Path::new(PATH));
                assert!(
                    (BASE..=BASE + payload_len as u64).contains(offset),
                    "offset {offset}"
                );
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn batch_basics() {
        let mut b = sample_batch();
        assert_eq!(b.len(), 4);
        assert!(!b.is_empty());
        let ops: Vec<_> = b.iter().collect();
        assert_eq!(ops[1].kind, Kind::Tombstone);
        assert_eq!(ops[1].key, b"user:2");
        assert_eq!(ops[1].value, b"");
        assert_eq!(ops[3].value.len(), 300);
        assert_eq!(b.encoded_bytes(), 4 * OP_HEADER_LEN + 6 + 2 + 6 + 1 + 300);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.encoded_bytes(), 0);
        assert_eq!(b.iter().count(), 0);
        assert!(WriteBatch::with_capacity(1 << 10).is_empty());
    }

    #[test]
    fn limits_are_enforced_and_leave_the_batch_unchanged() {
        let mut b = WriteBatch::new();
        b.put(1, b"a", 1, b"x").unwrap();
        let before = b.clone();
        let long_key = vec![0u8; MAX_KEY_LEN + 1];
        assert!(matches!(
            b.put(1, &long_key, 1, b""),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            b.delete(1, &long_key, 1),
            Err(Error::InvalidArgument(_))
        ));
        let big_value = vec![0u8; MAX_VALUE_LEN + 1];
        assert!(matches!(
            b.put(1, b"k", 1, &big_value),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(b, before);
        b.put(1, &vec![1u8; MAX_KEY_LEN], 1, &[]).unwrap();
    }

    #[test]
    fn batch_size_is_bounded_by_one_wal_record() {
        let value = vec![7u8; MAX_VALUE_LEN];
        let mut b = WriteBatch::new();
        let mut added = 0;
        while b.put(1, b"k", added, &value).is_ok() {
            added += 1;
        }
        assert_eq!(
            added as usize,
            MAX_BATCH_OPS_BYTES / (OP_HEADER_LEN + 1 + MAX_VALUE_LEN)
        );
        assert!(b.encoded_bytes() <= MAX_BATCH_OPS_BYTES);
        let mut payload = Vec::new();
        encode_wal_payload(&b, 1, 1, &mut payload);
        assert!(payload.len() <= MAX_WAL_RECORD_BYTES);
        // A small op that still fits is accepted.
        b.put(1, b"k", 0, b"").unwrap();
    }

    #[test]
    fn decode_is_zero_copy() {
        let payload = Bytes::from(payload_of(&sample_batch(), 10, 20));
        let d = decode_wal_payload(&payload, Path::new(PATH), BASE).unwrap();
        let range = payload.as_ptr_range();
        let v = &d.entries[3].value;
        assert!(range.contains(&v.as_ptr()));
        assert!(range.contains(&d.entries[0].key.as_ptr()));
    }

    #[test]
    fn encode_appends_to_out() {
        let b = sample_batch();
        let mut out = b"prefix".to_vec();
        encode_wal_payload(&b, 1, 2, &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out.len(), 6 + PAYLOAD_HEADER_LEN + b.encoded_bytes());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let payload = payload_of(&sample_batch(), 5, 6);
        for cut in 0..payload.len() {
            let e = decode(&payload[..cut]).unwrap_err();
            assert_located(&e, payload.len());
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert_located(&decode(&longer).unwrap_err(), longer.len());
    }

    #[test]
    fn every_byte_flip_is_an_error_or_well_formed() {
        let b = sample_batch();
        let payload = payload_of(&b, 5, 6);
        for i in 0..payload.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut bad = payload.clone();
                bad[i] ^= mask;
                match decode(&bad) {
                    Err(e) => assert_located(&e, bad.len()),
                    Ok(d) => {
                        // Only fixed fields and key/value bytes can change
                        // without breaking the structure.
                        assert_eq!(d.entries.len(), b.len());
                        for e in &d.entries {
                            assert!(e.key.len() <= MAX_KEY_LEN);
                            assert!(e.kind == Kind::Put || e.value.is_empty());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn structural_inconsistencies_are_corruption() {
        let b = sample_batch();
        let good = payload_of(&b, 5, 6);
        const COUNT_AT: usize = 16;
        const KIND_AT: usize = PAYLOAD_HEADER_LEN + 12;
        const KEY_LEN_AT: usize = PAYLOAD_HEADER_LEN + 13;
        const VALUE_LEN_AT: usize = PAYLOAD_HEADER_LEN + 15;
        type Mutation = fn(&mut Vec<u8>);
        let cases: Vec<(&str, Mutation)> = vec![
            ("count too high", |p| p[COUNT_AT] += 1),
            ("count too low", |p| p[COUNT_AT] -= 1),
            ("huge count", |p| {
                p[COUNT_AT..COUNT_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes())
            }),
            ("bad kind", |p| p[KIND_AT] = 2),
            ("tombstone with value", |p| p[KIND_AT] = 1),
            ("key too long", |p| {
                p[KEY_LEN_AT..KEY_LEN_AT + 2]
                    .copy_from_slice(&(MAX_KEY_LEN as u16 + 1).to_le_bytes())
            }),
            ("value too long", |p| {
                p[VALUE_LEN_AT..VALUE_LEN_AT + 4]
                    .copy_from_slice(&(MAX_VALUE_LEN as u32 + 1).to_le_bytes())
            }),
            ("seq overflow", |p| {
                p[..8].copy_from_slice(&(u64::MAX - 1).to_le_bytes())
            }),
        ];
        for (name, mutate) in cases {
            let mut bad = good.clone();
            mutate(&mut bad);
            let e = decode(&bad).expect_err(name);
            assert_located(&e, bad.len());
        }
        // The largest first_seq whose last op still has a seq is accepted.
        let mut edge = good.clone();
        edge[..8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert_eq!(decode(&edge).unwrap().entries[3].seq, u64::MAX);
    }

    #[test]
    fn empty_batch_round_trips() {
        let d = decode(&payload_of(&WriteBatch::new(), 9, 9)).unwrap();
        assert_eq!((d.first_seq, d.ingest_ts, d.entries.len()), (9, 9, 0));
    }

    /// Batches written as WAL records: flipping any byte of the segment never
    /// yields a batch that was not written; only a prefix of them.
    #[test]
    fn flips_in_wal_records_never_yield_unwritten_batches() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn FileSystem> = Arc::new(OsFs::default());
        let mut w = WalWriter::create(fs.clone(), dir.path(), 1).unwrap();
        let mut written = Vec::new();
        for i in 0..3u8 {
            let mut b = WriteBatch::new();
            b.put(1, &[i], i64::from(i), &[i; 5]).unwrap();
            b.delete(2, &[i, i], 7).unwrap();
            let p = payload_of(&b, u64::from(i) * 2, 100);
            w.append(&[&p]).unwrap();
            written.push(decode(&p).unwrap().entries);
        }
        w.sync().unwrap();
        drop(w);
        let path = crate::wal::segment_path(dir.path(), 1);
        let original = std::fs::read(&path).unwrap();
        for i in 0..original.len() {
            let mut bad = original.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let mut got = Vec::new();
            let r = replay_segment(&*fs, dir.path(), 1, TailPolicy::Truncate, &mut |p, off| {
                got.push(decode_wal_payload(&p, &path, off)?.entries);
                Ok(())
            });
            if r.is_ok() {
                assert!(got.len() < written.len(), "flip at {i} went unnoticed");
                assert_eq!(got[..], written[..got.len()]);
            }
        }
    }

    fn arb_op() -> impl Strategy<Value = (TableId, Vec<u8>, Timestamp, Option<Vec<u8>>)> {
        (
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..40),
            any::<i64>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        )
    }

    proptest! {
        #[test]
        fn round_trip(
            ops in prop::collection::vec(arb_op(), 0..20),
            first_seq in 0u64..u64::MAX / 2,
            ingest_ts in any::<i64>(),
        ) {
            let mut b = WriteBatch::new();
            for (table, key, ts, value) in &ops {
                match value {
                    Some(v) => b.put(*table, key, *ts, v).unwrap(),
                    None => b.delete(*table, key, *ts).unwrap(),
                }
            }
            prop_assert_eq!(b.len(), ops.len());
            let d = decode(&payload_of(&b, first_seq, ingest_ts)).unwrap();
            prop_assert_eq!(d.first_seq, first_seq);
            prop_assert_eq!(d.ingest_ts, ingest_ts);
            prop_assert_eq!(d.entries.len(), ops.len());
            for (i, ((table, key, ts, value), (e, op))) in ops.iter().zip(d.entries.iter().zip(b.iter())).enumerate() {
                let kind = if value.is_some() { Kind::Put } else { Kind::Tombstone };
                let value = value.clone().unwrap_or_default();
                prop_assert_eq!(e.seq, first_seq + i as u64);
                prop_assert_eq!(e.ingest_ts, ingest_ts);
                prop_assert_eq!((e.table, &e.key[..], e.event_ts, e.kind, &e.value[..]),
                                (*table, &key[..], *ts, kind, &value[..]));
                prop_assert_eq!(op, BatchOp { table: *table, key, event_ts: *ts, kind, value: &value });
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = decode(&bytes) {
                assert_located(&e, bytes.len());
            }
        }
    }
}
