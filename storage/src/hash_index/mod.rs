//! The in-memory hash index: entity digest → where that entity's latest
//! version lives, and that version's event time.
//!
//! Online serving asks for the latest row of many keys at once; the index
//! answers each with one shard read-lock and one short probe, whatever the
//! LSM depth, and [`HashIndex::get_many`] prefetches a whole request's slots
//! first so that their cache misses overlap. It owns nothing on disk except
//! its checkpoint (see [`HashIndex::write_checkpoint`] and
//! `docs/format.md`).
//!
//! Layout: [`SHARDS`] shards, chosen by the low bits of `Digest::lo`, each a
//! `parking_lot::RwLock` around an open-addressing table of packed 28-byte
//! slots (Robin Hood linear probing, backward-shift deletion, home slot from
//! `Digest::hi` by multiply-shift, capacity any integer). Tables keep their
//! load within [7/12, 9/10], so the index costs 31..48 bytes per entity,
//! plus a fixed few KiB for the shard array, once each shard holds more than
//! a handful of entries.
//!
//! Invariants:
//! - at most one entry per digest; an entry's `event_ts` only moves forward
//!   through [`HashIndex::upsert_if_newer`] (ties go to the later call);
//! - every stored [`Location`] round-trips through [`Location::pack`], so what
//!   a reader gets back is exactly what a writer stored;
//! - readers on any thread may run while one writer updates; each call sees a
//!   single entity atomically (per-shard locks), but calls that span shards
//!   (`len`, `for_each`, `retain`, checkpoints) see each shard at a different
//!   moment.

mod checkpoint;
mod table;

use crate::{Digest, Timestamp};
use parking_lot::RwLock;
use table::{Action, Table};

/// Largest SST file number a [`Location`] can hold (39 bits).
pub const MAX_FILE_NO: u64 = (1 << 39) - 1;
/// Block indexes within one SST must be below this (24 bits).
pub const MAX_BLOCKS_PER_SST: u32 = 1 << 24;
/// Largest memtable generation a [`Location`] can hold (31 bits; a process
/// numbers its memtables from 1, so this is 2^31 rotations).
pub const MAX_MEM_GEN: u64 = (1 << 31) - 1;
/// A memtable location whose slot is not known: readers search the
/// memtable for the key instead.
pub const UNKNOWN_SLOT: u32 = u32::MAX;

/// log2 of the number of shards.
const SHARD_BITS: u32 = 6;
/// Number of independently locked shards.
pub const SHARDS: usize = 1 << SHARD_BITS;

/// Set in a packed location that points into a memtable.
const MEM_FLAG: u64 = 1 << 63;
/// Bits of a packed SST location that hold the block index.
const BLOCK_BITS: u32 = 24;
const BLOCK_MASK: u64 = (1 << BLOCK_BITS) - 1;
/// Bits of a packed memtable location that hold the slot.
const SLOT_BITS: u32 = 32;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// Where an entity's latest version lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// In the memtable of this generation (active or frozen).
    Mem {
        /// Memtable generation, at most [`MAX_MEM_GEN`].
        gen: u64,
        /// The version's slot in that memtable, or [`UNKNOWN_SLOT`].
        slot: u32,
    },
    /// In an SST data block.
    Sst {
        /// SST file number, at most [`MAX_FILE_NO`].
        file_no: u64,
        /// Data block index within the file, below [`MAX_BLOCKS_PER_SST`].
        block: u32,
    },
}

impl Location {
    /// True if [`Location::pack`] can represent this location.
    pub const fn is_packable(self) -> bool {
        match self {
            Location::Mem { gen, .. } => gen <= MAX_MEM_GEN,
            Location::Sst { file_no, block } => {
                file_no <= MAX_FILE_NO && block < MAX_BLOCKS_PER_SST
            }
        }
    }

    /// Packs into 64 bits: bit 63 set means `Mem` with `gen` in bits 32..63
    /// and `slot` in 0..32; clear means `Sst` with `file_no` in bits 24..63
    /// and `block` in 0..24.
    ///
    /// # Panics
    /// If the location is out of range (see [`Location::is_packable`]):
    /// storing it truncated would later send readers to the wrong place.
    pub fn pack(self) -> u64 {
        assert!(self.is_packable(), "location out of range: {self:?}");
        match self {
            Location::Mem { gen, slot } => MEM_FLAG | (gen << SLOT_BITS) | u64::from(slot),
            Location::Sst { file_no, block } => (file_no << BLOCK_BITS) | u64::from(block),
        }
    }

    /// Inverse of [`Location::pack`]; every `u64` decodes to some location.
    pub fn unpack(v: u64) -> Location {
        if v & MEM_FLAG != 0 {
            Location::Mem {
                gen: (v & !MEM_FLAG) >> SLOT_BITS,
                // Masked to 32 bits, so the cast cannot truncate.
                slot: (v & SLOT_MASK) as u32,
            }
        } else {
            Location::Sst {
                file_no: v >> BLOCK_BITS,
                // Masked to 24 bits, so the cast cannot truncate.
                block: (v & BLOCK_MASK) as u32,
            }
        }
    }

    /// True if this names a version in memtable generation `of`, whatever
    /// its slot.
    pub fn is_in_memtable(self, of: u64) -> bool {
        matches!(self, Location::Mem { gen, .. } if gen == of)
    }

    /// True for [`Location::Sst`].
    pub fn is_sst(self) -> bool {
        matches!(self, Location::Sst { .. })
    }
}

/// What the index knows about one entity's latest version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Event time of the latest version.
    pub event_ts: Timestamp,
    /// Where that version is stored.
    pub loc: Location,
}

/// One shard, alone on its cache lines so that readers of different shards
/// do not contend on the lock word.
#[repr(align(128))]
struct Shard(RwLock<Table>);

/// The shard holding `d`. Shards take the low bits of `lo` and home slots
/// take `hi`, so the two choices are independent.
#[inline]
fn shard_index(d: Digest) -> usize {
    d.lo as usize & (SHARDS - 1)
}

/// Concurrent map from entity digest to [`IndexEntry`]. See the module docs.
pub struct HashIndex {
    shards: Box<[Shard]>,
}

impl HashIndex {
    /// An empty index; shards allocate slots on first insert.
    pub fn new() -> Self {
        Self::with_shard_tables(|_| Table::new())
    }

    /// An index sized to hold `entities` without growing (with margin for
    /// uneven shard fill).
    ///
    /// # Panics
    /// If the slot arrays cannot be allocated, as `Vec::with_capacity` does.
    pub fn with_capacity(entities: usize) -> Self {
        let per_shard = entities.div_ceil(SHARDS);
        // Shard fill is binomial: allow ~4 standard deviations so a full
        // index rarely needs a resize while it is being loaded.
        let slack = 4 * (per_shard as f64).sqrt() as usize;
        let per_shard = if entities == 0 { 0 } else { per_shard + slack };
        Self::with_shard_tables(|_| Table::with_capacity(per_shard))
    }

    fn with_shard_tables(make: impl FnMut(usize) -> Table) -> Self {
        let shards = (0..SHARDS).map(make).map(|t| Shard(RwLock::new(t)));
        HashIndex {
            shards: shards.collect(),
        }
    }

    #[inline]
    fn shard(&self, d: Digest) -> &RwLock<Table> {
        &self.shards[shard_index(d)].0
    }

    /// The entity's entry, if indexed.
    #[inline]
    pub fn get(&self, d: Digest) -> Option<IndexEntry> {
        self.shard(d).read().get(d)
    }

    /// Looks up many entities at once, appending `self.get(k)` for each key
    /// of `keys` to `out`, in order. Every key's home slot is prefetched
    /// before any is probed, so the cache misses of one request overlap
    /// instead of queueing one behind the other (each lock operation waits
    /// for earlier loads to finish, but not for earlier prefetches).
    pub fn get_many(&self, keys: &[Digest], out: &mut Vec<Option<IndexEntry>>) {
        for &k in keys {
            self.shard(k).read().prefetch(k);
        }
        out.reserve(keys.len());
        out.extend(keys.iter().map(|&k| self.get(k)));
    }

    /// Insert if absent; else replace iff `event_ts >= current event_ts`
    /// (callers apply writes in commit order, so on a tie the newer commit
    /// wins). Returns true if it inserted or replaced the entry.
    ///
    /// # Panics
    /// If `loc` is out of range (see [`Location::pack`]).
    pub fn upsert_if_newer(&self, d: Digest, event_ts: Timestamp, loc: Location) -> bool {
        let loc = loc.pack();
        self.shard(d).write().update(d, |cur| match cur {
            Some(c) if event_ts < c.event_ts => Action::Keep,
            _ => Action::Set { event_ts, loc },
        })
    }

    /// [`HashIndex::upsert_if_newer`] for a write applied out of commit
    /// order (a bulk import): on an equal event time the current entry is
    /// kept when `current_is_later(current.loc)` says it names a later
    /// commit.
    ///
    /// # Panics
    /// If `loc` is out of range (see [`Location::pack`]).
    pub fn upsert_unless_later(
        &self,
        d: Digest,
        event_ts: Timestamp,
        loc: Location,
        current_is_later: impl FnOnce(Location) -> bool,
    ) -> bool {
        let loc = loc.pack();
        self.shard(d).write().update(d, |cur| match cur {
            Some(c) if event_ts < c.event_ts => Action::Keep,
            Some(c) if event_ts == c.event_ts && current_is_later(c.loc) => Action::Keep,
            _ => Action::Set { event_ts, loc },
        })
    }

    /// If present and `from(current.loc)` holds, sets its location to `to`,
    /// keeping `event_ts`. Returns true if moved.
    ///
    /// # Panics
    /// If `to` is out of range (see [`Location::pack`]).
    pub fn relocate(&self, d: Digest, from: impl Fn(Location) -> bool, to: Location) -> bool {
        let to = to.pack();
        self.shard(d).write().update(d, |cur| match cur {
            Some(c) if from(c.loc) => Action::Set {
                event_ts: c.event_ts,
                loc: to,
            },
            _ => Action::Keep,
        })
    }

    /// Removes the entity if present and `pred(current.loc)`. Returns true if
    /// removed.
    pub fn remove_if(&self, d: Digest, pred: impl Fn(Location) -> bool) -> bool {
        self.shard(d).write().update(d, |cur| match cur {
            Some(c) if pred(c.loc) => Action::Remove,
            _ => Action::Keep,
        })
    }

    /// Unconditional set (used when rebuilding).
    ///
    /// # Panics
    /// If `e.loc` is out of range (see [`Location::pack`]).
    pub fn insert(&self, d: Digest, e: IndexEntry) {
        let loc = e.loc.pack();
        self.shard(d).write().update(d, |_| Action::Set {
            event_ts: e.event_ts,
            loc,
        });
    }

    /// Number of entities indexed (shards are counted one after another, so
    /// under concurrent writes this is approximate).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }

    /// True if no entity is indexed.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.0.read().len() == 0)
    }

    /// Heap bytes actually allocated by the index: the shard array (locks
    /// and table headers) plus every shard's slot array.
    pub fn memory_bytes(&self) -> usize {
        let slots: usize = self.shards.iter().map(|s| s.0.read().heap_bytes()).sum();
        std::mem::size_of_val(&*self.shards) + slots
    }

    /// Calls `f` on every entry, shard by shard. `f` runs under a shard's
    /// read lock, so it must not call back into the index's write methods.
    pub fn for_each(&self, mut f: impl FnMut(Digest, IndexEntry)) {
        for s in self.shards.iter() {
            s.0.read().for_each(&mut f);
        }
    }

    /// Keeps only the entries for which `f` returns true; `f` sees each entry
    /// once. `f` runs under a shard's write lock, so it must not call back
    /// into the index.
    pub fn retain(&self, mut f: impl FnMut(Digest, IndexEntry) -> bool) {
        for s in self.shards.iter() {
            s.0.write().retain(&mut f);
        }
    }
}

impl Default for HashIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HashIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashIndex")
            .field("len", &self.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn sst(file_no: u64, block: u32) -> Location {
        Location::Sst { file_no, block }
    }

    #[test]
    fn location_limits_round_trip() {
        let cases = [
            Location::Mem { gen: 0, slot: 0 },
            Location::Mem {
                gen: MAX_MEM_GEN,
                slot: UNKNOWN_SLOT,
            },
            sst(0, 0),
            sst(MAX_FILE_NO, 0),
            sst(0, MAX_BLOCKS_PER_SST - 1),
            sst(MAX_FILE_NO, MAX_BLOCKS_PER_SST - 1),
        ];
        for loc in cases {
            assert!(loc.is_packable());
            assert_eq!(Location::unpack(loc.pack()), loc);
        }
        assert_eq!(
            Location::Mem { gen: 5, slot: 9 }.pack(),
            (1 << 63) | (5 << 32) | 9
        );
        assert_eq!(sst(3, 7).pack(), (3 << 24) | 7);
        assert!(!Location::Mem {
            gen: MAX_MEM_GEN + 1,
            slot: 0,
        }
        .is_packable());
        assert!(!sst(MAX_FILE_NO + 1, 0).is_packable());
        assert!(!sst(0, MAX_BLOCKS_PER_SST).is_packable());
    }

    #[test]
    #[should_panic(expected = "location out of range")]
    fn packing_an_out_of_range_block_panics() {
        sst(1, MAX_BLOCKS_PER_SST).pack();
    }

    #[test]
    #[should_panic(expected = "location out of range")]
    fn packing_an_out_of_range_file_panics() {
        sst(MAX_FILE_NO + 1, 0).pack();
    }

    fn location() -> impl Strategy<Value = Location> {
        prop_oneof![
            (0..=MAX_MEM_GEN, any::<u32>()).prop_map(|(gen, slot)| Location::Mem { gen, slot }),
            (0..=MAX_FILE_NO, 0..MAX_BLOCKS_PER_SST).prop_map(|(f, b)| sst(f, b)),
        ]
    }

    proptest! {
        #[test]
        fn location_pack_round_trips(loc in location()) {
            prop_assert_eq!(Location::unpack(loc.pack()), loc);
        }

        #[test]
        fn every_u64_unpacks_to_a_location_that_packs_back(v in any::<u64>()) {
            prop_assert_eq!(Location::unpack(v).pack(), v);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Upsert(usize, Timestamp, Location),
        Relocate(usize, bool, Location),
        RemoveIf(usize, bool),
        Insert(usize, Timestamp, Location),
        Get(usize),
        RetainSst,
    }

    /// The key space; index 0 is the reserved all-zero digest.
    const KEYS: usize = 4000;

    fn key(i: usize) -> Digest {
        if i == 0 {
            return Digest { hi: 0, lo: 0 };
        }
        let h = xxhash_rust::xxh3::xxh3_128(&(i as u64).to_le_bytes());
        Digest {
            hi: (h >> 64) as u64,
            lo: h as u32,
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0..KEYS;
        let ts = -3i64..3; // few values, so ties and older writes are common
        prop_oneof![
            10 => (k.clone(), ts.clone(), location()).prop_map(|(k, t, l)| Op::Upsert(k, t, l)),
            3 => (k.clone(), any::<bool>(), location()).prop_map(|(k, m, l)| Op::Relocate(k, m, l)),
            4 => (k.clone(), any::<bool>()).prop_map(|(k, m)| Op::RemoveIf(k, m)),
            2 => (k.clone(), ts, location()).prop_map(|(k, t, l)| Op::Insert(k, t, l)),
            3 => k.prop_map(Op::Get),
            1 => Just(Op::RetainSst),
        ]
    }

    /// `from`/`pred` of the model ops: match memtable or SST locations.
    fn matches(mem: bool) -> impl Fn(Location) -> bool {
        move |l| l.is_sst() != mem
    }

    fn apply(ix: &HashIndex, model: &mut HashMap<Digest, IndexEntry>, op: Op) -> bool {
        match op {
            Op::Upsert(k, event_ts, loc) => {
                let d = key(k);
                let newer = model.get(&d).is_none_or(|c| event_ts >= c.event_ts);
                if newer {
                    model.insert(d, IndexEntry { event_ts, loc });
                }
                ix.upsert_if_newer(d, event_ts, loc) == newer
            }
            Op::Relocate(k, mem, to) => {
                let d = key(k);
                let mut moved = false;
                if let Some(c) = model.get_mut(&d).filter(|c| matches(mem)(c.loc)) {
                    c.loc = to;
                    moved = true;
                }
                ix.relocate(d, matches(mem), to) == moved
            }
            Op::RemoveIf(k, mem) => {
                let d = key(k);
                let hit = model.get(&d).is_some_and(|c| matches(mem)(c.loc));
                if hit {
                    model.remove(&d);
                }
                ix.remove_if(d, matches(mem)) == hit
            }
            Op::Insert(k, event_ts, loc) => {
                let e = IndexEntry { event_ts, loc };
                model.insert(key(k), e);
                ix.insert(key(k), e);
                true
            }
            Op::Get(k) => ix.get(key(k)) == model.get(&key(k)).copied(),
            Op::RetainSst => {
                model.retain(|_, e| e.loc.is_sst());
                ix.retain(|_, e| e.loc.is_sst());
                true
            }
        }
    }

    fn assert_same(ix: &HashIndex, model: &HashMap<Digest, IndexEntry>) {
        assert_eq!(ix.len(), model.len());
        assert_eq!(ix.is_empty(), model.is_empty());
        let mut seen = HashMap::new();
        ix.for_each(|d, e| assert!(seen.insert(d, e).is_none(), "digest listed twice"));
        assert_eq!(&seen, model);
        for s in ix.shards.iter() {
            s.0.read().check_invariants();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn matches_a_hash_map_model(
            ops in proptest::collection::vec(op(), 1..6000),
        ) {
            let ix = HashIndex::new();
            let mut model = HashMap::new();
            for (n, op) in ops.into_iter().enumerate() {
                let desc = format!("{op:?}");
                prop_assert!(apply(&ix, &mut model, op), "op {} {} disagrees", n, desc);
            }
            assert_same(&ix, &model);
            let keys: Vec<Digest> = (0..KEYS).map(key).collect();
            let mut got = vec![None];
            ix.get_many(&keys, &mut got);
            prop_assert_eq!(got[0], None, "get_many must append");
            for (k, g) in keys.iter().zip(&got[1..]) {
                prop_assert_eq!(ix.get(*k), model.get(k).copied());
                prop_assert_eq!(*g, model.get(k).copied());
            }
            prop_assert_eq!(got.len(), KEYS + 1);
        }
    }

    /// Thousands of distinct keys, then most of them deleted: shards grow
    /// several times and shrink again, and the model still agrees.
    #[test]
    fn growth_then_mass_deletion_matches_model() {
        let ix = HashIndex::new();
        let mut model = HashMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for k in 0..20_000 {
            let loc = sst(
                rng.gen_range(0..=MAX_FILE_NO),
                rng.gen_range(0..MAX_BLOCKS_PER_SST),
            );
            assert!(apply(&ix, &mut model, Op::Upsert(k, rng.gen(), loc)));
        }
        assert_same(&ix, &model);
        let grown = ix.memory_bytes();
        for k in 0..19_000 {
            assert!(apply(&ix, &mut model, Op::RemoveIf(k, false)));
        }
        assert_same(&ix, &model);
        assert!(ix.memory_bytes() < grown / 4, "tables did not shrink");
        ix.retain(|d, _| d.hi % 2 == 0);
        model.retain(|d, _| d.hi % 2 == 0);
        assert_same(&ix, &model);
    }

    fn random_digest(rng: &mut impl Rng) -> Digest {
        Digest {
            hi: rng.gen(),
            lo: rng.gen(),
        }
    }

    /// RAM budget: at most 48 bytes per entity at every size from 100k on.
    #[test]
    fn memory_budget_per_entity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let ix = HashIndex::new();
        let loc = sst(1, 1);
        let checkpoints = [100_000, 200_000, 300_000, 1_000_000];
        let mut worst: f64 = 0.0;
        for n in 1..=1_000_000usize {
            ix.upsert_if_newer(random_digest(&mut rng), 0, loc);
            if n >= 100_000 && n % 1000 == 0 {
                let per = ix.memory_bytes() as f64 / ix.len() as f64;
                worst = worst.max(per);
                assert!(per <= 48.0, "{per:.2} bytes/entity at {n}");
                if checkpoints.contains(&n) {
                    eprintln!("{n} entities: {per:.2} bytes/entity");
                }
            }
        }
        eprintln!("worst over 100k..1M (every 1000): {worst:.2} bytes/entity");
        // A pre-sized index is within budget once filled.
        let sized = HashIndex::with_capacity(100_000);
        for _ in 0..100_000 {
            sized.insert(random_digest(&mut rng), IndexEntry { event_ts: 0, loc });
        }
        let per = sized.memory_bytes() as f64 / sized.len() as f64;
        eprintln!("with_capacity(100k) filled: {per:.2} bytes/entity");
        assert!(per <= 48.0);
    }

    /// One writer moves every key forward in time while readers check that
    /// each read is a whole entry some write stored, and never goes back.
    #[test]
    fn concurrent_readers_and_writer() {
        const N: usize = 5_000;
        const ROUNDS: i64 = 40;
        let ix = Arc::new(HashIndex::new());
        let done = Arc::new(AtomicBool::new(false));
        // The location encodes the event time, so a torn read is detectable.
        let loc_for = |ts: i64| sst(ts as u64, (ts as u32) & 0xff);
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let (ix, done) = (Arc::clone(&ix), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut last = vec![-1i64; N];
                    let mut reads = 0u64;
                    let keys: Vec<Digest> = (r..N).step_by(7).map(|k| key(k + 1)).collect();
                    let mut batch = Vec::new();
                    loop {
                        // Checked first so the final pass sees the last writes.
                        let finished = done.load(Ordering::Acquire);
                        // Reader 0 reads in batches, the others key by key.
                        batch.clear();
                        if r == 0 {
                            ix.get_many(&keys, &mut batch);
                        }
                        for (n, k) in (r..N).step_by(7).enumerate() {
                            let got = if r == 0 { batch[n] } else { ix.get(keys[n]) };
                            if let Some(e) = got {
                                assert_eq!(e.loc, loc_for(e.event_ts), "torn entry");
                                assert!(e.event_ts >= last[k], "went back in time");
                                last[k] = e.event_ts;
                            }
                            reads += 1;
                        }
                        if finished {
                            return reads;
                        }
                    }
                })
            })
            .collect();
        for ts in 1..=ROUNDS {
            for k in 0..N {
                ix.upsert_if_newer(key(k + 1), ts, loc_for(ts));
                // A stale write must lose.
                assert!(!ix.upsert_if_newer(key(k + 1), ts - 1, loc_for(ts - 1)));
            }
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().expect("reader thread panicked") > 0);
        }
        assert_eq!(ix.len(), N);
        ix.for_each(|_, e| assert_eq!(e.event_ts, ROUNDS));
    }
}
