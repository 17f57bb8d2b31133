//! The key directory block: one fixed-size record per distinct `(table, key)`
//! in the SST, in storage order, naming the entity by digest, the event time
//! of its first (newest) version in this file, and the data block holding
//! that version. The engine rebuilds its hash index from these records after
//! a crash without reading any data block.
//!
//! Layout: `count u32`, then `count` records of `digest.hi u64 | digest.lo u32
//! | event_ts i64 | block u32`. Invariants checked on decode: the count
//! matches the properties' key count and the block length, block numbers are
//! below the file's data block count and never decrease.

use super::Reader;
use crate::digest::Digest;
use crate::error::Result;
use crate::types::Timestamp;
use std::path::Path;

/// Encoded size of one record.
pub(crate) const KEYDIR_RECORD_LEN: usize = 12 + 8 + 4;
/// Size of the leading record count.
const COUNT_LEN: usize = 4;

/// One key directory record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyDirEntry {
    /// Digest of `(table, key)` under the database's seed.
    pub digest: Digest,
    /// Event time of the key's first (= newest) version in this file.
    pub event_ts: Timestamp,
    /// Data block holding that version.
    pub block: u32,
}

/// The block's bytes.
pub(crate) fn encode(records: &[KeyDirEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(records.len() as u64) as usize);
    // The builder refuses files whose key directory would not fit a block,
    // so the count fits u32.
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.digest.to_bytes());
        out.extend_from_slice(&r.event_ts.to_le_bytes());
        out.extend_from_slice(&r.block.to_le_bytes());
    }
    out
}

/// Encoded size of a directory of `count` records.
pub(crate) fn encoded_len(count: u64) -> u64 {
    (COUNT_LEN as u64).saturating_add(count.saturating_mul(KEYDIR_RECORD_LEN as u64))
}

/// Decodes the block stored at `offset`, expecting `key_count` records that
/// point into `data_blocks` data blocks.
pub(crate) fn decode(
    data: &[u8],
    path: &Path,
    offset: u64,
    key_count: u64,
    data_blocks: u32,
) -> Result<Vec<KeyDirEntry>> {
    let mut r = Reader::new(data, path, offset, "key directory");
    let count = r.u32()?;
    if u64::from(count) != key_count {
        return Err(r.corrupt(format!(
            "{count} records, but the properties count {key_count} keys"
        )));
    }
    let want = (count as usize).saturating_mul(KEYDIR_RECORD_LEN);
    if r.remaining() != want {
        return Err(r.corrupt(format!("{count} records do not match the block length")));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut prev_block = 0u32;
    for i in 0..count {
        let mut digest = [0u8; 12];
        digest.copy_from_slice(r.take(12)?);
        let event_ts = r.i64()?;
        let block = r.u32()?;
        if block >= data_blocks || block < prev_block {
            return Err(r.corrupt(format!(
                "record {i} names block {block} (previous {prev_block}, {data_blocks} blocks)"
            )));
        }
        prev_block = block;
        out.push(KeyDirEntry {
            digest: Digest::from_bytes(digest),
            event_ts,
            block,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec((any::<u64>(), any::<u32>(), any::<i64>(), 0u32..5), 0..50)) {
            let mut recs: Vec<KeyDirEntry> = raw
                .iter()
                .map(|&(hi, lo, event_ts, block)| KeyDirEntry { digest: Digest { hi, lo }, event_ts, block })
                .collect();
            recs.sort_by_key(|r| r.block);
            let bytes = encode(&recs);
            prop_assert_eq!(bytes.len() as u64, encoded_len(recs.len() as u64));
            let back = decode(&bytes, Path::new("/k"), 0, recs.len() as u64, 5).unwrap();
            prop_assert_eq!(back, recs);
        }
    }

    #[test]
    fn bad_directories_are_corruption() {
        let rec = |block| KeyDirEntry {
            digest: Digest { hi: 1, lo: 2 },
            event_ts: 3,
            block,
        };
        let p = Path::new("/k");
        let good = encode(&[rec(0), rec(1)]);
        assert!(decode(&good, p, 0, 2, 2).is_ok());
        assert!(decode(&good, p, 0, 3, 2).is_err()); // count mismatch
        assert!(decode(&good, p, 0, 2, 1).is_err()); // block out of range
        assert!(decode(&good[..good.len() - 1], p, 0, 2, 2).is_err());
        let backwards = encode(&[rec(1), rec(0)]);
        assert!(decode(&backwards, p, 0, 2, 2).is_err());
    }
}
