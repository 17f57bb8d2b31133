//! The memtable: recent row versions in memory, in storage order.
//!
//! Versions live in an append-only slot vector (boxcar), numbered in
//! insertion order; a lock-free skiplist (crossbeam-skiplist) orders the
//! slots for range reads while the commit leader inserts. Each memtable has
//! a generation number; the hash index points at `Location::Mem { gen,
//! slot }` for keys whose latest version lives here, so reading that version
//! takes one slot lookup instead of a skiplist search (about forty key
//! comparisons, each a cache miss, in a full memtable).
//!
//! Invariants:
//! - a slot, once published, holds the same version until the memtable is
//!   dropped; a version is in the slot vector before the skiplist names it;
//! - only the commit leader inserts, and only into the active memtable;
//! - a frozen memtable is never modified again; it is flushed to exactly one
//!   SST and then dropped once no reader holds it;
//! - every entry of generation `g` has a larger `seq` than every entry of any
//!   generation `< g`.

use crate::hash_index::UNKNOWN_SLOT;
use crate::types::{Entry, EntryRef, SeqNo, TableId, Timestamp};
use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

/// Bytes charged per entry on top of key and value: its slot and skiplist
/// node.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// A memtable slot number, as the hash index stores it.
pub(crate) type Slot = u32;

/// The ordering key of a memtable entry.
struct MemKey {
    table: TableId,
    prefix: u64,
    key: Bytes,
    event_ts: Timestamp,
    seq: SeqNo,
}

/// Bytes of an entity key kept inline in [`MemKey`], as a number.
const PREFIX_BYTES: usize = 8;

/// The first [`PREFIX_BYTES`] bytes of `key`, zero-padded, big-endian: two
/// keys whose prefixes differ compare as their prefixes do.
fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; PREFIX_BYTES];
    let n = key.len().min(PREFIX_BYTES);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// A version's place in storage order, `(table asc, key asc, event_ts desc,
/// seq desc)` as [`crate::types::cmp_internal`] has it. The key's prefix
/// settles most comparisons without reading the key from the buffer it
/// lives in: a cache miss saved at each step of a skiplist search.
#[derive(Clone, Copy)]
struct OrderKey<'a> {
    table: TableId,
    prefix: u64,
    key: &'a [u8],
    event_ts: Timestamp,
    seq: SeqNo,
}

impl<'a> OrderKey<'a> {
    fn new(table: TableId, key: &'a [u8], event_ts: Timestamp, seq: SeqNo) -> OrderKey<'a> {
        OrderKey {
            table,
            prefix: key_prefix(key),
            key,
            event_ts,
            seq,
        }
    }
}

fn cmp_order(a: &OrderKey<'_>, b: &OrderKey<'_>) -> Ordering {
    a.table
        .cmp(&b.table)
        .then_with(|| cmp_keys(a, b))
        .then_with(|| b.event_ts.cmp(&a.event_ts))
        .then_with(|| b.seq.cmp(&a.seq))
}

/// Lexicographic order of the entity keys. Equal prefixes of keys no
/// longer than a prefix mean the shorter key is the longer one's prefix
/// (the rest of the longer is zeros), so their lengths decide.
fn cmp_keys(a: &OrderKey<'_>, b: &OrderKey<'_>) -> Ordering {
    match a.prefix.cmp(&b.prefix) {
        Ordering::Equal if a.key.len() <= PREFIX_BYTES && b.key.len() <= PREFIX_BYTES => {
            a.key.len().cmp(&b.key.len())
        }
        Ordering::Equal => a.key.cmp(b.key),
        unequal => unequal,
    }
}

/// Lets the skiplist be searched with a borrowed key, without allocating.
trait KeyView {
    fn order_key(&self) -> OrderKey<'_>;
}

impl KeyView for MemKey {
    fn order_key(&self) -> OrderKey<'_> {
        OrderKey {
            table: self.table,
            prefix: self.prefix,
            key: &self.key,
            event_ts: self.event_ts,
            seq: self.seq,
        }
    }
}

/// A search probe is an order key of its own.
impl KeyView for OrderKey<'_> {
    fn order_key(&self) -> OrderKey<'_> {
        *self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for dyn KeyView + '_ {}
impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_order(&self.order_key(), &other.order_key())
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for MemKey {}
impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_order(&self.order_key(), &other.order_key())
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for MemKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

/// An in-memory, sorted set of row versions.
pub(crate) struct Memtable {
    gen: u64,
    first_wal_segment: u64,
    /// Every version, in insertion order.
    slots: boxcar::Vec<Entry>,
    /// The slots in storage order.
    map: SkipMap<MemKey, usize>,
    bytes: AtomicUsize,
    max_seq: AtomicU64,
}

impl Memtable {
    /// An empty memtable of generation `gen`, whose first record lives in
    /// WAL segment `first_wal_segment`.
    pub(crate) fn new(gen: u64, first_wal_segment: u64) -> Memtable {
        Memtable {
            gen,
            first_wal_segment,
            slots: boxcar::Vec::new(),
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn gen(&self) -> u64 {
        self.gen
    }

    pub(crate) fn first_wal_segment(&self) -> u64 {
        self.first_wal_segment
    }

    /// Inserts one version and returns its slot, or `None` past the slots
    /// a [`Slot`] can number (the version is then found by search). Only the
    /// commit leader calls this.
    pub(crate) fn insert(&self, e: &Entry) -> Option<Slot> {
        let charged = e.key.len() + e.value.len() + ENTRY_OVERHEAD_BYTES;
        let key = MemKey {
            table: e.table,
            prefix: key_prefix(&e.key),
            key: e.key.clone(),
            event_ts: e.event_ts,
            seq: e.seq,
        };
        let slot = self.slots.push(e.clone());
        self.map.insert(key, slot);
        self.bytes.fetch_add(charged, AtomicOrdering::Relaxed);
        self.max_seq.fetch_max(e.seq, AtomicOrdering::Relaxed);
        Slot::try_from(slot).ok().filter(|&s| s != UNKNOWN_SLOT)
    }

    /// The version in `slot` if it is a version of `(table, key)`: what
    /// the hash index names is checked, never trusted (digests collide).
    pub(crate) fn version_in_slot(
        &self,
        slot: Slot,
        table: TableId,
        key: &[u8],
    ) -> Option<EntryRef<'_>> {
        let e = self.slots.get(usize::try_from(slot).ok()?)?;
        e.same_entity(table, key).then(|| e.as_ref())
    }

    /// Approximate memory held, in bytes.
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Largest sequence number inserted (0 when empty).
    pub(crate) fn max_seq(&self) -> SeqNo {
        self.max_seq.load(AtomicOrdering::Relaxed)
    }

    /// The versions of `(table, key)` starting at the first one at or below
    /// `(event_ts, seq)` in storage order, newest first.
    pub(crate) fn versions_from<'a>(
        &'a self,
        table: TableId,
        key: &'a [u8],
        event_ts: Timestamp,
        seq: SeqNo,
    ) -> impl Iterator<Item = Entry> + 'a {
        let probe = OrderKey::new(table, key, event_ts, seq);
        let start: &dyn KeyView = &probe;
        let first = self.map.lower_bound(Bound::Included(start));
        let mut cursor = first;
        std::iter::from_fn(move || {
            let current = cursor.take()?;
            let k = current.key();
            if k.table != table || k.key.as_ref() != key {
                return None;
            }
            let entry = self.slot(*current.value());
            cursor = current.next();
            entry
        })
    }

    /// The newest version of `(table, key)` held here.
    pub(crate) fn first_version(&self, table: TableId, key: &[u8]) -> Option<Entry> {
        self.versions_from(table, key, Timestamp::MAX, SeqNo::MAX)
            .next()
    }

    /// Every entry of `table`, in storage order.
    pub(crate) fn iter_table(&self, table: TableId) -> impl Iterator<Item = Entry> + '_ {
        let probe = OrderKey::new(table, &[], Timestamp::MAX, SeqNo::MAX);
        let start: &dyn KeyView = &probe;
        let mut cursor = self.map.lower_bound(Bound::Included(start));
        std::iter::from_fn(move || {
            let current = cursor.take()?;
            if current.key().table != table {
                return None;
            }
            let entry = self.slot(*current.value());
            cursor = current.next();
            entry
        })
    }

    /// Every entry, in storage order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.map.iter().filter_map(|e| self.slot(*e.value()))
    }

    /// The version in a slot the skiplist names. The slot was filled before
    /// the skiplist named it, so `None` cannot happen; callers stop or skip
    /// rather than panic if it ever did.
    fn slot(&self, slot: usize) -> Option<Entry> {
        self.slots.get(slot).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Kind;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn entry(table: TableId, key: &str, event_ts: Timestamp, seq: SeqNo) -> Entry {
        Entry {
            table,
            key: Bytes::copy_from_slice(key.as_bytes()),
            event_ts,
            seq,
            ingest_ts: 0,
            kind: Kind::Put,
            value: Bytes::from(format!("{key}@{event_ts}#{seq}")),
        }
    }

    #[test]
    fn versions_come_newest_event_first_then_newest_commit() {
        let m = Memtable::new(1, 1);
        for (e, s) in [(10, 1), (30, 2), (20, 3), (30, 4)] {
            m.insert(&entry(1, "k", e, s));
        }
        m.insert(&entry(1, "j", 99, 5));
        m.insert(&entry(1, "ka", 99, 6));
        m.insert(&entry(2, "k", 99, 7));
        let got: Vec<_> = m
            .versions_from(1, b"k", i64::MAX, u64::MAX)
            .map(|e| (e.event_ts, e.seq))
            .collect();
        assert_eq!(got, vec![(30, 4), (30, 2), (20, 3), (10, 1)]);
        let first = m.first_version(1, b"k").map(|e| e.seq);
        assert_eq!(first, Some(4));
        let as_of_25: Vec<_> = m
            .versions_from(1, b"k", 25, u64::MAX)
            .map(|e| e.seq)
            .collect();
        assert_eq!(as_of_25, vec![3, 1]);
        assert!(m.first_version(1, b"absent").is_none());
        assert_eq!(m.len(), 7);
        assert_eq!(m.max_seq(), 7);
    }

    #[test]
    fn a_slot_holds_its_version_and_only_answers_for_its_key() {
        let m = Memtable::new(1, 1);
        let slots: Vec<_> = [
            entry(1, "k", 10, 1),
            entry(1, "j", 5, 2),
            entry(1, "k", 20, 3),
        ]
        .iter()
        .map(|e| m.insert(e))
        .collect();
        assert_eq!(slots, vec![Some(0), Some(1), Some(2)]);
        let newest = m
            .version_in_slot(2, 1, b"k")
            .map(|e| (e.event_ts, e.seq, e.value));
        assert_eq!(newest, Some((20, 3, &b"k@20#3"[..])));
        assert_eq!(m.version_in_slot(0, 1, b"k").map(|e| e.seq), Some(1));
        // Another key's slot, another table, a slot not yet filled.
        assert!(m.version_in_slot(1, 1, b"k").is_none());
        assert!(m.version_in_slot(2, 2, b"k").is_none());
        assert!(m.version_in_slot(3, 1, b"k").is_none());
        assert!(m
            .version_in_slot(crate::hash_index::UNKNOWN_SLOT, 1, b"k")
            .is_none());
    }

    /// A version's order fields: few tables, times and seqs so ties are
    /// common, keys of up to 12 bytes rich in zeros and ones.
    fn version() -> impl Strategy<Value = (TableId, Vec<u8>, Timestamp, SeqNo)> {
        let byte = prop_oneof![Just(0u8), Just(1u8), any::<u8>()];
        (0u32..2, vec(byte, 0..12), -2i64..2, 0u64..3)
    }

    fn order_key(v: &(TableId, Vec<u8>, Timestamp, SeqNo)) -> OrderKey<'_> {
        OrderKey::new(v.0, &v.1, v.2, v.3)
    }

    proptest! {
        /// The prefix shortcut orders versions exactly as storage order
        /// does, keys with zero bytes and keys of the prefix's length among
        /// them.
        #[test]
        fn order_keys_agree_with_storage_order(a in version(), b in version()) {
            prop_assert_eq!(
                cmp_order(&order_key(&a), &order_key(&b)),
                crate::types::cmp_internal((a.0, &a.1, a.2, a.3), (b.0, &b.1, b.2, b.3))
            );
        }
    }
}
