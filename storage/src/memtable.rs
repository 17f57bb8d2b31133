//! The memtable: recent row versions in memory, in storage order.
//!
//! A lock-free skiplist (crossbeam-skiplist) serves reads while the commit
//! leader inserts. Each memtable has a generation number; the hash index
//! points at `Location::Mem { gen }` for keys whose latest version lives here.
//!
//! Invariants:
//! - only the commit leader inserts, and only into the active memtable;
//! - a frozen memtable is never modified again; it is flushed to exactly one
//!   SST and then dropped once no reader holds it;
//! - every entry of generation `g` has a larger `seq` than every entry of any
//!   generation `< g`.

use crate::types::{cmp_internal, Entry, Kind, SeqNo, TableId, Timestamp};
use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

/// Bytes charged per entry on top of key and value, for the skiplist node.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// The ordering key of a memtable entry.
struct MemKey {
    table: TableId,
    key: Bytes,
    event_ts: Timestamp,
    seq: SeqNo,
}

struct MemValue {
    ingest_ts: Timestamp,
    kind: Kind,
    value: Bytes,
}

/// Lets the skiplist be searched with a borrowed key, without allocating.
trait KeyView {
    fn parts(&self) -> (TableId, &[u8], Timestamp, SeqNo);
}

impl KeyView for MemKey {
    fn parts(&self) -> (TableId, &[u8], Timestamp, SeqNo) {
        (self.table, &self.key, self.event_ts, self.seq)
    }
}

struct Probe<'a> {
    table: TableId,
    key: &'a [u8],
    event_ts: Timestamp,
    seq: SeqNo,
}

impl KeyView for Probe<'_> {
    fn parts(&self) -> (TableId, &[u8], Timestamp, SeqNo) {
        (self.table, self.key, self.event_ts, self.seq)
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
        cmp_internal(self.parts(), other.parts())
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
        cmp_internal(self.parts(), other.parts())
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
    map: SkipMap<MemKey, MemValue>,
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

    /// Inserts one version. Only the commit leader calls this.
    pub(crate) fn insert(&self, e: &Entry) {
        let charged = e.key.len() + e.value.len() + ENTRY_OVERHEAD_BYTES;
        self.map.insert(
            MemKey {
                table: e.table,
                key: e.key.clone(),
                event_ts: e.event_ts,
                seq: e.seq,
            },
            MemValue {
                ingest_ts: e.ingest_ts,
                kind: e.kind,
                value: e.value.clone(),
            },
        );
        self.bytes.fetch_add(charged, AtomicOrdering::Relaxed);
        self.max_seq.fetch_max(e.seq, AtomicOrdering::Relaxed);
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
        let probe = Probe {
            table,
            key,
            event_ts,
            seq,
        };
        let start: &dyn KeyView = &probe;
        let first = self.map.lower_bound(Bound::Included(start));
        let mut cursor = first;
        std::iter::from_fn(move || {
            let current = cursor.take()?;
            let k = current.key();
            if k.table != table || k.key.as_ref() != key {
                return None;
            }
            let entry = to_entry(k, current.value());
            cursor = current.next();
            Some(entry)
        })
    }

    /// The newest version of `(table, key)` held here.
    pub(crate) fn first_version(&self, table: TableId, key: &[u8]) -> Option<Entry> {
        self.versions_from(table, key, Timestamp::MAX, SeqNo::MAX)
            .next()
    }

    /// Every entry of `table`, in storage order.
    pub(crate) fn iter_table(&self, table: TableId) -> impl Iterator<Item = Entry> + '_ {
        let probe = Probe {
            table,
            key: &[],
            event_ts: Timestamp::MAX,
            seq: SeqNo::MAX,
        };
        let start: &dyn KeyView = &probe;
        let mut cursor = self.map.lower_bound(Bound::Included(start));
        std::iter::from_fn(move || {
            let current = cursor.take()?;
            if current.key().table != table {
                return None;
            }
            let entry = to_entry(current.key(), current.value());
            cursor = current.next();
            Some(entry)
        })
    }

    /// Every entry, in storage order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.map.iter().map(|e| to_entry(e.key(), e.value()))
    }
}

fn to_entry(k: &MemKey, v: &MemValue) -> Entry {
    Entry {
        table: k.table,
        key: k.key.clone(),
        event_ts: k.event_ts,
        seq: k.seq,
        ingest_ts: v.ingest_ts,
        kind: v.kind,
        value: v.value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
