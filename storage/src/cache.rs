//! The block cache: decompressed, validated SST data blocks shared by all
//! open tables, keyed by `(file_no, block)` and bounded in bytes.
//!
//! Built on `quick_cache`'s sharded concurrent cache (CLOCK-Pro-like
//! eviction) with a weighter that charges each block its
//! [`Block::size_bytes`]. A lookup hashes the key, takes one shard's read
//! lock, and clones the block (one reference count): no allocation, no
//! global lock. Hit and miss counters are striped per thread so that readers
//! on different cores do not contend on one cache line.
//!
//! Invariants: the total weight of cached blocks never exceeds
//! [`BlockCache::capacity_bytes`] (the shard capacities are chosen to sum to
//! at most it); a block heavier than a shard's budget is not cached at all.

use crate::options::DEFAULT_BLOCK_BYTES;
use crate::sstable::Block;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Cache key: file number and data block number.
type Key = (u64, u32);

/// Hit/miss counter stripes; a power of two.
const COUNTER_STRIPES: usize = 16;
/// Shards per available core (quick_cache's own default).
const SHARDS_PER_CORE: usize = 4;

/// Charges each block its memory.
#[derive(Clone, Copy, Debug, Default)]
struct BlockWeighter;

impl Weighter<Key, Block> for BlockWeighter {
    fn weight(&self, _key: &Key, block: &Block) -> u64 {
        block.size_bytes() as u64
    }
}

/// One counter per cache line.
#[derive(Default)]
#[repr(align(64))]
struct PaddedCounter(AtomicU64);

/// A counter split into stripes picked per thread.
#[derive(Default)]
struct StripedCounter([PaddedCounter; COUNTER_STRIPES]);

thread_local! {
    static STRIPE: usize = next_stripe();
}

fn next_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) % COUNTER_STRIPES
}

impl StripedCounter {
    #[inline]
    fn incr(&self) {
        let stripe = STRIPE.with(|s| *s);
        if let Some(c) = self.0.get(stripe) {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// A concurrent cache of decompressed SST blocks, bounded in bytes.
pub struct BlockCache {
    cache: Cache<Key, Block, BlockWeighter>,
    capacity: usize,
    hits: StripedCounter,
    misses: StripedCounter,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks (0 caches nothing).
    pub fn new(capacity_bytes: usize) -> BlockCache {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = (cores * SHARDS_PER_CORE).next_power_of_two() as u64;
        // quick_cache gives each shard ceil(capacity / shards) and may halve
        // the shard count; a multiple of the shard count splits exactly
        // either way, so the shards' budgets sum to at most capacity_bytes.
        let weight = capacity_bytes as u64 / shards * shards;
        let items = (capacity_bytes / DEFAULT_BLOCK_BYTES).max(1);
        let cache = match OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity(items)
            .weight_capacity(weight)
            .build()
        {
            Ok(options) => Cache::with_options(
                options,
                BlockWeighter,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            ),
            // Unreachable (both required options are set), but not worth a panic.
            Err(_) => Cache::with_weighter(items, weight, BlockWeighter),
        };
        BlockCache {
            cache,
            capacity: capacity_bytes,
            hits: StripedCounter::default(),
            misses: StripedCounter::default(),
        }
    }

    /// Block `block` of file `file_no`, if cached; counts a hit or a miss.
    #[inline]
    pub fn get(&self, file_no: u64, block: u32) -> Option<Block> {
        let found = self.cache.get(&(file_no, block));
        match found.is_some() {
            true => self.hits.incr(),
            false => self.misses.incr(),
        }
        found
    }

    /// Caches `block_data` as block `block` of file `file_no`, evicting
    /// others as needed; a block larger than a shard's budget is not kept.
    pub fn insert(&self, file_no: u64, block: u32, block_data: Block) {
        self.cache.insert((file_no, block), block_data);
    }

    /// Lookups that found their block.
    pub fn hits(&self) -> u64 {
        self.hits.sum()
    }

    /// Lookups that did not.
    pub fn misses(&self) -> u64 {
        self.misses.sum()
    }

    /// Bytes currently charged to cached blocks.
    pub fn used_bytes(&self) -> usize {
        usize::try_from(self.cache.weight()).unwrap_or(usize::MAX)
    }

    /// The bound given at construction.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity
    }

    /// Drops every cached block (the hit and miss counts are kept).
    pub fn clear(&self) {
        self.cache.clear();
    }
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity_bytes", &self.capacity)
            .field("used_bytes", &self.used_bytes())
            .field("blocks", &self.cache.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn block_of(len: usize) -> Block {
        crate::sstable::test_support::block_of_size(len)
    }

    #[test]
    fn hits_misses_and_clear() {
        let cache = BlockCache::new(1 << 20);
        assert!(cache.get(1, 0).is_none());
        cache.insert(1, 0, block_of(100));
        assert_eq!(cache.get(1, 0).map(|b| b.len()), Some(1));
        assert!(cache.get(1, 1).is_none());
        assert!(cache.get(2, 0).is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 3));
        assert!(cache.used_bytes() >= 100);
        cache.clear();
        assert_eq!(cache.used_bytes(), 0);
        assert!(cache.get(1, 0).is_none());
        assert_eq!(cache.capacity_bytes(), 1 << 20);
    }

    #[test]
    fn bound_is_respected() {
        for capacity in [0usize, 1000, 10_000, 64 << 10, 1 << 20] {
            let cache = BlockCache::new(capacity);
            for i in 0..2_000u32 {
                cache.insert(u64::from(i % 3), i, block_of(50 + (i as usize * 37) % 3000));
                assert!(
                    cache.used_bytes() <= capacity,
                    "{} > {capacity}",
                    cache.used_bytes()
                );
            }
        }
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let cache = Arc::new(BlockCache::new(256 << 10));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for i in 0..2_000u32 {
                        if cache.get(t, i % 50).is_none() {
                            cache.insert(t, i % 50, block_of(500));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(cache.hits() + cache.misses(), 8_000);
        assert!(cache.used_bytes() <= cache.capacity_bytes());
    }
}
