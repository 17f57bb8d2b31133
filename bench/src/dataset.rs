//! The news-feed dataset, modelled on the reference workload: users and
//! articles whose rows hold 10 int64 features, 10 float64 features and a
//! 64-dimension float32 embedding (416 bytes of payload), with about three
//! versions per entity spread over 30 days. Deterministic for a given seed.

use rand::rngs::StdRng;
use rand::Rng;

/// Table id of the users feature group.
pub const USERS: u32 = 1;
/// Table id of the articles feature group.
pub const ARTICLES: u32 = 2;
/// Int64 features per row.
pub const INT_FEATURES: usize = 10;
/// Float64 features per row.
pub const FLOAT_FEATURES: usize = 10;
/// Embedding dimension.
pub const EMBEDDING_DIM: usize = 64;
/// Encoded row size in bytes.
pub const ROW_BYTES: usize = INT_FEATURES * 8 + FLOAT_FEATURES * 8 + EMBEDDING_DIM * 4;
/// Span of event timestamps: 30 days, in µs.
pub const SPAN_US: i64 = 30 * 24 * 3600 * 1_000_000;

/// Entity key of user or article `id`: the big-endian id, so keys sort
/// numerically.
pub fn entity_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// SplitMix64: a tiny, fast generator, so producing rows costs little next
/// to storing them.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Encodes one deterministic row for `(table, id, version)`.
pub fn encode_row(table: u32, id: u64, version: u32, out: &mut Vec<u8>) {
    out.clear();
    let mut g = SplitMix((u64::from(table) << 56) ^ (id << 8) ^ u64::from(version));
    for _ in 0..INT_FEATURES {
        out.extend_from_slice(&((g.next() % 1_000_000) as i64).to_le_bytes());
    }
    for _ in 0..FLOAT_FEATURES {
        out.extend_from_slice(&g.unit().to_le_bytes());
    }
    for _ in 0..EMBEDDING_DIM {
        out.extend_from_slice(&((g.unit() * 2.0 - 1.0) as f32).to_le_bytes());
    }
}

/// The event times of an entity's versions: 2 to 4 versions, in random
/// order (some arrive late), within `[base, base + SPAN_US)`.
pub fn version_times(rng: &mut StdRng, base: i64) -> Vec<i64> {
    let n = rng.gen_range(2..=4);
    (0..n).map(|_| base + rng.gen_range(0..SPAN_US)).collect()
}
