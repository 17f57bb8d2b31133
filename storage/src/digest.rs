//! Entity digests: the 96-bit identity of a `(table, key)` pair.
//!
//! The hash index, the bloom filters and each SST's key directory identify an
//! entity by its digest, never by its key bytes, so an index slot has a fixed
//! size whatever the key length. The digest is xxh3-128 under a random seed
//! chosen when the database is created (kept in the manifest), truncated to 96
//! bits. For `n` entities the chance that any two share a digest is about
//! `n² / 2^97` (1e-14 at 50 million entities), and the seed keeps keys from
//! being crafted to collide. Reads still compare the full key at the location
//! the index points to and fall back to a full search on a mismatch.

use crate::types::TableId;
use xxhash_rust::xxh3::{xxh3_128_with_seed, Xxh3};

/// Keys up to this length are hashed from a stack buffer in one shot.
const INLINE_KEY_LEN: usize = 124;

/// A 96-bit digest of `(table, key)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// High 64 bits; also the bloom filter's hash.
    pub hi: u64,
    /// Low 32 bits.
    pub lo: u32,
}

impl Digest {
    /// Digest of `(table, key)` under `seed`.
    #[inline]
    pub fn of(seed: u64, table: TableId, key: &[u8]) -> Digest {
        let h = if key.len() <= INLINE_KEY_LEN {
            let mut buf = [0u8; 4 + INLINE_KEY_LEN];
            buf[..4].copy_from_slice(&table.to_le_bytes());
            buf[4..4 + key.len()].copy_from_slice(key);
            xxh3_128_with_seed(&buf[..4 + key.len()], seed)
        } else {
            let mut hasher = Xxh3::with_seed(seed);
            hasher.update(&table.to_le_bytes());
            hasher.update(key);
            hasher.digest128()
        };
        Digest {
            hi: (h >> 64) as u64,
            lo: h as u32,
        }
    }

    /// Serialized form: `hi` then `lo`, little-endian, 12 bytes.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.hi.to_le_bytes());
        out[8..].copy_from_slice(&self.lo.to_le_bytes());
        out
    }

    /// Inverse of [`Digest::to_bytes`].
    pub fn from_bytes(b: [u8; 12]) -> Digest {
        let mut hi = [0u8; 8];
        hi.copy_from_slice(&b[..8]);
        let mut lo = [0u8; 4];
        lo.copy_from_slice(&b[8..]);
        Digest {
            hi: u64::from_le_bytes(hi),
            lo: u32::from_le_bytes(lo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_streaming_paths_agree() {
        let short = vec![7u8; INLINE_KEY_LEN];
        let long = vec![7u8; INLINE_KEY_LEN + 1];
        let mut h = Xxh3::with_seed(9);
        h.update(&3u32.to_le_bytes());
        h.update(&short);
        let s = h.digest128();
        assert_eq!(Digest::of(9, 3, &short).hi, (s >> 64) as u64);
        assert_ne!(Digest::of(9, 3, &short), Digest::of(9, 3, &long));
    }

    #[test]
    fn table_and_seed_change_the_digest() {
        assert_ne!(Digest::of(1, 1, b"k"), Digest::of(1, 2, b"k"));
        assert_ne!(Digest::of(1, 1, b"k"), Digest::of(2, 1, b"k"));
        let d = Digest::of(5, 6, b"user:1");
        assert_eq!(Digest::from_bytes(d.to_bytes()), d);
    }
}
