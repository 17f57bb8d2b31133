//! Read semantics: `latest`, `as_of` (with optional `known_at`), `history`,
//! and their batched forms.
//!
//! - `latest(t, k)`: the version with the greatest `event_ts`, ties to the
//!   greatest `seq`. Served by one hash-index probe and one block (or
//!   memtable) lookup; the location is verified (same key, same event time,
//!   first version of the key in that file) and any mismatch falls back to a
//!   search of every source, so a stale or colliding index entry can cost time
//!   but never return wrong data.
//! - `as_of(t, k, T)`: the greatest `event_ts <= T`. With `known_at = W`,
//!   only among versions with `ingest_ts <= W`.
//! - `history(t, k, from, to)`: every version with `from <= event_ts <= to`,
//!   tombstones included, newest first.
//!
//! Visibility rules applied to the chosen version of a point read:
//! - a tombstone reads as absent;
//! - TTL: absent if `event_ts < read_ts - ttl`, where `read_ts` is now for
//!   `latest` and `T` for `as_of`;
//! - retention: every read ignores versions with `event_ts < now - retention`
//!   (compaction deletes them; hiding them first makes that unobservable).

use crate::engine::{Engine, Inner};
use crate::hash_index::{IndexEntry, Location};
use crate::options::TableOptions;
use crate::sstable::{self, Block, Cursor, Table};
use crate::types::{Entry, Kind, Row, SeqNo, TableId, Timestamp, Version};
use crate::version::{ReadView, TableHandle};
use crate::{Digest, Error, Result};
use std::sync::Arc;

/// Most keys accepted by one batched read.
pub const MAX_BATCH_KEYS: usize = 4096;

/// One lookup of a batched `as_of` read.
#[derive(Clone, Copy, Debug)]
pub struct AsOfQuery<'a> {
    /// Entity key.
    pub key: &'a [u8],
    /// Read the value as of this event time.
    pub as_of: Timestamp,
    /// If set, only versions ingested at or before this time are considered.
    pub known_at: Option<Timestamp>,
}

/// An SST block the hash index points at: its table, index and contents.
type Located<'a> = (&'a Table, u32, Block);

/// Limits applied while searching sources.
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    /// Only versions with `event_ts <= max_event_ts`.
    pub(crate) max_event_ts: Timestamp,
    /// Only versions with `ingest_ts <= known_at`.
    pub(crate) known_at: Option<Timestamp>,
    /// Only versions with `seq <= max_seq` (snapshots).
    pub(crate) max_seq: SeqNo,
}

impl Bounds {
    pub(crate) fn latest(max_seq: SeqNo) -> Bounds {
        Bounds {
            max_event_ts: Timestamp::MAX,
            known_at: None,
            max_seq,
        }
    }

    /// True if a version with these fields is within the bounds.
    fn admits(&self, event_ts: Timestamp, seq: SeqNo, ingest_ts: Timestamp) -> bool {
        event_ts <= self.max_event_ts
            && seq <= self.max_seq
            && self.known_at.is_none_or(|w| ingest_ts <= w)
    }
}

/// The version a point read chose, without its key.
pub(crate) struct Hit {
    pub(crate) event_ts: Timestamp,
    pub(crate) ingest_ts: Timestamp,
    pub(crate) seq: SeqNo,
    pub(crate) kind: Kind,
    pub(crate) value: bytes::Bytes,
}

impl From<Entry> for Hit {
    fn from(e: Entry) -> Hit {
        Hit {
            event_ts: e.event_ts,
            ingest_ts: e.ingest_ts,
            seq: e.seq,
            kind: e.kind,
            value: e.value,
        }
    }
}

impl Hit {
    /// Entry `pos` of `block`; shares the value's memory with the block.
    fn from_block(block: &Block, pos: usize) -> Result<Hit> {
        let r = block.entry(pos)?;
        Ok(Hit {
            event_ts: r.event_ts,
            ingest_ts: r.ingest_ts,
            seq: r.seq,
            kind: r.kind,
            value: block.value(pos)?,
        })
    }
}

/// Turns the chosen version into a visible row, or `None`.
pub(crate) fn visible(
    e: Hit,
    read_ts: Timestamp,
    now: Timestamp,
    opts: TableOptions,
) -> Option<Row> {
    if e.kind == Kind::Tombstone || !retained(e.event_ts, now, opts) {
        return None;
    }
    if let Some(ttl) = opts.ttl_us {
        if e.event_ts < read_ts.saturating_sub(ttl) {
            return None;
        }
    }
    Some(Row {
        event_ts: e.event_ts,
        ingest_ts: e.ingest_ts,
        seq: e.seq,
        value: e.value,
    })
}

/// True if retention still keeps a version with this event time.
pub(crate) fn retained(event_ts: Timestamp, now: Timestamp, opts: TableOptions) -> bool {
    opts.retention_us
        .is_none_or(|r| event_ts >= now.saturating_sub(r))
}

fn check_batch(n: usize) -> Result<()> {
    if n > MAX_BATCH_KEYS {
        return Err(Error::InvalidArgument(format!(
            "{n} keys in one read; the limit is {MAX_BATCH_KEYS}"
        )));
    }
    Ok(())
}

impl Engine {
    /// The latest visible row of `(table, key)`.
    pub fn latest(&self, table: TableId, key: &[u8]) -> Result<Option<Row>> {
        Ok(self.multi_latest(table, &[key])?.pop().flatten())
    }

    /// The latest visible rows of many keys of one table, in request order.
    pub fn multi_latest(&self, table: TableId, keys: &[&[u8]]) -> Result<Vec<Option<Row>>> {
        check_batch(keys.len())?;
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        let opts = inner.table_options(table);
        let found = inner.latest_entries(&view, max_seq, table, keys)?;
        Ok(found
            .into_iter()
            .map(|e| e.and_then(|e| visible(e, now, now, opts)))
            .collect())
    }

    /// The row of `(table, key)` as of event time `as_of`, optionally as it
    /// was known at ingest time `known_at`.
    pub fn as_of(
        &self,
        table: TableId,
        key: &[u8],
        as_of: Timestamp,
        known_at: Option<Timestamp>,
    ) -> Result<Option<Row>> {
        let q = AsOfQuery {
            key,
            as_of,
            known_at,
        };
        Ok(self.multi_as_of(table, &[q])?.pop().flatten())
    }

    /// Batched [`Engine::as_of`], results in request order.
    pub fn multi_as_of(
        &self,
        table: TableId,
        queries: &[AsOfQuery<'_>],
    ) -> Result<Vec<Option<Row>>> {
        check_batch(queries.len())?;
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        let opts = inner.table_options(table);
        queries
            .iter()
            .map(|q| {
                let e = inner.as_of_entry(&view, max_seq, table, q)?;
                Ok(e.and_then(|e| visible(e, q.as_of, now, opts)))
            })
            .collect()
    }

    /// Every version of `(table, key)` with `from <= event_ts <= to`,
    /// tombstones included, newest first. TTL does not apply; retention does.
    pub fn history(
        &self,
        table: TableId,
        key: &[u8],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Version>> {
        let inner = &self.inner;
        let (view, max_seq) = inner.pin_visible();
        let now = inner.now();
        let opts = inner.table_options(table);
        inner.history(&view, table, key, from, to, max_seq, now, opts)
    }
}

impl Inner {
    /// Newest versions (before visibility rules) of `keys`, in order.
    ///
    /// Staged so that the cache misses of all keys overlap: probe the index
    /// for every key, load every block, prefetch every block's fingerprint
    /// array, find every key's position and prefetch its entry, and only
    /// then read the entries.
    fn latest_entries(
        &self,
        view: &ReadView,
        max_seq: SeqNo,
        table: TableId,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Hit>>> {
        let digests: Vec<Digest> = keys
            .iter()
            .map(|k| Digest::of(self.seed, table, k))
            .collect();
        let mut probes: Vec<Option<IndexEntry>> = Vec::with_capacity(keys.len());
        self.index.get_many(&digests, &mut probes);
        self.latest_at(view, max_seq, table, keys, &probes)
    }

    /// [`Inner::latest_entries`] for index entries already read.
    fn latest_at(
        &self,
        view: &ReadView,
        max_seq: SeqNo,
        table: TableId,
        keys: &[&[u8]],
        probes: &[Option<IndexEntry>],
    ) -> Result<Vec<Option<Hit>>> {
        let mut extra = Vec::new();
        let blocks = self.load_located_blocks(view, &mut extra, probes)?;
        for (_, _, block) in blocks.iter().flatten() {
            block.prefetch_fingerprints();
        }
        let mut positions = Vec::with_capacity(keys.len());
        for (key, located) in keys.iter().zip(&blocks) {
            let pos = match located {
                Some((t, idx, block)) => t.first_version_in(block, *idx, table, key)?,
                None => None,
            };
            if let (Some(pos), Some((_, _, block))) = (pos, located) {
                block.prefetch_entry(pos);
            }
            positions.push(pos);
        }
        let mut out = Vec::with_capacity(keys.len());
        for (i, (key, probe)) in keys.iter().zip(probes).enumerate() {
            let Some(ie) = probe else {
                out.push(None);
                continue;
            };
            let at = match (ie.loc, &blocks[i], positions[i]) {
                (Location::Mem { gen }, _, _) => view
                    .memtable(gen)
                    .and_then(|m| m.first_version(table, key))
                    .map(Hit::from),
                (Location::Sst { .. }, Some((_, _, block)), Some(pos)) => {
                    Some(Hit::from_block(block, pos)?)
                }
                (Location::Sst { .. }, _, _) => None,
            };
            // The index names the newest version by its event time; any
            // other answer means the entry is stale, and a version past
            // `max_seq` belongs to a commit not yet visible: search instead.
            let found = match at.filter(|e| e.event_ts == ie.event_ts && e.seq <= max_seq) {
                Some(e) => Some(e),
                None => {
                    self.counters.add_slow_path();
                    self.search(view, table, key, Bounds::latest(max_seq))?
                        .map(Hit::from)
                }
            };
            out.push(found);
        }
        Ok(out)
    }

    /// Loads every SST block the probes point at, with one batched read for
    /// the cache misses (one io_uring submission when enabled). `None` for
    /// probes that name a memtable, or a file no longer open. Tables are
    /// borrowed from the view (or from `extra`, files only the registry
    /// still holds) so the hot path takes no reference counts.
    fn load_located_blocks<'a>(
        &self,
        view: &'a ReadView,
        extra: &'a mut Vec<Arc<TableHandle>>,
        probes: &[Option<IndexEntry>],
    ) -> Result<Vec<Option<Located<'a>>>> {
        for p in probes {
            if let Some(Location::Sst { file_no, .. }) = p.map(|p| p.loc) {
                let known = view.version.table(file_no).is_some()
                    || extra.iter().any(|h| h.meta.file_no == file_no);
                if !known {
                    if let Some(h) = self.tables.read().get(&file_no) {
                        extra.push(h.clone());
                    }
                }
            }
        }
        let extra: &'a [Arc<TableHandle>] = extra;
        let find = |file_no: u64| -> Option<&'a Table> {
            view.version
                .table(file_no)
                .or_else(|| extra.iter().find(|h| h.meta.file_no == file_no))
                .map(|h| &*h.table)
        };
        let mut reqs: Vec<(&'a Table, u32)> = Vec::new();
        let mut slots = Vec::with_capacity(probes.len());
        for p in probes {
            let slot = match p.map(|p| p.loc) {
                Some(Location::Sst { file_no, block }) => match find(file_no) {
                    Some(t) if block < t.data_blocks() => {
                        reqs.push((t, block));
                        Some(reqs.len() - 1)
                    }
                    _ => None,
                },
                _ => None,
            };
            slots.push(slot);
        }
        let loaded = sstable::load_blocks(&*self.opts.fs, &reqs)?;
        let mut loaded: Vec<Option<Located<'a>>> = reqs
            .into_iter()
            .zip(loaded)
            .map(|((t, idx), block)| Some((t, idx, block)))
            .collect();
        Ok(slots
            .into_iter()
            .map(|s| s.and_then(|i| loaded[i].take()))
            .collect())
    }

    /// The best version over every source (memtables and SSTs) within
    /// `bounds`: greatest `event_ts`, then greatest `seq`.
    pub(crate) fn search(
        &self,
        view: &ReadView,
        table: TableId,
        key: &[u8],
        bounds: Bounds,
    ) -> Result<Option<Entry>> {
        self.search_from(view, table, key, bounds, None)
    }

    /// [`Inner::search`], starting in the SST the hash index names (`hint`:
    /// file and block of the key's newest version) without seeking it: the
    /// key's versions are read on from there.
    fn search_from(
        &self,
        view: &ReadView,
        table: TableId,
        key: &[u8],
        bounds: Bounds,
        hint: Option<(u64, u32)>,
    ) -> Result<Option<Entry>> {
        let mut best: Option<Entry> = None;
        let mut offer = |e: Entry| {
            if best
                .as_ref()
                .is_none_or(|b| (e.event_ts, e.seq) > (b.event_ts, b.seq))
            {
                best = Some(e);
            }
        };
        for m in &view.mems {
            if let Some(e) = m
                .versions_from(table, key, bounds.max_event_ts, SeqNo::MAX)
                .find(|e| bounds.admits(e.event_ts, e.seq, e.ingest_ts))
            {
                offer(e);
            }
        }
        let digest = Digest::of(self.seed, table, key);
        for h in view.version.candidates(table, key) {
            if !h.table.may_contain(digest) {
                continue;
            }
            let start = match hint {
                Some((file_no, block)) if file_no == h.meta.file_no => {
                    hinted_cursor(&h.table, block, table, key)?
                }
                _ => None,
            };
            let start = match start {
                Some(c) => Some(c),
                None => h.table.seek(table, key, bounds.max_event_ts, SeqNo::MAX)?,
            };
            if let Some(e) = first_admitted(start, table, key, bounds)? {
                offer(e);
            }
        }
        Ok(best)
    }

    fn as_of_entry(
        &self,
        view: &ReadView,
        max_seq: SeqNo,
        table: TableId,
        q: &AsOfQuery<'_>,
    ) -> Result<Option<Hit>> {
        let Some(ie) = self.index.get(Digest::of(self.seed, table, q.key)) else {
            // Not in the index: no version of this key exists anywhere.
            return Ok(None);
        };
        if q.known_at.is_none() && q.as_of >= ie.event_ts {
            // The newest version is at or before T, so it is the answer,
            // unless a newer one committed since the probe: check.
            let latest = self.latest_at(view, max_seq, table, &[q.key], &[Some(ie)])?;
            if let Some(hit) = latest.into_iter().next().flatten() {
                if hit.event_ts <= q.as_of {
                    return Ok(Some(hit));
                }
            }
        }
        let bounds = Bounds {
            max_event_ts: q.as_of,
            known_at: q.known_at,
            max_seq,
        };
        let hint = match ie.loc {
            Location::Sst { file_no, block } => Some((file_no, block)),
            Location::Mem { .. } => None,
        };
        Ok(self
            .search_from(view, table, q.key, bounds, hint)?
            .map(Hit::from))
    }

    /// Versions of one key in `[from, to]`, newest first, from every source.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn history(
        &self,
        view: &ReadView,
        table: TableId,
        key: &[u8],
        from: Timestamp,
        to: Timestamp,
        max_seq: SeqNo,
        now: Timestamp,
        opts: TableOptions,
    ) -> Result<Vec<Version>> {
        if from > to {
            return Ok(Vec::new());
        }
        let keep =
            |e: &Entry| e.event_ts >= from && e.seq <= max_seq && retained(e.event_ts, now, opts);
        let mut all: Vec<Entry> = Vec::new();
        for m in &view.mems {
            all.extend(
                m.versions_from(table, key, to, SeqNo::MAX)
                    .take_while(|e| e.event_ts >= from)
                    .filter(|e| keep(e)),
            );
        }
        let digest = Digest::of(self.seed, table, key);
        for h in view.version.candidates(table, key) {
            if h.table.may_contain(digest) {
                collect_range(&h.table, table, key, to, &mut |e| {
                    // Versions come newest first: stop once below `from`.
                    let more = e.event_ts >= from;
                    if keep(&e) {
                        all.push(e);
                    }
                    more
                })?;
            }
        }
        all.sort_by_key(|e| std::cmp::Reverse((e.event_ts, e.seq)));
        Ok(all.iter().map(Entry::to_version).collect())
    }
}

/// A cursor on the first version of `(table, key)` in block `idx` of `t`,
/// if that block holds it.
fn hinted_cursor(
    t: &std::sync::Arc<Table>,
    idx: u32,
    table: TableId,
    key: &[u8],
) -> Result<Option<Cursor>> {
    Ok(t.first_version_in_block(idx, table, key)?
        .map(|(block, pos)| t.cursor_at(block, idx, pos)))
}

/// From `cursor` on, the first version of `(table, key)` within `bounds`.
fn first_admitted(
    cursor: Option<Cursor>,
    table: TableId,
    key: &[u8],
    bounds: Bounds,
) -> Result<Option<Entry>> {
    let Some(mut cur) = cursor else {
        return Ok(None);
    };
    loop {
        let e = cur.entry()?;
        if e.table != table || e.key != key {
            return Ok(None);
        }
        if bounds.admits(e.event_ts, e.seq, e.ingest_ts) {
            return cur.to_entry().map(Some);
        }
        if !cur.advance()? {
            return Ok(None);
        }
    }
}

/// Calls `f` on each version of `(table, key)` in `t` with
/// `event_ts <= to`, newest first, until the versions run out or `f`
/// returns false.
fn collect_range(
    t: &std::sync::Arc<Table>,
    table: TableId,
    key: &[u8],
    to: Timestamp,
    f: &mut dyn FnMut(Entry) -> bool,
) -> Result<()> {
    let Some(mut cur) = t.seek(table, key, to, SeqNo::MAX)? else {
        return Ok(());
    };
    loop {
        let e = cur.to_entry()?;
        if !e.same_entity(table, key) || !f(e) || !cur.advance()? {
            return Ok(());
        }
    }
}
