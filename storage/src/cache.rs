//! The block cache: decompressed, validated SST data blocks shared by all
//! open tables, bounded in bytes, evicted by CLOCK (second chance).
//!
//! Each open table owns a [`BlockSlots`]: one slot per data block, indexed
//! by block number. A hit is therefore an array index, one uncontended
//! read lock and one reference count: no hashing, no probing, no shared
//! lock, and the slot's address is known before it is read, so a batched
//! read prefetches the slots of all its blocks at once and their cache
//! misses overlap.
//!
//! The budget and eviction order live in one [`BlockCache`] per engine. Its
//! mutex is taken only to insert (after a read from the file, which costs far
//! more), to evict, and to release a closing table's blocks; hits never take
//! it. The CLOCK ring holds one entry per cached block; a hit sets the
//! slot's referenced bit and the hand gives referenced blocks a second
//! chance.
//!
//! Invariants (all changes to slot contents happen under the mutex):
//! - `used` is the sum of [`Block::size_bytes`] of the blocks in slots, and
//!   never exceeds the capacity; a block larger than the capacity is not
//!   cached at all;
//! - every occupied slot has exactly one ring entry; the other ring entries
//!   belong to released tables and are counted in `stale`.

use crate::sstable::Block;
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

/// Hit/miss counter stripes; a power of two.
const COUNTER_STRIPES: usize = 16;

/// The cached copy of one data block of one table.
#[derive(Default)]
struct Slot {
    block: RwLock<Option<Block>>,
    /// Set by hits, cleared by the CLOCK hand.
    referenced: AtomicBool,
    /// Address of the cached block's header, for prefetching only: it is
    /// never dereferenced, so a stale value costs a wasted prefetch at worst.
    header_addr: AtomicUsize,
}

/// One cache slot per data block of an open table.
pub(crate) struct BlockSlots {
    slots: Box<[Slot]>,
}

impl BlockSlots {
    /// Empty slots for a table of `blocks` data blocks.
    pub(crate) fn new(blocks: u32) -> Arc<BlockSlots> {
        let slots = (0..blocks).map(|_| Slot::default()).collect();
        Arc::new(BlockSlots { slots })
    }

    /// Starts loading the slot of block `idx` into the CPU cache.
    #[inline]
    pub(crate) fn prefetch(&self, idx: u32) {
        if let Some(slot) = self.slots.get(idx as usize) {
            crate::prefetch::prefetch(slot);
        }
    }

    /// Starts loading the header of cached block `idx` (the slot itself
    /// should already be in the CPU cache, see [`BlockSlots::prefetch`]),
    /// so that taking a reference to it next does not wait on memory.
    #[inline]
    pub(crate) fn prefetch_block(&self, idx: u32) {
        if let Some(slot) = self.slots.get(idx as usize) {
            let addr = slot.header_addr.load(Ordering::Relaxed);
            if addr != 0 {
                crate::prefetch::prefetch_addr(addr);
            }
        }
    }

    /// The cached block `idx`, marking it referenced.
    #[inline]
    fn get(&self, idx: u32) -> Option<Block> {
        let slot = self.slots.get(idx as usize)?;
        let block = slot.block.read().clone()?;
        // Write the bit only when it changes, so hot blocks' slots are not
        // dirtied on every hit.
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(block)
    }
}

/// One counter per cache line.
#[derive(Default)]
#[repr(align(64))]
struct PaddedCounter(AtomicU64);

/// A counter split into stripes picked per thread, so that readers on
/// different cores do not contend on one cache line.
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
    fn add(&self, n: u64) {
        let stripe = STRIPE.with(|s| *s);
        if let Some(c) = self.0.get(stripe) {
            c.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// The eviction state, under the cache's mutex.
#[derive(Default)]
struct Clock {
    /// Cached blocks in CLOCK order: the hand is the front.
    ring: VecDeque<(Weak<BlockSlots>, u32)>,
    /// Ring entries whose table was released.
    stale: usize,
    /// Bytes of the cached blocks.
    used: usize,
}

/// A concurrent cache of decompressed SST blocks, bounded in bytes.
pub struct BlockCache {
    capacity: usize,
    clock: Mutex<Clock>,
    /// `clock.used`, readable without the mutex.
    used: AtomicUsize,
    hits: StripedCounter,
    misses: StripedCounter,
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of blocks (0 caches nothing).
    pub fn new(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            capacity: capacity_bytes,
            clock: Mutex::new(Clock::default()),
            used: AtomicUsize::new(0),
            hits: StripedCounter::default(),
            misses: StripedCounter::default(),
        }
    }

    /// Block `idx` of the table owning `slots`, if cached; counts a hit or
    /// a miss.
    #[inline]
    pub(crate) fn get(&self, slots: &BlockSlots, idx: u32) -> Option<Block> {
        let found = slots.get(idx);
        match found.is_some() {
            true => self.hits.add(1),
            false => self.misses.add(1),
        }
        found
    }

    /// Records lookups counted by the caller: `hits` found, `misses` not.
    pub(crate) fn count(&self, hits: u64, misses: u64) {
        self.hits.add(hits);
        self.misses.add(misses);
    }

    /// Block `idx` of `slots` if cached, without counting: for batched
    /// lookups that count with [`BlockCache::count`].
    #[inline]
    pub(crate) fn peek(&self, slots: &BlockSlots, idx: u32) -> Option<Block> {
        slots.get(idx)
    }

    /// Caches `block` as block `idx` of `slots`, evicting others as needed.
    /// A block larger than the whole cache is not kept; a slot already
    /// filled (by a concurrent miss on the same block) is left as it is.
    pub(crate) fn insert(&self, slots: &Arc<BlockSlots>, idx: u32, block: Block) {
        let size = block.size_bytes();
        let Some(slot) = slots.slots.get(idx as usize) else {
            return;
        };
        if size > self.capacity {
            return;
        }
        let mut clock = self.clock.lock();
        if slot.block.read().is_some() {
            return;
        }
        while clock.used + size > self.capacity {
            if !evict_one(&mut clock) {
                return;
            }
        }
        slot.header_addr
            .store(block.header_addr(), Ordering::Relaxed);
        *slot.block.write() = Some(block);
        slot.referenced.store(false, Ordering::Relaxed);
        clock.used += size;
        clock.ring.push_back((Arc::downgrade(slots), idx));
        self.used.store(clock.used, Ordering::Relaxed);
    }

    /// Drops every block of a closing table from the cache.
    pub(crate) fn release(&self, slots: &BlockSlots) {
        let mut clock = self.clock.lock();
        for slot in slots.slots.iter() {
            if let Some(block) = slot.take() {
                clock.used -= block.size_bytes();
                clock.stale += 1;
            }
        }
        // Stale entries cost only memory; sweep them once they dominate.
        if clock.stale > clock.ring.len() / 2 {
            clock.ring.retain(|(slots, _)| slots.strong_count() > 0);
            clock.stale = 0;
        }
        self.used.store(clock.used, Ordering::Relaxed);
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
        self.used.load(Ordering::Relaxed)
    }

    /// The bound given at construction.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity
    }

    /// Drops every cached block (the hit and miss counts are kept).
    pub fn clear(&self) {
        let mut clock = self.clock.lock();
        for (slots, idx) in std::mem::take(&mut clock.ring) {
            if let Some(block) = slots.upgrade().and_then(|s| take(&s, idx)) {
                clock.used -= block.size_bytes();
            }
        }
        clock.stale = 0;
        self.used.store(clock.used, Ordering::Relaxed);
    }
}

/// Moves the CLOCK hand until one block is evicted; false if the ring is
/// empty. Terminates: every referenced block passed over loses its bit, so
/// the second lap evicts.
fn evict_one(clock: &mut Clock) -> bool {
    while let Some((weak, idx)) = clock.ring.pop_front() {
        let Some(slots) = weak.upgrade() else {
            clock.stale = clock.stale.saturating_sub(1);
            continue;
        };
        let Some(slot) = slots.slots.get(idx as usize) else {
            continue;
        };
        if slot.referenced.swap(false, Ordering::Relaxed) {
            clock.ring.push_back((weak, idx));
            continue;
        }
        let evicted = slot.take();
        if let Some(block) = evicted {
            clock.used -= block.size_bytes();
            return true;
        }
    }
    false
}

/// Empties slot `idx` of `slots`, returning what it held.
fn take(slots: &BlockSlots, idx: u32) -> Option<Block> {
    slots.slots.get(idx as usize)?.take()
}

impl Slot {
    /// Empties the slot, returning what it held.
    fn take(&self) -> Option<Block> {
        self.header_addr.store(0, Ordering::Relaxed);
        self.block.write().take()
    }
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity_bytes", &self.capacity)
            .field("used_bytes", &self.used_bytes())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(len: usize) -> Block {
        crate::sstable::test_support::block_of_size(len)
    }

    #[test]
    fn hits_misses_and_clear() {
        let cache = BlockCache::new(1 << 20);
        let a = BlockSlots::new(2);
        let b = BlockSlots::new(1);
        assert!(cache.get(&a, 0).is_none());
        cache.insert(&a, 0, block_of(100));
        assert_eq!(cache.get(&a, 0).map(|b| b.len()), Some(1));
        assert!(cache.get(&a, 1).is_none());
        assert!(cache.get(&b, 0).is_none());
        assert!(cache.get(&a, 9).is_none(), "out of range is a miss");
        assert_eq!((cache.hits(), cache.misses()), (1, 4));
        assert!(cache.used_bytes() >= 100);
        cache.clear();
        assert_eq!(cache.used_bytes(), 0);
        assert!(cache.get(&a, 0).is_none());
        assert_eq!(cache.capacity_bytes(), 1 << 20);
    }

    #[test]
    fn bound_is_respected() {
        for capacity in [0usize, 1000, 10_000, 64 << 10, 1 << 20] {
            let cache = BlockCache::new(capacity);
            let tables: Vec<_> = (0..3).map(|_| BlockSlots::new(2_000)).collect();
            for i in 0..2_000u32 {
                let t = &tables[i as usize % 3];
                cache.insert(t, i, block_of(50 + (i as usize * 37) % 3000));
                assert!(
                    cache.used_bytes() <= capacity,
                    "{} > {capacity}",
                    cache.used_bytes()
                );
            }
        }
    }

    #[test]
    fn clock_keeps_referenced_blocks() {
        let one = block_of(1000).size_bytes();
        let cache = BlockCache::new(one * 4);
        let t = BlockSlots::new(100);
        for i in 0..4 {
            cache.insert(&t, i, block_of(1000));
        }
        // Block 0 is hot: it survives a stream of cold blocks.
        for i in 4..100 {
            assert!(cache.get(&t, 0).is_some(), "hot block evicted at {i}");
            cache.insert(&t, i, block_of(1000));
            assert_eq!(cache.used_bytes(), one * 4);
        }
    }

    #[test]
    fn released_tables_give_back_their_bytes() {
        let cache = BlockCache::new(1 << 20);
        let t = BlockSlots::new(10);
        for i in 0..10 {
            cache.insert(&t, i, block_of(500));
        }
        let u = BlockSlots::new(1);
        cache.insert(&u, 0, block_of(500));
        cache.release(&t);
        drop(t);
        assert_eq!(cache.used_bytes(), block_of(500).size_bytes());
        assert!(cache.get(&u, 0).is_some());
        // The stale entries were swept and the survivor can still be evicted.
        assert!(cache.clock.lock().ring.len() <= 11);
        cache.clear();
        assert_eq!(cache.used_bytes(), 0);
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let cache = Arc::new(BlockCache::new(256 << 10));
        let tables: Arc<Vec<_>> = Arc::new((0..4).map(|_| BlockSlots::new(50)).collect());
        let threads: Vec<_> = (0..4usize)
            .map(|t| {
                let (cache, tables) = (Arc::clone(&cache), Arc::clone(&tables));
                std::thread::spawn(move || {
                    for i in 0..2_000u32 {
                        let slots = &tables[(t + i as usize) % 4];
                        if cache.get(slots, i % 50).is_none() {
                            cache.insert(slots, i % 50, block_of(500));
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
