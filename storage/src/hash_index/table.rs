//! One shard's open-addressing table: Robin Hood linear probing over packed
//! 28-byte slots, with backward-shift deletion.
//!
//! Invariants (checked by `check_invariants` in tests):
//! - `slots.len()` (the capacity) is 0 or at least [`MIN_CAPACITY`] and need
//!   not be a power of two: an entity's home slot is `fastrange(digest.hi, cap)`,
//!   which is monotone in `digest.hi`.
//! - A slot whose digest is all zeros is empty. The one real digest that is all
//!   zeros ([`RESERVED`]) therefore never lives in `slots`; it is kept in the
//!   side field `reserved` instead.
//! - Robin Hood order: walking from any entry's home slot to the entry crosses
//!   no empty slot, and along a run of occupied slots the probe distance
//!   (slot index minus home, cyclically) grows by at most one per step. So a
//!   lookup may stop at the first empty slot or at the first resident that is
//!   closer to its home than the probe is to the key's home.
//! - `len <= cap * 9 / 10` whenever `len > 0`, so there is always an empty
//!   slot and every probe loop terminates. Inserting past that load grows the
//!   table by 1.5x (to load ~0.6); removing below load 7/12 shrinks it to load
//!   3/4, so slots cost `28 / load` = 31..48 bytes per entity.

use super::{IndexEntry, Location};
use crate::{Digest, Timestamp};

/// Bytes per slot: digest hi (8) + lo (4) + event_ts (8) + packed location (8).
pub(super) const SLOT_BYTES: usize = 28;

/// Smallest non-zero capacity; a table that has never held an entry has none.
pub(super) const MIN_CAPACITY: usize = 16;

/// The table grows once `len` would exceed `cap * GROW_AT_NUM / GROW_AT_DEN`.
const GROW_AT_NUM: usize = 9;
const GROW_AT_DEN: usize = 10;

/// Growth factor 1.5: `new_cap = cap + cap / GROWTH_DIVISOR`.
const GROWTH_DIVISOR: usize = 2;

/// The table shrinks once `len < cap * SHRINK_BELOW_NUM / SHRINK_BELOW_DEN`.
/// 7/12 is exactly the load at which slots cost 48 bytes per entity.
const SHRINK_BELOW_NUM: usize = 7;
const SHRINK_BELOW_DEN: usize = 12;

/// Load a shrunken table is rebuilt at: `cap = len * 4 / 3`, leaving room to
/// both grow and shrink by a sizeable fraction before the next resize.
const SHRINK_TO_NUM: usize = 4;
const SHRINK_TO_DEN: usize = 3;

/// Probe distance no insert should reach with hashed digests at load <= 0.9
/// (measured maxima are well under 100 for millions of entries). Exceeding it
/// means the home-slot function or the Robin Hood swap is broken.
pub(super) const MAX_EXPECTED_PROBE: usize = 512;

/// The digest an all-zero (empty) slot would claim.
pub(super) const RESERVED: Digest = Digest { hi: 0, lo: 0 };

/// One packed slot. `packed(4)` makes it 28 bytes with no padding; fields are
/// only ever read and written by value, never borrowed.
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct Slot {
    hi: u64,
    lo: u32,
    event_ts: Timestamp,
    loc: u64,
}

const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);

const EMPTY: Slot = Slot {
    hi: 0,
    lo: 0,
    event_ts: 0,
    loc: 0,
};

impl Slot {
    #[inline]
    fn is_empty(self) -> bool {
        self.hi == 0 && self.lo == 0
    }

    #[inline]
    fn holds(self, d: Digest) -> bool {
        self.hi == d.hi && self.lo == d.lo
    }

    #[inline]
    fn digest(self) -> Digest {
        Digest {
            hi: self.hi,
            lo: self.lo,
        }
    }

    #[inline]
    fn entry(self) -> IndexEntry {
        IndexEntry {
            event_ts: self.event_ts,
            loc: Location::unpack(self.loc),
        }
    }
}

/// What [`Table::update`]'s decision function wants done with an entity.
pub(super) enum Action {
    /// Leave the table as it is.
    Keep,
    /// Store this entry (insert or overwrite). `loc` is already packed.
    Set {
        /// The entry's event time.
        event_ts: Timestamp,
        /// [`Location::pack`]ed location.
        loc: u64,
    },
    /// Remove the entity if present.
    Remove,
}

/// Where a probe for a digest ended.
enum Probe {
    /// The digest is at this slot.
    Found(usize),
    /// The digest is absent; a new entry for it belongs at `pos`, `dist`
    /// slots past its home.
    Vacant { pos: usize, dist: usize },
}

/// One shard's table. See the module docs for its invariants.
pub(super) struct Table {
    slots: Box<[Slot]>,
    /// Occupied slots (the reserved digest is not counted here).
    len: usize,
    /// Entry of the reserved all-zero digest, which cannot live in a slot.
    reserved: Option<IndexEntry>,
}

impl Table {
    /// An empty table; allocates nothing until the first insert.
    pub(super) fn new() -> Table {
        Table::with_capacity(0)
    }

    /// A table whose slot array is already big enough for `entities`.
    pub(super) fn with_capacity(entities: usize) -> Table {
        let cap = if entities == 0 {
            0
        } else {
            capacity_for(entities)
        };
        Table {
            slots: vec![EMPTY; cap].into_boxed_slice(),
            len: 0,
            reserved: None,
        }
    }

    /// Entities held.
    pub(super) fn len(&self) -> usize {
        self.len + usize::from(self.reserved.is_some())
    }

    /// Bytes of the slot array.
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// Slots in the array.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The entity's entry, if any.
    #[inline]
    pub(super) fn get(&self, d: Digest) -> Option<IndexEntry> {
        if d == RESERVED {
            return self.reserved;
        }
        match self.probe(d) {
            Probe::Found(i) => Some(self.slots[i].entry()),
            Probe::Vacant { .. } => None,
        }
    }

    /// Asks the CPU to start loading the cache lines a probe for `d` reads
    /// first (the home slot and the next line), without waiting for them.
    #[inline]
    pub(super) fn prefetch(&self, d: Digest) {
        if self.slots.is_empty() {
            return;
        }
        let home = self.home(d.hi);
        let ahead = (home + PREFETCH_AHEAD_SLOTS).min(self.slots.len() - 1);
        prefetch_slot(&self.slots[home]);
        prefetch_slot(&self.slots[ahead]);
    }

    /// Shows `decide` the entity's current entry and applies its answer.
    /// Returns true if the table changed (a `Set`, or a `Remove` of an entity
    /// that was present).
    pub(super) fn update(
        &mut self,
        d: Digest,
        decide: impl FnOnce(Option<IndexEntry>) -> Action,
    ) -> bool {
        if d == RESERVED {
            return self.update_reserved(decide);
        }
        match self.probe(d) {
            Probe::Found(i) => match decide(Some(self.slots[i].entry())) {
                Action::Keep => false,
                Action::Set { event_ts, loc } => {
                    self.slots[i].event_ts = event_ts;
                    self.slots[i].loc = loc;
                    true
                }
                Action::Remove => {
                    self.remove_at(i);
                    self.shrink_if_sparse();
                    true
                }
            },
            Probe::Vacant { pos, dist } => match decide(None) {
                Action::Keep | Action::Remove => false,
                Action::Set { event_ts, loc } => {
                    let slot = Slot {
                        hi: d.hi,
                        lo: d.lo,
                        event_ts,
                        loc,
                    };
                    self.insert_absent(slot, pos, dist);
                    true
                }
            },
        }
    }

    /// Inserts an entity the caller knows is absent (checkpoint loading).
    /// Returns false, changing nothing, if it was present after all.
    pub(super) fn insert_new(&mut self, d: Digest, event_ts: Timestamp, loc: u64) -> bool {
        let mut inserted = false;
        self.update(d, |cur| match cur {
            Some(_) => Action::Keep,
            None => {
                inserted = true;
                Action::Set { event_ts, loc }
            }
        });
        inserted
    }

    /// Calls `f` on every entry, in slot order.
    pub(super) fn for_each(&self, f: &mut impl FnMut(Digest, IndexEntry)) {
        if let Some(e) = self.reserved {
            f(RESERVED, e);
        }
        for s in self.slots.iter().filter(|s| !s.is_empty()) {
            f(s.digest(), s.entry());
        }
    }

    /// Keeps only the entries for which `f` returns true; `f` sees each entry
    /// exactly once. Shrinks the table afterwards if it became sparse.
    pub(super) fn retain(&mut self, f: &mut impl FnMut(Digest, IndexEntry) -> bool) {
        if let Some(e) = self.reserved {
            if !f(RESERVED, e) {
                self.reserved = None;
            }
        }
        if self.len == 0 {
            return;
        }
        // Start just after an empty slot. Backward shifts never move an entry
        // across an empty slot, and removals only add empty slots, so every
        // entry shifted into the current position comes from ahead of the
        // scan: each entry is shown to `f` once.
        let Some(start) = self.slots.iter().position(|s| s.is_empty()) else {
            debug_assert!(false, "a non-empty table always has an empty slot");
            return;
        };
        let cap = self.slots.len();
        let mut i = self.next(start);
        let mut scanned = 1;
        while scanned < cap {
            let s = self.slots[i];
            if !s.is_empty() && !f(s.digest(), s.entry()) {
                self.remove_at(i);
                continue; // re-examine i: it now holds the next entry, if any
            }
            i = self.next(i);
            scanned += 1;
        }
        self.shrink_if_sparse();
    }

    fn update_reserved(&mut self, decide: impl FnOnce(Option<IndexEntry>) -> Action) -> bool {
        match decide(self.reserved) {
            Action::Keep => false,
            Action::Set { event_ts, loc } => {
                self.reserved = Some(IndexEntry {
                    event_ts,
                    loc: Location::unpack(loc),
                });
                true
            }
            Action::Remove => self.reserved.take().is_some(),
        }
    }

    /// Home slot of a digest: `hi` scaled onto `0..cap` ("fastrange"), which
    /// needs no power-of-two capacity and keeps homes ordered by `hi`.
    #[inline]
    fn home(&self, hi: u64) -> usize {
        ((u128::from(hi) * self.slots.len() as u128) >> 64) as usize
    }

    /// How far slot `i`, holding an entry whose digest has `hi`, is past the
    /// entry's home, counting around the end of the array.
    #[inline]
    fn dist(&self, i: usize, hi: u64) -> usize {
        let home = self.home(hi);
        if i >= home {
            i - home
        } else {
            i + self.slots.len() - home
        }
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Finds `d` (not the reserved digest), or where it would be inserted.
    #[inline]
    fn probe(&self, d: Digest) -> Probe {
        if self.slots.is_empty() {
            return Probe::Vacant { pos: 0, dist: 0 };
        }
        let mut i = self.home(d.hi);
        let mut dist = 0;
        loop {
            let s = self.slots[i];
            if s.holds(d) {
                return Probe::Found(i);
            }
            if s.is_empty() || self.dist(i, s.hi) < dist {
                return Probe::Vacant { pos: i, dist };
            }
            i = self.next(i);
            dist += 1;
        }
    }

    /// Inserts `slot`, whose digest is absent and whose probe ended at
    /// `(pos, dist)`, growing the table first if it would get too full.
    fn insert_absent(&mut self, slot: Slot, pos: usize, dist: usize) {
        if self.len + 1 > max_len(self.slots.len()) {
            self.resize(grown_capacity(self.slots.len()));
            let home = self.home(slot.hi);
            self.place(slot, home, 0);
        } else {
            self.place(slot, pos, dist);
        }
        self.len += 1;
    }

    /// Robin Hood placement: carries `slot` forward from `pos` (which is
    /// `dist` past its home); whenever the carried entry is farther from home
    /// than the resident, they swap and the evicted resident is carried on.
    fn place(&mut self, slot: Slot, pos: usize, dist: usize) {
        let (mut carry, mut i, mut d) = (slot, pos, dist);
        loop {
            debug_assert!(
                d <= MAX_EXPECTED_PROBE,
                "probe distance {d} at load {}/{}",
                self.len,
                self.slots.len()
            );
            let resident = self.slots[i];
            if resident.is_empty() {
                self.slots[i] = carry;
                return;
            }
            let resident_dist = self.dist(i, resident.hi);
            if resident_dist < d {
                self.slots[i] = carry;
                carry = resident;
                d = resident_dist;
            }
            i = self.next(i);
            d += 1;
        }
    }

    /// Backward-shift deletion: empties slot `i` and pulls each following
    /// entry that is away from its home back by one, so no tombstones are
    /// needed and the Robin Hood order holds.
    fn remove_at(&mut self, i: usize) {
        let mut hole = i;
        loop {
            let j = self.next(hole);
            let s = self.slots[j];
            if s.is_empty() || self.dist(j, s.hi) == 0 {
                break;
            }
            self.slots[hole] = s;
            hole = j;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
    }

    fn shrink_if_sparse(&mut self) {
        let cap = self.slots.len();
        if cap <= MIN_CAPACITY || self.len * SHRINK_BELOW_DEN >= cap * SHRINK_BELOW_NUM {
            return;
        }
        let target = (self.len * SHRINK_TO_NUM / SHRINK_TO_DEN + 1).max(MIN_CAPACITY);
        if target < cap {
            self.resize(target);
        }
    }

    /// Rebuilds the slot array with `cap` slots. Entries are re-placed in old
    /// slot order, which is nearly home order, so the new array fills almost
    /// sequentially.
    fn resize(&mut self, cap: usize) {
        debug_assert!(self.len <= max_len(cap) || self.len == 0);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap].into_boxed_slice());
        for &s in old.iter().filter(|s| !s.is_empty()) {
            let home = self.home(s.hi);
            self.place(s, home, 0);
        }
    }

    /// Panics if any invariant from the module docs is broken.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        let cap = self.slots.len();
        assert!(cap == 0 || cap >= MIN_CAPACITY);
        let occupied = self.slots.iter().filter(|s| !s.is_empty()).count();
        assert_eq!(occupied, self.len);
        assert!(self.len == 0 || self.len <= max_len(cap));
        for i in 0..cap {
            let s = self.slots[i];
            if s.is_empty() {
                continue;
            }
            // No empty slot between home and i.
            let d = self.dist(i, s.hi);
            let home = self.home(s.hi);
            for k in 0..d {
                assert!(
                    !self.slots[(home + k) % cap].is_empty(),
                    "gap before slot {i}"
                );
            }
            // Distance grows by at most one from the previous occupied slot.
            let prev = if i == 0 { cap - 1 } else { i - 1 };
            let p = self.slots[prev];
            if !p.is_empty() {
                assert!(
                    d <= self.dist(prev, p.hi) + 1,
                    "robin hood order broken at {i}"
                );
            } else {
                assert_eq!(d, 0, "entry after an empty slot is not at home");
            }
        }
    }

    /// Largest and mean probe distance of the stored entries.
    #[cfg(test)]
    pub(super) fn probe_stats(&self) -> (usize, f64) {
        let mut max = 0;
        let mut sum = 0usize;
        for (i, s) in self.slots.iter().enumerate() {
            if !s.is_empty() {
                let d = self.dist(i, s.hi);
                max = max.max(d);
                sum += d;
            }
        }
        (max, sum as f64 / self.len.max(1) as f64)
    }
}

/// A probe's second prefetch lands this many slots past home (64 bytes on),
/// covering the mean probe length at high load.
const PREFETCH_AHEAD_SLOTS: usize = 64 / SLOT_BYTES + 1;

#[inline]
fn prefetch_slot(slot: &Slot) {
    crate::prefetch::prefetch(slot);
}

/// Most entries a table with `cap` slots may hold.
#[inline]
fn max_len(cap: usize) -> usize {
    cap * GROW_AT_NUM / GROW_AT_DEN
}

/// Smallest capacity (at least [`MIN_CAPACITY`]) that holds `entities`.
fn capacity_for(entities: usize) -> usize {
    let cap = entities.saturating_mul(GROW_AT_DEN) / GROW_AT_NUM + 1;
    cap.max(MIN_CAPACITY)
}

/// Capacity after one growth step from `cap`.
fn grown_capacity(cap: usize) -> usize {
    (cap + cap / GROWTH_DIVISOR).max(MIN_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn set(ts: Timestamp, loc: u64) -> Action {
        Action::Set { event_ts: ts, loc }
    }

    fn put(t: &mut Table, d: Digest, ts: Timestamp) -> bool {
        t.update(d, |_| set(ts, ts as u64 & 0xffff))
    }

    fn entry(ts: Timestamp) -> IndexEntry {
        IndexEntry {
            event_ts: ts,
            loc: Location::unpack(ts as u64 & 0xffff),
        }
    }

    #[test]
    fn capacity_rules() {
        assert_eq!(capacity_for(1), MIN_CAPACITY);
        for n in [1usize, 10, 100, 1000, 12345] {
            assert!(max_len(capacity_for(n)) >= n);
        }
        let mut cap = MIN_CAPACITY;
        for _ in 0..40 {
            let next = grown_capacity(cap);
            assert!(next > cap && max_len(next) > max_len(cap));
            cap = next;
        }
    }

    #[test]
    fn reserved_digest_lives_in_the_side_field() {
        let mut t = Table::new();
        assert_eq!(t.get(RESERVED), None);
        assert!(put(&mut t, RESERVED, 5));
        assert_eq!(t.get(RESERVED), Some(entry(5)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.heap_bytes(), 0);
        // A digest with hi == 0 but lo != 0 is an ordinary slot entry.
        let d = Digest { hi: 0, lo: 1 };
        assert!(put(&mut t, d, 6));
        assert_eq!(t.get(d), Some(entry(6)));
        let mut seen = Vec::new();
        t.for_each(&mut |d, e| seen.push((d, e)));
        assert_eq!(seen.len(), 2);
        t.retain(&mut |d, _| d != RESERVED);
        assert_eq!(t.get(RESERVED), None);
        assert!(!t.update(RESERVED, |_| Action::Remove));
        assert_eq!(t.len(), 1);
        t.check_invariants();
    }

    #[test]
    fn wraparound_and_clusters() {
        // Digests whose homes are the last slots wrap to the front.
        let mut t = Table::with_capacity(20);
        let cap = t.capacity() as u64;
        let near_end = u64::MAX - (u64::MAX / cap) / 2;
        for k in 0..10u32 {
            assert!(put(
                &mut t,
                Digest {
                    hi: near_end,
                    lo: k + 1
                },
                i64::from(k)
            ));
            t.check_invariants();
        }
        for k in 0..10u32 {
            let d = Digest {
                hi: near_end,
                lo: k + 1,
            };
            assert_eq!(t.get(d), Some(entry(i64::from(k))));
        }
        for k in (0..10u32).step_by(2) {
            assert!(t.update(
                Digest {
                    hi: near_end,
                    lo: k + 1
                },
                |_| Action::Remove
            ));
            t.check_invariants();
        }
        assert_eq!(t.len(), 5);
    }

    /// Robin Hood keeps probes short at the highest load the table allows.
    #[test]
    fn probe_distance_at_max_load() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut t = Table::with_capacity(200_000);
        let target = max_len(t.capacity());
        while t.len() < target {
            let d = Digest {
                hi: rng.gen(),
                lo: rng.gen::<u32>() | 1,
            };
            put(&mut t, d, 1);
        }
        assert_eq!(t.capacity(), capacity_for(200_000), "no growth expected");
        let (max, mean) = t.probe_stats();
        eprintln!(
            "load {}/{}: max probe {max}, mean {mean:.2}",
            t.len(),
            t.capacity()
        );
        assert!(mean < 6.0, "mean probe distance {mean}");
        assert!(max < 128, "max probe distance {max}");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(usize, Timestamp),
        Remove(usize),
        RetainOdd,
    }

    /// Digests packed into few homes, including around the wrap point, plus
    /// the reserved one: long clusters and swaps on every insert.
    fn clustered(i: usize) -> Digest {
        let bases = [0u64, 1 << 40, u64::MAX / 2, u64::MAX - (1 << 50)];
        Digest {
            hi: bases[i % bases.len()].wrapping_add((i as u64 / 4) << 44),
            lo: (i / 64) as u32,
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..600usize, any::<i64>()).prop_map(|(k, ts)| Op::Put(k, ts)),
            4 => (0..600usize).prop_map(Op::Remove),
            1 => Just(Op::RetainOdd),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_a_hash_map(ops in proptest::collection::vec(op(), 1..1500)) {
            let mut t = Table::new();
            let mut model: HashMap<Digest, IndexEntry> = HashMap::new();
            for op in ops {
                match op {
                    Op::Put(k, ts) => {
                        let d = clustered(k);
                        prop_assert!(put(&mut t, d, ts));
                        model.insert(d, entry(ts));
                    }
                    Op::Remove(k) => {
                        let d = clustered(k);
                        let changed = t.update(d, |_| Action::Remove);
                        prop_assert_eq!(changed, model.remove(&d).is_some());
                    }
                    Op::RetainOdd => {
                        let mut calls = 0;
                        t.retain(&mut |_, e| { calls += 1; e.event_ts % 2 != 0 });
                        prop_assert_eq!(calls, model.len());
                        model.retain(|_, e| e.event_ts % 2 != 0);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            t.check_invariants();
            for k in 0..600 {
                let d = clustered(k);
                prop_assert_eq!(t.get(d), model.get(&d).copied());
            }
            let bytes_per_entity = t.heap_bytes() / t.len().max(1);
            prop_assert!(t.len() < 200 || bytes_per_entity <= 48, "{bytes_per_entity} B/entity");
        }
    }
}
