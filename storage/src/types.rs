//! The engine's data model: tables, keys, timestamps, sequence numbers and
//! row versions, and the total order in which versions are stored.
//!
//! Storage order (memtable and SSTables alike) is
//! `(table asc, key asc, event_ts desc, seq desc)`: all versions of one key are
//! adjacent, newest event first, and among equal event times the latest commit
//! first. So the first version of a key is its `latest`, and "as of T" is a
//! seek to `(table, key, T, u64::MAX)`.

use bytes::Bytes;
use std::cmp::Ordering;

/// One table per feature group.
pub type TableId = u32;
/// Microseconds since the Unix epoch, UTC.
pub type Timestamp = i64;
/// Commit order; unique per row version, assigned by the engine.
pub type SeqNo = u64;

/// Longest entity key the engine accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest payload the engine accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 4 << 20;

/// Whether a version carries a payload or marks the key absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A row payload.
    Put = 0,
    /// The key is absent as of this version's `event_ts`.
    Tombstone = 1,
}

impl Kind {
    /// Decodes the on-disk byte; `None` for unknown values.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Put),
            1 => Some(Kind::Tombstone),
            _ => None,
        }
    }
}

/// A stored row version, as the engine returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// When the value became true.
    pub event_ts: Timestamp,
    /// When the engine committed it.
    pub ingest_ts: Timestamp,
    /// Commit order.
    pub seq: SeqNo,
    /// The payload, or `None` for a tombstone.
    pub value: Option<Bytes>,
}

impl Version {
    /// True if this version is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// A live row as returned by point reads (tombstones are never returned as rows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// When the value became true.
    pub event_ts: Timestamp,
    /// When the engine committed it.
    pub ingest_ts: Timestamp,
    /// Commit order.
    pub seq: SeqNo,
    /// The encoded row; opaque to storage.
    pub value: Bytes,
}

impl Row {
    /// The row, borrowed.
    pub fn as_row_ref(&self) -> RowRef<'_> {
        RowRef {
            event_ts: self.event_ts,
            ingest_ts: self.ingest_ts,
            seq: self.seq,
            value: &self.value,
        }
    }
}

/// A live row borrowed from where the engine holds it (a cached block, a
/// memtable), for the length of a batched read's callback
/// ([`crate::Engine::with_latest_across`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowRef<'a> {
    /// When the value became true.
    pub event_ts: Timestamp,
    /// When the engine committed it.
    pub ingest_ts: Timestamp,
    /// Commit order.
    pub seq: SeqNo,
    /// The encoded row; opaque to storage.
    pub value: &'a [u8],
}

/// Compares two stored versions in storage order:
/// `(table asc, key asc, event_ts desc, seq desc)`.
#[inline]
pub fn cmp_internal(
    a: (TableId, &[u8], Timestamp, SeqNo),
    b: (TableId, &[u8], Timestamp, SeqNo),
) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| a.1.cmp(b.1))
        .then_with(|| b.2.cmp(&a.2))
        .then_with(|| b.3.cmp(&a.3))
}

/// Compares only the entity part, `(table, key)`.
#[inline]
pub fn cmp_entity(a: (TableId, &[u8]), b: (TableId, &[u8])) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

/// A borrowed view of one stored entry, as decoded from a memtable or an SST
/// block. `value` is empty for tombstones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Table (feature group).
    pub table: TableId,
    /// Entity key.
    pub key: &'a [u8],
    /// Event time.
    pub event_ts: Timestamp,
    /// Commit order.
    pub seq: SeqNo,
    /// Commit time.
    pub ingest_ts: Timestamp,
    /// Payload or tombstone.
    pub kind: Kind,
    /// Payload bytes (empty for a tombstone).
    pub value: &'a [u8],
}

/// An owned stored entry; what iterators over memtables and SSTs yield.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Table (feature group).
    pub table: TableId,
    /// Entity key.
    pub key: Bytes,
    /// Event time.
    pub event_ts: Timestamp,
    /// Commit order.
    pub seq: SeqNo,
    /// Commit time.
    pub ingest_ts: Timestamp,
    /// Payload or tombstone.
    pub kind: Kind,
    /// Payload bytes (empty for a tombstone).
    pub value: Bytes,
}

impl Entry {
    /// Storage-order comparison of two entries.
    pub fn cmp_order(&self, other: &Entry) -> Ordering {
        cmp_internal(
            (self.table, &self.key, self.event_ts, self.seq),
            (other.table, &other.key, other.event_ts, other.seq),
        )
    }

    /// Borrows this entry as an [`EntryRef`].
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            table: self.table,
            key: &self.key,
            event_ts: self.event_ts,
            seq: self.seq,
            ingest_ts: self.ingest_ts,
            kind: self.kind,
            value: &self.value,
        }
    }

    /// True if `other` is a version of the same entity.
    pub fn same_entity(&self, table: TableId, key: &[u8]) -> bool {
        self.table == table && self.key.as_ref() == key
    }

    /// Converts to the public [`Version`] form.
    pub fn to_version(&self) -> Version {
        Version {
            event_ts: self.event_ts,
            ingest_ts: self.ingest_ts,
            seq: self.seq,
            value: match self.kind {
                Kind::Put => Some(self.value.clone()),
                Kind::Tombstone => None,
            },
        }
    }
}

/// Validates a key and payload against the engine's limits.
pub fn check_limits(key: &[u8], value_len: usize) -> crate::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(crate::Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if value_len > MAX_VALUE_LEN {
        return Err(crate::Error::InvalidArgument(format!(
            "value is {value_len} bytes; the limit is {MAX_VALUE_LEN}"
        )));
    }
    Ok(())
}
