//! The bloom filter block: a cache-line-blocked bloom filter over the entity
//! digests of the keys in one SST.
//!
//! Each digest selects one 512-bit line (64 bytes, one cache line) from the
//! high bits of `digest.hi`, and sets or tests `probes` bits inside that line,
//! derived from `digest.lo` and the low half of `digest.hi` by repeated
//! multiplication with an odd constant. A lookup therefore touches one cache
//! line. A filter with no lines is a disabled filter (bits per key 0) and
//! answers "maybe" for every digest.
//!
//! Invariant: every digest added answers `true` (no false negatives); the
//! decoded filter has exactly `lines` lines and `probes` in
//! `1..=MAX_PROBES` whenever it has lines.

use super::Reader;
use crate::digest::Digest;
use crate::error::Result;
use std::path::Path;

/// Bits in one line.
const LINE_BITS: u64 = 512;
/// Bytes in one line.
const LINE_BYTES: usize = 64;
/// 64-bit words in one line.
const LINE_WORDS: usize = 8;
/// Header of the encoded filter: probes u32, line count u32.
const HEADER_LEN: usize = 8;
/// Most probes per key.
pub(crate) const MAX_PROBES: u32 = 16;
/// Largest bits-per-key setting accepted.
pub(crate) const MAX_BITS_PER_KEY: u32 = 64;
/// Odd multiplier (2^32 / golden ratio) that remixes the probe hash so each
/// probe takes fresh top bits.
const PROBE_MIX: u32 = 0x9E37_79B9;
/// A bit index inside a line is the top 9 bits of the 32-bit probe hash.
const PROBE_SHIFT: u32 = 32 - 9;

/// One cache line of filter bits.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Line([u64; LINE_WORDS]);

/// A decoded (or freshly built) bloom filter.
pub(crate) struct Bloom {
    probes: u32,
    lines: Vec<Line>,
}

/// Probes for a given density: `bits_per_key * ln 2`, rounded.
fn probes_for(bits_per_key: u32) -> u32 {
    ((bits_per_key * 69 + 50) / 100).clamp(1, MAX_PROBES)
}

/// Lines needed for `keys` keys at `bits_per_key` (at least one unless the
/// filter is disabled).
fn lines_for(keys: u64, bits_per_key: u32) -> u64 {
    if bits_per_key == 0 {
        return 0;
    }
    keys.saturating_mul(u64::from(bits_per_key))
        .div_ceil(LINE_BITS)
        .max(1)
}

/// The line a digest falls in: a multiply-shift range reduction of `hi`.
#[inline]
fn line_of(d: Digest, lines: usize) -> usize {
    ((u128::from(d.hi) * lines as u128) >> 64) as usize
}

/// The `i`-th bit position (0..512) is the top 9 bits of the probe hash
/// after `i` remixes.
#[inline]
fn first_probe_hash(d: Digest) -> u32 {
    d.lo ^ (d.hi as u32)
}

impl Bloom {
    /// Heap bytes of the filter's bits.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.lines.capacity() * std::mem::size_of::<Line>()
    }

    /// A filter holding `digests`, sized for `bits_per_key` (0 disables it).
    pub(crate) fn build<I>(digests: I, bits_per_key: u32) -> Bloom
    where
        I: ExactSizeIterator<Item = Digest>,
    {
        let bits_per_key = bits_per_key.min(MAX_BITS_PER_KEY);
        let n = lines_for(digests.len() as u64, bits_per_key) as usize;
        let mut bloom = Bloom {
            probes: if n == 0 { 0 } else { probes_for(bits_per_key) },
            lines: vec![Line::default(); n],
        };
        for d in digests {
            bloom.insert(d);
        }
        bloom
    }

    fn insert(&mut self, d: Digest) {
        let probes = self.probes;
        let n = self.lines.len();
        let Some(line) = self.lines.get_mut(line_of(d, n)) else {
            return;
        };
        let mut h = first_probe_hash(d);
        for _ in 0..probes {
            let bit = h >> PROBE_SHIFT;
            line.0[(bit / 64) as usize] |= 1u64 << (bit % 64);
            h = h.wrapping_mul(PROBE_MIX);
        }
    }

    /// False only if `d` was certainly never added.
    #[inline]
    pub(crate) fn may_contain(&self, d: Digest) -> bool {
        let Some(line) = self.lines.get(line_of(d, self.lines.len())) else {
            // No lines: a disabled filter excludes nothing.
            return true;
        };
        let mut h = first_probe_hash(d);
        for _ in 0..self.probes {
            let bit = h >> PROBE_SHIFT;
            // bit < 512, so the word index is < LINE_WORDS.
            if line.0[(bit / 64) as usize] & (1u64 << (bit % 64)) == 0 {
                return false;
            }
            h = h.wrapping_mul(PROBE_MIX);
        }
        true
    }

    /// The block's bytes: probes u32, line count u32, then the lines, each as
    /// eight little-endian u64 words.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.lines.len() * LINE_BYTES);
        out.extend_from_slice(&self.probes.to_le_bytes());
        out.extend_from_slice(&(self.lines.len() as u32).to_le_bytes());
        for line in &self.lines {
            for w in line.0 {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Decodes the block stored at `offset` in `path`.
    pub(crate) fn decode(data: &[u8], path: &Path, offset: u64) -> Result<Bloom> {
        let mut r = Reader::new(data, path, offset, "bloom");
        let probes = r.u32()?;
        let n = r.u32()? as usize;
        if r.remaining() != n.saturating_mul(LINE_BYTES) {
            return Err(r.corrupt(format!("{n} lines do not match the block length")));
        }
        let probes_ok = if n == 0 {
            probes == 0
        } else {
            (1..=MAX_PROBES).contains(&probes)
        };
        if !probes_ok {
            return Err(r.corrupt(format!("{probes} probes with {n} lines")));
        }
        let mut lines = Vec::with_capacity(n);
        for _ in 0..n {
            let mut line = Line::default();
            for w in &mut line.0 {
                *w = r.u64()?;
            }
            lines.push(line);
        }
        Ok(Bloom { probes, lines })
    }

    /// Largest encoded filter for `key_count` keys at any accepted density.
    pub(crate) fn max_encoded_len(key_count: u64) -> usize {
        let lines = lines_for(key_count, MAX_BITS_PER_KEY);
        let len = lines
            .saturating_mul(LINE_BYTES as u64)
            .saturating_add(HEADER_LEN as u64);
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    /// Encoded size of a filter for `keys` keys at `bits_per_key`.
    pub(crate) fn encoded_len(keys: u64, bits_per_key: u32) -> u64 {
        let lines = lines_for(keys, bits_per_key.min(MAX_BITS_PER_KEY));
        HEADER_LEN as u64 + lines.saturating_mul(LINE_BYTES as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digests(seed: u64, n: u32) -> Vec<Digest> {
        (0..n)
            .map(|i| Digest::of(seed, i % 7, &i.to_le_bytes()))
            .collect()
    }

    proptest! {
        #[test]
        fn no_false_negatives(
            keys in proptest::collection::vec(any::<(u64, u32)>(), 0..300),
            bits in 0u32..=20,
        ) {
            let ds: Vec<Digest> = keys.iter().map(|&(hi, lo)| Digest { hi, lo }).collect();
            let bloom = Bloom::build(ds.iter().copied(), bits);
            let decoded = Bloom::decode(&bloom.encode(), Path::new("/b"), 0).unwrap();
            for &d in &ds {
                prop_assert!(bloom.may_contain(d));
                prop_assert!(decoded.may_contain(d));
            }
        }
    }

    #[test]
    fn false_positive_rate_is_near_theory() {
        let present = digests(1, 20_000);
        let bloom = Bloom::build(present.iter().copied(), 10);
        let absent = digests(2, 100_000);
        let fp = absent.iter().filter(|&&d| bloom.may_contain(d)).count();
        // About 1% in theory for 10 bits/key; blocking costs a little.
        assert!(fp < 2_000, "false positives: {fp} of 100000");
    }

    #[test]
    fn empty_and_disabled_filters() {
        let empty = Bloom::build(std::iter::empty(), 10);
        assert!(!empty.may_contain(Digest { hi: 1, lo: 2 }));
        let disabled = Bloom::build(digests(1, 10).into_iter(), 0);
        assert!(disabled.may_contain(Digest { hi: 1, lo: 2 }));
        let decoded = Bloom::decode(&disabled.encode(), Path::new("/b"), 0).unwrap();
        assert!(decoded.may_contain(Digest { hi: 1, lo: 2 }));
    }

    #[test]
    fn malformed_filters_are_corruption() {
        let good = Bloom::build(digests(1, 100).into_iter(), 10).encode();
        let mut probes = good.clone();
        probes[0] = 0;
        let mut lines = good.clone();
        lines[4] ^= 1;
        for bad in [&probes[..], &lines[..], &good[..good.len() - 1], &good[..3]] {
            let err = Bloom::decode(bad, Path::new("/b"), 40).err();
            assert!(err.is_some_and(|e| e.is_corruption()));
        }
    }
}
